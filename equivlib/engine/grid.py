"""Run a list of training configs through the results store: finished runs are reused,
missing ones are trained (optionally in parallel worker processes) and stored one by one,
so a grid that dies part-way loses at most the epochs since each run's last checkpoint.

Every run trains with ``threads`` torch threads, in-process or in a worker, so a result
does not depend on how many runs share the machine.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from equivlib.data import check_mnist_files, load_mnist
from equivlib.results import config_hash, load_result
from equivlib.train import make_config, progress_enabled, run


class GridRunError(RuntimeError):
    """A run of the grid failed; the runs that finished are stored."""


@functools.lru_cache(maxsize=4)
def _cached_data(input_size: int, source: str, data_dir: str | None,
                 sizes: tuple[int, int, int], split_seed: int):
    return load_mnist(input_size, source, data_dir, sizes, split_seed)


def _train_one(config: dict[str, Any], results_dir: str, checkpoint_root: str,
               data_dir: str | None, threads: int, device: str) -> dict[str, Any]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = _cached_data(config["input_size"], config["source"], data_dir,
                            tuple(config["sizes"]), config["split_seed"])
        return run(config, data, checkpoint_dir=Path(checkpoint_root) / config_hash(config),
                   results_dir=results_dir, device=device)
    finally:
        torch.set_num_threads(previous)


def run_grid(configs: Sequence[dict[str, Any]], results_dir: str | Path,
             checkpoint_root: str | Path = "checkpoints", *, workers: int = 1,
             threads: int = 1, data_dir: str | Path | None = None, device: str = "cpu",
             on_done: Callable[[dict[str, Any], dict[str, Any], bool], None] | None = None,
             ) -> list[dict[str, Any]]:
    """Metrics of every config, in order: stored ones reused, missing ones trained.

    ``workers`` > 1 trains that many runs at once in spawned processes, each with
    ``threads`` torch threads (``device``: see :func:`equivlib.train.run`).
    ``on_done(config, metrics, reused)`` is called as runs finish. All configs (and
    torchvision data files) are checked before any work; a failed run raises
    :class:`GridRunError` after the runs in flight have finished and been stored.
    """
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got {workers}, {threads}")
    configs = [make_config(**c) for c in configs]
    _check_device(device)
    if any(c["source"] == "torchvision" for c in configs):
        check_mnist_files(data_dir)
    data_dir = None if data_dir in (None, "") else str(data_dir)
    results: dict[str, dict[str, Any]] = {}
    missing: dict[str, dict[str, Any]] = {}
    for c in configs:
        key = config_hash(c)
        stored = load_result(c, results_dir)
        if stored is not None:
            results[key] = stored["metrics"]
        else:
            missing[key] = c

    from tqdm import tqdm
    bar = tqdm(total=len(configs), initial=len(configs) - len(missing), desc="runs",
               disable=not progress_enabled())
    for key, c in zip(map(config_hash, configs), configs, strict=True):
        if key in results and on_done is not None:
            on_done(c, results[key], True)

    def finish(key: str, metrics: dict[str, Any]) -> None:
        results[key] = metrics
        bar.update(1)
        if on_done is not None:
            on_done(missing[key], metrics, False)

    args = (str(results_dir), str(checkpoint_root), data_dir, threads, device)
    try:
        if workers == 1 or len(missing) <= 1:
            for key, c in missing.items():
                try:
                    finish(key, _train_one(c, *args))
                except Exception as exc:
                    raise GridRunError(f"run {key} ({_describe(c)}) failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
        else:
            _run_parallel(missing, args, workers, finish)
    finally:
        bar.close()
    return [results[config_hash(c)] for c in configs]


def _run_parallel(missing: dict[str, dict[str, Any]], args: tuple, workers: int,
                  finish: Callable[[str, dict[str, Any]], None]) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(missing)),
                             mp_context=context) as pool:
        futures = {pool.submit(_train_one, c, *args): key for key, c in missing.items()}
        pending = set(futures)
        failure: tuple[str, BaseException] | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
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


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is available here; "
                         f"use device 'cpu' (slow at paper scale)")


def _describe(config: dict[str, Any]) -> str:
    return (f"{config['model']} at {config['input_size']}, regime {config['regime']}, "
            f"seed {config['seed']}")
