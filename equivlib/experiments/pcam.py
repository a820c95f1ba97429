"""PatchCamelyon (notebook 07): Z2 and P4 ResNet-44 at the paper's narrow PCam widths, input
96 (native; approximately equivariant: the stride-2 stages do not fit) versus 97 (resized;
exact), tested at rotations every 10 degrees, with the equivariance error of the trained
models at four depths.

PCam does not ship in a package; the cpu profile runs the same configs on
:mod:`equivlib.data.pcam_stand_in` (:data:`STAND_IN`), read through the same h5 reader. Its
numbers are never PCam's. Tables and the accuracy figure are the shared ones of
:mod:`equivlib.experiments.rotation`: one "regime" (upright training), models labelled
``P4-97`` and so on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from equivlib.data.pcam_stand_in import STAND_IN_NOTE  # noqa: F401  (re-exported for notebook 07)
from equivlib.engine.config import RunConfig
from equivlib.experiments.notebook_params import number_list, split_list
from equivlib.experiments.recipes import PCAM_WIDTHS, paper_config, train_overrides
from equivlib.experiments.rotation import ModelSpec, NotebookGrid, RegimeSpec, run_label

DATASETS = ("pcam", "pcam_stand_in")
STAND_IN = "pcam_stand_in"
GROUPS = ("z2", "p4")
DEPTHS = (44, 20)  # the paper's ResNet-44; ResNet-20 (same strides) for the cpu budget
SIZES = (96, 97)
ERROR_LAYERS = ("stem", "stages.0", "stages.1", "stages.2")
DEPTH_LABELS = {"stem": "after lifting conv", "stages.0": "after stage 1",
                "stages.1": "after stage 2", "stages.2": "after stage 3"}


def model_name(group: str, depth: int = 44) -> str:
    """The registered ResNet of ``group`` (z2, p4) and ``depth`` (44 or 20)."""
    if group not in GROUPS or depth not in DEPTHS:
        raise ValueError(f"no PCam ResNet for group {group!r} at depth {depth}; groups "
                         f"{list(GROUPS)}, depths {list(DEPTHS)}")
    return f"{group}_resnet{depth}"


def pcam_config(dataset: str, group: str, input_size: int, *, seed: int = 0, depth: int = 44,
                epochs: int | None = None, batch_size: int | None = None,
                lr: float | None = None, angle_step: float = 10.0,
                error_images: int = 64, stand_in_sizes: Sequence[int] = (2000, 300, 300),
                ) -> RunConfig:
    """One run: PCam's protocol (docs/design.md §7: SGD + MultiStepLR, best-valid model, widths Z2
    [8, 14, 28] / P4 [4, 7, 14] with coset pooling) with these overrides; the test covers
    rotations every ``angle_step`` degrees and the equivariance error at :data:`ERROR_LAYERS`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown PCam dataset {dataset!r}; expected one of {DATASETS}")
    if not 0 < angle_step <= 360 or (360 / angle_step) % 1:
        raise ValueError(f"angle_step must divide 360, got {angle_step}")
    name = model_name(group, depth)
    train = train_overrides(seed, epochs, batch_size)
    sections: dict[str, Any] = {
        "model": {"kwargs": {"widths": PCAM_WIDTHS[f"{group}_resnet44"]}},
        "train": train,
        "test": {"angles": [float(a) for a in np.arange(0.0, 360.0, angle_step)],
                 "error_layers": list(ERROR_LAYERS), "error_images": error_images}}
    if dataset == STAND_IN:
        sections["data"] = {"options": {"sizes": [int(s) for s in stand_in_sizes]}}
    if lr is not None:
        sections["optim"] = {"lr": lr}
    return paper_config(dataset, name, input_size, **sections)


def configs_from_params(params: dict[str, Any]) -> list[RunConfig]:
    """The grid of notebook 07 from its parameters: every (group, size, seed)."""
    groups = split_list(params["models"], "models")
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"models: unknown entries {bad}; expected some of {list(GROUPS)}")
    sizes = number_list(params["sizes"], "sizes", int)
    seeds = params["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    return [pcam_config(params["dataset"], g, s, seed=seed, depth=params["depth"],
                        epochs=params["epochs"], batch_size=params["batch_size"],
                        lr=params["lr"], angle_step=params["angle_step"],
                        error_images=params["error_images"],
                        stand_in_sizes=number_list(params["stand_in_sizes"],
                                                   "stand_in_sizes", int))
            for g, s, seed in itertools.product(groups, sizes, range(seeds))]


def model_specs(configs: Sequence[RunConfig]) -> list[ModelSpec]:
    """The distinct (model, size) of the configs, in order (labels ``P4-97``, ...)."""
    return list(dict.fromkeys(ModelSpec.of(c) for c in configs))


PARAMETERS = ("dataset", "models", "sizes", "seeds", "depth", "epochs", "batch_size", "lr",
              "angle_step", "error_images", "stand_in_sizes")
"""The notebook parameters the grid of 07 is built from."""


def notebook_grid(params: dict[str, Any]) -> NotebookGrid:
    """Notebook 07's grid from its parameters (:data:`PARAMETERS`): the configs of
    :func:`configs_from_params`, one upright regime, the stand-in note on
    :data:`STAND_IN`, and a description (runs, training, each model's exactness)."""
    configs = configs_from_params(params)
    specs = model_specs(configs)
    lines = [f"{len(configs)} runs of ResNet-{params['depth']} on {params['dataset']}; "
             f"{params['epochs']} epoch(s), batch {params['batch_size']}, SGD lr "
             f"{params['lr']}; tested at {len(configs[0].test.angles)} rotations"]
    lines += [f"  {m.description}" for m in specs]
    stand_in = STAND_IN_NOTE if params["dataset"] == STAND_IN else ""
    return NotebookGrid(configs, specs, "\n".join(lines), stand_in,
                        regimes=[RegimeSpec("none")])


def error_table(configs: Sequence[dict[str, Any] | RunConfig],
                metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (model, seed, depth) with the trained model's relative
    equivariance error (Z2 models: their error under the same rotations, for contrast)."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        c = RunConfig.from_dict(c)
        label = run_label(c)
        errors = m.get("equivariance_error", {})
        order = [n for n in ERROR_LAYERS if n in errors] + sorted(set(errors) - set(ERROR_LAYERS))
        for layer, error in ((n, errors[n]) for n in order):  # network order, not JSON's
            rows.append({"model": label, "seed": c.train.seed, "layer": layer,
                         "depth": DEPTH_LABELS.get(layer, layer), "error": float(error)})
    return pd.DataFrame(rows)


def error_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Mean and largest error over seeds per model and depth, depths in network order."""
    out = errors.groupby(["model", "layer"], sort=False).error.agg(["mean", "max"])
    return out.reset_index()


ROUNDING = 1e-4  # float32 rounding of a trained model's maps, with margin
BROKEN = 1e-2  # an error above this is not rounding: the layer is not equivariant


def error_verdicts(errors: pd.DataFrame, specs: Sequence[ModelSpec]) -> str:
    """Per model, which depths stay at float rounding (largest error over seeds below
    ``ROUNDING``) and which do not (above ``BROKEN``): lines that hold on any machine
    (the errors themselves: :func:`error_summary`). AssertionError when an exact model
    exceeds ``ROUNDING`` at any depth."""
    worst = errors.groupby(["model", "layer"], sort=False).error.max()
    lines = []
    for spec in specs:
        if spec.label not in worst.index.get_level_values("model"):
            continue
        mine = worst[spec.label]
        if spec.exact and not (mine < ROUNDING).all():
            raise AssertionError(f"{spec.label} is exact but its error reaches "
                                 f"{mine.max():.2g} at {mine.idxmax()}")
        groups = [(f"below {ROUNDING:.0e}", mine.index[mine < ROUNDING]),
                  (f"above {BROKEN:.0e}", mine.index[mine > BROKEN]),
                  (f"between {ROUNDING:.0e} and {BROKEN:.0e}",
                   mine.index[(mine >= ROUNDING) & (mine <= BROKEN)])]
        lines.append(f"{spec.description}: " + "; ".join(
            f"{bound} at {', '.join(layers)}" for bound, layers in groups if len(layers)))
    return "\n".join(lines)


def plot_errors(errors: pd.DataFrame, specs: Sequence[ModelSpec]):
    """Figure 2: equivariance error of the trained models at four depths (log scale), one
    group of bars per depth, exact size beside the one pixel off: seaborn's bars at the
    mean over seeds (``barplot(errorbar=None)``) and a dot for each seed (``stripplot``,
    no jitter). Errors are clipped at 1e-17 for the log scale."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from equivlib.plots import EXACT_COLOR, INEXACT_COLOR, NEUTRAL_COLOR

    names = {s.label: f"{s.label} ({'exact' if s.exact else 'approximate'})"
             for s in specs if s.exact is not None}
    palette = {name: EXACT_COLOR if "(exact)" in name else INEXACT_COLOR
               for name in names.values()}
    order = [DEPTH_LABELS[layer] for layer in ERROR_LAYERS if layer in set(errors.layer)]
    data = errors[errors.model.isin(names)].assign(model=errors.model.map(names),
                                                   error=errors.error.clip(lower=1e-17))
    fig, ax = plt.subplots(figsize=(8.6, 3.6))
    common = dict(data=data, x="depth", y="error", hue="model", order=order,
                  hue_order=list(palette), ax=ax)
    sns.barplot(**common, palette=palette, errorbar=None, saturation=1, alpha=0.75,
                gap=0.1, edgecolor="none")
    sns.stripplot(**common, palette=dict.fromkeys(palette, NEUTRAL_COLOR), dodge=True,
                  jitter=False, size=3, legend=False)
    ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_ylabel("relative equivariance error")
    ax.set_title("trained P4 models: error under quarter turns at four depths")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # room for the stamp below the labels
    return fig
