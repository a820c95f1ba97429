"""The point groups P4 and P4M as data, and their action on images and group feature maps.

Element encoding
----------------
An element is an integer ``g = 4*m + k`` with ``m`` in {0, 1} and ``k`` in {0, 1, 2, 3}.
It acts on an image (any tensor whose last two dims are ``(H, W)``) as

    T_g(x) = torch.rot90(M^m(x), k, dims=(-2, -1)),   M(x) = torch.flip(x, dims=(-1,))

i.e. *first* mirror along the last (W) axis if ``m == 1``, *then* rotate by ``k * 90°``.
In the usual dihedral notation ``g = r^k m^m``. P4 uses only ``m == 0`` (elements 0..3),
P4M all eight. Since ``m r m = r^-1``, composition is

    r^k1 m^m1 · r^k2 m^m2 = r^(k1 + (-1)^m1 k2) m^(m1 + m2)

and ``T_compose(g, h) == T_g ∘ T_h`` (tested in ``tests/test_groups.py``).

A group feature map has shape ``(B, C, |G|, H, W)``; ``g`` acts on it as

    (g·f)(h, x) = f(g^-1 h, g^-1 x),  i.e.  out[:, :, h] = T_g(f[:, :, g^-1 h]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["GROUPS", "P4", "P4M", "Group", "get_group"]


def _compose(g: int, h: int) -> int:
    m1, k1 = divmod(g, 4)
    m2, k2 = divmod(h, 4)
    k = (k1 + (-1) ** m1 * k2) % 4
    return 4 * ((m1 + m2) % 2) + k


@dataclass(frozen=True, eq=False, repr=False)
class Group:
    """A finite rotation (+ mirror) group acting on the pixel grid.

    Instances are immutable; use the constants :data:`P4` and :data:`P4M`.
    """

    name: str
    order: int
    _table: tuple[tuple[int, ...], ...] = field(init=False)
    _inverse: tuple[int, ...] = field(init=False)
    _perms: dict = field(init=False)

    def __post_init__(self) -> None:
        if self.order not in (4, 8):
            raise ValueError(f"order must be 4 (p4) or 8 (p4m), got {self.order!r}")
        els = range(self.order)
        table = tuple(tuple(_compose(g, h) for h in els) for g in els)
        inverse = tuple(next(h for h in els if table[g][h] == 0) for g in els)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_inverse", inverse)
        # (device) -> (|G|, |G|) long tensor, row g = [g^-1 h for h in G]
        object.__setattr__(self, "_perms", {})

    # ----------------------------------------------------------------- algebra
    def elements(self) -> range:
        """All element indices ``0 .. order-1`` (0 is the identity)."""
        return range(self.order)

    def compose(self, g: int, h: int) -> int:
        """Index of ``g·h`` (apply ``h`` first, then ``g``)."""
        return self._table[self._check(g)][self._check(h)]

    def inverse(self, g: int) -> int:
        """Index of ``g^-1``."""
        return self._inverse[self._check(g)]

    def element_name(self, g: int) -> str:
        """Dihedral-notation name: ``e``, ``r``, ``r2``, ``r3``, ``m``, ``rm``, ``r2m``, ``r3m``."""
        m, k = divmod(self._check(g), 4)
        if g == 0:
            return "e"
        rot = "" if k == 0 else ("r" if k == 1 else f"r{k}")
        return rot + ("m" if m else "")

    def _check(self, g: int) -> int:
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < self.order:
            raise ValueError(
                f"element of {self.name} must be an int in [0, {self.order}), got {g!r}"
            )
        return g

    # ----------------------------------------------------------------- actions
    def act_on_image(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """``T_g(x)`` for a tensor whose last two dims are ``(H, W)``."""
        m, k = divmod(self._check(g), 4)
        if x.dim() < 2:
            raise ValueError(
                f"act_on_image needs a tensor with >= 2 dims (..., H, W), got {x.dim()}"
            )
        if k % 2 == 1 and x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"a 90° rotation needs a square image, got spatial size {tuple(x.shape[-2:])}"
            )
        if m:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, k, dims=(-2, -1))

    def act_on_group_map(self, g: int, x: torch.Tensor) -> torch.Tensor:
        """``g·f`` for a group map ``f`` of shape ``(B, C, |G|, H, W)``:
        ``out[:, :, h] = T_g(f[:, :, g^-1 h])``."""
        self._check_group_map(x)
        perm = self.permutation(g, x.device)
        return self.act_on_image(g, x.index_select(2, perm))

    def permutation(self, g: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Long tensor ``p`` with ``p[h] = g^-1 h``: the orientation-axis gather of ``g``."""
        self._check(g)
        device = torch.device(device)
        perms = self._perms.get(device)
        if perms is None:
            rows = [[self._table[self._inverse[a]][h] for h in self.elements()]
                    for a in self.elements()]
            perms = torch.tensor(rows, dtype=torch.long, device=device)
            self._perms[device] = perms
        return perms[g]

    def transform_stack(self, x: torch.Tensor, kind: str = "image") -> torch.Tensor:
        """All transforms at once: ``out[g] = g·x`` for every element, shape ``(|G|, *x.shape)``.

        ``kind`` is ``"image"`` (spatial action only) or ``"group"`` (group-map action).
        """
        if kind == "image":
            act = self.act_on_image
        elif kind == "group":
            self._check_group_map(x)
            act = self.act_on_group_map
        else:
            raise ValueError(f"kind must be 'image' or 'group', got {kind!r}")
        return torch.stack([act(g, x) for g in self.elements()])

    def _check_group_map(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != self.order:
            raise ValueError(
                f"a {self.name} group map must have shape (B, C, {self.order}, H, W), "
                f"got {tuple(x.shape)}"
            )

    # ----------------------------------------------------------------- dunder
    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and (self.name, self.order) == (other.name, other.order)

    def __hash__(self) -> int:
        return hash((self.name, self.order))

    def __reduce__(self):  # pickle / deepcopy as the module constant
        return (get_group, (self.name,))


P4 = Group("p4", 4)
P4M = Group("p4m", 8)
GROUPS: dict[str, Group] = {"p4": P4, "p4m": P4M}


def get_group(group: str | Group) -> Group:
    """``"p4"`` / ``"p4m"`` (any case) or a :class:`Group` -> the :class:`Group`."""
    if isinstance(group, Group):
        return group
    if isinstance(group, str):
        try:
            return GROUPS[group.lower()]
        except KeyError:
            raise ValueError(
                f"unknown group {group!r}; known groups: {', '.join(GROUPS)}"
            ) from None
    raise TypeError(
        f"group must be a name ({', '.join(GROUPS)}) or a Group, got {type(group).__name__}"
    )
