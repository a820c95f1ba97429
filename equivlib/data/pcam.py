"""PatchCamelyon (PCam) in torchvision's layout: ``root/pcam/camelyonpatch_level_2_split_
{train,valid,test}_{x,y}.h5``, read lazily with h5py (the training images are 7 GB).

``x``: uint8 (N, 96, 96, 3) images; ``y``: uint8 (N, 1, 1, 1) labels (1: tumour tissue in the
centre patch). The paper's protocol does not specify a normalisation; ImageNet's statistics are
used. Option ``limit``: only the first ``limit`` images of each split (quick runs).
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
        import h5py

        self.images_path = Path(images)
        with h5py.File(labels, "r") as f:
            y = f["y"]
            self.labels = np.asarray(y[:limit], dtype=np.int64).reshape(-1)
            n_labels = y.shape[0]
        with h5py.File(self.images_path, "r") as f:
            n_images = f["x"].shape[0]
        if n_images != n_labels:
            raise ValueError(f"{self.images_path} holds {n_images} images but {labels} "
                             f"holds {n_labels} labels")
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
        return
    if not download:
        raise missing_error("pcam", root, missing, torchvision_download_hint("pcam", root))
    if not _gdown_available():
        raise missing_error("pcam", root, missing,
                            "torchvision downloads PCam from Google Drive with gdown, which is "
                            "not installed: `pip install gdown`, then retry with --download.")


@register_dataset("pcam", protocol="pcam", check=check_pcam,
                  description="PatchCamelyon: 262,144 train / 32,768 valid / 32,768 test 96x96 "
                              "histopathology patches, 2 classes (torchvision's h5 files)")
def load_pcam(root: Path, download: bool, limit: int | None = None) -> DatasetSplits:
    """Train, valid and test splits (each cut to its first ``limit`` images if given)."""
    root = Path(root)
    if download:
        from torchvision.datasets import PCAM

        for split in ("train", "val", "test"):
            PCAM(str(root), split=split, download=True)
    train, valid, test = (PCamDataset(*(root / f for f in pcam_files(s)), limit=limit)
                          for s in PCAM_SPLITS)
    info = DatasetInfo("pcam", 2, 3, IMAGENET_MEAN, IMAGENET_STD, native_size=96)
    return DatasetSplits(train=train, valid=valid, test=test, info=info)
