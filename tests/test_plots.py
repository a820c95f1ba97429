"""plots: one seaborn theme; atomic, byte-reproducible figure and CSV files with ordinary
permissions; every figure function of the notebooks, on small fake tables, gives the same PNG
and PDF bytes twice (in one process and in two with different hash seeds), and its seaborn
statistics are the tables' means and standard deviations over seeds."""

import json
import os
import stat
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402

from equivlib import plots  # noqa: E402
from equivlib.engine.config import RunConfig  # noqa: E402
from equivlib.experiments import (  # noqa: E402
    classification,
    imagenet,
    pcam,
    rotation,
    subsampling,
    zoo,
)
from equivlib.store import results  # noqa: E402
from equivlib.store.provenance import collect  # noqa: E402


def _figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 2])
    plots.stamp(fig, "smoke")
    return fig


def test_same_figure_gives_the_same_bytes(tmp_path):
    plots.save_figure(_figure(), tmp_path / "a", "fig")
    plots.save_figure(_figure(), tmp_path / "b", "fig")
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"fig.{ext}").read_bytes() == \
            (tmp_path / "b" / f"fig.{ext}").read_bytes()


def test_files_get_the_usual_mode_and_no_temp_files_remain(tmp_path):
    umask = os.umask(0o022)
    try:
        paths = plots.save_figure(_figure(), tmp_path, "fig")
        paths.append(plots.save_csv(pd.DataFrame({"x": [0.1234567891]}), tmp_path, "fig"))
    finally:
        os.umask(umask)
    paths.append(tmp_path / "fig.provenance.json")
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.csv", "fig.pdf", "fig.png",
                                                          "fig.provenance.json"]
    assert (tmp_path / "fig.csv").read_text() == "x\n0.123457\n"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    (tmp_path / "fig.csv").write_text("old")

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_csv(Broken({"x": [1]}), tmp_path, "fig")
    assert (tmp_path / "fig.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.csv"]


def test_unknown_profile_in_stamp():
    with pytest.raises(ValueError, match="unknown profile"):
        plots.stamp(_figure(), "fast")


def test_apply_style_is_seaborns_theme_with_the_shared_rcparams():
    with plt.rc_context():
        plots.apply_style()
        for key, value in plots.STYLE.items():
            assert plt.rcParams[key] == matplotlib.RcParams({key: value})[key], key
        paper = sns.plotting_context("paper")
        assert plt.rcParams["xtick.major.size"] == paper["xtick.major.size"]
        assert plt.rcParams["axes.axisbelow"] is True  # the "ticks" style
        assert plt.rcParams["font.sans-serif"] == ["DejaVu Sans"]


# ------------------------------------------------------------ every figure on fake tables
Spec = namedtuple("Spec", "label exact description")  # what the figures read of a ModelSpec
RNG_SEED = 0


def _spec(label, exact):
    kind = "not equivariant" if exact is None else "exact" if exact else "approximate"
    return Spec(label, exact, f"{label} ({kind})")


def rotmnist_table(seeds=2):
    rng = np.random.default_rng(RNG_SEED)
    rows = [{"model": m, "regime": r, "seed": k, "angle": float(a),
             "accuracy": float(rng.uniform(0.3, 0.9))}
            for m in ("P4-28", "P4-27", "Z2-28") for r in ("none", "uniform")
            for k in range(seeds) for a in range(0, 360, 30)]
    return pd.DataFrame(rows)


ROTMNIST_SPECS = [_spec("P4-28", True), _spec("P4-27", False), _spec("Z2-28", None)]


def _rotmnist(seeds=2):
    return rotation.plot_accuracy_vs_rotation(
        rotmnist_table(seeds), [rotation.RegimeSpec("none"), rotation.RegimeSpec("uniform")],
        ROTMNIST_SPECS)


def classification_runs():
    rng = np.random.default_rng(RNG_SEED)
    rows = []
    for augment in ("none", "quarter"):
        for model in ("Z2", "P4", "P4 no pool"):
            for size in (32, 33):
                for seed in range(2):
                    seen = float(rng.uniform(0.4, 0.9))
                    invariant = model == "P4" and size == 33
                    rows.append({"dataset": "mnist", "augment": augment, "train_images": 1000,
                                 "model": model, "size": size, "seed": seed,
                                 "exact": size == 33, "invariant": invariant, "seen": seen,
                                 "unseen": seen if invariant else seen - 0.3})
    return pd.DataFrame(rows)


def _classification():
    runs = classification_runs()
    return classification.plot_seen_unseen(classification.summary_table(runs), runs)


def pcam_errors():
    rng = np.random.default_rng(RNG_SEED)
    return pd.DataFrame([{"model": model, "seed": seed, "layer": layer,
                          "depth": pcam.DEPTH_LABELS[layer],
                          "error": float(scale * rng.uniform(1, 2))}
                         for model, scale in (("P4-96", 0.3), ("P4-97", 1e-7), ("Z2-96", 0.5))
                         for seed in range(2) for layer in pcam.ERROR_LAYERS])


PCAM_SPECS = [_spec("Z2-96", None), _spec("P4-96", False), _spec("P4-97", True)]


def _pcam():
    return pcam.plot_errors(pcam_errors(), PCAM_SPECS)


IMAGENET_EXACT = {"Z2-224": None, "Z2-225": None, "P4-224": False, "P4-225": True}


def imagenet_table():
    rng = np.random.default_rng(RNG_SEED)
    return pd.DataFrame([{"model": m, "seed": k, "angle": float(a),
                          "top1": float(rng.uniform(0.1, 0.5)),
                          "top5": float(rng.uniform(0.5, 1.0))}
                         for m in IMAGENET_EXACT for k in range(2) for a in (0, 90, 180, 270)])


def _imagenet():
    return imagenet.plot_quarter_turns(imagenet_table(), IMAGENET_EXACT)


SUBSAMPLING_RANGES = (range(24, 30), range(31, 34), range(35, 38))


def _subsampling():
    rng = np.random.default_rng(RNG_SEED)
    demo = subsampling.PhotoDemo(
        errors={12: [0.2, 0.3, 0.2], 13: [1e-16, 1e-16, 1e-16]},
        maps={n: (rng.uniform(size=(n, n)), rng.uniform(size=(6, 6))) for n in (12, 13)})
    table = {(label, n): (n % 2 == 0) == (label == "RotMNIST CNN (one 2x2 max-pool)")
             for label in ("single layer", "RotMNIST CNN (one 2x2 max-pool)")
             for sizes in SUBSAMPLING_RANGES for n in sizes}
    return subsampling.plot_subsampling(demo, table, ranges=SUBSAMPLING_RANGES)


def zoo_cells():
    rows = []
    for name, exact_at in (("resnet18", 225), ("resnet50", 225), ("vgg11", 224),
                           ("vit_b_16", 224)):
        for size in (223, 224, 225, 256):
            verdict = ("n/a" if name.startswith("vit") and size != 224 else
                       "exact" if size == exact_at else "not exact")
            rows.append({"model": name, "family": zoo.family(name), "size": size,
                         "verdict": verdict, "layer": "", "note": "",
                         "grid_only": verdict == "exact" and name in ("vgg11", "vit_b_16")})
    rows[0]["verdict"] = "unknown"
    return pd.DataFrame(rows)


def _zoo():
    return zoo.plot_zoo(zoo_cells(), measured=True)


FIGURES = {"04_rotmnist": _rotmnist, "06_classification": _classification,
           "07_pcam_errors": _pcam, "08_imagenet": _imagenet, "01_subsampling": _subsampling,
           "09_zoo": _zoo}


def write_figures(out_dir, names=tuple(FIGURES)):
    """Every figure of ``names`` in the shared style, stamped, as PNG and PDF in ``out_dir``."""
    with plt.rc_context():
        plots.apply_style()
        for name in names:
            fig = FIGURES[name]()
            plots.stamp(fig, "smoke", "fake table")
            plots.save_figure(fig, out_dir, name)
            plt.close(fig)


def _same_bytes(a, b):
    files = sorted(p.name for p in Path(a).iterdir())
    assert files == sorted(p.name for p in Path(b).iterdir()) and files
    return [name for name in files
            if (Path(a) / name).read_bytes() != (Path(b) / name).read_bytes()]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_function_gives_the_same_bytes_twice(tmp_path, name):
    write_figures(tmp_path / "a", [name])
    write_figures(tmp_path / "b", [name])
    assert _same_bytes(tmp_path / "a", tmp_path / "b") == []


def test_figures_give_the_same_bytes_in_fresh_processes_with_other_hash_seeds(tmp_path):
    script = "import sys, test_plots; test_plots.write_figures(sys.argv[1])"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                              os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / seed)], env=env,
                       check=True, cwd=tmp_path)
    assert _same_bytes(tmp_path / "1", tmp_path / "2") == []
    assert len(list((tmp_path / "1").iterdir())) == 2 * len(FIGURES)


# ------------------------------------------------------------ what seaborn draws
def _error_bars(ax):
    """Lengths of seaborn's error bars on ``ax``: each is one line of a cap, the bar and a
    cap, separated by NaN."""
    return np.array([abs(line.get_ydata()[4] - line.get_ydata()[3]) for line in ax.lines
                     if len(line.get_xdata()) == 8 and np.isnan(line.get_xdata()[2])])


def test_rotmnist_bands_are_mean_plus_minus_one_std_over_seeds():
    fig = _rotmnist()
    ax = fig.axes[0]
    table = rotmnist_table()
    first = table[(table.regime == "none") & (table.model == "P4-28")]
    stats = 100 * first.groupby("angle").accuracy.agg(["mean", "std"])
    line = next(x for x in ax.lines if len(x.get_xdata()) == len(stats))  # P4-28, first
    assert np.allclose(line.get_xdata(), stats.index) and np.allclose(line.get_ydata(),
                                                                      stats["mean"])
    band = ax.collections[0].get_paths()[0].vertices  # fill_between: lower edge, then upper
    at_30 = band[np.isclose(band[:, 0], 30.0), 1]
    assert np.allclose(sorted(at_30), [stats["mean"][30] - stats["std"][30],
                                       stats["mean"][30] + stats["std"][30]])
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == \
        [s.description for s in ROTMNIST_SPECS] + ["distribution of training rotations"]
    assert legend.get_title().get_text() == "mean over 2 seed(s); bands: ±1 std over seeds"
    one = _rotmnist(seeds=1)
    assert not any(band.get_paths() for band in one.axes[0].collections)  # no std: no band
    assert one.legends[0].get_title().get_text() == "mean over 1 seed(s)"
    plt.close("all")


def test_classification_bars_are_the_summarys_std_and_open_markers_are_unseen():
    runs = classification_runs()
    summary = classification.summary_table(runs)
    fig = classification.plot_seen_unseen(summary, runs)
    ax = fig.axes[0]
    panel = summary[summary.augment == "none"]
    expected = [200 * panel[f"{metric}_std"] for metric in ("seen", "unseen")]
    assert np.allclose(sorted(_error_bars(ax)), sorted(np.concatenate(expected)))
    faces = {tuple(np.round(matplotlib.colors.to_rgba(line.get_markerfacecolor()), 3))
             for line in ax.lines if line.get_marker() == "o"}
    assert (1.0, 1.0, 1.0, 1.0) in faces  # unseen: open markers
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Z2", "P4", "P4 no pool"]
    assert fig.legends[0].get_title().get_text() == \
        "mean over 2 seed(s); bars: ±1 std over seeds, dots: runs"
    low = fig.axes[2]  # the drop panel under the first setting: a bar per model and size
    heights = [bar.get_height() for bars in low.containers for bar in bars]
    assert np.allclose(heights, 100 * (panel.seen_mean - panel.unseen_mean))
    invariant = panel.invariant.to_numpy()
    assert np.all(np.array(heights)[invariant] == 0) and np.all(np.array(heights)[~invariant] > 0)
    dots = np.concatenate([c.get_offsets()[:, 1] for c in low.collections])
    none = runs[runs.augment == "none"]
    assert np.allclose(sorted(dots), sorted(100 * none.seen - 100 * none.unseen))
    means_only = classification.plot_seen_unseen(summary)  # no runs: means, no bars
    assert fig.legends[0].get_title().get_text() != means_only.legends[0].get_title().get_text()
    plt.close("all")


def test_pcam_bars_are_the_mean_error_with_a_dot_per_seed():
    fig = _pcam()
    ax = fig.axes[0]
    errors = pcam_errors()
    means = errors.groupby(["model", "layer"], sort=False).error.mean()
    heights = [bar.get_height() for bars in ax.containers for bar in bars]
    expected = [means["P4-96", layer] for layer in pcam.ERROR_LAYERS] + \
        [means["P4-97", layer] for layer in pcam.ERROR_LAYERS]
    assert np.allclose(heights, expected)
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert np.allclose(sorted(dots), sorted(errors[errors.model != "Z2-96"].error))
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["P4-96 (approximate)",
                                                                  "P4-97 (exact)"]
    plt.close(fig)


def test_imagenet_bars_colours_hatches_and_std():
    fig = _imagenet()
    ax = fig.axes[0]
    table = imagenet_table()
    stats = 100 * table.groupby(["model", "angle"], sort=False).top1.agg(["mean", "std"])
    assert np.allclose([bar.get_height() for bar in ax.patches], stats["mean"])
    assert np.allclose(_error_bars(ax), 2 * stats["std"])
    colours = [matplotlib.colors.to_hex(c[0].get_facecolor()) for c in ax.containers]
    assert colours[2:] == [plots.INEXACT_COLOR, plots.EXACT_COLOR]
    assert [c[0].get_hatch() or "" for c in ax.containers] == ["//", "//", "", ""]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(IMAGENET_EXACT)
    plt.close(fig)


def test_heatmaps_of_exact_sizes_and_of_the_zoo():
    fig = _subsampling()
    table = fig.axes[4]
    assert [t.get_text() for t in table.get_yticklabels()] == ["single layer", "RotMNIST CNN"]
    bold = [t.get_text() for t in table.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["27", "28", "29"]
    mesh = table.collections[0].get_array()  # seaborn's heatmap: 1 exact, 0 not
    assert list(np.asarray(mesh).reshape(2, -1)[1]) == [1, 0, 1, 0, 1, 0]
    plt.close(fig)
    fig = _zoo()
    ax = fig.axes[0]
    codes = np.asarray(ax.collections[0].get_array()).reshape(4, 4)
    assert codes[0].tolist() == [3, 2, 0, 2]  # resnet18: unknown, not exact, exact, not exact
    assert codes[2].tolist() == [2, 1, 2, 2]  # vgg11: exact grids at 224, its head flattens
    assert [t.get_text() for t in ax.get_yticklabels()] == ["resnet18", "resnet50", "vgg11",
                                                            "vit_b_16"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [text.split(":")[0].split(" (")[0] for text in legend] == [
        "exact", "exact grids", "not exact", "unknown", "n/a"]
    assert "every exact cell measured" in ax.get_title()
    plt.close(fig)


# ------------------------------------------------------------ provenance sidecars
@pytest.fixture
def store(tmp_path, monkeypatch):
    """Three runs in a results store: two made here, one at another commit on another CPU,
    and a fourth config never run (unknown); nothing else seen in this process."""
    monkeypatch.setattr(results, "_seen", {})
    configs = [RunConfig.from_dict({"train": {"seed": seed}}) for seed in range(4)]
    here = collect("cpu")
    elsewhere = {**here, "commit": "1a2b3c4" + "0" * 33, "dirty": True, "cpu": "AMD EPYC"}
    for config, made in zip(configs[:3], [here, here, elsewhere], strict=False):
        results.save_result(config.to_dict(), {"acc": 0.5}, tmp_path / "results",
                            provenance=made)
    return configs, here, elsewhere


def _sidecar(out_dir, name):
    path = Path(out_dir) / f"{name}.provenance.json"
    text = path.read_text()
    content = json.loads(text)
    assert text == json.dumps(content, sort_keys=True, indent=1) + "\n"  # sorted, indented
    return content


def test_a_csv_has_a_sidecar_of_where_it_was_written(tmp_path):
    table = pd.DataFrame({"model": ["a", "b"], "accuracy": [0.5, 0.25]})
    plots.save_csv(table, tmp_path, "fig")
    assert (tmp_path / "fig.csv").read_text() == "model,accuracy\na,0.5\nb,0.25\n"
    content = _sidecar(tmp_path, "fig")
    assert set(content) == {"csv", "written"} and content["csv"] == "fig.csv"
    assert content["written"] == collect()


@pytest.mark.parametrize("given", ["configs", "dicts", "records"])
def test_the_sidecar_counts_the_runs_provenances(tmp_path, store, given):
    configs, here, elsewhere = store
    runs = {"configs": configs, "dicts": [c.to_dict() for c in configs],
            "records": [results.load_result(c.to_dict(), tmp_path / "results")
                        for c in configs[:3]] + [{"config": {}, "metrics": {}}]}[given]
    table = pd.DataFrame({"seed": [0, 1, 2, 3], "accuracy": [0.5, 0.5, 0.5, 0.5]})
    plots.save_csv(table, tmp_path / "out", "fig", runs=runs, timing={"wall_seconds": 12.5})
    csv = (tmp_path / "out" / "fig.csv").read_text()
    assert csv.splitlines()[0] == "seed,accuracy"  # the numbers only
    assert not any(word in csv for word in ("commit", "AMD", here["cpu"], "12.5"))
    content = _sidecar(tmp_path / "out", "fig")
    assert content["written"] == collect() and content["timing"] == {"wall_seconds": 12.5}
    assert content["runs"] == {"count": 4, "unknown": 1, "provenances": [
        {"count": 2, "provenance": here}, {"count": 1, "provenance": elsewhere},
        {"count": 1, "provenance": None}]}


@pytest.mark.parametrize("column", ["seconds", "train_seconds", "elapsed", "timing",
                                    "commit", "Wall_Time"])
def test_a_timing_or_provenance_column_is_refused(tmp_path, column):
    table = pd.DataFrame({"model": ["a"], column: [1.0]})
    with pytest.raises(ValueError, match=f"{column}.*timing="):
        plots.save_csv(table, tmp_path, "fig")
    assert not list(tmp_path.iterdir())


def test_zoo_models_table_keeps_its_seconds_out_of_the_csv(tmp_path):
    _, models = zoo.zoo_table(["resnet18", "vgg11"], [224, 225])
    assert "seconds" not in models.columns
    seconds = models.attrs["timing"]["seconds_per_model"]
    assert set(seconds) == {"resnet18", "vgg11"} and all(s > 0 for s in seconds.values())
    plots.save_csv(models, tmp_path, "09_model_zoo_models")
    header = (tmp_path / "09_model_zoo_models.csv").read_text().splitlines()[0]
    assert header == "model,family,built,nearest,note"
    assert _sidecar(tmp_path, "09_model_zoo_models")["timing"] == models.attrs["timing"]
