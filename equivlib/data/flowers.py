"""Oxford Flowers-102 (torchvision's layout): the training set is the official train and
validation splits together, the test set the official test split; images keep their own size.

torchvision reads only the original ``imagelabels.mat`` and ``setid.mat`` (it checks their MD5
sums): the pre-flight check names a file that fails, before any work, instead of
torchvision's "Dataset not found or corrupted"; a failed ``download`` names the URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from equivlib.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    DatasetSplits,
    download_failures,
    failing_md5s,
    md5_error,
    missing_error,
    torchvision_download_hint,
)
from equivlib.data.registry import register_dataset

# what torchvision's Flowers102 reads, relative to the data root
FLOWERS_FILES = ("flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")


class ImageFileDataset(Dataset):
    """Image files and their labels: yields ``(uint8 tensor (3, H, W), int label)``, decoding
    each file (to RGB) when it is asked for."""

    def __init__(self, files: Sequence[Path | str], labels: Sequence[int]) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = [Path(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.files[i]) as image:
            pixels = np.array(image.convert("RGB"))  # (H, W, 3) uint8, writable
        return torch.from_numpy(pixels).permute(2, 0, 1), int(self.labels[i])

    def targets(self) -> np.ndarray:
        """The labels, in order."""
        return self.labels.copy()


def _flowers_source() -> tuple[str, dict[str, str]]:
    """torchvision's download URL prefix and the MD5 sum of each file it checks (relative to
    the data root)."""
    from torchvision.datasets import Flowers102

    md5s = {f"flowers-102/{Flowers102._file_dict[k][0]}": Flowers102._file_dict[k][1]
            for k in ("label", "setid")}
    return Flowers102._download_url_prefix, md5s


def check_flowers(root: Path, download: bool) -> None:
    """Raise (before any work) if torchvision's files are missing and ``download`` is off, or
    if a label file fails torchvision's MD5 check."""
    import torchvision.datasets.flowers102 as tv_flowers

    root = Path(root)
    missing = [f for f in FLOWERS_FILES
               if not ((root / f).is_dir() if f.endswith("/") else (root / f).is_file())]
    if missing and not download:
        raise missing_error("flowers102", root, missing,
                            torchvision_download_hint("flowers102", root))
    url, md5s = _flowers_source()
    failing = failing_md5s(root, md5s, tv_flowers.check_integrity)
    if failing:
        raise md5_error("flowers102", failing, "Flowers-102 (imagelabels.mat, setid.mat)",
                        f"from {url}")


def flowers_files(root: Path) -> list[Path]:
    """The label files and every image file torchvision's Flowers102 reads."""
    root = Path(root)
    out = []
    for f in FLOWERS_FILES:
        path = root / f
        out.extend(sorted(p for p in path.iterdir() if p.is_file()) if f.endswith("/")
                   and path.is_dir() else [path])
    return out


@register_dataset("flowers102", protocol="flowers", check=check_flowers, files=flowers_files,
                  description="Oxford Flowers-102: 2,040 train+val / 6,149 test colour images "
                              "of many sizes, 102 classes (torchvision's files)")
def load_flowers(root: Path, download: bool) -> DatasetSplits:
    """Train (= official train + val) and test splits; labels 0-based as torchvision gives."""
    from torchvision.datasets import Flowers102

    url, _ = _flowers_source()

    def split(name: str) -> tuple[list[Path], list[int]]:
        with download_failures("flowers102", root, url, made=[Path(root) / "flowers-102"]):
            tv = Flowers102(str(root), split=name, download=download)
        # torchvision keeps the paths and labels in private lists (stable since 0.12); reading
        # them avoids decoding every image through its PIL loader
        return list(tv._image_files), list(tv._labels)

    (train_files, train_labels), (val_files, val_labels), (test_files, test_labels) = (
        split(s) for s in ("train", "val", "test"))
    info = DatasetInfo("flowers102", 102, 3, IMAGENET_MEAN, IMAGENET_STD, native_size=None)
    return DatasetSplits(train=ImageFileDataset(train_files + val_files, train_labels + val_labels),
                         valid=None, test=ImageFileDataset(test_files, test_labels), info=info)
