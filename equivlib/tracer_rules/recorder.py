"""The :class:`Recorder`: a ``TorchFunctionMode`` that intercepts every torch function
of one forward pass, keeps what it knows of each tensor (:class:`.tensors.Info`) and hands
the op to the rules of its family (:mod:`.catalogue`); one row per op it judges (or cannot
judge). The rules live beside it, one module per op family."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from equivlib.tracer_rules.catalogue import (
    ATTENTION,
    CONTRACTIONS,
    DATA_DEPENDENT,
    FACTORY_LIKE,
    GRID,
    IDENTITY,
    KEEP_MIXING,
    METADATA,
    MOVEMENT,
    POINTWISE,
    RANDOM,
    REDUCTIONS,
)
from equivlib.tracer_rules.contraction import ContractionRules
from equivlib.tracer_rules.grid import GridRules
from equivlib.tracer_rules.locations import CONST, Space, _all_const, _compact
from equivlib.tracer_rules.mixing import MixingRules
from equivlib.tracer_rules.movement import MovementRules
from equivlib.tracer_rules.pointwise import PointwiseRules
from equivlib.tracer_rules.tensors import (
    _PARAM,
    CONSTANT,
    OPAQUE,
    PARAM,
    TRACKED,
    Info,
    _flatten,
    _op_name,
    _Unknown,
)


class Recorder(MovementRules, PointwiseRules, MixingRules, ContractionRules, GridRules,
               TorchFunctionMode):
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
