"""CIFAR-10 and CIFAR-100: torchvision's python-pickle files, held in memory as ``uint8`` arrays.

Options: ``fraction`` (a seeded stratified subset of the training set, 0 < fraction <= 1) and
``fraction_seed``. There is no validation split: the CIFAR protocol reports the last epoch.

torchvision reads only the original files (it checks their MD5 sums): the pre-flight check
names a file that fails, before any work, instead of torchvision's "Dataset not found or
corrupted"; a failed ``download`` names the URL (:func:`~equivlib.data.base.download_failures`).
"""

from __future__ import annotations

from pathlib import Path

from equivlib.data.base import (
    ArrayDataset,
    DatasetInfo,
    DatasetSplits,
    download_failures,
    failing_md5s,
    md5_error,
    missing_error,
    torchvision_download_hint,
)
from equivlib.data.registry import register_dataset
from equivlib.data.splits import fraction_indices

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# the files torchvision reads, relative to the data root
CIFAR_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(f"cifar-10-batches-py/{f}" for f in (
        *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": tuple(f"cifar-100-python/{f}" for f in ("train", "test", "meta")),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def _torchvision_class(name: str) -> type:
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if name == "cifar10" else CIFAR100


def expected_md5s(name: str) -> dict[str, str]:
    """The MD5 sum torchvision expects of each file (relative to the data root)."""
    cls = _torchvision_class(name)
    pairs = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
    return {f"{cls.base_folder}/{f}": md5 for f, md5 in pairs}


def check_md5s(name: str, root: Path) -> None:
    """ValueError naming the first file under ``root`` that torchvision's MD5 check refuses
    (a corrupt file, or a CIFAR-format folder of one's own); missing files are not checked."""
    import torchvision.datasets.cifar as tv_cifar

    failing = failing_md5s(root, expected_md5s(name), tv_cifar.check_integrity)
    if failing:
        raise md5_error(name, failing, ARCHIVES[name],
                        f"from {ARCHIVES[name]} ({_torchvision_class(name).url})")


def check_fraction(fraction: float) -> None:
    """Raise ValueError unless ``fraction`` is a number in (0, 1]."""
    if (isinstance(fraction, bool) or not isinstance(fraction, int | float)
            or not 0 < fraction <= 1):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")


def check_cifar(name: str, root: Path, download: bool, fraction: float = 1.0,
                fraction_seed: int = 0) -> None:
    """Raise (before any work) on a bad option, on missing files when ``download`` is off, or
    on a file that torchvision's MD5 check would refuse."""
    check_fraction(fraction)
    if isinstance(fraction_seed, bool) or not isinstance(fraction_seed, int):
        raise ValueError(f"fraction_seed must be an int, got {fraction_seed!r}")
    missing = [f for f in CIFAR_FILES[name] if not (Path(root) / f).is_file()]
    if missing and not download:
        raise missing_error(name, root, missing, torchvision_download_hint(name, root))
    check_md5s(name, Path(root))


def load_cifar(name: str, root: Path, download: bool, fraction: float = 1.0,
               fraction_seed: int = 0) -> DatasetSplits:
    """The CIFAR-10/100 training set (or a stratified ``fraction`` of it) and test set."""
    cls = _torchvision_class(name)
    with download_failures(name, root, cls.url):
        train_tv = cls(str(root), train=True, download=download)
        test_tv = cls(str(root), train=False, download=download)
    train = ArrayDataset(train_tv.data, train_tv.targets,
                         fraction_indices(train_tv.targets, fraction, fraction_seed))
    test = ArrayDataset(test_tv.data, test_tv.targets)
    info = DatasetInfo(name, NUM_CLASSES[name], 3, CIFAR_MEAN, CIFAR_STD, native_size=32)
    return DatasetSplits(train=train, valid=None, test=test, info=info)


def _cifar10_files(root: Path, **options) -> list[Path]:
    return [Path(root) / f for f in CIFAR_FILES["cifar10"]]


def _cifar100_files(root: Path, **options) -> list[Path]:
    return [Path(root) / f for f in CIFAR_FILES["cifar100"]]


def _check_cifar10(root: Path, download: bool, **options) -> None:
    check_cifar("cifar10", root, download, **options)


def _check_cifar100(root: Path, download: bool, **options) -> None:
    check_cifar("cifar100", root, download, **options)


@register_dataset("cifar10", protocol="cifar", check=_check_cifar10, files=_cifar10_files,
                  description="CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, "
                              "10 classes (torchvision's files)")
def load_cifar10(root: Path, download: bool, fraction: float = 1.0,
                 fraction_seed: int = 0) -> DatasetSplits:
    """CIFAR-10 (see :func:`load_cifar`)."""
    return load_cifar("cifar10", root, download, fraction, fraction_seed)


@register_dataset("cifar100", protocol="cifar", check=_check_cifar100,
                  files=_cifar100_files,
                  description="CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, "
                              "100 fine classes (torchvision's files)")
def load_cifar100(root: Path, download: bool, fraction: float = 1.0,
                  fraction_seed: int = 0) -> DatasetSplits:
    """CIFAR-100 with its fine labels (see :func:`load_cifar`)."""
    return load_cifar("cifar100", root, download, fraction, fraction_seed)
