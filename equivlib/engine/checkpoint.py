"""Checkpoints: the whole state of a run after an epoch, written atomically and read with
``torch.load(..., weights_only=True)``.

A checkpoint holds the model, optimiser, schedule and grad-scaler states, every RNG (torch
CPU and CUDA, NumPy, Python ``random``), the best-on-valid model, the history and the
epoch. The data order needs no state of its own: the sampler and the augmentation are pure
functions of (seed, epoch) (:mod:`equivlib.data.loaders`), so the epoch is its position.
"""

from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equivlib.store.atomic import atomic_write_bytes
from equivlib.store.writable import check_writable_dir  # noqa: F401  (its old home)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached": float(np_state[4])},
             "python": {"version": py_state[0], "state": list(py_state[1]),
                        "gauss": py_state[2]}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (never a half-written checkpoint)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read (truncated, garbage, not a checkpoint)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {path} cannot be read ({reason}); delete it or move "
                         "it aside to start the run again")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # picklable across processes
        return type(self), (self.path, self.reason)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``); model tensors go to ``device``, RNG states
    stay on the CPU. An unreadable file raises :class:`CorruptCheckpoint` naming it."""
    with open(path, "rb") as f:  # a missing or unreadable file is an OSError, not corrupt
        try:
            ck = torch.load(f, weights_only=True, map_location="cpu")
        except Exception as exc:  # truncated or garbage: EOFError, OSError, RuntimeError, ...
            raise CorruptCheckpoint(path, _first_line(exc)) from exc
    if not isinstance(ck, dict):
        raise CorruptCheckpoint(path, f"it holds a {type(ck).__name__}, not a checkpoint")
    if torch.device(device).type != "cpu":
        for part in ("model", "best_model"):
            if ck.get(part) is not None:
                ck[part] = {k: v.to(device) for k, v in ck[part].items()}
    return ck


def set_aside(path: str | Path, why: str = "corrupt") -> Path:
    """Rename ``path`` to ``<path>.<why>-<timestamp>`` (never over another file) and
    return the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, target)
    return target
