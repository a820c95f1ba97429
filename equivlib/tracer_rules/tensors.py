"""What the recorder knows of each tensor (:class:`Info`: tracked labels, a constant's
value, a parameter, or opaque), and small helpers on the arguments of a torch call."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

TRACKED, OPAQUE, PARAM, CONSTANT = "tracked", "opaque", "param", "const"


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


class _Shaped:
    """An operand of a contraction known only by its shape and labels."""

    def __init__(self, shape, info: Info) -> None:
        self.shape = tuple(shape)
        self.info = info

    def dim(self) -> int:
        return len(self.shape)
