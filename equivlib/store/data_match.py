"""Is a dataset's identity now the one a stored run was trained on? Pure comparisons of the
dicts that :func:`equivlib.data.identity.data_identity` returns, kept in the store so that
the store never imports the data layer above it."""

from __future__ import annotations

from typing import Any


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    before, now = old.get("files"), new.get("files")
    if not isinstance(before, dict) or not isinstance(now, dict):
        return (f"{old.get('count')} files of {old.get('bytes')} bytes then, {new.get('count')}"
                f" files of {new.get('bytes')} bytes now, contents differ")
    parts = []
    for rel in sorted(set(before) | set(now)):
        a, b = before.get(rel), now.get(rel)
        if a is None:
            parts.append(f"{rel} is new")
        elif b is None:
            parts.append(f"{rel} is gone")
        elif a.get("size") != b.get("size"):
            parts.append(f"{rel}: {a.get('size')} bytes then, {b.get('size')} now")
        elif a.get("content") != b.get("content"):
            parts.append(f"{rel}: same size, other contents")
    return "; ".join(parts) or "contents differ"


def changed(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why ``current`` is not the data of ``recorded`` (a phrase naming what changed), or
    None when it is the same data (same file times and sizes, or same contents)."""
    if recorded.get("stat") == current.get("stat") \
            or recorded.get("content") == current.get("content"):
        return None
    where = current.get("root") or "the data directory"
    return (f"the {recorded.get('dataset', 'dataset')} files it was trained on have changed "
            f"in {where} ({_what_changed(recorded, current)})")
