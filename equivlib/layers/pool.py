"""Pooling of group maps: spatial max / average pooling (each orientation alike) and coset
pooling over the orientation axis.

The spatial pools run one ``F.max_pool2d`` / ``F.avg_pool2d`` on the map folded to 4-D (a
view: the memory format is kept); coset pooling is a reduction over the orientation dim
in the map's memory order. Exactness: the spatial pools state their condition in their
docstrings; coset pooling has no subsampling and is exact at every size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from equivlib.groups import Group, get_group
from equivlib.layers._layout import fold_group_map, unfold_group_map
from equivlib.layers._validation import check_input, padding_arg, positive_int
from equivlib.layers.base import GroupLayer, Takes, with_exactness

__all__ = ["CosetPool", "GroupAvgPool2d", "GroupMaxPool2d"]


class _SpatialPool(GroupLayer, nn.Module):
    """A ``torch.nn`` 2-D pool (``_plain``) applied to every orientation of a group map."""

    _plain: type[nn.MaxPool2d] | type[nn.AvgPool2d]

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else positive_int("stride", stride)
        self.padding = padding_arg(padding)
        if self.padding > self.kernel_size // 2:
            raise ValueError(
                f"padding must be at most kernel_size // 2 = {self.kernel_size // 2} "
                f"(PyTorch pooling limit), got {self.padding}"
            )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, "(B, C, |G|, H, W)", 5, {})
        folded, orientation_major = fold_group_map(x)  # a view: memory format kept
        return unfold_group_map(self._pool(folded), x.shape[1], orientation_major)

    def export_input(self) -> Takes:
        """A map of any group."""
        return "any"

    def export(self, orientation_major: bool = False) -> nn.Module:
        """``nn.MaxPool2d`` / ``nn.AvgPool2d`` with the same kernel, stride and padding: this
        layer on the map flattened to ``(B, C·|G|, H, W)`` in either channel order (the pool
        acts on each channel alone). Exactness: the same function, exact at the same sizes."""
        return self._plain(self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@with_exactness
class GroupMaxPool2d(_SpatialPool):
    """Spatial max pooling of a group map ``(B, C, |G|, H, W)`` (each orientation alike).
    ``stride`` defaults to ``kernel_size``."""

    _plain = nn.MaxPool2d

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


@with_exactness
class GroupAvgPool2d(_SpatialPool):
    """Spatial average pooling of a group map ``(B, C, |G|, H, W)`` (zero padding counted, as
    in ``nn.AvgPool2d``). ``stride`` defaults to ``kernel_size``."""

    _plain = nn.AvgPool2d

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class CosetPool(GroupLayer, nn.Module):
    """Pool over the orientation axis: ``(B, C, |G|, H, W)`` -> ``(B, C, H, W)``.

    ``mode`` is ``"max"`` or ``"mean"``. The result is invariant to the orientation
    permutation, so it transforms as a plain image. A reduction over the orientation dim of
    whatever layout the map has (no copy; an orientation-major channels_last map gives a
    channels_last image). No subsampling: exact at every size.
    """

    _MODES = ("max", "mean")

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"CosetPool mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, "(B, C, |G|, H, W)", 5, {})
        # reduce the map with its dims in memory order, so that the result (and the
        # gradient) keep its layout: a reduction allocates its output in its input's dim order
        order = sorted(range(5), key=lambda d: -x.stride(d) if x.shape[d] > 1 else 0)
        stored = x.permute(order)
        dim = order.index(2)
        y = stored.amax(dim=dim) if self.mode == "max" else stored.mean(dim=dim)
        kept = [d for d in order if d != 2]
        return y.permute([kept.index(d) for d in (0, 1, 3, 4)])

    def export_input(self) -> Takes:
        """A map of any group."""
        return "any"

    def export_output(self, group: Group | None) -> Group | None:
        """An image."""
        return None

    def export(self, group: str | Group, orientation_major: bool = False) -> fx.GraphModule:
        """This layer on maps of ``group`` flattened to ``(B, C·|G|, H, W)`` (channel-major;
        ``orientation_major=True``: ``(B, |G|·C, H, W)``), as a :class:`torch.fx.GraphModule`
        of two tensor methods (``x.unflatten(1, (|G|, -1)).amax(dim=1)`` or ``.mean``): no
        ``torch.nn`` layer reduces one axis of a 5-D map, and the layer does not know its
        group before it sees a map. Exactness: the same function, exact at every size."""
        order = get_group(group).order
        graph = fx.Graph()
        x = graph.placeholder("x")
        shape, dim = ((order, -1), 1) if orientation_major else ((-1, order), 2)
        stacked = graph.call_method("unflatten", (x, 1, shape))
        reduce = "amax" if self.mode == "max" else "mean"
        graph.output(graph.call_method(reduce, (stacked,), {"dim": dim}))
        return fx.GraphModule(nn.Module(), graph, class_name="ExportedCosetPool")

    def export_flat(self, group: Group | None) -> nn.Module:
        """:meth:`export` on orientation-major maps of ``group``."""
        if group is None:
            raise ValueError("CosetPool pools a group map, not an image")
        return self.export(group, orientation_major=True)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
