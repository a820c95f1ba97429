"""PatchCamelyon through the registry, on small h5 files in the real layout (torchvision's
names; ``x``: uint8 (N, 96, 96, 3), ``y``: uint8 (N, 1, 1, 1))."""

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from equivlib.data import pcam
from equivlib.data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetMissingError
from equivlib.data.registry import check_dataset, get_dataset

SIZES = {"train": 40, "valid": 12, "test": 16}
NAMES = [f"camelyonpatch_level_2_split_{s}_{k}.h5" for s in SIZES for k in "xy"]


def _write_pcam(root):
    """The six files; returns {split: (images, labels)}."""
    folder = root / "pcam"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in SIZES.items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        stem = folder / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(1, 96, 96, 3), compression="gzip")
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
        out[split] = (x, y.reshape(-1))
    return out


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam_data")
    return root, _write_pcam(root)


def _split(splits, name):
    return {"train": splits.train, "valid": splits.valid, "test": splits.test}[name]


def test_all_splits_round_trip(pcam_root):
    root, data = pcam_root
    splits = get_dataset("pcam", data_dir=root)
    info = splits.info
    assert (info.name, info.num_classes, info.channels, info.native_size) == ("pcam", 2, 3, 96)
    assert info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD
    for name, (x, y) in data.items():
        ds = _split(splits, name)
        assert len(ds) == len(x)
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.dtype == torch.uint8 and image.shape == (3, 96, 96)
            assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(x[i]))
            assert isinstance(label, int) and label == y[i]
        assert ds.targets().tolist() == y.tolist() and set(y.tolist()) == {0, 1}
        assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
        with pytest.raises(IndexError):
            ds[len(ds)]


@pytest.mark.parametrize("limit", [1, 5, 12, 1000])
def test_limit_takes_the_first_images_of_each_split(pcam_root, limit):
    root, data = pcam_root
    splits = get_dataset("pcam", data_dir=root, limit=limit)
    for name, (x, y) in data.items():
        ds = _split(splits, name)
        n = min(limit, len(x))
        assert len(ds) == n and ds.targets().tolist() == y[:n].tolist()
        assert torch.equal(ds[n - 1][0].permute(1, 2, 0), torch.from_numpy(x[n - 1]))
        with pytest.raises(IndexError):
            ds[n]


@pytest.mark.parametrize("limit", [0, -3, 2.5, "10", True])
def test_bad_limit_fails_before_any_work(tmp_path, limit):
    with pytest.raises(ValueError, match="limit"):
        get_dataset("pcam", data_dir=tmp_path / "nowhere", limit=limit)
    assert not (tmp_path / "nowhere").exists()


def test_dataloader_workers_open_their_own_file(pcam_root):
    root, data = pcam_root
    train = get_dataset("pcam", data_dir=root).train
    train[0]  # the main process opens its handle first: forked workers must not use it
    loader = DataLoader(train, batch_size=7, num_workers=2, shuffle=False)
    images, labels = map(torch.cat, zip(*loader, strict=True))
    x, y = data["train"]
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(x))
    assert labels.tolist() == y.tolist()
    # what a spawned worker receives: a pickled dataset without the open handle
    copy = pickle.loads(pickle.dumps(train))
    assert copy._file is None and torch.equal(copy[3][0], train[3][0])


def test_a_forked_process_reopens_the_file(pcam_root, monkeypatch):
    root, _ = pcam_root
    train = get_dataset("pcam", data_dir=root).train
    first = train[0]
    handle = train._file
    assert handle is not None
    train[1]
    assert train._file is handle  # one handle per process
    monkeypatch.setattr(pcam.os, "getpid", lambda: -1)  # as in a forked worker
    assert torch.equal(train[0][0], first[0]) and train._file is not handle


def test_spawned_workers(pcam_root):
    root, data = pcam_root
    test = get_dataset("pcam", data_dir=root).test
    test[0]
    loader = DataLoader(test, batch_size=8, num_workers=2, multiprocessing_context="spawn")
    assert torch.cat([b[1] for b in loader]).tolist() == data["test"][1].tolist()


def test_download_flag_with_files_present_does_not_fetch(pcam_root):
    root, data = pcam_root
    splits = get_dataset("pcam", data_dir=root, download=True, limit=3)
    assert len(splits.valid) == 3


@pytest.mark.parametrize("keep", [0, 5])
def test_missing_data(tmp_path, monkeypatch, keep):
    monkeypatch.delenv("DATA_DIR", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    if keep:
        _write_pcam(tmp_path / "full")
        (root / "pcam").mkdir()
        for name in NAMES[:keep]:
            (tmp_path / "full" / "pcam" / name).rename(root / "pcam" / name)
    before = sorted(root.rglob("*"))
    with pytest.raises(DatasetMissingError) as info:
        get_dataset("pcam", data_dir=root)
    msg = str(info.value)
    assert msg.split()[0] == "pcam" and str(root.resolve()) in msg and "--download" in msg
    assert all((name in msg) == (i >= keep) for i, name in enumerate(NAMES))
    assert sorted(root.rglob("*")) == before  # nothing created


@pytest.mark.parametrize("have_gdown", [True, False])
def test_download_needs_gdown(tmp_path, monkeypatch, have_gdown):
    monkeypatch.setattr(pcam, "_gdown_available", lambda: have_gdown)
    if have_gdown:
        assert check_dataset("pcam", data_dir=tmp_path / "data", download=True)
    else:
        with pytest.raises(DatasetMissingError, match="gdown"):
            check_dataset("pcam", data_dir=tmp_path / "data", download=True)
    assert not (tmp_path / "data").exists()
