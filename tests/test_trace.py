"""tracer.trace on plain torch networks: its verdict agrees with the measured equivariance.

Convolutions get D4-symmetric filters (invariant under 90° rotations and flips), so a plain
CNN is exactly equivariant precisely when every subsampling grid is symmetric: the paired
cases below check that the traced verdict and a float64 measurement agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from equivlib.exactness import is_exact
from equivlib.tracer import exact_input_sizes, nearest_exact_size, trace

TIGHT = 1e-12  # float64 rounding
LOOSE = 1e-3  # an inexact layer errs by far more


def symmetrise_(model: nn.Module) -> nn.Module:
    """Make every conv filter invariant under the 8 symmetries of the square."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                ws = [torch.rot90(w, r, (-2, -1)) for r in range(4)]
                ws += [torch.flip(v, (-1,)) for v in ws]
                w.copy_(sum(ws) / 8)
    return model


def max_error(model: nn.Module, n: int, channels: int = 2) -> float:
    """Largest relative error ||f(g x) - g f(x)|| / ||f(x)|| over rotations and a flip."""
    torch.manual_seed(0)
    x = torch.randn(2, channels, n, n, dtype=torch.float64)
    y = model(x)
    worst = 0.0
    for g in (lambda t: torch.rot90(t, 1, (-2, -1)), lambda t: torch.rot90(t, 2, (-2, -1)),
              lambda t: torch.flip(t, (-1,))):
        y_g = model(g(x))
        target = g(y) if y.dim() == 4 else y
        worst = max(worst, ((y_g - target).norm() / y.norm()).item())
    return worst


def plain_cnn(layers: list[nn.Module], channels: int = 2) -> nn.Module:
    model = nn.Sequential(*layers).double().eval()
    return symmetrise_(model)


STACKS = {
    "conv3_s2_p1": lambda: [nn.Conv2d(2, 2, 3, 2, 1)],
    "conv2_s2_p0": lambda: [nn.Conv2d(2, 2, 2, 2, 0)],
    "conv5_s3_p2": lambda: [nn.Conv2d(2, 2, 5, 3, 2)],
    "maxpool2": lambda: [nn.MaxPool2d(2)],
    "avgpool3_s2": lambda: [nn.AvgPool2d(3, 2, 1)],
    "two_stride2": lambda: [nn.Conv2d(2, 2, 3, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 3, 2, 1)],
    "conv_then_pool": lambda: [nn.Conv2d(2, 2, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2)],
    "three_layers": lambda: [nn.Conv2d(2, 3, 3, 1, 1), nn.Conv2d(3, 3, 1, 2, 0), nn.ReLU(),
                             nn.AvgPool2d(2), nn.Conv2d(3, 2, 3, 2, 1)],
}


@pytest.mark.parametrize("n", range(9, 20))
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_trace_verdict_agrees_with_measurement(stack, n):
    model = plain_cnn(STACKS[stack]())
    report = trace(model, n, in_channels=2)
    assert report.exact is not None
    error = max_error(model, n)
    if report.exact:
        assert error <= TIGHT, f"trace says exact at {n}, measured {error:.2e}\n{report}"
    else:
        assert error >= LOOSE, f"trace says not exact at {n}, measured {error:.2e}\n{report}"


def test_stacks_cover_both_verdicts():
    verdicts = {trace(plain_cnn(STACKS[s]()), n, in_channels=2).exact
                for s in STACKS for n in range(9, 20)}
    assert verdicts == {True, False}


def test_condition_is_checked_at_each_layers_own_input_size():
    """15 is fine for the first stride-2 layer (15 -> 8) but 8 breaks the second one."""
    model = plain_cnn(STACKS["two_stride2"]())
    report = trace(model, 15)
    assert [row.exact for row in report.rows] == [True, False]
    assert [row.input_size for row in report.rows] == [(15, 15), (8, 8)]
    assert is_exact(15, 3, 2, 1) and not is_exact(8, 3, 2, 1)
    assert report.breaking()[0].module == "2"


@pytest.mark.parametrize("n, expected", [(224, False), (225, True), (223, False), (227, False)])
def test_torchvision_resnet18(n, expected):
    """7x7/2 stem, 3x3/2 max-pool, four stages: 225 -> 113 -> 57 -> 29 -> 15 -> 8 is exact."""
    model = torchvision.models.resnet18()
    report = trace(model, n)
    assert report.exact is expected
    names = [row.module for row in report.rows]
    assert names[:2] == ["conv1", "maxpool"]
    assert "layer2.0.downsample.0" in names
    assert all(row.subsampling for row in report.rows)
    if not expected:
        assert report.breaking()[0].module == ("conv1" if n == 224 else "maxpool")


def test_torchvision_resnet18_measured_at_the_traced_sizes():
    """The verdict is what a float64 measurement finds with symmetric filters."""
    model = symmetrise_(torchvision.models.resnet18(num_classes=4).double()).eval()
    for n, exact in ((65, True), (64, False)):  # 65 -> 33 -> 17 -> 9 -> 5 -> 3
        assert trace(model, n).exact is exact
        x = torch.randn(2, 3, n, n, dtype=torch.float64)
        err = ((model(torch.rot90(x, 1, (-2, -1))) - model(x)).norm() / model(x).norm()).item()
        assert (err <= TIGHT) if exact else (err >= LOOSE)


class FunctionalNet(nn.Module):
    """Uses functional calls only: the tracer must still see them."""

    def __init__(self, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.pad = pad

    def forward(self, x):
        x = F.pad(x, self.pad)
        x = F.conv2d(x, self.conv.weight, stride=2)
        return F.max_pool2d(x, 2)


def test_functional_calls_are_traced_and_asymmetric_padding_breaks_exactness():
    symmetric = trace(FunctionalNet((1, 1, 1, 1)), 17)
    assert [row.op for row in symmetric.rows] == ["conv2d", "max_pool2d"]
    assert symmetric.rows[0].input_size == (19, 19)  # after the symmetric pad
    asymmetric = trace(FunctionalNet((0, 1, 0, 1)), 17, in_channels=2)
    assert asymmetric.rows[0].op == "pad" and asymmetric.rows[0].exact is False
    assert asymmetric.exact is False
    assert nearest_exact_size(FunctionalNet((0, 1, 0, 1)), 17, max_distance=8) is None


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel, exact", [(3, True), (2, False), (4, False), (5, True)])
def test_string_padding_same(kernel, exact):
    """'same' pads k-1 in total: symmetric for odd kernels, one extra on the right for even."""
    model = plain_cnn([nn.Conv2d(2, 2, kernel, padding="same")])
    report = trace(model, 12)
    assert report.exact is exact
    assert (max_error(model, 12) <= TIGHT) is exact


def test_unjudged_resampling_is_unknown_never_exact():
    """A resampling op without a rule (random fractional pooling) is never exact.
    Interpolation is judged (tests/test_trace_ops.py)."""
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.FractionalMaxPool2d(2, (5, 5)))
    report = trace(model, 16)
    assert report.exact is None and report.verdict == "UNKNOWN"
    assert report.rows[0].op == "fractional_max_pool2d"
    assert report.rows[0].note == "fractional_max_pool2d at 1 not judged"
    assert exact_input_sizes(model, range(8, 12)) == []


@pytest.mark.parametrize("n", [27, 28])
def test_ceil_mode_pooling(n):
    model = plain_cnn([nn.MaxPool2d(2, ceil_mode=True)])
    report = trace(model, n, in_channels=2)
    assert report.exact is (n == 28)
    assert (max_error(model, n) <= TIGHT) is (n == 28)


@pytest.mark.parametrize("n, out", [(7, 3), (10, 4), (9, 2)])
def test_adaptive_pooling_windows_are_always_symmetric(n, out):
    model = plain_cnn([nn.AdaptiveAvgPool2d(out)])
    assert trace(model, n, in_channels=2).exact is True
    assert max_error(model, n) <= TIGHT


def test_mode_and_hooks_are_restored():
    model = torchvision.models.resnet18().train()
    trace(model, 64)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_exact_sizes_and_nearest():
    model = plain_cnn(STACKS["two_stride2"]())
    assert exact_input_sizes(model, range(9, 20)) == [9, 13, 17]
    assert nearest_exact_size(model, 16) == 17
    assert nearest_exact_size(model, 15) == 17  # tie between 13 and 17 goes up
    assert nearest_exact_size(model, 14) == 13
    assert nearest_exact_size(model, 16, direction="down") == 13


def test_report_prints_a_table():
    text = str(trace(torchvision.models.resnet18(), 224, name="resnet18"))
    assert text.splitlines()[0] == "resnet18 at input 224x224: NOT EXACT"
    assert "conv1" in text and "NO" in text


def test_clear_errors():
    with pytest.raises(ValueError, match="in_channels"):
        trace(nn.Sequential(nn.ReLU()), 8)
    with pytest.raises(ValueError, match="cannot run on input"):
        trace(nn.Sequential(nn.Conv2d(2, 2, 5)), 3)
    with pytest.raises(ValueError, match="positive"):
        trace(nn.Conv2d(1, 1, 3), 0)
    with pytest.raises(ValueError, match="direction"):
        nearest_exact_size(nn.Conv2d(1, 1, 3), 8, direction="sideways")


class DataDependent(nn.Module):
    """Control flow on values: cannot run on the meta device, so trace runs it for real."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)

    def forward(self, x):
        if x.sum() >= 0:
            x = self.conv(x)
        return x


@pytest.mark.parametrize("n, exact", [(9, True), (10, False)])
def test_models_that_cannot_run_on_meta_are_traced_for_real(n, exact):
    report = trace(DataDependent(), n)
    assert report.exact is exact and report.rows[0].module == "conv"


def test_a_network_that_starts_with_a_group_conv_gets_a_group_map():
    from equivlib.layers import GroupConv2d

    class MyGroupConv(GroupConv2d):
        pass

    report = trace(nn.Sequential(MyGroupConv("p4m", 2, 2, 3, stride=2, padding=1)), 9)
    assert report.exact is True and report.rows[0].input_size == (9, 9)
    assert trace(nn.Sequential(MyGroupConv("p4m", 2, 2, 3, stride=2, padding=1)), 8).exact is False


def _meta(name: str) -> nn.Module:
    from equivlib.experiments.zoo import build_on_meta

    return build_on_meta(name)


@pytest.mark.parametrize("name, size", [
    ("resnet18", 224), ("resnet18", 225), ("densenet121", 222), ("swin_t", 224),
    ("swin_v2_t", 224), ("swin_v2_t", 256), ("vit_b_16", 224), ("alexnet", 223),
])
def test_stopping_early_keeps_the_verdict_and_the_first_breaking_layer(name, size):
    """stop="broken" (the zoo's cells) reports the rows up to the first breaking one: the same
    verdict and culprit as the full trace; stop="unproven" (the nearest-size search) ends at
    the first row that is not exact, and is exact exactly where the full trace is."""
    model = _meta(name)
    full = trace(model, size)
    broken, unproven = trace(model, size, stop="broken"), trace(model, size, stop="unproven")
    assert broken.exact is full.exact and (unproven.exact is True) is (full.exact is True)
    if full.exact is False:
        first = full.breaking()[0]
        assert broken.breaking() == [first] and broken.rows == full.rows[:len(broken.rows)]
        assert len(broken.rows) < len(full.rows) or full.rows[-1] == first
    else:
        assert broken.rows == full.rows
    assert unproven.rows == full.rows[:len(unproven.rows)]
    if full.exact is True:
        assert unproven.rows == full.rows
    else:  # it ends at the first row that is not exact
        assert [r.exact is True for r in unproven.rows] == [True] * (len(unproven.rows) - 1) \
            + [False]


@pytest.mark.parametrize("size", [220, 226])
def test_a_size_refused_after_a_breaking_layer_is_still_refused(size):
    """MaxViT's stem breaks at even sizes and its window partition then refuses them: the
    cells stay n/a (the forward pass runs to its end), the search just moves on."""
    model = _meta("maxvit_t")
    with pytest.raises(ValueError, match="refuses input") as full:
        trace(model, size)
    with pytest.raises(ValueError, match="refuses input") as broken:
        trace(model, size, stop="broken")
    assert str(broken.value) == str(full.value)
    assert trace(model, size, stop="unproven").exact is False
    with pytest.raises(ValueError, match="stop"):
        trace(model, size, stop="early")


@pytest.mark.parametrize("n", [0, -5, 28.0, True])
def test_nearest_exact_size_refuses_what_trace_refuses(n):
    from equivlib.models import get_model

    with pytest.raises(ValueError, match=r"^n must be a positive integer \(an input size\), got "):
        nearest_exact_size(get_model("p4_mnist_cnn", channels=2), n)
