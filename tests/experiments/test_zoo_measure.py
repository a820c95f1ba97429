"""Every exact zoo cell is measured (notebook 09): symmetric weights, float64 logits under a
quarter turn. Each rule is tested in pairs confirmed by measurement: the symmetric case is
invariant to rounding, the asymmetric one (one pixel off, a shifted window, an unsymmetrised
embedding or head) changes visibly; and the verdict refuses every contradiction."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)
from torchvision.models.vision_transformer import VisionTransformer

from equivlib.experiments import zoo
from equivlib.experiments import zoo_measure as zm
from equivlib.experiments.symmetric_weights import d4_average, symmetric_kernel, symmetrize
from equivlib.tracer import trace

INVARIANT, VARIANT = zm.INVARIANT, zm.VARIANT


# ------------------------------------------------------------------ symmetric weights
@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (7, 7)])
def test_square_kernels_become_d4_invariant(shape):
    w = torch.randn(5, 2, *shape, dtype=torch.float64)
    s = symmetric_kernel(w)
    assert torch.allclose(torch.rot90(s, 1, (-2, -1)), s) and torch.allclose(s.flip(-1), s)
    assert not torch.allclose(w, s)


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 3), (3, 5)])
def test_non_square_kernels_keep_the_taps_whose_orbit_fits(shape):
    """A rotated copy of the kernel (embedded in a square) is the kernel itself; a 1xk
    kernel keeps only its centre tap, 3x5 its central 3x3 block's symmetric part."""
    w = torch.randn(2, 3, *shape, dtype=torch.float64)
    s = symmetric_kernel(w)
    side = max(shape)
    square = s.new_zeros(2, 3, side, side)
    top, left = (side - shape[0]) // 2, (side - shape[1]) // 2
    square[..., top:top + shape[0], left:left + shape[1]] = s
    assert torch.allclose(torch.rot90(square, 1, (-2, -1)), square)
    assert torch.allclose(square.flip(-1), square)
    centre = s[..., shape[0] // 2, shape[1] // 2]
    assert torch.allclose(centre, w[..., shape[0] // 2, shape[1] // 2])
    if min(shape) == 1:
        assert int((s != 0).sum(dim=(-2, -1)).max()) == 1


@pytest.mark.parametrize("shape, dilation, message", [
    ((2, 3), (1, 1), "centre is a tap on one axis"), ((3, 3), (1, 2), "swap the two dilations")])
def test_kernels_without_a_symmetric_form_are_refused(shape, dilation, message):
    with pytest.raises(ValueError, match=message):
        symmetric_kernel(torch.randn(1, 1, *shape), dilation)


def test_d4_average_needs_a_square_grid():
    with pytest.raises(ValueError, match="square grid"):
        d4_average(torch.randn(2, 3))


def _whole_d4_average(t: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    total = torch.zeros_like(t)  # the 8 copies summed over the whole tensor, in that order
    for k in range(4):
        total += torch.rot90(t, k, dims)
        total += torch.rot90(t, k, dims).flip(dims[1])
    return total / 8


@pytest.mark.parametrize("shape, dims", [
    ((50, 6, 7, 7), (-2, -1)),  # a flattening head's weights, viewed as 7x7 maps
    ((3, 5, 5, 9), (1, 2)),  # a positional embedding over a 5x5 grid
    ((13, 13, 4), (0, 1)),  # a bias table: its first dim is a grid dim, never sliced
])
def test_d4_average_in_slices_is_the_whole_average_bit_for_bit(monkeypatch, shape, dims):
    """Large tensors are averaged a slice of the first dim at a time: element by element the
    same sums in the same order, so the measured logits do not change in the last bit."""
    import equivlib.experiments.symmetric_weights as sw

    t = torch.randn(shape, dtype=torch.float64)
    monkeypatch.setattr(sw, "_CHUNK", 16)  # slices of a few elements: many of them
    assert torch.equal(d4_average(t, dims), _whole_d4_average(t, dims))
    assert not torch.equal(d4_average(t, dims), t)


@pytest.mark.parametrize("big, small", [
    ([("vit_h_14", 224)], [("resnet18", 512)]),  # 167 GMACs at 224 against 1.8 (x5.2)
    ([("convnext_large", 224)], [("convnext_tiny", 256)]),
    ([("regnet_y_128gf", 225)], [("vgg11", 224), ("vgg11", 256)]),
    ([("resnet18", 256)], [("resnet18", 224)]),
    ([("mine", 512)], [("mine", 256)]),  # no weights metadata: sizes alone
])
def test_the_costliest_models_are_measured_first(big, small):
    def tasks(pairs):
        return [zm.Task(m, n, "exact", False, zm.KERNELS) for m, n in pairs]

    assert zm._cost(tasks(big)) > zm._cost(tasks(small))


# ------------------------------------------------------------------ measured pairs
def _measure(model: nn.Module, size: int, positional: bool = False) -> float:
    symmetrize(model, positional=positional)
    change, sensitivity = zm.quarter_turn_change(model, size)
    assert sensitivity >= zm.MIN_SENSITIVITY
    return change


def _swin(window: int, v2: bool = False) -> nn.Module:
    torch.manual_seed(0)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if v2 else {}
    model = SwinTransformer([4, 4], 16, [2, 2], [2, 2], [window, window], num_classes=5,
                            **extra)
    return zm.prepare_for_measurement(model.double().eval())


@pytest.mark.parametrize("window, v2, size, exact", [
    (4, False, 32, True),   # shift 2 = w/2: windows mirror onto windows
    (5, False, 40, False),  # shift 2 of 5: they do not
    (7, False, 56, False),  # Swin v1's window 7, shift 3
    (8, True, 64, True),    # Swin v2's window 8, shift 4 (bias from an MLP, merge v2)
    (8, True, 68, False),   # the patch grid of 68 / 4 = 17 is odd: the merge breaks it
])
def test_shifted_windows_measured(window, v2, size, exact):
    model = _swin(window, v2)
    assert trace(model, size).exact is exact
    change = _measure(model, size)
    assert change < INVARIANT if exact else change > VARIANT


def test_a_vit_is_exact_on_its_grid_and_invariant_once_its_embedding_is_symmetric():
    torch.manual_seed(0)
    vit = zm.prepare_for_measurement(
        VisionTransformer(32, 8, 1, 2, 16, 32, num_classes=5).double().eval())
    assert not vit.heads.head.weight.eq(0).all()  # built as zeros: refilled
    assert trace(vit, 32).verdict == "EXACT (GRID ONLY)"
    assert _measure(vit, 32) > VARIANT
    assert _measure(vit, 32, positional=True) < INVARIANT


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return zm.build_float64("alexnet")  # 61 million weights: built once


@pytest.mark.parametrize("size, positional, invariant", [
    (223, False, False),  # exact grids, but the head flattens a 6x6 map
    (223, True, True),    # ... and is invariant once that head is symmetric
    (224, True, False),   # one pixel off: not invariant whatever the weights
])
def test_alexnet_flattening_head(alexnet, size, positional, invariant):
    change = _measure(copy.deepcopy(alexnet), size, positional)
    assert change < INVARIANT if invariant else change > VARIANT


@pytest.mark.parametrize("size, exact", [(225, True), (224, False)])
def test_resnet18_pair(size, exact):
    change = _measure(zm.build_float64("resnet18"), size)
    assert change < INVARIANT if exact else change > VARIANT


@pytest.mark.parametrize("size, exact", [(31, True), (32, False)])
def test_inception_style_one_by_seven_kernels(size, exact):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, (1, 7), padding=(0, 3)), nn.ReLU(),
                          nn.Conv2d(8, 8, (7, 1), padding=(3, 0)), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).double()
    assert trace(model, size).exact is exact
    change = _measure(zm.prepare_for_measurement(model), size)
    assert change < INVARIANT if exact else change > VARIANT


def test_logits_that_ignore_the_image_prove_nothing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[0].weight.mul_(1e-9)  # the output is the head's bias, whatever the image
        model[3].bias.fill_(1.0)
    change, sensitivity = zm.quarter_turn_change(model, 9)
    assert math.isnan(change) and sensitivity < zm.MIN_SENSITIVITY
    assert not math.isnan(zm.quarter_turn_change(zm.prepare_for_measurement(model), 9)[0])


# ------------------------------------------------------------------ plan and verdict
def _cells(*rows):
    return pd.DataFrame([dict(zip(("model", "size", "verdict", "grid_only"), r, strict=True))
                         for r in rows])


def test_plan_measures_every_exact_cell_and_grid_only_models_twice():
    cells = _cells(("resnet18", 224, "not exact", False), ("resnet18", 225, "exact", False),
                   ("vgg11", 224, "exact", True), ("vgg11", 256, "exact", True),
                   ("vit_b_16", 225, "n/a", False))
    tasks = zm.plan(cells, extra=cells[cells["size"] == 224])
    assert {(t.model, t.size, t.trace, t.weights) for t in tasks} == {
        ("resnet18", 225, "exact", zm.KERNELS), ("vgg11", 224, "exact", zm.POSITIONAL),
        ("vgg11", 256, "exact", zm.POSITIONAL), ("vgg11", 224, "exact", zm.KERNELS),
        ("resnet18", 224, "not exact", zm.POSITIONAL)}


def _check(*rows):
    return pd.DataFrame([dict(zip(zm.COLUMNS, (*r, 1.0), strict=True)) for r in rows],
                        columns=zm.COLUMNS)


AGREE = [("resnet18", 225, "exact", False, zm.KERNELS, 3e-16),
         ("vgg11", 224, "exact", True, zm.POSITIONAL, 2e-16),
         ("vgg11", 224, "exact", True, zm.KERNELS, 0.02),
         ("resnet18", 224, "not exact", False, zm.POSITIONAL, 0.01)]


def test_verdict_of_an_agreeing_table():
    assert zm.measured_verdict(_check(*AGREE)) == (
        "every exact cell measured: 2 of 2 invariant to float64 rounding (quarter-turn logit "
        "change below 1e-10 of another image's), 1 of them once the positional embedding or "
        "flattening head is symmetric too; without it 1 of 1 grid-only models change above "
        "1e-06; 1 of 1 cells one pixel off change above 1e-06")
    assert zm.measured_verdict(_check()) == "no model measured"


@pytest.mark.parametrize("row, message", [
    (("resnet18", 227, "exact", False, zm.KERNELS, 1e-10), "an exact cell is not invariant"),
    (("resnet18", 227, "exact", False, zm.KERNELS, float("nan")),
     "an exact cell is not invariant"),
    (("vgg11", 256, "exact", True, zm.POSITIONAL, 0.3), "an exact cell is not invariant"),
    (("vgg13", 224, "exact", True, zm.KERNELS, 1e-12), "a grid-only cell is invariant"),
    (("resnet18", 226, "not exact", False, zm.POSITIONAL, 1e-6), "a not-exact cell shows no"),
    (("resnet18", 226, "not exact", False, zm.POSITIONAL, float("nan")),
     "a not-exact cell shows no"),
])
def test_verdict_refuses_a_contradiction_and_shows_it(row, message):
    with pytest.raises(AssertionError, match=f"^{message}") as error:
        zm.measured_verdict(_check(*AGREE, row))
    shown = str(error.value).splitlines()
    assert len(shown) == 3 and shown[2].split()[1:3] == [row[0], str(row[1])]


def test_measure_a_small_table():
    cells = pd.DataFrame([{"model": "resnet18", "size": size,
                           **zoo.trace_cell(zoo.build_on_meta("resnet18"), size)}
                          for size in (224, 225)])
    check = zm.measure(zm.plan(cells, extra=cells))
    assert list(check.columns) == zm.COLUMNS and len(check) == 2
    assert list(check.attrs["timing"]["seconds_per_model"]) == ["resnet18"]
    assert zm.measured_verdict(check) == (
        "every exact cell measured: 1 of 1 invariant to float64 rounding (quarter-turn logit "
        "change below 1e-10 of another image's), 0 of them once the positional embedding or "
        "flattening head is symmetric too; without it 0 of 0 grid-only models change above "
        "1e-06; 1 of 1 cells one pixel off change above 1e-06")


@pytest.mark.parametrize("nearest, reference, picked", [
    (225, 224, 226),  # one pixel above the nearest exact size
    (None, 224, 224),  # no exact size: the reference size
])
def test_off_by_one_cells_are_one_pixel_above_the_nearest_exact_size(nearest, reference,
                                                                     picked):
    cells = pd.DataFrame({"model": ["a"] * 4 + ["b"], "size": [223, 224, 225, 226, 226],
                          "verdict": ["not exact"] * 5})
    per_model = pd.DataFrame({"model": ["a", "b"], "nearest": [nearest, 225]})
    chosen = zm.off_by_one_cells(cells, per_model, ["a"], reference)
    assert list(zip(chosen.model, chosen["size"], strict=True)) == [("a", picked)]


def test_change_by_kind_counts_each_kind_of_cell():
    check = pd.DataFrame({"trace": ["exact", "exact", "not exact"],
                          "grid_only": [False, False, True],
                          "weights": [zm.KERNELS, zm.KERNELS, zm.POSITIONAL],
                          "change": [1e-16, 3e-16, 1.4]})
    table = zm.change_by_kind(check)
    assert table.loc[f"exact / {zm.KERNELS}"].tolist() == [2, 1e-16, 3e-16]
    assert table.loc[f"not exact, grid only / {zm.POSITIONAL}", "count"] == 1
