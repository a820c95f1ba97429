"""A small PatchCamelyon stand-in built from a histology photo that ships with scikit-image,
read through the real PCam h5 reader (:class:`~equivlib.data.pcam.PCamDataset`).

**Not PCam.** The image is scikit-image's ``immunohistochemistry`` (512 x 512, colon tissue,
tumour cell membranes stained brown by DAB, stroma counterstained blue). A patch is a 96 x 96
crop in one of the 8 orientations of a square (quarter turns and mirrors, exact), and, as in
PCam, its label says whether the *centre* 32 x 32 region shows the target tissue: 1 when at
least ``POSITIVE_FRACTION`` of its pixels are DAB-positive (DAB optical density above
``DAB_THRESHOLD`` after colour deconvolution, :func:`skimage.color.rgb2hed`). The label does
not change under the crop's quarter turns or mirrors, like PCam's.

The image is cut into a 4 x 4 grid of 128-pixel tiles; each split takes its crops from its
own tiles (:data:`SPLIT_TILES`), so no pixel of a test patch is seen in training. The h5
files are written to a temporary directory in torchvision's PCam layout when the dataset is
loaded (under a second for the default sizes) and removed when the process exits.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from equivlib.data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, DatasetSplits
from equivlib.data.pcam import PCAM_SPLITS, PCamDataset, pcam_files
from equivlib.data.photos import photo_array
from equivlib.data.registry import register_dataset

PATCH = 96
CENTRE = 32
TILE = 128
DAB_THRESHOLD = 0.09  # DAB optical density of a stained pixel (rgb2hed units)
POSITIVE_FRACTION = 0.25  # share of stained pixels in the centre region for label 1
SPLIT_TILES: dict[str, tuple[tuple[int, int], ...]] = {  # (row, column) of 128-px tiles
    "train": ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 1), (3, 0), (3, 3)),
    "valid": ((1, 3), (2, 0), (2, 3)),
    "test": ((0, 3), (2, 2), (3, 1), (3, 2)),
}
DEFAULT_SIZES = (2000, 300, 300)
STAND_IN_NOTE = ("PCam stand-in: crops of one immunohistochemistry photo (scikit-image), label "
                 "= DAB-stained centre; not PatchCamelyon")


@functools.cache
def _photo_and_stain() -> tuple[np.ndarray, np.ndarray]:
    """The photo and its DAB-stained pixels, computed once per process (read-only)."""
    from skimage.color import rgb2hed

    image = photo_array("immunohistochemistry")
    stained = rgb2hed(image)[..., 2] > DAB_THRESHOLD
    image.flags.writeable = stained.flags.writeable = False
    return image, stained


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0-7) of the square's symmetries applied to the first two axes."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def stand_in_patches(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` patches of ``split``: uint8 images ``(n, 96, 96, 3)`` and 0/1 labels ``(n,)``,
    the same for the same ``(split, n, seed)``."""
    if split not in SPLIT_TILES:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_TILES)}")
    image, stained = _photo_and_stain()
    rng = np.random.default_rng([seed, PCAM_SPLITS.index(split)])
    tiles = SPLIT_TILES[split]
    images = np.empty((n, PATCH, PATCH, 3), np.uint8)
    labels = np.empty(n, np.uint8)
    lo, hi = (PATCH - CENTRE) // 2, (PATCH + CENTRE) // 2
    for i in range(n):
        row, col = tiles[rng.integers(len(tiles))]
        y = row * TILE + rng.integers(TILE - PATCH + 1)
        x = col * TILE + rng.integers(TILE - PATCH + 1)
        k = int(rng.integers(8))
        images[i] = _dihedral(image[y:y + PATCH, x:x + PATCH], k)
        labels[i] = stained[y + lo:y + hi, x + lo:x + hi].mean() >= POSITIVE_FRACTION
    return images, labels


def write_pcam_h5(root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split in torchvision's PCam layout and dtypes under ``root``: ``x`` uint8
    ``(N, 96, 96, 3)``, ``y`` uint8 ``(N, 1, 1, 1)`` (used by the stand-in and the tests)."""
    import h5py

    x_file, y_file = (Path(root) / f for f in pcam_files(split))
    x_file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(x_file, "w") as f:
        f.create_dataset("x", data=np.asarray(images, np.uint8))
    with h5py.File(y_file, "w") as f:
        f.create_dataset("y", data=np.asarray(labels, np.uint8).reshape(-1, 1, 1, 1))


def _check_sizes(sizes: Sequence[int]) -> tuple[int, int, int]:
    sizes = tuple(sizes)
    if len(sizes) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                  for s in sizes):
        raise ValueError(f"sizes must be three positive ints (train, valid, test), "
                         f"got {sizes!r}")
    return sizes  # type: ignore[return-value]


def check_stand_in(root: Path, download: bool, sizes: Sequence[int] = DEFAULT_SIZES,
                   seed: int = 0) -> None:
    """Nothing to find (the photo ships with scikit-image); bad options raise ValueError."""
    _check_sizes(list(sizes))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


@register_dataset("pcam_stand_in", protocol="pcam", check=check_stand_in,
                  description="PCam STAND-IN (offline): 96x96 crops of scikit-image's "
                              "immunohistochemistry photo, label = DAB-stained centre, "
                              "read through the PCam h5 reader")
def load_stand_in(root: Path, download: bool, sizes: Sequence[int] = DEFAULT_SIZES,
                  seed: int = 0) -> DatasetSplits:
    """Train, valid and test splits of ``sizes`` patches, written as PCam h5 files to a
    temporary directory and read back with :class:`~equivlib.data.pcam.PCamDataset`."""
    sizes = _check_sizes(list(sizes))
    tmp = Path(tempfile.mkdtemp(prefix="equivlib-pcam-stand-in-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    splits = []
    for split, n in zip(PCAM_SPLITS, sizes, strict=True):
        write_pcam_h5(tmp, split, *stand_in_patches(split, n, seed))
        splits.append(PCamDataset(*(tmp / f for f in pcam_files(split))))
    info = DatasetInfo("pcam_stand_in", 2, 3, IMAGENET_MEAN, IMAGENET_STD, native_size=PATCH,
                       stand_in=STAND_IN_NOTE)
    return DatasetSplits(train=splits[0], valid=splits[1], test=splits[2], info=info,
                         extra={"directory": tmp})
