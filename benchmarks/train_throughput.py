"""Training and evaluation throughput of group CNNs against the plain ``torch.nn`` network of
the same shapes.

The **plain network** is the limit a group model can reach: the graph :func:`equivlib.export_model`
builds (``nn.Conv2d`` holding the expanded filter banks as ordinary parameters,
``nn.MaxPool2d``, coset pooling as two tensor methods), trainable, with each group batch
norm as :class:`SharedBatchNorm`: statistics shared over the orientations computed by
native batch-norm kernels on views of the orientation-major ``(B, |G|·C, H, W)`` map, in
either memory format without a copy — the fastest arrangement found (one native call on a
view with ``C`` channels, ``(B·H·W·|G|, C)`` in channels_last and ``(B·|G|, C, H·W)`` in
NCHW, as fast as a per-channel ``nn.BatchNorm2d``; for ``C < 16`` in channels_last, where
that view vectorises poorly, native per-(orientation, channel) statistics merged per
channel). The group layers call the same arrangement (:func:`equivlib.layers.batch_norm`),
so the plain network differs from the group model only by the gathers that build the banks
from shared weights and the 5-D views. It computes the group model's function in train and
in eval mode (tested). For each model the script times, at the cpu profile's settings
(1 torch thread, batch 32, no dropout by default):

- ``train``: forward + backward + Adam step, model in train mode;
- ``eval``: forward under ``torch.no_grad`` in eval mode (the bank cache is used);

for the group model and the plain network, each in NCHW and in channels_last, plus:

- ``export() as is``: the exported graph trained unchanged, i.e. with ``nn.BatchNorm2d(|G|·C)``
  (statistics per channel *and orientation*: not equivariant in train mode); the cost floor
  of shared statistics, for reference;
- for the RotMNIST CNN the Z2 CNN of the paper (same parameter budget);
- in eval mode the group model ``uncached`` (every layer rebuilds its bank on every call, as
  in training), so the cache's gain is measured in the same run;
- with ``--dense-twin`` the old baseline: the group model with each bank as a plain
  parameter (no gather, but the group layers' batch norm and pooling).

Set-ups alternate within each repetition (order reversed every other one), so machine drift
hits all alike; the table shows median images per second and the median of the
per-repetition ratio to the **best plain network** of the same model and mode (the faster
memory format in each repetition; as the larger of two noisy rates it puts even the plain
networks below 1 on a busy machine) and to the plain network of the same memory format.
Every table is headed by the CPU model, torch's CPU capability (``AVX2``, ``AVX512``, ...),
the torch version and the load average, so numbers from different machines are never
compared silently. Usage::

    .venv/bin/python benchmarks/train_throughput.py [--reps 3 --threads 1 --batch 32]
    # one model and mode (``--case NAME:SIZE[:WIDTHS]``), evaluation at large batches
    .venv/bin/python benchmarks/train_throughput.py --modes eval --eval-batch 500 \
        --case p4_mnist_cnn:28
    # which copies each set-up makes (torch.profiler): aten::copy_ / contiguous / clone
    .venv/bin/python benchmarks/train_throughput.py --profile-copies --case p4_resnet44:33
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from equivlib.export import export_model
from equivlib.layers import (
    GroupBatchNorm,
    GroupConv2d,
    LiftingConv2d,
    ProcessExchange,
    batch_norm,
)
from equivlib.models import get_model
from equivlib.store.provenance import cpu_model

FORMATS = (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last))


# ---------------------------------------------------------------------------- the baselines
class SharedBatchNorm(nn.Module):
    """Batch norm of an orientation-major map ``(B, |G|·C, H, W)`` (channel ``g·C + c``) with
    statistics and affine parameters per channel ``c``, shared over the ``|G|``
    orientations, in either memory format without a layout copy: the arrangement of native
    kernels in :func:`equivlib.layers.batch_norm` (one ``F.batch_norm`` on a view with ``C``
    channels, ``(B·|G|, C, H·W)`` in NCHW and ``(B·H·W·|G|, C)`` in channels_last; for
    ``C < 16`` in channels_last, where that view vectorises poorly, native statistics per
    (orientation, channel) merged per channel, and native normalisation). State dict keys
    ``bn.weight``, ``bn.bias``, ``bn.running_mean``, ... of length ``C``."""

    def __init__(self, channels: int, orientations: int, eps: float = 1e-5,
                 momentum: float | None = 0.1) -> None:
        super().__init__()
        self.channels, self.orientations = channels, orientations
        self.bn = nn.BatchNorm1d(channels, eps, momentum)

        self.synchronised = False  # statistics over every DDP process (ddp_throughput.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, gc, h, w = x.shape
        views = x.view(b, self.orientations, self.channels, h, w).transpose(1, 2)
        exchange = ProcessExchange() if self.synchronised else None
        return batch_norm(self.bn, views, exchange).transpose(1, 2).reshape(b, gc, h, w)


def plain_network(model: nn.Module, shared_bn: bool = True) -> fx.GraphModule:
    """The plain ``torch.nn`` network of ``model``'s shapes: its :func:`export_model` (made from a
    copy in eval mode), trainable, with every group batch norm as :class:`SharedBatchNorm`
    carrying its state (``shared_bn=False``: the export's per-orientation
    ``nn.BatchNorm2d(|G|·C)`` kept). Returned in ``model``'s train/eval mode."""
    plain = export_model(copy.deepcopy(model).eval())
    if shared_bn:
        for name, layer in model.named_modules():
            if isinstance(layer, GroupBatchNorm):
                shared = SharedBatchNorm(layer.num_features, layer.group.order, layer.eps,
                                         layer.momentum).to(layer.running_mean)
                shared.bn.load_state_dict(layer.state_dict())
                plain.set_submodule(name, shared)
    for p in plain.parameters():
        p.requires_grad_(True)
    return plain.train(model.training)


def dense_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose group convolutions convolve with a plain parameter of the
    expanded bank shape (initialised to the current bank) instead of gathering it: the
    group layers' batch norm and pooling kept (the baseline before issue 28)."""
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
            layer.expanded_weight = (lambda channels_last=False, m=layer:
                                     (m.dense_weight, m.dense_bias))
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


# ---------------------------------------------------------------------------- machine
def machine_line(threads: int) -> str:
    """CPU model, torch's CPU capability, torch version, cores, threads and load average."""
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"CPU: {cpu_model()} | torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
            f" | torch {torch.__version__} | {os.cpu_count()} cores, {threads} thread(s) | "
            f"load average {load}")


# ---------------------------------------------------------------------------- timing
def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_once() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_once() -> None:
        with torch.no_grad():
            model(x)

    model.train(mode == "train")
    return train_once if mode == "train" else eval_once


def _timer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str,
           steps: int) -> Callable[[], float]:
    step = _step(model, x, y, mode)
    step()  # warm-up (and the eval cache)

    def timed() -> float:
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        return x.shape[0] * steps / (time.perf_counter() - tick)

    return timed


def setups(name: str, size: int, batch: int, widths: list[int] | None, mode: str,
           dropout: float = 0.0, twin: bool = False,
           ) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every set-up of one model, each in NCHW and channels_last: the group model, its plain
    network, the export trained as is (and, for the RotMNIST CNN, the Z2 CNN; in eval mode
    the uncached group model; with ``twin`` the dense twin); the RotMNIST CNNs with
    ``dropout``."""
    torch.manual_seed(0)
    mnist = {"dropout": dropout} if "mnist" in name else {}
    model = get_model(name, num_classes=10, **({"widths": widths} if widths else {}), **mnist)
    x = torch.randn(batch, 3, size, size)
    out = {}
    for fmt, memory in FORMATS:
        xf = x.contiguous(memory_format=memory)
        out[f"{name} {fmt}"] = (copy.deepcopy(model).to(memory_format=memory), xf)
        if mode == "eval":
            out[f"{name} {fmt} uncached"] = (uncached(model).to(memory_format=memory), xf)
        out[f"plain {fmt}"] = (plain_network(model).to(memory_format=memory), xf)
        out[f"export() as is {fmt}"] = (
            plain_network(model, shared_bn=False).to(memory_format=memory), xf)
        if twin:  # a fresh twin each time: its bank lookups are bound to its own parameters
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
             dropout: float = 0.0, threads: int = 1, twin: bool = False) -> dict:
    """Time every set-up of one model and mode; print the table (machine line first).
    Returns ``{set-up: (median img/s, vs best plain, vs plain of its format)}``."""
    name, size, widths = parse_case(case)
    models = setups(name, size, batch, widths, mode, dropout, twin)
    y = torch.randint(0, 10, (batch,))
    n = timed_steps(name, mode, batch, steps)
    print(machine_line(threads))
    timers = {k: _timer(m, x, y, mode, n) for k, (m, x) in models.items()}
    rates: dict[str, list[float]] = {k: [] for k in timers}
    for rep in range(reps):
        for key in (list(timers) if rep % 2 == 0 else list(timers)[::-1]):
            rates[key].append(timers[key]())
    plain = [max(r) for r in zip(*(rates[f"plain {fmt}"] for fmt, _ in FORMATS), strict=True)]
    print(f"{case}, {mode}, batch {batch}, {n} timed step(s) per repetition, median of {reps}; "
          f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"  {'set-up':36s} {'img/s':>8s} {'vs best plain':>14s} {'vs plain, same format':>22s}")
    table = {}
    for key, values in rates.items():
        same = rates["plain " + ("NCHW" if "NCHW" in key else "channels_last")]
        row = (statistics.median(values), _paired(values, plain), _paired(values, same))
        table[key] = row
        print(f"  {key:36s} {row[0]:8.1f} {row[1]:14.2f} {row[2]:22.2f}", flush=True)
    if mode == "eval":
        rebuild = rebuild_seconds(models[f"{name} NCHW"][0])
        forward = batch / statistics.median(plain)
        print(f"  bank rebuild per forward (saved by the cache): {rebuild * 1e3:.2f} ms = "
              f"{100 * rebuild / forward:.3f} % of a plain-network forward", flush=True)
    return table


# ---------------------------------------------------------------------------- copies
COPY_OPS = ("aten::copy_", "aten::contiguous", "aten::clone")


def layout_copies(model: nn.Module, x: torch.Tensor, mode: str,
                  min_elements: int = 1 << 16) -> Counter:
    """``{(op, input shape): calls}`` of the copy ops (``aten::copy_``, ``contiguous``,
    ``clone``) that one train step (or eval forward) of ``model`` runs on tensors of at least
    ``min_elements`` elements (feature maps and large filter banks), from
    ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    y = torch.randint(0, 10, (x.shape[0],))
    step = _step(model, x, y, mode)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    found: Counter = Counter()
    for event in prof.events():
        shapes = event.input_shapes
        if event.name in COPY_OPS and shapes and shapes[0]:
            numel = 1
            for d in shapes[0]:
                numel *= d
            if numel >= min_elements:
                found[(event.name, tuple(shapes[0]))] += 1
    return found


def print_copies(case: str, mode: str, batch: int, threads: int) -> None:
    """The copies of every set-up of one model and mode (a profile, not a timing)."""
    name, size, widths = parse_case(case)
    print(machine_line(threads))
    print(f"{case}, {mode}, batch {batch}: copy ops per step on tensors of >= 65,536 elements "
          "(feature maps, large banks; torch.profiler)")
    y_models = setups(name, size, batch, widths, mode)
    for key, (model, x) in y_models.items():
        found = layout_copies(model, x, mode)
        listed = ", ".join(f"{n}x {op}{list(shape)}" for (op, shape), n in sorted(found.items()))
        print(f"  {key:36s} {sum(found.values()):3d}  {listed}", flush=True)


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
    p.add_argument("--dense-twin", action="store_true",
                   help="also time the dense twin (the baseline before issue 28)")
    p.add_argument("--profile-copies", action="store_true",
                   help="list each set-up's copy ops (torch.profiler) instead of timing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batches = {"train": args.batch, "eval": args.eval_batch or args.batch}
    for case in args.case or ["p4_mnist_cnn:28", "p4_resnet44:33"]:
        for mode in args.modes.split(","):
            if args.profile_copies:
                print_copies(case, mode, batches[mode], args.threads)
            else:
                run_case(case, mode, batches[mode], args.reps, args.steps, args.dropout,
                         args.threads, args.dense_twin)


if __name__ == "__main__":
    main()
