"""Batch norm whose training statistics span every process of a DDP run.

PyTorch's ``nn.SyncBatchNorm`` refuses CPU tensors, so a gloo run (and the tests here)
could not use it. These layers work on gloo and NCCL alike, one code path on every device,
with **one collective per layer in the forward and one in the backward** (the layout of
``torch.nn.SyncBatchNorm``'s CUDA kernels, on plain ``torch.distributed`` calls):

- forward: each process computes its count, mean and biased variance per channel (one
  native pass, ``torch.batch_norm_update_stats``); one all-gather of these
  ``1 + 2C`` numbers in float64 (``torch.nn.SyncBatchNorm`` gathers per-process statistics
  too); every process merges them with Chan et al.'s formula
  (``M2 = Σ n_p var_p + Σ n_p (mean_p - mean)²``: a sum of non-negative terms, no
  difference of large sums, so no cancellation whatever the data's offset), then
  normalises with one native eval-mode ``F.batch_norm`` pass;
- backward: each process reduces ``Σ dy`` and ``Σ dy·x̂`` per channel (one native pass,
  ``native_batch_norm_backward`` without the input gradient); one ``all_reduce`` of the
  ``2C`` sums in float64; the input gradient ``w·invstd·(dy - Σdy/n - x̂·Σdy·x̂/n)`` is a
  per-channel ``a·dy + b·x + c``: one native pass plus one in-place ``addcmul_``.

The passes run on the layout-keeping views of :func:`equivlib.layers.norm.batch_norm`, so
channels_last and orientation-major group maps are normalised without a layout copy. The
parameter gradients are each process's own (DDP all-reduces them); the input gradient is
that of the sum of every process's loss, as with ``nn.SyncBatchNorm``.

Exactness: :class:`SyncGroupBatchNorm` keeps :class:`~equivlib.layers.GroupBatchNorm`'s
statistics per channel, shared over the group axis and the positions of a
``(B, C, |G|, H, W)`` map, so it commutes with the group action at every input size, like
the layer it replaces. With one process, or in ``eval()``, both layers are plain batch norm,
and they export as such (``export()``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from equivlib.layers.norm import GroupBatchNorm, StatisticsExchange, batch_norm, plain_batch_norm


def _all_gather(table: torch.Tensor, local: torch.Tensor) -> None:
    """``dist.all_gather_single`` (newer torch; ``all_gather_into_tensor`` is deprecated
    there), else ``all_gather_into_tensor``: each process's ``local`` into ``table``."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(table, local)


class ProcessExchange(StatisticsExchange):
    """Statistics over every process of the default process group: one all-gather (forward)
    and one ``all_reduce`` (backward) per layer, in float64."""

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        table = local.new_empty(dist.get_world_size() * local.numel())  # flat: gloo's format
        _all_gather(table, local)
        return table.view(-1, local.numel())

    def sum_(self, sums: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(sums)
        return sums


def _syncing(bn: _BatchNorm) -> bool:
    uses_batch_stats = bn.training or not bn.track_running_stats
    return (uses_batch_stats and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def sync_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of ``x`` (``(B, C, ...)``, any memory layout; a group map's statistics shared
    over orientations) with mean and variance over the batches of every process: one
    all-gather in the forward, one all-reduce in the backward, statistics merged in float64
    (:func:`equivlib.layers.norm.batch_norm` with a :class:`ProcessExchange`). Updates the
    running statistics like ``F.batch_norm`` (unbiased variance). Output in ``x``'s layout
    and dtype."""
    return batch_norm(bn, x, ProcessExchange())


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

    def export(self) -> nn.BatchNorm2d:
        """``nn.BatchNorm2d`` in eval mode with this layer's state: the same function on
        images ``(B, C, H, W)`` in eval mode (see
        :func:`~equivlib.layers.norm.plain_batch_norm`)."""
        return plain_batch_norm(self)


class SyncGroupBatchNorm(GroupBatchNorm):
    """:class:`~equivlib.layers.GroupBatchNorm` synchronised over DDP processes in training;
    exact at every input size (no subsampling; statistics shared over the group axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return batch_norm(self, x, ProcessExchange() if _syncing(self) else None)


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


__all__ = ["ProcessExchange", "SyncBatchNorm", "SyncGroupBatchNorm", "convert_sync_batchnorm",
           "sync_batch_norm"]
