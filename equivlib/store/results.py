"""Results store: one JSON file per run, keyed by a hash of the run's full config.

Files are written atomically (temp file in the same directory + ``os.replace``); a file
that does not validate (bad JSON, wrong config, missing fields, no ``"complete": true``, a
metric that is NaN or infinite) is treated as missing, with one warning per path, and its
run is trained again. Non-finite metrics are never stored (:func:`save_result` refuses them).

A record may also say which data its run read (``"data"``: the identity of the dataset's
files under the data directory, :func:`equivlib.data.identity.data_identity`); a caller that
passes the current identity to :func:`load_result` gets None for a record made from other
data (with one warning naming what changed), so a result never outlives its data. The
identity is kept beside the config, not in it: keys do not change, and records without it
(made before it was stored, or from data that ships with a package) load as before.

Every record also says where it was made: a top-level ``"provenance"`` entry
(:func:`equivlib.store.provenance.collect`), beside and never inside ``config`` (so keys do
not change) and ``metrics`` (so a resumed run's metrics stay bit-identical). Records written
before provenance was stored still load; their ``"provenance"`` reads as None ("unknown"),
as does one that is not a dict.

The provenance of every record this process saved or loaded is remembered by key, so the
runs behind a table can be named after the fact (:func:`provenance_of`, used by
:func:`equivlib.plots.save_csv`'s ``runs=``).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from equivlib.store.atomic import atomic_write_bytes
from equivlib.store.data_match import changed
from equivlib.store.provenance import collect

DEFAULT_ROOT = Path("results")
_FIELDS = ("key", "config", "metrics", "complete")
_warned: set[str] = set()
_warned_stale: set[tuple[str, str]] = set()
_seen: dict[str, dict[str, Any] | None] = {}  # key -> provenance of records saved / loaded


def config_hash(config: dict[str, Any]) -> str:
    """Stable key: sha256 of the sorted-keys JSON of ``config``, first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_path(config: dict[str, Any], root: str | Path = DEFAULT_ROOT) -> Path:
    """Path of the JSON file for ``config`` under ``root``."""
    return Path(root) / f"{config_hash(config)}.json"


def _normalise(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite number in ``value`` (nested dicts and lists),
    e.g. ``"test_acc.90.0 = nan"``; None when every number is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'value'} = {value}"
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        found = non_finite(item, path)
        if found:
            return found
    return None


def save_result(config: dict[str, Any], metrics: dict[str, Any],
                root: str | Path = DEFAULT_ROOT, *,
                provenance: dict[str, Any] | None = None,
                data: dict[str, Any] | None = None) -> Path:
    """Store ``metrics`` of the finished run ``config`` with where it was made
    (``provenance``; default: this process's, :func:`~equivlib.store.provenance.collect`)
    and, when given, the identity of the data it read (``data``); returns the file's path.
    ValueError, storing nothing, when a metric is NaN or infinite (such a file would read as
    corrupt)."""
    path = result_path(config, root)
    bad = non_finite(metrics)
    if bad:
        raise ValueError(f"run {config_hash(config)}: metric {bad} is not a finite number; "
                         f"nothing was stored in {root}")
    provenance = _normalise(provenance if provenance is not None else collect())
    record = {"key": config_hash(config), "config": _normalise(config),
              "metrics": metrics, "provenance": provenance, "complete": True}
    if data is not None:
        record["data"] = _normalise(data)
    atomic_write_bytes(path, json.dumps(record, sort_keys=True, indent=1).encode())
    _seen[record["key"]] = provenance
    return path


def _invalid(path: Path, why: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(f"ignoring invalid result file {path}: {why}", RuntimeWarning,
                      stacklevel=3)


def _stale(path: Path, why: str) -> None:
    if (str(path), why) not in _warned_stale:
        _warned_stale.add((str(path), why))
        warnings.warn(f"not reusing {path}: {why}; training the run again", RuntimeWarning,
                      stacklevel=3)


def load_result(config: dict[str, Any], root: str | Path = DEFAULT_ROOT, *,
                data: dict[str, Any] | None = None) -> dict | None:
    """The stored record ``{"key", "config", "metrics", "provenance", "complete"}`` of
    ``config``, or None when absent or invalid (corrupt, half-written, wrong config,
    incomplete, a NaN or infinite metric). ``provenance`` is None for a record that does not
    say where it was made. ``data``: the identity of the data the run would read now
    (:func:`equivlib.data.identity.data_identity`); a record made from other data is stale:
    None, with one warning saying what changed."""
    path = result_path(config, root)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _invalid(path, f"unreadable JSON ({exc})")
        return None
    if not isinstance(record, dict) or any(f not in record for f in _FIELDS):
        _invalid(path, "missing fields")
        return None
    if record["complete"] is not True:
        _invalid(path, "not marked complete")
        return None
    if not isinstance(record["config"], dict) or config_hash(record["config"]) != path.stem \
            or record["key"] != path.stem:
        _invalid(path, "config inside does not match the key")
        return None
    bad = non_finite(record["metrics"])
    if bad:
        _invalid(path, f"metric {bad} is not a finite number")
        return None
    if data is not None and isinstance(record.get("data"), dict):
        why = changed(record["data"], data)
        if why:
            _stale(path, why)
            return None
    if not isinstance(record.get("provenance"), dict):
        record["provenance"] = None  # written before provenance was stored: unknown
    _seen[record["key"]] = record["provenance"]
    return record


def _key_of(run: Any) -> str:
    if hasattr(run, "key") and callable(run.key):  # a RunConfig
        return run.key()
    return config_hash(run)


def _is_record(run: Any) -> bool:
    return isinstance(run, dict) and "config" in run and "metrics" in run


def provenance_of(runs: Iterable[Any],
                  root: str | Path | None = None) -> list[dict[str, Any] | None]:
    """Where each of ``runs`` was made, in order: ``runs`` are store records (their own
    ``"provenance"``) or configs (``RunConfig`` objects, or the full config dicts that the
    store keys), looked up among the records this process saved or loaded (e.g. every run
    that :func:`equivlib.engine.grid.run_grid` returned) and, failing that, in the store at
    ``root``. None for a run whose provenance is unknown (an older record, or a config not
    seen in this process and not found under ``root``)."""
    found: list[dict[str, Any] | None] = []
    for run in runs:
        if _is_record(run):
            prov = run.get("provenance")
            found.append(prov if isinstance(prov, dict) else None)
            continue
        key = _key_of(run)
        if key not in _seen and root is not None:
            config = run.to_dict() if hasattr(run, "to_dict") else run
            load_result(config, root)
        found.append(_seen.get(key))
    return found
