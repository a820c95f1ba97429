"""What every data source returns: raw image datasets, their metadata, and the one error for
data that is not where it was looked for.

A source's datasets yield ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)``
at its native size and ``label`` an ``int`` in ``[0, num_classes)``. Resizing, augmentation
and normalisation are the protocol's business (:mod:`equivlib.data.transforms`), not the
source's, so one reader serves every experiment.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetMissingError(FileNotFoundError):
    """A downloadable dataset is not where it was looked for (raised before any work)."""


class DatasetDownloadError(DatasetMissingError):
    """``download`` could not fetch a dataset: the URL and why (e.g. no network access)."""


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


def md5_error(dataset: str, failing: Sequence[Path], originals: str,
              restore: str) -> ValueError:
    """The one error for files torchvision refuses because their MD5 sums differ from the
    originals': names the first failing file (and how many others fail), says that
    torchvision checks MD5 sums and how to get the original files."""
    more = f" (and {len(failing) - 1} other file(s))" if len(failing) > 1 else ""
    return ValueError(
        f"{dataset} file {Path(failing[0]).resolve()}{more} fails torchvision's MD5 check: "
        f"torchvision reads only the original files of {originals} (it checks their MD5 sums), "
        f"so a corrupt file or a folder of your own in this layout is refused; re-download "
        f"with --download into an empty directory (--data-dir DIR), or restore the original "
        f"files {restore}")


def failing_md5s(root: Path, expected: dict[str, str],
                 check_integrity: Callable[[str, str], bool]) -> list[Path]:
    """The files of ``expected`` (paths relative to ``root``: MD5 sum) that exist under
    ``root`` but fail ``check_integrity`` (torchvision's, so that a test can accept small
    files), in order; missing files are not checked here."""
    paths = ((Path(root) / rel, md5) for rel, md5 in expected.items())
    return [p for p, md5 in paths if p.is_file() and not check_integrity(str(p), md5)]


# -- downloads --------------------------------------------------------------------------------
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror)
_MIRRORS_FAILED = re.compile(r"Tried (\S+), got:\n(.*)")


def _failed_url(exc: BaseException) -> str | None:
    """The URL a downloader was fetching when ``exc`` was raised: the innermost frame of
    torchvision's (or gdown's) download code with a local ``url`` (or a Google Drive
    ``file_id``, as torchvision's PCam passes to gdown)."""
    url, tb = None, exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__", "").split(".")[0] in ("torchvision", "gdown"):
            value, file_id = frame.f_locals.get("url"), frame.f_locals.get("file_id")
            if isinstance(value, str) and "://" in value:
                url = value
            elif isinstance(file_id, str) and file_id:
                url = f"https://drive.google.com/uc?id={file_id}"
        tb = tb.tb_next
    return url


def _is_network_error(exc: BaseException) -> bool:
    # requests' (gdown's) ConnectionError and Timeout are OSErrors of the requests package
    return isinstance(exc, _NETWORK_ERRORS) or (
        isinstance(exc, OSError) and type(exc).__module__.split(".")[0] in ("requests", "urllib3")
        and any(w in type(exc).__name__ for w in ("Connection", "Timeout")))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    text = str(exc.reason if isinstance(exc, urllib.error.URLError) else exc)
    return " ".join(text.split()) or type(exc).__name__


def _network_failures(exc: BaseException, default_url: str) -> list[tuple[str, str]] | None:
    """``[(url, why)]`` when ``exc`` is a failed download (torchvision's MNIST tries each
    mirror and raises one RuntimeError listing them), else None."""
    if _is_network_error(exc):
        return [(_failed_url(exc) or default_url, _reason(exc))]
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Error downloading "):
        name = text[len("Error downloading "):].split(":", 1)[0]
        tried = _MIRRORS_FAILED.findall(text)
        if tried and all(err.startswith("<urlopen error") or err.startswith("HTTP Error")
                         for _, err in tried):
            return [(f"{mirror}{name}",
                     " ".join(err.strip("<>").removeprefix("urlopen error ").split()))
                    for mirror, err in tried]
    return None


def download_message(dataset: str, root: Path, failures: Sequence[tuple[str, str]],
                     flags: str = "") -> str:
    """One line: which dataset and URL(s) failed, why, and how to get the data here
    (``flags``: what else the train command needs, e.g. ``--source torchvision``)."""
    what = (f"downloading {failures[0][0]} failed ({failures[0][1]})" if len(failures) == 1
            else "downloading failed from every mirror ("
                 + "; ".join(f"{url}: {why}" for url, why in failures) + ")")
    root = Path(root).resolve()
    if all(why.startswith(("the server answered HTTP", "HTTP Error")) for _, why in failures):
        return (f"{dataset}: {what}: the server refused the file (it may have moved); fetch "
                f"torchvision's files of {dataset} by hand into {root}")
    command = " ".join(["python -m equivlib train --dataset", dataset, *flags.split(),
                        "--download --data-dir DIR ..."])
    return (f"{dataset}: {what}: this machine has no network access to "
            f"{'it' if len(failures) == 1 else 'them'}; download once on a machine with "
            f"internet ({command}), then copy DIR to {root} or point DATA_DIR (--data-dir) at "
            "the copy")


@contextmanager
def download_failures(dataset: str, root: Path, default_url: str,
                      made: Sequence[Path] = (), flags: str = "") -> Iterator[None]:
    """Turn a failed download inside the block (no network: a bare ``URLError``; MNIST's
    mirror list) into one :class:`DatasetDownloadError` naming ``dataset``, the URL and
    why (``default_url`` when the downloader's frames do not tell). The directories of
    ``made`` (and ``root``) that did not exist before and are still empty are removed: a
    failed download leaves nothing behind."""
    dirs = sorted({Path(root), *map(Path, made)}, key=lambda p: len(p.parts), reverse=True)
    new = [d for d in dirs if not d.exists()]
    try:
        yield
    except Exception as exc:
        failures = _network_failures(exc, default_url)
        if failures is None:
            raise
        for d in new:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise DatasetDownloadError(download_message(dataset, root, failures, flags)) from exc


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
