"""The smallest network that can *learn* to break invariance (C4): one strided P4 lifting
conv, global average pool, coset max pool, linear.

Exactness: one 3x3 stride-2 pad-1 conv, so exact only for an **odd** input: 33 (not 32).
"""

from __future__ import annotations

import torch
from torch import nn

from equivlib.export import ExportMixin
from equivlib.models._api import register_model
from equivlib.models._parts import InvariantHead, LayerFactory, check_num_classes

__all__ = ["SingleLayerP4"]


class SingleLayerP4(ExportMixin, nn.Module):
    """One strided P4 lifting conv (3x3, stride 2, pad 1) -> global average pool -> coset
    max pool -> linear: the smallest network that can *learn* to break invariance (C4).

    Exact only for an **odd** input (33; not 32): there the logits are invariant to 90°
    rotations, so it cannot tell an image from its rotation.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 1, channels: int = 1) -> None:
        super().__init__()
        layers = LayerFactory("p4")
        self.group = layers.group
        self.in_channels = in_channels
        self.lift = layers.lift(in_channels, channels, 3, stride=2, padding=1, bias=True)
        self.head = InvariantHead(layers, channels, check_num_classes(num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The lifted feature map ``f(x)``: ``(B, channels, 4, ceil(H/2), ceil(W/2))``."""
        return self.lift(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("p4_single_layer")
def p4_single_layer(num_classes: int = 2, in_channels: int = 1,
                    channels: int = 1) -> SingleLayerP4:
    """One P4 lifting conv (3x3, stride 2, pad 1) + pooling + linear; exact at odd sizes."""
    return SingleLayerP4(num_classes, in_channels, channels)
