"""How a group map ``(B, C, |G|, H, W)`` and its 4-D views share memory: folding to
``(B, C·|G|, H, W)`` and back without a copy, and the per-channel view batch norm reduces
over. Pure layout: no function here changes a value."""

from __future__ import annotations

import math
from itertools import pairwise

import torch


def _mergeable(x: torch.Tensor, outer: int, inner: int) -> bool:
    """Whether dims ``outer`` and ``inner`` of ``x`` merge into one dim (outer first) as a
    view."""
    return (x.shape[outer] == 1 or x.shape[inner] == 1
            or x.stride(outer) == x.shape[inner] * x.stride(inner))


def fold_group_map(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A group map ``(B, C, |G|, H, W)`` as ``(B, C·|G|, H, W)`` and whether its channel order is
    orientation-major (channel ``g·C + c``; else ``c·|G| + g``).

    A view whenever one of the two orders allows it (the layers' own outputs are
    orientation-major views, a contiguous 5-D tensor is channel-major), so the memory format
    is kept; otherwise one copy, orientation-major. Folding changes no value.
    """
    b, c, g, h, w = x.shape
    if _mergeable(x, 2, 1):
        return x.transpose(1, 2).reshape(b, g * c, h, w), True
    if _mergeable(x, 1, 2):
        return x.reshape(b, c * g, h, w), False
    return x.transpose(1, 2).reshape(b, g * c, h, w), True


def unfold_group_map(y: torch.Tensor, channels: int, orientation_major: bool) -> torch.Tensor:
    """Inverse of :func:`fold_group_map`: ``(B, C·|G|, H, W)`` back to ``(B, C, |G|, H, W)``, a
    view."""
    b, cg, h, w = y.shape
    if orientation_major:
        return y.view(b, cg // channels, channels, h, w).transpose(1, 2)
    return y.view(b, channels, cg // channels, h, w)


def channel_view(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """``x`` of shape ``(B, C, ...)`` as ``(N, C, L)`` over the same memory: the dims stored
    outside the channel axis merge into ``N``, those stored inside it into ``L``, so
    reductions per channel see one native-layout tensor (a channels_last map gives
    ``L = 1``, NCHW gives ``L = H·W``). Returns the view, the permutation applied and the
    permuted shape (for :func:`from_channel_view`); a layout without such a view is copied
    to ``(B, C, prod(...))``."""
    dims = [d for d in range(x.dim()) if d == 1 or x.shape[d] != 1]
    order = sorted(dims, key=lambda d: -x.stride(d))  # outermost first
    k = order.index(1)
    outer, inner = order[:k], order[k + 1:]
    if all(_mergeable(x, a, b) for part in (outer, inner) for a, b in pairwise(part)):
        perm = (*outer, 1, *inner, *(d for d in range(x.dim()) if d not in dims))
        n = math.prod(x.shape[d] for d in outer)
        inner_size = math.prod(x.shape[d] for d in inner)
        permuted = x.permute(perm)
        return permuted.reshape(n, x.shape[1], inner_size), perm, tuple(permuted.shape)
    perm = tuple(range(x.dim()))
    return x.reshape(x.shape[0], x.shape[1], -1), perm, tuple(x.shape)


def from_channel_view(y: torch.Tensor, perm: tuple[int, ...],
                      shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`channel_view` for a result ``y`` of the view's shape: same strides as
    the original input when ``y`` has the view's strides."""
    inverse = [0] * len(perm)
    for i, d in enumerate(perm):
        inverse[d] = i
    return y.reshape(shape).permute(inverse)
