"""Batch norm whose training statistics span every process of a DDP run.

PyTorch's ``nn.SyncBatchNorm`` refuses CPU tensors, so a gloo run (and the tests here)
could not use it. These layers compute the statistics with two differentiable
all-reduces of ``dist.all_reduce`` (the global mean, then the global sum of squared
deviations), which work on gloo and NCCL alike; one code path on every device.

Exactness: :class:`SyncGroupBatchNorm` keeps :class:`~equivlib.layers.GroupBatchNorm`'s
statistics per channel, shared over the group axis and the positions of a
``(B, C, |G|, H, W)`` map, so it commutes with the group action at every input size, like
the layer it replaces. With one process, or in ``eval()``, both layers are plain batch norm.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from equivlib.layers import GroupBatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each process's input is the sum of the incoming
    gradients of every process (what ``torch.distributed.nn``'s deprecated all_reduce
    did, kept here on the plain, long-stable ``dist.all_reduce``)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


def _syncing(bn: _BatchNorm) -> bool:
    uses_batch_stats = bn.training or not bn.track_running_stats
    return (uses_batch_stats and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def sync_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of ``x`` (``(B, C, ...)``) with mean and variance over the batches of every
    process: two-pass (mean first, then squared deviations), accumulated in float32 at
    least. Updates the running statistics like ``F.batch_norm`` (unbiased variance)."""
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    shape = [1, channels] + [1] * (x.dim() - 2)
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    local = torch.cat([xf.sum(dims), xf.new_tensor([xf.numel() / channels])])
    total = _all_reduce(local)
    count = total[-1]
    mean = total[:channels] / count
    centered = xf - mean.view(shape)
    var = _all_reduce((centered * centered).sum(dims)) / count
    y = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                        else bn.momentum)
            unbiased = var * (count / (count - 1).clamp(min=1))
            bn.running_mean.mul_(1 - momentum).add_(momentum * mean.to(bn.running_mean.dtype))
            bn.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(bn.running_var.dtype))
    return y.to(x.dtype)


class SyncBatchNorm(_BatchNorm):
    """Batch norm of ``(B, C, ...)`` inputs, synchronised over DDP processes in training."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects (B, C, ...) input, got shape "
                             f"{tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _syncing(self):
            self._check_input_dim(x)
            return sync_batch_norm(self, x)
        return super().forward(x)


class SyncGroupBatchNorm(GroupBatchNorm):
    """:class:`~equivlib.layers.GroupBatchNorm` synchronised over DDP processes in training;
    exact at every input size (no subsampling; statistics shared over the group axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _syncing(self):
            self._check_input_dim(x)
            return sync_batch_norm(self, x)
        return super().forward(x)


def _synced_copy(bn: _BatchNorm) -> _BatchNorm:
    args = (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new: _BatchNorm = (SyncGroupBatchNorm(bn.group, *args) if isinstance(bn, GroupBatchNorm)
                       else SyncBatchNorm(*args))
    # share every tensor: the copy lives where the original did
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every batch norm replaced by its synchronised twin (GroupBatchNorm by
    :class:`SyncGroupBatchNorm`, the others by :class:`SyncBatchNorm`), sharing parameters
    and buffers; state-dict keys are unchanged, so checkpoints move between 1 and N
    processes. Returns the converted module (``module`` itself unless it is a batch norm)."""
    if isinstance(module, (SyncBatchNorm, SyncGroupBatchNorm)):
        return module
    if isinstance(module, _BatchNorm):
        return _synced_copy(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


__all__ = ["SyncBatchNorm", "SyncGroupBatchNorm", "convert_sync_batchnorm", "sync_batch_norm"]
