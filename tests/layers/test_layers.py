"""Layers: exact equivariance iff the exactness condition holds (every layer, every layout),
batch norm, coset pooling, docstrings, errors; the convs' own machinery is in test_conv.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from equivlib.checks import equivariance_error
from equivlib.exactness import is_exact, output_size
from equivlib.groups import P4, P4M, Group
from equivlib.layers import (
    CosetPool,
    GroupAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupMaxPool2d,
    LiftingConv2d,
)
from tests.layouts import in_layout

pytestmark = pytest.mark.usefixtures("single_thread")

GROUPS = [P4, P4M]
gid = pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
EXACT_TOL, INEXACT_MIN = 1e-12, 1e-3
CIN, COUT, BATCH = 2, 3, 2


# ---------------------------------------------------------------------------- helpers
def make_layer(kind: str, group: Group, k: int, s: int, p: int, d: int = 1) -> nn.Module:
    if kind == "lifting":
        return LiftingConv2d(group, CIN, COUT, k, stride=s, padding=p, dilation=d).double()
    if kind == "group":
        return GroupConv2d(group, CIN, COUT, k, stride=s, padding=p, dilation=d).double()
    if kind == "maxpool":
        return GroupMaxPool2d(k, stride=s, padding=p)
    return GroupAvgPool2d(k, stride=s, padding=p)


def make_input(kind: str, group: Group, n: int) -> torch.Tensor:
    if kind == "lifting":
        return torch.randn(BATCH, CIN, n, n, dtype=torch.float64)
    return torch.randn(BATCH, CIN, group.order, n, n, dtype=torch.float64)


def max_error(layer: nn.Module, x: torch.Tensor, group: Group) -> float:
    inp = "image" if x.dim() == 4 else "group"
    return equivariance_error(layer, x, group, input=inp, output="group").max().item()


def adam_steps(layer: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    before = layer.weight.detach().clone()
    for _ in range(steps):
        y = layer(torch.randn_like(x))
        loss = (y - torch.randn_like(y)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, layer.weight)


def check_verdict(err: float, exact: bool) -> None:
    if exact:
        assert err <= EXACT_TOL, f"exact case has error {err:.3g}"
    else:
        assert err >= INEXACT_MIN, f"inexact case has error {err:.3g}"


# ---------------------------------------------------------------------------- central sweep
SIZES = (10, 11, 12, 13)  # odd and even, every residue mod 3
KINDS = ("lifting", "group", "maxpool", "avgpool")


def sweep_cases() -> list[tuple[str, int, int, int, int]]:
    cases = []
    for kind in KINDS:
        for k in (1, 2, 3, 5):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    if kind.endswith("pool") and p > k // 2:
                        continue  # PyTorch forbids pooling padding > kernel // 2
                    cases.extend((kind, k, s, p, n) for n in SIZES)
    return cases


CASES = sweep_cases()


def test_sweep_has_both_verdicts() -> None:
    for kind in KINDS:
        verdicts = [is_exact(n, k, s, p) for kd, k, s, p, n in CASES if kd == kind]
        assert sum(verdicts) > 0 and len(verdicts) - sum(verdicts) > 0, kind
        # strided exact cases exist too, not only stride 1
        assert any(is_exact(n, k, s, p) for kd, k, s, p, n in CASES if kd == kind and s > 1)


@gid
@pytest.mark.parametrize("kind,k,s,p,n", CASES, ids=lambda v: str(v))
def test_exact_iff_condition(group: Group, kind: str, k: int, s: int, p: int, n: int) -> None:
    layer = make_layer(kind, group, k, s, p)
    x = make_input(kind, group, n)
    exact = is_exact(n, k, s, p)
    check_verdict(max_error(layer, x, group), exact)
    if kind in ("lifting", "group"):
        adam_steps(layer, x)
        check_verdict(max_error(layer, x, group), exact)


@gid
@pytest.mark.parametrize("kind", ["lifting", "group"])
@pytest.mark.parametrize("n", [11, 12, 13, 14])
def test_dilation(group: Group, kind: str, n: int) -> None:
    layer = make_layer(kind, group, 3, 3, 1, d=2)
    check_verdict(max_error(layer, make_input(kind, group, n), group), is_exact(n, 3, 3, 1, 2))


@pytest.mark.parametrize("n", [32, 33])
def test_photo_crop(n: int) -> None:
    """Real image (scikit-image astronaut) through a stride-2 lifting conv: 33 exact, 32 not."""
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.astronaut()[200 : 200 + n, 180 : 180 + n].copy())
    x = img.permute(2, 0, 1)[None].double() / 255
    layer = LiftingConv2d(P4M, 3, 4, 3, stride=2, padding=1).double()
    check_verdict(max_error(layer, x, P4M), is_exact(n, 3, 2, 1))


# ---------------------------------------------------------------------------- stacks
STACKS = {
    "conv_s2_conv_s2": [("lifting", 3, 2, 1), ("group", 3, 2, 1)],
    "conv_conv_s2_pool2": [("lifting", 3, 1, 1), ("group", 3, 2, 1), ("maxpool", 2, 2, 0)],
    "k5_k1s2_avg3s3": [("lifting", 5, 1, 0), ("group", 1, 2, 0), ("avgpool", 3, 3, 1)],
}
STACK_SIZES = range(12, 22)


def expected_stack(n: int, stages: list[tuple[str, int, int, int]]) -> tuple[bool, list[bool]]:
    verdicts = []
    for _, k, s, p in stages:
        verdicts.append(is_exact(n, k, s, p))
        n = output_size(n, k, s, p)
    return all(verdicts), verdicts


def test_stack_cases_cover_each_layer_failing() -> None:
    """Some sizes are exact for the first layer only: the stack must still be judged inexact."""
    for stages in STACKS.values():
        results = [expected_stack(n, stages) for n in STACK_SIZES]
        assert any(ok for ok, _ in results)
        assert any(v[0] and not ok for ok, v in results)


@gid
@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize("n", list(STACK_SIZES))
def test_stack_exact_iff_every_layer_exact(group: Group, name: str, n: int) -> None:
    stages = STACKS[name]
    layers, cin = [], CIN
    for kind, k, s, p in stages:
        if kind == "lifting":
            layers.append(LiftingConv2d(group, cin, COUT, k, s, p))
            cin = COUT
        elif kind == "group":
            layers.append(GroupConv2d(group, cin, COUT, k, s, p))
            cin = COUT
        else:
            layers.append(make_layer(kind, group, k, s, p))
    model = nn.Sequential(*layers).double()
    x = torch.randn(BATCH, CIN, n, n, dtype=torch.float64)
    check_verdict(max_error(model, x, group), expected_stack(n, stages)[0])


# ---------------------------------------------------------------------------- coset pool, BN
@gid
@pytest.mark.parametrize("mode", ["max", "mean"])
def test_coset_pool_invariant_over_orientations(group: Group, mode: str) -> None:
    pool = CosetPool(mode)
    f = torch.randn(2, 3, group.order, 7, 7, dtype=torch.float64)
    y = pool(f)
    assert y.shape == (2, 3, 7, 7)
    err = equivariance_error(pool, f, group, input="group", output="image")
    assert err.max() <= EXACT_TOL
    perm = torch.randperm(group.order)
    torch.testing.assert_close(pool(f[:, :, perm]), y, rtol=1e-14, atol=1e-14)
    model = nn.Sequential(LiftingConv2d(group, 2, 3, 3, padding=1), pool).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    assert equivariance_error(model, x, group, output="image").max() <= EXACT_TOL


@gid
def test_batchnorm_shares_statistics(group: Group) -> None:
    bn = GroupBatchNorm(group, 3).double()
    assert isinstance(bn, nn.BatchNorm3d) and bn.weight.shape == (3,)
    f = torch.randn(4, 3, group.order, 5, 5, dtype=torch.float64) * 3 + 1
    y = bn(f)
    mean, var = y.mean(dim=(0, 2, 3, 4)), y.var(dim=(0, 2, 3, 4), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-12, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-4, rtol=0)


@gid
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_equivariant(group: Group, train: bool) -> None:
    bn = GroupBatchNorm(group, 3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    for _ in range(3):  # non-trivial running statistics
        bn(torch.randn(4, 3, group.order, 6, 6, dtype=torch.float64) * 2 + 0.5)
    bn.train(train)
    f = torch.randn(4, 3, group.order, 6, 6, dtype=torch.float64)
    for g in group.elements():  # separate calls: batch statistics of g·f alone
        lhs = bn(group.act_on_group_map(g, f))
        torch.testing.assert_close(lhs, group.act_on_group_map(g, bn(f)), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- docs, errors
@pytest.mark.parametrize("cls", [LiftingConv2d, GroupConv2d, GroupMaxPool2d, GroupAvgPool2d])
def test_docstrings_state_condition(cls: type) -> None:
    assert "(n + 2p - d(k-1) - 1) % s == 0" in cls.__doc__
    assert ".. warning::" in cls.__doc__ and "one pixel" in cls.__doc__


@pytest.mark.parametrize("cls", [GroupBatchNorm, CosetPool])
def test_docstrings_no_subsampling(cls: type) -> None:
    assert "exact at every" in " ".join(cls.__doc__.split())


ERRORS = [
    (lambda: LiftingConv2d("p6", 1, 1, 3), ValueError, r"unknown group 'p6'.*p4, p4m"),
    (lambda: GroupConv2d(None, 1, 1, 3), TypeError, "group must be"),
    (lambda: LiftingConv2d(P4, 0, 1, 3), ValueError, "in_channels must be a positive int, got 0"),
    (lambda: GroupConv2d(P4, 1, -2, 3), ValueError, "out_channels .* got -2"),
    (lambda: GroupConv2d(P4, 1, 1, 0), ValueError, "kernel_size .* got 0"),
    (lambda: GroupConv2d(P4, 1, 1, 3, stride=0), ValueError, "stride .* got 0"),
    (lambda: GroupConv2d(P4, 1, 1, 3, padding=-1), ValueError, "padding .* got -1"),
    (lambda: GroupConv2d(P4, 1, 1, 3, padding="same"), TypeError, "padding .*'same'"),
    (lambda: LiftingConv2d(P4, 1.5, 1, 3), TypeError, "in_channels .* got 1.5"),
    (lambda: GroupMaxPool2d(2, stride=0), ValueError, "stride .* got 0"),
    (lambda: GroupAvgPool2d(2, padding="valid"), TypeError, "padding"),
    (lambda: GroupMaxPool2d(3, padding=2), ValueError, r"at most kernel_size // 2 = 1.*got 2"),
    (lambda: GroupBatchNorm("p4", 0), ValueError, "channels .* got 0"),
    (lambda: CosetPool("median"), ValueError,
     r"mode must be one of \('max', 'mean'\), got 'median'"),
]


@pytest.mark.parametrize("make,exc,match", ERRORS)
def test_constructor_errors(make, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make()


FORWARD_ERRORS = [
    (LiftingConv2d(P4, 3, 2, 3), torch.zeros(3, 8, 8), r"4-D input .*got 3-D shape \(3, 8, 8\)"),
    (LiftingConv2d(P4, 3, 2, 3), torch.zeros(1, 2, 8, 8), "channel size 3, got 2"),
    (GroupConv2d(P4, 3, 2, 3), torch.zeros(1, 3, 8, 8), r"5-D input of shape \(B, Cin, 4, H, W\)"),
    (GroupConv2d(P4, 3, 2, 3), torch.zeros(1, 3, 8, 8, 8), "orientation-axis size 4, got 8"),
    (GroupConv2d(P4M, 3, 2, 3), torch.zeros(1, 2, 8, 8, 8), "channel size 3, got 2"),
    (GroupBatchNorm(P4, 3), torch.zeros(2, 3, 8, 4, 4), "orientation-axis size 4, got 8"),
    (GroupBatchNorm(P4, 3), torch.zeros(2, 3, 4, 4), "5-D input"),
    (GroupMaxPool2d(2), torch.zeros(2, 3, 4, 4), r"5-D input .*got 4-D"),
    (CosetPool(), torch.zeros(2, 3, 4, 4), r"5-D input .*got 4-D"),
]


@pytest.mark.parametrize("layer,x,match", FORWARD_ERRORS)
def test_forward_errors(layer: nn.Module, x: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        layer(x)


def test_forward_type_error() -> None:
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        LiftingConv2d(P4, 1, 1, 1)([[1.0]])


# ---------------------------------------------------------------------------- memory layouts
LAYOUTS = ("as_given", "nchw", "channels_last")
glayout = pytest.mark.parametrize("layout", LAYOUTS)


class InLayout(nn.Module):
    """``layer`` fed every input in ``layout`` (so both sides of an equivariance check run in
    it, whatever layout the group action returns)."""

    def __init__(self, layer: nn.Module, layout: str) -> None:
        super().__init__()
        self.layer, self.layout = layer, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(in_layout(x, self.layout))


def layout_of(y: torch.Tensor) -> tuple[bool, str]:
    """(orientation-major, memory format) of a layer's output."""
    from equivlib.layers import fold_group_map

    if y.dim() == 5:
        folded, orientation_major = fold_group_map(y)
    else:
        folded, orientation_major = y, True
    fmt = ("nchw" if folded.is_contiguous() else "channels_last"
           if folded.is_contiguous(memory_format=torch.channels_last) else "other")
    return orientation_major, fmt


@gid
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kind,k,s,p,n", [c for c in CASES if c[1] in (1, 3) and c[3] < 2],
                         ids=lambda v: str(v))
def test_exact_iff_condition_in_every_layout(group: Group, layout: str, kind: str, k: int,
                                             s: int, p: int, n: int) -> None:
    """The central sweep (kernels 1 and 3, padding 0 and 1) with the input in the layers'
    orientation-major NCHW / channels_last layout: the same verdicts, the layout kept."""
    layer = InLayout(make_layer(kind, group, k, s, p), layout)
    x = make_input(kind, group, n)
    check_verdict(max_error(layer, x, group), is_exact(n, k, s, p))
    y = layer(x)
    torch.testing.assert_close(y, layer.layer(x), rtol=1e-12, atol=1e-12)  # same values
    assert layout_of(y) == (True, layout)


def _batchnorm_case(group: Group, channels: int, layout: str,
                    ) -> tuple[GroupBatchNorm, nn.BatchNorm3d, torch.Tensor]:
    """A group batch norm with non-trivial parameters and running statistics, the plain
    ``nn.BatchNorm3d`` over ``(B, C, |G|, H, W)`` it must equal (the definition), an input."""
    bn = GroupBatchNorm(group, channels).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    ref = nn.BatchNorm3d(channels).double()
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(3, channels, group.order, 5, 5, dtype=torch.float64) * 2 + 1
    return bn, ref, in_layout(x, layout)


@gid
@glayout
@pytest.mark.parametrize("channels", [3, 17], ids=["few-channels", "many-channels"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_equals_batchnorm3d_in_every_layout(group: Group, layout: str,
                                                      channels: int, training: bool) -> None:
    """Outputs, input and parameter gradients, running statistics: those of
    ``nn.BatchNorm3d`` on the contiguous map (float64, 1e-12), in every layout and on both
    kernel paths (few channels in channels_last: per-(orientation, channel) statistics
    merged; otherwise one call on a channel view); the output keeps the input's layout."""
    bn, ref, x = _batchnorm_case(group, channels, layout)
    bn.train(training), ref.train(training)
    xa = x.detach().clone().requires_grad_(True)
    xb = x.detach().contiguous().requires_grad_(True)
    ya, yb = bn(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    if layout != "as_given":
        assert layout_of(ya) == (True, layout)
    w = torch.randn_like(yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    for got, want in ((xa.grad, xb.grad), (bn.weight.grad, ref.weight.grad),
                      (bn.bias.grad, ref.bias.grad), (bn.running_mean, ref.running_mean),
                      (bn.running_var, ref.running_var)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert bn.num_batches_tracked.item() == ref.num_batches_tracked.item()


@pytest.mark.parametrize("momentum", [None, 0.3])
@pytest.mark.parametrize("track", [True, False])
def test_batchnorm_options_follow_torch(momentum: float | None, track: bool) -> None:
    """Cumulative averages (``momentum=None``) and no running statistics behave as in
    ``nn.BatchNorm3d``, on the few-channels channels_last path too."""
    bn = GroupBatchNorm(P4, 3, momentum=momentum, track_running_stats=track).double()
    ref = nn.BatchNorm3d(3, momentum=momentum, track_running_stats=track).double()
    for _ in range(3):
        x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(bn(in_layout(x, "channels_last")), ref(x),
                                   rtol=1e-12, atol=1e-12)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(in_layout(x, "channels_last")), ref(x), rtol=1e-12,
                               atol=1e-12)
    if track:
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-12, atol=1e-12)


@gid
@glayout
@pytest.mark.parametrize("channels", [3, 17], ids=["few-channels", "many-channels"])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_equivariant_in_every_layout(group: Group, layout: str, channels: int,
                                               train: bool) -> None:
    bn, _, x = _batchnorm_case(group, channels, "as_given")
    bn.train(train)
    layer = InLayout(bn, layout)
    for g in group.elements():  # separate calls: batch statistics of g·x alone
        lhs = layer(group.act_on_group_map(g, x))
        torch.testing.assert_close(lhs, group.act_on_group_map(g, layer(x)), rtol=1e-12,
                                   atol=1e-12)


COPY_OPS = ("aten::copy_", "aten::contiguous", "aten::clone")


def _copies(fn, smallest: int) -> list[tuple[str, tuple]]:
    """Copy ops (``aten::copy_`` / ``contiguous`` / ``clone``) on tensors of at least
    ``smallest`` elements while ``fn`` runs (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    found = []
    for event in prof.events():
        if event.name in COPY_OPS and event.input_shapes and event.input_shapes[0]:
            shape = tuple(event.input_shapes[0])
            if math.prod(shape) >= smallest:
                found.append((event.name, shape))
    return found


LAYOUT_LAYERS = {
    "lifting": lambda g: LiftingConv2d(g, 3, 5, 3, padding=1),
    "lifting-strided": lambda g: LiftingConv2d(g, 3, 5, 3, stride=2, padding=1),
    "group": lambda g: GroupConv2d(g, 5, 5, 3, padding=1),
    "group-1x1-strided": lambda g: GroupConv2d(g, 5, 5, 1, stride=2),
    "batchnorm-few": lambda g: GroupBatchNorm(g, 5),
    "batchnorm-many": lambda g: GroupBatchNorm(g, 17),
    "maxpool": lambda g: GroupMaxPool2d(2),
    "avgpool": lambda g: GroupAvgPool2d(3, stride=2, padding=1),
    "coset-max": lambda g: CosetPool("max"),
    "coset-mean": lambda g: CosetPool("mean"),
}


def _plain_twin(layer: nn.Module, group: Group, fmt: torch.memory_format,
                ) -> nn.Module | None:
    """The plain torch op the layer runs on the folded ``(B, |G|·C, H, W)`` map (convs: their
    orientation-major export with its weight in ``fmt``, as a plain network holds it;
    pools: ``nn.MaxPool2d`` / ``nn.AvgPool2d``; coset pooling: the reduction over the
    orientations of the map stored contiguously); ``None`` for batch norm (no copy at all)."""
    if isinstance(layer, (LiftingConv2d, GroupConv2d)):
        return layer.export(orientation_major=True).to(memory_format=fmt)
    if isinstance(layer, GroupMaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, GroupAvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, CosetPool):
        class Reduce(nn.Module):
            def forward(self, y: torch.Tensor) -> torch.Tensor:
                y = y.unflatten(1, (group.order, -1)).contiguous()
                y = y.detach().requires_grad_(y.requires_grad)  # the copy is not the op's
                return y.amax(dim=1) if layer.mode == "max" else y.mean(dim=1)
        return Reduce()
    return None


def _step(layer: nn.Module, x: torch.Tensor, training: bool):  # noqa: ANN202
    """One forward (and, training, backward with a gradient made beforehand, in the output's
    layout) of ``layer``."""
    y = layer(x)  # (and fills the bank cache)
    grad = torch.empty_strided(y.shape, y.stride()).normal_()

    def step() -> torch.Tensor:
        if not training:
            with torch.no_grad():
                return layer(x)
        y = layer(x)
        y.backward(grad)
        return y
    return step


@gid
@pytest.mark.parametrize("kind", list(LAYOUT_LAYERS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layers_keep_the_layout_without_copies(group: Group, kind: str, layout: str,
                                               training: bool) -> None:
    """Every layer on the layers' own orientation-major layout (NCHW or channels_last): the
    output in that layout, and no more copies of feature maps or banks in the forward and
    (train) backward than the plain torch op it runs makes on the folded 4-D map
    (``torch.profiler``; batch norm: none at all). Before issue 28, batch norm returned an
    NCHW map, and the next conv then ran in NCHW and copied in its backward."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    layer = LAYOUT_LAYERS[kind](group).train(training).to(memory_format=fmt)
    channels = 17 if kind == "batchnorm-many" else (3 if kind.startswith("lifting") else 5)
    shape = ((4, channels, 12, 12) if kind.startswith("lifting")
             else (4, channels, group.order, 12, 12))
    x = in_layout(torch.randn(shape), layout).requires_grad_(training)
    got = _copies(_step(layer, x, training), 256)  # feature maps and banks, not BN params
    assert layout_of(_step(layer, x, training)().detach()) == (True, layout)
    twin = _plain_twin(layer, group, fmt)
    if twin is None:
        assert got == []
        return
    folded = in_layout(torch.randn(shape), layout)
    folded = (folded if folded.dim() == 4 else folded.transpose(1, 2).flatten(1, 2))
    want = _copies(_step(twin.train(training), folded.requires_grad_(training), training),
                   256)
    for op in COPY_OPS:
        assert sum(o == op for o, _ in got) <= sum(o == op for o, _ in want), (got, want)
