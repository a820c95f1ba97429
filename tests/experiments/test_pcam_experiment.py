"""Notebook 07's experiment: the grid from its parameters, the trained models' exactness at
97 against 96 (paired), the error table and figure."""

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402

from equivlib.engine.run import run  # noqa: E402
from equivlib.experiments import pcam  # noqa: E402

PARAMS = dict(dataset="pcam_stand_in", models="z2,p4", sizes="96,97", seeds=2, depth=20,
              epochs=1, batch_size=8, lr=0.01, angle_step=90.0, error_images=8,
              stand_in_sizes="16,8,8")


def test_grid_from_parameters():
    configs = pcam.configs_from_params(PARAMS)
    assert len(configs) == 8
    assert {(c.model.name, c.data.input_size) for c in configs} == {
        (f"{g}_resnet20", s) for g in ("z2", "p4") for s in (96, 97)}
    c = configs[-1]
    assert c.model.kwargs["widths"] == [4, 7, 14] and c.optim.name == "sgd"
    assert c.test.error_layers == list(pcam.ERROR_LAYERS) and c.train.select == "best_valid"
    assert c.schedule.kwargs["milestones"] == [8, 16, 20, 24, 26, 28]
    paper = pcam.pcam_config("pcam", "z2", 96)
    assert paper.model.name == "z2_resnet44" and paper.model.kwargs["widths"] == [8, 14, 28]
    assert paper.data.options == {} and paper.optim.lr == 1e-3 and paper.train.epochs == 30


@pytest.mark.parametrize("key, value, message", [
    ("models", "z2,p4m", "unknown entries"), ("seeds", 0, "seeds must be"),
    ("dataset", "cifar10", "unknown PCam dataset"), ("angle_step", 7.0, "must divide 360"),
    ("depth", 18, "no PCam ResNet")])
def test_bad_parameters_raise(key, value, message):
    with pytest.raises(ValueError, match=message):
        pcam.configs_from_params({**PARAMS, key: value})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """P4 ResNet-20 at 96 and 97, one short epoch each on the stand-in."""
    configs = [c for c in pcam.configs_from_params({**PARAMS, "models": "p4", "seeds": 1})]
    root = tmp_path_factory.mktemp("pcam")
    return configs, [run(c, checkpoint_dir=root / c.key()) for c in configs]


@pytest.mark.parametrize("size, exact", [(97, True), (96, False)])
def test_trained_p4_is_exact_at_97_and_not_at_96(trained, size, exact):
    configs, metrics = trained
    m = next(m for c, m in zip(*trained, strict=True) if c.data.input_size == size)
    errors = m["equivariance_error"]
    assert set(errors) == set(pcam.ERROR_LAYERS)
    assert errors["stem"] < 1e-5  # stride 1: exact at both sizes
    if exact:
        assert max(errors.values()) < 1e-4
        assert len({m["test_acc"][a] for a in ("0.0", "90.0", "180.0", "270.0")}) == 1
    else:
        assert errors["stages.1"] > 1e-2 and errors["stages.2"] > 1e-2


def test_error_table_and_figure(trained):
    configs, metrics = trained
    errors = pcam.error_table(configs, metrics)
    assert set(errors.model) == {"P4-96", "P4-97"} and len(errors) == 8
    summary = pcam.error_summary(errors)
    assert list(summary.columns) == ["model", "layer", "mean", "max"]
    fig = pcam.plot_errors(errors, pcam.model_specs(configs))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["P4-96 (approximate)", "P4-97 (exact)"]


def test_tables_keep_network_and_angle_order_for_stored_results(trained):
    """A result read back from the store has its keys sorted as text ("100.0" before
    "20.0", "stages.0" before "stem"); the tables put them back in numeric / network order."""
    import json

    from equivlib.experiments.rotation import accuracy_table

    configs, metrics = trained
    stored = [json.loads(json.dumps(m, sort_keys=True)) for m in metrics]
    errors = pcam.error_table(configs, stored)
    assert list(errors.layer[:4]) == list(pcam.ERROR_LAYERS)
    angles = list(accuracy_table(configs, stored).angle[:4])
    assert angles == sorted(angles)


SPECS = [pcam.ModelSpec("p4_resnet20", 96), pcam.ModelSpec("p4_resnet20", 97),
         pcam.ModelSpec("z2_resnet20", 97)]


def _errors(table):
    """A long error table (two seeds) from ``{model: {layer: error}}``; seed 1 holds the
    given error, seed 0 a tenth of it (the verdict goes by the largest over seeds)."""
    import pandas as pd

    return pd.DataFrame([{"model": model, "seed": seed, "layer": layer,
                          "depth": pcam.DEPTH_LABELS[layer], "error": error / (10 - 9 * seed)}
                         for model, errors in table.items() for seed in (0, 1)
                         for layer, error in errors.items()])


GOOD = {"P4-96": {"stem": 1e-7, "stages.0": 5e-3, "stages.1": 0.05, "stages.2": 0.2},
        "P4-97": {"stem": 1e-7, "stages.0": 2e-6, "stages.1": 3e-6, "stages.2": 9e-5},
        "Z2-97": {"stem": 0.5, "stages.0": 0.6, "stages.1": 0.7, "stages.2": 0.8}}


@pytest.mark.parametrize("table, expected", [
    (GOOD, ["P4-96 (approximate): below 1e-04 at stem; above 1e-02 at stages.1, stages.2; "
            "between 1e-04 and 1e-02 at stages.0",
            "P4-97 (exact): below 1e-04 at stem, stages.0, stages.1, stages.2",
            "Z2-97 (not equivariant): above 1e-02 at stem, stages.0, stages.1, stages.2"]),
    # a model missing from the errors is left out; the bounds themselves count as between
    ({"P4-96": {"stem": 1e-4, "stages.0": 1e-2}},
     ["P4-96 (approximate): between 1e-04 and 1e-02 at stem, stages.0"]),
])
def test_error_verdicts(table, expected):
    text = pcam.error_verdicts(_errors(table), SPECS)
    assert text.splitlines() == expected


@pytest.mark.parametrize("layer, error, shown", [("stages.2", 1e-4, "0.0001"),
                                                 ("stem", 0.03, "0.03")])
def test_error_verdicts_refuse_an_exact_model_above_rounding(layer, error, shown):
    table = {**GOOD, "P4-97": {**GOOD["P4-97"], layer: error}}
    with pytest.raises(AssertionError, match=f"^P4-97 is exact but its error reaches {shown} "
                                             f"at {layer}$"):
        pcam.error_verdicts(_errors(table), SPECS)
    # the same errors for an approximate model are only reported
    as_approximate = pcam.error_verdicts(_errors({"P4-96": table["P4-97"]}), SPECS)
    assert as_approximate.startswith("P4-96 (approximate): below 1e-04 at ")
    assert ("between 1e-04 and 1e-02 at " if error <= 1e-2 else "above 1e-02 at ") + layer \
        in as_approximate


def test_error_verdicts_of_the_trained_models(trained):
    configs, metrics = trained
    lines = pcam.error_verdicts(pcam.error_table(configs, metrics),
                                pcam.model_specs(configs)).splitlines()
    assert lines[1] == "P4-97 (exact): below 1e-04 at stem, stages.0, stages.1, stages.2"
    assert lines[0].startswith("P4-96 (approximate): below 1e-04 at stem")
    above = lines[0].split("above 1e-02 at ")[1].split(";")[0].split(", ")
    assert {"stages.1", "stages.2"} <= set(above)  # what the paired test asserts of 96
