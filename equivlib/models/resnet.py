"""Model builders and a registry: ``get_model("p4_resnet44", num_classes=10, **config)``.

One implementation per architecture family, parametrised by the group (``None`` = Z2, i.e.
plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.MaxPool2d``), so Z2, P4 and P4M share code.
Group models take ordinary images ``(B, C, H, W)``: their first conv is a lifting conv.

Exactness (DESIGN.md §2, checked by :func:`equivlib.exactness.trace`):

- pre-activation ResNets (stride-2 3x3 / pad 1 convs and 1x1 stride-2 shortcuts) need an
  **odd** input at every stride-2 stage: ResNet-44 at 33 or 97 (not 32, 96), ResNet-18 at 225
  (not 224);
- the RotMNIST CNN (one 2x2 stride-2 max-pool) needs an **even** input: 28 (not 27, 29).

With coset pooling (the default) an exact group model gives invariant logits; without it the
logits see the orientation axis and are not invariant even at an exact size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from equivlib.export import ExportMixin
from equivlib.groups import Group, get_group
from equivlib.layers import (
    CosetPool,
    GroupBatchNorm,
    GroupConv2d,
    GroupMaxPool2d,
    LiftingConv2d,
)

__all__ = [
    "InvariantHead",
    "PreActBlock",
    "PreActResNet",
    "RotMNISTCNN",
    "SingleLayerP4",
    "get_model",
    "list_models",
    "register_model",
]

GroupSpec = str | Group | None


# ---------------------------------------------------------------------------- layer factory
class _Layers:
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

    def __init__(self, layers: _Layers, channels: int, num_classes: int,
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


def _check_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _check_widths(widths: Sequence[int], stages: int) -> list[int]:
    widths = list(widths)
    if len(widths) != stages or not all(
        isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
    ):
        raise ValueError(f"widths must be {stages} positive ints (one per stage), got {widths!r}")
    return widths


# ---------------------------------------------------------------------------- ResNets
class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut
    (1x1 stride-``s`` conv and BN of the pre-activated input when the stride or width
    changes; with that BN the PCam widths give the paper's 129,538 / 128,652 parameters)."""

    def __init__(self, layers: _Layers, cin: int, cout: int, stride: int) -> None:
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
        widths = _check_widths(widths, len(blocks))
        layers = _Layers(group)
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
        self.head = InvariantHead(layers, cin, _check_classes(num_classes), coset_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the head: ``(B, C, |G|, h, w)`` (``(B, C, h, w)`` for Z2)."""
        return self.relu(self.bn(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- RotMNIST CNN
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
        layers = _Layers(group)
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
        self.head = InvariantHead(layers, c, _check_classes(num_classes), coset_pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the head."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- single layer
class SingleLayerP4(ExportMixin, nn.Module):
    """One strided P4 lifting conv (3x3, stride 2, pad 1) -> global average pool -> coset
    max pool -> linear: the smallest network that can *learn* to break invariance (C4).

    Exact only for an **odd** input (33; not 32): there the logits are invariant to 90°
    rotations, so it cannot tell an image from its rotation.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 1, channels: int = 1) -> None:
        super().__init__()
        layers = _Layers("p4")
        self.group = layers.group
        self.in_channels = in_channels
        self.lift = layers.lift(in_channels, channels, 3, stride=2, padding=1, bias=True)
        self.head = InvariantHead(layers, channels, _check_classes(num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The lifted feature map ``f(x)``: ``(B, channels, 4, ceil(H/2), ceil(W/2))``."""
        return self.lift(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_REVISIONS: dict[str, int] = {}


def register_model(name: str, revision: int = 0,
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes=..., **config) -> nn.Module``.

    ``revision`` counts changes of the architecture; it is part of a run's config (and so
    of its results-store key), so results of an older architecture are never reused."""
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        _REVISIONS[name] = revision
        return builder
    return decorator


def model_revision(name: str) -> int:
    """The architecture revision of registered model ``name`` (see :func:`register_model`)."""
    if name not in _REVISIONS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REVISIONS[name]


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_REGISTRY)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (its keyword parameters are the config keys
    :func:`get_model` accepts). Unknown names raise ``ValueError``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, num_classes: int | None = None, **config) -> nn.Module:
    """Build a registered model. ``num_classes`` defaults to the builder's default (10 for
    everything except ``p4_single_layer``: 2). Unknown names raise ``ValueError``, unknown
    config keys ``TypeError``."""
    builder = get_model_builder(name)
    accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"accepted: num_classes, {', '.join(accepted)}"
        )
    if num_classes is not None:
        config["num_classes"] = num_classes
    return builder(**config)


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


@register_model("p4_single_layer")
def p4_single_layer(num_classes: int = 2, in_channels: int = 1,
                    channels: int = 1) -> SingleLayerP4:
    """One P4 lifting conv (3x3, stride 2, pad 1) + pooling + linear; exact at odd sizes."""
    return SingleLayerP4(num_classes, in_channels, channels)
