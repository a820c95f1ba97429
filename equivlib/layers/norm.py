"""Batch norm of group maps: statistics per channel, shared over orientations and
positions, computed by native kernels on a view of the map in its own memory layout.

:func:`batch_norm` is the one implementation (also behind the synchronised batch norms of
:mod:`equivlib.layers.sync_norm`, which pass a :class:`StatisticsExchange`); batch norm
runs native kernels on a view whose channel axis is ``C`` (in channels_last
``(B·H·W·|G|, C)``, in NCHW ``(B·|G|, C, H·W)``; for fewer than :data:`SMALL_CHANNELS`
channels in channels_last, native statistics per (orientation, channel) on the 4-D map,
merged per channel), so the statistics shared over orientations cost about what
per-channel ones do, without a layout copy.

Exactness: no subsampling, statistics shared over the group axis: exact at every size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from equivlib.groups import Group, get_group
from equivlib.layers._layout import (
    channel_view,
    fold_group_map,
    from_channel_view,
    unfold_group_map,
)
from equivlib.layers._validation import check_input, positive_int
from equivlib.layers.base import GroupLayer

__all__ = ["SMALL_CHANNELS", "GroupBatchNorm", "StatisticsExchange", "batch_norm",
           "plain_batch_norm"]

# Below this many channels per orientation, a channels_last group map's statistics are taken
# per (orientation, channel) by the native kernel over all |G|·C channels and merged: the
# native channels_last kernels vectorise over the channel axis, and a view with C < 16
# channels fills less than one AVX-512 register (measured: C = 10, 12 twice as slow as the
# merged path; C = 32, 64 the view is faster).
SMALL_CHANNELS = 16


class StatisticsExchange:
    """How a batch norm shares statistics beyond its own batch (the synchronised batch norms
    of :mod:`equivlib.layers.sync_norm` pass an all-gather / all-reduce over
    processes); this base class is one process: nothing to exchange."""

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """``(P, n)``: the 1-D float64 ``local`` of each of the ``P`` participants."""
        return local.unsqueeze(0)

    def sum_(self, sums: torch.Tensor) -> torch.Tensor:
        """``sums`` summed over the participants, in place."""
        return sums


def _merge_statistics(table: torch.Tensor, parts: int, channels: int,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global (count, mean, biased variance) per channel from rows ``[n, mean (parts·C),
    var (parts·C)]`` (float64), one row per participant, ``parts`` equal-count parts per
    channel in each: Chan et al.'s merge ``M2 = Σ n_i var_i + Σ n_i (mean_i - mean)²``, a sum of
    non-negative terms (no cancellation whatever the data's offset)."""
    counts = table[:, :1].unsqueeze(-1)  # (P, 1, 1), per part
    size = parts * channels
    means = table[:, 1:1 + size].view(-1, parts, channels)
    variances = table[:, 1 + size:].view(-1, parts, channels)
    total = counts.sum() * parts
    mean = (counts * means).sum((0, 1)) / total
    m2 = (counts * variances).sum((0, 1)) + (counts * (means - mean) ** 2).sum((0, 1))
    return total, mean, m2 / total


class _SharedBatchNorm(torch.autograd.Function):
    """Training batch norm of ``x`` (``(N, parts·C, ...)``, channel ``j = part·C + c``) with
    statistics per ``c`` over every part, position and exchange participant. Forward: one
    native statistics pass per part-channel, the merge per channel (with an exchange: one
    gather of ``1 + 2·parts·C`` numbers, merged in float64), one native normalisation pass.
    Backward: one native reduction pass, (with an exchange: one sum of ``2C`` numbers), the
    input gradient as a per-channel ``a·dy + b·x + c`` (one native pass, one in-place
    ``addcmul_``). Returns the output and the global mean, biased variance and count (not
    differentiable). Parameter gradients are this participant's own. Written with few small
    ops: on a small map each costs about as much as a native pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None,
                bias: torch.Tensor | None, eps: float, parts: int,
                exchange: StatisticsExchange | None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        channels = x.shape[1] // parts
        count = x.numel() // x.shape[1]
        if count > 0:
            part_mean, part_var = torch.batch_norm_update_stats(x, None, None, 0.0)
        else:  # an empty batch (one process's shard) contributes nothing
            part_mean = part_var = x.new_zeros(x.shape[1])
        if exchange is None:  # equal parts: mean of means, mean variance + variance of means
            spread, mean = torch.var_mean(part_mean.view(parts, channels), 0, correction=0)
            var = part_var.view(parts, channels).mean(0).add_(spread)
            total = float(count * parts)
        else:
            local = torch.cat([part_mean.new_full((1,), float(count)), part_mean, part_var])
            counts, mean, var = _merge_statistics(exchange.gather(local.to(torch.float64)),
                                                  parts, channels)
            total = float(counts)
        invstd = var.add(eps).rsqrt_()
        scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
        shift = -mean * scale if bias is None else torch.addcmul(bias.to(scale.dtype), mean,
                                                                 scale, value=-1)
        zeros = x.new_zeros(x.shape[1])
        ones = zeros + 1
        y = torch.batch_norm(x, _parts(scale, parts, x.dtype), _parts(shift, parts, x.dtype),
                             zeros, ones, False, 0.0, 0.0, False)  # x·scale + shift
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.parts, ctx.count, ctx.exchange, ctx.constants = parts, total, exchange, (zeros, ones)
        ctx.dtypes = (None if weight is None else weight.dtype,
                      None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var, total

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *_: Any) -> tuple:
        x, mean, invstd, scale = ctx.saved_tensors
        parts, channels, dtype = ctx.parts, x.shape[1] // ctx.parts, x.dtype
        # Σ dy and Σ dy·x̂ per (part, channel): one native pass
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, x, None, None, None, _parts(mean, parts, dtype), _parts(invstd, parts, dtype),
            True, 0.0, [False, True, True])
        local = torch.stack([sum_dy, sum_dy_xhat]).view(2, parts, channels).sum(1)
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = local if ctx.exchange is None else ctx.exchange.sum_(
                local.to(torch.float64, copy=True))
            total_dy, total_dy_xhat = sums.to(scale.dtype)
            # dx = scale·(dy - Σdy/n - x̂·Σdy·x̂/n) = scale·dy + b·x + c per channel
            b = (scale * invstd).mul_(total_dy_xhat).div_(-ctx.count)
            c = torch.addcmul((total_dy * scale).div_(-ctx.count), b, mean, value=-1)
            grad_x = torch.batch_norm(x, _parts(b, parts, dtype), _parts(c, parts, dtype),
                                      *ctx.constants, False, 0.0, 0.0, False)  # b·x + c
            shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
            grad_x.addcmul_(dy, _parts(scale, parts, dtype).view(shape))
        weight_dtype, bias_dtype = ctx.dtypes
        grad_w = local[1].to(weight_dtype) if ctx.needs_input_grad[1] else None
        grad_b = local[0].to(bias_dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None


def _parts(t: torch.Tensor, parts: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-channel vector repeated for each part (``t.repeat(parts)``, cheaper), in
    ``dtype``."""
    t = t.to(dtype)
    return t if parts == 1 else t.expand(parts, t.shape[0]).reshape(-1)


def _repeat(t: torch.Tensor | None, parts: int) -> torch.Tensor | None:
    return t if t is None else _parts(t, parts, t.dtype)


def _native_view(x: torch.Tensor) -> tuple[torch.Tensor, int, Callable[[torch.Tensor],
                                                                        torch.Tensor]]:
    """The tensor the native kernels see, how many parts each channel has in it, and the map
    back to ``x``'s shape and layout: a channels_last orientation-major group map with fewer
    than :data:`SMALL_CHANNELS` channels folded to ``(B, |G|·C, H, W)`` (``|G|`` parts);
    anything else as :func:`channel_view` (one part)."""
    if x.dim() == 5 and x.shape[1] < SMALL_CHANNELS:
        folded, orientation_major = fold_group_map(x)
        if orientation_major and not folded.is_contiguous() and \
                folded.is_contiguous(memory_format=torch.channels_last):
            return folded, x.shape[2], (
                lambda y: unfold_group_map(y, x.shape[1], orientation_major=True))
    view, perm, shape = channel_view(x)
    return view, 1, (lambda y: from_channel_view(y, perm, shape))


def batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
               exchange: StatisticsExchange | None = None) -> torch.Tensor:
    """``bn``'s batch norm of ``x`` (``(B, C, ...)``): statistics per channel over every other
    dim (for a group map ``(B, C, |G|, H, W)``: shared over orientations and positions), in
    ``x``'s memory layout without a layout copy (native kernels on :func:`channel_view`, or
    on the folded map for few channels in channels_last), output in ``x``'s layout.
    ``exchange`` widens the training statistics beyond this batch (see
    :class:`StatisticsExchange`). Running statistics, momentum and ``num_batches_tracked``
    follow ``nn.BatchNorm*`` (unbiased running variance)."""
    data, parts, back = _native_view(x)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                  else bn.momentum)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    running = (bn.running_mean, bn.running_var) if not bn.training or \
        bn.track_running_stats else (None, None)
    if not batch_stats or (parts == 1 and exchange is None):  # one native call
        y = F.batch_norm(data, _repeat(running[0], parts), _repeat(running[1], parts),
                         _repeat(bn.weight, parts), _repeat(bn.bias, parts), batch_stats,
                         factor, bn.eps)
        return back(y)
    compute = data if data.dtype in (torch.float32, torch.float64) else data.float()
    y, mean, var, count = _SharedBatchNorm.apply(compute, bn.weight, bn.bias, bn.eps, parts,
                                                 exchange)
    if running[0] is not None:
        with torch.no_grad():
            running[0].mul_(1 - factor).add_(mean.to(running[0].dtype), alpha=factor)
            running[1].mul_(1 - factor).add_(var.to(running[1].dtype),
                                             alpha=factor * count / max(count - 1, 1))
    return back(y.to(x.dtype))


class GroupBatchNorm(GroupLayer, nn.BatchNorm3d):
    """Batch norm for ``(B, C, |G|, H, W)`` maps: statistics and affine parameters per
    channel, shared over orientations and positions (so it commutes with the group action).

    Native batch-norm kernels on a view of the map (see :func:`batch_norm`): it keeps the
    memory format and, for the layers' orientation-major maps, costs about what a
    per-channel ``nn.BatchNorm2d`` does.

    It has no subsampling, so it is exact at every input size.
    """

    def __init__(
        self,
        group: str | Group,
        channels: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        self.group = get_group(group)
        super().__init__(positive_int("channels", channels), eps, momentum, affine,
                         track_running_stats)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        check_input(type(self).__name__, x, f"(B, C, {self.group.order}, H, W)", 5,
                     {1: self.num_features, 2: self.group.order})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return batch_norm(self, x)

    def export(self, orientation_major: bool = False) -> nn.BatchNorm2d:
        """``nn.BatchNorm2d(C·|G|)`` in eval mode with this layer's affine parameters and
        running statistics repeated per orientation: this layer in eval mode on the map
        flattened to ``(B, C·|G|, H, W)`` (channel-major, as ``x.flatten(1, 2)``; with
        ``orientation_major=True``: ``(B, |G|·C, H, W)``, channel ``g·C + c``).

        Exactness: the same function in eval mode only: in training this layer pools its
        batch statistics over the orientations, ``nn.BatchNorm2d`` takes them per (channel,
        orientation), so training the export breaks equivariance. Without running statistics
        (``track_running_stats=False``) there is no plain equivalent:
        ``NotImplementedError``. A snapshot: later changes here do not propagate."""
        if not self.track_running_stats or self.running_mean is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no running statistics: in eval mode it normalises "
                "with batch statistics pooled over the orientations, which nn.BatchNorm2d "
                "cannot do"
            )
        order = self.group.order

        def per_orientation(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(order) if orientation_major else t.repeat_interleave(order)

        plain = nn.BatchNorm2d(self.num_features * order, self.eps, self.momentum, self.affine,
                               track_running_stats=True, device=self.running_mean.device,
                               dtype=self.running_mean.dtype)
        with torch.no_grad():
            if self.affine:
                plain.weight = nn.Parameter(per_orientation(self.weight))
                plain.bias = nn.Parameter(per_orientation(self.bias))
            plain.running_mean = per_orientation(self.running_mean)
            plain.running_var = per_orientation(self.running_var)
            plain.num_batches_tracked = self.num_batches_tracked.clone()
        return plain.train(False)

    def extra_repr(self) -> str:
        return f"{self.group.name}, " + super().extra_repr()


def plain_batch_norm(bn: nn.modules.batchnorm._BatchNorm) -> nn.BatchNorm2d:
    """``nn.BatchNorm2d`` in eval mode with the state of a batch norm of images ``(B, C, H,
    W)`` that is not a torch class (such as :class:`~equivlib.layers.SyncBatchNorm`: plain
    batch norm in eval mode). Exactness: the same function in eval mode; without running
    statistics, ``NotImplementedError``."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise NotImplementedError(f"{type(bn).__name__} has no running statistics")
    plain = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                           track_running_stats=True, device=bn.running_mean.device,
                           dtype=bn.running_mean.dtype)
    plain.load_state_dict(bn.state_dict())
    return plain.train(False)
