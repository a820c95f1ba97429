import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from equivlib.experiments import unequivariance as exp
from equivlib.groups import P4

pytest.importorskip("skimage")


@pytest.mark.parametrize("sizes, ok", [((32, 33), True), ((10, 9), True), ((33, 32), False),
                                       ((32, 34), False), ((31, 33), False)])
def test_check_sizes(sizes, ok):
    if ok:
        assert exp.check_sizes(*sizes) == sizes
    else:
        with pytest.raises(ValueError, match="inexact_size must be even"):
            exp.check_sizes(*sizes)


def test_batches_are_an_image_and_its_rotation():
    batches = exp.make_batches((12, 13))
    for n, batch in batches.items():
        assert batch.shape == (2, 1, n, n) and batch.dtype == torch.float64
        assert torch.equal(batch[1:], P4.act_on_image(exp.ROT, batch[:1]))
        assert abs(batch[0].mean().item()) < 1e-12
        assert batch[0].numpy().std() == pytest.approx(1.0)
    assert exp.describe_batches(batches).splitlines() == [
        "n=12: batch (2, 1, 12, 12), image != its rotation: True",
        "n=13: batch (2, 1, 13, 13), image != its rotation: True"]
    # horse bright (1) on a dark background (0) before standardising
    assert exp.silhouette()[0, 0] == 0.0 and exp.silhouette().max() == 1.0


@pytest.mark.parametrize("logits, expected", [
    ([[2.0, 0.0], [0.0, 2.0]], 1.0),  # both right
    ([[0.0, 2.0], [0.0, 2.0]], 0.5),  # one right
    ([[0.0, 2.0], [2.0, 0.0]], 0.0),  # both wrong
    ([[1.0, 1.0], [1.0, 1.0 + 1e-12]], 0.5),  # ties count half
])
def test_accuracy(logits, expected):
    assert exp.accuracy(torch.tensor(logits, dtype=torch.float64)) == expected


@pytest.fixture(scope="module")
def run():
    torch.set_num_threads(1)
    return exp.train_sizes(exp.make_batches((16, 17)), steps=30, lr=0.1, seed=0)


def test_train_records_every_step(run):
    assert run.sizes == [16, 17]
    assert list(run.curves.columns) == ["step", "size", "loss", "accuracy"]
    assert len(run.curves) == len(run.gaps) == 2 * 31
    assert list(run.curve(16).step) == list(range(31))
    assert all(not m.training for m in run.models.values())
    assert not torch.equal(run.models[16].lift.weight, run.models[17].lift.weight)


def test_the_same_seed_gives_the_same_initial_filter_at_every_size(run):
    # one Adam step of 1e-300 leaves float64 weights as they were initialised
    initial = [exp.train(run.batches[n], 1, 1e-300, 0)[0].lift.weight for n in run.sizes]
    assert torch.equal(*initial)
    assert not torch.equal(initial[0], exp.train(run.batches[16], 1, 1e-300, 1)[0].lift.weight)


def test_the_exact_network_never_tells_the_two_images_apart(run):
    exact = run.curve(17)
    assert (exact.accuracy == 0.5).all()
    assert run.gaps[exact.index].max() < exp.TIE
    assert exact.loss.min() >= exp.CHANCE_LOSS - 1e-12
    assert run.gaps[run.curve(16).index].max() > 1e-3  # the inexact one does


def test_training_summary(run):
    lines = exp.training_summary(run).splitlines()
    assert lines[0].split() == ["size", "exact", "initial", "loss", "final", "loss", "min",
                                "loss", "final", "acc"]
    assert lines[1].split()[:2] == ["16", "False"] and lines[2].split()[:2] == ["17", "True"]
    assert lines[2].endswith("50.0%")


def _fake_run(exact_accuracy=0.5, inexact_loss=1e-3, exact_gap=0.0, inexact_accuracy=1.0,
              exact_loss=exp.CHANCE_LOSS):
    rows = [dict(step=s, size=n, loss=loss, accuracy=acc)
            for n, loss, acc in ((32, inexact_loss, inexact_accuracy),
                                 (33, exact_loss, exact_accuracy))
            for s in range(3)]
    gaps = pd.Series([5.0] * 3 + [exact_gap] * 3)
    return exp.Training({32: None, 33: None}, {}, pd.DataFrame(rows), gaps)


CLAIM = [
    "inexact (32): final accuracy 100.0%, final loss below 0.01",
    "exact   (33): accuracy 50.0% at all 3 steps, loss never below ln 2 = 0.6931",
    "largest |logits(x) - logits(T x)| over training: 32: above 1e-09 (told apart), "
    "33: below 1e-09 (float rounding)"]


@pytest.mark.parametrize("kwargs, message", [
    ({}, None),
    ({"inexact_loss": 0.0099, "exact_gap": 9e-10, "exact_loss": math.log(2) - 1e-13}, None),
    ({"exact_accuracy": 1.0}, "beat chance"),
    ({"exact_accuracy": 0.0}, "beat chance"),
    ({"inexact_loss": 0.5}, "final loss 0.5"),
    ({"inexact_loss": 0.01}, "final loss 0.01"),
    ({"inexact_accuracy": 0.5}, "did not learn the task"),
    ({"exact_gap": 1e-3}, "told x and T x apart"),
    ({"exact_gap": 1e-9}, "told x and T x apart"),
    ({"exact_loss": 0.5}, "loss fell below ln 2"),
])
def test_assert_claim_c4(kwargs, message):
    run = _fake_run(**kwargs)
    if message is None:
        text = exp.assert_claim_c4(run, 32, 33)
        assert text.splitlines() == CLAIM  # thresholds only: the same text on any machine
        assert "5.0" not in text and "1.0e-03" not in text
    else:
        with pytest.raises(AssertionError, match=message):
            exp.assert_claim_c4(run, 32, 33)


def test_invariance_report_and_pooled_features(run):
    text = exp.invariance_report(run)
    assert "(trained at 16) at input 16x16: NOT EXACT" in text
    assert "(trained at 17) at input 17x17: EXACT" in text
    blocks = text.split("\n\n")
    assert len(blocks) == 2 and "(trained at 16)" in blocks[0] and "(trained at 17)" in blocks[1]
    assert blocks[0].endswith(
        "invariance error of the logits: r: > 1e-12, r2: > 1e-12, r3: > 1e-12")
    assert blocks[1].endswith(
        "invariance error of the logits: r: < 1e-12, r2: < 1e-12, r3: < 1e-12\n")
    numbers = exp.invariance_report(run, numbers=True).split("\n\n")
    assert re.search(r"invariance error of the logits: r: \d\.\de[+-]\d\d, "
                     r"r2: \d\.\de[+-]\d\d, r3: \d\.\de[+-]\d\d$", numbers[0])
    assert numbers[1] == blocks[1]  # below the bound: no number to show
    pooled, maps = exp.pooled_features(run)
    assert list(pooled.columns) == ["size", "orientation", "f_x", "f_back"] and len(pooled) == 8
    exact = pooled[pooled["size"] == 17]
    np.testing.assert_allclose(exact.f_x, exact.f_back, atol=1e-12)
    f_x, back = maps[17]
    assert f_x.shape == (4, 9, 9)
    np.testing.assert_allclose(f_x, back, atol=1e-12)
    assert not np.allclose(*maps[16])
    shown = exp.format_pooled(pooled, run)
    assert shown.startswith("global average of each orientation") and "filter at 17:" in shown


@pytest.mark.parametrize("numbers, expected", [
    (False, "r: < 1e-12, r2: < 1e-12, r3: > 1e-12"),
    (True, "r: < 1e-12, r2: < 1e-12, r3: 2.5e-01"),
])
def test_invariance_report_against_its_bound(run, monkeypatch, numbers, expected):
    """Measured errors on either side of 1e-12 (the bound itself counts as below)."""
    import equivlib.checks

    monkeypatch.setattr(equivlib.checks, "equivariance_error", lambda *args, **kwargs:
                        torch.tensor([5e-13, 1e-12, 0.25], dtype=torch.float64))
    text = exp.invariance_report(run, numbers=numbers)
    assert text.count(f"invariance error of the logits: {expected}\n") == 2


def test_plot_figure(run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled, maps = exp.pooled_features(run)
    fig = exp.plot_figure(run, pooled, maps, 16, 17)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert "training loss" in titles and "learned filter (17×17)" in titles
    plt.close(fig)


@pytest.mark.parametrize("steps, lr", [(0, 0.1), (True, 0.1), (5, float("nan")), (5, -1.0)])
def test_train_refuses_settings_that_cannot_train(steps, lr):
    with pytest.raises(ValueError, match="steps|lr"):
        exp.train(exp.make_batches((8,))[8], steps, lr, 0)
