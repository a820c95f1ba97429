"""Each layer's own export(): the plain torch module computes what the layer computes in eval
mode, on the map flattened in either channel order, for P4 and P4M; every group layer speaks
the export protocol (GroupLayer)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from equivlib.groups import P4, P4M, Group
from equivlib.layers import (
    CosetPool,
    GroupAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupLayer,
    GroupMaxPool2d,
    LiftingConv2d,
    SyncBatchNorm,
    SyncGroupBatchNorm,
)

pytestmark = pytest.mark.usefixtures("single_thread")

CIN, COUT, BATCH, SIZE = 2, 3, 2, 9

LAYERS: dict[str, Callable[[Group], nn.Module]] = {
    "lifting": lambda g: LiftingConv2d(g, CIN, COUT, 3, stride=2, padding=1),
    "group": lambda g: GroupConv2d(g, CIN, COUT, 3, padding=1, dilation=2),
    "group-1x1-no-bias": lambda g: GroupConv2d(g, CIN, COUT, 1, stride=2, bias=False),
    "batchnorm": lambda g: GroupBatchNorm(g, CIN),
    "sync-batchnorm": lambda g: SyncGroupBatchNorm(g, CIN),
    "maxpool": lambda g: GroupMaxPool2d(3, stride=2, padding=1),
    "avgpool": lambda g: GroupAvgPool2d(2),
    "coset-max": lambda g: CosetPool("max"),
    "coset-mean": lambda g: CosetPool("mean"),
}


def _randomized(layer: nn.Module) -> nn.Module:
    """Non-trivial biases, affine parameters and running statistics, eval mode, float64."""
    layer = layer.double()
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name == "bias" or param.dim() == 1:
                param.normal_()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
            layer.num_batches_tracked.fill_(5)
    return layer.eval()


def _flatten(x: torch.Tensor, orientation_major: bool) -> torch.Tensor:
    """A group map ``(B, C, |G|, H, W)`` as ``(B, C·|G|, H, W)`` (or ``(B, |G|·C, H, W)``)."""
    if x.dim() == 4:
        return x
    return x.transpose(1, 2).flatten(1, 2) if orientation_major else x.flatten(1, 2)


def _unflatten(y: torch.Tensor, channels: int, group: Group,
               orientation_major: bool) -> torch.Tensor:
    if orientation_major:
        return y.unflatten(1, (group.order, channels)).transpose(1, 2)
    return y.unflatten(1, (channels, group.order))


def _export(layer: nn.Module, group: Group, orientation_major: bool) -> nn.Module:
    if isinstance(layer, CosetPool):  # the one layer that learns its group from its input
        return layer.export(group, orientation_major=orientation_major)
    return layer.export(orientation_major=orientation_major)


@pytest.mark.parametrize("group", [P4, P4M], ids=lambda g: g.name)
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("orientation_major", [False, True],
                         ids=["channel-major", "orientation-major"])
def test_layer_export_matches_the_layer_in_eval_mode(group: Group, kind: str,
                                                     orientation_major: bool) -> None:
    layer = _randomized(LAYERS[kind](group))
    shape = (BATCH, CIN, SIZE, SIZE) if kind == "lifting" else (BATCH, CIN, group.order,
                                                                SIZE, SIZE)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
    plain = _export(layer, group, orientation_major)
    assert {type(m).__module__.split(".")[0] for m in plain.modules()} == {"torch"}
    with torch.no_grad():
        want = layer(x)
        got = plain(_flatten(x, orientation_major))
    if want.dim() == 5:
        got = _unflatten(got, want.shape[1], group, orientation_major)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if orientation_major and isinstance(layer, (LiftingConv2d, GroupConv2d)):
        assert torch.equal(plain.weight, layer.expanded_weight()[0])  # bitwise its own bank


def test_image_sync_batch_norm_exports_as_batchnorm2d() -> None:
    bn = _randomized(SyncBatchNorm(3))
    plain = bn.export()
    assert type(plain) is nn.BatchNorm2d and not plain.training
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(plain(x), bn(x))


def test_batch_norm_export_is_a_snapshot_in_eval_mode() -> None:
    bn = _randomized(GroupBatchNorm(P4, 2))
    plain = bn.export()
    assert type(plain) is nn.BatchNorm2d and not plain.training
    assert plain.num_batches_tracked.item() == 5
    with torch.no_grad():
        bn.running_mean.add_(1.0)
    assert not torch.equal(plain.running_mean[::4], bn.running_mean)


def test_batch_norm_without_running_stats_has_no_export() -> None:
    with pytest.raises(NotImplementedError, match="pooled over the orientations"):
        GroupBatchNorm(P4, 2, track_running_stats=False).export()


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_group_layer_speaks_the_export_protocol(kind: str) -> None:
    layer = LAYERS[kind](P4)
    assert isinstance(layer, GroupLayer)
    takes = layer.export_input()
    if kind == "lifting":
        assert takes is None and layer.export_output(None) is P4
    elif kind.startswith(("maxpool", "avgpool", "coset")):
        assert takes == "any"
        assert layer.export_output(P4M) is (None if kind.startswith("coset") else P4M)
    else:
        assert takes is P4 and layer.export_output(P4) is P4
