"""Claims on runs: one holder at a time, even when processes race; stale claims (dead holder
here, silent holder elsewhere) are taken over; a live claim never is."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from equivlib.store import claims
from equivlib.store.claims import claim_path, claimed, read_claim, release, try_claim


def _write_claim(root, key, host, pid, age=0.0):
    path = claim_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "since": "then"}))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_one_holder_until_released(tmp_path):
    assert try_claim(tmp_path, "k") is True
    holder = read_claim(tmp_path, "k")
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert try_claim(tmp_path, "k") is False  # held by a live process (this one)
    release(tmp_path, "k")
    assert read_claim(tmp_path, "k") is None
    assert try_claim(tmp_path, "k") is True


def test_release_leaves_another_holders_claim(tmp_path):
    path = _write_claim(tmp_path, "k", "elsewhere", 1)
    release(tmp_path, "k")
    assert path.exists()


def test_claim_of_a_dead_process_here_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _write_claim(tmp_path, "k", socket.gethostname(), int(dead.stdout))
    assert try_claim(tmp_path, "k") is True
    assert read_claim(tmp_path, "k")["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["k.claim"]  # the stale one is gone


@pytest.mark.parametrize("age, taken", [(30.0, False), (700.0, True)])
def test_claim_from_another_host_is_stale_only_when_silent(tmp_path, age, taken):
    _write_claim(tmp_path, "k", "node-7", 4242, age=age)
    assert try_claim(tmp_path, "k", stale_after=600.0) is taken
    assert (read_claim(tmp_path, "k")["host"] == socket.gethostname()) is taken


def test_a_fresh_claim_moved_aside_by_mistake_is_put_back(tmp_path, monkeypatch):
    """Two processes judged the same old claim stale; the first already replaced it with a
    fresh one. The second must not displace that fresh claim."""
    fresh = _write_claim(tmp_path, "k", "node-1", 11)
    stale_view = {"host": "node-9", "pid": 99, "since": "long ago", "age": 1e6,
                  "token": "not the content of the fresh claim"}
    monkeypatch.setattr(claims, "read_claim", lambda root, key: dict(stale_view))
    assert try_claim(tmp_path, "k") is False
    assert json.loads(fresh.read_text())["host"] == "node-1"
    assert [p.name for p in tmp_path.iterdir()] == ["k.claim"]


def test_heartbeat_keeps_a_long_claim_fresh_and_the_block_releases_it(tmp_path):
    with claimed(tmp_path, "k", heartbeat=0.05) as mine:
        assert mine
        old = time.time() - 1000
        os.utime(claim_path(tmp_path, "k"), (old, old))
        time.sleep(0.3)
        assert read_claim(tmp_path, "k")["age"] < 100
        with claimed(tmp_path, "k") as again:
            assert again is False
    assert read_claim(tmp_path, "k") is None


def _race(root: str, barrier, out) -> None:
    barrier.wait()
    out.put(try_claim(root, "k"))
    barrier.wait()  # the winner stays alive until every racer has tried


def test_racing_processes_get_one_claim(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(got) == [False] * (n - 1) + [True]
