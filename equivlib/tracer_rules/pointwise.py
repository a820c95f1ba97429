"""Pointwise ops: every operand must stand for the same location element by element (or
operand pairs that the symmetries permute consistently). A constant that varies along the
positions is judged by its values (masks), a parameter that does is a positional embedding
(``grid_only``)."""

from __future__ import annotations

import torch

from equivlib.tracer_rules.catalogue import INPLACE_DUNDER, INPLACE_SOURCE, PER_CHANNEL
from equivlib.tracer_rules.locations import CONST, INVALID, _all_const, _compact, _varying
from equivlib.tracer_rules.tensors import (
    _PARAM,
    CONSTANT,
    PARAM,
    TRACKED,
    Info,
    _flatten,
    _rolls,
    _Unknown,
)


class PointwiseRules:
    """The rules for pointwise ops; a part of
    :class:`equivlib.tracer_rules.recorder.Recorder`, whose bookkeeping they use."""

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
