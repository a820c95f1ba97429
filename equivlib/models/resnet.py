"""Pre-activation ResNets (ResNet-18, -20, -44) on Z2, P4 and P4M, and their builders.

Exactness: stride-2 3x3 / pad 1 convs and 1x1 stride-2 shortcuts need an **odd** input at
every stride-2 stage: ResNet-44 and -20 at 33 or 97 (not 32, 96), ResNet-18 at 225 (not 224).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equivlib.export import ExportMixin
from equivlib.models._api import register_model
from equivlib.models._parts import (
    GroupSpec,
    InvariantHead,
    LayerFactory,
    check_num_classes,
    check_widths,
)

__all__ = ["PreActBlock", "PreActResNet"]


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut
    (1x1 stride-``s`` conv and BN of the pre-activated input when the stride or width
    changes; with that BN the PCam widths give the paper's 129,538 / 128,652 parameters)."""

    def __init__(self, layers: LayerFactory, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = layers.bn(cin)
        self.conv1 = layers.conv(cin, cout, 3, stride, padding=1)
        self.bn2 = layers.bn(cout)
        self.conv2 = layers.conv(cout, cout, 3, 1, padding=1)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (nn.Sequential(layers.conv(cin, cout, 1, stride), layers.bn(cout))
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip


class PreActResNet(ExportMixin, nn.Module):
    """Pre-activation ResNet on Z2 (``group=None``), P4 or P4M.

    3x3 stride-1 stem, stages of :class:`PreActBlock` (the first block of a stage carries
    the stage's stride), final BN-ReLU and an :class:`InvariantHead`. ``widths`` are the
    per-stage channel counts (per orientation for group models).

    Exact only if the input is odd at every stride-2 stage (strides (1, 2, 2): 33, 97, not
    32, 96; strides (1, 2, 2, 2): 225, not 224).
    """

    def __init__(
        self,
        group: GroupSpec,
        blocks: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        coset_pool: bool = True,
    ) -> None:
        super().__init__()
        if not len(blocks) == len(strides):
            raise ValueError(f"blocks {list(blocks)} and strides {list(strides)} differ in length")
        widths = check_widths(widths, len(blocks))
        layers = LayerFactory(group)
        self.group = layers.group
        self.in_channels = in_channels
        self.stem = layers.lift(in_channels, widths[0], 3, 1, padding=1)
        stages, cin = [], widths[0]
        for n_blocks, cout, stride in zip(blocks, widths, strides, strict=True):
            stage = [PreActBlock(layers, cin, cout, stride)]
            stage += [PreActBlock(layers, cout, cout, 1) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bn = layers.bn(cin)
        self.relu = nn.ReLU(inplace=False)
        self.head = InvariantHead(layers, cin, check_num_classes(num_classes), coset_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the head: ``(B, C, |G|, h, w)`` (``(B, C, h, w)`` for Z2)."""
        return self.relu(self.bn(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_RESNET44 = dict(blocks=(7, 7, 7), strides=(1, 2, 2))
_RESNET20 = dict(blocks=(3, 3, 3), strides=(1, 2, 2))  # the cpu profile's shallower twin
_RESNET18 = dict(blocks=(2, 2, 2, 2), strides=(1, 2, 2, 2))


def _stage_widths(base: int, stages: int) -> list[int]:
    return [base * 2**i for i in range(stages)]


def _resnet(group: GroupSpec, arch: dict, base: int, widths: Sequence[int] | None,
            **kwargs) -> PreActResNet:
    stages = len(arch["blocks"])
    return PreActResNet(group, widths=widths or _stage_widths(base, stages), **arch, **kwargs)


@register_model("z2_resnet44", revision=1)  # 1: BN after the 1x1 shortcut
def z2_resnet44(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """Z2 pre-activation ResNet-44, widths (32, 64, 128); ``coset_pool`` has no effect (it is
    accepted so that one config fits Z2 and group models alike)."""
    return _resnet(None, _RESNET44, 32, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4_resnet44", revision=1)  # 1: BN after the 1x1 shortcut
def p4_resnet44(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4 pre-activation ResNet-44, widths (16, 32, 64); exact at odd sizes such as 33, 97."""
    return _resnet("p4", _RESNET44, 16, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4m_resnet44", revision=1)  # 1: BN after the 1x1 shortcut
def p4m_resnet44(num_classes: int = 10, widths: Sequence[int] | None = None,
                 in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4M pre-activation ResNet-44, widths (12, 24, 48); exact at odd sizes such as 33, 97."""
    return _resnet("p4m", _RESNET44, 12, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("z2_resnet20", revision=1)  # 1: BN after the 1x1 shortcut
def z2_resnet20(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """Z2 pre-activation ResNet-20 (ResNet-44 with 3 blocks per stage), widths (32, 64, 128);
    ``coset_pool`` has no effect."""
    return _resnet(None, _RESNET20, 32, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4_resnet20", revision=1)  # 1: BN after the 1x1 shortcut
def p4_resnet20(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4 pre-activation ResNet-20 (3 blocks per stage), widths (16, 32, 64); exact at odd
    sizes such as 33, like ResNet-44 (same strides)."""
    return _resnet("p4", _RESNET20, 16, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4m_resnet20", revision=1)  # 1: BN after the 1x1 shortcut
def p4m_resnet20(num_classes: int = 10, widths: Sequence[int] | None = None,
                 in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4M pre-activation ResNet-20 (3 blocks per stage), widths (12, 24, 48); exact at odd
    sizes such as 33."""
    return _resnet("p4m", _RESNET20, 12, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("z2_resnet18", revision=1)  # 1: BN after the 1x1 shortcut
def z2_resnet18(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """Z2 pre-activation ResNet-18 (3x3 stem), widths (64, ..., 512); ``coset_pool`` unused."""
    return _resnet(None, _RESNET18, 64, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4_resnet18", revision=1)  # 1: BN after the 1x1 shortcut
def p4_resnet18(num_classes: int = 10, widths: Sequence[int] | None = None,
                in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4 pre-activation ResNet-18 (3x3 stem), widths (32, ..., 256); exact at 225, not 224."""
    return _resnet("p4", _RESNET18, 32, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)


@register_model("p4m_resnet18", revision=1)  # 1: BN after the 1x1 shortcut
def p4m_resnet18(num_classes: int = 10, widths: Sequence[int] | None = None,
                 in_channels: int = 3, coset_pool: bool = True) -> PreActResNet:
    """P4M pre-activation ResNet-18 (3x3 stem), widths (23, ..., 184); exact at 225, not 224."""
    return _resnet("p4m", _RESNET18, 23, widths, num_classes=num_classes,
                   in_channels=in_channels, coset_pool=coset_pool)

