"""Accuracy under rotation (notebooks 04, 05, 07, 08): model and regime specs, the run
label, long and summary tables, Welch's t-tests, the quarter-turn assertion, the
accuracy-vs-rotation figure, the LaTeX table, the grid log and the one ``NotebookGrid``.

Exactness is read from :func:`equivlib.tracer.trace` at each model's input size: a model
is exact when every subsampling layer keeps its grid symmetric there, and only then are its
quarter-turn accuracies equal (up to float rounding of the logits).
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from equivlib.engine.config import RunConfig
from equivlib.models import get_model
from equivlib.tracer import trace

QUARTER_TURNS = (0.0, 90.0, 180.0, 270.0)


@dataclass(frozen=True)
class ModelSpec:
    """A model at an input size, e.g. ``p4_mnist_cnn@28``; ``coset_pool=False``: a group
    model whose classifier sees the orientation axis (not invariant, whatever the size)."""

    model: str
    input_size: int
    coset_pool: bool = True

    @classmethod
    def of(cls, config: dict[str, Any] | RunConfig) -> ModelSpec:
        """The model of a run's config at its input size."""
        c = RunConfig.from_dict(config)
        return cls(c.model.name, c.data.input_size, c.model.kwargs.get("coset_pool", True))

    @property
    def label(self) -> str:
        """``P4-28``; ``P4 no pool-33`` without coset pooling (Z2 models have none)."""
        group = self.model.split("_")[0]
        pooling = "" if self.coset_pool or group == "z2" else " no pool"
        return f"{group.upper()}{pooling}-{self.input_size}"

    @property
    def exact(self) -> bool | None:
        """True/False for group models (from :func:`equivlib.tracer.trace`), None for Z2."""
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

    @classmethod
    def of(cls, config: dict[str, Any] | RunConfig) -> RegimeSpec:
        """The training rotations of a run's config (sigma only for ``biased``)."""
        c = RunConfig.from_dict(config)
        return cls(c.data.regime, c.data.sigma if c.data.regime == "biased" else None)

    @property
    def label(self) -> str:
        return f"biased σ={self.sigma:g}°" if self.regime == "biased" else self.regime


@functools.cache
def _is_exact(model: str, input_size: int) -> bool | None:
    if model.startswith("z2"):
        return None
    return bool(trace(get_model(model), input_size).exact)


def run_label(config: dict[str, Any] | RunConfig) -> str:
    """The label of a run in every table and log: its model at its input size, e.g.
    ``"P4-27"`` (``Z2-28``, ``P4-225``)."""
    return ModelSpec.of(config).label


def grid_label(config: dict[str, Any] | RunConfig) -> str:
    """One line per run of a rotation grid (``grid --list``, the grid log): the run label
    and the regime label, padded to columns, e.g. ``"P4-27  biased σ=20°  "``."""
    return f"{run_label(config):6s} {RegimeSpec.of(config).label:14s}"


def accuracy_table(configs: Sequence[dict[str, Any]],
                   metrics: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Long table: one row per (model, regime, seed, test angle) with the accuracy."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        model, regime = run_label(c), RegimeSpec.of(c).label
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


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's t-test (two-sided, unequal variances) of samples ``a`` and ``b``: ``(t, p)``,
    NaN below 2 values a side or when neither varies (the test is undefined there)."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # scipy warns when one side is constant (an invariant model's drop of 0): harmless
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        res = ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def welch_tests(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`welch` between every pair of models within each regime, on the accuracy at 0°
    and on the mean accuracy over angles (NaN below 2 seeds a side or with no variance)."""
    runs = per_run(table)
    rows = []
    for regime, group in runs.groupby("regime", sort=False):
        models = list(dict.fromkeys(group.model))
        for a, b in itertools.combinations(models, 2):
            for metric in ("acc_0", "acc_mean"):
                xa = group[group.model == a][metric].to_numpy()
                xb = group[group.model == b][metric].to_numpy()
                t, p = welch(xa, xb)
                rows.append({"regime": regime, "metric": metric, "model_a": a, "model_b": b,
                             "mean_a": xa.mean(), "mean_b": xb.mean(), "t": t, "p": p})
    return pd.DataFrame(rows)


def quarter_turn_spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and regime: accuracy at 0°, 90°, 180°, 270° (mean over seeds) and the
    largest difference between those four for any one seed, in points."""
    quarter = table[table.angle.isin(QUARTER_TURNS)]
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


def assert_exact_quarter_turns(table: pd.DataFrame, models: Sequence[ModelSpec]) -> str:
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
    """The ``on_done`` callback of :func:`equivlib.engine.grid.run_grid` for notebooks
    04-08: a line per trained run as it finishes (``label`` of its config, seed, seconds,
    accuracy at 0°), and the throughput of every run for :meth:`summary`."""

    def __init__(self, total: int,
                 label: Callable[[dict[str, Any]], str] = grid_label) -> None:
        self.total, self.label, self.rows = total, label, []

    def __call__(self, config: dict[str, Any], metrics: dict[str, Any], reused: bool) -> None:
        timing = metrics["timing"]
        if not reused:
            print(f"[{len(self.rows) + 1}/{self.total}] {self.label(config)} seed "
                  f"{config['train']['seed']}: train {timing['train_seconds']:.0f} s, test "
                  f"{timing['test_seconds']:.0f} s, accuracy at 0° "
                  f"{metrics['test_acc']['0.0']:.3f}", flush=True)
        self.rows.append({"model": run_label(config), "reused": reused, **{
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


@dataclass(frozen=True)
class NotebookGrid:
    """A notebook's runs, built from its parameters (:mod:`equivlib.experiments.grids`):
    the configs, the models compared (and the training regimes, where the figure has one
    panel per regime), a description of the grid, the stand-in note ("" on the real data),
    the one-line ``label`` of a run (``grid --list`` and the log) and, for data the builder
    wrote (ImageNet's stand-in shards), the ``data_dir`` the runs read."""

    configs: list[RunConfig]
    models: list[ModelSpec]
    description: str
    stand_in: str = ""
    label: Callable[[dict[str, Any] | RunConfig], str] = grid_label
    regimes: list[RegimeSpec] = field(default_factory=list)
    data_dir: str | None = None

    def run(self, results_dir: str, checkpoint_dir: str, *, workers: int, threads: int,
            data_dir: str | None = None, device: str = "cpu", download: bool = False,
            processes_per_run: int = 1) -> list[dict[str, Any]]:
        """Train (or reuse from the results store) every run, printing a line per trained
        run and a throughput summary (:class:`RunLog`); returns the metrics in the order of
        ``configs``. ``data_dir`` is ignored where the grid wrote its own data."""
        from equivlib.engine.grid import run_grid

        log = RunLog(len(self.configs), self.label)
        tick = time.perf_counter()
        metrics = run_grid(self.configs, results_dir, checkpoint_dir, workers=workers,
                           threads=threads, data_dir=self.data_dir or data_dir or None,
                           download=download, device=device,
                           processes_per_run=processes_per_run, on_done=log)
        print(log.summary(time.perf_counter() - tick, results_dir, workers, threads))
        return metrics
