"""Contractions (linear, matmul, einsum, bilinear) and attention: positions that are
contracted are a mixing family (judged as in :mod:`.mixing`); a parameterised contraction over
a whole invariant map is a flattening head (``grid_only``)."""

from __future__ import annotations

import torch

from equivlib.tracer_rules.locations import CONST, _all_const, _compact
from equivlib.tracer_rules.tensors import (
    CONSTANT,
    OPAQUE,
    PARAM,
    TRACKED,
    Info,
    _flatten,
    _rolls,
    _Shaped,
    _Unknown,
)


class ContractionRules:
    """The rules for contraction ops; a part of
    :class:`equivlib.tracer_rules.recorder.Recorder`, whose bookkeeping they use."""

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
