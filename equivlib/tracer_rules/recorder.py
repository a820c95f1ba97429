"""The rules of :func:`equivlib.exactness.trace`: which image positions every op reads, and
whether the symmetries of the input (flips of either axis, and the transpose on a square
input: together the 90° rotations and flips) map that structure onto itself.

What the tracer cannot prove symmetric is "unknown" (``exact=None``), never "exact".

**Labels.** Every tensor computed from the input carries, for each element, a *location*:
a point of a sampling grid (the input's pixels, or the output grid of a convolution / pooling /
interpolation), a *region* (the set of points a mixing op merged, e.g. a 2x2 patch merge), or
``CONST`` for values no symmetry moves (constants, zero padding, class tokens, globally pooled
features). Attention scores carry two labels per element (query, key). Each grid is
symmetric about its own centre: whether it is centred in the image is what the grid op that
made it was judged on (DESIGN.md §2, at the op's own input size).

**Ops.**

- *Data movement* (view / reshape / permute / transpose / flatten / squeeze / expand,
  ``torch.roll``, flips, indexing and strided slices ``x[..., ::2]``, cat / stack / chunk /
  split, pixel (un)shuffle, ``F.unfold``, pads in either memory layout) only moves values: the
  labels are moved the same way (the op is replayed on them) and nothing is judged there.
  Asymmetric padding of a dim that carries positions is judged at once (not exact), whatever
  the memory layout: the spatial dims are the dims along which the labels vary.
- *Pointwise* ops need every operand to stand for the same location element by element (or
  operand pairs that the symmetries permute consistently). A constant that varies along the
  positions is judged by its values when they are known (masks built in ``forward``: the
  mask must be the same function of the label pair after every symmetry), reported unknown
  when not, and a *parameter* that varies along the positions is a **positional embedding**:
  the grid stays symmetric but invariance needs symmetric weights (``grid_only`` rows; on
  attention scores a parameter is a relative position bias, a kernel-like weight that is
  assumed symmetric like a convolution kernel).
- *Mixing* ops (reductions, softmax, normalisations, matmul / linear / einsum, attention)
  mix groups of positions: the family of groups (with the location each output element
  keeps, e.g. the query) must be mapped onto itself by every symmetry. This is where windows
  are judged: a Swin block's attention mixes the tokens of each window, and after
  ``torch.roll`` by ``s`` on an axis of size ``n`` the windows of size ``w`` (``w | n``) are
  the cyclic intervals ``[k*w + s, (k+1)*w + s) mod n``; mirrored (``x -> n-1-x``) they are
  ``[k*w - s, ...)``: the same family iff ``2s ≡ 0 (mod w)`` (shift 0 or ``w/2``; see
  :func:`equivlib.exactness.shifted_windows_symmetric`). Swin v1 (window 7, shift 3) fails
  it at every size, Swin v2 (window 8, shift 4) passes it. A merge (Swin's
  ``PatchMerging``, a Linear over ``cat(x[0::2, 0::2], x[1::2, 0::2], ...)``) mixes 2x2
  blocks: symmetric iff the size is even. Weights indexed by the position inside a group
  (convolution kernels, relative position bias tables, merge weights) are assumed
  D4-symmetric, as for convolutions; a parameterised contraction over a whole invariant map
  (a flattening classifier head) is reported ``grid_only`` like a positional embedding.
- *Grid ops* (conv2d, pooling, adaptive pooling, interpolation, transposed convolution) are
  judged by their sampling condition at their own input size when their input is a whole
  grid on its last two dims (padded evenly or not at all). When it is a regular sub-lattice
  of a grid (a strided slice ``x[..., 1::2, 1::2]``, a crop, positions overwritten at one
  border, one-sided padding), the op's sample windows are mapped onto that grid and must be
  mirror-symmetric there, and so must the part of the grid the view covers. An input that is
  rearranged otherwise (rolled, transposed, channels-last) is unknown unless the
  rearrangement commutes with the symmetries (a roll by ``n/2``).
- Any deterministic op on values that no symmetry moves (after global pooling) is fine.
  Anything else that touches a tensor computed from the input is "<op> at <layer> not
  judged" (``exact=None``), and so is data-dependent control flow on values that depend on
  position; later grid ops are still judged at their own sizes (so a report can be "not
  exact" after an unknown op, never "exact").

**Reports.** The rows (``TraceRow``): grid ops that subsample or are not exact as before;
``window`` / ``shifted_window`` (attention windows: kernel = window, padding = "shift s"),
``merge`` (a Linear or reduction over blocks), ``interpolate``, ``pad``, ``mask`` rows;
``pos_embedding`` / ``flatten_head`` / ``per_position_weights`` rows with ``grid_only=True``
(exact, and the report's verdict reads ``EXACT (GRID ONLY)``: the grids are symmetric, and
invariance also needs those weights to be symmetric, which the architecture does not
impose); and "<op> at <layer> not judged" rows with ``exact=None``.

**Values.** On the meta device constants have no values; masks built in ``forward`` from
``new_zeros``, ``arange``, slice assignments, ... are recomputed on the CPU as they are built,
and the buffers of the model a meta copy was made of are read from that model.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from equivlib.exactness import (
    _adaptive_windows,
    _pair,
    _pool_windows,
    _windows_symmetric,
    is_exact,
)

CONST = -1  # label of a value no symmetry moves
INVALID = -2  # image of a location that has no mirror image (a non-square grid, transposed)

TRACKED, OPAQUE, PARAM, CONSTANT = "tracked", "opaque", "param", "const"


# ----------------------------------------------------------------------------- locations
class Space:
    """The locations of one trace and their images under the symmetries: map 0 flips the
    first spatial axis, map 1 the second, map 2 (square inputs only) transposes them."""

    def __init__(self, maps: int) -> None:
        self.maps = maps
        self.size = 0
        self._img = torch.empty((maps, 1024), dtype=torch.long)
        self._grids: list[tuple[int, int, int]] = []  # (start, H, W), by start
        self._grid_keys: dict[object, int] = {}
        self.canonical: dict[int, torch.Tensor] = {}  # grid index -> (H, W) labels
        self.regions: dict[int, frozenset[int]] = {}
        self._by_set: dict[frozenset[int], int] = {}
        self._cache: dict = {}
        self._img_list: list[list[int]] = [[] for _ in range(maps)]  # _img as lists

    def _alloc(self, n: int) -> int:
        start = self.size
        self.size += n
        if self.size > self._img.shape[1]:
            grown = torch.empty((self.maps, max(2 * self._img.shape[1], self.size)),
                                dtype=torch.long)
            grown[:, :start] = self._img[:, :start]
            self._img = grown
        return start

    def grid(self, h: int, w: int, key: object = None) -> torch.Tensor:
        """The (h, w) labels of a grid; the same key gives the same grid."""
        if key is not None and key in self._grid_keys:
            return self.canonical[self._grid_keys[key]]
        start = self._alloc(h * w)
        ids = torch.arange(start, start + h * w).view(h, w)
        y = torch.arange(h).view(h, 1).expand(h, w)
        x = torch.arange(w).view(1, w).expand(h, w)
        self._img[0, start:start + h * w] = (start + (h - 1 - y) * w + x).reshape(-1)
        self._img[1, start:start + h * w] = (start + y * w + (w - 1 - x)).reshape(-1)
        if self.maps == 3:
            self._img[2, start:start + h * w] = (
                (start + x * w + y) if h == w else torch.full_like(y, INVALID)).reshape(-1)
        index = len(self._grids)
        self._grids.append((start, h, w))
        self.canonical[index] = ids
        if key is not None:
            self._grid_keys[key] = index
        return ids

    def grid_of(self, label: int) -> tuple[int, int, int] | None:
        """(start, H, W) of the grid a base point belongs to."""
        if label < 0 or label in self.regions:
            return None
        lo, hi = 0, len(self._grids) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._grids[mid][0] <= label:
                lo = mid
            else:
                hi = mid - 1
        return self._grids[lo]

    def points(self, label: int) -> frozenset[int]:
        if label < 0:
            return frozenset()
        return self.regions.get(label, frozenset((label,)))

    def image(self, k: int, labels: torch.Tensor) -> torch.Tensor:
        table = self._img[k, :self.size]
        mapped = table[labels.clamp(min=0)] if self.size else labels
        return torch.where(labels < 0, labels, mapped)

    def region(self, members) -> int:
        """The location of a value that mixes ``members`` (labels): CONST when the region is
        mapped onto itself by every symmetry."""
        pts: set[int] = set()
        for m in set(members):
            pts |= self.points(int(m))
        if not pts:
            return CONST
        key = frozenset(pts)
        if len(key) == 1:
            return next(iter(key))
        found = self._by_set.get(key)
        if found is not None:
            return found
        synced = len(self._img_list[0])  # the lists lag behind the tensor until needed
        if synced < self.size:
            for k in range(self.maps):
                self._img_list[k].extend(self._img[k, synced:self.size].tolist())
        orbit: dict[frozenset[int], list[frozenset[int] | None]] = {}
        todo = [key]
        while todo:
            cur = todo.pop()
            if cur in orbit:
                continue
            images: list[frozenset[int] | None] = []
            for table in self._img_list:
                image = frozenset(table[p] for p in cur)
                if INVALID in image:
                    images.append(None)
                    continue
                images.append(image)
                if image not in orbit:
                    todo.append(image)
            orbit[cur] = images
        if all(im == cur for cur, ims in orbit.items() for im in ims):
            self._by_set[key] = CONST
            return CONST
        start = self._alloc(len(orbit))
        ids = {s: start + i for i, s in enumerate(orbit)}
        for s, ims in orbit.items():  # in id order
            self.regions[ids[s]] = s
            self._by_set[s] = ids[s]
            for k, im in enumerate(ims):
                image = INVALID if im is None else ids[im]
                self._img[k, ids[s]] = image
                self._img_list[k].append(image)
        return ids[key]

    def regions_of(self, rows: torch.Tensor) -> torch.Tensor:
        """region() of every row of a (P, m) label tensor."""
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        ids = torch.tensor([self.region(r) for r in unique.tolist()], dtype=torch.long)
        return ids[inverse]

    def symmetric(self, family: torch.Tensor, anchors: int = 0) -> bool:
        """Is a family of rows (``anchors`` label columns, then a group of labels sorted) mapped
        onto itself by every symmetry?"""
        fam = torch.unique(family, dim=0)
        for k in range(self.maps):
            im = self.image(k, fam)
            if (im == INVALID).any():
                return False
            im = torch.cat([im[:, :anchors], im[:, anchors:].sort(dim=1).values], dim=1)
            if torch.unique(torch.cat([fam, im]), dim=0).shape[0] != fam.shape[0]:
                return False
        return True

    def symmetric_family(self, anchors: torch.Tensor, groups: torch.Tensor,
                         gid: torch.Tensor) -> bool:
        """Is the family {(anchors[i], groups[gid[i]])} mapped onto itself by every symmetry?
        ``groups``: distinct sorted rows of labels; ``anchors``: (P, a) labels each member
        of the family keeps; ``gid``: (P,) the group of each member."""
        key = (hash(anchors.numpy().tobytes()), hash(groups.numpy().tobytes()),
               hash(gid.numpy().tobytes()), tuple(anchors.shape), tuple(groups.shape))
        if key in self._cache:
            return self._cache[key]
        n_groups, radix = groups.shape[0], self.size + 3

        def encode(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            code = torch.zeros_like(g)
            for col in a.unbind(dim=1):
                code = code * radix + (col + 2)
            return code * n_groups + g

        members = torch.unique(encode(anchors, gid))
        ok = True
        for k in range(self.maps):
            image = self.image(k, groups)
            moved = self.image(k, anchors)
            if (image == INVALID).any() or (moved == INVALID).any():
                ok = False
                break
            image = image.sort(dim=1).values
            both, inverse = torch.unique(torch.cat([groups, image]), dim=0, return_inverse=True)
            if both.shape[0] != n_groups:  # the image of a group is not a group
                ok = False
                break
            lookup = torch.empty(n_groups, dtype=torch.long)
            lookup[inverse[:n_groups]] = torch.arange(n_groups)
            image_gid = lookup[inverse[n_groups:]]
            if not bool(torch.isin(encode(moved, image_gid[gid]), members).all()):
                ok = False
                break
        self._cache[key] = ok
        return ok

    def grid_size(self, label: int) -> tuple[int, int] | None:
        for p in sorted(self.points(label))[:1]:
            g = self.grid_of(p)
            return None if g is None else (g[1], g[2])
        return None


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every dim along which it is constant cut to size 1 (a view)."""
    for d in range(t.dim()):
        if t.shape[d] > 1 and (t.stride(d) == 0 or torch.equal(t, t.narrow(d, 0, 1).expand_as(t))):
            t = t.narrow(d, 0, 1)
    return t


def _members(groups: torch.Tensor) -> torch.Tensor | None:
    """The distinct members of each (sorted) row, when every row holds each of its members
    equally often (as a merge over channels does: C copies of each position), else None."""
    n_groups, m = groups.shape
    distinct = int((groups[0, 1:] != groups[0, :-1]).sum()) + 1
    if m % distinct:
        return None
    blocks = groups.view(n_groups, distinct, m // distinct)
    if not bool((blocks == blocks[:, :, :1]).all()):
        return None
    return blocks[:, :, 0]


def _reshape(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t.reshape(shape)`` that keeps trailing dims along which ``t`` is constant (the
    channels of a channels-last map) as a broadcast instead of copying them."""
    c = _compact(t)
    k = 0
    while k < t.dim() and c.shape[t.dim() - 1 - k] == 1:
        k += 1
    trailing = math.prod(t.shape[t.dim() - k:])
    for j in range(len(shape), -1, -1):
        if math.prod(shape[j:]) == trailing and \
                math.prod(shape[:j]) == math.prod(t.shape[:t.dim() - k]):
            lead = c.reshape(c.shape[:t.dim() - k]) if k else t
            lead = lead.expand(t.shape[:t.dim() - k]).reshape(shape[:j])
            return lead.reshape(tuple(shape[:j]) + (1,) * (len(shape) - j)).expand(shape)
    return t.reshape(shape)


def _varying(t: torch.Tensor) -> list[int]:
    c = _compact(t)
    return [d for d in range(c.dim()) if c.shape[d] > 1]


def _all_const(t: torch.Tensor) -> bool:
    return bool((_compact(t) < 0).all())


# ----------------------------------------------------------------------------- tensors
@dataclass
class Info:
    kind: str
    comps: tuple[torch.Tensor, ...] = ()  # tracked: 1 label tensor, or 2 (query, key)
    value: torch.Tensor | None = None  # constant: its value on the CPU where known
    rolls: tuple[tuple[str, str], ...] = ()  # where the labels were cyclically shifted
    reason: str = ""  # opaque: what could not be judged (reported when it is used)
    extra: dict = field(default_factory=dict)


_PARAM = Info(PARAM)


class _Unknown(Exception):
    """An op (or its arguments) that the tracer cannot judge."""


def _flatten(obj, out: list) -> list:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _flatten(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _flatten(o, out)
    return out


def _rolls(*seqs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Where labels were cyclically shifted ((module, text), oldest first, each once, the
    last 4)."""
    return tuple(dict.fromkeys(r for seq in seqs for r in seq))[-4:]


def _op_name(func) -> str:
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _dims(dim, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, int):
        dim = [dim]
    return sorted({d % ndim for d in dim})


METADATA = {
    "size", "dim", "ndim", "shape", "numel", "stride", "is_contiguous", "dtype", "device",
    "element_size", "is_floating_point", "is_complex", "__len__", "data_ptr",
    "storage_offset", "layout", "requires_grad", "is_leaf", "grad_fn", "is_nested",
    "is_cuda", "is_meta", "is_sparse", "is_quantized", "nelement", "names", "get_device",
    "__hash__", "__repr__", "__format__", "__str__", "_is_view", "is_mkldnn", "grad",
    "output_nr", "_version", "is_inference", "has_names", "is_cpu", "itemsize", "nbytes",
    "requires_grad_", "retain_grad", "__reduce_ex__", "__deepcopy__", "is_mps", "is_xpu",
}
DATA_DEPENDENT = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__",
                  "__array__", "numpy", "nonzero", "argwhere", "unique", "equal", "allclose"}
IDENTITY = {
    "contiguous", "clone", "detach", "detach_", "to", "float", "double", "half", "bfloat16",
    "type", "type_as", "cpu", "cuda", "data", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "positive", "__pos__",
    "requires_grad_", "coalesce", "pin_memory", "as_subclass", "identity",
}
MOVEMENT = {
    "view", "reshape", "permute", "transpose", "swapaxes", "swapdims", "flatten", "unflatten",
    "unsqueeze", "squeeze", "expand", "roll", "flip", "fliplr", "flipud", "rot90", "narrow",
    "select", "movedim", "moveaxis", "t", "T", "mT", "chunk", "split", "tensor_split",
    "split_with_sizes", "unbind", "repeat", "tile", "__getitem__", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "view_as", "reshape_as",
    "expand_as", "unfold", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "atleast_1d", "atleast_2d", "atleast_3d", "ravel", "repeat_interleave", "index_select",
    "gather", "take_along_dim", "diagonal", "broadcast_to", "unsqueeze_copy", "view_copy",
}
POINTWISE = {
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "rsub",
    "floor_divide", "remainder", "fmod", "pow", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__",
    "__rtruediv__", "__itruediv__", "__div__", "__rdiv__", "__idiv__", "__floordiv__",
    "__rfloordiv__", "__mod__", "__pow__", "__rpow__", "__ipow__", "__neg__", "neg",
    "negative", "__abs__", "abs", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "sqrt", "rsqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "atan", "asin", "acos",
    "sigmoid", "relu", "relu6", "gelu", "silu", "hardswish", "hardsigmoid", "hardtanh",
    "elu", "selu", "celu", "leaky_relu", "rrelu", "mish", "softplus", "softsign",
    "logsigmoid", "tanhshrink", "softshrink", "hardshrink", "threshold", "clamp", "clip",
    "clamp_min", "clamp_max", "minimum", "maximum", "fmin", "fmax", "where", "masked_fill",
    "eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
    "__ge__", "logical_and", "logical_or", "logical_not", "logical_xor", "__and__",
    "__or__", "__xor__", "__invert__", "__iand__", "__ior__", "bitwise_and", "bitwise_or",
    "bitwise_not", "sign", "sgn", "square", "erf", "erfc", "reciprocal", "floor", "ceil",
    "round", "trunc", "frac", "lerp", "addcmul", "addcdiv", "nan_to_num", "isnan", "isinf",
    "isfinite", "sigmoid_", "relu_", "silu_", "tanh_", "add_", "sub_", "mul_", "div_",
    "clamp_", "hardtanh_", "leaky_relu_", "elu_", "masked_fill_", "exp_", "pow_", "neg_",
    "abs_", "sqrt_", "hardswish_", "hardsigmoid_", "threshold_", "copysign", "xlogy",
    "logit", "sinc", "float_power", "mvlgamma", "digamma", "lgamma", "heaviside", "hypot",
    "atan2", "arctan2", "logaddexp", "batch_norm", "prelu", "fill_", "zero_", "copy_",
    "clamp_min_", "clamp_max_",
}
PER_CHANNEL = {"batch_norm", "prelu"}  # their parameters run along dim 1
REDUCTIONS = {"mean", "sum", "nansum", "nanmean", "amax", "amin", "max", "min", "prod",
              "logsumexp", "std", "var", "norm", "all", "any", "count_nonzero", "median",
              "nanmedian", "std_mean", "var_mean", "aminmax"}
KEEP_MIXING = {"softmax", "log_softmax", "softmin", "normalize", "layer_norm", "group_norm",
               "instance_norm", "local_response_norm", "rms_norm", "_softmax"}
CONTRACTIONS = {"linear", "matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "mv",
                "einsum", "bilinear"}
ATTENTION = {"multi_head_attention_forward", "scaled_dot_product_attention"}
GRID = {"conv2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d",
        "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
        "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
        "conv_transpose2d", "lp_pool2d"}
FACTORY_LIKE = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like",
                "ones_like", "full_like", "empty_like", "rand_like", "randn_like",
                "randint_like"}
RANDOM = {"empty", "empty_like", "new_empty", "rand", "randn", "randint", "rand_like",
          "randn_like", "randint_like", "normal", "bernoulli", "multinomial", "randperm",
          "empty_strided", "uniform_", "normal_"}
INPLACE_SOURCE = {"fill_", "zero_", "copy_"}
INPLACE_DUNDER = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__", "__ipow__",
                  "__iand__", "__ior__", "__ixor__"}


# ----------------------------------------------------------------------------- recorder
class Recorder(TorchFunctionMode):
    """Intercepts every torch function, moves the labels along and records one row per op
    that it judges (or cannot judge)."""

    def __init__(self, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.rows: list[dict] = []
        self.space = Space(3 if input_size[0] == input_size[1] else 2)
        self._infos: dict[int, tuple[weakref.ref, Info]] = {}
        self._seen: set = set()
        self._fresh = 0

    # -- bookkeeping -----------------------------------------------------------------
    def track_input(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        labels = self.space.grid(h, w, key="input")
        self._set(x, Info(TRACKED, (labels.expand(x.shape),)))

    def know(self, t: torch.Tensor, value: torch.Tensor) -> None:
        """The value of a constant (a buffer of the model a meta-device copy was made of)."""
        self._set(t, Info(CONSTANT, value=value))

    def info(self, t: torch.Tensor) -> Info:
        entry = self._infos.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        if isinstance(t, nn.Parameter):
            return _PARAM
        return Info(CONSTANT, value=None if t.device.type == "meta" else t)

    def _set(self, t: torch.Tensor, info: Info) -> None:
        key = id(t)
        infos = self._infos

        def forget(ref, key=key):
            if infos.get(key, (None,))[0] is ref:
                del infos[key]

        infos[key] = (weakref.ref(t, forget), info)

    def where(self) -> str:
        return (self.stack[-1][0] if self.stack else "") or "(model)"

    def _roll_note(self, rolls) -> str:
        """The last roll made in the current module (or a module around it), if any."""
        here = self.where()
        mine = [text for module, text in rolls
                if module == here or here.startswith(module + ".") or module == "(model)"]
        return f"; {mine[-1]}" if mine else ""

    def record(self, op: str, input_size, exact, note: str = "", *, key=None, **fields) -> None:
        module, module_type = self.stack[-1] if self.stack else ("", "")
        key = (module, op, note) if key is None else (module, key)
        if key in self._seen:
            return
        self._seen.add(key)
        size = tuple(int(s) for s in input_size) if input_size is not None else (0, 0)
        self.rows.append(dict(module=module, module_type=module_type, op=op,
                              input_size=size, exact=exact, note=note, **fields))

    def unknown(self, op: str, reason: str = "", input_size=(0, 0)) -> None:
        note = f"{op} at {self.where()} not judged" + (f" ({reason})" if reason else "")
        self.record(op, input_size, None, note)

    def _label_size(self, *tensors: torch.Tensor) -> tuple[int, int]:
        for t in tensors:
            c = _compact(t)
            pos = c[c >= 0]
            if pos.numel():
                size = self.space.grid_size(int(pos.min()))
                if size is not None:
                    return size
        return (0, 0)

    # -- dispatch --------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        tensors = _flatten(args, []) + _flatten(kwargs, [])
        infos = [self.info(t) for t in tensors]
        out = func(*args, **kwargs)
        involved = any(i.kind in (TRACKED, OPAQUE) for i in infos)
        if not involved:
            if name not in METADATA:
                self._constant(func, name, args, kwargs, infos, out)
            return out
        if name in METADATA:
            return out
        try:
            self._apply(func, name, args, kwargs, tensors, infos, out)
        except _Unknown as exc:
            self.unknown(name, str(exc), self._size_of(tensors, infos))
            self._opaque(out, args)
        except Exception as exc:  # a rule that failed on an unusual call: never "exact"
            self.unknown(name, f"tracer: {type(exc).__name__}: {exc}"[:160],
                         self._size_of(tensors, infos))
            self._opaque(out, args)
        return out

    def _size_of(self, tensors, infos) -> tuple[int, int]:
        for i in infos:
            if i.kind == TRACKED:
                size = self._label_size(*i.comps)
                if size != (0, 0):
                    return size
        first = next((t for t in tensors if t.dim() >= 2), None)
        return tuple(first.shape[-2:]) if first is not None else (0, 0)

    def _opaque(self, out, args, reason: str = "") -> None:
        for t in _flatten(out, []):
            self._set(t, Info(OPAQUE, reason=reason))
        if args and isinstance(args[0], torch.Tensor) and _flatten(out, []) == []:
            self._set(args[0], Info(OPAQUE, reason=reason))  # in-place op returning None

    def _constant(self, func, name, args, kwargs, infos, out) -> None:
        """An op on constants and parameters only: remember which outputs derive from
        parameters, and compute values of meta-device constants where cheap (masks)."""
        outs = _flatten(out, [])
        if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            target = self.info(args[0])
            if target.kind == CONSTANT and target.value is not None and \
                    args[0].device.type == "meta":
                try:
                    func(target.value, *self._concrete(args[1:]))
                except (_Unknown, RuntimeError, TypeError, IndexError):
                    self._set(args[0], Info(CONSTANT))
            if any(i.kind == PARAM for i in infos[1:]):
                self._set(args[0], _PARAM)
            return
        if not outs:
            return
        if any(i.kind == PARAM for i in infos):
            for t in outs:
                self._set(t, _PARAM)
            return
        if all(t.device.type != "meta" for t in outs):
            return
        value = None
        if name not in RANDOM and sum(t.numel() for t in outs) <= 4_000_000:
            try:
                value = func(*self._concrete(args), **self._concrete(kwargs, device=True))
            except (_Unknown, RuntimeError, TypeError, ValueError, IndexError):
                value = None
        values = _flatten(value, []) if value is not None else []
        if len(values) != len(outs) or any(v.shape != t.shape or v.device.type != "cpu"
                                           for v, t in zip(values, outs, strict=False)):
            values = [None] * len(outs)
        for t, v in zip(outs, values, strict=True):
            if t is not None and (args and t is args[0]) and v is not None:
                continue  # in-place: the value was updated in place
            self._set(t, Info(CONSTANT, value=v))

    def _concrete(self, obj, device: bool = False):
        """``obj`` with every tensor replaced by its value on the CPU (_Unknown where the
        value is not known) and, with ``device``, every device argument by the CPU."""
        if isinstance(obj, torch.Tensor):
            info = self.info(obj)
            if info.kind != CONSTANT or info.value is None:
                raise _Unknown("a tensor argument whose value is not known")
            return info.value
        if isinstance(obj, tuple):
            return tuple(self._concrete(o) for o in obj)
        if isinstance(obj, list):
            return [self._concrete(o) for o in obj]
        if isinstance(obj, dict):
            return {k: ("cpu" if device and k == "device" else self._concrete(v))
                    for k, v in obj.items()}
        return obj

    # -- rules -----------------------------------------------------------------------
    def _apply(self, func, name, args, kwargs, tensors, infos, out) -> None:
        opaque = [i for i in infos if i.kind == OPAQUE]
        if name in GRID:
            return self._grid(func, name, args, kwargs, out)
        if name == "pad" and func is F.pad:
            return self._pad(args, kwargs, out)
        for i in opaque:
            if i.reason:
                self.unknown(i.reason.split(" ", 1)[0], i.reason)
                i.reason = ""
        if opaque:
            return self._opaque(out, args)
        tracked = [(t, i) for t, i in zip(tensors, infos, strict=True) if i.kind == TRACKED]
        if name in DATA_DEPENDENT:
            if any(not _all_const(c) for _, i in tracked for c in i.comps):
                raise _Unknown("control flow on values that depend on position")
            return None
        if name in FACTORY_LIKE:
            return self._factory(name, args, kwargs, out)
        if name in IDENTITY:
            if "dropout" in name and kwargs.get("training", args[2] if len(args) > 2 else
                                                 False) and \
                    kwargs.get("p", args[1] if len(args) > 1 else 0.5):
                raise _Unknown("dropout in training mode is random")
            src = self.info(args[0]) if isinstance(args[0], torch.Tensor) else tracked[0][1]
            return self._set_out(out, src)
        if name == "__setitem__":
            return self._setitem(args)
        if name == "unfold" and func is F.unfold:
            return self._unfold(args, kwargs, out)
        if name in MOVEMENT:
            return self._movement(func, name, args, kwargs, out)
        if name in REDUCTIONS:
            return self._reduction(name, args, kwargs, tensors, infos, out)
        if name in POINTWISE:
            return self._pointwise(name, args, kwargs, tensors, infos, out)
        if name in KEEP_MIXING:
            return self._keep_mixing(name, args, kwargs, out)
        if name in CONTRACTIONS:
            return self._contraction(name, args, kwargs, out)
        if name in ATTENTION:
            return self._attention(name, args, kwargs, out)
        if name not in RANDOM and all(_all_const(c) for _, i in tracked for c in i.comps):
            # any deterministic op on values that no symmetry moves (pooled features, class
            # tokens) gives values that no symmetry moves
            for t in _flatten(out, []):
                self._set(t, Info(TRACKED, (torch.full((), CONST, dtype=torch.long)
                                            .expand(t.shape),)))
            return None
        raise _Unknown("")

    def _set_out(self, out, info: Info) -> None:
        for t in _flatten(out, []):
            self._set(t, info)

    def _factory(self, name, args, kwargs, out) -> None:
        value = None
        if isinstance(out, torch.Tensor) and out.numel() <= 4_000_000:
            if "zeros" in name:
                value = torch.zeros(out.shape, dtype=out.dtype)
            elif "ones" in name:
                value = torch.ones(out.shape, dtype=out.dtype)
            elif "full" in name:
                fill = kwargs.get("fill_value", args[2] if len(args) > 2 else None)
                if isinstance(fill, (int, float, bool)):
                    value = torch.full(out.shape, fill, dtype=out.dtype)
        self._set(out, Info(CONSTANT, value=value))

    # data movement --------------------------------------------------------------------
    def _as_labels(self, t: torch.Tensor, ncomp: int) -> tuple[torch.Tensor, ...]:
        info = self.info(t)
        if info.kind == TRACKED:
            if len(info.comps) != ncomp:
                raise _Unknown("combines attention scores with a feature map")
            return info.comps
        if info.kind == OPAQUE:
            raise _Unknown("")
        return (torch.full((), CONST, dtype=torch.long).expand(t.shape),) * ncomp

    def _movement(self, func, name, args, kwargs, out) -> None:
        if name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack"):
            seq = args[0] if args else kwargs.get("tensors")
            infos = [self.info(t) for t in seq]
            ncomp = max(len(i.comps) for i in infos if i.kind == TRACKED)
            rolls = _rolls(*(i.rolls for i in infos))
            comps = tuple(self._cat(func, name, [self._as_labels(t, ncomp)[c] for t in seq],
                                    args[1:], kwargs, out) for c in range(ncomp))
            return self._set(out, Info(TRACKED, comps, rolls=rolls))
        src = self.info(args[0])
        if src.kind != TRACKED:  # e.g. a parameter indexed with a tracked index
            raise _Unknown("indexing with values computed from the input")
        rest = args[1:]
        if name == "view" and (rest and isinstance(rest[0], torch.dtype) or "dtype" in kwargs):
            raise _Unknown("reinterpreting the bytes of a tensor")
        if name == "__getitem__":
            rest = (self._index(args[1]),)
        elif name not in ("view_as", "reshape_as", "expand_as"):
            rest = tuple(self._index(a) if isinstance(a, torch.Tensor) else a for a in rest)
            kwargs = {k: self._index(v) if isinstance(v, torch.Tensor) else v
                      for k, v in kwargs.items()}
        outs = _flatten(out, [])
        if name in ("view", "reshape") and len(outs) == 1:
            results = [_reshape(comp, tuple(outs[0].shape)) for comp in src.comps]
        else:
            results = [self._replay(func, name, comp, rest, kwargs) for comp in src.comps]
        per_out = [tuple(_flatten(r, [])[j] for r in results) for j in range(len(outs))]
        rolls = src.rolls
        if name == "roll":
            shifts = kwargs.get("shifts", rest[0] if rest else None)
            rolls = _rolls(rolls, ((self.where(), f"roll by {shifts} at {self.where()}"),))
        for t, comps in zip(outs, per_out, strict=True):
            self._set(t, Info(TRACKED, comps, rolls=rolls))

    @staticmethod
    def _cat(func, name, labels, rest, kwargs, out):
        """Concatenation of the labels; along a dim where all of them are the same constant
        (channels of one grid, as in DenseNet) without materialising anything."""
        if name in ("cat", "concat", "concatenate"):
            dim = kwargs.get("dim", rest[0] if rest else 0)
            small = [_compact(t) for t in labels]
            first = small[0]
            d = dim % out.dim()
            if all(t.dim() == out.dim() and t.shape[d] == 1 for t in small) and \
                    all(t.shape == first.shape and torch.equal(t, first) for t in small[1:]):
                return first.expand(out.shape)
        return func(labels, *rest, **kwargs)

    def _index(self, index):
        def one(i):
            if isinstance(i, torch.Tensor):
                info = self.info(i)
                if info.kind == CONSTANT and info.value is not None:
                    return info.value
                raise _Unknown("indexing with a tensor whose values are not known")
            return i
        return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)

    @staticmethod
    def _replay(func, name, comp, rest, kwargs):
        if name == "view":
            return comp.reshape(*rest) if not kwargs else comp.reshape(kwargs["size"])
        if name == "T":
            return comp.permute(*reversed(range(comp.dim())))
        if name == "mT":
            return comp.transpose(-2, -1)
        if name in ("view_as", "reshape_as"):
            return comp.reshape(rest[0].shape)
        if name == "expand_as":
            return comp.expand(rest[0].shape)
        try:
            return func(comp, *rest, **kwargs)
        except RuntimeError:
            return func(comp.contiguous(), *rest, **kwargs)

    def _setitem(self, args) -> None:
        target, index, value = args[0], args[1], args[2]
        tinfo = self.info(target)
        vinfo = self.info(value) if isinstance(value, torch.Tensor) else Info(CONSTANT)
        if OPAQUE in (tinfo.kind, vinfo.kind):
            raise _Unknown("")
        ncomp = max(len(i.comps) for i in (tinfo, vinfo) if i.kind == TRACKED)
        tl = self._as_labels(target, ncomp)
        vl = self._as_labels(value, ncomp) if isinstance(value, torch.Tensor) else \
            (torch.full((), CONST, dtype=torch.long),) * ncomp
        index = self._index(index)
        self._partial(target, "__setitem__")
        if tinfo.kind == TRACKED:
            # where(written, value, target): the labels show where the values come from, not
            # how they were computed, so the positions one write changes must be a set that
            # the symmetries map onto itself; otherwise not judged (later writes may complete
            # the set, e.g. the first and then the last row)
            written = torch.zeros(target.shape, dtype=torch.float64)
            written[index] = 1.0
            shape = tuple(target.shape)
            if set(_varying(written)) & {d for c in tl for d in _varying(c.expand(shape))} \
                    and not self._values_symmetric(tl, written, shape):
                self.record("__setitem__", self._label_size(*tl), None,
                            f"__setitem__ at {self.where()} not judged: it writes positions "
                            "that the symmetries do not map onto each other")
        comps = []
        for t_c, v_c in zip(tl, vl, strict=True):
            t_c = t_c.clone()
            t_c[index] = v_c
            comps.append(t_c)
        self._set(target, Info(TRACKED, tuple(comps), rolls=_rolls(tinfo.rolls, vinfo.rolls)))

    def _partial(self, target: torch.Tensor, name: str) -> None:
        """An in-place op on a view of part of a tracked tensor changes that tensor at some
        positions, which its labels cannot show: not judged."""
        base = getattr(target, "_base", None)
        if base is not None and base.numel() > target.numel() and \
                self.info(base).kind == TRACKED:
            raise _Unknown("in-place change of a view of part of a tensor")

    def _unfold(self, args, kwargs, out) -> None:
        src = self.info(args[0])
        if len(src.comps) != 1:
            raise _Unknown("unfold of attention scores")
        shifted = (src.comps[0] + 1).double()  # zero padding lands on CONST
        result = F.unfold(shifted.contiguous(), *args[1:], **kwargs).round().long() - 1
        self._set(out, Info(TRACKED, (result,), rolls=src.rolls))

    def _pad(self, args, kwargs, out) -> None:
        names = ["input", "pad", "mode", "value"]
        bound = {"mode": "constant", "value": None}
        bound.update(zip(names, args, strict=False))
        bound.update(kwargs)
        x, pad, mode = bound["input"], list(bound["pad"]), bound["mode"]
        src = self.info(x)
        if src.kind != TRACKED or len(src.comps) != 1:  # as before: the last two dims
            full = pad + [0] * (4 - len(pad))
            left, right, top, bottom = full[:4]
            if not (left == right and top == bottom):
                self.record("pad", x.shape[-2:], False,
                            "asymmetric padding shifts the grid centre",
                            padding=f"l{left} r{right} t{top} b{bottom}")
            return self._opaque(out, args)
        comp = src.comps[0]
        spatial = _varying(comp)
        pairs = {x.dim() - 1 - i: (pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)}
        bad = {d: p for d, p in pairs.items() if d in spatial and p[0] != p[1]}
        if bad:
            dims = spatial[-2:] if len(spatial) >= 2 else [x.dim() - 2, x.dim() - 1]
            (top, bottom), (left, right) = pairs.get(dims[0], (0, 0)), pairs.get(dims[1], (0, 0))
            layout = "" if dims == [x.dim() - 2, x.dim() - 1] else \
                f" (spatial dims {dims[0]}, {dims[1]} of a {x.dim()}-D tensor)"
            self.record("pad", (x.shape[dims[0]], x.shape[dims[1]]), False,
                        "asymmetric padding shifts the grid centre" + layout,
                        padding=f"l{left} r{right} t{top} b{bottom}")
        if mode == "constant":
            result = F.pad(comp, pad, value=CONST)
        else:
            result = F.pad((comp + 1).double().contiguous(), pad, mode=mode).round().long() - 1
        self._set(out, Info(TRACKED, (result,), rolls=src.rolls))

    # pointwise ------------------------------------------------------------------------
    def _pointwise(self, name, args, kwargs, tensors, infos, out) -> None:
        target = _flatten(out, [])
        inplace = name.endswith("_") and not name.startswith("__") or name in INPLACE_DUNDER
        if not target and inplace and isinstance(args[0], torch.Tensor):
            target = [args[0]]
        if not target:
            return None
        shape = target[0].shape
        if inplace and isinstance(args[0], torch.Tensor):
            self._partial(args[0], name)
        if name in INPLACE_SOURCE and isinstance(args[0], torch.Tensor):
            if name == "copy_":
                src = self.info(args[1])
                if src.kind == TRACKED:
                    return self._set(args[0], Info(TRACKED, tuple(c.expand(shape) for c in
                                                                  src.comps), rolls=src.rolls))
            return self._set(args[0], Info(TRACKED, (torch.full((), CONST, dtype=torch.long)
                                                     .expand(shape),)))
        tracked = [i for i in infos if i.kind == TRACKED]
        ncomps = {len(i.comps) for i in tracked}
        if len(ncomps) != 1:
            raise _Unknown("combines attention scores with a feature map")
        ncomp = ncomps.pop()
        merged: list[torch.Tensor] = []
        for c in range(ncomp):
            cur = None
            for i in tracked:
                lab = i.comps[c]
                if cur is None:
                    cur = lab
                    continue
                if lab is cur:
                    continue
                a, b = _compact(cur), _compact(lab)
                common = torch.broadcast_shapes(a.shape, b.shape)
                a, b = a.expand(common), b.expand(common)
                if torch.equal(a, b):
                    cur = a
                    continue
                if _all_const(b):  # a broadcast constant (a bias, an SE scale, ...)
                    cur = a
                elif _all_const(a):
                    cur = b
                else:  # e.g. a shifted operand, or padding / zeroed positions in one of them
                    cur = self._combine(name, a, b)
            merged.append(cur.expand(shape) if cur.shape != shape else cur)
        varying = set()
        for comp in merged:
            varying |= set(_varying(comp))
        rolls = _rolls(*(i.rolls for i in tracked))
        if varying:
            per_channel = name in PER_CHANNEL
            for t, i in zip(tensors, infos, strict=True):
                if i.kind not in (PARAM, CONSTANT) or t.dim() == 0:
                    continue
                if per_channel:
                    ext = {1} if t.numel() > 1 else set()
                else:
                    lead = len(shape) - t.dim()
                    ext = {lead + d for d, s in enumerate(t.shape) if s > 1}
                if not ext & varying:
                    continue
                self._positional(name, t, _PARAM if per_channel else i, merged, shape,
                                 per_channel)
        self._set(target[0], Info(TRACKED, tuple(merged), rolls=rolls))
        if inplace and isinstance(args[0], torch.Tensor) and args[0] is not target[0]:
            self._set(args[0], Info(TRACKED, tuple(merged), rolls=rolls))

    def _combine(self, name, a, b) -> torch.Tensor:
        """Elements that combine two different locations: fine iff the symmetries permute
        the pairs consistently (e.g. ``x + x.flip(-1)``); the result stands for both."""
        rows = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)], dim=1), dim=0,
                            return_inverse=True)
        rows, inverse = rows
        if not self.space.symmetric(rows, anchors=2):
            self.record(name, self._label_size(a, b), False,
                        f"{name} at {self.where()} combines positions that the symmetries "
                        "do not map onto each other (e.g. a shift that is not undone, or "
                        "positions overwritten on one side)")
            return a
        return self.space.regions_of(rows)[inverse].view(a.shape)

    def _positional(self, name, t, info, comps, shape, per_channel) -> None:
        size = self._label_size(*comps)
        if info.kind == PARAM:
            if len(comps) == 2:
                return None  # a relative position bias: a kernel-like weight (assumed symmetric)
            what = "per-position weights" if per_channel else "positional embedding"
            self.record("per_position_weights" if per_channel else "pos_embedding", size, True,
                        f"{what} at {self.where()}: invariance needs symmetric weights "
                        "(the grid itself is symmetric)", grid_only=True, show=True)
            return None
        if info.value is None:
            self.record("constant", size, None,
                        f"position-dependent constant ({name}) at {self.where()} not judged "
                        "(its values are not known)")
            return None
        value = info.value
        if per_channel:
            value = value.reshape(1, -1, *([1] * (len(shape) - 2)))
        ok = self._values_symmetric(comps, value.expand(shape) if value.dim() <= len(shape)
                                    else value, shape)
        if ok is None:
            self.record("mask", size, None,
                        f"mask ({name}) at {self.where()} not judged")
        elif not ok:
            self.record("mask", size, False,
                        f"mask ({name}) at {self.where()} is not mirror-symmetric: the "
                        "symmetries move it against the positions", show=True)

    def _values_symmetric(self, comps, value, shape) -> bool | None:
        """Is a constant the same function of the labels after every symmetry? Elements that
        differ only along dims where no label varies (heads, channels) are kept apart."""
        parts = [_compact(c.expand(shape)) for c in comps] + [_compact(value.expand(shape))]
        key = ("values",) + tuple((tuple(p.shape), hash(p.contiguous().numpy().tobytes()))
                                  for p in parts)
        if key not in self.space._cache:
            self.space._cache[key] = self._values_symmetric_parts(parts)
        return self.space._cache[key]

    def _values_symmetric_parts(self, parts) -> bool | None:
        small = torch.broadcast_shapes(*(p.shape for p in parts))
        labels = [p.expand(small).reshape(-1) for p in parts[:-1]]
        varying = {d for p in parts[:-1] for d in range(len(small)) if p.shape[d] > 1}
        index = torch.zeros((), dtype=torch.long)
        for d in (d for d in range(len(small)) if d not in varying):
            index = index * small[d] + torch.arange(small[d]).view(
                [small[d] if j == d else 1 for j in range(len(small))])
        index = index.expand(small).reshape(-1)
        v = parts[-1].expand(small).reshape(-1).to(torch.float64)
        radix = self.space.size + 3
        span = int(index.max()) + 1 if index.numel() else 1
        if radix ** len(labels) * span >= 2 ** 62:
            return None
        def encode(cols):  # labels (>= INVALID) and the other index in one int64
            code = torch.zeros_like(index)
            for col in cols:
                code = code * radix + (col + 2)
            return code * span + index
        keys = encode(labels)
        unique, inverse = torch.unique(keys, return_inverse=True)
        vals = torch.zeros(unique.shape[0], dtype=torch.float64).scatter_(0, inverse, v)
        clash = vals[inverse] != v
        if clash.any():  # the same labels carry different values
            positional = torch.stack(labels, dim=1).ge(0).all(dim=1)
            if (clash & positional).any():
                return None
            # padding (CONST) elements with different values: judge the positions only
            keep = positional
            labels, index, v = [c[keep] for c in labels], index[keep], v[keep]
            keys = encode(labels)
            unique, inverse = torch.unique(keys, return_inverse=True)
            vals = torch.zeros(unique.shape[0], dtype=torch.float64).scatter_(0, inverse, v)
        for k in range(self.space.maps):
            images = [self.space.image(k, col) for col in labels]
            if any((im == INVALID).any() for im in images):
                return False
            found = torch.searchsorted(unique, encode(images))
            found = found.clamp(max=unique.shape[0] - 1)
            present = unique[found] == encode(images)
            if not torch.equal(vals[found][present], v[present]):
                return False
        return True

    # mixing ---------------------------------------------------------------------------
    def _family(self, op, comps_anchor, group, mixed, shape, rolls, kind, quiet=False):
        """Judge the groups that an op mixes. ``group`` varies along the ``mixed`` dims;
        ``comps_anchor`` are labels each output element keeps (constant along them).
        Returns (rows of group labels, the free dims they are laid out over, their shape)."""
        g = _compact(group.expand(shape))
        anchors = [_compact(a.expand(shape)) for a in comps_anchor]
        key = ("family", tuple(shape), tuple(mixed)) + tuple(
            (tuple(t.shape), hash(t.contiguous().numpy().tobytes())) for t in [g, *anchors])
        cached = self.space._cache.get(key)
        if cached is None:
            cached = self.space._cache[key] = self._family_judge(g, anchors, mixed, shape)
        rows, vf, vshape, groups, ok = cached
        if groups is not None and not (ok and quiet):
            # a normalisation or softmax reports only what breaks
            self._family_row(op, groups, ok, rolls, kind)
        return rows, vf, vshape

    def _family_judge(self, g, anchors, mixed, shape):
        nd = len(shape)
        free = [d for d in range(nd) if d not in mixed]
        vf = [d for d in free if g.shape[d] > 1 or any(a.shape[d] > 1 for a in anchors)]
        rest = [d for d in free if d not in vf]
        order = vf + list(mixed) + rest
        p = math.prod(shape[d] for d in vf)
        m = math.prod(shape[d] for d in mixed)
        gshape = [shape[d] if d in vf or d in mixed else 1 for d in range(nd)]
        rows = g.expand(gshape).permute(order).reshape(p, m).sort(dim=1).values
        ashape = [shape[d] if d in vf else 1 for d in range(nd)]
        cols = [a.expand(ashape).permute(order).reshape(p, 1) for a in anchors]
        groups, gid = torch.unique(rows, dim=0, return_inverse=True)
        top = groups.max(dim=1).values
        low = torch.where(groups < 0, torch.full_like(groups, 2**62), groups).min(dim=1).values
        trivial = bool(((top < 0) | (low == top)).all())
        if trivial:  # every group is one location: nothing mixed
            return rows, vf, [shape[d] for d in vf], None, True
        anchor_cols = torch.cat(cols, dim=1) if cols else torch.zeros((p, 0), dtype=torch.long)
        ok = self.space.symmetric_family(anchor_cols.contiguous(), groups, gid)
        return rows, vf, [shape[d] for d in vf], groups, ok

    def _family_row(self, op, groups, ok, rolls, kind) -> None:
        if groups.shape[0] == 1 and ok:
            return None  # one group (e.g. global attention, global pooling)
        wkey = ("windows", hash(groups.numpy().tobytes()), tuple(groups.shape))
        if wkey not in self.space._cache:
            self.space._cache[wkey] = self._windows(groups)
        geometry = self.space._cache[wkey]
        size = self._label_size(groups)
        signature = ("family", kind, ok, hash(groups.numpy().tobytes()), tuple(groups.shape))
        roll = self._roll_note(rolls)
        if geometry is not None:
            (h, w), (wy, wx), (sy, sx), cuts = geometry
            shifted = bool(sy or sx)
            name = "merge" if kind == "merge" else ("shifted_window" if shifted else "window")
            # merge: each output stands for its whole group (a reduction, a Linear over a
            # 2x2 block); window: each output keeps its own position (attention)
            shift = f"{sy}" if sy == sx else f"{sy}x{sx}"
            what = f"{wy}x{wx} {'blocks' if kind == 'merge' else 'windows'}" + \
                (f" shifted by {shift}" if shifted else "") + f" on {h}x{w}"
            if ok:
                note = f"{what}: cuts at {cuts} are mirror-symmetric"
            else:
                note = f"{what}: cuts at {cuts} are not mirror-symmetric{roll}"
            self.record(name, (h, w), ok, note, kernel=(wy, wx), stride=(wy, wx),
                        padding=None if kind == "merge" else f"shift {shift}", show=True,
                        key=signature)
            return None
        if ok:
            return None
        what = f"{groups.shape[0]} groups of {groups.shape[1]}" + \
            (", padding inside" if bool((groups < 0).any()) else "")
        if roll and kind == "anchored":  # windows of a cyclic shift, not a plain tiling
            self.record("shifted_window", size, False,
                        f"windows after a cyclic shift mix groups of positions that the "
                        f"symmetries do not map onto each other ({what}){roll}", key=signature)
            return None
        self.record(op, size, False,
                    f"{op} at {self.where()} mixes groups of positions that the symmetries "
                    f"do not map onto each other ({what}){roll}", key=signature)
        return None

    def _windows(self, groups: torch.Tensor):
        """((H, W), (wy, wx), (sy, sx), cuts) when the groups are the (cyclic) windows of one
        grid, else None."""
        if (groups < 0).any() or (groups >= self.space.size).any():
            return None
        first = self.space.grid_of(int(groups[0, 0]))
        if first is None or any(int(v) in self.space.regions for v in groups.unique()[:64]):
            return None
        start, h, w = first
        if (groups < start).any() or (groups >= start + h * w).any():
            return None
        members = _members(groups)
        if members is not None:
            groups = members
        ys, xs = (groups - start) // w, (groups - start) % w
        axes = []
        for coords, n in ((ys, h), (xs, w)):
            found = None
            for row in coords.tolist():
                values = sorted(set(row))
                size = len(values)
                begin = [v for v in values if (v - 1) % n not in values]
                if len(begin) != 1 and size != n:
                    return None
                b = begin[0] if begin else 0
                if set(values) != {(b + t) % n for t in range(size)}:
                    return None
                key = (size, b % size)
                if found is None:
                    found = key
                elif found != key:
                    return None
            axes.append(found)
        (wy, sy), (wx, sx) = axes
        if len(set(groups[0].tolist())) != wy * wx:
            return None
        cuts_y = sorted({(k * wy + sy) % h for k in range(max(1, h // wy))})
        text = ", ".join(map(str, cuts_y)) if len(cuts_y) <= 4 else \
            f"{cuts_y[0]}, {cuts_y[1]}, ..., {cuts_y[-1]}"
        return (h, w), (wy, wx), (sy, sx), text

    def _reduction(self, name, args, kwargs, tensors, infos, out) -> None:
        x = args[0]
        if len(args) > 1 and isinstance(args[1], torch.Tensor):  # max(a, b): pointwise
            return self._pointwise(name, args, kwargs, tensors, infos, out)
        src = self.info(x)
        if len(src.comps) != 1:
            raise _Unknown("a reduction over attention scores")
        dim = kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else None))
        if name == "norm":
            dim = kwargs.get("dim", args[2] if len(args) > 2 else None)
        keepdim = bool(kwargs.get("keepdim", False))
        if not keepdim:
            pos = {"norm": 3, "std": 3, "var": 3}.get(name, 2)
            if len(args) > pos and isinstance(args[pos], bool):
                keepdim = args[pos]
        dims = _dims(dim, x.dim()) if x.dim() else []
        comp = src.comps[0]
        outs = _flatten(out, [])
        if not dims:
            return self._set_out(out, src)
        rows, vf, vshape = self._family(name, [], comp, dims, tuple(x.shape), src.rolls,
                                        "merge")
        ids = self._group_labels(rows)
        labels = ids.reshape([x.shape[d] if d in vf else 1 for d in range(x.dim())])
        if not keepdim:
            labels = labels.reshape([s for d, s in enumerate(labels.shape) if d not in dims])
        values = outs[0]
        labels = labels.expand(values.shape)
        info = Info(TRACKED, (labels,), rolls=src.rolls)
        self._set(values, info)
        for extra in outs[1:]:  # indices of max / min: positions, not values
            if extra.dtype == torch.long and name in ("max", "min", "median", "aminmax"):
                self._set(extra, Info(OPAQUE, reason=f"{name} indices at {self.where()}"))
            else:
                self._set(extra, info)

    def _keep_mixing(self, name, args, kwargs, out) -> None:
        x = args[0]
        src = self.info(x)
        nd = x.dim()
        if name in ("softmax", "log_softmax", "softmin", "_softmax"):
            dims = _dims(kwargs.get("dim", args[1] if len(args) > 1 else None), nd)
        elif name == "normalize":
            dims = _dims(kwargs.get("dim", args[2] if len(args) > 2 else 1), nd)
        elif name in ("layer_norm", "rms_norm"):
            shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else None)
            k = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
            dims = list(range(nd - k, nd))
        elif name == "local_response_norm":
            dims = [1]
        else:  # group_norm, instance_norm: channels and positions of each sample
            dims = list(range(1, nd))
        if src.kind != TRACKED:
            raise _Unknown("")
        ncomp = len(src.comps)
        moving = [c for c in src.comps if any(d in _varying(c) for d in dims)]
        if moving:
            anchors = [c for c in src.comps if not any(d in _varying(c) for d in dims)]
            if len(moving) != 1 or ncomp > 2:
                raise _Unknown("mixes attention scores along both positions")
            group = moving[0]
            self._family(name, anchors, group, dims, tuple(x.shape), src.rolls,
                         "anchored" if anchors else "merge", quiet=True)
        self._set(out, src)

    # contractions -----------------------------------------------------------------------
    def _contraction(self, name, args, kwargs, out) -> None:
        if name == "einsum":
            equation = args[0]
            operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) \
                else list(args[1:])
            equation = equation.replace(" ", "")
            if "..." in equation or "->" not in equation or len(operands) != 2:
                raise _Unknown("einsum form")
            ins, out_letters = equation.split("->")
            la, lb = ins.split(",")
            a, b = operands
        elif name == "linear":
            a, weight = args[0], kwargs.get("weight", args[1] if len(args) > 1 else None)
            if weight.dim() != 2:
                raise _Unknown("linear with a 1-D weight")
            letters = "abcdefghijklmn"[:a.dim() - 1]
            la, lb, out_letters = letters + "y", "yz", letters + "z"
            b = _Shaped((a.shape[-1], weight.shape[0]), self.info(weight))
        else:
            a, b = args[0], args[1]
            if name == "__rmatmul__":
                a, b = b, a
            if a.dim() < 1 or b.dim() < 1:
                raise _Unknown("")
            letters = "abcdefghijklmn"
            batch = max(a.dim(), b.dim()) - 2
            bl = letters[:max(batch, 0)]
            la = (bl[len(bl) - (a.dim() - 2):] if a.dim() > 2 else "") + \
                ("xy" if a.dim() >= 2 else "y")
            lb = (bl[len(bl) - (b.dim() - 2):] if b.dim() > 2 else "") + \
                ("yz" if b.dim() >= 2 else "y")
            out_letters = bl + ("x" if a.dim() >= 2 else "") + ("z" if b.dim() >= 2 else "")
        info = self._contract([(la, a), (lb, b)], out_letters, tuple(out.shape), name)
        self._set(out, info)

    def _contract(self, operands, out_letters, out_shape, name) -> Info:
        sizes: dict[str, int] = {}
        for letters, t in operands:
            for ch, s in zip(letters, t.shape, strict=True):
                sizes[ch] = max(sizes.get(ch, 1), int(s))
        contracted = [ch for ch in dict.fromkeys("".join(ls for ls, _ in operands))
                      if ch not in out_letters]
        joint = list(out_letters) + contracted
        shape = tuple(sizes[ch] for ch in joint)
        mixed = list(range(len(out_letters), len(joint)))
        comps_cv, comps_free, rolls = [], [], ()
        weighted = False
        for letters, t in operands:
            info = t.info if isinstance(t, _Shaped) else self.info(t)
            if info.kind != TRACKED:
                weighted |= info.kind in (PARAM, CONSTANT)
                continue
            rolls = _rolls(rolls, info.rolls)
            for comp in info.comps:
                view = self._to_joint(comp, letters, joint, shape)
                if any(view.shape[d] > 1 for d in mixed):
                    comps_cv.append(view)
                else:
                    comps_free.append(view)
        if not comps_cv:  # positions are not contracted (e.g. q @ k^T, Linear over channels)
            outs = []
            for c in comps_free:
                c = self._drop_mixed(c, mixed)
                if not _all_const(c) and \
                        not any(c.shape == o.shape and torch.equal(c, o) for o in outs):
                    outs.append(c)  # an operand that no symmetry moves adds no position
            if len(outs) > 2:
                raise _Unknown("more than two positions per element")
            if not outs:
                outs = [torch.full((), CONST, dtype=torch.long)]
            return Info(TRACKED, tuple(o.expand(out_shape) for o in outs), rolls=rolls)
        if len(comps_cv) == 2:  # matched positions: an attention-like weighted sum
            a, b = comps_cv
            common = torch.broadcast_shapes(a.shape, b.shape)
            ae, be = a.expand(common), b.expand(common)
            if not torch.equal(torch.where(ae >= 0, ae, be), torch.where(be >= 0, be, ae)):
                raise _Unknown("contracts positions that do not match")
            group = torch.where(ae >= 0, ae, be)
            comps_free = [c for c in comps_free if not _all_const(c)]
            if len(comps_free) > 2:
                raise _Unknown("more than two positions per element")
            self._family(name, comps_free, group, mixed, shape, rolls, "anchored")
            outs = [self._drop_mixed(c, mixed) for c in comps_free] or \
                [torch.full((), CONST, dtype=torch.long)]
            return Info(TRACKED, tuple(o.expand(out_shape) for o in outs), rolls=rolls)
        if len(comps_cv) > 2 or comps_free:
            raise _Unknown("contracts positions of more than one operand")
        group = comps_cv[0]
        rows, vf, vshape = self._family(name, [], group, mixed, shape, rolls, "merge")
        ids = self._group_labels(rows)
        labels = ids.reshape([shape[d] if d in vf else 1 for d in range(len(out_letters))])
        if weighted and bool((ids == CONST).all()) and \
                torch.unique(rows[rows >= 0]).numel() > 1:
            self.record("flatten_head", self._label_size(rows), True,
                        f"position-dependent weights ({name}) at {self.where()} over the "
                        "whole map: invariance needs symmetric weights (the grid itself is "
                        "symmetric)", grid_only=True, show=True)
        return Info(TRACKED, (labels.expand(out_shape),), rolls=rolls)

    @staticmethod
    def _to_joint(comp, letters, joint, shape):
        c = _compact(comp)
        perm = [letters.index(ch) for ch in joint if ch in letters]
        c = c.permute(perm)
        view = [c.shape[perm.index(letters.index(ch))] if ch in letters else 1 for ch in joint]
        c = c.reshape(view)
        return c

    @staticmethod
    def _drop_mixed(c, mixed):
        for d in sorted(mixed, reverse=True):
            c = c.narrow(d, 0, 1).squeeze(d) if c.dim() > d else c
        return c

    def _group_labels(self, rows: torch.Tensor) -> torch.Tensor:
        """The location of each row's group: a point of a new grid when the groups are the
        equal blocks of a regular lattice on one grid (a patch merge, a strided pool), else
        a region."""
        groups, gid = torch.unique(rows, dim=0, return_inverse=True)
        lattice = self._lattice(groups)
        if lattice is not None:
            return lattice[gid]
        return self.space.regions_of(rows)

    def _lattice(self, groups: torch.Tensor) -> torch.Tensor | None:
        n_groups, m = groups.shape
        if n_groups < 2 or m < 2 or bool((groups < 0).any()):
            return None
        first = self.space.grid_of(int(groups[0, 0]))
        if first is None:
            return None
        start, h, w = first
        if bool((groups >= start + h * w).any()) or bool((groups < start).any()):
            return None
        members = _members(groups)
        if members is None:
            return None  # members do not all appear equally often
        if torch.unique(members).numel() != members.numel():
            return None  # overlapping groups
        ys, xs = (members - start) // w, (members - start) % w
        offsets = (ys - ys.min(dim=1, keepdim=True).values) * w + \
            (xs - xs.min(dim=1, keepdim=True).values)
        if not bool((offsets.sort(dim=1).values == offsets[:1].sort(dim=1).values).all()):
            return None  # blocks of different shapes
        cy, cx = ys.double().mean(dim=1), xs.double().mean(dim=1)
        ys_u, xs_u = torch.unique(cy), torch.unique(cx)
        if ys_u.numel() * xs_u.numel() != n_groups or \
                torch.unique(torch.stack([cy, cx], 1), dim=0).shape[0] != n_groups:
            return None
        for u in (ys_u, xs_u):
            if u.numel() > 2 and not torch.allclose(u.diff(), u.diff()[:1].expand(u.numel() - 1)):
                return None
        grid = self.space.grid(ys_u.numel(), xs_u.numel(),
                               key=("lattice", start, tuple(ys_u.tolist()), tuple(xs_u.tolist())))
        return grid[torch.searchsorted(ys_u, cy), torch.searchsorted(xs_u, cx)]

    # attention ------------------------------------------------------------------------
    def _attention(self, name, args, kwargs, out) -> None:
        """Attention: each query mixes the keys of its batch slice (windows, or all tokens)
        with weights from the scores; values must stand for the same positions as keys."""
        bound = dict(zip(["query", "key", "value"], args, strict=False))
        bound.update(kwargs)
        q, k, v = bound["query"], bound["key"], bound["value"]
        if bound.get("is_causal"):
            raise _Unknown("a causal mask depends on the token order")
        if name == "scaled_dot_product_attention":
            mask = bound.get("attn_mask", args[3] if len(args) > 3 else None)
            batch = "abcdefgh"[:q.dim() - 2]
            lq, lk, lv = batch + "lx", batch + "sx", batch + "sy"
            scores_letters, out_letters = batch + "ls", batch + "ly"
        else:  # F.multi_head_attention_forward: (L, N, E) inputs
            for position, key in ((14, "key_padding_mask"), (16, "attn_mask"),
                                  (24, "is_causal")):
                if len(args) > position:
                    bound.setdefault(key, args[position])
            if q.dim() != 3:
                raise _Unknown("unbatched attention")
            if bound.get("key_padding_mask") is not None:
                raise _Unknown("key padding mask")
            if bound.get("is_causal"):
                raise _Unknown("a causal mask depends on the token order")
            mask = bound.get("attn_mask")
            if mask is not None and mask.dim() != 2:
                raise _Unknown("per-head attention mask")
            lq, lk, lv, scores_letters, out_letters = "lnx", "snx", "sny", "nls", "lny"
        sizes = {**dict(zip(lq, q.shape, strict=True)), **dict(zip(lk, k.shape, strict=True))}
        score_shape = tuple(sizes[ch] for ch in scores_letters)
        scores = self._contract([(lq, q), (lk, k)], scores_letters, score_shape, name)
        if mask is not None:
            minfo = self.info(mask)
            if minfo.kind in (TRACKED, OPAQUE):
                raise _Unknown("a mask computed from the input")
            if minfo.value is not None:
                minfo = Info(CONSTANT, value=minfo.value.to(torch.float64))
            self._positional(name, mask, minfo, scores.comps, score_shape, False)
        outs = _flatten(out, [])
        result = self._contract([(scores_letters, _Shaped(score_shape, scores)), (lv, v)],
                                out_letters, tuple(outs[0].shape), name)
        self._set(outs[0], result)
        for extra in outs[1:]:  # attention weights (N, L, S)
            if tuple(extra.shape) == score_shape:
                self._set(extra, Info(TRACKED, scores.comps, rolls=scores.rolls))
            else:
                self._set(extra, Info(OPAQUE, reason=f"attention weights at {self.where()}"))

    # grid ops ---------------------------------------------------------------------------
    def _grid_map(self, x: torch.Tensor):
        """The (H, W) labels of the input of a grid op, or None when it is opaque; regions
        where the labels vary along the leading dims (e.g. after pixel_unshuffle)."""
        info = self.info(x)
        if info.kind != TRACKED:
            return None, info
        if len(info.comps) != 1:
            raise _Unknown("a grid op on attention scores")
        c = _compact(info.comps[0])
        h, w = x.shape[-2:]
        lead = c.shape[:-2]
        if all(s == 1 for s in lead):
            return c.reshape(c.shape[-2:]).expand(h, w), info
        rows = c.expand(*lead, h, w).reshape(-1, h * w).t().sort(dim=1).values
        return self.space.regions_of(rows).view(h, w), info

    def _lattice_axes(self, m: torch.Tensor):
        """((HG, WG), plain, ((a, b, offset), (a, b, offset))) when ``m`` is a regular
        lattice of points (or of equal blocks) of one grid, with a frame of CONST (padding)
        around it: index ``i`` of an axis stands for grid coordinate ``a + b*(i - offset)``.
        ``plain``: the whole grid in order, padded evenly. None otherwise."""
        const = m < 0
        if bool(const.all()):
            return None
        rows = (~const.all(dim=1)).nonzero().flatten()
        cols = (~const.all(dim=0)).nonzero().flatten()
        top, bottom = int(rows[0]), int(rows[-1])
        left, right = int(cols[0]), int(cols[-1])
        inner = m[top:bottom + 1, left:right + 1]
        if bool((inner < 0).any()):
            return None
        low, high = int(inner.min()), int(inner.max())
        grid = self.space.grid_of(low)
        if grid is not None and high < grid[0] + grid[1] * grid[2]:  # points of one grid
            start, h, w = grid
            ys, xs = (inner - start) // w, (inner - start) % w
            if not (torch.equal(ys, ys[:, :1].expand_as(ys)) and
                    torch.equal(xs, xs[:1, :].expand_as(xs))):
                return None
            return self._lattice_from(m.shape, (h, w), ys[:, 0].double(), xs[0, :].double(),
                                      top, bottom, left, right)
        ids = inner.reshape(-1).tolist()
        grids, cy, cx = set(), [], []
        for i in ids:
            pts = self.space.points(i)
            g = self.space.grid_of(min(pts))
            if g is None:
                return None
            start, h, w = g
            if i in self.space.regions:
                labels = torch.tensor(sorted(pts))
                if bool((labels < start).any()) or bool((labels >= start + h * w).any()):
                    return None
                cy.append(((labels - start) // w).double().mean().item())
                cx.append(((labels - start) % w).double().mean().item())
            else:
                cy.append(float((i - start) // w))
                cx.append(float((i - start) % w))
            grids.add(g)
        if len(grids) != 1:
            return None
        start, h, w = grids.pop()
        if any(i in self.space.regions for i in ids):  # blocks: their mirror images must be here
            here = set(ids)
            for k in range(self.space.maps):
                if not set(self.space.image(k, inner).reshape(-1).tolist()) <= here:
                    return None
        cy_t = torch.tensor(cy, dtype=torch.float64).view(inner.shape)
        cx_t = torch.tensor(cx, dtype=torch.float64).view(inner.shape)
        if not (torch.equal(cy_t, cy_t[:, :1].expand_as(cy_t)) and
                torch.equal(cx_t, cx_t[:1, :].expand_as(cx_t))):
            return None
        return self._lattice_from(m.shape, (h, w), cy_t[:, 0], cx_t[0, :], top, bottom, left,
                                  right)

    @staticmethod
    def _lattice_from(shape, grid, ys, xs, top, bottom, left, right):
        h, w = grid
        axes = []
        for coords, offset in ((ys, top), (xs, left)):
            step = 1.0
            if coords.numel() > 1:
                diffs = coords.diff()
                step = float(diffs[0])
                if step <= 0 or not torch.allclose(diffs, diffs[:1].expand_as(diffs)):
                    return None
            axes.append((float(coords[0]), step, offset))
        plain = (axes[0][:2] == (0.0, 1.0) and axes[1][:2] == (0.0, 1.0)
                 and (ys.numel(), xs.numel()) == (h, w) and top == shape[0] - 1 - bottom
                 and left == shape[1] - 1 - right)
        covered = ((float(ys[0]), float(ys[-1])), (float(xs[0]), float(xs[-1])))
        return (h, w), plain, tuple(axes), covered

    def _commutes(self, m: torch.Tensor) -> bool:
        for k, flip in enumerate((lambda t: t.flip(0), lambda t: t.flip(1), lambda t: t.t())):
            if k >= self.space.maps:
                break
            if k == 2 and m.shape[0] != m.shape[1]:
                return bool((m < 0).all())
            if not torch.equal(self.space.image(k, m), flip(m)):
                return False
        return True

    def _grid(self, func, name, args, kwargs, out) -> None:
        x = args[0] if args else kwargs["input"]
        outs = _flatten(out, [])
        if x.dim() < 3 and name != "interpolate":
            raise _Unknown("unbatched 1-D input")
        size = tuple(x.shape[-2:])
        if x.dim() == 3 and name == "interpolate":
            raise _Unknown("interpolation along one axis (tokens)")
        if x.dim() == 5 and name == "interpolate":
            raise _Unknown("3-D interpolation")
        m, info = self._grid_map(x)
        row, geometry, windows = _GRID_RULES[name](name, args, kwargs, size,
                                                   tuple(outs[0].shape[-2:]))
        symmetric = True
        if m is not None and row is not None:
            lattice = self._lattice_axes(m)
            if lattice is not None and lattice[1]:  # plain grid (maybe padded evenly)
                pass
            elif lattice is not None and windows is not None:
                (hg, wg), axes = lattice[0], lattice[2]
                covered = lattice[3]  # the grid coordinates the view holds, per axis
                exact = all(_mapped_symmetric(windows[i], *axes[i], (hg, wg)[i]) and
                            abs(covered[i][0] + covered[i][1] - ((hg, wg)[i] - 1)) < 1e-9
                            for i in range(2))
                view = f"on a {m.shape[0]}x{m.shape[1]} strided / cropped / padded view of " \
                       f"the {hg}x{wg} grid: sample positions " + \
                       ("mirror-symmetric" if exact else "not mirror-symmetric")
                row = dict(row, exact=exact, note=(row.get("note", "") + "; " + view)
                           .lstrip("; "), show=True)
                symmetric = exact
            elif not self._commutes(m):
                symmetric = False
                roll = self._roll_note(info.rolls)
                row = dict(row, exact=None,
                           note=f"{row['op']} at {self.where()} on an input that is not a "
                                f"symmetric grid (rearranged, e.g. rolled or channels-last)"
                                f"{roll}")
        elif m is not None:
            symmetric = self._commutes(m)
        if row is not None:
            input_size = row.pop("input_size")
            row.setdefault("note", "")
            op, exact, note = row.pop("op"), row.pop("exact"), row.pop("note")
            self.record(op, input_size, exact, note, key=(note, len(self.rows)), **row)
        ho, wo = outs[0].shape[-2:]
        if m is None:
            self._fresh += 1
            labels = self.space.grid(ho, wo, key=("fresh", self._fresh))
        elif bool((m < 0).all()):
            labels = torch.full((ho, wo), CONST, dtype=torch.long)
        elif geometry == "identity" and (ho, wo) == size:
            labels = m
        elif (ho, wo) == (1, 1) and symmetric and name.startswith("adaptive"):
            labels = torch.full((1, 1), CONST, dtype=torch.long)
        else:
            if m.is_contiguous() and \
                    m.data_ptr() in {t.data_ptr() for t in self.space.canonical.values()}:
                mkey = ("grid", m.data_ptr(), tuple(m.shape))
            else:
                mkey = ("map", hash(m.contiguous().numpy().tobytes()), tuple(m.shape))
            labels = self.space.grid(ho, wo, key=(mkey, geometry, ho, wo))
        for t in outs:
            if t.dtype == torch.long and name.endswith("indices"):
                self._set(t, Info(OPAQUE, reason=f"{name} indices at {self.where()}"))
                continue
            self._set(t, Info(TRACKED, (labels.expand(t.shape),)))


class _Shaped:
    """An operand of a contraction known only by its shape and labels."""

    def __init__(self, shape, info: Info) -> None:
        self.shape = tuple(shape)
        self.info = info

    def dim(self) -> int:
        return len(self.shape)


# ----------------------------------------------------------------------------- grid rules
def _bind(args: tuple, kwargs: dict, names: list[str], defaults: dict) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


def _conv_windows(n, k, s, p, d, out) -> list[tuple[int, int]]:
    """The input indices [lo, hi) each output of a convolution reads (padding included)."""
    return [(s * i - p, s * i - p + d * (k - 1) + 1) for i in range(out)]


def _mapped_symmetric(windows, a: float, b: float, offset: int, n: int) -> bool:
    """Are windows (index units of a view whose index i is grid coordinate a + b*(i-offset))
    mirror-symmetric about the centre of the grid of size n?"""
    def coord(t):
        return a + b * (t - offset)
    spans = sorted((coord(lo), coord(hi - 1)) for lo, hi in windows)
    mirrored = sorted((n - 1 - hi, n - 1 - lo) for lo, hi in spans)
    return all(abs(x[0] - y[0]) < 1e-9 and abs(x[1] - y[1]) < 1e-9
               for x, y in zip(spans, mirrored, strict=True))


def _conv_rule(op, args, kwargs, size, out_size):
    b = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "dilation",
                             "groups"], {"stride": 1, "padding": 0, "dilation": 1})
    k, s, d = _pair(tuple(b["weight"].shape[-2:])), _pair(b["stride"]), _pair(b["dilation"])
    padding = b["padding"]
    if isinstance(padding, str):
        if padding == "valid":
            p = (0, 0)
        else:  # 'same' (stride 1 only in PyTorch): the left side gets the smaller half
            totals = [d[i] * (k[i] - 1) for i in range(2)]
            symmetric = all(t % 2 == 0 for t in totals)
            note = "" if symmetric else \
                "padding='same' with an even effective kernel pads one side more"
            geometry = "identity" if symmetric else ("same", tuple(totals))
            windows = tuple(_conv_windows(size[i], k[i], 1, totals[i] // 2, d[i], out_size[i])
                            for i in range(2))
            return dict(op=op, input_size=size, kernel=k, stride=s, padding="same",
                        dilation=d, exact=symmetric, note=note), geometry, windows
    else:
        p = _pair(padding)
    exact = all(is_exact(size[i], k[i], s[i], p[i], d[i]) for i in range(2))
    offsets = tuple(d[i] * (k[i] - 1) / 2 - p[i] for i in range(2))
    # outputs centred at the same input coordinates stand for the same positions, whichever
    # op made them (a strided conv and its pooled shortcut)
    geometry = "identity" if s == (1, 1) and offsets == (0, 0) else ("sample", offsets, s)
    windows = tuple(_conv_windows(size[i], k[i], s[i], p[i], d[i], out_size[i])
                    for i in range(2))
    return dict(op=op, input_size=size, kernel=k, stride=s, padding=p, dilation=d,
                exact=exact), geometry, windows


def _pool_rule(op, args, kwargs, size, out_size):
    names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
    if op in ("avg_pool2d",):
        names = ["input", "kernel_size", "stride", "padding", "ceil_mode"]
    if op == "lp_pool2d":
        names = ["input", "norm_type", "kernel_size", "stride", "ceil_mode"]
    b = _bind(args, kwargs, names, defaults)
    k = _pair(b["kernel_size"])
    s = _pair(b["stride"]) if b["stride"] not in (None, (), []) else k
    p, d, ceil = _pair(b["padding"]), _pair(b["dilation"]), bool(b["ceil_mode"])
    exact = all(
        _windows_symmetric(_pool_windows(size[i], k[i], s[i], p[i], d[i], ceil), size[i])
        for i in range(2)
    )
    offsets = tuple(d[i] * (k[i] - 1) / 2 - p[i] for i in range(2))
    geometry = "identity" if s == (1, 1) and offsets == (0, 0) and out_size == size else \
        ("sample", offsets, s)
    windows = tuple(_pool_windows(size[i], k[i], s[i], p[i], d[i], ceil) for i in range(2))
    return dict(op=op.replace("_with_indices", ""), input_size=size, kernel=k, stride=s,
                padding=p, dilation=d, exact=exact, note="ceil_mode" if ceil else ""), \
        geometry, windows


def _adaptive_rule(op, args, kwargs, size, out_size):
    out = tuple(int(v) for v in out_size)
    if out == size:
        return None, "identity", None
    windows = tuple(_adaptive_windows(size[i], out[i]) for i in range(2))
    exact = all(_windows_symmetric(windows[i], size[i]) for i in range(2))
    stride = tuple(max(1, size[i] // out[i]) for i in range(2))
    return dict(op=op.replace("_with_indices", ""), input_size=size, kernel=None,
                stride=stride, padding=None, exact=exact,
                note=f"output {out[0]}x{out[1]}"), ("adaptive", out), windows


def _sample_positions(n: int, out: int, mode: str, align_corners, scale) -> list[float]:
    """Source coordinate of each output sample along one axis, as PyTorch computes it."""
    if mode in ("nearest", "nearest-exact"):
        r = np.float32(n / out if scale is None else 1.0 / scale)
        offset = np.float32(0.5 if mode == "nearest-exact" else 0.0)
        return [float(min(math.floor(np.float32((np.float32(i) + offset) * r)), n - 1))
                for i in range(out)]
    if align_corners:
        return [i * (n - 1) / (out - 1) if out > 1 else 0.0 for i in range(out)]
    r = n / out if scale is None else 1.0 / scale
    return [(i + 0.5) * r - 0.5 for i in range(out)]


def _interpolate_rule(op, args, kwargs, size, out_size):
    names = ["input", "size", "scale_factor", "mode", "align_corners",
             "recompute_scale_factor", "antialias"]
    b = _bind(args, kwargs, names, {"size": None, "scale_factor": None, "mode": "nearest",
                                    "align_corners": None, "recompute_scale_factor": None})
    mode = b["mode"]
    if op == "upsample_bilinear":
        mode, b["align_corners"] = "bilinear", True
    out = tuple(int(v) for v in out_size)
    scales = (None, None)
    if b["size"] is None and b["scale_factor"] is not None and not b["recompute_scale_factor"]:
        sf = b["scale_factor"]
        scales = tuple(float(v) for v in sf) if isinstance(sf, (tuple, list)) else \
            (float(sf), float(sf))
    if mode == "area":
        exact = True
    elif mode in ("nearest", "nearest-exact", "bilinear", "bicubic"):
        exact = True
        for i in range(2):
            pos = _sample_positions(size[i], out[i], mode, b["align_corners"], scales[i])
            mirrored = [size[i] - 1 - v for v in reversed(pos)]
            if any(abs(a - c) > 1e-9 * max(1, size[i]) for a, c in zip(pos, mirrored,
                                                                       strict=True)):
                exact = False
    else:
        return dict(op="interpolate", input_size=size, exact=None,
                    note=f"interpolate ({mode}) not judged", show=True), ("interp", mode), None
    note = f"{mode} to {out[0]}x{out[1]}" + ("" if exact else
                                              ": sample positions not mirror-symmetric")
    windows = None
    if mode != "area":
        windows = tuple([(v, v + 1) for v in _sample_positions(
            size[i], out[i], mode, b["align_corners"], scales[i])] for i in range(2))
    return dict(op="interpolate", input_size=size, exact=exact, note=note, show=True), \
        ("interp", mode, b["align_corners"], scales), windows


def _conv_transpose_rule(op, args, kwargs, size, out_size):
    b = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "output_padding",
                             "groups", "dilation"],
              {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1})
    k, s = _pair(tuple(b["weight"].shape[-2:])), _pair(b["stride"])
    p, op_pad = _pair(b["padding"]), _pair(b["output_padding"])
    # the adjoint of a convolution from the output size back to n: its sample centres are
    # symmetric iff ((n-1)s + output_padding) % s == 0, i.e. iff output_padding == 0
    exact = op_pad == (0, 0)
    return dict(op=op, input_size=size, kernel=k, stride=s, padding=p, exact=exact,
                note="" if exact else f"output_padding {op_pad[0]}x{op_pad[1]}", show=True), \
        ("convT", k, s, p, op_pad), None


_GRID_RULES = {
    "conv2d": _conv_rule,
    "max_pool2d": _pool_rule,
    "max_pool2d_with_indices": _pool_rule,
    "avg_pool2d": _pool_rule,
    "lp_pool2d": _pool_rule,
    "adaptive_avg_pool2d": _adaptive_rule,
    "adaptive_max_pool2d": _adaptive_rule,
    "adaptive_max_pool2d_with_indices": _adaptive_rule,
    "interpolate": _interpolate_rule,
    "upsample": _interpolate_rule,
    "upsample_nearest": _interpolate_rule,
    "upsample_bilinear": _interpolate_rule,
    "conv_transpose2d": _conv_transpose_rule,
}
