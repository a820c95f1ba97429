"""CIFAR-10/100 through the registry, on small files in torchvision's real pickle format."""

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from equivlib.data.base import DatasetMissingError
from equivlib.data.registry import check_dataset, get_dataset
from tests.fakes import _write_cifar10, _write_cifar100

WRITERS = {"cifar10": _write_cifar10, "cifar100": _write_cifar100}


@pytest.fixture
def accept_small_files(monkeypatch):
    """torchvision checks the MD5 sums of the real files (data batches and meta); accept any
    file that exists instead."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _as_hwc(rows):
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_fake_files_are_in_the_real_format(tmp_path):
    _write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        assert {b"data", b"labels"} <= set(pickle.load(f, encoding="bytes"))


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_round_trip(tmp_path, accept_small_files, name, classes):
    (x, y), (xt, yt) = WRITERS[name](tmp_path)
    splits = get_dataset(name, data_dir=tmp_path)
    assert splits.valid is None
    info = splits.info
    assert (info.name, info.num_classes, info.channels, info.native_size) == (name, classes, 3, 32)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010)
    for ds, rows, labels in ((splits.train, x, y), (splits.test, xt, yt)):
        assert len(ds) == len(rows)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        assert images.dtype == torch.uint8 and images.shape == (len(rows), 3, 32, 32)
        # pixel i of the file's row (channel planes, then rows) is the dataset's (C, H, W) pixel
        assert torch.equal(images.reshape(len(rows), -1), torch.from_numpy(rows))
        got = [ds[i][1] for i in range(len(ds))]
        assert all(isinstance(t, int) for t in got) and got == labels.tolist()
        assert 0 <= min(got) and max(got) < classes
    # the HWC layout torchvision uses for .data agrees: image 7, row 3, column 5, green
    assert splits.train[7][0][1, 3, 5] == _as_hwc(x)[7, 3, 5, 1]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fraction_is_a_seeded_stratified_subset(tmp_path, accept_small_files, name):
    (x, y), (xt, _) = WRITERS[name](tmp_path)
    half = get_dataset(name, data_dir=tmp_path, fraction=0.5, fraction_seed=3)
    assert len(half.train) == len(x) // 2 and len(half.test) == len(xt)
    counts = np.bincount(half.train.targets(), minlength=y.max() + 1)
    assert np.all(np.abs(counts - np.bincount(y) / 2) <= 1)  # stratified
    # every image of the subset is the file's image with its label, none twice
    rows = {bytes(r): i for i, r in enumerate(x)}
    picked = [rows[bytes(half.train[i][0].reshape(-1).numpy())] for i in range(len(half.train))]
    assert len(set(picked)) == len(picked)
    assert [half.train[i][1] for i in range(len(half.train))] == y[picked].tolist()
    again = get_dataset(name, data_dir=tmp_path, fraction=0.5, fraction_seed=3)
    other = get_dataset(name, data_dir=tmp_path, fraction=0.5, fraction_seed=4)
    assert torch.equal(again.train.indices, half.train.indices)
    assert not torch.equal(other.train.indices, half.train.indices)
    tiny = get_dataset(name, data_dir=tmp_path, fraction=1e-6)
    assert len(tiny.train) == 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), "0.5", True])
def test_bad_fraction_fails_before_any_work(tmp_path, name, fraction):
    with pytest.raises(ValueError, match="fraction"):
        get_dataset(name, data_dir=tmp_path / "nowhere", fraction=fraction)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"),
                                         ("cifar100", "cifar-100-python")])
def test_missing_data(tmp_path, monkeypatch, name, folder):
    monkeypatch.delenv("DATA_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetMissingError) as info:
        get_dataset(name, data_dir=empty)
    msg = str(info.value)
    assert name in msg and str(empty.resolve()) in msg and "--download" in msg
    assert folder in msg
    assert list(empty.iterdir()) == []
    # a single missing file is named
    WRITERS[name](tmp_path / "partial")
    victim = tmp_path / "partial" / folder / ("data_batch_3" if name == "cifar10" else "meta")
    victim.unlink()
    with pytest.raises(DatasetMissingError, match=victim.name):
        get_dataset(name, data_dir=tmp_path / "partial")
    # with download=True the pre-flight check lets the loader fetch the files
    assert check_dataset(name, data_dir=empty, download=True) == empty
    assert list(empty.iterdir()) == []


def test_download_flag_with_files_present_does_not_fetch(tmp_path, accept_small_files):
    (x, _), _ = _write_cifar10(tmp_path)
    splits = get_dataset("cifar10", data_dir=tmp_path, download=True)
    assert len(splits.train) == len(x)
