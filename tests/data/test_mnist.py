import struct

import numpy as np
import pytest
import torch

from equivlib.data import (
    DatasetMissingError,
    biased_angle,
    load_mnist,
    load_raw,
    make_splits,
    rotate,
    rotate_exact,
    stratified_split,
    uniform_angles,
)


def _write_idx(path, array, magic):
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _fake_mnist(root, n_train=40, n_test=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte",
                   rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 0x801)


def test_torchvision_path_on_fake_files(tmp_path):
    _fake_mnist(tmp_path)
    (x, y), (xt, yt) = load_raw("torchvision", tmp_path)
    assert x.shape == (40, 28, 28) and x.dtype == np.uint8 and list(y[:12]) == [*range(10), 0, 1]
    assert xt.shape == (20, 28, 28) and yt.dtype == np.int64
    s = load_mnist(28, "torchvision", tmp_path, sizes=(30, 10, 20), seed=1)
    assert s.x_train.shape == (30, 3, 28, 28) and s.x_test.shape == (20, 3, 28, 28)
    assert np.bincount(s.y_valid.numpy()).tolist() == [1] * 10
    # train and valid come from the training files, the test set from t10k (all of it)
    as_bytes = {bytes(im) for im in x}
    assert all(bytes((t[0] * 255).round().byte().numpy()) in as_bytes
               for t in torch.cat([s.x_train, s.x_valid]))
    assert sorted(bytes((t[0] * 255).round().byte().numpy()) for t in s.x_test) \
        == sorted(bytes(im) for im in xt)
    s27 = load_mnist(27, "torchvision", tmp_path, sizes=(30, 10, 20), seed=1)
    assert s27.x_test.shape == (20, 3, 27, 27)
    with pytest.raises(ValueError, match="exceed"):
        load_mnist(28, "torchvision", tmp_path, sizes=(30, 10, 21))


def test_missing_data_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    with pytest.raises(DatasetMissingError) as info:
        load_mnist(28, "torchvision", tmp_path / "nowhere")
    msg = str(info.value)
    assert "MNIST" in msg and "nowhere" in msg and "download=True" in msg
    assert isinstance(info.value, FileNotFoundError)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env_dir"))
    with pytest.raises(DatasetMissingError, match="env_dir"):
        load_mnist(28, "torchvision")


def test_bad_arguments_raise_before_work():
    with pytest.raises(ValueError, match="input_size"):
        load_mnist(30)
    with pytest.raises(ValueError, match="source"):
        load_raw("cifar")


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


@pytest.mark.parametrize("size", [27, 28, 29])
def test_resize_channels_and_normalisation(embedded, size):
    x, y = embedded
    s = make_splits(x[:600], y[:600], size, sizes=(300, 100, 100))
    assert s.x_train.shape == (300, 3, size, size)
    assert torch.equal(s.x_train[:, 0], s.x_train[:, 2])
    n = s.normalize(s.x_train)
    assert abs(n.mean().item()) < 1e-5 and abs(n.std().item() - 1) < 1e-4


def _smooth(size=28):
    t = torch.linspace(0, 1, size, dtype=torch.float64)
    img = torch.sin(3 * t)[:, None] * torch.cos(2 * t + 0.3)[None] + t[None] * t[:, None]
    return img.expand(2, 3, size, size).float()


@pytest.mark.parametrize("size", [27, 28])
def test_rotate_matches_rot90(size):
    x = _smooth(size)
    assert torch.equal(rotate(x, 0), x)
    for k in range(1, 4):
        assert torch.equal(rotate_exact(rotate_exact(x, k), 4 - k), x)
        assert torch.equal(rotate(x, 90 * k), rotate_exact(x, k))
        assert torch.equal(rotate(x, -90 * k), rotate_exact(x, -k))
        assert (rotate(x, torch.tensor(90.0 * k)) - rotate_exact(x, k)).abs().max() < 1e-5
    per_image = rotate(x, torch.tensor([90.0, 180.0]))
    assert (per_image[1] - rotate_exact(x[1], 2)).abs().max() < 1e-5


def test_regime_samplers():
    a, b = uniform_angles(100, 7), uniform_angles(100, 7)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 360
    assert not torch.equal(a, uniform_angles(100, 8))
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([biased_angle(g, 45, 20) for _ in range(2000)])
    assert abs(draws.mean() - 45) < 2 and abs(draws.std() - 20) < 2
