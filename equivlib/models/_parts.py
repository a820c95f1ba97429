"""What every architecture shares: the layers of one group (the only place where Z2 and
P4 / P4M models differ), the invariant head and the argument checks of the builders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equivlib.groups import Group, get_group
from equivlib.layers import (
    CosetPool,
    GroupBatchNorm,
    GroupConv2d,
    GroupMaxPool2d,
    LiftingConv2d,
)

__all__ = ["GroupSpec", "InvariantHead"]

GroupSpec = str | Group | None


class LayerFactory:
    """The layers of one group; the only place where Z2 and P4/P4M models differ."""

    def __init__(self, group: GroupSpec) -> None:
        self.group = None if group is None else get_group(group)

    @property
    def order(self) -> int:
        """Number of orientations per channel (1 for Z2)."""
        return 1 if self.group is None else self.group.order

    def lift(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
             bias: bool = False) -> nn.Module:
        """First conv: image -> image (Z2) or image -> group map (lifting)."""
        if self.group is None:
            return nn.Conv2d(cin, cout, k, stride, padding, bias=bias)
        return LiftingConv2d(self.group, cin, cout, k, stride, padding, bias=bias)

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0,
             bias: bool = False) -> nn.Module:
        """Hidden conv: image -> image (Z2) or group map -> group map."""
        if self.group is None:
            return nn.Conv2d(cin, cout, k, stride, padding, bias=bias)
        return GroupConv2d(self.group, cin, cout, k, stride, padding, bias=bias)

    def bn(self, channels: int) -> nn.Module:
        if self.group is None:
            return nn.BatchNorm2d(channels)
        return GroupBatchNorm(self.group, channels)

    def max_pool(self, k: int, stride: int | None = None) -> nn.Module:
        if self.group is None:
            return nn.MaxPool2d(k, stride)
        return GroupMaxPool2d(k, stride)


class InvariantHead(nn.Module):
    """Global average pool, coset max pool (group models with ``coset_pool=True``), linear.

    Z2 features ``(B, C, H, W)`` and coset-pooled group features give ``C`` inputs to the
    linear layer; ``coset_pool=False`` flattens ``C x |G|`` features (not invariant logits).
    """

    def __init__(self, layers: LayerFactory, channels: int, num_classes: int,
                 coset_pool: bool = True) -> None:
        super().__init__()
        self.group = layers.group
        pooled = coset_pool and self.group is not None
        self.coset_pool = CosetPool("max") if pooled else None
        features = channels if (pooled or self.group is None) else channels * layers.order
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(-2, -1), keepdim=True)  # global average pool (exact at any size)
        if self.coset_pool is not None:
            x = self.coset_pool(x)
        return self.fc(x.flatten(1))


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def check_widths(widths: Sequence[int], stages: int) -> list[int]:
    widths = list(widths)
    if len(widths) != stages or not all(
        isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
    ):
        raise ValueError(f"widths must be {stages} positive ints (one per stage), got {widths!r}")
    return widths

