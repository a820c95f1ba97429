"""What every data source returns: raw image datasets, their metadata, and the one error for
data that is not where it was looked for.

A source's datasets yield ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)``
at its native size and ``label`` an ``int`` in ``[0, num_classes)``. Resizing, augmentation
and normalisation are the protocol's business (:mod:`equivlib.data.transforms`), not the
source's, so one reader serves every experiment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetMissingError(FileNotFoundError):
    """A downloadable dataset is not where it was looked for (raised before any work)."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else ``$DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get("DATA_DIR") or "data")


def missing_error(dataset: str, root: Path, looked_for: Sequence[Path | str],
                  how: str) -> DatasetMissingError:
    """The one error for missing data: which dataset, where it was looked for, how to get it."""
    names = ", ".join(str(p) for p in looked_for)
    return DatasetMissingError(
        f"{dataset} not found in {Path(root).resolve()} (missing: {names}). {how}")


def torchvision_download_hint(dataset: str, root: Path) -> str:
    """How to fetch a dataset torchvision can download: the opt-in flags of this project."""
    return (f"Download it once on a machine with internet: `python -m equivlib train "
            f"--dataset {dataset} --download --data-dir {root} ...` (or the notebook "
            f"parameter download=True; it uses torchvision's download=True), then copy the "
            f"directory here or point DATA_DIR at it.")


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a dataset: what a model and a protocol need to know about it."""

    name: str
    num_classes: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None  # None: images come in many sizes (Flowers-102, ImageNet)
    stand_in: str = ""  # non-empty: what this data stands in for, said on every figure


@dataclass
class DatasetSplits:
    """Raw (untransformed) train / valid / test datasets and their :class:`DatasetInfo`.

    ``valid`` is ``None`` where the protocol has no model selection (CIFAR: last epoch)."""

    train: Dataset
    valid: Dataset | None
    test: Dataset
    info: DatasetInfo
    extra: dict = field(default_factory=dict)


class ArrayDataset(Dataset):
    """In-memory images: ``uint8`` (N, H, W, C) or (N, H, W) arrays and integer labels.

    ``indices`` selects a subset without copying the array (a split, a training fraction);
    ``channels`` repeats a grey channel (MNIST is fed to 3-channel models).
    ``__getitems__`` serves a whole batch at once (DataLoader uses it when present)."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray,
                 indices: Sequence[int] | np.ndarray | None = None,
                 channels: int | None = None) -> None:
        images = torch.as_tensor(np.asarray(images))
        if images.dtype != torch.uint8:
            raise TypeError(f"ArrayDataset needs uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(-1)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W[, C]), got shape {tuple(images.shape)}")
        self.images = images.permute(0, 3, 1, 2)  # a view: (N, C, H, W)
        if channels is not None and channels != self.images.shape[1]:
            if self.images.shape[1] != 1:
                raise ValueError(f"cannot expand {self.images.shape[1]} channels to {channels}")
            self.images = self.images.expand(-1, channels, -1, -1)  # grey -> C equal channels
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.indices = (torch.arange(len(self.images)) if indices is None
                        else torch.as_tensor(np.asarray(indices), dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self.images[j], int(self.labels[j])

    def __getitems__(self, items: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        js = self.indices[torch.as_tensor(list(items), dtype=torch.int64)]
        return list(zip(self.images[js].unbind(0), self.labels[js].tolist(), strict=True))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """The images at ``indices`` (positions within this dataset)."""
        out = ArrayDataset.__new__(ArrayDataset)
        out.images, out.labels = self.images, self.labels
        out.indices = self.indices[torch.as_tensor(np.asarray(indices), dtype=torch.int64)]
        return out

    def targets(self) -> np.ndarray:
        """The labels of this (sub)set, in order."""
        return self.labels[self.indices].numpy()
