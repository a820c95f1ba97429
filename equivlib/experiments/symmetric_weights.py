"""Weights that make an ordinary network as symmetric as its architecture allows (notebook 09).

:func:`equivlib.tracer.trace` judges the sampling grids of a network and *assumes* that the
weights indexed by a position inside a window are D4-symmetric, as a group convolution's are:
convolution kernels, relative position bias tables, the weights of a 2x2 patch merge. With
such weights, pointwise layers and global pooling, a network whose grids are all symmetric
("exact") has logits that are invariant to 90° rotations and flips — which is what notebook
09 measures. :func:`symmetrize` makes exactly those weights symmetric, in place; with
``positional=True`` also the weights that the tracer reports as ``grid_only`` (a positional
embedding, a classifier that flattens a spatial map), which the architecture leaves free.

Every projection is onto the D4-invariant weights of the same shape: square kernels become
the mean of their 8 rotations and flips; a non-square kernel (Inception's 1x7) keeps only
the taps whose whole D4 orbit lies inside it (for 1xk: the centre tap), so a rotated copy of
the kernel is the kernel itself.
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn

_CHUNK = 1 << 20  # elements averaged at once: a large tensor goes through the cache in pieces


def d4_average(t: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """The mean of the 8 rotations and flips of ``t`` over its two (equal) ``dims``. A large
    tensor is averaged in slices of its first dim (when that is not one of ``dims``): the same
    sums in the same order, element by element, a few times faster than whole copies."""
    if t.shape[dims[0]] != t.shape[dims[1]]:
        raise ValueError(f"d4_average needs a square grid, got {tuple(t.shape)} over {dims}")
    step = max(1, _CHUNK // max(1, t[0].numel())) if t.dim() > 2 else t.shape[0]
    if t.numel() > 4 * _CHUNK and t.shape[0] > step and 0 not in {d % t.dim() for d in dims}:
        out = torch.empty_like(t)
        for i in range(0, t.shape[0], step):
            out[i:i + step] = d4_average(t[i:i + step], dims)
        return out
    total = torch.zeros_like(t)
    for k in range(4):  # accumulated one copy at a time: a VGG head holds 10^8 weights
        turned = torch.rot90(t, k, dims)
        total += turned
        total += turned.flip(dims[1])
    return total / 8


def symmetric_kernel(w: torch.Tensor, dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The D4-invariant kernel closest to ``w`` (shape ``(..., kh, kw)``) with the same
    support: orbits of tap offsets that lie wholly inside the kernel get the mean of their
    taps, the others zero. A square kernel gets the plain D4 mean."""
    kh, kw = w.shape[-2:]
    if dilation[0] != dilation[1]:
        raise ValueError(f"a kernel with dilation {dilation} has no D4-symmetric form "
                         "(rotations swap the two dilations)")
    if kh % 2 != kw % 2:
        raise ValueError(f"a {kh}x{kw} kernel has no D4-symmetric form (its centre is a tap on "
                         "one axis and between taps on the other)")
    if kh == kw:
        return d4_average(w)
    s = max(kh, kw)
    top, left = (s - kh) // 2, (s - kw) // 2
    square = w.new_zeros(*w.shape[:-2], s, s)
    square[..., top:top + kh, left:left + kw] = w
    inside = w.new_zeros(s, s)
    inside[top:top + kh, left:left + kw] = 1
    whole_orbit = d4_average(inside) > 1 - 1e-9  # every image of the tap is a tap too
    return torch.where(whole_orbit, d4_average(square), 0)[..., top:top + kh, left:left + kw]


def _square_side(n: int, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{what}: {n} positions are not a square grid")
    return side


def _symmetric_bias_table(table: torch.Tensor, window: list[int]) -> torch.Tensor:
    """A relative position bias table, ``((2w-1)^2, heads)``, made D4-symmetric in its
    offsets (the table is centred on offset 0, so array rotations rotate the offsets)."""
    side = 2 * window[0] - 1
    if list(window) != [window[0]] * 2:
        raise ValueError(f"relative position bias of a {window} window: not square")
    return d4_average(table.reshape(side, side, -1), (0, 1)).reshape(table.shape)


def _symmetrize_swin_v2_bias(attn: nn.Module) -> None:
    """Swin v2 computes its bias table with an MLP of the offsets: make the module return the
    D4-mean of that table instead (the table's values as now, symmetrised)."""
    from torchvision.models.swin_transformer import _get_relative_position_bias

    def symmetric_bias(self: nn.Module) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        table = _symmetric_bias_table(table, self.window_size)
        return 16 * torch.sigmoid(_get_relative_position_bias(
            table, self.relative_position_index, self.window_size))

    attn.get_relative_position_bias = types.MethodType(symmetric_bias, attn)


# Swin's patch merge concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]
# (height offset, width offset) before its Linear: a 2x2 stride-2 convolution in disguise.
_MERGE_TAPS = ((0, 0), (1, 0), (0, 1), (1, 1))


def _symmetrize_merge(linear: nn.Linear) -> None:
    out_features, in_features = linear.weight.shape
    c = in_features // 4
    w = linear.weight.view(out_features, 4, c)
    kernel = w.new_empty(out_features, c, 2, 2)
    for p, (dh, dw) in enumerate(_MERGE_TAPS):
        kernel[..., dh, dw] = w[:, p]
    kernel = d4_average(kernel)
    for p, (dh, dw) in enumerate(_MERGE_TAPS):
        w[:, p] = kernel[..., dh, dw]


def _flatten_head(model: nn.Module) -> tuple[nn.Linear, int] | None:
    """The first Linear of a classifier that flattens an adaptive-pooled map (VGG,
    AlexNet) and the side k of that map: ``model.avgpool`` pools to k x k with k > 1,
    ``model.classifier`` reads it."""
    pool, classifier = getattr(model, "avgpool", None), getattr(model, "classifier", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(classifier, nn.Sequential):
        return None
    size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
    linear = next((m for m in classifier if isinstance(m, nn.Linear)), None)
    if size == (1, 1) or size[0] != size[1] or linear is None:
        return None
    return linear, size[0]


def symmetrize(model: nn.Module, positional: bool = False) -> list[str]:
    """Make ``model``'s position-indexed weights D4-symmetric in place; returns what was
    changed (module names with the kind of weight).

    Always: every ``Conv2d`` kernel (:func:`symmetric_kernel`), Swin's relative position
    biases (v1 table, v2 MLP output) and patch-merge weights — the weights the tracer assumes
    symmetric. With ``positional``: also a ViT's positional embedding over its patch grid
    and the first Linear of a flattening classifier head (the tracer's ``grid_only`` rows).
    """
    from torchvision.models import swin_transformer as swin

    changed: list[str] = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(symmetric_kernel(m.weight, m.dilation))
                changed.append(f"{name}: kernel")
            elif isinstance(m, swin.ShiftedWindowAttentionV2):
                _symmetrize_swin_v2_bias(m)
                changed.append(f"{name}: relative position bias")
            elif isinstance(m, swin.ShiftedWindowAttention):
                m.relative_position_bias_table.copy_(
                    _symmetric_bias_table(m.relative_position_bias_table, m.window_size))
                changed.append(f"{name}: relative position bias")
            elif isinstance(m, swin.PatchMerging | swin.PatchMergingV2):
                _symmetrize_merge(m.reduction)
                changed.append(f"{name}: patch merge")
            if positional and isinstance(getattr(m, "pos_embedding", None), nn.Parameter):
                embedding = m.pos_embedding  # (1, 1 + g*g, D): a class token, then the grid
                side = _square_side(embedding.shape[1] - 1, f"{name}.pos_embedding")
                grid = embedding[:, 1:].reshape(embedding.shape[0], side, side, -1)
                embedding[:, 1:] = d4_average(grid, (1, 2)).reshape(embedding[:, 1:].shape)
                changed.append(f"{name}: positional embedding")
        head = _flatten_head(model) if positional else None
        if head is not None:
            linear, k = head
            w = linear.weight.view(linear.out_features, -1, k, k)
            w.copy_(d4_average(w))
            changed.append("classifier: flattening head")
    return changed
