"""Training and evaluation throughput of group CNNs against their dense twins.

The **dense twin** of a group model is the same network with every group convolution's
filter bank replaced by a plain ``nn.Parameter`` of the expanded shape ``(Cout·|G|,
Cin(·|G|), k, k)``: the same reshapes and ``F.conv2d`` calls, no gather that builds the bank
from the shared weights. It is the limit this approach can reach. For each model the script
times, at the cpu profile's settings (1 torch thread, batch 32, no dropout by default):

- ``train``: forward + backward + Adam step, model in train mode;
- ``eval``: forward under ``torch.no_grad`` in eval mode (the bank cache is used);

for the group model and its twin, each in NCHW and in channels_last, and for the RotMNIST
CNN also the Z2 CNN of the paper (same parameter budget). In eval mode the group model is
also timed ``uncached``: every layer rebuilds its bank on every call, as in training, so the
cache's gain is measured in the same run. Set-ups alternate within each repetition (order
reversed every other one), so machine drift hits all alike; the table shows median images
per second and the median of the per-repetition ratio to the **best dense twin** of the
same model and mode (the faster layout in each repetition; as the larger of two noisy
rates it puts even the twins below 1 on a busy machine) and to the dense twin of the same
layout. Usage::

    .venv/bin/python benchmarks/train_throughput.py [--reps 3 --threads 1 --batch 32]
    # evaluation at large batches, one model at a time (``--case NAME:SIZE[:WIDTHS]``)
    .venv/bin/python benchmarks/train_throughput.py --modes eval --eval-batch 500 \
        --case p4_mnist_cnn:28
    .venv/bin/python benchmarks/train_throughput.py --modes eval --eval-batch 100 \
        --case p4_resnet44:97:4,7,14 --steps 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from equivlib.layers import GroupConv2d, LiftingConv2d
from equivlib.models import get_model


def dense_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose group convolutions convolve with a plain parameter of the
    expanded bank shape (initialised to the current bank) instead of gathering it."""
    twin = copy.deepcopy(model)
    for layer in twin.modules():
        if isinstance(layer, (LiftingConv2d, GroupConv2d)):
            with torch.no_grad():
                bank, bias = layer._expand()
            layer.dense_weight = nn.Parameter(bank.clone())
            layer.dense_bias = None if bias is None else nn.Parameter(bias.clone())
            del layer.weight
            if "bias" in layer._parameters:
                del layer.bias
            layer.expanded_weight = (lambda m=layer: (m.dense_weight, m.dense_bias))
    return twin


def uncached(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose group convolutions rebuild their bank on every call."""
    copied = copy.deepcopy(model)
    for layer in copied.modules():
        if isinstance(layer, (LiftingConv2d, GroupConv2d)):
            layer.expanded_weight = layer._expand
    return copied


def rebuild_seconds(model: nn.Module, reps: int = 20) -> float:
    """Seconds to rebuild every group convolution's bank once under ``no_grad``: what the
    cache saves per eval forward (timed alone, so far less noisy than the difference of two
    throughputs)."""
    layers = [m for m in model.modules() if isinstance(m, (LiftingConv2d, GroupConv2d))]
    with torch.no_grad():
        for layer in layers:
            layer._expand()
        tick = time.perf_counter()
        for _ in range(reps):
            for layer in layers:
                layer._expand()
    return (time.perf_counter() - tick) / reps


def _timer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str,
           steps: int) -> Callable[[], float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_once() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_once() -> None:
        with torch.no_grad():
            model(x)

    step = train_once if mode == "train" else eval_once
    model.train(mode == "train")
    step()  # warm-up (and the eval cache)

    def timed() -> float:
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        return x.shape[0] * steps / (time.perf_counter() - tick)

    return timed


def setups(name: str, size: int, batch: int, widths: list[int] | None, mode: str,
           dropout: float = 0.0) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every set-up of one model: itself, its dense twin (and, for the RotMNIST CNN, the Z2
    CNN), in NCHW and channels_last; the RotMNIST CNNs with ``dropout``."""
    torch.manual_seed(0)
    mnist = {"dropout": dropout} if "mnist" in name else {}
    model = get_model(name, num_classes=10, **({"widths": widths} if widths else {}), **mnist)
    x = torch.randn(batch, 3, size, size)
    out = {}
    for fmt, memory in (("NCHW", torch.contiguous_format), ("channels_last",
                                                            torch.channels_last)):
        xf = x.contiguous(memory_format=memory)
        out[f"{name} {fmt}"] = (copy.deepcopy(model).to(memory_format=memory), xf)
        if mode == "eval":
            out[f"{name} {fmt} uncached"] = (uncached(model).to(memory_format=memory), xf)
        # a fresh twin each time: its layers' bank lookups are bound to their own parameters
        out[f"dense twin {fmt}"] = (dense_twin(model).to(memory_format=memory), xf)
        if name == "p4_mnist_cnn":
            z2 = get_model("z2_mnist_cnn", num_classes=10, **mnist).to(memory_format=memory)
            out[f"z2_mnist_cnn {fmt}"] = (z2, xf)
    return out


def parse_case(text: str) -> tuple[str, int, list[int] | None]:
    """``NAME:SIZE[:W1,W2,...]`` -> (model name, input size, stage widths or None)."""
    name, size, *rest = text.split(":")
    return name, int(size), [int(w) for w in rest[0].split(",")] if rest else None


def timed_steps(name: str, mode: str, batch: int, steps: int | None) -> int:
    """``steps`` if given, else about as many images as 10 (CNN) or 3 (ResNet) train steps
    of batch 32, three times that in eval."""
    if steps is not None:
        return steps
    images = 32 * (10 if "mnist" in name else 3) * (1 if mode == "train" else 3)
    return max(1, round(images / batch))


def _paired(values: list[float], reference: list[float]) -> float:
    """Median of the per-repetition ratios."""
    return statistics.median(v / r for v, r in zip(values, reference, strict=True))


def run_case(case: str, mode: str, batch: int, reps: int, steps: int | None,
             dropout: float = 0.0) -> None:
    """Time every set-up of one model and mode; print a row per set-up."""
    name, size, widths = parse_case(case)
    models = setups(name, size, batch, widths, mode, dropout)
    y = torch.randint(0, 10, (batch,))
    n = timed_steps(name, mode, batch, steps)
    timers = {k: _timer(m, x, y, mode, n) for k, (m, x) in models.items()}
    rates: dict[str, list[float]] = {k: [] for k in timers}
    for rep in range(reps):
        for key in (list(timers) if rep % 2 == 0 else list(timers)[::-1]):
            rates[key].append(timers[key]())
    dense = [max(r) for r in zip(*(v for k, v in rates.items() if "dense" in k), strict=True)]
    print(f"{case}, {mode}, batch {batch}, {n} timed step(s) per repetition")
    for key, values in rates.items():
        twin = rates["dense twin " + ("NCHW" if "NCHW" in key else "channels_last")]
        print(f"  {key:36s} {statistics.median(values):8.1f} {_paired(values, dense):19.2f} "
              f"{_paired(values, twin):12.2f}", flush=True)
    if mode == "eval":
        rebuild = rebuild_seconds(models[f"{case.split(':')[0]} NCHW"][0])
        forward = batch / statistics.median(dense)
        print(f"  bank rebuild per forward (saved by the cache): {rebuild * 1e3:.2f} ms = "
              f"{100 * rebuild / forward:.3f} % of a dense-twin forward", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="train batch")
    p.add_argument("--eval-batch", type=int, default=None, help="eval batch (default: --batch)")
    p.add_argument("--modes", default="train,eval", help="comma-separated: train, eval")
    p.add_argument("--case", action="append", default=None, metavar="NAME:SIZE[:WIDTHS]",
                   help="model, input size and optional stage widths (repeatable); default "
                        "p4_mnist_cnn:28 and p4_resnet44:33")
    p.add_argument("--steps", type=int, default=None, help="timed steps per set-up and rep")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout of the RotMNIST CNNs (default 0: the cpu profile's; the "
                        "paper's 0.3 costs time in train mode)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batches = {"train": args.batch, "eval": args.eval_batch or args.batch}
    print(f"{args.threads} thread(s), median of {args.reps} repetitions")
    print(f"  {'set-up':36s} {'img/s':>8s} {'vs best dense twin':>19s} {'vs its twin':>12s}")
    for case in args.case or ["p4_mnist_cnn:28", "p4_resnet44:33"]:
        for mode in args.modes.split(","):
            run_case(case, mode, batches[mode], args.reps, args.steps, args.dropout)


if __name__ == "__main__":
    main()
