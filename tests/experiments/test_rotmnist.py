import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad

from equivlib.experiments import rotmnist
from equivlib.experiments.rotation import (
    ModelSpec,
    RegimeSpec,
    RunLog,
    accuracy_table,
    assert_exact_quarter_turns,
    format_summary,
    latex_table,
    per_run,
    quarter_turn_spread,
    summary_table,
    training_angle_density,
    welch_tests,
)
from equivlib.experiments.rotmnist import (
    experiment_configs,
    parse_models,
    parse_regimes,
    rotmnist_config,
    upright_confusions,
    upright_drops,
)

TRAINING = dict(epochs=2, batch_size=32, lr=0.01, weight_decay=1e-5, lr_step=10, dropout=0.0,
                sizes=[64, 32, 32], angle_step=90.0)


def test_parse_specs():
    models = parse_models("p4_mnist_cnn@28, p4_mnist_cnn@27,z2_mnist_cnn@28")
    assert [m.label for m in models] == ["P4-28", "P4-27", "Z2-28"]
    regimes = parse_regimes("none,biased:20,biased:40,uniform")
    assert [r.label for r in regimes] == ["none", "biased σ=20°", "biased σ=40°", "uniform"]


@pytest.mark.parametrize("text", ["p4_mnist_cnn", "p4_mnist_cnn@30", "resnet@28", "",
                                  "p4_mnist_cnn@28,p4_mnist_cnn@28", "p4_mnist_cnn@x"])
def test_bad_models(text):
    with pytest.raises(ValueError, match="model|empty|twice"):
        parse_models(text)


@pytest.mark.parametrize("text", ["biased", "biased:0", "biased:-5", "none:20", "sideways",
                                  "biased:abc", "uniform,uniform"])
def test_bad_regimes(text):
    with pytest.raises(ValueError, match="regime|twice"):
        parse_regimes(text)


@pytest.mark.parametrize("size, exact", [(28, True), (27, False), (29, False)])
def test_model_spec_exactness_follows_the_pooling(size, exact):
    spec = ModelSpec("p4_mnist_cnn", size)
    assert spec.exact is exact
    assert spec.description.endswith("(exact)" if exact else "(approximate)")
    assert ModelSpec("z2_mnist_cnn", size).exact is None


def test_experiment_configs_order_and_keys():
    models = parse_models("p4_mnist_cnn@28,z2_mnist_cnn@28")
    regimes = parse_regimes("none,biased:20")
    configs = experiment_configs(models, regimes, 3, **TRAINING)
    assert len(configs) == 12 and len({c.key() for c in configs}) == 12
    assert [c.train.seed for c in configs[:3]] == [0, 1, 2]
    assert configs[3].data.regime == "biased" and configs[3].data.sigma == 20.0
    assert configs[0].data.sigma == 0.0  # upright: sigma means nothing, one key
    assert configs[0].test.angles == [0.0, 90.0, 180.0, 270.0]
    assert configs[0].schedule.kwargs == {"step_size": 10, "gamma": 0.5}
    assert configs[0].schedule.name == "step" and configs[0].optim.name == "adam"
    assert configs[0].model.kwargs == {"dropout": 0.0}
    assert configs[0].train.select == "best_valid"
    again = experiment_configs(models, regimes, 3, **TRAINING)
    assert [c.key() for c in again] == [c.key() for c in configs]
    with pytest.raises(ValueError, match="angle_step"):
        experiment_configs(models, regimes, 1, **{**TRAINING, "angle_step": 7.0})
    with pytest.raises(ValueError, match="seeds"):
        experiment_configs(models, regimes, 0, **TRAINING)


def _fake(seeds=3, regimes="none"):
    models = parse_models("p4_mnist_cnn@28,p4_mnist_cnn@27")
    regimes = parse_regimes(regimes)
    configs = experiment_configs(models, regimes, seeds, **TRAINING)
    rng = np.random.default_rng(0)
    metrics = []
    for c in configs:
        size, seed = c.data.input_size, c.train.seed
        base = 0.9 if size == 28 else 0.8
        accs = {"0.0": base + 0.01 * seed, "90.0": base - 0.1 * (size != 28),
                "180.0": base + rng.normal(0, 0.01), "270.0": base}
        metrics.append({"test_acc": accs})
    return configs, metrics


def test_tables_and_welch_against_the_formula():
    table = accuracy_table(*_fake())
    assert len(table) == 2 * 3 * 4
    runs = per_run(table)
    assert len(runs) == 6
    summary = summary_table(table)
    row = summary[summary.model == "P4-28"].iloc[0]
    assert row.acc_0_mean == pytest.approx(0.91) and row.acc_0_std == pytest.approx(0.01)
    assert row.seeds == 3
    tests = welch_tests(table)
    assert set(tests.metric) == {"acc_0", "acc_mean"} and len(tests) == 2
    t = tests[tests.metric == "acc_mean"].iloc[0]
    a = runs[runs.model == "P4-28"].acc_mean.to_numpy()
    b = runs[runs.model == "P4-27"].acc_mean.to_numpy()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    assert t.t == pytest.approx((a.mean() - b.mean()) / np.sqrt(va + vb))
    assert 0 <= t.p < 0.05


def test_welch_with_one_seed_is_nan_not_an_error():
    tests = welch_tests(accuracy_table(*_fake(seeds=1)))
    assert tests.t.isna().all() and tests.p.isna().all()


def test_quarter_turn_spread():
    spread = quarter_turn_spread(accuracy_table(*_fake()))
    by_model = spread.set_index("model")
    assert by_model.loc["P4-27", "max_spread_points"] == pytest.approx(10, abs=3)
    assert by_model.loc["P4-28", "acc_90"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="270"):
        quarter_turn_spread(pd.DataFrame({"model": ["a"], "regime": ["none"], "seed": [0],
                                          "angle": [0.0], "accuracy": [1.0]}))


def _exact_quarter_turns(spread=0.0, regimes="none,uniform"):
    """``_fake``'s table with the exact P4-28 at 0.9 at every quarter turn, but ``spread``
    more at 270° in seed 1 of the last regime (P4-27 keeps its 10-point drop at 90°)."""
    table = accuracy_table(*_fake(regimes=regimes))
    exact = table.model == "P4-28"
    table.loc[exact, "accuracy"] = 0.9
    last = table.regime == table.regime.iloc[-1]
    table.loc[exact & last & (table.seed == 1) & (table.angle == 270.0), "accuracy"] += spread
    return table


MODELS = "p4_mnist_cnn@28,p4_mnist_cnn@27,z2_mnist_cnn@28"


@pytest.mark.parametrize("spread, regimes, expected", [
    (0.0, "none,uniform", "P4-28 (exact): the same accuracy at 0°, 90°, 180° and 270° in all 2 "
                          "regime(s), every seed"),
    (0.0005, "none", "P4-28 (exact): the same accuracy at 0°, 90°, 180° and 270° in all 1 "
                     "regime(s), every seed"),  # 0.05 points: within SAME_ACCURACY_POINTS
])
def test_assert_exact_quarter_turns_passes(spread, regimes, expected):
    table = _exact_quarter_turns(spread, regimes)
    assert assert_exact_quarter_turns(table, parse_models(MODELS)) == expected
    # only exact models are held to it: P4-27 differs by 10 points and Z2 is not judged
    assert assert_exact_quarter_turns(table, parse_models("p4_mnist_cnn@27")) == \
        "no exact model in the grid"


@pytest.mark.parametrize("spread, points", [(0.002, "0.20"), (-0.05, "5.00")])
def test_assert_exact_quarter_turns_refuses_an_exact_model_that_differs(spread, points):
    table = _exact_quarter_turns(spread)
    with pytest.raises(AssertionError, match=f"^P4-28 is exact but its quarter-turn "
                                             f"accuracies differ by {points} points$"):
        assert_exact_quarter_turns(table, parse_models(MODELS))


def test_assert_exact_quarter_turns_of_the_fake_runs():
    """``_fake``'s exact model is 0.01 better at 0° per seed: 2 points apart in seed 2."""
    with pytest.raises(AssertionError, match=r"P4-28 is exact but .* differ by 2\.\d\d points"):
        assert_exact_quarter_turns(accuracy_table(*_fake()), parse_models(MODELS))


@pytest.mark.parametrize("regime", [RegimeSpec("biased", 20.0), RegimeSpec("biased", 40.0),
                                    RegimeSpec("biased", 200.0), RegimeSpec("uniform")])
def test_training_angle_density_is_a_density(regime):
    total, _ = quad(lambda a: training_angle_density(regime, np.array([a]))[0], 0, 360,
                    limit=200)
    assert total == pytest.approx(1, abs=1e-3)
    if regime.regime == "biased" and regime.sigma < 100:
        d = training_angle_density(regime, np.array([45.0, 225.0, 45.0 + regime.sigma]))
        assert d[0] > d[2] > d[1]
    assert training_angle_density(RegimeSpec("none"), np.array([0.0])) is None


def test_latex_table():
    summary = summary_table(accuracy_table(*_fake()))
    tex = latex_table(summary, caption="cap")
    assert tex.count(r"\\") == 1 + len(summary)
    assert r"91.0 $\pm$ 1.0" in tex and "P4-27" in tex and r"\caption{cap}" in tex
    one_seed = latex_table(summary_table(accuracy_table(*_fake(seeds=1))))
    assert r"\pm" not in one_seed
    assert "°" not in tex and "σ" not in tex  # plain LaTeX, no unicode symbols


@pytest.mark.parametrize("regime, extra", [("none", []), ("biased:40", ["--sigma", "40"]),
                                           ("uniform", ["--sigma", "20"])])
def test_cli_and_notebook_configs_share_the_results_store_key(regime, extra):
    from equivlib.cli import build_parser
    from equivlib.cli.train import config_from_args
    spec = parse_regimes(regime)[0]
    (nb_config,) = experiment_configs(
        parse_models("p4_mnist_cnn@27"), [spec], 1, epochs=50, batch_size=256, lr=0.01,
        weight_decay=1e-5, lr_step=10, dropout=0.3, sizes=[8000, 2000, 10000],
        angle_step=10.0, source="torchvision")
    args = build_parser().parse_args(
        ["train", "--model", "p4_mnist_cnn", "--input-size", "27", "--regime", spec.regime, *extra,
         "--seed", "0", "--source", "torchvision", "--sizes", "8000", "2000", "10000"])
    assert config_from_args(args).key() == nb_config.key()


def test_upright_drops_compares_the_exact_model_with_the_approximate_ones():
    models = parse_models("p4_mnist_cnn@28,p4_mnist_cnn@27")
    table = pd.DataFrame([
        {"model": m, "regime": "none", "seed": 0, "angle": a, "accuracy": acc}
        for m, accs in (("P4-28", (0.9, 0.9)), ("P4-27", (0.95, 0.6)))
        for a, acc in zip((0.0, 180.0), accs, strict=True)])
    text = upright_drops(table, models)
    assert "drop   0.0 points" in text and "drop  35.0 points" in text
    assert text.endswith("every approximate model loses more than the exact one at 180° "
                         "(35.0 vs 0.0 points)")


def test_upright_confusions_counts_six_nine_swaps_of_upright_runs_with_checkpoints(
        monkeypatch, tmp_path):
    """Counting only (predict_test_set is tested on real runs in tests/engine): 6->9 and
    9->6 count, other errors do not; runs not trained upright or without a checkpoint are
    left out; the split is loaded once for the runs that share it."""
    configs = [rotmnist_config("p4_mnist_cnn", 28, seed=s, **{k: v for k, v in TRAINING.items()
                                                              if k != "angle_step"})
               for s in (0, 1, 2)]
    configs.append(rotmnist_config("p4_mnist_cnn", 28, regime="uniform", seed=0))
    configs.append(rotmnist_config("z2_mnist_cnn", 28, seed=0))
    targets = torch.tensor([6, 9, 6, 9, 1, 2, 3])
    outputs = {configs[0].key(): torch.tensor([9, 6, 6, 9, 7, 2, 3]),  # 2 swaps, 1 other
               configs[1].key(): torch.tensor([6, 6, 6, 9, 1, 2, 3]),  # 1 swap
               configs[4].key(): torch.tensor([6, 9, 5, 9, 1, 2, 3])}  # 6 read as 5
    for c in (configs[0], configs[1], configs[3], configs[4]):  # seed 2 has no checkpoint
        (tmp_path / c.key()).mkdir()
        (tmp_path / c.key() / "last.pt").write_bytes(b"")
    loads = []
    monkeypatch.setattr(rotmnist, "get_dataset", lambda *a, **kw: loads.append(kw) or "data")
    monkeypatch.setattr(rotmnist, "predict_test_set",
                        lambda c, d, data, device: (targets, outputs[d.name]))
    table = upright_confusions(configs, tmp_path)
    assert table.to_dict("list") == {
        "model": ["P4-28", "Z2-28"], "runs": [2, 1], "test_images": [14, 7],
        "errors": [4, 1], "6↔9": [3, 0], "6↔9 share of errors": [0.75, 0.0]}
    assert len(loads) == 2  # P4-28's seeds share a split; the Z2 run's sizes differ
    empty = upright_confusions(configs, tmp_path / "elsewhere")
    assert empty.empty and list(empty.columns)[-1] == "6↔9 share of errors"


def test_format_summary_and_run_log():
    summary = pd.DataFrame({"regime": ["none"] * 2, "model": ["P4-28", "Z2-28"],
                            "acc_0_mean": [0.9, 0.8], "acc_0_std": [0.01, float("nan")],
                            "acc_mean_mean": [0.7, 0.4], "acc_mean_std": [0.02, float("nan")],
                            "seeds": [2, 1]})
    shown = format_summary(summary)
    assert list(shown["acc at 0° (%)"]) == [" 90.0 ±  1.0", " 80.0"]
    log = RunLog(total=1)
    config = rotmnist_config("p4_mnist_cnn", 28)
    timing = {"train_images": 100, "train_seconds": 2.0, "test_images": 50, "test_seconds": 1.0}
    log(config.to_dict(), {"timing": timing, "test_acc": {"0.0": 0.5}}, False)
    assert log.summary(3.0, "results", 2, 1).startswith(
        "1 runs trained, 0 reused from results; wall time 3 s with 2 worker(s) x 1 thread(s)")
