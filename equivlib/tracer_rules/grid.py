"""Grid ops (conv2d, pooling, adaptive pooling, interpolation, transposed convolution):
judged by their sampling condition (:mod:`.grid_rules`) at their own input size when the input
is a whole grid, padded evenly or not at all; on a regular sub-lattice of a grid (a strided
slice, a crop, one-sided padding) their sample windows must be mirror-symmetric on that grid;
on an input rearranged otherwise they are unknown unless the rearrangement commutes with the
symmetries."""

from __future__ import annotations

import torch

from equivlib.tracer_rules.grid_rules import _GRID_RULES, _mapped_symmetric
from equivlib.tracer_rules.locations import CONST, _compact
from equivlib.tracer_rules.tensors import OPAQUE, TRACKED, Info, _flatten, _Unknown


class GridRules:
    """The rules for grid ops; a part of
    :class:`equivlib.tracer_rules.recorder.Recorder`, whose bookkeeping they use."""

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
