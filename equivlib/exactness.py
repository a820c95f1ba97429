"""When is a subsampling layer exactly equivariant? The condition as arithmetic (docs/design.md §2).

One spatial axis of size ``n``, kernel ``k``, dilation ``d``, stride ``s``, symmetric
zero padding ``p``. Output ``i`` is centred at input coordinate ``s*i - p + d*(k-1)/2``.
A 90° rotation or a flip about the image centre maps ``x -> n-1-x``; the layer commutes
with it exactly iff the sample centres are symmetric about ``(n-1)/2``, i.e.

    (n + 2p - d*(k-1) - 1) mod s == 0

Stride-1 layers always satisfy it. The condition must hold for every subsampling layer
at its *own* input size, so a network is exact only for the sizes that survive every stage.

This module is sizes, kernels, strides and windows only (no ``nn.Module``):
:func:`is_exact`, :func:`output_size`, chains of layers (:func:`is_exact_stack`,
:func:`stage_sizes`), shifted windows (:func:`shifted_windows_symmetric`) and the windows a
pooling layer reads (:func:`pool_windows`, :func:`adaptive_windows`,
:func:`windows_symmetric`). Judging a whole network is :mod:`equivlib.tracer`'s work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from equivlib._deprecation import moved_names

__all__ = ["Pair", "Stage", "adaptive_windows", "as_pair", "is_exact", "is_exact_stack",
           "output_size", "pool_windows", "shifted_windows_symmetric", "stage_sizes",
           "windows_symmetric"]

Pair = tuple[int, int]
Stage = tuple[int, int, int] | tuple[int, int, int, int]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _validate(n: int, kernel_size: int, stride: int, padding: int, dilation: int) -> None:
    _check_positive("input size n", n)
    _check_positive("kernel_size", kernel_size)
    _check_positive("stride", stride)
    _check_positive("dilation", dilation)
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ValueError(
            f"padding must be a non-negative integer (symmetric padding), got {padding!r}; "
            "asymmetric or string padding cannot be judged by this formula"
        )


def output_size(n: int, kernel_size: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output size of a conv / pooling layer along one axis (floor mode, as PyTorch)."""
    _validate(n, kernel_size, stride, padding, dilation)
    span = n + 2 * padding - dilation * (kernel_size - 1) - 1
    if span < 0:
        raise ValueError(
            f"input size {n} (padding {padding}) is smaller than the effective kernel "
            f"{dilation * (kernel_size - 1) + 1}: the layer has no output"
        )
    return span // stride + 1


def is_exact(n: int, kernel_size: int, stride: int, padding: int, dilation: int = 1) -> bool:
    """True iff the layer's sampling grid on an input of size ``n`` is symmetric about the
    centre, so the layer commutes exactly with 90° rotations and flips."""
    _validate(n, kernel_size, stride, padding, dilation)
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) % stride == 0


def is_exact_stack(n: int, stages: Sequence[Stage]) -> bool:
    """Exactness of a chain of layers, each given as ``(kernel, stride, padding[, dilation])``,
    checked at each layer's own input size."""
    for stage in stages:
        if not is_exact(n, *stage):
            return False
        n = output_size(n, *stage)
    return True


def stage_sizes(n: int, stages: Sequence[Stage]) -> list[int]:
    """Input size seen by each layer of the chain, followed by the final output size."""
    sizes = [n]
    for stage in stages:
        n = output_size(n, *stage)
        sizes.append(n)
    return sizes


def shifted_windows_symmetric(n: int, window: int, shift: int) -> bool:
    """Are the windows of size ``window`` that tile an axis of size ``n`` after a cyclic
    shift by ``shift`` (``torch.roll(x, -shift)`` then a partition, as in Swin) mirror-symmetric
    about the centre? The window boundaries sit at ``(k*window + shift) mod n``; the mirror
    ``x -> n-1-x`` maps the boundary between pixels ``b-1`` and ``b`` to ``n - b``, so the
    family is symmetric iff ``{(k*w + s) mod n} == {(-k*w - s) mod n}``, i.e. (as ``w | n``)
    iff ``2*shift ≡ 0 (mod window)``. An attention mask that separates the pieces of the
    wrapped window adds the boundary at 0 (the image border), which is its own mirror image,
    so the condition is the same with and without the mask."""
    if window < 1 or n % window:
        raise ValueError(f"windows of {window} do not tile an axis of {n}")
    cuts = {(k * window + shift) % n for k in range(n // window)}
    return cuts == {(n - c) % n for c in cuts}


# ---------------------------------------------------------------------------------------
# Windows on one axis: what a pooling layer reads, and whether that is mirror-symmetric
# ---------------------------------------------------------------------------------------

def as_pair(value) -> Pair:
    """``(h, w)`` from an int or a sequence (its first and last entries; ``(0, 0)`` if
    empty), as layers accept a kernel size, stride or padding."""
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1])) if len(value) else (0, 0)
    return int(value), int(value)


def windows_symmetric(windows: list[tuple[float, float]], n: int) -> bool:
    """Is a set of windows [start, end) on an axis of size n mirror-symmetric about the
    centre? (Mirror maps [a, b) to [n - b, n - a).)"""
    ours = sorted(windows)
    mirrored = sorted((n - b, n - a) for a, b in windows)
    return ours == mirrored


def pool_windows(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> list[tuple[int, int]]:
    """Windows a (max/avg) pooling layer reads, clipped to the padded input."""
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        return []
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # PyTorch: last window must start inside
        out -= 1
    return [(s * i - p, min(s * i - p + d * (k - 1) + 1, n + p)) for i in range(out)]


def adaptive_windows(n: int, out: int) -> list[tuple[int, int]]:
    """The bins an adaptive pooling layer reads: ``[floor(i n/o), ceil((i+1) n/o))``."""
    # always mirror-symmetric: the mirror of bin i, [n - ceil((i+1) n/o), n - floor(i n/o)),
    # is bin o-1-i. Checked anyway.
    return [(math.floor(i * n / out), math.ceil((i + 1) * n / out)) for i in range(out)]


# ---------------------------------------------------------------------------------------
# Deprecated: the tracer moved to equivlib.tracer (the aliases go in equivlib 0.2)
# ---------------------------------------------------------------------------------------

_MOVED_TO_TRACER = frozenset({"STOPS", "TraceReport", "TraceRow", "exact_input_sizes",
                              "infer_input_shape", "nearest_exact_size", "trace"})

# imported on use: this module never imports the tracer
__getattr__ = moved_names(__name__, dict.fromkeys(_MOVED_TO_TRACER, "equivlib.tracer"))
