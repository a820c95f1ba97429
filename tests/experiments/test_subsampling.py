import numpy as np
import pandas as pd
import pytest
import torch

from equivlib.exactness import is_exact
from equivlib.experiments import subsampling as exp

pytest.importorskip("skimage")

SMALL = {"single layer (3x3 s2)": "p4_single_layer", "RotMNIST CNN": "p4_mnist_cnn"}
RANGES = (range(26, 31), range(33, 35), range(40, 42))


@pytest.mark.parametrize("n", range(5, 14))
def test_sample_centres_are_symmetric_exactly_when_exact(n):
    c = exp.sample_centres(n)
    assert np.array_equal(c, np.sort(n - 1 - c)) == is_exact(n, 3, 2, 1)


def test_grid_report():
    lines = exp.grid_report((8, 9)).splitlines()
    assert lines[0].startswith("n=8: centres [0.0, 2.0, 4.0, 6.0]  after rotation [1.0, 3.0")
    assert lines[0].endswith("same grid: False  is_exact: False")
    assert lines[1].endswith("same grid: True  is_exact: True")


def test_symmetric_kernels_are_invariant_to_quarter_turns():
    k = exp.symmetric_kernels(5, seed=3)
    assert k.shape == (5, 1, 3, 3) and k.dtype == torch.float64
    assert torch.allclose(torch.rot90(k, 1, dims=(-2, -1)), k, atol=1e-15)
    assert torch.equal(k, exp.symmetric_kernels(5, seed=3))
    assert not torch.equal(k, exp.symmetric_kernels(5, seed=4))


@pytest.mark.parametrize("photo, sizes", [("camera", (16, 17)), ("astronaut", (21, 20))])
def test_photo_demo_is_exact_only_at_odd_sizes(photo, sizes):
    demo = exp.photo_demo(photo, sizes, num_kernels=4, seed=0)
    assert list(demo.errors) == list(sizes) == list(demo.maps)
    for n in sizes:
        if n % 2:
            assert max(demo.errors[n]) < 1e-12
        else:
            assert min(demo.errors[n]) > 1e-3
        image, error_map = demo.maps[n]
        assert image.shape == (n, n) and error_map.shape == ((n + 1) // 2,) * 2
    assert len(demo.rows) == 3 * len(sizes)
    assert {r["quantity"] for r in demo.rows} == {"rel_error_rot90", "rel_error_rot180",
                                                  "rel_error_rot270"}
    shown = str(demo).splitlines()
    assert shown[0].split() == ["size", "is_exact", "err", "90°", "err", "180°", "err", "270°"]
    assert [line.split()[1] for line in shown[1:]] == [str(n % 2 == 1) for n in sizes]


def test_exact_sizes_come_from_the_traced_models():
    table = exp.exact_sizes(SMALL, RANGES)
    sizes = [n for r in RANGES for n in r]
    assert list(table) == [(label, n) for label in SMALL for n in sizes]
    for n in sizes:  # the single layer is exact at odd sizes, the max-pool CNN at even ones
        assert table["single layer (3x3 s2)", n] == (n % 2 == 1) == is_exact(n, 3, 2, 1)
        assert table["RotMNIST CNN", n] == (n % 2 == 0)
    rows = exp.exact_size_rows(table)
    assert len(rows) == len(table) and {r["value"] for r in rows} == {0, 1}
    text = exp.format_exact_sizes(table, RANGES).splitlines()
    assert text[:4] == ["single layer (3x3 s2)", "  26-30: exact at [27, 29]",
                        "  33-34: exact at [33]", "  40-41: exact at [41]"]
    assert text[5] == "  26-30: exact at [26, 28, 30]"


def test_the_default_table_matches_the_paper():
    table = exp.exact_sizes({"RotMNIST CNN (one 2x2 max-pool)": "p4_mnist_cnn"},
                            (range(27, 30),))
    assert [n for (_, n), exact in table.items() if exact] == [28]


@pytest.mark.parametrize("n, expected", [
    (27, "approximate (breaks at body.8, GroupMaxPool2d 2x2 stride 2, at size 27)"),
    (28, "subsampling layers see 28: EXACT"),
])
def test_verdict_names_the_breaking_layer(n, expected):
    line = exp.verdict("RotMNIST CNN (one 2x2 max-pool)", n)
    assert line.startswith("RotMNIST CNN (one 2x2 max-pool)") and f"n={n}" in line
    assert line.endswith(expected)


def test_figure_table_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    demo = exp.photo_demo("camera", (12, 13), num_kernels=2, seed=0)
    table = exp.exact_sizes(SMALL, RANGES)
    csv = exp.figure_table(demo, table)
    assert isinstance(csv, pd.DataFrame)
    assert list(csv.columns) == ["section", "model", "input_size", "quantity", "value"]
    assert list(csv.section.unique()) == ["photo_demo", "exact_sizes"]
    assert len(csv) == 6 + len(table)
    fig = exp.plot_subsampling(demo, table, ranges=RANGES)
    assert len(fig.axes) == 2 + 2 + 3  # sampling grids, error maps, size tables
    assert fig.axes[2].get_title().startswith("|Φ(Rx) − RΦ(x)| at 12×12")
    assert [len(ax.child_axes) for ax in fig.axes[2:4]] == [1, 1]  # the photo insets
    assert [t.get_text() for t in fig.axes[4].get_yticklabels()] == ["single layer", "RotMNIST CNN"]
    import matplotlib.pyplot as plt

    plt.close(fig)


LINE_INEXACT = "is_exact False; error at 90°, 180°, 270° above 0.01: not exact"
LINE_EXACT = "is_exact True;  error at 90°, 180°, 270° below 1e-12 (float64 rounding): exact"


@pytest.mark.parametrize("errors, expected", [
    ({16: [0.3, 0.2, 0.3], 17: [1e-17, 0.0, 2e-17]},
     [f"n=16: {LINE_INEXACT}", f"n=17: {LINE_EXACT}"]),
    ({21: [0.0] * 3, 20: [0.5] * 3}, [f"n=21: {LINE_EXACT}", f"n=20: {LINE_INEXACT}"]),
    ({}, []),
])
def test_demo_verdicts_of_a_hand_built_demo(errors, expected):
    text = exp.demo_verdicts(exp.PhotoDemo(errors=errors))
    assert text.splitlines() == expected
    assert str(0.3) not in text and "e-17" not in text  # bounds only, never the numbers


@pytest.mark.parametrize("errors", [
    {16: [0.0, 0.0, 0.0]},  # inexact size with no error
    {17: [1e-17, 0.3, 1e-17]},  # exact size with a real error
])
def test_demo_verdicts_refuse_errors_that_contradict_the_condition(errors):
    with pytest.raises(AssertionError, match="disagree with is_exact"):
        exp.demo_verdicts(exp.PhotoDemo(errors=errors))


def test_demo_verdicts_of_the_photo_demo_and_its_inexact_bound():
    demo = exp.photo_demo("camera", (16, 17), num_kernels=2, seed=0)
    assert min(demo.errors[16]) > exp.DEMO_INEXACT  # the new check's passing side
    assert max(demo.errors[17]) < exp.DEMO_EXACT
    assert exp.demo_verdicts(demo).splitlines() == [f"n=16: {LINE_INEXACT}",
                                                    f"n=17: {LINE_EXACT}"]


@pytest.mark.parametrize("bound, value, message", [
    # an inexact size whose error stays at or below the bound: the new check
    ("DEMO_INEXACT", 10.0, r"^n=16: inexact, yet a quarter turn changes the output by only "
                           r"\d\.\de[+-]\d+ \(expected > 10\)$"),
    # every error counted as rounding: the measurement contradicts is_exact(16)
    ("DEMO_EXACT", 1e3, r"^n=16: the measurement \(\d\.\de[+-]\d+\) disagrees with the "
                        r"exactness condition$"),
])
def test_photo_demo_refuses_a_measurement_against_its_bounds(monkeypatch, bound, value,
                                                             message):
    monkeypatch.setattr(exp, bound, value)
    with pytest.raises(AssertionError, match=message):
        exp.photo_demo("camera", (16, 17), num_kernels=2, seed=0)


def test_photo_demo_checks_the_inexact_bound_with_the_smallest_error(monkeypatch):
    """The bound sits between the smallest and the largest error of the inexact size: the
    check must fail (it asks every quarter turn to exceed it, not just one)."""
    errors = exp.photo_demo("camera", (16,), num_kernels=2, seed=0).errors[16]
    assert min(errors) < max(errors)
    monkeypatch.setattr(exp, "DEMO_INEXACT", (min(errors) + max(errors)) / 2)
    with pytest.raises(AssertionError, match="n=16: inexact, yet a quarter turn"):
        exp.photo_demo("camera", (16,), num_kernels=2, seed=0)
