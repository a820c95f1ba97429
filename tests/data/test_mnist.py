import struct

import numpy as np
import pytest
import torch

from equivlib.data import DatasetMissingError, get_dataset
from equivlib.data.mnist import load_raw, make_splits
from equivlib.data.splits import fraction_indices, stratified_split


def _write_idx(path, array, magic):
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _fake_mnist(root, n_train=40, n_test=20):
    """torchvision's MNIST layout: idx files under MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte",
                   rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 0x801)


def _images(dataset):
    return [bytes(dataset[i][0][0].numpy()) for i in range(len(dataset))]


def test_torchvision_path_on_fake_files(tmp_path):
    _fake_mnist(tmp_path)
    (x, y), (xt, yt) = load_raw("torchvision", tmp_path)
    assert x.shape == (40, 28, 28) and x.dtype == np.uint8 and list(y[:12]) == [*range(10), 0, 1]
    assert xt.shape == (20, 28, 28) and yt.dtype == np.int64
    s = get_dataset("mnist", tmp_path, source="torchvision", sizes=(30, 10, 20), split_seed=1)
    image, label = s.train[0]
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8 and isinstance(label, int)
    assert len(s.train) == 30 and len(s.valid) == 10 and len(s.test) == 20
    assert np.bincount(s.valid.targets()).tolist() == [1] * 10
    # train and valid come from the training files, the test set from t10k (all of it)
    train_images = {bytes(im) for im in x}
    assert set(_images(s.train)) | set(_images(s.valid)) <= train_images
    assert sorted(_images(s.test)) == sorted(bytes(im) for im in xt)
    assert s.info.num_classes == 10 and s.info.channels == 3 and s.info.native_size == 28
    with pytest.raises(ValueError, match="exceed"):
        get_dataset("mnist", tmp_path, source="torchvision", sizes=(30, 10, 21))


def test_missing_data_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    with pytest.raises(DatasetMissingError) as info:
        get_dataset("mnist", tmp_path / "nowhere", source="torchvision")
    msg = str(info.value)
    assert "MNIST" in msg and "nowhere" in msg and "--download" in msg
    assert isinstance(info.value, FileNotFoundError) and not (tmp_path / "nowhere").exists()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env_dir"))
    with pytest.raises(DatasetMissingError, match="env_dir"):
        get_dataset("mnist", source="torchvision")


@pytest.mark.parametrize("options, match", [
    ({"source": "cifar"}, "source"), ({"sizes": (64, -32, 32)}, "sizes"),
    ({"sizes": "643"}, "sizes"), ({"sizes": (1, 2)}, "sizes"), ({"colour": True}, "option"),
    ({"sizes": (64, 0, 32)}, "3 positive ints"), ({"sizes": (64.0, 32, 32)}, "3 positive ints"),
    ({"sizes": (3000, 1000, 1001)}, "need 5001 images but the embedded source has 5000"),
    ({"split_seed": -1}, "split_seed must be an int >= 0"),
])
def test_bad_options_raise_before_work(options, match):
    with pytest.raises(ValueError, match=match):
        get_dataset("mnist", **options)


@pytest.fixture(scope="module")
def embedded():
    pool, test_pool = load_raw("embedded")
    assert test_pool is None
    return pool


def test_embedded_split_is_stratified_disjoint_and_seeded(embedded):
    x, y = embedded
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    a = stratified_split(y, (3000, 1000, 1000), seed=0)
    assert [np.bincount(y[i]).tolist() for i in a] == [[300] * 10, [100] * 10, [100] * 10]
    assert len(np.unique(np.concatenate(a))) == 5000
    b = stratified_split(y, (3000, 1000, 1000), seed=0)
    c = stratified_split(y, (3000, 1000, 1000), seed=1)
    assert all((i == j).all() for i, j in zip(a, b, strict=True))
    assert not (a[0] == c[0]).all()
    with pytest.raises(ValueError, match="exceed"):
        stratified_split(y, (4000, 1000, 1000))
    with pytest.raises(ValueError, match=">= 0"):
        stratified_split(y, (64, -32, 32))


@pytest.mark.parametrize("fraction, size", [(1.0, 5000), (0.1, 500), (0.01, 50)])
def test_fraction_indices(embedded, fraction, size):
    _, y = embedded
    idx = fraction_indices(y, fraction, seed=2)
    assert len(idx) == size and len(np.unique(idx)) == size
    assert np.bincount(y[idx]).tolist() == [size // 10] * 10
    assert (idx == fraction_indices(y, fraction, seed=2)).all()
    with pytest.raises(ValueError, match="fraction"):
        fraction_indices(y, 0.0)


@pytest.mark.parametrize("sizes", [(64, -32, 32), (64, 0, 32), (0, 32, 32)])
def test_make_splits_refuses_empty_or_negative_splits(embedded, sizes):
    with pytest.raises(ValueError, match=r"3 positive ints \(train, valid, test\)"):
        make_splits(*embedded, sizes=sizes)


def test_splits_channels_and_normalisation(embedded):
    x, y = embedded
    s = make_splits(x[:600], y[:600], sizes=(300, 100, 100))
    image, _ = s.train[0]
    assert image.shape == (3, 28, 28) and torch.equal(image[0], image[2])
    grey = np.stack([s.train[i][0][0].numpy() for i in range(len(s.train))]) / 255
    assert s.info.mean == pytest.approx((grey.mean(),) * 3)
    assert s.info.std == pytest.approx((grey.std(),) * 3)
