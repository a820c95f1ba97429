"""Data movement: view / reshape / permute / roll / flip / indexing and strided slices / cat /
stack / chunk / pixel (un)shuffle, ``F.unfold``, slice assignments and pads in either memory
layout. Values only move: the labels are moved the same way (the op is replayed on them) and
nothing is judged, except asymmetric padding of a dim that carries positions (not exact) and
writes to positions that the symmetries do not map onto each other (not judged)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from equivlib.tracer_rules.locations import CONST, _compact, _reshape, _varying
from equivlib.tracer_rules.tensors import (
    CONSTANT,
    OPAQUE,
    TRACKED,
    Info,
    _flatten,
    _rolls,
    _Unknown,
)


class MovementRules:
    """The rules for movement ops; a part of
    :class:`equivlib.tracer_rules.recorder.Recorder`, whose bookkeeping they use."""

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
