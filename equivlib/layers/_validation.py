"""Argument and input checks shared by the layers: clear errors instead of silent misuse."""

from __future__ import annotations

import torch


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int (not a bool); ``TypeError`` / ``ValueError`` else."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def padding_arg(value: object) -> int:
    """``value`` if it is a non-negative int: symmetric zero padding, the only padding that
    keeps the exactness condition (a string such as ``'same'`` can pad asymmetrically)."""
    if isinstance(value, str):
        raise TypeError(
            f"padding must be a non-negative int (symmetric zero padding), got the string "
            f"{value!r}; string padding such as 'same' can be asymmetric and break equivariance"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"padding must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"padding must be a non-negative int, got {value!r}")
    return value


def check_input(layer: str, x: object, shape: str, rank: int, checks: dict[int, int]) -> None:
    """Raise if ``x`` is not a ``rank``-D tensor of ``shape``; ``checks`` maps a dim to its
    expected size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dim() != rank:
        raise ValueError(
            f"{layer} expects a {rank}-D input of shape {shape}, got {x.dim()}-D "
            f"shape {tuple(x.shape)}"
        )
    for dim, size in checks.items():
        if x.shape[dim] != size:
            what = {1: "channel", 2: "orientation-axis"}.get(dim, f"dim-{dim}")
            raise ValueError(
                f"{layer} expects {shape} with {what} size {size}, got {x.shape[dim]} "
                f"(input shape {tuple(x.shape)})"
            )
