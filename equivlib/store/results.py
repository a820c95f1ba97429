"""Results store: one JSON file per run, keyed by a hash of the run's full config.

Files are written atomically (temp file in the same directory + ``os.replace``); a file
that does not validate (bad JSON, wrong config, missing fields, no ``"complete": true``)
is treated as missing, with one warning per path.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from equivlib.store.atomic import atomic_write_bytes

DEFAULT_ROOT = Path("results")
_FIELDS = ("key", "config", "metrics", "complete")
_warned: set[str] = set()


def config_hash(config: dict[str, Any]) -> str:
    """Stable key: sha256 of the sorted-keys JSON of ``config``, first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_path(config: dict[str, Any], root: str | Path = DEFAULT_ROOT) -> Path:
    """Path of the JSON file for ``config`` under ``root``."""
    return Path(root) / f"{config_hash(config)}.json"


def _normalise(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def save_result(config: dict[str, Any], metrics: dict[str, Any],
                root: str | Path = DEFAULT_ROOT) -> Path:
    """Store ``metrics`` of the finished run ``config``; returns the file's path."""
    path = result_path(config, root)
    record = {"key": config_hash(config), "config": _normalise(config),
              "metrics": metrics, "complete": True}
    atomic_write_bytes(path, json.dumps(record, sort_keys=True, indent=1).encode())
    return path


def _invalid(path: Path, why: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(f"ignoring invalid result file {path}: {why}", RuntimeWarning,
                      stacklevel=3)


def load_result(config: dict[str, Any], root: str | Path = DEFAULT_ROOT) -> dict | None:
    """The stored record ``{"key", "config", "metrics", "complete"}`` of ``config``, or None
    when absent or invalid (corrupt, half-written, wrong config, incomplete)."""
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
    return record
