"""Progress events for whoever runs a notebook: ``./run_all.sh`` sets
``EQUIVLIB_PROGRESS_FILE`` and shows the latest event live in the terminal, while the
notebook's own outputs (which nbval compares) stay untouched.

An event is one JSON line ``{"time": ..., "stage": ..., **fields}`` appended to that file;
without the variable :func:`emit` does nothing. The grid emits ``stage="training"`` with
``total``, ``done``, ``trained``, ``reused`` and ``running`` runs. The driver shows them
with :class:`Display` (one status line per notebook) and :func:`describe` (the phrase).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, TextIO

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


# ------------------------------------------------------------------ the driver's display
def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def describe(event: dict | None, elapsed: float) -> str:
    """One status phrase from the latest progress event: stage, counts, time left."""
    if not event:
        return f"running, {clock(elapsed)} elapsed"
    stage = event.get("stage", "running")
    if stage in ("training", "waiting") and event.get("total"):
        total, done = int(event["total"]), int(event.get("done", 0))
        trained, reused = int(event.get("trained", 0)), int(event.get("reused", 0))
        text = f"{stage} {done}/{total} runs ({reused} reused)"
        if stage == "waiting":
            text += f", {event.get('held', '?')} held by other processes"
        left = ""
        if trained and done < total:  # the pace so far (parallel workers included)
            left = f", ~{clock(elapsed / trained * (total - done))} left"
        return f"{text}, {clock(elapsed)} elapsed{left}"
    return f"{stage}, {clock(elapsed)} elapsed"


class Display:
    """Live status: one line rewritten in place on a terminal; otherwise a plain line when
    the status changed, at most one per ``interval`` seconds (and one a minute regardless)."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        if interval is None:
            interval = float(os.environ.get("EQUIVLIB_PROGRESS_INTERVAL", "10"))
        self.interval, self.last_time, self.last_text, self.width = interval, 0.0, "", 0

    def update(self, name: str, text: str) -> None:
        line = f"  {name:<36} {text}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self.width = len(line)
            return
        now = time.monotonic()
        key = re.sub(r"[\d:]+ elapsed.*", "", text)  # a change of stage or counts
        due = now - self.last_time >= (self.interval if key != self.last_text
                                       else max(60.0, self.interval))  # or a heartbeat
        if due:
            print(line, file=self.stream, flush=True)
            self.last_time, self.last_text = now, key

    def clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0
