"""Claim C3 on classification benchmarks (notebook 06): Z2 / P4 / P4M pre-activation
ResNet-44 at input 32 (approximately equivariant: the stride-2 stages do not fit) versus 33
(exact), with and without coset pooling, trained without and with random quarter turns, on
fractions of the training set, tested upright ("seen") and at the four quarter turns
("unseen", pooled); P4M also on the mirrored test set.

The paper's datasets are CIFAR-10, CIFAR-100 and Flowers-102 (protocol: DESIGN §7). None
ships in a package, so the cpu profile runs the same configs on a stand-in, the embedded
MNIST digits with the CIFAR protocol (:data:`STAND_IN`); its numbers are never CIFAR's.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from equivlib.engine.config import RunConfig
from equivlib.exactness import trace
from equivlib.experiments.params import number_list, split_list
from equivlib.experiments.protocols import paper_config
from equivlib.models import get_model

PAPER_DATASETS = ("cifar10", "cifar100", "flowers102")
STAND_IN = "mnist"
"""The cpu profile's stand-in: embedded MNIST digits (upright, like photos), CIFAR protocol."""
GROUPS = ("z2", "p4", "p4m")
DEPTHS = (44, 20)  # the paper's ResNet-44; ResNet-20 (3 blocks a stage) for the cpu budget
PAPER_WIDTHS = {"z2": 32, "p4": 16, "p4m": 12}  # first-stage widths, ~2.6 M parameters each
SIZES = (32, 33)
AUGMENTS = ("none", "quarter")


@dataclass(frozen=True)
class Variant:
    """A model family: its group and whether the classifier sees coset-pooled features."""

    group: str
    coset_pool: bool = True

    @property
    def label(self) -> str:
        name = self.group.upper()
        return name if self.coset_pool or self.group == "z2" else f"{name} no pool"


def parse_variants(text: str) -> list[Variant]:
    """``"z2,p4,p4:nopool,p4m,p4m:nopool"`` -> variants (``:nopool``: no coset pooling)."""
    out = []
    for item in split_list(text, "models"):
        group, _, flag = item.partition(":")
        if group not in GROUPS or flag not in ("", "nopool") or (group == "z2" and flag):
            raise ValueError(f"models: bad entry {item!r}; expected z2, p4, p4m, "
                             f"p4:nopool or p4m:nopool")
        out.append(Variant(group, coset_pool=flag != "nopool"))
    if len(set(out)) != len(out):
        raise ValueError(f"models: duplicate entries in {text!r}")
    return out


def model_name(group: str, depth: int = 44) -> str:
    """The registered ResNet of ``group`` and ``depth`` (44: the paper's; 20: shallower)."""
    if group not in GROUPS or depth not in DEPTHS:
        raise ValueError(f"no ResNet for group {group!r} at depth {depth}; groups "
                         f"{list(GROUPS)}, depths {list(DEPTHS)}")
    return f"{group}_resnet{depth}"


def classification_config(dataset: str, variant: Variant, input_size: int, *,
                          quarter_turns: bool = False, fraction: float = 1.0, seed: int = 0,
                          width: int | None = None, depth: int = 44, flips: bool = True,
                          epochs: int | None = None, batch_size: int | None = None,
                          lr: float | None = None,
                          stand_in_sizes: Sequence[int] = (4000, 50, 950)) -> RunConfig:
    """One run of the experiment: the CIFAR/Flowers protocol of DESIGN §7 (Adam, OneCycleLR
    per batch, last epoch) with these overrides. ``fraction`` < 1 trains on a seeded subset
    (the same for every model) for ``epochs / fraction`` epochs, so the steps stay constant.
    ``width``: first-stage width (stages ``w, 2w, 4w``; default the paper's per group);
    ``depth`` 20 swaps in the shallower ResNet-20 (same strides, so the same exact sizes);
    ``flips=False`` drops the protocol's horizontal flip. On the stand-in
    (``dataset="mnist"``) ``stand_in_sizes`` are the train/valid/test digits and the
    fraction shrinks the training digits."""
    name = model_name(variant.group, depth)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    base = paper_config("cifar10" if dataset == STAND_IN else dataset, name, input_size)
    w = width or PAPER_WIDTHS[variant.group]
    model = {"kwargs": {"widths": [w, 2 * w, 4 * w], "coset_pool": variant.coset_pool}}
    data: dict[str, Any] = {"quarter_turns": quarter_turns, "flips": flips, "options": {}}
    if dataset == STAND_IN:
        train, valid, test = stand_in_sizes
        data.update(dataset=STAND_IN, protocol="cifar",
                    options={"source": "embedded", "split_seed": 0,
                             "sizes": [max(1, round(train * fraction)), valid, test]})
    elif dataset.startswith("cifar"):
        if fraction < 1:
            data["options"] = {"fraction": fraction, "fraction_seed": 0}
    elif fraction < 1:
        raise ValueError(f"{dataset}: training fractions are implemented for CIFAR and the "
                         f"stand-in only; use fraction 1")
    n_epochs = epochs if epochs is not None else base.train.epochs
    train_section: dict[str, Any] = {"seed": seed,
                                     "epochs": max(1, round(n_epochs / fraction))}
    if batch_size is not None:
        train_section["batch_size"] = batch_size
    sections: dict[str, Any] = {"data": data, "model": model, "train": train_section,
                                "test": {"flips": variant.group == "p4m"}}
    if lr is not None:
        sections["optim"] = {"lr": lr}
    return base.replace(**sections)


def experiment_configs(datasets: Sequence[str], variants: Sequence[Variant],
                       sizes: Sequence[int] = SIZES, augments: Sequence[str] = AUGMENTS,
                       fractions: Sequence[float] = (1.0,), seeds: int = 1,
                       widths: dict[str, int] | None = None, **training: Any) -> list[RunConfig]:
    """Every run: dataset x augmentation x fraction x model x size x seed, in that order.
    Flowers-102 has no fraction option: it runs at fraction 1 only."""
    bad = sorted(set(augments) - set(AUGMENTS))
    if bad:
        raise ValueError(f"augment: unknown {bad}; expected none and/or quarter")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    widths = widths or {}
    return [classification_config(d, v, s, quarter_turns=a == "quarter", fraction=f, seed=k,
                                  width=widths.get(v.group), **training)
            for d in datasets for a, f, v, s, k in itertools.product(
                augments, _fractions_of(d, fractions), variants, sizes, range(seeds))]


def _fractions_of(dataset: str, fractions: Sequence[float]) -> list[float]:
    if dataset == STAND_IN or dataset.startswith("cifar"):
        return list(fractions)
    return [1.0]


def configs_from_params(params: dict[str, Any]) -> list[RunConfig]:
    """The configs of notebook 06's parameters (also ``python -m equivlib grid``)."""
    datasets = split_list(params["datasets"], "datasets")
    widths = {}
    for item in split_list(params["widths"], "widths") if params.get("widths") else []:
        group, _, value = item.partition(":")
        if group not in GROUPS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"widths: bad entry {item!r}; expected e.g. z2:8,p4:4,p4m:3")
        widths[group] = int(value)
    return experiment_configs(
        datasets, parse_variants(params["models"]), number_list(params["sizes"], "sizes", int),
        split_list(params["augment"], "augment"),
        number_list(params["fractions"], "fractions", float),
        int(params["seeds"]), widths, depth=int(params.get("depth", 44)),
        flips=bool(params.get("flips", True)), epochs=params.get("epochs") or None,
        batch_size=params.get("batch_size") or None, lr=params.get("lr") or None,
        stand_in_sizes=number_list(params.get("stand_in_sizes", "4000,50,950"),
                                "stand_in_sizes", int))


@functools.lru_cache(maxsize=256)
def _exactness(name: str, widths: tuple[int, ...], coset_pool: bool,
               input_size: int) -> tuple[bool, bool]:
    model = get_model(name, widths=list(widths), coset_pool=coset_pool)
    exact = trace(model, input_size).exact
    group = getattr(model, "group", None)
    return exact, bool(exact and coset_pool and group is not None)


def run_row(config: dict[str, Any] | RunConfig) -> dict[str, Any]:
    """What identifies a run in the tables: dataset, augmentation, fraction, model label,
    input size, seed, and (from :func:`equivlib.exactness.trace`) whether every subsampling
    layer fits (``exact``) and whether the logits are then invariant (``invariant``)."""
    c = RunConfig.from_dict(config)
    group = c.model.name.split("_", 1)[0]
    variant = Variant(group, c.model.kwargs.get("coset_pool", True))
    sizes = c.data.options.get("sizes")
    fraction = c.data.options.get("fraction", 1.0)
    exact, invariant = _exactness(c.model.name, tuple(c.model.kwargs["widths"]),
                                  variant.coset_pool, c.data.input_size)
    return {"dataset": c.data.dataset, "augment": "quarter" if c.data.quarter_turns else "none",
            "fraction": fraction if sizes is None else None, "model": variant.label,
            "size": c.data.input_size, "seed": c.train.seed, "exact": exact,
            "invariant": invariant, "train_images": sizes[0] if sizes else None}


def results_table(configs: Sequence[dict[str, Any] | RunConfig],
                  metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: identity (:func:`run_row`), ``seen`` (upright), ``unseen`` (0/90/
    180/270 pooled), each quarter turn, and for mirrored tests ``flipped`` (upright) and
    ``flipped_unseen``."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        row = run_row(c)
        row.update(seen=m["seen"], unseen=m["unseen"],
                   **{f"rot{a}": m[f"rot{a}"] for a in (0, 90, 180, 270)})
        flipped = m.get("test_acc_flipped")
        if flipped:
            quarter = [flipped[str(float(a))] for a in (0, 90, 180, 270)]
            row.update(flipped=quarter[0], flipped_unseen=float(np.mean(quarter)))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.train_images.notna().any():  # stand-in: the fraction is in the image count
        table = table.drop(columns="fraction")
    else:
        table = table.drop(columns="train_images")
    return table


def _setting_keys(table: pd.DataFrame) -> list[str]:
    return ["dataset", "augment", "fraction" if "fraction" in table else "train_images"]


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1; NaN with one seed) over seeds of seen and unseen accuracy per
    setting, model and size, with the exactness beside them."""
    keys = [*_setting_keys(runs), "model", "size", "exact", "invariant"]
    metrics = [m for m in ("seen", "unseen", "flipped", "flipped_unseen") if m in runs]
    agg = {f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")}
    return runs.groupby(keys, sort=False, dropna=False).agg(**agg, seeds=("seed", "count")) \
        .reset_index()


def welch_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """Welch's t-test (two-sided, unequal variances) of the exact size against the other
    size, per setting and model, on seen and on unseen accuracy; NaN below 2 seeds a side."""
    from scipy.stats import ttest_ind

    rows = []
    for key, group in runs.groupby([*_setting_keys(runs), "model"], sort=False, dropna=False):
        exact = group[group.exact]
        for size, other in group[~group.exact].groupby("size", sort=False):
            for metric in ("seen", "unseen"):
                xa, xb = exact[metric].to_numpy(), other[metric].to_numpy()
                t = p = float("nan")
                if min(len(xa), len(xb)) >= 2 and (xa.std() > 0 or xb.std() > 0):
                    res = ttest_ind(xa, xb, equal_var=False)
                    t, p = float(res.statistic), float(res.pvalue)
                rows.append({**dict(zip([*_setting_keys(runs), "model"], key, strict=True)),
                             "metric": metric, "exact_size": int(exact["size"].iloc[0])
                             if len(exact) else None, "other_size": int(size),
                             "mean_exact": xa.mean() if len(xa) else float("nan"),
                             "mean_other": xb.mean(), "t": t, "p": p})
    return pd.DataFrame(rows)


def latex_table(summary: pd.DataFrame, caption: str = "",
                label: str = "tab:classification") -> str:
    """The summary as a booktabs table: per setting, model and size the seen and unseen
    accuracy (%, mean ± std), and whether the model is exact there."""
    def cell(mean: float, std: float) -> str:
        s = f"{100 * mean:.1f}"
        return s + (rf" $\pm$ {100 * std:.1f}" if np.isfinite(std) else "")

    keys = _setting_keys(summary)
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{lllrcrr}", r"\toprule",
             r"Data & Augment & Model & Size & Exact & Seen (\%) & Unseen (\%) \\",
             r"\midrule"]
    for i, (key, group) in enumerate(summary.groupby(keys, sort=False, dropna=False)):
        if i:
            lines.append(r"\addlinespace")
        dataset, augment, amount = key
        data = dataset + ("" if pd.isna(amount) or amount == 1.0 else
                          f" ({amount:g})" if keys[2] == "fraction" else f" ({int(amount)})")
        for j, row in enumerate(group.itertuples()):
            first = j == 0
            lines.append(f"{data if first else ''} & {augment if first else ''} & {row.model} & "
                         f"{row.size} & {'yes' if row.exact else 'no'} & "
                         f"{cell(row.seen_mean, row.seen_std)} & "
                         f"{cell(row.unseen_mean, row.unseen_std)} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    lines += [rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines).replace("_", r"\_") + "\n"


def setting_title(key: tuple, keys: Sequence[str]) -> str:
    """A panel title such as ``cifar10 · quarter-turn augmentation · 10 % of the data``."""
    parts = dict(zip(keys, key, strict=True))
    name = "MNIST digits (stand-in)" if parts["dataset"] == STAND_IN else parts["dataset"]
    title = [name, "quarter-turn augmentation" if parts["augment"] == "quarter"
             else "no rotation augmentation"]
    if "fraction" in parts and parts["fraction"] != 1.0:
        title.append(f"{100 * parts['fraction']:g} % of the data")
    if "train_images" in parts:
        title.append(f"{int(parts['train_images'])} training images")
    return " · ".join(title)


def plot_seen_unseen(summary: pd.DataFrame, runs: pd.DataFrame | None = None):
    """One panel per setting: for every model, its seen (filled) and unseen (open) accuracy
    at each input size, exact sizes in green and the others in magenta, with a line from
    seen to unseen (the loss on rotated test images; none for an invariant model).

    With ``runs`` (the per-run table of :func:`results_table`) the points and their ±1 sd
    bars are seaborn's mean and sd over seeds (``pointplot(errorbar="sd")``); without it
    the summary's means are drawn, with no bars. The seen-to-unseen lines, the size labels
    and the layout come from ``summary``."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    from equivlib.plots import EXACT_COLOR, INEXACT_COLOR, NEUTRAL_COLOR

    keys = _setting_keys(summary)
    points = summary.rename(columns={"seen_mean": "seen", "unseen_mean": "unseen"}) \
        if runs is None else runs
    points = points.assign(seen=100 * points.seen, unseen=100 * points.unseen,
                           size=points["size"].astype(str))
    settings = list(summary.groupby(keys, sort=False, dropna=False))
    cols = min(len(settings), 2)
    rows = int(np.ceil(len(settings) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.4 * rows), squeeze=False,
                             sharey=True)
    for ax, (key, group) in zip(axes.flat, settings, strict=False):
        in_setting = points.merge(pd.DataFrame([key], columns=keys), on=keys)
        models = list(dict.fromkeys(group.model))
        sizes = sorted(group["size"].unique())
        step = 0.8 / max(len(sizes), 1)  # the sizes of a model side by side, 0.8 wide
        for i, model in enumerate(models):
            cells = group[group.model == model].set_index("size")
            palette = {str(size): (EXACT_COLOR if cells.exact[size] else INEXACT_COLOR)
                       if size in cells.index else NEUTRAL_COLOR for size in sizes}
            for metric, face in (("seen", {}), ("unseen", {"markerfacecolor": "white"})):
                sns.pointplot(in_setting[in_setting.model == model], x="model", y=metric,
                              hue="size", order=models, hue_order=list(palette),
                              palette=palette, errorbar="sd" if runs is not None else None,
                              dodge=0.8 - step, linestyle="none", marker="o", markersize=5.5,
                              markeredgewidth=1.2, capsize=0.05, zorder=2, legend=False,
                              err_kws={"linewidth": 0.8, "zorder": 1.5}, ax=ax, **face)
            for j, size in enumerate(sizes):
                if size not in cells.index:
                    continue
                r, x, colour = cells.loc[size], i - 0.4 + step * (j + 0.5), palette[str(size)]
                ax.plot([x, x], [100 * r.seen_mean, 100 * r.unseen_mean], color=colour,
                        lw=1.2, zorder=1)
                ax.annotate(str(size), (x, 100 * min(r.seen_mean, r.unseen_mean)),
                            textcoords="offset points", xytext=(0, -12), ha="center",
                            fontsize=7, color=colour)
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_title(setting_title(key, keys), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("test accuracy (%)", visible=True)  # seaborn hides it on shared axes
        ax.grid(axis="y", color="0.9", lw=0.6)
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    seeds = int(summary.seeds.max())
    handles = [
        Line2D([], [], ls="", marker="o", color=EXACT_COLOR, label="exact input size"),
        Line2D([], [], ls="", marker="o", color=INEXACT_COLOR,
               label="one pixel off (approximate)"),
        Line2D([], [], ls="", marker="o", color="0.3", label="seen: upright test images"),
        Line2D([], [], ls="", marker="o", mfc="white", mec="0.3",
               label="unseen: 0°/90°/180°/270° pooled"),
    ]
    bars = "; bars: ±1 std over seeds" if seeds > 1 and runs is not None else ""
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8,
               title=f"mean over {seeds} seed(s){bars}", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.9 if rows == 1 else 0.94))
    return fig


def exactness_table(configs: Sequence[dict[str, Any] | RunConfig]) -> pd.DataFrame:
    """One row per model and input size of the grid: ``exact`` (every subsampling layer
    fits, from :func:`equivlib.exactness.trace`) and ``invariant`` (exact and coset-pooled)."""
    rows = pd.DataFrame([run_row(c) for c in configs])
    return rows.drop_duplicates(["model", "size"])[["model", "size", "exact", "invariant"]]


def check_invariant_runs(runs: pd.DataFrame) -> str:
    """Raise AssertionError unless every exactly invariant run has identical accuracies at
    the four quarter turns (so unseen == seen); returns a one-line confirmation."""
    quarter = ["rot0", "rot90", "rot180", "rot270"]
    invariant = runs[runs.invariant]
    spread = float((invariant[quarter].max(axis=1) - invariant[quarter].min(axis=1)).max()) \
        if len(invariant) else 0.0
    if spread != 0.0 or not (invariant.unseen == invariant.seen).all():
        raise AssertionError(f"an exactly invariant model's quarter-turn accuracies differ "
                             f"by {spread}")
    return f"{len(invariant)} exactly invariant runs: unseen == seen in every one"
