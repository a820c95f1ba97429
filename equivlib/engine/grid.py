"""Run a list of training configs through the results store: finished runs are reused,
missing ones are trained (optionally in parallel worker processes) and stored one by one,
so a grid that dies part-way loses at most the epochs since each run's last checkpoint.
Processes sharing one store (the shards of a SLURM array, see :func:`shard`) claim each run
before training it, so none is trained twice.

Every run trains with ``threads`` torch threads, in-process or in a worker, so a result
does not depend on how many runs share the machine.

Each stored run says where it was made (:mod:`equivlib.store.provenance`); a grid that
reuses runs made elsewhere (another commit, lock, CPU, GPU or torch/CUDA version, or unknown)
prints one line that says so. The provenance of every run a grid returned is then known to
this process (:func:`equivlib.store.results.provenance_of`), e.g. for a figure's sidecar.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from equivlib import progress
from equivlib.data.base import DatasetMissingError, DatasetSplits
from equivlib.data.identity import data_identity
from equivlib.data.registry import check_dataset, get_dataset
from equivlib.engine.config import RunConfig
from equivlib.engine.launch import train_with_torchrun
from equivlib.engine.run import check_device, prepare, progress_enabled, run
from equivlib.store.claims import STALE_AFTER_SECONDS, claimed, read_claim
from equivlib.store.provenance import collect as collect_provenance
from equivlib.store.provenance import made_elsewhere
from equivlib.store.results import load_result


class GridRunError(RuntimeError):
    """A run of the grid failed; the runs that finished are stored."""


@functools.lru_cache(maxsize=4)
def _cached_data(dataset: str, options_json: str, data_dir: str | None,
                 download: bool, files: str | None = None) -> DatasetSplits:
    """The dataset, loaded once per process; ``files`` (the ``stat`` digest of its data
    files' identity) is part of the key, so changed files are loaded again."""
    return get_dataset(dataset, data_dir, download, **json.loads(options_json))


def check_data(configs: Sequence[RunConfig], data_dir: str | None = None,
               download: bool = False) -> None:
    """Check every dataset the configs need before any work: one
    :class:`~equivlib.data.base.DatasetMissingError` that names each missing dataset."""
    problems: dict[str, str] = {}
    checked: set[tuple[str, str]] = set()
    for c in configs:
        key = (c.data.dataset, json.dumps(c.data.options, sort_keys=True))
        if key in checked or c.data.dataset in problems:
            continue
        checked.add(key)
        try:
            check_dataset(c.data.dataset, data_dir, download, **c.data.options)
        except DatasetMissingError as exc:
            problems[c.data.dataset] = str(exc)
    if len(problems) == 1:
        raise DatasetMissingError(next(iter(problems.values())))
    if problems:
        raise DatasetMissingError(
            f"{len(problems)} datasets are missing ({', '.join(problems)}):\n"
            + "\n".join(f"- {text}" for text in problems.values()))


def _train_one(config: dict[str, Any], results_dir: str, checkpoint_root: str,
               data_dir: str | None, download: bool, threads: int, device: str,
               stale_after: float, processes: int = 1) -> tuple[str, Any]:
    """``("trained" | "reused", metrics)``, or ``("held", holder)`` when another process
    has claimed the run. ``processes`` > 1 trains it with that many DDP processes
    (torchrun, :mod:`equivlib.engine.launch`)."""
    c = RunConfig.from_dict(config)
    key = c.key()
    identity = data_identity(c.data.dataset, data_dir, **c.data.options)
    with claimed(results_dir, key, stale_after=stale_after) as mine:
        # finished by another process meanwhile (from the data here)?
        stored = load_result(config, results_dir, data=identity)
        if stored is not None:
            return "reused", stored["metrics"]
        if not mine:
            return "held", read_claim(results_dir, key)
        if processes > 1:
            return "trained", train_with_torchrun(
                c, processes, results_dir=results_dir,
                checkpoint_dir=Path(checkpoint_root) / key, data_dir=data_dir,
                download=download, device=device, threads=threads)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            data = _cached_data(c.data.dataset, json.dumps(c.data.options, sort_keys=True),
                                data_dir, download, identity and identity["stat"])
            return "trained", run(c, data, checkpoint_dir=Path(checkpoint_root) / key,
                                  results_dir=results_dir, data_dir=data_dir, device=device)
        finally:
            torch.set_num_threads(previous)


def shard(configs: Sequence[Any], index: int, count: int) -> list[Any]:
    """Part ``index`` (1-based) of ``count`` disjoint parts of ``configs``: every
    ``count``-th config from position ``index - 1``, so parts differ in size by at most one
    and together hold every config once (one part per job of a SLURM array)."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: need 1 <= K <= N")
    return list(configs[index - 1::count])


def run_grid(configs: Sequence[dict[str, Any] | RunConfig], results_dir: str | Path,
             checkpoint_root: str | Path = "checkpoints", *, workers: int = 1,
             threads: int = 1, data_dir: str | Path | None = None, download: bool = False,
             device: str = "cpu",
             on_done: Callable[[dict[str, Any], dict[str, Any], bool], None] | None = None,
             on_held: Callable[[dict[str, Any], dict[str, Any] | None], None] | None = None,
             poll_seconds: float = 5.0, stale_after: float = STALE_AFTER_SECONDS,
             processes_per_run: int = 1) -> list[dict[str, Any]]:
    """Metrics of every config, in order: stored ones reused, missing ones trained.

    ``workers`` > 1 trains that many runs at once in spawned processes, each with
    ``threads`` torch threads (``device``: see :func:`equivlib.engine.run.run`);
    ``download`` lets torchvision fetch a missing dataset (paper profile only).
    ``processes_per_run`` > 1 trains each run with torchrun over that many DDP processes
    (one per GPU with ``device="cuda"``; gloo processes on the CPU), ``threads`` each.
    Each run is claimed in the results store before it trains (:mod:`equivlib.store.claims`),
    so processes sharing the store (grid shards, two notebooks) never train a run twice: a
    run another live process holds is waited for (checked every ``poll_seconds``; taken over
    when its claim goes stale after ``stale_after`` s). ``on_done(config, metrics, reused)``
    is called as runs finish, ``on_held(config, holder)`` once per run found held elsewhere.
    When some reused runs were made elsewhere (:func:`equivlib.store.provenance.differences`:
    another commit, lock, CPU, GPU, torch or CUDA, or unknown), one line at the end says so
    on stdout (``reused 12 runs made elsewhere: 8 at commit 1a2b3c4 (dirty); 4 on ...``);
    :func:`equivlib.store.results.provenance_of` then gives the provenance of every run.
    All configs and every dataset they need are checked before any work (one error names
    each missing dataset, :func:`check_data`); a failed run
    raises :class:`GridRunError` after the runs in flight have finished and been stored.
    """
    if workers < 1 or threads < 1 or processes_per_run < 1:
        raise ValueError(f"workers, threads and processes_per_run must be >= 1, got "
                         f"{workers}, {threads}, {processes_per_run}")
    check_device(device)
    data_dir = None if data_dir in (None, "") else str(data_dir)
    checked = [prepare(c, data_dir=data_dir, device=device, check_data=False)
               for c in configs]
    check_data(checked, data_dir, download)
    configs = [c.to_dict() for c in checked]
    results: dict[str, dict[str, Any]] = {}
    missing: dict[str, dict[str, Any]] = {}
    reused_from: dict[str, dict[str, Any] | None] = {}  # key -> provenance of a reused run
    identities: dict[str, dict[str, Any] | None] = {}  # the data each dataset reads now
    for c in configs:
        key = RunConfig.from_dict(c).key()
        which = json.dumps([c["data"]["dataset"], c["data"]["options"]], sort_keys=True)
        if which not in identities:
            identities[which] = data_identity(c["data"]["dataset"], data_dir,
                                              **c["data"]["options"])
        stored = load_result(c, results_dir, data=identities[which])
        if stored is not None:
            results[key] = stored["metrics"]
            reused_from[key] = stored["provenance"]
        else:
            missing[key] = c

    from tqdm import tqdm
    bar = tqdm(total=len(configs), initial=len(configs) - len(missing), desc="runs",
               disable=not progress_enabled())
    keys = [RunConfig.from_dict(c).key() for c in configs]
    for key, c in zip(keys, configs, strict=True):
        if key in results and on_done is not None:
            on_done(c, results[key], True)

    counts = {"total": len(configs), "trained": 0, "reused": len(configs) - len(missing)}

    def report(stage: str = "training", **extra: Any) -> None:
        done = counts["trained"] + counts["reused"]
        progress.emit(stage, **counts, done=done,
                      running=min(workers, counts["total"] - done), **extra)

    def finish(key: str, outcome: tuple[str, Any]) -> None:
        status, metrics = outcome
        results[key] = metrics
        counts["reused" if status == "reused" else "trained"] += 1
        # read back in this process: its provenance (the run may have been stored by a
        # worker, torchrun or another shard) is then known here, see provenance_of
        record = load_result(missing[key], results_dir)
        if status == "reused":
            reused_from[key] = record["provenance"] if record is not None else None
        bar.update(1)
        report()
        if on_done is not None:
            on_done(missing[key], metrics, status == "reused")

    args = (str(results_dir), str(checkpoint_root), data_dir, download, threads, device,
            stale_after, processes_per_run)
    pending, told = dict(missing), set()
    report()
    try:
        while pending:
            held = _execute(pending, args, workers, finish)
            for key, holder in held.items():
                if key not in told and on_held is not None:
                    on_held(missing[key], holder)
                told.add(key)
            pending = {k: missing[k] for k in held}
            if pending:
                report("waiting", held=len(pending))
                time.sleep(poll_seconds)
    finally:
        bar.close()
    if reused_from:
        here = collect_provenance(device, processes=processes_per_run, threads=threads)
        line = made_elsewhere(reused_from.values(), here)
        if line:
            print(line, flush=True)
    return [results[k] for k in keys]


def _execute(pending: dict[str, dict[str, Any]], args: tuple, workers: int,
             finish: Callable[[str, tuple[str, Any]], None]) -> dict[str, Any]:
    """Train (or reuse) the pending runs; returns those held by other processes."""
    held: dict[str, Any] = {}

    def outcome(key: str, result: tuple[str, Any]) -> None:
        if result[0] == "held":
            held[key] = result[1]
        else:
            finish(key, result)

    if workers == 1 or len(pending) <= 1:
        for key, c in pending.items():
            try:
                result = _train_one(c, *args)
            except Exception as exc:
                raise GridRunError(f"run {key} ({_describe(c)}) failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
            outcome(key, result)
    else:
        _run_parallel(pending, args, workers, outcome)
    return held


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Initializer of the grid's worker processes: the worker is sent SIGTERM when the
    process that started it dies (Linux ``PR_SET_PDEATHSIG``), so a killed notebook kernel
    or grid never leaves its workers training as orphans; a worker whose parent is already
    gone exits at once."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the parent's sweep still ends it
            pass
    if os.getppid() != parent_pid:  # died before the line above took effect
        os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The grid's pool: ``workers`` spawned processes that die with this one
    (:func:`die_with_parent`). Create it in a thread that outlives it (Linux ties the
    parent-death signal to the creating thread; the grid creates it in its caller's)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def _run_parallel(missing: dict[str, dict[str, Any]], args: tuple, workers: int,
                  finish: Callable[[str, tuple[str, Any]], None]) -> None:
    with worker_pool(min(workers, len(missing))) as pool:
        futures = {pool.submit(_train_one, c, *args): key for key, c in missing.items()}
        pending = set(futures)
        failure: tuple[str, BaseException] | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)  # report as they end
            for future in done:
                key = futures[future]
                if future.cancelled():
                    continue
                exc = future.exception()
                if exc is None:
                    finish(key, future.result())
                elif failure is None:
                    failure = (key, exc)
                    for other in pending:  # queued runs are dropped, running ones finish
                        other.cancel()
        if failure is not None:
            key, exc = failure
            raise GridRunError(f"run {key} ({_describe(missing[key])}) failed: "
                               f"{type(exc).__name__}: {exc}") from exc


def _describe(config: dict[str, Any]) -> str:
    d = config["data"]
    regime = f", regime {d['regime']}" if d["regime"] != "none" else ""
    return (f"{config['model']['name']} at {d['input_size']} on {d['dataset']}{regime}, "
            f"seed {config['train']['seed']}")
