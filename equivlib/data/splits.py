"""Seeded, stratified index splits: disjoint train/valid/test sets and training fractions
that keep the class proportions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Disjoint sorted index sets of the given sizes, each with (as near as possible) the
    class proportions of ``labels``; fixed by ``seed``."""
    labels = np.asarray(labels)
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if sum(sizes) > len(labels):
        raise ValueError(f"split sizes {sizes} exceed the {len(labels)} available images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    # group the shuffled indices by class, then interleave the classes by relative rank
    # (position within class / class count): every prefix keeps the class proportions
    by_class = order[np.argsort(labels[order], kind="stable")]
    _, counts = np.unique(labels, return_counts=True)
    rank = np.concatenate([np.arange(c) / c for c in counts])
    interleaved = by_class[np.argsort(rank, kind="stable")]
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(interleaved[start:start + s]))
        start += s
    return out


def fraction_indices(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A seeded stratified subset holding ``fraction`` (0 < fraction <= 1) of the images
    (at least one); all indices, in order, for ``fraction == 1``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    n = len(labels)
    if fraction == 1:
        return np.arange(n)
    (subset,) = stratified_split(labels, [max(1, round(fraction * n))], seed)
    return subset
