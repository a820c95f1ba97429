"""Synchronised batch norm: the conversion keeps every model's parameters, buffers, outputs
and exactness; with 2 gloo processes the layer computes what one process computes on the
concatenated batch (outputs, input and parameter gradients, running statistics)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from equivlib.checks import equivariance_error
from equivlib.layers import (
    GroupBatchNorm,
    SyncBatchNorm,
    SyncGroupBatchNorm,
    convert_sync_batchnorm,
)
from equivlib.models import get_model
from equivlib.tracer import trace
from tests.ddp_helpers import exit_worker
from tests.layouts import in_layout

EXACT_TOL, INEXACT_MIN = 1e-10, 1e-3


def _model(name: str) -> nn.Module:
    return get_model(name, widths=[2, 4, 8]).double()


@pytest.mark.parametrize("name", ["z2_resnet44", "p4_resnet44", "p4m_resnet44"])
def test_conversion_replaces_every_batch_norm_and_keeps_the_state(name):
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_group_bn = sum(isinstance(m, GroupBatchNorm) for m in model.modules())
    converted = convert_sync_batchnorm(model)
    bns = [m for m in converted.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(isinstance(m, (SyncBatchNorm, SyncGroupBatchNorm)) for m in bns)
    assert sum(isinstance(m, SyncGroupBatchNorm) for m in bns) == n_group_bn
    for m in bns:  # statistics per channel, shared over the group axis: C entries, not C·|G|
        assert m.running_mean.shape == (m.num_features,)
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ["z2_resnet44", "p4m_resnet44"])
def test_one_process_output_is_unchanged(name, mode):
    torch.manual_seed(1)
    plain = _model(name)
    synced = convert_sync_batchnorm(_model(name).requires_grad_(True))
    synced.load_state_dict(plain.state_dict())
    getattr(plain, mode)()
    getattr(synced, mode)()
    x = torch.randn(4, 3, 33, 33, dtype=torch.float64)
    assert torch.equal(plain(x), synced(x))
    if mode == "train":  # running statistics moved identically
        assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                     synced.state_dict().values(), strict=True))


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("size, exact", [(33, True), (32, False)])
def test_converted_model_is_exact_where_the_original_is(group, size, exact):
    model = convert_sync_batchnorm(_model(f"{group}_resnet44")).eval()
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    worst = equivariance_error(model, x, group, output="invariant").max().item()
    assert (worst <= EXACT_TOL) if exact else (worst >= INEXACT_MIN)
    assert trace(model, size).exact is exact


# ------------------------------------------------------------------ two gloo processes
CASES = [  # (kind, channels, layout, offset): every kernel path, both memory formats
    ("z2", 3, "nchw", 3.0), ("z2", 3, "channels_last", 3.0),
    ("p4", 3, "nchw", 3.0), ("p4", 3, "channels_last", 3.0),      # few channels: merged parts
    ("p4m", 3, "nchw", 3.0), ("p4m", 3, "channels_last", 3.0),
    ("p4", 17, "channels_last", 3.0),                              # many: one channel view
    ("p4", 3, "channels_last", 1e6), ("p4", 17, "nchw", 1e6),     # large offset (Chan merge)
]


def _layer(kind: str, channels: int) -> nn.Module:
    torch.manual_seed(3)
    layer = (nn.BatchNorm2d(channels) if kind == "z2"
             else GroupBatchNorm(kind, channels)).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _inputs(kind: str, channels: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    shape = ((6, channels, 5, 5) if kind == "z2"
             else (6, channels, {"p4": 4, "p4m": 8}[kind], 5, 5))
    x = offset + 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x, torch.randn(shape, generator=g, dtype=torch.float64)


def _step(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    (y * w).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": layer.weight.grad.clone(),
            "b_grad": layer.bias.grad.clone(), "mean": layer.running_mean.clone(),
            "var": layer.running_var.clone()}


class _Counted:
    """Counts calls of the collectives while it is active (patched on ``dist``)."""

    NAMES = ("all_gather_single", "all_gather_into_tensor", "all_reduce", "all_gather",
             "broadcast", "reduce_scatter_tensor")

    def __enter__(self) -> dict[str, int]:
        self.calls = {name: 0 for name in self.NAMES}
        self.saved = {name: getattr(dist, name) for name in self.NAMES if hasattr(dist, name)}
        for name, fn in self.saved.items():
            def counted(*args, _fn=fn, _name=name, **kwargs):
                self.calls[_name] += 1
                return _fn(*args, **kwargs)
            setattr(dist, name, counted)
        return self.calls

    def __exit__(self, *exc) -> None:
        for name, fn in self.saved.items():
            setattr(dist, name, fn)


def _worker(rank: int, case: tuple, store: str, out: str) -> None:
    kind, channels, layout, offset = case
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        layer = convert_sync_batchnorm(_layer(kind, channels)).train()
        x, w = _inputs(kind, channels, offset)
        half = slice(3 * rank, 3 * rank + 3)
        xh, wh = in_layout(x[half], layout), in_layout(w[half], layout)
        xh.requires_grad_(True)  # (without an input gradient the backward exchanges nothing)
        with _Counted() as calls:
            y = layer(xh)
            forward = dict(calls)
            (y * wh).sum().backward()
        got = {"forward_calls": forward,
               "backward_calls": {k: calls[k] - forward[k] for k in calls},
               "channels_last": y.transpose(1, 2).flatten(1, 2).is_contiguous(
                   memory_format=torch.channels_last) if y.dim() == 5 else
               y.is_contiguous(memory_format=torch.channels_last)}
        layer = convert_sync_batchnorm(_layer(kind, channels)).train()
        got.update(_step(layer, xh, wh))
        got["unsynced_y"] = _step(_layer(kind, channels).train(), xh, wh)["y"]
        for k in ("w_grad", "b_grad"):  # what DDP's gradient all-reduce would sum
            dist.all_reduce(got[k])
        torch.save(got, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
    exit_worker()


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(case, tmp_path):
    """float64, so any difference beyond summation order (1e-12) is a wrong formula; one
    all-gather in the forward and one all-reduce in the backward per layer, nothing else;
    the output keeps the input's memory format. With a large offset (1e6 + 2·N(0, 1)) the
    Chan merge keeps the statistics to ~1e-11, where sum and sum of squares would lose
    ~1e-4 of the variance (the control below)."""
    kind, channels, layout, offset = case
    out = str(tmp_path / "out")
    mp.spawn(_worker, args=(case, str(tmp_path / "store"), out), nprocs=2, join=True)
    x, w = _inputs(kind, channels, offset)
    want = _step(_layer(kind, channels).train(), x, w)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in ranks:
        gathers = r["forward_calls"].pop("all_gather_single", 0) + \
            r["forward_calls"].pop("all_gather_into_tensor", 0)
        assert gathers == 1 and set(r["forward_calls"].values()) == {0}, r["forward_calls"]
        assert r["backward_calls"].pop("all_reduce") == 1
        assert set(r["backward_calls"].values()) == {0}, r["backward_calls"]
        assert r["channels_last"] is (layout == "channels_last")
    # at a 1e6 offset float64 rounding is ~1e-10 of x: the native kernels' own (x - mean,
    # Σ dy·x - mean·Σ dy) moves outputs and gradients by ~1e-10 and ~1e-8 relative, and each
    # process's mean (a sum of 1e6-sized terms) by ~1e-9, which the merge passes on to the
    # variance at ~1e-11 relative; the one-pass formula would lose ~1e-4 (control below)
    tol, grad_tol, stat_tol = (1e-12,) * 3 if offset < 100 else (1e-8, 1e-6, 1e-9)
    for k in ("y", "x_grad"):
        torch.testing.assert_close(torch.cat([r[k] for r in ranks]), want[k],
                                   rtol=tol, atol=tol)
    # control: per-process statistics (no sync) give visibly different outputs
    unsynced = torch.cat([r["unsynced_y"] for r in ranks])
    assert (unsynced - want["y"]).abs().max() > 1e-3
    for r in ranks:
        for k in ("w_grad", "b_grad"):
            torch.testing.assert_close(r[k], want[k], rtol=grad_tol, atol=grad_tol)
        for k in ("mean", "var"):
            torch.testing.assert_close(r[k], want[k], rtol=stat_tol, atol=stat_tol)
    if offset > 100:  # control: the one-pass formula (sum and sum of squares) is far off
        dims = [0, *range(2, x.dim())]
        naive = (x * x).mean(dims) - x.mean(dims) ** 2
        assert (naive - x.var(dims, unbiased=False)).abs().max() > 1e3 * stat_tol


# ---------------------------------------------------------------------------- old paths
def test_engine_paths_are_deprecated_aliases(monkeypatch):
    """``equivlib.engine.sync_batchnorm`` and ``equivlib.engine.convert_sync_batchnorm`` still
    work for one release and warn; they give the objects of ``equivlib.layers``."""
    import importlib
    import sys

    import equivlib.engine
    import equivlib.layers

    monkeypatch.delitem(sys.modules, "equivlib.engine.sync_batchnorm", raising=False)
    with pytest.warns(DeprecationWarning, match="equivlib.engine.sync_batchnorm moved to "
                      "equivlib.layers.sync_norm; the alias goes in equivlib 0.2"):
        old = importlib.import_module("equivlib.engine.sync_batchnorm")
    for name in old.__all__:
        assert getattr(old, name) is getattr(equivlib.layers, name)
    with pytest.warns(DeprecationWarning, match="equivlib.engine.convert_sync_batchnorm moved"):
        assert equivlib.engine.convert_sync_batchnorm is convert_sync_batchnorm
