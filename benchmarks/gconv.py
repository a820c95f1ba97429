"""Speed of LiftingConv2d / GroupConv2d relative to a bare ``F.conv2d`` with the same bank.

For P4 and P4M, 16 -> 16 channels, 3x3, batch 64, at 32x32 stride 1 padding 1 and at 33x33
stride 2 padding 1, the script times

- ``train fwd+bwd``: forward and backward in train mode (the bank is re-expanded every call),
- ``train fwd``: forward only in train mode, grad enabled,
- ``eval fwd``: forward in eval mode under ``torch.no_grad`` (the cached bank is used),

and compares each with the baseline: ``F.conv2d`` on the input viewed as
``(B, Cin(·|G|), H, W)`` with a plain ``nn.Parameter`` weight of the expanded shape
``(Cout·|G|, Cin(·|G|), 3, 3)`` and a bias of ``Cout·|G|``. Calls alternate (ours, baseline,
ours, baseline, ...; the order flips every repetition) within one process, so that drifts
in machine load hit both equally; each entry is the median over 40 repetitions (``--reps``)
after warm-up, and the ratio is the median of the paired per-repetition ratios. A final A/A
row (the baseline timed against an identical copy of itself) shows the noise floor of the
ratios at the time of the run; on a shared 2-vCPU VM it can be several percent, more than the
overhead being measured. So the same loop also times our extra work alone (expanding the
bank, or looking it up in eval mode, plus its backward in train fwd+bwd) and reports
``1 + extra / baseline``: the overhead without the conv's noise. The lifting input does not
require grad (a first layer), the group-conv input does (a middle layer); the same holds for
the baseline. Gradients are reset to ``None`` outside the timed region.
``torch.set_num_threads(2)``.

Environment control (the script re-executes itself once with these variables set, unless
each is already set; ``--no-reexec`` skips this):

- glibc malloc serves large blocks (above a dynamic threshold starting at 128 KiB) with fresh
  ``mmap`` calls and gives them back with ``munmap`` on free, so every call pays page faults
  for its outputs and oneDNN workspaces; how many depends on allocation order and sizes, which
  differ between our layer and the baseline, and it distorts small timings. We set
  ``MALLOC_MMAP_THRESHOLD_`` (32 MiB, the largest glibc accepts), ``MALLOC_MMAP_MAX_=0``
  (no mmap at all: blocks above 32 MiB, e.g. a P4M group map of batch 64, would otherwise
  still be mapped afresh every call), ``MALLOC_TRIM_THRESHOLD_`` (2 GiB, never give the heap
  top back) and ``MALLOC_TOP_PAD_`` (256 MiB, grow the heap in large steps). Blocks are then
  recycled from the heap; the table reports the minor page faults per call (0 after warm-up).
- ``OMP_WAIT_POLICY=PASSIVE``: libgomp's default lets idle workers spin before sleeping. On
  the 2-vCPU VM this was written on, with any other process competing for the CPUs, a spinning
  worker whose partner is descheduled stalls in multiples of the scheduler tick (~8 ms): a
  4 ms conv then measured 32 ms, on both sides, randomly. Passive waiting avoids that (each
  parallel region pays a futex wake-up instead, equally on both sides). On an idle machine
  ``OMP_WAIT_POLICY=ACTIVE`` gives lower absolute times; set it yourself to compare.

Usage: ``python benchmarks/gconv.py [--quick] [--reps N] [--only LABEL] [--no-reexec]``.
Targets: ratio <= 1.05 in train mode, <= 1.01 in eval mode.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2 * 1024**3),
    "MALLOC_TOP_PAD_": str(256 * 1024 * 1024),
    "OMP_WAIT_POLICY": "PASSIVE",
}


def _reexec_with_malloc_env() -> None:
    if "--no-reexec" in sys.argv or all(k in os.environ for k in MALLOC_ENV):
        return
    env = {**os.environ, **{k: v for k, v in MALLOC_ENV.items() if k not in os.environ}}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    _reexec_with_malloc_env()

import torch  # noqa: E402  (after the re-exec, so the allocator settings apply)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equivlib.groups import P4, P4M, Group  # noqa: E402
from equivlib.layers import GroupConv2d, LiftingConv2d  # noqa: E402


class Baseline(nn.Module):
    """Bare ``F.conv2d`` with a plain weight of the expanded bank's shape."""

    def __init__(self, layer: LiftingConv2d | GroupConv2d) -> None:
        super().__init__()
        bank, bias = layer.expanded_weight()
        self.weight = nn.Parameter(bank.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self.stride, self.padding = layer.stride, layer.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.view(x.shape[0], -1, *x.shape[-2:])
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _timed(fn: Callable[[], None], module: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    module.zero_grad(set_to_none=True)
    x.grad = None
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def _extra_work(layer: nn.Module, mode: str) -> Callable[[], None] | None:
    """The work our layer does on top of the conv, alone: building (train) or looking up
    (eval) the expanded bank, plus its backward in ``train fwd+bwd``."""
    if not hasattr(layer, "expanded_weight"):
        return None
    if mode == "eval fwd":
        def run() -> None:
            with torch.no_grad():
                layer.expanded_weight()
        return run
    with torch.no_grad():
        grads = [torch.randn_like(t) for t in layer.expanded_weight()]
    if mode == "train fwd":
        def run() -> None:
            layer.expanded_weight()
        return run

    def run_bwd() -> None:
        torch.autograd.backward(layer.expanded_weight(), grads)
    return run_bwd


def bench_pair(
    ours: nn.Module, base: nn.Module, x: torch.Tensor, mode: str, reps: int, warmup: int
) -> dict:
    """Alternate ours / baseline (and our extra work alone); medians and paired ratio."""
    train = mode.startswith("train")
    ours.train(train)
    base.train(train)
    with torch.no_grad():
        gy = torch.randn_like(base(x))

    def step(module: nn.Module) -> Callable[[], None]:
        if mode == "train fwd+bwd":
            def run() -> None:
                y = module(x)
                y.backward(gy.view_as(y))
        elif mode == "train fwd":
            def run() -> None:
                module(x)
        else:
            def run() -> None:
                with torch.no_grad():
                    module(x)
        return run

    slots = [(step(ours), ours, [], []), (step(base), base, [], [])]
    extra = _extra_work(ours, mode)
    if extra is not None:
        slots.append((extra, ours, [], []))
    for _ in range(warmup):
        for run, module, _, _ in slots:
            _timed(run, module, x)
    for i in range(reps):
        # flip the order every repetition, so neither side always follows the other
        for run, module, times, faults in slots if i % 2 == 0 else slots[::-1]:
            t, f = _timed(run, module, x)
            times.append(t)
            faults.append(f)
    (_, _, t_ours, f_ours), (_, _, t_base, f_base) = slots[:2]
    ratios = [a / b for a, b in zip(t_ours, t_base, strict=True)]
    base_ms = 1e3 * statistics.median(t_base)
    extra_ms = 1e3 * statistics.median(slots[2][2]) if extra is not None else float("nan")
    return {
        "ours_ms": 1e3 * statistics.median(t_ours),
        "base_ms": base_ms,
        "ratio": statistics.median(ratios),
        "extra_ms": extra_ms,
        "extra_ratio": 1 + extra_ms / base_ms,
        "faults": (statistics.median(f_ours), statistics.median(f_base)),
    }


def configs(quick: bool) -> list[tuple[str, Group, int, int]]:
    sizes = [(32, 1), (33, 2)]
    return [(kind, g, n, s) for kind in ("lifting", "group") for g in (P4, P4M)
            for n, s in sizes][: (4 if quick else None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 5 reps, 4 configs")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 40)")
    parser.add_argument("--no-reexec", action="store_true", help="keep the default malloc")
    parser.add_argument("--only", default="", help="run configs whose 'layer group size/stride' "
                        "label contains this, e.g. 'lifting p4m 33/2'")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    batch = 8 if args.quick else 64
    reps = args.reps or (5 if args.quick else 40)
    warmup = 2 if args.quick else 5
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in MALLOC_ENV)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"{reps} reps after {warmup} warm-up; {env}\n")
    print("| layer | group | size/stride | mode | ours ms | baseline ms | ratio | "
          "extra work ms | 1 + extra/baseline | faults/call (ours, base) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
    for kind, group, n, stride in configs(args.quick):
        if args.only not in f"{kind} {group.name} {n}/{stride}":
            continue
        cls = LiftingConv2d if kind == "lifting" else GroupConv2d
        ours = cls(group, 16, 16, 3, stride=stride, padding=1)
        _report(cls.__name__, ours, Baseline(ours), group, n, stride, batch, reps, warmup)
    if not args.only:
        # A/A control: the baseline against an identical copy of itself shows the noise floor
        # of the ratios on this machine at this moment.
        ours = LiftingConv2d(P4, 16, 16, 3, stride=2, padding=1)
        _report("A/A control: baseline vs baseline", Baseline(ours), Baseline(ours), P4, 33, 2,
                batch, reps, warmup)


def _report(label: str, ours: nn.Module, base: nn.Module, group: Group, n: int, stride: int,
            batch: int, reps: int, warmup: int) -> None:
    if isinstance(ours, GroupConv2d):
        x = torch.randn(batch, 16, group.order, n, n, requires_grad=True)
    else:
        x = torch.randn(batch, 16, n, n)
    for mode in ("train fwd+bwd", "train fwd", "eval fwd"):
        r = bench_pair(ours, base, x, mode, reps, warmup)
        extra = ("-", "-") if math.isnan(r["extra_ms"]) else (
            f"{r['extra_ms']:.3f}", f"{r['extra_ratio']:.4f}")
        print(f"| {label} | {group.name} | {n}/{stride} | {mode} | "
              f"{r['ours_ms']:.2f} | {r['base_ms']:.2f} | {r['ratio']:.3f} | "
              f"{extra[0]} | {extra[1]} | "
              f"{r['faults'][0]:.0f}, {r['faults'][1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
