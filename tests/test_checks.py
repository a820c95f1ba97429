"""equivariance_error, layerwise_errors, assert_equivariant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equivlib.checks import (
    assert_equivariant,
    default_tolerance,
    equivariance_error,
    layerwise_errors,
)
from equivlib.exactness import is_exact
from equivlib.groups import P4, P4M, Group
from equivlib.layers import (
    CosetPool,
    GroupBatchNorm,
    GroupConv2d,
    GroupMaxPool2d,
    LiftingConv2d,
)

pytestmark = pytest.mark.usefixtures("single_thread")

gid = pytest.mark.parametrize("group", [P4, P4M], ids=lambda g: g.name)


def strided_lift(group: Group, dtype: torch.dtype = torch.float64) -> nn.Module:
    return LiftingConv2d(group, 3, 4, 3, stride=2, padding=1).to(dtype)


@gid
def test_exact_vs_inexact_pair(group: Group) -> None:
    layer = strided_lift(group)
    assert is_exact(17, 3, 2, 1) and not is_exact(16, 3, 2, 1)
    exact = equivariance_error(layer, torch.randn(2, 3, 17, 17, dtype=torch.float64), group,
                               output="group")
    inexact = equivariance_error(layer, torch.randn(2, 3, 16, 16, dtype=torch.float64), group,
                                 output="group")
    assert exact.shape == inexact.shape == (group.order - 1,)
    assert exact.dtype == torch.float64
    assert exact.max() < 1e-12
    assert inexact.max() > 0.1


def test_error_definition() -> None:
    """Hand-computed: fn(x) = x shifted by one pixel; error per element vs explicit formula."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, 1, dims=-1)

    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    err = equivariance_error(fn, x, P4)
    for g in range(1, 4):
        per_sample = [
            (fn(P4.act_on_image(g, x[i:i + 1])) - P4.act_on_image(g, fn(x[i:i + 1]))).norm()
            / fn(x[i:i + 1]).norm()
            for i in range(3)
        ]
        torch.testing.assert_close(err[g - 1], torch.stack(per_sample).mean())
    assert err[1] > 0.5  # 180°: roll direction flips
    assert equivariance_error(lambda t: t * 2, x, P4M).max() == 0


@gid
def test_invariant_output(group: Group) -> None:
    model = nn.Sequential(LiftingConv2d(group, 3, 4, 3, padding=1), CosetPool("mean"),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert equivariance_error(model, x, group, output="invariant").max() < 1e-12
    # a non-invariant readout is caught
    flat = nn.Sequential(LiftingConv2d(group, 3, 4, 3, padding=1), CosetPool(), nn.Flatten())
    assert equivariance_error(flat.double(), x, group, output="invariant").max() > 0.1


@gid
def test_group_input(group: Group) -> None:
    conv = GroupConv2d(group, 2, 3, 3, stride=3).double()
    for n, exact in ((12, True), (11, False)):
        assert is_exact(n, 3, 3, 0) == exact
        f = torch.randn(2, 2, group.order, n, n, dtype=torch.float64)
        err = equivariance_error(conv, f, group, input="group", output="group").max()
        assert (err < 1e-12) if exact else (err > 1e-3)


def test_single_batched_forward() -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.pow(2)

    equivariance_error(fn, torch.randn(3, 1, 5, 5), P4M)
    assert calls == [24]


def test_out_of_memory_fallback() -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 TiB")
        return x + 1

    err = equivariance_error(fn, torch.randn(2, 1, 5, 5), P4)
    assert calls == [8, 2, 2, 2, 2] and err.max() == 0
    with pytest.raises(RuntimeError, match="something else"):
        equivariance_error(lambda x: (_ for _ in ()).throw(RuntimeError("something else")),
                           torch.randn(2, 1, 5, 5), P4)


def test_no_grad_and_batchnorm_mixing() -> None:
    x = torch.randn(2, 1, 5, 5, requires_grad=True)
    err = equivariance_error(lambda t: t * 3, x, P4)
    assert not err.requires_grad


ARG_ERRORS = [
    (dict(input="vector"), ValueError, r"input must be one of \('image', 'group'\), got 'vector'"),
    (dict(output="scalar"), ValueError, "output must be one of .*got 'scalar'"),
    (dict(group="p3"), ValueError, "unknown group 'p3'"),
    (dict(x=[1, 2]), TypeError, "x must be a torch.Tensor, got list"),
    (dict(x=torch.zeros(1, 5, 6)), ValueError, r"square inputs, got spatial size \(5, 6\)"),
    (dict(x=torch.zeros(5, 5)), ValueError, r"\(B, \.\.\., H, W\), got \(5, 5\)"),
    (dict(input="group"), ValueError, r"x of shape \(B, C, 4, H, W\) for p4, got \(2, 1, 5, 5\)"),
    (dict(output="group"), ValueError, r"output='group' but fn returned shape \(8, 1, 5, 5\)"),
    (dict(fn=lambda t: t.sum()), ValueError, r"cannot tell how p4 acts on the output of fn, "
     r"shape \(\): pass output='image'"),
    (dict(fn=lambda t: t.sum(), output="image"), ValueError,
     r"output='image' but fn returned shape \(\), which is not \(B, C, H, W\)"),
    (dict(fn=lambda t: t.flatten(1), output="image"), ValueError,
     r"shape \(8, 25\).*it looks like output='invariant'"),
    (dict(output="invariant"), ValueError,
     r"output='invariant' but fn returned shape \(8, 1, 5, 5\).*looks like output='image'"),
    (dict(fn=lambda t: t[:, :, None].expand(-1, -1, 3, -1, -1)), ValueError,
     r"cannot tell how p4 acts .* shape \(8, 1, 3, 5, 5\)"),
    (dict(fn=lambda t: t[:1]), ValueError, "fn changed the batch size"),
    (dict(fn=lambda t: "nope"), TypeError, "fn must return a torch.Tensor, got str"),
    (dict(fn=3), TypeError, "fn must be callable"),
]


@pytest.mark.parametrize("kwargs,exc,match", ARG_ERRORS)
def test_argument_errors(kwargs: dict, exc: type, match: str) -> None:
    args = dict(fn=lambda t: t, x=torch.zeros(2, 1, 5, 5), group=P4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        equivariance_error(**args)


@gid
def test_output_kind_inferred(group: Group) -> None:
    """Left unset, ``output`` follows the output's rank: an exact lifting layer measures
    ~1e-16, not the ~1 that acting on its group map as an image would give."""
    layer = strided_lift(group)
    x = torch.randn(2, 3, 17, 17, dtype=torch.float64)
    assert equivariance_error(layer, x, group).max() < 1e-12
    assert torch.equal(equivariance_error(layer, x, group),
                       equivariance_error(layer, x, group, output="group"))
    with pytest.raises(ValueError, match="it looks like output='group'"):
        equivariance_error(layer, x, group, output="image")
    head = nn.Sequential(layer, CosetPool("mean"), nn.AdaptiveAvgPool2d(1))
    assert equivariance_error(head, x, group).max() < 1e-12  # 4-D (B, C, 1, 1): image
    assert equivariance_error(head, x, group, output="invariant").max() < 1e-12
    assert equivariance_error(nn.Sequential(head, nn.Flatten()), x, group).max() < 1e-12


def test_output_kind_inferred_on_fallback() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory")
        return x.flatten(1)

    assert equivariance_error(fn, torch.randn(2, 1, 5, 5), P4).shape == (3,)


def test_assert_equivariant_infers_output() -> None:
    layer = strided_lift(P4)
    assert_equivariant(layer, torch.randn(2, 3, 17, 17, dtype=torch.float64), P4)
    with pytest.raises(AssertionError, match="output='group'"):
        assert_equivariant(layer, torch.randn(2, 3, 16, 16, dtype=torch.float64), P4)


# ---------------------------------------------------------------------------- layerwise
def small_net(group: Group) -> nn.Sequential:
    return nn.Sequential(
        LiftingConv2d(group, 3, 4, 3, padding=1),
        GroupBatchNorm(group, 4),
        nn.ReLU(),
        GroupConv2d(group, 4, 4, 3, stride=2, padding=1),
        GroupMaxPool2d(2),
        CosetPool(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).double()


@gid
@pytest.mark.parametrize("n", [17, 18, 19])
def test_layerwise_rows(group: Group, n: int) -> None:
    model = small_net(group)
    model.train()
    model[1].eval()  # mixed modes must be restored exactly
    stats = model[1].running_mean.clone()
    x = torch.randn(2, 3, n, n, dtype=torch.float64)
    rows = layerwise_errors(model, x, group)
    assert model.training and not model[1].training and model[0].training
    assert torch.equal(model[1].running_mean, stats)  # BN saw no training-mode batch
    assert [r["name"] for r in rows] == [str(i) for i in range(9)] + ["output"]
    assert [r["type"] for r in rows][:4] == ["LiftingConv2d", "GroupBatchNorm", "ReLU",
                                             "GroupConv2d"]
    assert rows[-1]["type"] == "Sequential" and rows[-1]["shape"] == (5,)
    m = (n - 1) // 2 + 1
    assert rows[0]["shape"] == (4, group.order, n, n)
    assert rows[3]["shape"] == (4, group.order, m, m)
    assert rows[5]["shape"] == (4, m // 2, m // 2)
    for r in rows:
        assert set(r) == {"name", "type", "shape", "error", "max_error"}
        assert r["error"] <= r["max_error"]
    # verdict per layer: conv (3, 2, 1) at n, pool (2, 2, 0) at m; everything after inherits
    conv_ok, pool_ok = is_exact(n, 3, 2, 1), is_exact(m, 2, 2, 0)
    expected = [True] * 3 + [conv_ok] + [conv_ok and pool_ok] * 6
    for r, ok in zip(rows, expected, strict=True):
        assert (r["max_error"] < 1e-12) if ok else (r["max_error"] > 1e-3), r
    assert n != 19 or all(e for e in expected)  # 19 -> 10 -> 5: exact throughout
    assert n != 17 or (conv_ok and not pool_ok)  # 17 -> 9: pool inexact


def test_layerwise_matches_equivariance_error() -> None:
    model = small_net(P4).eval()
    x = torch.randn(2, 3, 18, 18, dtype=torch.float64)
    rows = layerwise_errors(model, x, P4)
    err = equivariance_error(model, x, P4, output="invariant")
    assert rows[-1]["error"] == pytest.approx(err.mean().item(), rel=1e-9)
    assert rows[-1]["max_error"] == pytest.approx(err.max().item(), rel=1e-9)


def test_layerwise_repeated_and_skipped_modules() -> None:
    relu = nn.ReLU()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lift = LiftingConv2d(P4, 1, 2, 3, padding=1)
            self.relu = relu

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.relu(self.relu(self.lift(x)))
            return y, y.flatten(1, 2)

    rows = layerwise_errors(Net(), torch.randn(2, 1, 7, 7), P4)
    assert [r["name"] for r in rows] == ["lift", "relu", "relu#2"]  # tuple output skipped


def test_layerwise_names_select_rows() -> None:
    model = small_net(P4).eval()
    x = torch.randn(2, 3, 18, 18, dtype=torch.float64)
    every = {r["name"]: r for r in layerwise_errors(model, x, P4)}
    chosen = layerwise_errors(model, x, P4, names=["3", "output"])
    assert [r["name"] for r in chosen] == ["3", "output"]
    assert chosen[0]["error"] == every["3"]["error"]
    assert chosen[1]["max_error"] == every["output"]["max_error"]
    with pytest.raises(ValueError, match="no submodule named"):
        layerwise_errors(model, x, P4, names=["stem"])


def test_layerwise_errors_args() -> None:
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        layerwise_errors(lambda t: t, torch.zeros(1, 1, 5, 5), P4)
    with pytest.raises(ValueError, match="input must be one of"):
        layerwise_errors(nn.Identity(), torch.zeros(1, 1, 5, 5), P4, input="vector")


# ---------------------------------------------------------------------------- assert
def test_default_tolerances() -> None:
    assert default_tolerance(torch.float64) == 1e-12
    assert default_tolerance(torch.float32) == 1e-5
    assert default_tolerance(torch.float16) == 1e-2
    assert default_tolerance(torch.bfloat16) <= 0.1
    with pytest.raises(ValueError, match="pass tol explicitly"):
        default_tolerance(torch.int64)


@gid
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_assert_equivariant_default_tol(group: Group, dtype: torch.dtype) -> None:
    layer = strided_lift(group, dtype)
    errs = assert_equivariant(layer, torch.randn(2, 3, 17, 17, dtype=dtype), group,
                              output="group")
    assert errs.shape == (group.order - 1,) and errs.max() <= default_tolerance(dtype)
    with pytest.raises(AssertionError) as info:
        assert_equivariant(layer, torch.randn(2, 3, 16, 16, dtype=dtype), group, output="group")
    msg = str(info.value)
    assert f"not equivariant under {group.name}" in msg
    assert f"tol {default_tolerance(dtype):.3g}" in msg
    assert "per element: r: " in msg and "r3: " in msg
    assert "inexact subsampling layer" in msg and "(n + 2p - d(k-1) - 1) % s == 0" in msg
    assert "(16, 16)" in msg


def test_assert_equivariant_custom_tol_and_nan() -> None:
    layer = strided_lift(P4)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert_equivariant(layer, x, P4, output="group", tol=10.0)
    with pytest.raises(AssertionError, match="nan"):
        assert_equivariant(lambda t: t * float("nan"), x, P4, tol=1.0)
