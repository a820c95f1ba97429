"""Progress events for whoever runs a notebook: ``./run_all.sh`` sets
``EQUIVLIB_PROGRESS_FILE`` and shows the latest event live in the terminal, while the
notebook's own outputs (which nbval compares) stay untouched.

An event is one JSON line ``{"time": ..., "stage": ..., **fields}`` appended to that file;
without the variable :func:`emit` does nothing. The grid emits ``stage="training"`` with
``total``, ``done``, ``trained``, ``reused`` and ``running`` runs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

ENV = "EQUIVLIB_PROGRESS_FILE"


def emit(stage: str, **fields: Any) -> None:
    """Append one progress event (a no-op unless ``EQUIVLIB_PROGRESS_FILE`` is set; an
    unwritable file never disturbs the computation)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"time": time.time(), "stage": stage, **fields}, default=str)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


def latest(path: str | os.PathLike) -> dict[str, Any] | None:
    """The last complete event in ``path``, or None (no file, nothing written yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "stage" in event:
            return event
    return None
