"""Training and evaluation throughput of group CNNs against their dense twins.

The **dense twin** of a group model is the same network with every group convolution's
filter bank replaced by a plain ``nn.Parameter`` of the expanded shape ``(Cout·|G|,
Cin(·|G|), k, k)``: the same reshapes and ``F.conv2d`` calls, no gather that builds the bank
from the shared weights. It is the limit this approach can reach. For each model the script
times, at the cpu profile's settings (1 torch thread, batch 32 by default):

- ``train``: forward + backward + Adam step, model in train mode;
- ``eval``: forward under ``torch.no_grad`` in eval mode (the bank cache is used);

for the group model and its twin, each in NCHW and in channels_last, and for the RotMNIST
CNN also the Z2 CNN of the paper (same parameter budget). Set-ups alternate within each
repetition (order reversed every other one), so machine drift hits all alike; the table
shows median images per second and the median of the per-repetition ratio to the **best
dense twin** of the same model and mode. Usage::

    .venv/bin/python benchmarks/train_throughput.py [--reps 3 --threads 1 --batch 32]
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


def setups(name: str, size: int, batch: int) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    model = get_model(name, num_classes=10)
    x = torch.randn(batch, 3, size, size)
    out = {}
    for fmt, memory in (("NCHW", torch.contiguous_format), ("channels_last",
                                                            torch.channels_last)):
        xf = x.contiguous(memory_format=memory)
        out[f"{name} {fmt}"] = (copy.deepcopy(model).to(memory_format=memory), xf)
        # a fresh twin each time: its layers' bank lookups are bound to their own parameters
        out[f"dense twin {fmt}"] = (dense_twin(model).to(memory_format=memory), xf)
        if name == "p4_mnist_cnn":
            z2 = get_model("z2_mnist_cnn", num_classes=10).to(memory_format=memory)
            out[f"z2_mnist_cnn {fmt}"] = (z2, xf)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = [("p4_mnist_cnn", 28, 10), ("p4_resnet44", 33, 3)]  # model, size, timed steps
    print(f"{args.threads} thread(s), batch {args.batch}, median of {args.reps} repetitions")
    print(f"{'set-up':34s} {'mode':5s} {'img/s':>8s} {'vs best dense twin':>19s}")
    for name, size, steps in cases:
        models = setups(name, size, args.batch)
        y = torch.randint(0, 10, (args.batch,))
        for mode in ("train", "eval"):
            n = steps if mode == "train" else 3 * steps
            timers = {k: _timer(m, x, y, mode, n) for k, (m, x) in models.items()}
            rates: dict[str, list[float]] = {k: [] for k in timers}
            for rep in range(args.reps):
                for key in (list(timers) if rep % 2 == 0 else list(timers)[::-1]):
                    rates[key].append(timers[key]())
            dense = [max(r) for r in zip(*(v for k, v in rates.items() if "dense" in k),
                                         strict=True)]
            for key, values in rates.items():
                ratio = statistics.median(v / d for v, d in zip(values, dense, strict=True))
                print(f"{key:34s} {mode:5s} {statistics.median(values):8.1f} {ratio:19.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
