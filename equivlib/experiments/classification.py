"""Claim C3 on classification benchmarks (notebook 06): Z2 / P4 / P4M pre-activation
ResNet-44 at input 32 (approximately equivariant: the stride-2 stages do not fit) versus 33
(exact), with and without coset pooling, trained without and with random quarter turns, on
fractions of the training set, tested upright ("seen") and at the four quarter turns
("unseen", pooled); P4M also on the mirrored test set.

The paper's datasets are CIFAR-10, CIFAR-100 and Flowers-102 (protocol: docs/design.md §7). None
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

from equivlib._deprecation import renamed
from equivlib.engine.config import RunConfig
from equivlib.experiments.notebook_params import number_list, split_list
from equivlib.experiments.recipes import paper_config
from equivlib.experiments.rotation import ModelSpec, NotebookGrid, welch
from equivlib.models import get_model
from equivlib.tracer import trace

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
    """One run of the experiment: the CIFAR/Flowers protocol of docs/design.md §7 (Adam, OneCycleLR
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


PARAMETERS = ("datasets", "models", "sizes", "augment", "fractions", "seeds", "widths",
              "depth", "flips", "epochs", "batch_size", "lr", "stand_in_sizes")
"""The notebook parameters the grid of 06 is built from."""


def notebook_grid(params: dict[str, Any]) -> NotebookGrid:
    """Notebook 06's grid from its parameters (:data:`PARAMETERS`): the configs of
    :func:`configs_from_params`, the stand-in note on :data:`STAND_IN`, and a description
    (runs, training, the exactness of every model and input size)."""
    configs = configs_from_params(params)
    depth = params["depth"]
    on_stand_in = STAND_IN in [c.data.dataset for c in configs]
    stand_in = (f"STAND-IN data: embedded MNIST digits, CIFAR protocol, ResNet-{depth}; not "
                "CIFAR-10/100 or Flowers-102" if on_stand_in else "")
    description = (
        f"{len(configs)} runs of ResNet-{depth}; {params['epochs']} epoch(s) at fraction 1, "
        f"batch {params['batch_size']}, Adam + OneCycle lr {params['lr']}, horizontal flips "
        f"{'on' if params['flips'] else 'off'}\n"
        "exactness of every model and input size (equivlib.tracer.trace):\n"
        + exactness_table(configs).to_string(index=False))
    models = list(dict.fromkeys(ModelSpec.of(c) for c in configs))
    return NotebookGrid(configs, models, description, stand_in, label=grid_label)


@functools.lru_cache(maxsize=256)
def _exactness(name: str, widths: tuple[int, ...], coset_pool: bool,
               input_size: int) -> tuple[bool, bool]:
    model = get_model(name, widths=list(widths), coset_pool=coset_pool)
    exact = trace(model, input_size).exact
    group = getattr(model, "group", None)
    return exact, bool(exact and coset_pool and group is not None)


def run_row(config: dict[str, Any] | RunConfig) -> dict[str, Any]:
    """What identifies a run in the tables: dataset, augmentation, fraction, model label,
    input size, seed, and (from :func:`equivlib.tracer.trace`) whether every subsampling
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


def grid_label(config: dict[str, Any] | RunConfig) -> str:
    """One line per run of notebook 06's grid (``grid --list``, the grid log): model, size,
    dataset, augmentation and training images or fraction, padded to columns."""
    r = run_row(config)
    amount = (f"{r['train_images']} images" if r.get("train_images") is not None
              else f"fraction {r['fraction']:g}")
    return f"{r['model']:11s} {r['size']:3d} {r['dataset']:10s} augment {r['augment']:7s} " \
           f"{amount}"


def results_table(configs: Sequence[dict[str, Any] | RunConfig],
                  metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: identity (:func:`run_row`), ``seen`` (upright), ``unseen`` (0/90/
    180/270 pooled), ``drop`` (seen - unseen: what the model loses on rotated test images,
    exactly 0 for an invariant one), each quarter turn, and for mirrored tests ``flipped``
    (upright) and ``flipped_unseen``."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        row = run_row(c)
        row.update(seen=m["seen"], unseen=m["unseen"], drop=m["seen"] - m["unseen"],
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
    """Mean and std (ddof 1; NaN with one seed) over seeds of seen and unseen accuracy and
    of the drop between them per setting, model and size, with the exactness beside them."""
    keys = [*_setting_keys(runs), "model", "size", "exact", "invariant"]
    metrics = [m for m in ("seen", "unseen", "drop", "flipped", "flipped_unseen") if m in runs]
    agg = {f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")}
    return runs.groupby(keys, sort=False, dropna=False).agg(**agg, seeds=("seed", "count")) \
        .reset_index()

def welch_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """Welch's t-test (two-sided, unequal variances) of the exact size against the other
    size, per setting and model, on seen and unseen accuracy and on the drop between them;
    NaN below 2 seeds a side."""
    rows = []
    metrics = [m for m in ("seen", "unseen", "drop") if m in runs]
    for key, group in runs.groupby([*_setting_keys(runs), "model"], sort=False, dropna=False):
        exact = group[group.exact]
        for size, other in group[~group.exact].groupby("size", sort=False):
            for metric in metrics:
                xa, xb = exact[metric].to_numpy(), other[metric].to_numpy()
                t, p = welch(xa, xb)
                rows.append({**dict(zip([*_setting_keys(runs), "model"], key, strict=True)),
                             "metric": metric, "exact_size": int(exact["size"].iloc[0])
                             if len(exact) else None, "other_size": int(size),
                             "mean_exact": xa.mean() if len(xa) else float("nan"),
                             "mean_other": xb.mean(), "t": t, "p": p})
    return pd.DataFrame(rows)


ALPHA = 0.05
"""Significance level of the claim verdicts (two-sided Welch p below it)."""


def _directional(a: np.ndarray, b: np.ndarray, *, ties_hold: bool = False) -> tuple[str, float]:
    """Verdict on "mean of ``a`` > mean of ``b``" from seeds: ``shown`` when it is and Welch's
    p < :data:`ALPHA`; ``not significant`` when it is (or, with ``ties_hold``, when the means
    are equal) without that; ``not shown`` otherwise (with ``ties_hold``: ``contradicted``
    when ``b`` is significantly ahead). Returns the verdict and p."""
    _, p = welch(a, b)
    ahead = float(np.mean(a)) > float(np.mean(b)) or (
        ties_hold and float(np.mean(a)) == float(np.mean(b)))
    if ahead:
        return ("shown" if p < ALPHA else "not significant"), p
    if ties_hold:
        return ("contradicted" if p < ALPHA else "not shown"), p
    return "not shown", p


def _mean_std(values: np.ndarray) -> str:
    values = 100 * np.asarray(values, dtype=float)
    std = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
    return f"{values.mean():.1f}{std}"


def claims_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The paper's pattern (docs/design.md §1, C2 and C3) tested on these runs, one row per claim,
    setting and model, with the numbers behind each verdict (accuracies in %, mean ± std over
    seeds; Welch's two-sided p between the compared groups of seeds):

    - ``invariant``: an exact coset-pooled model has unseen == seen in every run (drop 0).
    - ``C2``: trained without rotations, the approximate size drops more from seen to unseen
      than the exact one (group models).
    - ``C3``: trained without rotations, the approximate size is at least as good as the
      exact one on seen (upright) images; ``contradicted`` when it is significantly worse.
    - ``augmentation closes the gap``: the approximate-minus-exact difference of the drop is
      smaller with quarter-turn augmentation than without.
    - ``Z2 loses most``: trained without rotations, Z2 drops more than every other model at
      the same size (p against the next largest drop).

    Verdicts: ``shown`` (the direction holds and p < :data:`ALPHA`), ``not significant``
    (direction holds, p not below it, or fewer than 2 seeds a side), ``not shown``,
    ``contradicted``; for ``invariant`` ``shown`` / ``not shown``."""
    rows: list[dict[str, Any]] = []
    keys = _setting_keys(runs)

    def add(claim: str, setting: tuple, model: str, a_label: str, a: np.ndarray,
            b_label: str, b: np.ndarray, verdict: str, p: float) -> None:
        rows.append({"claim": claim, **dict(zip(keys, setting, strict=True)), "model": model,
                     "compared": f"{a_label} vs {b_label}", "value_a": _mean_std(a),
                     "value_b": _mean_std(b), "p": p, "verdict": verdict})

    for setting, in_setting in runs.groupby(keys, sort=False, dropna=False):
        augmented = setting[1] == "quarter"
        for model, group in in_setting.groupby("model", sort=False):
            exact, other = group[group.exact], group[~group.exact]
            invariant = group[group.invariant]
            if len(invariant):
                held = bool((invariant["drop"] == 0).all())
                add("invariant", setting, model, "seen", invariant.seen.to_numpy(), "unseen",
                    invariant.unseen.to_numpy(), "shown" if held else "not shown", float("nan"))
            if not len(exact) or not len(other) or model == "Z2":
                continue
            e_size, o_size = int(exact["size"].iloc[0]), int(other["size"].iloc[0])
            if not augmented:
                add("C2", setting, model, f"drop {o_size}", other["drop"].to_numpy(),
                    f"drop {e_size}", exact["drop"].to_numpy(),
                    *_directional(other["drop"].to_numpy(), exact["drop"].to_numpy()))
                add("C3", setting, model, f"seen {o_size}", other.seen.to_numpy(),
                    f"seen {e_size}", exact.seen.to_numpy(),
                    *_directional(other.seen.to_numpy(), exact.seen.to_numpy(),
                                  ties_hold=True))
        if augmented:
            continue
        for size, at_size in in_setting.groupby("size", sort=False):
            drops = {m: g["drop"].to_numpy() for m, g in at_size.groupby("model", sort=False)}
            if "Z2" not in drops or len(drops) < 2:
                continue
            runner_up = max((m for m in drops if m != "Z2"), key=lambda m: drops[m].mean())
            add("Z2 loses most", setting, f"Z2-{size}", "drop Z2", drops["Z2"],
                f"drop {runner_up}", drops[runner_up],
                *_directional(drops["Z2"], drops[runner_up]))
    rows.extend(_gap_rows(runs, keys))
    return pd.DataFrame(rows, columns=["claim", *keys, "model", "compared", "value_a",
                                       "value_b", "p", "verdict"])


def _gap_rows(runs: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    """``augmentation closes the gap`` rows: per model, (approximate - exact) mean drop with
    quarter turns against without. ``shown`` only when the gap without augmentation is
    significant (Welch p, reported) and smaller in magnitude with it; ``not significant``
    when it shrinks from a gap that was not significant."""
    rows = []
    other_keys = [k for k in keys if k != "augment"]
    for setting, group in runs.groupby([*other_keys, "model"], sort=False, dropna=False):
        gaps, p = {}, float("nan")
        for augment, g in group.groupby("augment"):
            exact, other = g[g.exact], g[~g.exact]
            if len(exact) and len(other):
                gaps[augment] = float(other["drop"].mean() - exact["drop"].mean())
                if augment == "none":
                    _, p = welch(other["drop"].to_numpy(), exact["drop"].to_numpy())
        if set(gaps) != {"none", "quarter"} or setting[-1] == "Z2":
            continue
        closes = abs(gaps["quarter"]) < abs(gaps["none"])
        verdict = "not shown" if not closes else "shown" if p < ALPHA else "not significant"
        rows.append({"claim": "augmentation closes the gap",
                     **dict(zip(other_keys, setting[:-1], strict=True)), "augment": "both",
                     "model": setting[-1], "compared": "drop gap quarter vs none",
                     "value_a": f"{100 * gaps['quarter']:.1f}",
                     "value_b": f"{100 * gaps['none']:.1f}", "p": p, "verdict": verdict})
    return rows


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
    """One column per setting. Top: for every model, its seen (filled) and unseen (open)
    accuracy at each input size, exact sizes in green and the others in magenta, with a line
    from seen to unseen. Bottom: that line as a bar, the drop from seen to unseen in
    percentage points (claim C2 at a glance: exactly 0 for an invariant model), with a dot
    per seed and the mean written above it.

    With ``runs`` (the per-run table of :func:`results_table`) the points and their ±1 sd
    bars are seaborn's mean and sd over seeds (``pointplot(errorbar="sd")``) and the drop
    panel has a dot per run; without it the summary's means are drawn, with no bars or
    dots. The lines, bars, size labels and the layout come from ``summary``."""
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
    blocks = int(np.ceil(len(settings) / cols))
    fig, grid = plt.subplots(2 * blocks, cols, figsize=(6.0 * cols, 5.6 * blocks),
                             squeeze=False, sharey="row",
                             gridspec_kw={"height_ratios": [3, 2] * blocks})
    tops = [grid[2 * (k // cols), k % cols] for k in range(blocks * cols)]
    bottoms = [grid[2 * (k // cols) + 1, k % cols] for k in range(blocks * cols)]
    for ax, low, (key, group) in zip(tops, bottoms, settings, strict=False):
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
                _drop_bar(low, x, step, r, colour, size, runs=None if runs is None else
                          in_setting[(in_setting.model == model)
                                     & (in_setting["size"] == str(size))])
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_title(setting_title(key, keys), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("test accuracy (%)", visible=True)  # seaborn hides it on shared axes
        ax.grid(axis="y", color="0.9", lw=0.6)
        low.set_xlim(ax.get_xlim())
        low.set_xticks(range(len(models)), models)
        low.axhline(0, color="0.3", lw=0.6)
        low.set_ylabel("seen − unseen\n(points lost)", fontsize=8)
        low.tick_params(labelleft=True)
        low.grid(axis="y", color="0.9", lw=0.6)
    for ax in [*tops[len(settings):], *bottoms[len(settings):]]:
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
    bars = "; bars: ±1 std over seeds, dots: runs" if seeds > 1 and runs is not None else ""
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8,
               title=f"mean over {seeds} seed(s){bars}", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.92 if blocks == 1 else 0.95))
    return fig


def _drop_bar(ax, x: float, step: float, row, colour: str, size: int,
              runs: pd.DataFrame | None) -> None:
    """One bar of the drop panel: the mean drop of ``row`` (a summary row) at ``x``, a dot
    per run of ``runs`` (accuracies already in %), the mean written above it."""
    drop = 100 * (row.seen_mean - row.unseen_mean)
    ax.bar(x, drop, width=0.8 * step, color=colour, alpha=0.35, edgecolor=colour, lw=0.8,
           zorder=1)
    if runs is not None and len(runs):
        ax.scatter(np.full(len(runs), x), runs.seen - runs.unseen, s=9, color=colour,
                   zorder=2, lw=0)
    label = "0" if drop == 0 else f"{drop:.1f}"
    ax.annotate(f"{label}\n{size}", (x, max(drop, 0)), textcoords="offset points",
                xytext=(0, 2), ha="center", va="bottom", fontsize=6.5, color=colour)


def exactness_table(configs: Sequence[dict[str, Any] | RunConfig]) -> pd.DataFrame:
    """One row per model and input size of the grid: ``exact`` (every subsampling layer
    fits, from :func:`equivlib.tracer.trace`) and ``invariant`` (exact and coset-pooled)."""
    rows = pd.DataFrame([run_row(c) for c in configs])
    return rows.drop_duplicates(["model", "size"])[["model", "size", "exact", "invariant"]]


def assert_invariant_runs(runs: pd.DataFrame) -> str:
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


check_invariant_runs = renamed("check_invariant_runs", assert_invariant_runs)
