"""Training throughput of one run on 1 process versus 2 DDP processes (torchrun, gloo).

The engine's own ``train_one_epoch`` trains a model (default: P4 ResNet-44 at the paper's
width 16, input 33, batch 32) on synthetic images for ``--steps`` steps after a warm-up of
``--warmup`` steps, in three set-ups that all use the machine's cores:

- ``1 process x 1 thread``  (the engine's grid default; the baseline of the ratios),
- ``1 process x N threads`` (N = ``--threads``),
- ``N processes x 1 thread`` under ``torchrun --standalone`` (gloo, synchronised batch norm,
  the global batch split over the processes), as the engine trains,
- the same with per-process batch norm (``--no-sync-bn`` in the worker): what the
  synchronisation costs (one all-gather in the forward and one all-reduce in the backward
  per batch norm, see :mod:`equivlib.layers.sync_norm`);
- the **plain network** of the same shapes (``train_throughput.plain_network``: the
  model's ``export()`` graph, trainable, batch statistics shared over orientations with
  the group layers' kernels, synchronised the same way) on 1 process x 1 thread and on
  N processes x 1 thread: the limit for the group model, and whether the machine itself
  scales.

The table is headed by the CPU model, torch's CPU capability and the load average (the
set-ups compete with whatever else runs: on a shared 2-core machine N processes get fewer
than N cores).

Each set-up runs in its own interpreter, one after the other, repeated ``--reps`` times in
alternating order; the table shows the median images per second and the ratio to the
baseline of the same repetition (the median of the paired ratios), so machine drift hits
all set-ups alike. Usage::

    .venv/bin/python benchmarks/ddp_throughput.py [--model p4_resnet44 --size 33 --reps 3]
    .venv/bin/python benchmarks/ddp_throughput.py --no-plain   # the group model only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(args: argparse.Namespace) -> None:
    """Worker: train ``args.steps`` timed steps; rank 0 prints images per second."""
    import torch
    from torch.utils.data import TensorDataset

    from equivlib.data.loaders import set_epoch, train_loader
    from equivlib.engine.distributed import init_distributed, shutdown_distributed
    from equivlib.engine.loop import train_one_epoch
    from equivlib.engine.precision import Precision
    from equivlib.layers import convert_sync_batchnorm
    from equivlib.models import get_model

    sys.path.insert(0, str(HERE))
    from train_throughput import SharedBatchNorm, plain_network

    ctx, _ = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        model = get_model(args.model, num_classes=10)
        if args.plain:
            model = plain_network(model.train())
            for layer in model.modules():
                if isinstance(layer, SharedBatchNorm):
                    layer.synchronised = ctx.distributed and not args.no_sync_bn
        elif ctx.distributed and not args.no_sync_bn:
            model = convert_sync_batchnorm(model)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if ctx.distributed:
            model = torch.nn.parallel.DistributedDataParallel(model)
        n = args.batch * (args.warmup + args.steps)
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.rand(n, 3, args.size, args.size, generator=g),
                             torch.randint(0, 10, (n,), generator=g))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        kw = dict(mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), ctx=ctx,
                  precision=Precision(channels_last=args.channels_last))
        warm = torch.utils.data.Subset(data, range(args.batch * args.warmup))
        timed = torch.utils.data.Subset(data, range(args.batch * args.warmup, n))
        for part in (warm, timed):
            loader = train_loader(part, args.batch, 0, rank=ctx.rank, world_size=ctx.world_size)
            set_epoch(loader, 0)
            ctx.barrier()
            tick = time.perf_counter()
            stats = train_one_epoch(model, loader, optimizer, **kw)
            ctx.barrier()
            seconds = time.perf_counter() - tick
        if ctx.is_main:
            print(json.dumps({"images_per_second": stats["train_images"] / seconds,
                              "images": stats["train_images"], "seconds": seconds}))
    finally:
        shutdown_distributed()


def _run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"benchmark worker failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("{"))
    return json.loads(line)["images_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="p4_resnet44")
    p.add_argument("--size", type=int, default=33)
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--steps", type=int, default=12, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="cores to use (processes x threads)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-plain", action="store_true", help="skip the plain network's set-ups")
    p.add_argument("--channels-last", action="store_true",
                   help="train in channels_last (the engine's --channels-last)")
    p.add_argument("--no-sync-bn", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        measure(args)
        return
    sys.path.insert(0, str(HERE))
    from train_throughput import machine_line

    print(machine_line(args.threads), file=sys.stderr)
    me = [os.path.abspath(__file__), "--worker", "--model", args.model, "--size",
          str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
          "--warmup", str(args.warmup), *(["--channels-last"] if args.channels_last else [])]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(args.threads)]
    setups = {
        "1 process x 1 thread": ([sys.executable, *me], 1),
        f"1 process x {args.threads} threads": ([sys.executable, *me], args.threads),
        f"{args.threads} processes x 1 thread (torchrun, gloo)": ([*torchrun, *me], 1),
        f"{args.threads} processes x 1 thread, batch norm not synchronised": (
            [*torchrun, *me, "--no-sync-bn"], 1),
    }
    if not args.no_plain:
        setups["plain network, 1 process x 1 thread"] = ([sys.executable, *me, "--plain"], 1)
        setups[f"plain network, {args.threads} processes x 1 thread"] = (
            [*torchrun, *me, "--plain"], 1)
    names = list(setups)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            rates[name].append(_run(*setups[name]))
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{rates[n][-1]:.1f}" for n in names) + " img/s", file=sys.stderr)
    base = rates[names[0]]
    print(machine_line(args.threads))
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"{args.model} at {args.size}, {layout}, global batch {args.batch}, {args.steps} timed "
          f"steps, median of {args.reps} repetitions")
    print(f"{'set-up':56s} {'img/s':>8s} {'vs 1x1':>7s}")
    for name in names:
        ratio = statistics.median(r / b for r, b in zip(rates[name], base, strict=True))
        print(f"{name:56s} {statistics.median(rates[name]):8.1f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
