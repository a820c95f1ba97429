"""Claims on runs of a shared results store: processes that train from the same grid (the
shards of a SLURM array, two notebooks, a rerun while the first is still going) never train
the same run at once.

A claim is a file ``<root>/<key>.claim`` naming its holder (host, pid, start time), written
complete to a temporary file and then hard-linked into place (``link`` fails when the claim
exists: atomic on local file systems and NFSv3+), so a claim is never seen half-written.
While the run trains, a heartbeat thread refreshes the file's mtime. A claim is stale when
its holder is a dead process on this host, when it has not been refreshed for
``stale_after`` seconds (a holder on another machine that died), or at once when it cannot
be read as a holder (garbage, empty, not ours to parse); a stale claim is renamed away and
claimed afresh.

Two processes that find the same claim stale at once both rename "it" away; the second
may move the first's fresh claim instead, sees that the content is not the stale claim it
judged, puts it back and backs off. Should that still race (a third process creating the
claim in between), results are written atomically and a CPU run is bit-reproducible, so
the store stays consistent; the cost is one run's duplicate work.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0


def claim_path(root: str | Path, key: str) -> Path:
    return Path(root) / f"{key}.claim"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_text(path: Path) -> str:
    """The file's bytes as text (bytes that are not UTF-8 kept, so garbage compares)."""
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _is_holder(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("host"), str)
            and isinstance(record.get("pid"), int) and not isinstance(record["pid"], bool))


def read_claim(root: str | Path, key: str) -> dict[str, Any] | None:
    """The holder of ``key``'s claim (``host``, ``pid``, ``since``, ``age`` in seconds since
    the last heartbeat), or None when the run is not claimed. A claim that does not name a
    holder (garbage, empty: claims are written complete, so never one being written) reads
    as ``{"unreadable": True, "age": ..., "token": ...}``."""
    path = claim_path(root, key)
    try:
        text, mtime = _read_text(path), path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:  # garbage (bad JSON, bytes that are not text)
        holder = None
    holder = dict(holder) if _is_holder(holder) else {"unreadable": True}
    holder["age"] = time.time() - mtime
    holder["token"] = text
    return holder


def is_stale(holder: dict[str, Any], stale_after: float = STALE_AFTER_SECONDS) -> bool:
    """True when the claim names no holder (unreadable), when the holder is a dead process
    here, or when it has been silent ``stale_after`` s."""
    if holder.get("unreadable"):
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"]):
            return True
    return holder["age"] > stale_after


def _create(path: Path) -> bool:
    """Create the claim, complete, or return False when one exists: the record is written
    to a temporary file and hard-linked to ``path`` (fails when ``path`` exists); where hard
    links are not supported, ``O_CREAT | O_EXCL`` and a write."""
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    temp = path.with_name(f"{path.name}.new-{uuid.uuid4().hex[:8]}")
    temp.write_text(record)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FAT file systems); a claim read
        # in the instant between create and write is judged stale: one duplicate run at most
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True
    finally:
        temp.unlink(missing_ok=True)


def try_claim(root: str | Path, key: str, stale_after: float = STALE_AFTER_SECONDS) -> bool:
    """Claim ``key`` for this process; False when another live process holds it."""
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _create(path):
        return True
    holder = read_claim(root, key)
    if holder is None:  # released meanwhile
        return _create(path)
    if not is_stale(holder, stale_after):
        return False
    moved = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:  # someone else took it over first
        return _create(path)
    if _read_text(moved) != holder["token"]:  # displaced a fresh claim: put it back
        try:
            os.link(moved, path)
        except FileExistsError:
            pass
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return _create(path)


def release(root: str | Path, key: str) -> None:
    """Remove this process's claim on ``key`` (no-op when absent or not ours)."""
    holder = read_claim(root, key)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        claim_path(root, key).unlink(missing_ok=True)


@contextmanager
def claimed(root: str | Path, key: str, *, heartbeat: float = HEARTBEAT_SECONDS,
            stale_after: float = STALE_AFTER_SECONDS) -> Iterator[bool]:
    """Hold ``key``'s claim for the ``with`` block, refreshing it every ``heartbeat`` s;
    yields False (and holds nothing) when another live process has it."""
    if not try_claim(root, key, stale_after):
        yield False
        return
    path, done = claim_path(root, key), threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat):
            try:
                os.utime(path)
            except FileNotFoundError:  # moved aside for a moment by a stale-claim check
                pass

    thread = threading.Thread(target=beat, name=f"claim-{key}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        done.set()
        thread.join()
        release(root, key)
