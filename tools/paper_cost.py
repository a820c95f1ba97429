"""ESTIMATED cost of the paper profile on GPUs, per notebook: runs x epochs x images, FLOPs
per image of each model at its size, images/s and GPU-hours under stated assumptions.

Nothing here is timed on a GPU. What is counted or measured:

- **The grids**: each training notebook's runs (04, 06, 07, 08; 05 reuses 04's) as the
  ``grid`` command builds them (``params/paper.yaml`` over the notebook's parameters cell);
  dataset sizes from the standard splits (``SPLITS``). A training image costs 3 forwards
  (forward + backward); every evaluated image 1 (validation each epoch where the run keeps
  the best-valid model, the test at every angle, mirrored where asked, the equivariance
  error images once per group element).
- **FLOPs** of one forward pass per image: ``torch.utils.flop_counter.FlopCounterMode`` on
  the meta device (convolutions and matrix products; a group convolution counts its expanded
  bank, as ``F.conv2d`` computes it).
- **Ops** per forward pass (ATen calls, on the meta device): a step of a small model costs
  at least its ops' dispatch and launch time whatever its FLOPs.
- **The loader** (measured here, one CPU core): the engine's per-sample training transform
  of each protocol, with the JPEG decode for Flowers (PIL) and ImageNet (``tf.io``) on a
  JPEG of their typical size; no file reading.

Assumptions (options): an NVIDIA H100 SXM, dense TF32 494.7 TFLOP/s and dense bf16 989.4
TFLOP/s, sustaining ``--utilisation`` 15 % of it (a tuned ResNet-50 sustains about 20 % of
the bf16 peak; these models are smaller per layer, and group convolutions rebuild their
bank every step); ``--op-latency`` 10 µs per ATen op (eager PyTorch's dispatch and launch);
a backward pass twice the forward's ops. Two ways to run:

- **as the grid runs today**: float32 (cuDNN runs float32 convolutions as TF32 by default),
  ``workers=0`` (``grid`` calls ``run`` without DataLoader workers), and the loop syncs every
  step (``loss.item()``), so loading and computing take turns: per step
  ``batch / loader + max(FLOP time, op time)``;
- **tuned**: ``train --amp`` (bf16) with ``--loader-workers`` 8 DataLoader workers (or
  tf.data threads) overlapping the GPU: per step ``max(FLOP time, op time, batch / (8 x
  loader))``.

Usage::

    .venv/bin/python tools/paper_cost.py                 # the table (about 30 s)
    .venv/bin/python tools/paper_cost.py --utilisation 0.3 --op-latency 5e-6
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("04_rotmnist_rotation", "06_classification", "07_pcam", "08_imagenet")

# images per split of the standard datasets (torchvision's docs; ImageNet ILSVRC-2012)
SPLITS: dict[str, dict[str, int]] = {
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "flowers102": {"train": 1_020 + 1_020, "test": 6_149},  # train + val together
    "pcam": {"train": 262_144, "valid": 32_768, "test": 32_768},
    "imagenet": {"train": 1_281_167, "test": 50_000},
}
CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "flowers102": 102, "pcam": 2,
           "imagenet": 1000}
GROUP_ORDER = {"z2": 1, "p4": 4, "p4m": 8}
# stored image size (H, W) per protocol; Flowers and ImageNet as JPEGs of a typical size
STORED = {"resize": (28, 28), "cifar": (32, 32), "pcam": (96, 96), "flowers": (500, 667),
          "imagenet": (375, 500)}


@dataclass(frozen=True)
class Assumptions:
    """The GPU and software assumptions of the estimate."""

    peak_tf32: float = 494.7e12
    peak_bf16: float = 989.4e12
    utilisation: float = 0.15
    op_latency: float = 10e-6
    loader_workers: int = 8


@dataclass
class RunCost:
    """One run's work."""

    notebook: str
    model: str
    size: int
    dataset: str
    protocol: str
    batch: int  # per GPU
    gpus: int
    train_images: int
    eval_images: int
    gflops: float  # forward, one image
    ops: int  # ATen ops of one training forward pass
    eval_ops: int  # ... of one evaluation forward pass


def grid_configs(notebook: str, profile: str = "paper") -> tuple[list[Any], dict[str, Any]]:
    """The notebook's grid as ``grid --notebook NOTEBOOK --profile PROFILE`` builds it (the
    same builders; nothing written, no data read) and its parameters."""
    from equivlib.cli.grid import notebook_defaults, notebook_grid

    params = notebook_defaults(ROOT / "notebooks" / f"{notebook}.ipynb")
    params.update(yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())[notebook])
    return notebook_grid(notebook, params, write_data=False)[0], params


@cache
def forward_counts(name: str, kwargs: tuple, size: int,
                   classes: int) -> tuple[float, int, int]:
    """(GFLOPs, ATen ops in train mode, ATen ops in eval mode) of one forward pass of one
    image, on the meta device; in eval mode after a first pass (group convolutions may cache
    their expanded bank there, never in training)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from equivlib.models import get_model

    class Ops(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            Ops.count += 1
            return func(*args, **(kwargs or {}))

    with torch.device("meta"):
        model = get_model(name, num_classes=classes, **dict(kwargs))
        x = torch.empty(2, 3, size, size)  # 2: batch norm's training statistics
    counts = []
    with torch.no_grad():
        for train in (True, False):
            model.train(train)
            with FlopCounterMode(display=False) as counter:
                model(x)
            Ops.count = 0
            with Ops():
                model(x)
            counts.append(Ops.count)
    return counter.get_total_flops() / 2e9, counts[0], counts[1]


def run_cost(notebook: str, config: Any, gpus: int) -> RunCost:
    """The work of one run of ``notebook``'s grid."""
    d, t, e = config.data, config.train, config.test
    if d.dataset == "mnist":
        n_train, n_valid, n_test = d.options["sizes"]
    else:
        split = SPLITS[d.dataset]
        n_train = round(split["train"] * d.options.get("fraction", 1.0))
        n_valid, n_test = split.get("valid", 0), split["test"]
    valid = n_valid * t.epochs if t.select == "best_valid" else 0
    test = n_test * len(e.angles) * (2 if e.flips else 1)
    group = config.model.name.split("_")[0]
    errors = e.error_images * max(4, GROUP_ORDER.get(group, 1)) if e.error_layers else 0
    kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                          for k, v in config.model.kwargs.items()))
    gflops, ops, eval_ops = forward_counts(config.model.name, kwargs, d.input_size,
                                           CLASSES[d.dataset])
    return RunCost(notebook, config.model.name, d.input_size, d.dataset, d.protocol,
                   t.batch_size // gpus, gpus, n_train * t.epochs, valid + test + errors,
                   gflops, ops, eval_ops)


def _jpeg(hw: tuple[int, int]) -> bytes:
    """A JPEG (quality 90) of a photo from scikit-image resized to ``hw``."""
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize(hw[::-1]).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _decoder(protocol: str) -> Callable[[], torch.Tensor]:
    """A function returning one stored image of ``protocol`` as uint8 (C, H, W), decoding a
    JPEG the way the engine's reader does for Flowers (PIL) and ImageNet (tf.io)."""
    hw = STORED[protocol]
    if protocol == "flowers":
        from PIL import Image

        data = _jpeg(hw)

        def decode() -> torch.Tensor:
            with Image.open(io.BytesIO(data)) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        return decode
    if protocol == "imagenet":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        data = _jpeg(hw)
        return lambda: torch.from_numpy(tf.io.decode_jpeg(
            data, channels=3, dct_method="INTEGER_ACCURATE").numpy()).permute(2, 0, 1)
    image = torch.randint(0, 256, (3, *hw), dtype=torch.uint8)
    return lambda: image


def loader_rate(protocol: str, size: int, seconds: float = 1.0) -> float:
    """Training images per second one CPU core prepares: decode (Flowers, ImageNet) and the
    engine's per-sample training transform of ``protocol`` at ``size``."""
    from equivlib.data.transforms import train_transform

    transform, decode = train_transform(protocol, size, flips=True), _decoder(protocol)
    transform(decode(), torch.Generator().manual_seed(0))  # warm-up
    n, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        transform(decode(), torch.Generator().manual_seed(n))
        n += 1
    return n / (time.perf_counter() - tick)


def seconds_per_image(r: RunCost, loader: float, a: Assumptions) -> dict[str, float]:
    """Training seconds per image on one GPU, today (TF32, serial loading) and tuned (bf16,
    overlapped loading), and evaluation seconds per image (FLOP or op bound)."""
    flops = 3 * r.gflops * 1e9 * r.batch
    ops = 3 * r.ops * a.op_latency
    tf32 = max(flops / (a.peak_tf32 * a.utilisation), ops)
    bf16 = max(flops / (a.peak_bf16 * a.utilisation), ops)
    load = r.batch / loader
    eval_batch = 500
    return {"today": (load + tf32) / r.batch,
            "tuned": max(bf16, load / a.loader_workers) / r.batch,
            "gpu_tf32": tf32 / r.batch, "gpu_bf16": bf16 / r.batch,
            "eval": max(r.gflops * 1e9 * eval_batch / (a.peak_tf32 * a.utilisation),
                        r.eval_ops * a.op_latency) / eval_batch}


def estimate(runs: Sequence[RunCost], loaders: dict[tuple[str, int], float],
             a: Assumptions) -> list[dict[str, Any]]:
    """One row per (notebook, model, size, dataset) with its runs, images, GFLOPs, estimated
    images/s and GPU-hours today and tuned."""
    groups: dict[tuple, list[RunCost]] = defaultdict(list)
    for r in runs:
        groups[(r.notebook, r.model, r.size, r.dataset)].append(r)
    rows = []
    for (notebook, model, size, dataset), rs in groups.items():
        s = seconds_per_image(rs[0], loaders[(rs[0].protocol, size)], a)
        train, evaluated = sum(r.train_images for r in rs), sum(r.eval_images for r in rs)
        rows.append({
            "notebook": notebook, "model": model, "size": size, "dataset": dataset,
            "runs": len(rs), "gpus_per_run": rs[0].gpus, "train_images": train,
            "eval_images": evaluated, "gflops": rs[0].gflops, "ops": rs[0].ops,
            "loader": loaders[(rs[0].protocol, size)],
            "gpu_img_s_tf32": 1 / s["gpu_tf32"], "gpu_img_s_bf16": 1 / s["gpu_bf16"],
            "img_s_today": 1 / s["today"], "img_s_tuned": 1 / s["tuned"],
            "gpu_h_today": (train * s["today"] + evaluated * s["eval"]) / 3600,
            "gpu_h_tuned": (train * s["tuned"] + evaluated * s["eval"]) / 3600})
    return rows


def _n(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f}"


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per model, then one per notebook and the total."""
    lines = ["| nb | model @ size (dataset) | runs | training images, all runs | "
             "GFLOP/img (fwd) | GPU-bound img/s TF32 / bf16 | loader img/s per core "
             "(measured) | est. img/s today / tuned | est. GPU-h today / tuned |",
             "|" + "---|" * 9]
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 1])
    for r in rows:
        lines.append(
            f"| {r['notebook'][:2]} | {r['model']} @ {r['size']} ({r['dataset']}) | "
            f"{r['runs']} | {_n(r['train_images'])} | {r['gflops']:.3g} | "
            f"{r['gpu_img_s_tf32']:,.0f} / {r['gpu_img_s_bf16']:,.0f} | {r['loader']:,.0f} | "
            f"{r['img_s_today']:,.0f} / {r['img_s_tuned']:,.0f} | "
            f"{r['gpu_h_today']:,.1f} / {r['gpu_h_tuned']:,.1f} |")
        t = totals[r["notebook"]]
        t[0] += r["runs"]
        t[1] += r["gpu_h_today"]
        t[2] += r["gpu_h_tuned"]
        t[3] = r["gpus_per_run"]
    lines += ["", "| notebook | runs | GPUs per run | est. GPU-hours today (float32, "
              "workers=0) | est. GPU-hours tuned (--amp, 8 loader workers) |",
              "|---|---|---|---|---|"]
    for notebook, (n, today, tuned, gpus) in totals.items():
        lines.append(f"| {notebook} | {n} | {gpus} | {today:,.0f} | {tuned:,.0f} |")
    lines.append(f"| total | {sum(t[0] for t in totals.values())} | | "
                 f"{sum(t[1] for t in totals.values()):,.0f} | "
                 f"{sum(t[2] for t in totals.values()):,.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Build every training notebook's grid, count its work and print the estimate."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="paper", help="params/<profile>.yaml")
    p.add_argument("--peak-tf32", type=float, default=494.7, help="dense TF32 TFLOP/s")
    p.add_argument("--peak-bf16", type=float, default=989.4, help="dense bf16 TFLOP/s")
    p.add_argument("--utilisation", type=float, default=0.15,
                   help="fraction of the peak a training run sustains")
    p.add_argument("--op-latency", type=float, default=10e-6,
                   help="seconds per ATen op (dispatch and launch)")
    p.add_argument("--loader-workers", type=int, default=8,
                   help="DataLoader workers of the tuned set-up")
    args = p.parse_args(argv)
    a = Assumptions(args.peak_tf32 * 1e12, args.peak_bf16 * 1e12, args.utilisation,
                    args.op_latency, args.loader_workers)
    torch.set_num_threads(1)
    runs: list[RunCost] = []
    for notebook in NOTEBOOKS:
        configs, params = grid_configs(notebook, args.profile)
        gpus = int(params.get("gpus_per_run", 1) or 1)
        runs += [run_cost(notebook, c, gpus) for c in configs]
    loaders = {key: loader_rate(*key) for key in sorted({(r.protocol, r.size) for r in runs})}
    from equivlib.store.provenance import cpu_model

    print(f"ESTIMATED, not measured on a GPU: {a.utilisation:.0%} of {args.peak_tf32:g} "
          f"(TF32) / {args.peak_bf16:g} (bf16) dense TFLOP/s = "
          f"{a.peak_tf32 * a.utilisation / 1e12:.0f} / {a.peak_bf16 * a.utilisation / 1e12:.0f}"
          f" TFLOP/s per GPU, {a.op_latency * 1e6:g} µs per ATen op, training image = 3 "
          f"forwards; loader rates measured on {cpu_model()} (1 core), torch "
          f"{torch.__version__}")
    print(format_rows(estimate(runs, loaders, a)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
