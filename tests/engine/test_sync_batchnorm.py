"""Synchronised batch norm: the conversion keeps every model's parameters, buffers, outputs
and exactness; with 2 gloo processes the layer computes what one process computes on the
concatenated batch (outputs, input and parameter gradients, running statistics)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_helpers import exit_worker
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from equivlib.checks import equivariance_error
from equivlib.engine.sync_batchnorm import (
    SyncBatchNorm,
    SyncGroupBatchNorm,
    convert_sync_batchnorm,
)
from equivlib.exactness import trace
from equivlib.layers import GroupBatchNorm
from equivlib.models import get_model

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
def _layer(kind: str) -> nn.Module:
    torch.manual_seed(3)
    layer = (nn.BatchNorm2d(3) if kind == "z2" else GroupBatchNorm(kind, 3)).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    shape = (6, 3, 5, 5) if kind == "z2" else (6, 3, {"p4": 4, "p4m": 8}[kind], 5, 5)
    x = 3.0 + 2.0 * torch.randn(shape, generator=g, dtype=torch.float64)
    return x, torch.randn(shape, generator=g, dtype=torch.float64)


def _step(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * w).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": layer.weight.grad.clone(),
            "b_grad": layer.bias.grad.clone(), "mean": layer.running_mean.clone(),
            "var": layer.running_var.clone()}


def _worker(rank: int, kind: str, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        layer = convert_sync_batchnorm(_layer(kind)).train()
        x, w = _inputs(kind)
        half = slice(3 * rank, 3 * rank + 3)
        got = _step(layer, x[half], w[half])
        got["unsynced_y"] = _step(_layer(kind).train(), x[half], w[half])["y"]
        for k in ("w_grad", "b_grad"):  # what DDP's gradient all-reduce would sum
            dist.all_reduce(got[k])
        torch.save(got, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
    exit_worker()


@pytest.mark.parametrize("kind", ["z2", "p4", "p4m"])
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(kind, tmp_path):
    """float64, so any difference beyond summation order (1e-12) is a wrong formula."""
    out = str(tmp_path / "out")
    mp.spawn(_worker, args=(kind, str(tmp_path / "store"), out), nprocs=2, join=True)
    x, w = _inputs(kind)
    want = _step(_layer(kind).train(), x, w)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for k in ("y", "x_grad"):
        torch.testing.assert_close(torch.cat([r[k] for r in ranks]), want[k],
                                   rtol=1e-12, atol=1e-12)
    # control: per-process statistics (no sync) give visibly different outputs
    unsynced = torch.cat([r["unsynced_y"] for r in ranks])
    assert (unsynced - want["y"]).abs().max() > 1e-3
    for r in ranks:
        for k in ("w_grad", "b_grad", "mean", "var"):
            torch.testing.assert_close(r[k], want[k], rtol=1e-12, atol=1e-12)
