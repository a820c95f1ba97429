"""Mixing ops (reductions, softmax, normalisations): the family of groups of positions they
mix must be mapped onto itself by every symmetry. Windows (Swin's, shifted or not) and merges
of blocks are recognised and reported; the blocks of a regular lattice become a new grid."""

from __future__ import annotations

import math

import torch

from equivlib.tracer_rules.locations import _compact, _members, _varying
from equivlib.tracer_rules.tensors import OPAQUE, TRACKED, Info, _dims, _flatten, _Unknown


class MixingRules:
    """The rules for mixing ops; a part of
    :class:`equivlib.tracer_rules.recorder.Recorder`, whose bookkeeping they use."""

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
