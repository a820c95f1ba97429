"""Locations: the points of sampling grids and the regions that mixing ops make, with
their images under the symmetries (flips of either axis, the transpose on a square input).

Every tensor computed from the input carries a location per element (see
:mod:`equivlib.tracer_rules`); :class:`Space` numbers them, and the helpers below read the
label tensors without materialising their broadcast dims.
"""

from __future__ import annotations

import math

import torch

CONST = -1  # label of a value no symmetry moves
INVALID = -2  # image of a location that has no mirror image (a non-square grid, transposed)


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
