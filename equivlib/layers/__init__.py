"""P4 / P4M layers: lifting conv, group conv, group batch norm (also synchronised over DDP
processes), spatial and coset pooling; each exports itself to plain ``torch.nn``.

Modules: :mod:`~equivlib.layers.conv` (lifting and group convs, the filter-bank cache),
:mod:`~equivlib.layers.norm` (group batch norm, the shared batch-norm kernel),
:mod:`~equivlib.layers.sync_norm` (the synchronised batch norms of a DDP run),
:mod:`~equivlib.layers.pool` (spatial and coset pooling), :mod:`~equivlib.layers.base`
(the export protocol :class:`GroupLayer`). Everything public is importable from here.

Group feature maps have shape ``(B, C, |G|, H, W)`` (see :mod:`equivlib.groups`).

Memory layout. A conv's output is a view of one 4-D tensor ``(B, |G|·C, H, W)`` in
**orientation-major** channel order (channel ``g·C + c`` holds channel ``c`` at orientation
``g``), in the memory format of the conv (NCHW or channels_last): the 5-D map is that
tensor's ``.view(B, |G|, C, H, W).transpose(1, 2)``, same shape and values as always, only
its strides differ. Every layer folds its input back to 4-D without copying (either channel
order; an input that admits neither view is copied once) and keeps the memory format:
the convs gather their bank in the input's memory format; batch norm runs native kernels
on a view whose channel axis is ``C`` (see :func:`batch_norm`); the spatial pools run one
``F.max_pool2d`` / ``F.avg_pool2d`` on the 4-D view, coset pooling a reduction over the
orientation axis in memory order. So ``model.to(memory_format=torch.channels_last)`` runs
every layer in channels_last without a layout copy. State dicts do not depend on any of
this (weights keep their ``(Cout, Cin, [|G|,] k, k)`` shapes).

Export. Every group layer has ``export()``: the plain ``torch.nn`` module computing it in
eval mode on the map flattened to ``(B, C·|G|, H, W)`` (see :class:`GroupLayer`);
:func:`equivlib.export.export_model` walks a whole model over these.

Exactness: a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` is exactly
equivariant on an input of spatial size ``n`` iff ``(n + 2p - d(k-1) - 1) % s == 0`` along
each spatial axis (see :mod:`equivlib.exactness`). Stride 1 always satisfies it. Batch norm
and coset pooling have no subsampling: exact at every size. The layout changes the order
of float summation, never which sizes are exact.
"""

from equivlib.layers._layout import (
    channel_view,
    fold_group_map,
    from_channel_view,
    unfold_group_map,
)
from equivlib.layers.base import GroupLayer
from equivlib.layers.conv import FLAT_INDEX_LIMIT, GroupConv2d, LiftingConv2d
from equivlib.layers.norm import (
    SMALL_CHANNELS,
    GroupBatchNorm,
    StatisticsExchange,
    batch_norm,
    plain_batch_norm,
)
from equivlib.layers.pool import CosetPool, GroupAvgPool2d, GroupMaxPool2d
from equivlib.layers.sync_norm import (
    ProcessExchange,
    SyncBatchNorm,
    SyncGroupBatchNorm,
    convert_sync_batchnorm,
    sync_batch_norm,
)

__all__ = [
    "FLAT_INDEX_LIMIT",
    "SMALL_CHANNELS",
    "CosetPool",
    "GroupAvgPool2d",
    "GroupBatchNorm",
    "GroupConv2d",
    "GroupLayer",
    "GroupMaxPool2d",
    "LiftingConv2d",
    "ProcessExchange",
    "StatisticsExchange",
    "SyncBatchNorm",
    "SyncGroupBatchNorm",
    "batch_norm",
    "channel_view",
    "convert_sync_batchnorm",
    "fold_group_map",
    "from_channel_view",
    "plain_batch_norm",
    "sync_batch_norm",
    "unfold_group_map",
]
