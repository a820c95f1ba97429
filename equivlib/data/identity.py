"""Which data a run read: the identity of a dataset's files under the data directory, so a
stored result never outlives the data it was trained on (:mod:`equivlib.store.results`).

:func:`data_identity` lists the files a registered source reads (its ``files`` function,
:mod:`equivlib.data.registry`; None for data that ships with a package, nothing to
identify) and returns::

    dataset   the dataset's name
    root      the data directory (resolved), for the message only
    count     number of files
    bytes     their total size
    stat      sha256 (16 hex) of each file's path relative to the root, size and mtime
    content   sha256 (16 hex) of each file's path, size and content sample
    files     {path relative to the root: {"size", "content"}} when there are at most
              MAX_LISTED files (PCam, CIFAR, MNIST), so a change names the file

A content sample is the whole file up to ``WHOLE_FILE`` bytes (label files, JPEGs) and
``BLOCKS`` blocks of ``BLOCK`` bytes spread over a larger one (first and last included). Two
identities are the same data (:func:`changed` returns None) when their ``stat`` digests agree
(nothing was touched) or, failing that, their ``content`` digests do (a copy to another
directory or machine, which changes the times but not the bytes). An edit that keeps a large
file's size and changes none of its sampled bytes goes unnoticed; rewriting a file (another
dtype, other images, other labels) does not. Samples are read once per process and file
(cached by path, size and mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from equivlib.data.base import resolve_data_dir
from equivlib.data.registry import dataset_source
from equivlib.store.data_match import changed  # noqa: F401  (re-exported)

WHOLE_FILE = 1 << 20
BLOCK = 64 * 1024
BLOCKS = 8
MAX_LISTED = 16
_samples: dict[tuple[str, int, int, int], str] = {}


def _digest(items: Any) -> str:
    text = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_sample(path: Path, stat: os.stat_result | None = None) -> str:
    """sha256 (16 hex) of ``path``'s content sample (see the module's docstring)."""
    stat = stat or path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _samples:
        return _samples[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if stat.st_size <= WHOLE_FILE:
            h.update(f.read())
        else:
            last = stat.st_size - BLOCK
            for i in range(BLOCKS):
                f.seek(last * i // (BLOCKS - 1))
                h.update(f.read(BLOCK))
    _samples[key] = h.hexdigest()[:16]
    return _samples[key]


def data_identity(dataset: str, data_dir: str | os.PathLike | None = None,
                  **options: Any) -> dict[str, Any] | None:
    """The identity of the files ``dataset`` reads under ``data_dir`` (default
    ``$DATA_DIR``, else ``./data``) with these options; None when it reads none (embedded
    data, stand-ins built in a temporary directory) or when one is missing (nothing to
    compare: the dataset's own check reports it)."""
    source = dataset_source(dataset)
    if source.files is None:
        return None
    root = resolve_data_dir(data_dir).resolve()
    files = source.files(root, **options)
    if not files:
        return None
    entries = []
    try:
        for path in files:
            path = Path(path).resolve()
            stat = path.stat()
            rel = os.path.relpath(path, root)
            entries.append((rel, stat.st_size, stat.st_mtime_ns, content_sample(path, stat)))
    except OSError:  # missing or unreadable: not this function's to report
        return None
    entries.sort()
    identity = {
        "dataset": dataset, "root": str(root), "count": len(entries),
        "bytes": sum(e[1] for e in entries),
        "stat": _digest([e[:3] for e in entries]),
        "content": _digest([(e[0], e[1], e[3]) for e in entries])}
    if len(entries) <= MAX_LISTED:
        identity["files"] = {e[0]: {"size": e[1], "content": e[3]} for e in entries}
    return identity
