"""The dataset registry: ``get_dataset(name, data_dir=..., download=..., **options)``.

Every source registers a loader ``load(root: Path, download: bool, **options) ->
DatasetSplits`` and, for downloadable data, a ``check(root: Path, download: bool, **options)``
that raises :class:`~equivlib.data.base.DatasetMissingError` before any work is done
(:func:`check_dataset`), and ``files(root: Path, **options) -> list[Path]``, the files under
the data directory it reads (whose identity a stored result records,
:mod:`equivlib.data.identity`). Options a loader does not accept are rejected with a clear
error.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equivlib.data.base import DatasetSplits, resolve_data_dir


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: its loader, its pre-flight check and its default protocol."""

    name: str
    load: Callable[..., DatasetSplits]
    check: Callable[..., None] | None  # None: ships with a package, nothing to check
    protocol: str  # transforms of the paper's protocol (see equivlib.data.transforms)
    description: str
    files: Callable[..., list[Path]] | None = None  # None: reads no file of the data dir


_SOURCES: dict[str, DatasetSource] = {}


def register_dataset(name: str, *, protocol: str, description: str,
                     check: Callable[..., None] | None = None,
                     files: Callable[..., list[Path]] | None = None,
                     ) -> Callable[[Callable[..., DatasetSplits]], Callable[..., DatasetSplits]]:
    """Decorator: register ``load(root, download, **options) -> DatasetSplits`` as ``name``;
    ``files(root, **options)``: the data files it reads under ``root`` (None: none)."""
    def decorator(load: Callable[..., DatasetSplits]) -> Callable[..., DatasetSplits]:
        if name in _SOURCES:
            raise ValueError(f"dataset {name!r} is already registered")
        _SOURCES[name] = DatasetSource(name, load, check, protocol, description, files)
        return load
    return decorator


def _ensure_loaded() -> None:
    # the source modules register themselves on import
    from equivlib.data import (  # noqa: F401
        cifar,
        flowers,
        imagenet_tfrecord,
        mnist,
        pcam,
        pcam_stand_in,
    )


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, sorted."""
    _ensure_loaded()
    return sorted(_SOURCES)


def dataset_source(name: str) -> DatasetSource:
    """The registered source ``name``; a ValueError listing the known names otherwise."""
    _ensure_loaded()
    if name not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def dataset_options(name: str) -> list[str]:
    """The options ``get_dataset(name, ...)`` accepts besides ``data_dir`` and ``download``."""
    params = inspect.signature(dataset_source(name).load).parameters
    return [p for p in params if p not in ("root", "download")]


def _check_options(name: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(dataset_options(name)) or 'none'}")


def check_dataset(name: str, data_dir: str | os.PathLike | None = None,
                  download: bool = False, **options: Any) -> Path:
    """Raise before any work if ``name`` cannot be loaded with these arguments (unknown
    dataset or option, missing files when ``download`` is off); returns the data root."""
    source = dataset_source(name)
    _check_options(name, options)
    root = resolve_data_dir(data_dir)
    if source.check is not None:
        source.check(root, download, **options)
    return root


def get_dataset(name: str, data_dir: str | os.PathLike | None = None,
                download: bool = False, **options: Any) -> DatasetSplits:
    """The raw splits and metadata of dataset ``name`` (see :func:`list_datasets`).

    ``data_dir`` defaults to ``$DATA_DIR``, else ``./data``. ``download=True`` lets
    torchvision fetch what it can (paper profile only; never in the smoke or cpu profiles)."""
    root = check_dataset(name, data_dir, download, **options)
    return dataset_source(name).load(root, download, **options)
