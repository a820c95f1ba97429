"""Flowers-102 through the registry, on small files in torchvision's real layout: jpgs named
by 1-based image id, ``imagelabels.mat`` (1-based labels) and ``setid.mat`` (1-based ids)."""

import os

import numpy as np
import pytest
import torch
import torchvision.datasets.flowers102 as tv_flowers
from PIL import Image
from scipy.io import savemat

from equivlib.data.base import IMAGENET_MEAN, IMAGENET_STD, DatasetMissingError
from equivlib.data.flowers import ImageFileDataset
from equivlib.data.registry import check_dataset, get_dataset

N_IMAGES = 24
SPLITS = {"trnid": 8, "valid": 6, "tstid": 10}


def _write_flowers(root):
    """Images of varying size (one greyscale), labels 1..102, ids dealt to the three splits in
    a shuffled order; returns {image id: label (1-based)} and {split key: ids}."""
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 103, N_IMAGES).astype(np.uint8)
    labels[:2] = (1, 102)  # both ends of the label range
    for image_id in range(1, N_IMAGES + 1):
        h, w = 20 + image_id, 31 + 2 * image_id  # never square: catches (H, W) swaps
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if image_id == 5:
            image = image.convert("L")
        image.save(folder / "jpg" / f"image_{image_id:05d}.jpg", quality=90)
    savemat(folder / "imagelabels.mat", {"labels": labels[None, :]})
    order = rng.permutation(np.arange(1, N_IMAGES + 1)).astype(np.uint16)
    ends = np.cumsum(list(SPLITS.values()))
    ids = dict(zip(SPLITS, np.split(order, ends[:-1]), strict=True))
    savemat(folder / "setid.mat", {k: v[None, :] for k, v in ids.items()})
    return dict(enumerate(labels.tolist(), 1)), ids


@pytest.fixture
def accept_small_files(monkeypatch):
    """torchvision checks the MD5 sums of the real .mat files; accept any file that exists."""
    monkeypatch.setattr(tv_flowers, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def _decoded(root, image_id):
    with Image.open(root / "flowers-102" / "jpg" / f"image_{image_id:05d}.jpg") as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def test_train_is_train_plus_val_and_images_round_trip(tmp_path, accept_small_files):
    label_of, ids = _write_flowers(tmp_path)
    splits = get_dataset("flowers102", data_dir=tmp_path)
    assert splits.valid is None
    assert splits.info.num_classes == 102 and splits.info.channels == 3
    assert splits.info.native_size is None
    assert splits.info.mean == IMAGENET_MEAN and splits.info.std == IMAGENET_STD
    for ds, expected_ids in ((splits.train, [*ids["trnid"], *ids["valid"]]),
                             (splits.test, list(ids["tstid"]))):
        assert isinstance(ds, ImageFileDataset) and len(ds) == len(expected_ids)
        for i, image_id in enumerate(expected_ids):
            image, label = ds[i]
            assert image.dtype == torch.uint8 and image.shape == (3, 20 + image_id,
                                                                  31 + 2 * image_id)
            assert torch.equal(image, _decoded(tmp_path, image_id))
            assert isinstance(label, int) and label == label_of[image_id] - 1  # 0-based
        assert ds.targets().tolist() == [label_of[j] - 1 for j in expected_ids]
    every = np.concatenate([splits.train.targets(), splits.test.targets()])
    assert every.min() == 0 and every.max() == 101
    assert len(splits.train) + len(splits.test) == N_IMAGES


def test_greyscale_jpg_becomes_rgb(tmp_path, accept_small_files):
    _write_flowers(tmp_path)
    splits = get_dataset("flowers102", data_dir=tmp_path)
    where = {f.name: (d, i) for d in (splits.train, splits.test) for i, f in enumerate(d.files)}
    ds, i = where["image_00005.jpg"]
    image, _ = ds[i]
    assert image.shape[0] == 3 and bool((image == image[0]).all())


def test_no_options(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        get_dataset("flowers102", data_dir=tmp_path, fraction=0.5)


@pytest.mark.parametrize("keep", [(), ("jpg",), ("jpg", "imagelabels.mat")])
def test_missing_data(tmp_path, monkeypatch, accept_small_files, keep):
    monkeypatch.delenv("DATA_DIR", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    if keep:
        _write_flowers(tmp_path / "full")
        (root / "flowers-102").mkdir()
        for name in keep:
            (tmp_path / "full" / "flowers-102" / name).rename(root / "flowers-102" / name)
    before = sorted(root.rglob("*"))
    with pytest.raises(DatasetMissingError) as info:
        get_dataset("flowers102", data_dir=root)
    msg = str(info.value)
    assert "flowers102" in msg and str(root.resolve()) in msg and "--download" in msg
    assert "flowers-102/setid.mat" in msg
    assert ("flowers-102/jpg/" in msg) == ("jpg" not in keep)
    assert sorted(root.rglob("*")) == before  # nothing created
    # (the small .mat files stand in for the originals: their MD5 check is accepted)
    assert check_dataset("flowers102", data_dir=root, download=True) == root
