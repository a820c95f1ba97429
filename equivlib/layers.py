"""P4 / P4M layers: lifting conv, group conv, group batch norm, spatial and coset pooling.

Group feature maps have shape ``(B, C, |G|, H, W)`` (see :mod:`equivlib.groups`). Convs build
the whole transformed filter bank with one gather (an index tensor made by applying
``torch.rot90`` / ``torch.flip`` to ``arange``) and run a single ``F.conv2d``. Where nothing
differentiates through the bank (eval mode or ``no_grad``) it is built once and cached until
a parameter changes (see ``_GroupConvBase.expanded_weight``); the cached bank is bitwise the
rebuilt one.

Exactness: a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` is exactly
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


# ---------------------------------------------------------------------------- convolutions
# Banks up to this many elements are built by one gather with a full int64 index (fastest);
# larger ones gather per (cout, cin) block, so no layer holds more than 8 MiB of index.
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
        block = self._block_index()  # (|G|, block) positions within one (cout, cin) filter
        self._flat = out_channels * in_channels * block.numel() <= FLAT_INDEX_LIMIT
        self.register_buffer("index", self._flat_index(block) if self._flat
                             else block.reshape(-1), persistent=False)
        # bias of output channel (o, h) is bias[o]: one more gather instead of several ops
        self.register_buffer("bias_index", torch.arange(out_channels).repeat_interleave(g),
                             persistent=False)
        self._bank_shape = (out_channels * g, in_channels * in_orientations, k, k)
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
        unaffected (the bank is the same)."""
        def fn_5d_as_4d(t: torch.Tensor) -> torch.Tensor:
            if t.dim() != 5:
                return fn(t)
            return fn(t.reshape(t.shape[0], -1, *t.shape[-2:])).contiguous().view(t.shape)

        self._cache = None  # the old bank would only be freed at the next forward
        return super()._apply(fn_5d_as_4d, recurse)

    def _flat_index(self, block: torch.Tensor) -> torch.Tensor:
        """Index of the whole bank into the flattened weight, ordered (cout, h, cin, block)."""
        size = block.shape[1]
        offsets = torch.arange(self.out_channels * self.in_channels) * size
        offsets = offsets.view(self.out_channels, 1, self.in_channels, 1)
        return (offsets + block.view(1, self.group.order, 1, size)).reshape(-1)

    def reset_parameters(self) -> None:
        """He (kaiming) normal init for ReLU with fan_in = in_channels·(|G|)·k²; zero bias."""
        fan_in = self.weight[0].numel()
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            if self.bias is not None:
                self.bias.zero_()

    # -------------------------------------------------------------- filter bank
    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One gather over a (cout, cin) block builds every orientation's filter, one copy
        puts the orientations next to the output channels; one more gather repeats the bias
        (as few small ops as possible: each costs far more right after a large conv)."""
        if self._flat:  # one gather straight into the bank's layout (small layers)
            bank = self.weight.reshape(-1).index_select(0, self.index).view(self._bank_shape)
        else:  # large layers: a gather per (cout, cin) block plus one copy; tiny index
            cout, cin, order = self.out_channels, self.in_channels, self.group.order
            block = self.weight.reshape(cout, cin, -1).index_select(2, self.index)
            bank = block.view(cout, cin, order, -1).transpose(1, 2).reshape(self._bank_shape)
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

    def expanded_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The full bank ``(Cout·|G|, Cin(·|G|), k, k)`` and bias ``(Cout·|G|,)``.

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
            return self._expand()
        key = self._cache_key()
        if key is None:
            return self._expand()
        cache = self._cache
        if cache is None or cache.key != key:
            cache = self._cache = self._build_cache(key)
        return cache.bank, cache.bias

    def _build_cache(self, key: tuple) -> _BankCache:
        """The bank as a normal tensor without a graph, even inside ``inference_mode`` (an
        inference tensor could not serve later ``no_grad`` calls)."""
        with torch.inference_mode(False), torch.no_grad():
            bank, bias = self._expand()
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

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        bank, bias = self.expanded_weight()
        y = F.conv2d(x, bank, bias, self.stride, self.padding, self.dilation)
        b, _, h, w = y.shape
        return y.view(b, self.out_channels, self.group.order, h, w)

    def export(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding a copy of the expanded bank (escnn-style export).

        It maps the input flattened to ``(B, Cin(·|G|), H, W)`` to the output flattened to
        ``(B, Cout·|G|, H', W')`` (ordering ``(cout, orientation)``); reshape with
        ``y.view(B, Cout, |G|, H', W')`` to get this layer's output. Later changes to this
        layer's parameters do not propagate to the exported conv.
        """
        with torch.no_grad():
            bank, bias = self._expand()
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
        b, c, g, h, w = x.shape
        return self._conv(x.reshape(b, c * g, h, w))


# ---------------------------------------------------------------------------- normalisation
class GroupBatchNorm(nn.BatchNorm3d):
    """Batch norm for ``(B, C, |G|, H, W)`` maps: statistics and affine parameters per
    channel, shared over orientations and positions (so it commutes with the group action).

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
        b, c, g = x.shape[:3]
        y = self._pool(x.reshape(b, c * g, *x.shape[-2:]))
        return y.view(b, c, g, *y.shape[-2:])

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
    permutation, so it transforms as a plain image. No subsampling: exact at every size.
    """

    _MODES = ("max", "mean")

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"CosetPool mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(type(self).__name__, x, "(B, C, |G|, H, W)", 5, {})
        return x.amax(dim=2) if self.mode == "max" else x.mean(dim=2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
