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

    from equivlib.experiments.rotmnist import accuracy_table

    configs, metrics = trained
    stored = [json.loads(json.dumps(m, sort_keys=True)) for m in metrics]
    errors = pcam.error_table(configs, stored)
    assert list(errors.layer[:4]) == list(pcam.ERROR_LAYERS)
    angles = list(accuracy_table(configs, stored).angle[:4])
    assert angles == sorted(angles)
