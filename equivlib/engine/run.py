"""One training run, end to end: check everything, load data, train with a checkpoint after
every epoch, resume from the last one, test, and store the result.

On the CPU a run is bit-reproducible at a fixed thread count, and a run stopped after any
epoch and resumed ends with bit-identical metrics (the ``timing`` entry aside). On a GPU it
is seeded but not bit-identical.

Under ``torchrun`` the model is wrapped in DDP with synchronised batch norm, each process
takes ``batch_size / world_size`` images of every global batch, and only rank 0 writes.
With the same global batch, N processes see the same images (same augmentation) and train
the same model as one process up to float32 summation order; dropout masks, though, are
drawn per process, so with dropout the runs agree in distribution only.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from equivlib.data.base import DatasetSplits
from equivlib.data.identity import changed as changed_data
from equivlib.data.identity import data_identity
from equivlib.data.loaders import (
    TransformedDataset,
    TransformedIterable,
    eval_loader,
    sample_seed,
    set_epoch,
    train_loader,
)
from equivlib.data.registry import check_dataset, get_dataset
from equivlib.data.transforms import biased_angle, rotate, test_transform, train_transform
from equivlib.data.transforms import uniform_angles as uniform_regime_angles
from equivlib.engine.checkpoint import (
    CorruptCheckpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_aside,
    set_rng_state,
)
from equivlib.engine.config import RunConfig
from equivlib.engine.distributed import DistContext
from equivlib.engine.loop import (
    equivariance_errors,
    evaluate,
    quarter_turn_summary,
    train_one_epoch,
)
from equivlib.engine.optim import build_optimizer, build_scheduler
from equivlib.engine.precision import check_amp, resolve_precision
from equivlib.layers import convert_sync_batchnorm
from equivlib.models import get_model
from equivlib.store.provenance import collect as collect_provenance
from equivlib.store.results import load_result, save_result
from equivlib.store.writable import check_writable_dir


class StopTraining(RuntimeError):
    """Raised by the ``stop_after_epoch`` hook (simulates a killed run)."""


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite: the run stops and stores nothing."""


class ForeignCheckpoint(ValueError):
    """The checkpoint directory holds another config's run (raised before data loads)."""


def progress_enabled() -> bool:
    """Progress bars only on a terminal, and never with ``EQUIVLIB_PROGRESS=0``."""
    return os.environ.get("EQUIVLIB_PROGRESS", "1") != "0" and sys.stderr.isatty()


def check_device(device: str) -> torch.device:
    """The torch device ``device``; ValueError if it is malformed or absent here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is available here; "
                         f"use device 'cpu' (slow at paper scale)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use cpu or cuda")
    return dev


def default_checkpoint_dir(config: RunConfig) -> Path:
    """``checkpoints/<config key>`` (git-ignored)."""
    return Path("checkpoints") / config.key()


def _wandb_run(config: RunConfig, directory: Path) -> Any:
    """A silent W&B run (offline unless ``WANDB_MODE`` says otherwise) whose files go in
    ``directory`` (the run's checkpoint directory); None when disabled or unavailable."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return None
    try:
        import wandb
        directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(project="equivlib", mode=mode, config=config.to_dict(),
                          dir=str(directory), name=config.key(), reinit="finish_previous",
                          settings=wandb.Settings(silent=True))
    except Exception as exc:  # never let logging break a run
        warnings.warn(f"wandb disabled: {exc}", RuntimeWarning, stacklevel=2)
        return None


def prepare(config: dict[str, Any] | RunConfig, *, data_dir: str | Path | None = None,
            download: bool = False, device: str = "cpu", check_data: bool = True) -> RunConfig:
    """Validate the config, the device and (``check_data``) the data's presence; raises
    before any work."""
    config = RunConfig.from_dict(config)
    check_device(device)
    if check_data:
        check_dataset(config.data.dataset, data_dir, download, **config.data.options)
    return config


def _resume_state(path: Path, dev: torch.device, key: str,
                  ctx: DistContext) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none. An unreadable one (e.g.
    truncated) is moved aside to ``last.pt.corrupt-<timestamp>`` by rank 0 with a warning,
    and the run starts from scratch: a bad file never costs the run."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, dev)
    except CorruptCheckpoint as exc:
        moved = set_aside(path) if ctx.is_main and path.exists() else None
        where = f"moved it to {moved}" if moved else "rank 0 moves it aside"
        warnings.warn(f"run {key}: checkpoint {path} cannot be read ({exc.reason}); {where} "
                      "and starting the run from epoch 0", RuntimeWarning, stacklevel=3)
        return None


def trivial_topk(topk: list[int], num_classes: int, dataset: str) -> list[str]:
    """One sentence per ``k`` of ``topk`` (k > 1) at least ``num_classes``: its top-k accuracy
    is 100 % whatever the model predicts (every class is among the top k)."""
    return [f"test.topk {k} >= the {num_classes} classes of {dataset}: top-{k} accuracy is "
            f"100 % whatever the model predicts (every class is among the top {k}), so the "
            f"stored test_top{k} says nothing; test with more than {k} classes, or drop {k} "
            "from test.topk" for k in topk if 1 < k and num_classes <= k]


class RunDatasets:
    """The transformed train / valid / test datasets of a config."""

    def __init__(self, config: RunConfig, data: DatasetSplits) -> None:
        d, seed = config.data, config.train.seed
        train_tf = train_transform(d.protocol, d.input_size, quarter_turns=d.quarter_turns,
                                   flips=d.flips)
        test_tf = test_transform(d.protocol, d.input_size)
        if isinstance(data.train, torch.utils.data.IterableDataset):
            if d.regime == "uniform":
                raise ValueError("the uniform regime needs a map-style dataset")
            self.train = TransformedIterable(data.train, train_tf, seed)
        else:
            angles = (uniform_regime_angles(len(data.train), seed) if d.regime == "uniform"
                      else None)
            self.train = TransformedDataset(data.train, train_tf, seed, angles)
        wrap = (TransformedIterable if isinstance(data.test, torch.utils.data.IterableDataset)
                else TransformedDataset)
        self.valid = None if data.valid is None else wrap(data.valid, test_tf, seed)
        self.test = wrap(data.test, test_tf, seed)
        self.info = data.info


def run(config: dict[str, Any] | RunConfig, data: DatasetSplits | None = None, *,
        checkpoint_dir: str | Path | None = None, results_dir: str | Path | None = None,
        data_dir: str | Path | None = None, download: bool = False, device: str = "cpu",
        workers: int = 0, amp: bool | str = False, channels_last: bool = False,
        ctx: DistContext | None = None, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train and test one run; resume from ``checkpoint_dir/last.pt`` if it exists.

    With ``results_dir`` a finished run is reused and a new result is stored there, with
    where it was made (:mod:`equivlib.store.provenance`: CPU, device, threads, processes,
    torch/CUDA, lock hash, commit) and which data files it read under ``data_dir``
    (:mod:`equivlib.data.identity`) beside the metrics; a stored result or a checkpoint
    made from files that have changed since is not reused (one warning says what changed).
    Pass ``data_dir`` with ``data`` too when the data came from files there.
    ``data`` (raw splits) skips loading. ``workers``: DataLoader worker processes;
    ``amp`` (True, CUDA: bf16 where supported, else fp16 with a grad scaler; ``"bf16"`` /
    ``"fp16"``: that dtype on any device) and ``channels_last`` change how, not what, is
    computed and are not part of the config. Under the precision policy
    (:mod:`equivlib.engine.precision`) ``amp`` applies to training only: validation, the
    test at every angle and the equivariance errors run in float32.
    ``stop_after_epoch=k`` raises :class:`StopTraining` after epoch k's checkpoint.
    A top-k of ``test.topk`` with k >= the number of classes (top-5 of a 4-class stand-in)
    is 100 % by definition: a RuntimeWarning says so before training (:func:`trivial_topk`).
    Returns the metrics: test accuracy per angle (``test_acc``, of the selected model),
    ``seen``/``unseen`` and per quarter turn when the angles include them, top-k, mirrored
    accuracies and equivariance errors as the test config asks, the best valid accuracy
    and epoch, the per-epoch history and ``timing``.
    """
    ctx = ctx or DistContext()
    config = prepare(config, data_dir=data_dir, download=download, device=device,
                     check_data=data is None)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    check_amp(amp)
    # the files the run reads under the data directory (None: data that ships with a
    # package): a stored result or checkpoint made from other data is not reused
    identity = data_identity(config.data.dataset, data_dir, **config.data.options)
    if results_dir is not None:
        stored = load_result(config.to_dict(), results_dir, data=identity)
        if stored is not None:
            return stored["metrics"]
    key = config.key()
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(config)
    ckpt_path = ckpt_dir / "last.pt"
    if ctx.is_main:  # before any data loads: only rank 0 writes
        check_writable_dir(ckpt_dir, "checkpoint directory")
        if results_dir is not None:
            check_writable_dir(results_dir, "results directory")
    dev = torch.device(device)
    ck = _resume_state(ckpt_path, dev, key, ctx)
    if ck is not None and ck.get("key") != key:
        raise ForeignCheckpoint(f"checkpoint {ckpt_path} belongs to another config "
                                f"({ck.get('key')}, not {key}); delete it or pick another "
                                "directory")
    if ck is not None and isinstance(ck.get("data"), dict) and identity is not None:
        why = changed_data(ck["data"], identity)
        if why:
            moved = (set_aside(ckpt_path, "other-data") if ctx.is_main and ckpt_path.exists()
                     else None)
            where = f"moved it to {moved}" if moved else "rank 0 moves it aside"
            warnings.warn(f"run {key}: not resuming checkpoint {ckpt_path}: {why}; {where} "
                          "and starting the run from epoch 0", RuntimeWarning, stacklevel=2)
            ck = None
    if data is None:
        data = get_dataset(config.data.dataset, data_dir, download, **config.data.options)
        if identity is None:  # downloaded just now
            identity = data_identity(config.data.dataset, data_dir, **config.data.options)
    if config.train.select == "best_valid" and data.valid is None:
        raise ValueError(f"train.select = 'best_valid' needs a validation split and "
                         f"{config.data.dataset} has none here: use select 'last'")
    sets = RunDatasets(config, data)
    info = sets.info
    if ctx.is_main:
        for what in trivial_topk(config.test.topk, info.num_classes, info.name):
            warnings.warn(f"run {key}: {what}", RuntimeWarning, stacklevel=2)
    t, seed = config.train, config.train.seed

    seed_everything(seed)
    base_model = get_model(config.model.name, num_classes=info.num_classes,
                           **config.model.kwargs).to(dev)
    precision, scaler = resolve_precision(dev, amp, channels_last)
    if channels_last:
        base_model = base_model.to(memory_format=torch.channels_last)
    model: nn.Module = base_model
    if ctx.distributed:  # batch statistics over the global batch, as with one process
        base_model = convert_sync_batchnorm(base_model)
        model = nn.parallel.DistributedDataParallel(
            base_model, device_ids=[dev.index] if dev.type == "cuda" else None)
    loader_kw = dict(rank=ctx.rank, world_size=ctx.world_size, workers=workers,
                     pin_memory=dev.type == "cuda")
    train_dl = train_loader(sets.train, t.batch_size, seed, **loader_kw)
    valid_dl = (None if sets.valid is None
                else eval_loader(sets.valid, config.test.batch_size, **loader_kw))
    test_dl = eval_loader(sets.test, config.test.batch_size, **loader_kw)
    steps_per_epoch = len(train_dl)
    optimizer = build_optimizer(model.parameters(), config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, t.epochs, steps_per_epoch)
    per_batch = scheduler is not None and config.schedule.unit == "batch"

    start, best_acc, best_state, history, train_seconds = 0, -1.0, None, [], 0.0
    if ck is not None:
        base_model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        start, best_acc, best_state = ck["epoch"], ck["best_valid_acc"], ck["best_model"]
        history, train_seconds = ck["history"], ck["train_seconds"]

    d = config.data
    hook = None
    if d.regime == "biased":
        def hook(x: torch.Tensor, step: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(sample_seed(seed, -1, step))
            return rotate(x, biased_angle(g, d.mu, d.sigma))

    from tqdm import tqdm
    show = ctx.is_main and progress_enabled()
    wb = _wandb_run(config, ckpt_dir) if ctx.is_main else None
    eval_kw = dict(mean=info.mean, std=info.std, device=dev, ctx=ctx, precision=precision)
    try:
        for epoch in range(start, t.epochs):
            tick = time.perf_counter()
            set_epoch(train_dl, epoch)
            bar = tqdm(total=steps_per_epoch, desc=f"{key} epoch {epoch + 1}/{t.epochs}",
                       disable=not show, leave=False)
            stats = train_one_epoch(
                model, train_dl, optimizer, mean=info.mean, std=info.std, device=dev, ctx=ctx,
                batch_scheduler=scheduler if per_batch else None, batch_hook=hook,
                first_step=epoch * steps_per_epoch, precision=precision, scaler=scaler,
                label_smoothing=t.label_smoothing, progress=bar)
            bar.close()
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None and not per_batch:
                scheduler.step()
            train_seconds += time.perf_counter() - tick
            if not math.isfinite(stats["train_loss"]):
                kept = (f"the checkpoint of epoch {epoch} is kept (delete {ckpt_dir} to "
                        f"start again)" if epoch else "no checkpoint was written")
                raise NonFiniteLoss(
                    f"run {key}: the training loss became {stats['train_loss']} in epoch "
                    f"{epoch + 1} (lr {lr:g}); nothing was stored and {kept}. Lower the "
                    f"learning rate (optim.lr) or check the data")
            entry = {"epoch": epoch + 1, **stats, "lr": lr}
            if valid_dl is not None:
                entry["valid_acc"] = evaluate(model, valid_dl, **eval_kw)[1][0.0]
                if entry["valid_acc"] > best_acc:
                    best_acc = entry["valid_acc"]
                    best_state = {k: v.detach().clone()
                                  for k, v in base_model.state_dict().items()}
            history.append(entry)
            if ctx.is_main:
                if wb is not None:
                    wb.log({f"train/{k[6:]}" if k.startswith("train_") else k: v
                            for k, v in entry.items()})
                save_checkpoint(ckpt_path, {
                    "key": key, "epoch": epoch + 1, "model": base_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "rng": rng_state(), "sampler": {"seed": seed, "next_epoch": epoch + 1},
                    "best_model": best_state, "best_valid_acc": best_acc,
                    "history": history, "train_seconds": train_seconds, "data": identity})
            ctx.barrier()
            if stop_after_epoch is not None and epoch + 1 == stop_after_epoch:
                raise StopTraining(f"stopped after epoch {epoch + 1}")
        if t.select == "best_valid" and best_state is not None:
            base_model.load_state_dict(best_state)
        tick = time.perf_counter()
        metrics = _test(config, model, base_model, test_dl, eval_kw, info)
        test_seconds = time.perf_counter() - tick
        metrics.update({
            "best_valid_acc": best_acc if valid_dl is not None else None,
            "best_epoch": (max(history, key=lambda h: h["valid_acc"])["epoch"]
                           if history and valid_dl is not None else len(history)),
            "history": history,
            "timing": {"train_seconds": train_seconds,
                       "train_images": sum(h["train_images"] for h in history),
                       "test_seconds": test_seconds,
                       "test_images": len(sets.test) * len(config.test.angles)
                       * (2 if config.test.flips else 1),
                       "threads": torch.get_num_threads(), "processes": ctx.world_size,
                       "device": dev.type,
                       # only under autocast, so float32 results keep their exact form
                       **({"precision": precision.describe()}
                          if precision.autocast is not None else {})}})
        if wb is not None:
            wb.summary.update({k: v for k, v in metrics.items()
                               if isinstance(v, float) and math.isfinite(v)})
    finally:
        if wb is not None:
            wb.finish()
    if results_dir is not None and ctx.is_main:  # with where it was made (world size, ...)
        save_result(config.to_dict(), metrics, results_dir,
                    provenance=collect_provenance(dev, processes=ctx.world_size),
                    data=identity)
    return metrics


def _test(config: RunConfig, model: nn.Module, base_model: nn.Module, test_dl: Any,
          eval_kw: dict[str, Any], info: Any) -> dict[str, Any]:
    e = config.test
    acc = evaluate(model, test_dl, angles=e.angles, topk=e.topk, **eval_kw)
    top1 = acc.get(1) or acc[min(acc)]
    metrics: dict[str, Any] = {
        "test_acc": {str(a): v for a, v in top1.items()},
        "test_acc_mean": sum(top1.values()) / len(top1), **quarter_turn_summary(top1)}
    for k, per_angle in acc.items():
        if k != 1:
            metrics[f"test_top{k}"] = {str(a): v for a, v in per_angle.items()}
    if e.flips:
        flipped = evaluate(model, test_dl, angles=e.angles, topk=[1], flip=True, **eval_kw)[1]
        metrics["test_acc_flipped"] = {str(a): v for a, v in flipped.items()}
    if e.error_layers:
        group = getattr(base_model, "group", None)
        metrics["equivariance_error"] = equivariance_errors(
            base_model, test_dl, e.error_layers, group=group.name if group else "p4",
            mean=info.mean, std=info.std, device=eval_kw["device"], images=e.error_images)
    return metrics
