"""Lifting and group convolutions on P4 / P4M, their shared base and the filter-bank cache.

A conv builds its whole transformed filter bank with one gather (an index tensor made by
applying ``torch.rot90`` / ``torch.flip`` to ``arange``) and runs a single ``F.conv2d``. Where
nothing differentiates through the bank (eval mode or ``no_grad``) it is built once and
cached until a parameter changes (see :meth:`_GroupConvBase.expanded_weight`); the cached
bank is bitwise the rebuilt one. The output is an orientation-major view of the conv's 4-D
output, in the input's memory format (see :mod:`equivlib.layers`). State dicts keep the
weights' ``(Cout, Cin, [|G|,] k, k)`` shapes; :meth:`_GroupConvBase.export` gives the bank
as a plain ``nn.Conv2d``.

Exactness: a conv with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` is exactly
equivariant on an input of spatial size ``n`` iff ``(n + 2p - d(k-1) - 1) % s == 0`` along
each spatial axis (see :mod:`equivlib.exactness`). Stride 1 always satisfies it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from equivlib.groups import Group, get_group
from equivlib.layers._layout import fold_group_map, unfold_group_map
from equivlib.layers._validation import check_input, padding_arg, positive_int
from equivlib.layers.base import GroupLayer, Takes, with_exactness

__all__ = ["FLAT_INDEX_LIMIT", "GroupConv2d", "LiftingConv2d"]

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


class _GroupConvBase(GroupLayer, nn.Module):
    """Shared machinery: weight gather index, bias expansion, bank cache, export."""

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
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.stride = positive_int("stride", stride)
        self.padding = padding_arg(padding)
        self.dilation = positive_int("dilation", dilation)
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
        :func:`equivlib.export.export_model` uses). Later changes to this layer's parameters
        do not propagate to the exported conv. Exactness: the same function as the layer (in
        any mode), with the same kernel, stride, padding and dilation.
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


@with_exactness
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

    def export_input(self) -> Takes:
        """A lifting conv takes an image."""
        return None

    def export_output(self, group: Group | None) -> Group | None:
        """It gives a map of its own group."""
        return self.group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == self.in_channels):
            check_input(type(self).__name__, x, "(B, Cin, H, W)", 4, {1: self.in_channels})
        return self._conv(x)


@with_exactness
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
            check_input(type(self).__name__, x, f"(B, Cin, {order}, H, W)", 5,
                         {1: self.in_channels, 2: order})
        return self._conv(*fold_group_map(x))
