"""The RotMNIST CNN of the paper (P4CNN-style, Cohen & Welling 2016) on Z2 and P4.

Exactness: one 2x2 stride-2 max-pool, so exact only for an **even** input: 28 (not 27, 29).
"""

from __future__ import annotations

import torch
from torch import nn

from equivlib.export import ExportMixin
from equivlib.models._api import register_model
from equivlib.models._parts import GroupSpec, InvariantHead, LayerFactory, check_num_classes

__all__ = ["RotMNISTCNN"]


class RotMNISTCNN(ExportMixin, nn.Module):
    """The RotMNIST CNN of the paper (P4CNN-style, Cohen & Welling 2016), 7 convs:

    lift/conv 3x3 pad 1 (``in_channels`` -> C), conv 3x3 pad 1, 2x2 max-pool (28 -> 14),
    4 x conv 3x3 pad 1, conv 4x4 unpadded (14 -> 11); every conv is followed by BatchNorm
    and ReLU, the first six also by dropout; then an :class:`InvariantHead` (global average
    pool, coset max pool, linear). With ``in_channels=3``: P4 C=10 has 24,990 parameters,
    Z2 C=20 has 25,570.

    Exact only for an **even** input (28; not 27 or 29), because of the 2x2 max-pool.
    """

    def __init__(
        self,
        group: GroupSpec,
        channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.3,
        coset_pool: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        layers = LayerFactory(group)
        self.group = layers.group
        self.in_channels = in_channels
        c = channels

        def block(conv: nn.Module, drop: bool = True) -> list[nn.Module]:
            return [conv, layers.bn(c), nn.ReLU()] + ([nn.Dropout(dropout)] if drop else [])

        self.body = nn.Sequential(
            *block(layers.lift(in_channels, c, 3, padding=1, bias=True)),
            *block(layers.conv(c, c, 3, padding=1, bias=True)),
            layers.max_pool(2),
            *[m for _ in range(4) for m in block(layers.conv(c, c, 3, padding=1, bias=True))],
            *block(layers.conv(c, c, 4, bias=True), drop=False),
        )
        self.head = InvariantHead(layers, c, check_num_classes(num_classes), coset_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the head."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("z2_mnist_cnn")
def z2_mnist_cnn(num_classes: int = 10, channels: int = 20, in_channels: int = 3,
                 dropout: float = 0.3, coset_pool: bool = True) -> RotMNISTCNN:
    """Z2 RotMNIST CNN, 20 channels (25,570 parameters); ``coset_pool`` has no effect."""
    return RotMNISTCNN(None, channels, num_classes, in_channels, dropout, coset_pool)


@register_model("p4_mnist_cnn")
def p4_mnist_cnn(num_classes: int = 10, channels: int = 10, in_channels: int = 3,
                 dropout: float = 0.3, coset_pool: bool = True) -> RotMNISTCNN:
    """P4 RotMNIST CNN, 10 channels (24,990 parameters); exact at even sizes such as 28."""
    return RotMNISTCNN("p4", channels, num_classes, in_channels, dropout, coset_pool)

