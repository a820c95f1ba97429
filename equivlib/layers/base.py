"""What every equivlib layer shares: the export protocol (:class:`GroupLayer`) and the
exactness condition its docstring states."""

from __future__ import annotations

from typing import Literal

from torch import nn

from equivlib.groups import Group

#: what a group layer takes: an image (``None``), a map of this group, or of any group
Takes = Group | Literal["any"] | None

_EXACTNESS_DOC = """
    Exactness: along each spatial axis of its own input size ``n`` the layer is exactly
    equivariant iff ``(n + 2p - d(k-1) - 1) % s == 0`` (kernel ``k``, stride ``s``, padding
    ``p``, dilation ``d``). Stride 1 always satisfies it.

    .. warning::
       For stride > 1, one pixel more or less in the input breaks exact equivariance
       (e.g. 3x3, pad 1, stride 2 needs odd ``n``; 2x2 stride-2 pooling needs even ``n``).
"""


def with_exactness(cls: type) -> type:
    """Class decorator: append the exactness condition of a subsampling layer to its
    docstring."""
    cls.__doc__ = (cls.__doc__ or "") + _EXACTNESS_DOC
    return cls


class GroupLayer:
    """Mixin and marker of the layers on group maps; each exports itself to plain
    ``torch.nn`` (escnn's ``EquivariantModule.export``).

    Every group layer has a public ``export()``: the plain module computing the layer in
    eval mode on maps flattened to ``(B, C·|G|, H, W)`` (channel-major, as ``x.flatten(1, 2)``
    of a contiguous map; ``orientation_major=True`` for ``(B, |G|·C, H, W)``). The
    whole-model export (:func:`equivlib.export.export_model`) walks a model and asks each
    group layer, whatever its class, three things:

    - :meth:`export_input`: what it takes, an image (``None``), a map of one group (that
      :class:`~equivlib.groups.Group`) or a map of any group (``"any"``);
    - :meth:`export_output`: the group of its output for an input of ``group`` (``None``: an
      image);
    - :meth:`export_flat`: its plain module on orientation-major maps (the order the layers
      compute in, so exported convs hold bitwise the banks the layers convolve with). A
      :class:`torch.fx.GraphModule` of tensor methods is inlined into the exported graph.

    Exactness: an export is the same function as the layer in eval mode only (a group batch
    norm in training pools statistics over the orientations; the plain one cannot), with
    the same kernel, stride, padding and dilation, so it is exact at the same input sizes.
    """

    group: Group

    def export_input(self) -> Takes:
        """What the layer takes (default: a map of its own group)."""
        return self.group

    def export_output(self, group: Group | None) -> Group | None:
        """The group of the layer's output for an input of ``group`` (default: the same)."""
        return group

    def export_flat(self, group: Group | None) -> nn.Module:
        """The plain module on orientation-major maps of ``group`` (default:
        ``self.export(orientation_major=True)``)."""
        return self.export(orientation_major=True)  # type: ignore[attr-defined]
