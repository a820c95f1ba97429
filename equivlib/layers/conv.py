"""P4 / P4M layers: lifting conv, group conv, group batch norm, spatial and coset pooling.

Group feature maps have shape ``(B, C, |G|, H, W)`` (see :mod:`equivlib.groups`). Convs build
the whole transformed filter bank with one gather (an index tensor made by applying
``torch.rot90`` / ``torch.flip`` to ``arange``) and run a single ``F.conv2d``. Where nothing
differentiates through the bank (eval mode or ``no_grad``) it is built once and cached until
a parameter changes (see ``_GroupConvBase.expanded_weight``); the cached bank is bitwise the
rebuilt one.

Memory layout. A conv's output is a view of one 4-D tensor ``(B, |G|·C, H, W)`` in
**orientation-major** channel order (channel ``g·C + c`` holds channel ``c`` at orientation
``g``), in the memory format of the conv (NCHW or channels_last): the 5-D map is that
tensor's ``.view(B, |G|, C, H, W).transpose(1, 2)``, same shape and values as always, only
its strides differ. Every layer folds its input back to 4-D without copying (either channel
order; an input that admits neither view is copied once) and keeps the memory format:
the convs gather their bank in the input's memory format; batch norm runs native kernels
on a view whose channel axis is ``C`` (in channels_last ``(B·H·W·|G|, C)``, in NCHW
``(B·|G|, C, H·W)``; for fewer than 16 channels in channels_last, native statistics per
(orientation, channel) on the 4-D map, merged per channel, see :func:`batch_norm`); the
spatial pools run one ``F.max_pool2d`` / ``F.avg_pool2d`` on the 4-D view, coset pooling a
reduction over the orientation axis in memory order. So
``model.to(memory_format=torch.channels_last)`` runs every layer in channels_last without a
layout copy, and the statistics shared over orientations cost about what per-channel ones
do. State dicts do not depend on any of this (weights keep their ``(Cout, Cin, [|G|,] k,
k)`` shapes); :meth:`_GroupConvBase.export` gives the channel-major bank.

Exactness: a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` is exactly
equivariant on an input of spatial size ``n`` iff ``(n + 2p - d(k-1) - 1) % s == 0`` along
each spatial axis (see :mod:`equivlib.exactness`). Stride 1 always satisfies it. The layout
changes the order of float summation, never which sizes are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from equivlib.groups import Group, get_group

__all__ = [
    "CosetPool",
    "GroupAvgPool2d",
    "GroupBatchNorm",
    "GroupConv2d",
    "GroupMaxPool2d",
    "LiftingConv2d",
]

_EXACTNESS_DOC = """
    Exactness: along each spatial axis of its own input size ``n`` the layer is exactly
    equivariant iff ``(n + 2p - d(k-1) - 1) % s == 0`` (kernel ``k``, stride ``s``, padding
    ``p``, dilation ``d``). Stride 1 always satisfies it.

    .. warning::
       For stride > 1, one pixel more or less in the input breaks exact equivariance
       (e.g. 3x3, pad 1, stride 2 needs odd ``n``; 2x2 stride-2 pooling needs even ``n``).
"""


def _with_exactness(cls: type) -> type:
    cls.__doc__ = (cls.__doc__ or "") + _EXACTNESS_DOC
    return cls


# ---------------------------------------------------------------------------- validation
def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _padding(value: object) -> int:
    if isinstance(value, str):
        raise TypeError(
            f"padding must be a non-negative int (symmetric zero padding), got the string "
            f"{value!r}; string padding such as 'same' can be asymmetric and break equivariance"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"padding must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"padding must be a non-negative int, got {value!r}")
    return value


def _check_input(layer: str, x: object, shape: str, rank: int, checks: dict[int, int]) -> None:
    """``checks`` maps a dim to its expected size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != rank:
        raise ValueError(
            f"{layer} expects a {rank}-D input of shape {shape}, got {x.dim()}-D "
            f"shape {tuple(x.shape)}"
        )
    for dim, size in checks.items():
        if x.shape[dim] != size:
            what = {1: "channel", 2: "orientation-axis"}.get(dim, f"dim-{dim}")
            raise ValueError(
                f"{layer} expects {shape} with {what} size {size}, got {x.shape[dim]} "
                f"(input shape {tuple(x.shape)})"
            )


# ---------------------------------------------------------------------------- layout
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


# ---------------------------------------------------------------------------- convolutions
# Banks up to this many elements are built by one gather with a full int32 index (fastest;
# one for each memory format); larger ones gather per (cout, cin) block, so no layer holds
# more than 8 MiB of index.
FLAT_INDEX_LIMIT = 1 << 20


class _BankCache(NamedTuple):
    """An expanded bank built under ``no_grad`` and what it was built from."""

    key: tuple
    bank: torch.Tensor
    bias: torch.Tensor | None
    # the parameters' storages, kept alive so that no new tensor can take their addresses
    # and match the key by coincidence (ABA)
    storages: tuple


class _GroupConvBase(nn.Module):
    """Shared machinery: weight gather index, bias expansion, bank cache."""

    group: Group
    index: torch.Tensor
    index_cl: torch.Tensor | None
    bias_index: torch.Tensor

    def __init__(
        self,
        group: str | Group,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        bias: bool,
        in_orientations: int,
    ) -> None:
        super().__init__()
        self.group = get_group(group)
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.stride = _positive_int("stride", stride)
        self.padding = _padding(padding)
        self.dilation = _positive_int("dilation", dilation)
        k, g = self.kernel_size, self.group.order
        base_shape = (out_channels, in_channels, *([in_orientations] if in_orientations > 1
                                                    else []), k, k)
        self.weight = nn.Parameter(torch.empty(base_shape))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.in_orientations = in_orientations
        block = self._block_index()  # (|G|, block) positions within one (cout, cin) filter
        self._flat = out_channels * in_channels * block.numel() <= FLAT_INDEX_LIMIT
        # The gather indices are constants derived from the shapes, not state: plain tensor
        # attributes (moved with the weight by ``_apply``), not buffers, so that neither the
        # state dict nor DDP, which broadcasts every buffer at every forward (84 MB of index
        # for a P4 ResNet-44), sees them.
        flat = self._flat_index(block) if self._flat else None
        self.index = flat if self._flat else block.reshape(-1)
        # the same gather in channels_last order (small layers; large ones reorder the
        # block path's copy instead), so a channels_last conv gets a channels_last bank
        self.index_cl = None if flat is None else self._channels_last(
            flat.view(g * out_channels, in_orientations * in_channels, k, k)).reshape(-1)
        # bias of output channel (h, o) is bias[o]: one more gather instead of several ops
        self.bias_index = torch.arange(out_channels).repeat(g)
        self._bank_shape = (g * out_channels, in_orientations * in_channels, k, k)
        self._cache: _BankCache | None = None
        self.reset_parameters()

    def _block_index(self) -> torch.Tensor:
        raise NotImplementedError

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """``Module.to(memory_format=torch.channels_last)`` converts every 4- and 5-D tensor,
        and a 5-D tensor has no channels_last layout (PyTorch raises "required rank 4
        tensor"). A group conv's 5-D weight ``(Cout, Cin, |G|, k, k)`` only feeds the gather
        that builds the 4-D bank each call, so it passes through ``fn`` as a 4-D view and
        comes back 5-D and contiguous: shapes, values and state dict unchanged, exactness
        unaffected (the bank is the same). A lifting conv's 4-D weight stays contiguous
        too (the gather reads it flat; the bank gets the input's memory format instead)."""
        def fn_5d_as_4d(t: torch.Tensor) -> torch.Tensor:
            if t.dim() < 4:
                return fn(t)
            return fn(t.reshape(t.shape[0], -1, *t.shape[-2:])).contiguous().view(t.shape)

        self._cache = None  # the old bank would only be freed at the next forward
        module = super()._apply(fn_5d_as_4d, recurse)
        param = next(self.parameters(recurse=False), None)
        if param is not None:  # the indices follow (values kept, even by to_empty)
            for name in ("index", "index_cl", "bias_index"):
                t = getattr(self, name)
                if t is not None and t.device != param.device:
                    setattr(self, name, t.to(param.device))
        return module

    def _flat_index(self, block: torch.Tensor) -> torch.Tensor:
        """Index of the whole bank into the flattened weight, orientation-major on both sides:
        ordered (h, cout, g_in, cin, k·k); int32 (at most ``FLAT_INDEX_LIMIT`` entries)."""
        size = block.shape[1]
        gin, kk = self.in_orientations, size // self.in_orientations
        offsets = torch.arange(self.out_channels * self.in_channels) * size
        offsets = offsets.view(1, self.out_channels, 1, self.in_channels, 1)
        index = offsets + block.view(self.group.order, 1, gin, 1, kk)
        return index.reshape(-1).to(torch.int32)

    @staticmethod
    def _channels_last(bank: torch.Tensor) -> torch.Tensor:
        """A ``(O, I, k, k)`` tensor's values in channels_last memory order ``(O, k, k, I)``."""
        return bank.permute(0, 2, 3, 1).contiguous()

    def reset_parameters(self) -> None:
        """He (kaiming) normal init for ReLU with fan_in = in_channels·(|G|)·k²; zero bias."""
        fan_in = self.weight[0].numel()
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            if self.bias is not None:
                self.bias.zero_()

    # -------------------------------------------------------------- filter bank
    def _expand(self, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The bank ``(|G|·Cout, |G|in·Cin, k, k)``, orientation-major on both channel axes
        (output channel ``h·Cout + o``, input channel ``g·Cin + i``), contiguous or (with
        ``channels_last``) in channels_last memory format, and the bias of ``|G|·Cout``. One
        gather builds it straight in its memory format (small layers); large layers gather
        per (cout, cin) block and reorder with one copy. One more gather repeats the bias (as
        few small ops as possible: each costs far more right after a large conv)."""
        o, i, k = self._bank_shape[0], self._bank_shape[1], self.kernel_size
        if self._flat:  # one gather straight into the bank's layout (small layers)
            if channels_last:
                bank = self.weight.reshape(-1).index_select(0, self.index_cl)
                bank = bank.view(o, k, k, i).permute(0, 3, 1, 2)
            else:
                bank = self.weight.reshape(-1).index_select(0, self.index).view(o, i, k, k)
        else:  # large layers: a gather per (cout, cin) block plus one copy; tiny index
            cout, cin, order = self.out_channels, self.in_channels, self.group.order
            block = self.weight.reshape(cout, cin, -1).index_select(2, self.index)
            block = block.view(cout, cin, order, self.in_orientations, k, k)
            if channels_last:
                bank = block.permute(2, 0, 4, 5, 3, 1).reshape(o, k, k, i).permute(0, 3, 1, 2)
            else:
                bank = block.permute(2, 0, 3, 1, 4, 5).reshape(o, i, k, k)
        bias = self.bias
        if bias is not None:
            bias = bias.index_select(0, self.bias_index)
        return bank, bias

    # -------------------------------------------------------------- bank cache
    def _params(self) -> tuple[torch.Tensor, ...]:
        return (self.weight,) if self.bias is None else (self.weight, self.bias)

    def _cacheable(self) -> bool:
        """Whether the bank may come from (and go to) the cache: nothing differentiates through
        it (no grad mode with parameters requiring grad, no forward-mode dual level) and the
        weights are not being trained (eval mode, or train mode under ``no_grad``)."""
        if fwAD._current_level >= 0:  # forward-mode AD: a parameter may be a dual tensor
            return False
        if not torch.is_grad_enabled():
            return True
        return not self.training and not any(p.requires_grad for p in self._params())

    def _cache_key(self) -> tuple | None:
        """Identity, version counter, address, dtype, device, shape and strides of each
        parameter, and the index's address; ``None`` when a parameter has no version counter
        (an inference tensor) or no storage (a ``torch.func`` wrapper): never cached."""
        w, b = self.weight, self.bias
        try:
            key = (id(w), w._version, w.data_ptr(), w.dtype, w.device, w.shape, w.stride(),
                   self.index.data_ptr())
            if b is not None:
                key += (id(b), b._version, b.data_ptr(), b.dtype, b.device, b.shape)
        except RuntimeError:
            return None
        return key

    def expanded_weight(self, channels_last: bool = False,
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The full bank ``(|G|·Cout, |G|·Cin, k, k)`` (orientation-major, see :meth:`_expand`;
        channels_last memory format if asked) and bias ``(|G|·Cout,)``.

        When nothing differentiates through the bank (see :meth:`_cacheable`: eval mode or
        ``no_grad``, parameters not requiring grad, no forward-mode AD) it is built once
        under ``no_grad`` and cached, and reused while every parameter keeps its identity,
        version counter, address, dtype, device, shape and strides: optimizer steps,
        in-place edits, ``load_state_dict``, ``.to()`` / ``.double()`` / channels_last and
        ``.data`` assignment all rebuild it. The cached bank equals the rebuilt one bitwise
        (same gather, same layout). In-place edits through ``param.data`` bypass the version
        counter: call :meth:`clear_cache` after those. The cache is not in the state dict,
        is dropped by pickling / ``deepcopy``, ``train()`` / ``eval()`` and ``_apply``, and a
        training forward that needs gradients drops it (the weights are about to change).
        """
        if not self._cacheable():
            if self.training:
                self._cache = None
            return self._expand(channels_last)
        key = self._cache_key()
        if key is None:
            return self._expand(channels_last)
        key += (channels_last,)
        cache = self._cache
        if cache is None or cache.key != key:
            cache = self._cache = self._build_cache(key, channels_last)
        return cache.bank, cache.bias

    def _build_cache(self, key: tuple, channels_last: bool = False) -> _BankCache:
        """The bank as a normal tensor without a graph, even inside ``inference_mode`` (an
        inference tensor could not serve later ``no_grad`` calls)."""
        with torch.inference_mode(False), torch.no_grad():
            bank, bias = self._expand(channels_last)
        return _BankCache(key, bank, bias, tuple(p.untyped_storage() for p in self._params()))

    def clear_cache(self) -> None:
        """Drop the cached filter bank."""
        self._cache = None

    def train(self, mode: bool = True) -> _GroupConvBase:
        self._cache = None
        return super().train(mode)

    def __getstate__(self) -> dict:
        """Pickling and ``deepcopy`` leave the cache behind (a copy has new parameters)."""
        state = super().__getstate__()  # a copy of __dict__
        state["_cache"] = None
        return state

    def _conv(self, x: torch.Tensor, orientation_major: bool = True) -> torch.Tensor:
        """``F.conv2d`` of a 4-D input (for a group conv, the input folded in the given channel
        order) with the bank in the input's memory format; the output as an
        orientation-major 5-D view, in that memory format."""
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and \
            not x.is_contiguous()
        bank, bias = self.expanded_weight(channels_last and orientation_major)
        if not orientation_major:  # a channel-major input: reorder the bank's input channels
            k, gin = self.kernel_size, self.in_orientations
            bank = bank.view(bank.shape[0], gin, self.in_channels, k, k).transpose(1, 2)
            bank = bank.reshape(self._bank_shape)
        y = F.conv2d(x, bank, bias, self.stride, self.padding, self.dilation)
        return unfold_group_map(y, self.out_channels, orientation_major=True)

    def channel_major_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The bank ``(Cout·|G|, Cin(·|G|), k, k)`` and bias in channel-major order (output
        channel ``o·|G| + h``, input channel ``i·|G| + g``): the order of a contiguous
        ``(B, C, |G|, H, W)`` map viewed as ``(B, C·|G|, H, W)``, which :meth:`export` uses."""
        bank, bias = self._expand()
        g, o, gin, i, k = (self.group.order, self.out_channels, self.in_orientations,
                           self.in_channels, self.kernel_size)
        bank = bank.view(g, o, gin, i, k, k).permute(1, 0, 3, 2, 4, 5).reshape(o * g, i * gin,
                                                                                k, k)
        if bias is not None:
            bias = bias.view(g, o).t().reshape(-1)
        return bank, bias

    def export(self, orientation_major: bool = False) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding a copy of the expanded bank (escnn-style export).

        It maps the input flattened to ``(B, Cin(·|G|), H, W)`` to the output flattened to
        ``(B, Cout·|G|, H', W')``, by default in channel-major order ``(cout, orientation)``
        (as ``x.flatten(1, 2)`` of a contiguous group map); reshape with
        ``y.view(B, Cout, |G|, H', W')`` to get this layer's output. With
        ``orientation_major=True`` both channel axes are ordered ``(orientation, channel)``
        and the conv holds bitwise the bank this layer convolves with (what
        :func:`equivlib.export.export` uses). Later changes to this layer's parameters do not
        propagate to the exported conv.
        """
        with torch.no_grad():
            bank, bias = self._expand() if orientation_major else self.channel_major_weight()
        conv = nn.Conv2d(
            bank.shape[1], bank.shape[0], self.kernel_size, self.stride, self.padding,
            self.dilation, bias=bias is not None, device=bank.device, dtype=bank.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(bank)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.group.name}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )


@_with_exactness
class LiftingConv2d(_GroupConvBase):
    """Lifting convolution Z2 -> G: ``(B, Cin, H, W)`` -> ``(B, Cout, |G|, H', W')``.

    Output orientation ``h`` is the cross-correlation with the transformed filter
    ``T_h(ψ)``; weight shape ``(Cout, Cin, k, k)``; one bias per output channel, shared over
    orientations.
    """

    def __init__(
        self,
        group: str | Group,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(group, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, bias, in_orientations=1)

    def _block_index(self) -> torch.Tensor:
        k = self.kernel_size
        idx = torch.arange(k * k).view(k, k)  # positions within one (cout, cin) filter
        bank = torch.stack([self.group.act_on_image(h, idx) for h in self.group.elements()])
        return bank.reshape(self.group.order, -1)  # (|G|, k·k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == self.in_channels):
            _check_input(type(self).__name__, x, "(B, Cin, H, W)", 4, {1: self.in_channels})
        return self._conv(x)


@_with_exactness
class GroupConv2d(_GroupConvBase):
    """Group convolution G -> G: ``(B, Cin, |G|, H, W)`` -> ``(B, Cout, |G|, H', W')``.

    Weight shape ``(Cout, Cin, |G|, k, k)``. The filter of output orientation ``h`` is ``h``
    acting on the filter as a group map: ``ψ_h[:, :, g] = T_h(ψ[:, :, h^-1 g])``. One bias per
    output channel, shared over orientations.
    """

    def __init__(
        self,
        group: str | Group,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        g = get_group(group)
        super().__init__(g, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, bias, in_orientations=g.order)

    def _block_index(self) -> torch.Tensor:
        g, k = self.group, self.kernel_size
        # positions within one (cout, cin) filter of shape (|G|in, k, k), as a 1x1 group map
        idx = torch.arange(g.order * k * k).view(1, 1, g.order, k, k)
        bank = torch.stack([g.act_on_group_map(h, idx)[0, 0] for h in g.elements()])
        return bank.reshape(g.order, -1)  # (|G|out, |G|in·k·k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = self.group.order
        if not (isinstance(x, torch.Tensor) and x.dim() == 5 and x.shape[1] == self.in_channels
                and x.shape[2] == order):
            _check_input(type(self).__name__, x, f"(B, Cin, {order}, H, W)", 5,
                         {1: self.in_channels, 2: order})
        return self._conv(*fold_group_map(x))


# ---------------------------------------------------------------------------- normalisation
# Below this many channels per orientation, a channels_last group map's statistics are taken
# per (orientation, channel) by the native kernel over all |G|·C channels and merged: the
# native channels_last kernels vectorise over the channel axis, and a view with C < 16
# channels fills less than one AVX-512 register (measured: C = 10, 12 twice as slow as the
# merged path; C = 32, 64 the view is faster).
SMALL_CHANNELS = 16


class StatisticsExchange:
    """How a batch norm shares statistics beyond its own batch (the synchronised batch norms
    of :mod:`equivlib.engine.sync_batchnorm` pass an all-gather / all-reduce over
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


class GroupBatchNorm(nn.BatchNorm3d):
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
        super().__init__(_positive_int("channels", channels), eps, momentum, affine,
                         track_running_stats)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        _check_input(type(self).__name__, x, f"(B, C, {self.group.order}, H, W)", 5,
                     {1: self.num_features, 2: self.group.order})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return batch_norm(self, x)

    def extra_repr(self) -> str:
        return f"{self.group.name}, " + super().extra_repr()


# ---------------------------------------------------------------------------- pooling
class _SpatialPool(nn.Module):
    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _positive_int("stride", stride)
        self.padding = _padding(padding)
        if self.padding > self.kernel_size // 2:
            raise ValueError(
                f"padding must be at most kernel_size // 2 = {self.kernel_size // 2} "
                f"(PyTorch pooling limit), got {self.padding}"
            )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(type(self).__name__, x, "(B, C, |G|, H, W)", 5, {})
        folded, orientation_major = fold_group_map(x)  # a view: memory format kept
        return unfold_group_map(self._pool(folded), x.shape[1], orientation_major)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@_with_exactness
class GroupMaxPool2d(_SpatialPool):
    """Spatial max pooling of a group map ``(B, C, |G|, H, W)`` (each orientation alike).
    ``stride`` defaults to ``kernel_size``."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


@_with_exactness
class GroupAvgPool2d(_SpatialPool):
    """Spatial average pooling of a group map ``(B, C, |G|, H, W)`` (zero padding counted, as
    in ``nn.AvgPool2d``). ``stride`` defaults to ``kernel_size``."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class CosetPool(nn.Module):
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
        _check_input(type(self).__name__, x, "(B, C, |G|, H, W)", 5, {})
        # reduce the map with its dims in memory order, so that the result (and the
        # gradient) keep its layout: a reduction allocates its output in its input's dim order
        order = sorted(range(5), key=lambda d: -x.stride(d) if x.shape[d] > 1 else 0)
        stored = x.permute(order)
        dim = order.index(2)
        y = stored.amax(dim=dim) if self.mode == "max" else stored.mean(dim=dim)
        kept = [d for d in order if d != 2]
        return y.permute([kept.index(d) for d in (0, 1, 3, 4)])

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
