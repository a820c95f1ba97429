"""PatchCamelyon (PCam) in torchvision's layout: ``root/pcam/camelyonpatch_level_2_split_
{train,valid,test}_{x,y}.h5``, read lazily with h5py (the training images are 7 GB).

``x``: uint8 (N, 96, 96, 3) images; ``y``: uint8 (N, 1, 1, 1) labels (1: tumour tissue in the
centre patch). The files are checked when they are opened (and by the registry's pre-flight
check, before any work): other dataset names, float or channels-first images and labels other
than 0/1 are refused with the file's name and what was expected, never cast. The paper's
protocol does not specify a normalisation; ImageNet's statistics are used. Option ``limit``:
only the first ``limit`` images of each split (quick runs).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from equivlib.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    DatasetSplits,
    download_failures,
    missing_error,
    torchvision_download_hint,
)
from equivlib.data.registry import register_dataset

PCAM_DIR = "pcam"
PCAM_SPLITS = ("train", "valid", "test")  # file names; torchvision calls "valid" "val"


def pcam_files(split: str) -> tuple[str, str]:
    """The image and label files of ``split``, relative to the data root."""
    stem = f"{PCAM_DIR}/camelyonpatch_level_2_split_{split}"
    return f"{stem}_x.h5", f"{stem}_y.h5"


class PCamDataset(Dataset):
    """One PCam split: yields ``(uint8 tensor (3, 96, 96), int label)``.

    The labels (1 byte each) are read at construction; the image file is opened on first
    access in each process (DataLoader workers, forked or spawned, open their own handle) and
    read one image at a time."""

    def __init__(self, images: Path | str, labels: Path | str, limit: int | None = None) -> None:
        self.images_path = Path(images)
        self.labels = read_checked(self.images_path, Path(labels), limit)
        self._file: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _images(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            import h5py

            # a handle inherited through fork is replaced by the child's own
            self._file, self._pid = h5py.File(self.images_path, "r"), os.getpid()
        return self._file["x"]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        image = torch.from_numpy(np.asarray(self._images()[i], dtype=np.uint8))
        return image.permute(2, 0, 1), int(self.labels[i])

    def targets(self) -> np.ndarray:
        """The labels, in order."""
        return self.labels.copy()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None  # h5py handles do not pickle
        return state


IMAGE_SHAPE = (96, 96, 3)
EXPECTED_X = "'x': uint8 images (N, 96, 96, 3), values 0-255, as in torchvision's PCam files"
EXPECTED_Y = "'y': uint8 labels 0 or 1, shape (N, 1, 1, 1), as in torchvision's PCam files"


def _dataset(f: Any, path: Path, key: str, expected: str) -> Any:
    import h5py

    item = f.get(key)
    if not isinstance(item, h5py.Dataset):
        held = ", ".join(repr(k) for k in f.keys()) or "nothing"
        raise ValueError(f"pcam file {path}: no dataset {key!r} (it holds {held}); "
                         f"expected {expected}")
    return item


def _open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"pcam file {path}: cannot be read as HDF5 ({reason}); replace "
                         "it with torchvision's file") from None


def _image_problem(x: Any) -> str | None:
    """What is wrong with the image dataset ``x`` (dtype, shape), or None."""
    shape = tuple(x.shape)
    if x.dtype != np.uint8:
        hint = ""
        if np.issubdtype(x.dtype, np.floating):
            hint = ("; float images in [0, 1] must be stored as uint8: "
                    "(x * 255).round().astype('uint8')")
        return f"'x' holds {x.dtype} images of shape {shape}{hint}"
    if len(shape) != 4 or shape[1:] != IMAGE_SHAPE:
        hint = ("; the images are channels-first: store x.transpose(0, 2, 3, 1)"
                if len(shape) == 4 and shape[1:] == (3, 96, 96) else "")
        return f"'x' has shape {shape}{hint}"
    return None


def read_checked(images: Path, labels: Path, limit: int | None = None) -> np.ndarray:
    """The labels of one split (the first ``limit``), after checking both of its files: the
    dataset names, the images' dtype and shape (uint8, (N, 96, 96, 3)), the labels' type and
    values (integers 0 or 1) and their counts. ValueError naming the file and what was
    expected otherwise (e.g. float images in [0, 1], which a uint8 cast turns black)."""
    with _open(images) as f:
        x = _dataset(f, images, "x", EXPECTED_X)
        problem = _image_problem(x)
        if problem:
            raise ValueError(f"pcam file {images}: {problem}; expected {EXPECTED_X}")
        n_images = x.shape[0]
    with _open(labels) as f:
        y = _dataset(f, labels, "y", EXPECTED_Y)
        shape = tuple(y.shape)
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_) \
                or len(shape) < 1 or int(np.prod(shape[1:])) != 1:
            raise ValueError(f"pcam file {labels}: 'y' holds {y.dtype} of shape {shape}; "
                             f"expected {EXPECTED_Y}")
        values = np.asarray(y[:limit]).reshape(-1).astype(np.int64)
        n_labels = shape[0]
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        found = ", ".join(str(v) for v in np.unique(values[bad])[:5])
        raise ValueError(f"pcam file {labels}: labels must be 0 or 1, found {found} (first at "
                         f"index {bad[0]}); expected {EXPECTED_Y}")
    if n_images != n_labels:
        raise ValueError(f"{images} holds {n_images} images but {labels} "
                         f"holds {n_labels} labels")
    return values


def _gdown_available() -> bool:
    return importlib.util.find_spec("gdown") is not None


def check_limit(limit: int | None) -> None:
    """Raise ValueError unless ``limit`` is None or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")


def check_pcam(root: Path, download: bool, limit: int | None = None) -> None:
    """Raise (before any work) on a bad ``limit``, or on missing files when ``download`` is off
    (or on, without ``gdown``, which torchvision needs to fetch PCam from Google Drive)."""
    check_limit(limit)
    root = Path(root)
    missing = [f for s in PCAM_SPLITS for f in pcam_files(s) if not (root / f).is_file()]
    if not missing:
        for split in PCAM_SPLITS:  # dtype, shape, labels: before any work
            read_checked(*(root / f for f in pcam_files(split)), limit=limit)
        return
    if not download:
        raise missing_error("pcam", root, missing, torchvision_download_hint("pcam", root))
    if not _gdown_available():
        raise missing_error("pcam", root, missing,
                            "torchvision downloads PCam from Google Drive with gdown, which is "
                            "not installed: `pip install gdown`, then retry with --download.")


def pcam_data_files(root: Path, limit: int | None = None) -> list[Path]:
    """The six h5 files the reader opens (the identity of a run's data)."""
    return [Path(root) / f for s in PCAM_SPLITS for f in pcam_files(s)]


@register_dataset("pcam", protocol="pcam", check=check_pcam, files=pcam_data_files,
                  description="PatchCamelyon: 262,144 train / 32,768 valid / 32,768 test 96x96 "
                              "histopathology patches, 2 classes (torchvision's h5 files)")
def load_pcam(root: Path, download: bool, limit: int | None = None) -> DatasetSplits:
    """Train, valid and test splits (each cut to its first ``limit`` images if given)."""
    root = Path(root)
    if download:
        from torchvision.datasets import PCAM

        with download_failures("pcam", root, "https://drive.google.com (torchvision's PCam "
                               "files)", made=[root / PCAM_DIR]):  # gdown fetches them
            for split in ("train", "val", "test"):
                PCAM(str(root), split=split, download=True)
    train, valid, test = (PCamDataset(*(root / f for f in pcam_files(s)), limit=limit)
                          for s in PCAM_SPLITS)
    info = DatasetInfo("pcam", 2, 3, IMAGENET_MEAN, IMAGENET_STD, native_size=96)
    return DatasetSplits(train=train, valid=valid, test=test, info=info)
