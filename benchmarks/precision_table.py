"""Does exactness survive mixed precision? The table behind the engine's precision policy.

For an exact and an approximate (one pixel off) model of each case, the script trains one
short run with the engine (``run(..., amp=TRAIN_AMP)``: bf16 autocast on the CPU by
default, as ``--amp`` trains on a bf16 GPU), rebuilds the tested model from its checkpoint
and evaluates its test set at the four quarter turns (``rot90``, exact on the pixel grid)
in each precision:

- ``float32``: what the engine's evaluation does under the policy;
- ``bf16``: CPU ``torch.autocast(dtype=bfloat16)``, what the engine did before the policy
  when a run trained with ``--amp``;
- ``fp16 (CPU)``: CPU ``torch.autocast(dtype=float16)``, indicative only: a GPU's fp16
  kernels round differently (the GPU column needs a lent GPU).

Per cell: the mean relative logit change under the three non-identity quarter turns
(docs/design.md §4, logits invariant: ``||f(g x) - f(x)|| / ||f(x)||`` per image, mean over
images and turns) and its maximum over images, the quarter-turn prediction agreement (the
fraction of test images whose predicted class is the same at 0°, 90°, 180° and 270°), the
accuracy spread over the quarter turns, the images "within reach" (the fraction whose
float32 top-2 logit margin, relative to the logits' norm, is smaller than the cell's largest
logit change: the images whose prediction that much noise could flip) and the relative logit
gap to float32 on upright images (the precision's own rounding, for scale). The engine's
reported ``seen`` / ``unseen`` (policy: float32) come from the run itself. Usage::

    .venv/bin/python benchmarks/precision_table.py                  # both cases, ~5 min
    .venv/bin/python benchmarks/precision_table.py --case mnist --train-amp none
    .venv/bin/python benchmarks/precision_table.py --csv build/precision_table.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from equivlib.data.transforms import normalize
from equivlib.engine.config import RunConfig
from equivlib.engine.restore import rebuild_tested_model
from equivlib.engine.run import RunDatasets, run
from equivlib.experiments.classification import Variant, classification_config
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store.provenance import cpu_model

PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None, "bf16": torch.bfloat16, "fp16 (CPU)": torch.float16}


@dataclass(frozen=True)
class Case:
    """A model family at an exact and an approximate input size, with its run config."""

    key: str
    label: str
    exact: int
    approx: int
    config: Callable[[int, int], RunConfig]  # (input size, epochs) -> config


def _mnist_cnn(size: int, epochs: int) -> RunConfig:
    """The cpu profile's RotMNIST settings (params/cpu.yaml) on 3,000 digits, 1,800 tested."""
    return rotmnist_config("p4_mnist_cnn", size, epochs=epochs, batch_size=32, lr=0.003,
                           lr_step=2, dropout=0.0, sizes=(3000, 200, 1800), seed=0,
                           angles=[0.0, 90.0, 180.0, 270.0])


def _resnet20(size: int, epochs: int) -> RunConfig:
    """The cpu profile's stand-in of notebook 06 (params/cpu.yaml), wider, 2,000 digits."""
    return classification_config("mnist", Variant("p4"), size, width=8, depth=20,
                                 flips=False, epochs=epochs, batch_size=32, lr=0.01,
                                 stand_in_sizes=(2000, 50, 1000))


CASES = {
    "mnist": Case("mnist", "P4 RotMNIST CNN (10 channels), MNIST digits", 28, 27, _mnist_cnn),
    "resnet20": Case("resnet20", "P4 ResNet-20 (widths 8/16/32), MNIST stand-in, CIFAR "
                     "protocol", 33, 32, _resnet20),
}


def quarter_turn_logits(model: torch.nn.Module, x: torch.Tensor,
                        dtype: torch.dtype | None, batch: int = 250) -> list[torch.Tensor]:
    """Float32 copies of ``model``'s logits on ``x`` (normalised, NCHW) rotated by 0, 1, 2
    and 3 quarter turns, computed under CPU autocast to ``dtype`` (None: float32)."""
    model.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                         enabled=dtype is not None):
        for k in range(4):
            xr = torch.rot90(x, k, (-2, -1))
            out.append(torch.cat([model(c).float() for c in xr.split(batch)]))
    return out


def rotation_stats(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> dict[str, float]:
    """Logit change (mean, max), prediction agreement and accuracy per quarter turn."""
    ref = logits[0]
    norm = ref.norm(dim=1).clamp_min(torch.finfo(ref.dtype).tiny)
    changes = torch.stack([(y - ref).norm(dim=1) / norm for y in logits[1:]])  # (3, N)
    preds = torch.stack([y.argmax(1) for y in logits])  # (4, N)
    acc = [(p == targets).float().mean().item() for p in preds]
    return {"change_mean": changes.mean().item(), "change_max": changes.max().item(),
            "agreement": (preds == preds[0]).all(0).float().mean().item(),
            "acc_spread": max(acc) - min(acc), "seen": acc[0], "unseen": sum(acc) / 4}


def relative_margins(logits: torch.Tensor) -> torch.Tensor:
    """Per image: the gap between its two largest logits over the norm of its logits."""
    top = logits.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) / logits.norm(dim=1)


def test_images(config: RunConfig, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test set as the engine evaluates it: (normalised images, targets)."""
    sets = RunDatasets(config, data)
    xs, ys = zip(*(sets.test[i] for i in range(len(sets.test))), strict=True)
    return normalize(torch.stack(xs), sets.info.mean, sets.info.std), torch.tensor(ys)


def measure(case: Case, size: int, *, epochs: int, train_amp: str | bool,
            workdir: Path) -> list[dict[str, Any]]:
    """Train ``case`` at ``size`` briefly, then one row per precision."""
    from equivlib.data.registry import get_dataset

    config = case.config(size, epochs)
    data = get_dataset(config.data.dataset, None, False, **config.data.options)
    ckpt = workdir / f"{case.key}-{size}"
    tick = time.perf_counter()
    metrics = run(config, data, checkpoint_dir=ckpt, amp=train_amp)
    seconds = time.perf_counter() - tick
    model = rebuild_tested_model(config, ckpt, num_classes=10)
    x, y = test_images(config, data)
    rows, fp32_upright = [], None
    for name, dtype in PRECISIONS.items():
        logits = quarter_turn_logits(model, x, dtype)
        if dtype is None:
            fp32_upright = logits[0]
        gap = ((logits[0] - fp32_upright).norm(dim=1)
               / fp32_upright.norm(dim=1)).mean().item()
        stats = rotation_stats(logits, y)
        within = (relative_margins(fp32_upright) < stats["change_max"]).float().mean().item()
        rows.append({"case": case.label, "size": size,
                     "exact": size == case.exact, "precision": name, **stats,
                     "within_reach": within, "gap_to_float32": gap,
                     "engine_seen": metrics["seen"], "engine_unseen": metrics["unseen"],
                     "test_images": len(y), "train_seconds": seconds})
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: one line per (case, size) with a column group per precision."""
    head = ("| model | size | precision | logit change, mean (max) | agreement | "
            "within reach | accuracy spread | gap to float32 |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        kind = "exact" if r["exact"] else "approx."
        lines.append(
            f"| {r['case']} | {r['size']} ({kind}) | {r['precision']} | "
            f"{r['change_mean']:.1e} ({r['change_max']:.1e}) | "
            f"{r['agreement'] * 100:.1f} % | {r['within_reach'] * 100:.2f} % | "
            f"{r['acc_spread'] * 100:.1f} pt | "
            f"{r['gap_to_float32']:.1e} |")
    return "\n".join(lines)


def engine_lines(rows: Sequence[dict[str, Any]]) -> str:
    """The engine's reported seen / unseen per run (float32 evaluation, the policy)."""
    seen = {}
    for r in rows:
        seen[(r["case"], r["size"])] = (r["engine_seen"], r["engine_unseen"],
                                        r["test_images"], r["train_seconds"])
    return "\n".join(f"engine (policy: float32 evaluation): {c} at {s}: seen "
                     f"{a * 100:.2f} %, unseen {b * 100:.2f} % ({n} test images; trained "
                     f"in {t:.0f} s)" for (c, s), (a, b, n, t) in seen.items())


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, measure every case, print the table (and write ``--csv``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", choices=sorted(CASES),
                   help="case(s) to measure (default: all)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per run")
    p.add_argument("--train-amp", default="bf16", choices=("bf16", "none"),
                   help="train under CPU bf16 autocast (as --amp on a bf16 GPU) or float32")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    a = p.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("EQUIVLIB_PROGRESS", "0")
    torch.set_num_threads(a.threads)
    train_amp: str | bool = False if a.train_amp == "none" else a.train_amp
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in a.case or list(CASES):
            case = CASES[key]
            for size in (case.exact, case.approx):
                rows += measure(case, size, epochs=a.epochs, train_amp=train_amp,
                                workdir=Path(tmp))
    print(f"CPU: {cpu_model()} ({platform.machine()}), torch {torch.__version__}, "
          f"{a.threads} thread(s); trained {a.epochs} epochs under "
          f"{'float32' if train_amp is False else 'CPU bf16 autocast'}; fp16 on a GPU: "
          f"{'not measured here' if torch.cuda.is_available() else 'no GPU lent'}")
    print(format_table(rows))
    print(engine_lines(rows))
    if a.csv is not None:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        with a.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
