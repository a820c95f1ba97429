"""Catalogue of unclear messages on the data paths (issue 26), each now one line that names the
file (or the dataset and URL) and the fix, before any work, exit status 2 and nothing written:

- CIFAR / Flowers-102 files that fail torchvision's MD5 check (a CIFAR-format folder of one's
  own, a corrupt file): was torchvision's "Dataset not found or corrupted. You can use
  download=True";
- ``--download`` without network access: was a bare ``URLError`` (MNIST: a many-line
  RuntimeError listing its mirrors; PCam: gdown's ConnectionError); a server that refuses the
  file (HTTP 404) is said so;
- ImageNet TFRecords: an empty (0-byte) shard, was "fewer shards (files) than processes";
  labels outside ``1..num_classes`` (0-based, or more classes than ``num_classes``), was
  "Target -1 is out of bounds" at the first batch (a bad label past the pre-flight scan is a
  ValueError naming the convention when it is read); top-5 of fewer than 6 classes, was
  100 % without a word (now a RuntimeWarning before training);
- garbage MNIST idx files under ``DATA_DIR``: was a bare ``AssertionError``.

PCam h5 files with other key names or channels-first images were already refused with the
expected keys and shape (tests/catalogue/test_data_and_store.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import struct
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch._dynamo  # noqa: F401  (before TensorFlow: importing triton after it crashes)
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.flowers102 as tv_flowers
from PIL import Image
from scipy.io import savemat

from equivlib.cli import main
from equivlib.data.imagenet_tfrecord import SCAN_RECORDS, TFRecordImages, write_tfrecord_shards
from equivlib.data.registry import check_dataset, get_dataset
from tests.fakes import _write_cifar10, _write_cifar100

TRAIN = "python -m equivlib train: error: "
RUN = ["--results-dir", "res", "--checkpoint-dir", "ck"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")
    monkeypatch.delenv("DATA_DIR", raising=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.rstrip("\n")


def _refused(capsys, argv: list[str], root: Path) -> str:
    before = _tree(root)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and _tree(root) == before  # nothing trained, nothing written
    return _one_line(captured.err)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _as_originals(monkeypatch, module, root: Path) -> None:
    """The files under ``root`` as they are now stand in for the originals: torchvision's
    integrity check (and only it) compares with their MD5 sums instead of the real ones."""
    originals = {str(p): _md5(p) for p in root.rglob("*") if p.is_file()}
    monkeypatch.setattr(module, "check_integrity",
                        lambda fpath, md5=None: originals.get(str(fpath)) == _md5(Path(fpath))
                        if Path(fpath).is_file() else False)


def _write_flowers(root: Path) -> None:
    """torchvision's Flowers-102 layout: jpgs named by 1-based id, 1-based labels and ids."""
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in range(1, 7):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            folder / "jpg" / f"image_{image_id:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 1, 2, 3]], np.uint8)})
    savemat(folder / "setid.mat", {"trnid": np.array([[1, 2]], np.uint16),
                                   "valid": np.array([[3, 4]], np.uint16),
                                   "tstid": np.array([[5, 6]], np.uint16)})


# ------------------------------------------------------------------ torchvision's MD5 check
def _md5_line(dataset: str, path: Path, more: str, originals: str, restore: str) -> str:
    return (f"{TRAIN}{dataset} file {path}{more} fails torchvision's MD5 check: torchvision "
            f"reads only the original files of {originals} (it checks their MD5 sums), so a "
            "corrupt file or a folder of your own in this layout is refused; re-download with "
            "--download into an empty directory (--data-dir DIR), or restore the original "
            f"files {restore}")


CIFAR = {"cifar10": ("cifar-10-batches-py/data_batch_1", " (and 6 other file(s))",
                     "cifar-10-python.tar.gz"),
         "cifar100": ("cifar-100-python/train", " (and 2 other file(s))",
                      "cifar-100-python.tar.gz")}
WRITERS = {"cifar10": _write_cifar10, "cifar100": _write_cifar100}
FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


def _cifar_argv(dataset: str, data: Path, *more: str) -> list[str]:
    return ["train", "--dataset", dataset, "--model", "p4_resnet20", "--input-size", "33",
            "--data-dir", str(data), *RUN, *more]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("download", [False, True])
def test_a_cifar_format_folder_of_ones_own(workdir, capsys, dataset, download):
    """Was: "Dataset not found or corrupted. You can use download=True to download it" (and
    with --download torchvision would overwrite the folder with the original CIFAR)."""
    WRITERS[dataset](workdir / "data")
    first, more, archive = CIFAR[dataset]
    argv = _cifar_argv(dataset, workdir / "data", *(["--download"] if download else []))
    assert _refused(capsys, argv, workdir) == _md5_line(
        dataset, workdir / "data" / first, more, archive,
        f"from {archive} (https://www.cs.toronto.edu/~kriz/{archive})")


def test_a_corrupt_cifar_file_is_named(workdir, capsys, monkeypatch):
    _write_cifar10(workdir / "data")
    _as_originals(monkeypatch, tv_cifar, workdir / "data")
    check_dataset("cifar10", workdir / "data")  # the originals pass
    victim = workdir / "data" / "cifar-10-batches-py" / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:-100])  # an interrupted copy
    assert _refused(capsys, _cifar_argv("cifar10", workdir / "data"), workdir) == _md5_line(
        "cifar10", victim, "", "cifar-10-python.tar.gz",
        "from cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)")


def test_flowers_label_files_of_ones_own(workdir, capsys):
    _write_flowers(workdir / "data")
    argv = _cifar_argv("flowers102", workdir / "data")
    assert _refused(capsys, argv, workdir) == _md5_line(
        "flowers102", workdir / "data" / "flowers-102" / "imagelabels.mat",
        " (and 1 other file(s))", "Flowers-102 (imagelabels.mat, setid.mat)",
        f"from {FLOWERS_URL}")


def test_a_corrupt_flowers_file_is_named(workdir, capsys, monkeypatch):
    _write_flowers(workdir / "data")
    _as_originals(monkeypatch, tv_flowers, workdir / "data")
    assert len(get_dataset("flowers102", workdir / "data").train) == 4  # the originals load
    victim = workdir / "data" / "flowers-102" / "setid.mat"
    victim.write_bytes(b"\0" * victim.stat().st_size)
    assert _refused(capsys, _cifar_argv("flowers102", workdir / "data"), workdir) == _md5_line(
        "flowers102", victim, "", "Flowers-102 (imagelabels.mat, setid.mat)",
        f"from {FLOWERS_URL}")


# ------------------------------------------------------------------ --download, no network
def _no_network(*args, **kwargs):
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


NO_DNS = "[Errno -3] Temporary failure in name resolution"
DOWNLOADS = [
    pytest.param(["--dataset", "cifar10", "--model", "p4_resnet20", "--input-size", "33"],
                 "cifar10: downloading https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
                 f"failed ({NO_DNS}): this machine has no network access to it; download once on "
                 "a machine with internet (python -m equivlib train --dataset cifar10 --download "
                 "--data-dir DIR ...)", id="cifar10"),
    pytest.param(["--dataset", "flowers102", "--model", "p4_resnet20", "--input-size", "33"],
                 f"flowers102: downloading {FLOWERS_URL}102flowers.tgz failed ({NO_DNS}): this "
                 "machine has no network access to it; download once on a machine with internet "
                 "(python -m equivlib train --dataset flowers102 --download --data-dir DIR ...)",
                 id="flowers102"),
    pytest.param(["--source", "torchvision"],
                 "mnist: downloading failed from every mirror (https://ossci-datasets.s3."
                 f"amazonaws.com/mnist/train-images-idx3-ubyte.gz: {NO_DNS}; http://yann.lecun."
                 f"com/exdb/mnist/train-images-idx3-ubyte.gz: {NO_DNS}): this machine has no "
                 "network access to them; download once on a machine with internet (python -m "
                 "equivlib train --dataset mnist --source torchvision --download --data-dir DIR "
                 "...)", id="mnist-mirrors"),
]


@pytest.mark.parametrize("flags, failed", DOWNLOADS)
def test_download_without_network_names_the_dataset_and_url(workdir, capsys, monkeypatch,
                                                             flags, failed):
    """Was: a bare URLError (MNIST: "Error downloading ..." over five lines)."""
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)  # torchvision's downloader
    data = workdir / "data"
    argv = ["train", *flags, "--data-dir", str(data), "--download", *RUN]
    assert _refused(capsys, argv, workdir) == (
        f"{TRAIN}{failed}, then copy DIR to {data} or point DATA_DIR (--data-dir) at the copy")
    assert not data.exists()  # the directories torchvision made for the download are gone


def test_download_refused_by_the_server_says_so(workdir, capsys, monkeypatch):
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

    def not_found(request, *args, **kwargs):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    data = workdir / "data"
    argv = _cifar_argv("cifar10", data, "--download")
    assert _refused(capsys, argv, workdir) == (
        f"{TRAIN}cifar10: downloading {url} failed (the server answered HTTP 404 Not Found): the "
        f"server refused the file (it may have moved); fetch torchvision's files of cifar10 by "
        f"hand into {data}")


def test_pcam_download_without_network_names_the_google_drive_file(workdir, capsys,
                                                                   monkeypatch):
    """torchvision fetches PCam with gdown (requests): no network is a ConnectionError."""
    import requests
    import torchvision.datasets.pcam as tv_pcam

    from equivlib.data import pcam

    def no_network(file_id, root, filename=None, md5=None):
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded")

    monkeypatch.setattr(pcam, "_gdown_available", lambda: True)
    monkeypatch.setattr(tv_pcam, "download_file_from_google_drive", no_network)
    file_id = tv_pcam.PCAM._FILES["train"]["images"][1]
    data = workdir / "data"
    argv = ["train", "--dataset", "pcam", "--model", "p4_resnet20", "--input-size", "96",
            "--data-dir", str(data), "--download", *RUN]
    assert _refused(capsys, argv, workdir) == (
        f"{TRAIN}pcam: downloading https://drive.google.com/uc?id={file_id} failed "
        "(HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded): this "
        "machine has no network access to it; download once on a machine with internet (python "
        "-m equivlib train --dataset pcam --download --data-dir DIR ...), then copy DIR to "
        f"{data} or point DATA_DIR (--data-dir) at the copy")


# ------------------------------------------------------------------ ImageNet TFRecords
IMAGENET = ["train", "--dataset", "imagenet", "--model", "p4_resnet18", "--input-size", "33",
            "--set", "data.options.num_classes=4", *RUN]
CONVENTION = ("image/class/label must be 1-based, 1..num_classes, as TensorFlow's ImageNet "
              "conversion writes it (this reader yields label - 1)")


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)


def _shards(root: Path, train_labels, valid_labels=(0, 1, 2, 3), train_shards: int = 2) -> Path:
    """Shards in TensorFlow's ImageNet format (1-based labels: the writer adds 1 to the
    0-based labels it is given, so -1 writes 0)."""
    write_tfrecord_shards(root, _images(len(train_labels)), train_labels, train_shards)
    write_tfrecord_shards(root, _images(len(valid_labels)), valid_labels, 1, "validation")
    return root


def test_an_empty_imagenet_shard_is_named(workdir, capsys):
    """Was: "the training stream of this process is empty: fewer shards (files) than
    processes x DataLoader workers?" after the first epoch had started."""
    data = _shards(workdir / "data", np.arange(12) % 4, train_shards=3)
    (data / "train-00001-of-00003").write_bytes(b"")  # an interrupted copy
    line = _refused(capsys, [*IMAGENET, "--data-dir", str(data)], workdir)
    assert line == (f"{TRAIN}imagenet: empty (0-byte) TFRecord shard(s) "
                    f"{data / 'train-00001-of-00003'} (1 of the 3 matching '{data}/train-*'): an "
                    "unfinished conversion or copy; write or copy them again, or move them out "
                    "of the pattern's way")


@pytest.mark.parametrize("labels, found, fix", [
    pytest.param(np.arange(8) % 4 - 1, 0, "shards written with 0-based labels must be written "
                 "again with label + 1", id="0-based"),
    pytest.param(np.arange(8) % 4 + 4, 5, "give the shards' number of classes as num_classes "
                 "(--set data.options.num_classes=N, now 4), or write them again with labels "
                 "1..4", id="more-classes-than-num_classes"),
])
def test_imagenet_labels_out_of_range_are_refused_before_any_work(workdir, capsys, labels,
                                                                  found, fix):
    """Was: "Target -1 is out of bounds" (or "Target 4 ...") at the first batch."""
    data = _shards(workdir / "data", labels)
    line = _refused(capsys, [*IMAGENET, "--data-dir", str(data)], workdir)
    assert line == (f"{TRAIN}imagenet shard {data / 'train-00000-of-00002'}: record 0 has "
                    f"image/class/label {found}, outside 1..4: {CONVENTION}; {fix}")


def test_shards_of_another_converter_are_refused_before_any_work(workdir, capsys):
    """Was: TensorFlow's InvalidArgumentError "... Feature: image/class/label (data type:
    int64) is required but could not be found" at the first batch."""
    import tensorflow as tf

    data = _shards(workdir / "data", np.arange(8) % 4)
    first = data / "train-00000-of-00002"
    with tf.io.TFRecordWriter(str(first)) as writer:
        for label in range(4):
            encoded = tf.io.encode_jpeg(_images(1)[0]).numpy()
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
                .SerializeToString())
    line = _refused(capsys, [*IMAGENET, "--data-dir", str(data)], workdir)
    assert line == (f"{TRAIN}imagenet shard {first}: record 0 lacks the features of "
                    "TensorFlow's ImageNet conversion, image/encoded (bytes) and "
                    "image/class/label (one int64): it holds image (bytes), label (int64); "
                    f"write the shards with them ({CONVENTION})")


def test_a_label_out_of_range_past_the_scan_is_named_when_read(tmp_path):
    """The pre-flight check reads the first SCAN_RECORDS records of the first and last shard
    of each split; a bad label further on is an error naming the convention when it is read,
    never "Target -1 is out of bounds"."""
    valid = np.arange(SCAN_RECORDS + 4) % 4
    valid[SCAN_RECORDS + 2] = -1  # written as 0
    data = _shards(tmp_path / "data", np.arange(8) % 4, valid)
    check_dataset("imagenet", data, num_classes=4)  # the scanned records are fine
    test = get_dataset("imagenet", data, num_classes=4).test
    assert isinstance(test, TFRecordImages) and test.num_classes == 4
    with pytest.raises(ValueError) as info:
        list(test)
    assert str(info.value) == (f"imagenet: a record of {data / 'validation-00000-of-00001'} "
                               f"has image/class/label 0, outside 1..4: {CONVENTION}; shards "
                               "written with 0-based labels must be written again with label + 1")


def test_top5_of_4_classes_is_said_to_be_100_percent(workdir, capsys):
    """Was: test_top5 = 1.0 stored and drawn without a word."""
    data = _shards(workdir / "data", np.arange(8) % 4)
    argv = [*IMAGENET, "--data-dir", str(data), "--epochs", "1", "--batch-size", "4",
            "--widths", "2", "2", "2", "2", "--set", "test.error_layers=[]"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    key = json.loads(capsys.readouterr().out)["key"]
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [
        f"run {key}: test.topk 5 >= the 4 classes of imagenet: top-5 accuracy is 100 % "
        "whatever the model predicts (every class is among the top 5), so the stored test_top5 "
        "says nothing; test with more than 5 classes, or drop 5 from test.topk"]
    stored = json.loads((workdir / "res" / f"{key}.json").read_text())["metrics"]
    assert set(stored["test_top5"].values()) == {1.0}


# ------------------------------------------------------------------ MNIST idx files
def _idx(array: np.ndarray, magic: int) -> bytes:
    return (struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path) -> Path:
    """torchvision's MNIST layout: the four idx files under MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            _idx(rng.integers(0, 256, (n, 28, 28)), 0x803))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10, 0x801))
    return raw


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
NOT_IDX = "is not an MNIST idx file: "
MNIST_CASES = [
    pytest.param(IMAGES, lambda good: gzip.compress(good, mtime=0),
                 "magic number 0x1f8b0800 (a gzip file: gunzip it), expected 0x00000803 "
                 "(unsigned bytes, 3 dimensions)", id="still-gzipped"),
    pytest.param(IMAGES, lambda good: b"<html><body>404 Not Found</body></html>\n",
                 "magic number 0x3c68746d, expected 0x00000803 (unsigned bytes, 3 dimensions)",
                 id="an-error-page"),
    pytest.param(LABELS, lambda good: good[:3], "it has 3 bytes, too few for a header",
                 id="empty-ish"),
    pytest.param(IMAGES, lambda good: _idx(np.zeros((40, 32, 32)), 0x803),
                 "shape (40, 32, 32), expected (N, 28, 28)", id="other-shape"),
    pytest.param(IMAGES, lambda good: good[:-5], "31371 bytes where its header (40, 28, 28) "
                 "needs 31376", id="truncated"),
    pytest.param(LABELS, lambda good: _idx(np.arange(40) % 10 + 3, 0x801),
                 "label 10 at index 7, expected digits 0-9", id="labels-not-digits"),
]


@pytest.mark.parametrize("name, garble, problem", MNIST_CASES)
def test_garbage_mnist_idx_files_under_data_dir(workdir, capsys, monkeypatch, name, garble,
                                                 problem):
    """Was: a bare AssertionError (or "x should have 3 dimension", a reshape error...)."""
    raw = _write_mnist(workdir / "datasets")
    monkeypatch.setenv("DATA_DIR", str(workdir / "datasets"))
    path = raw / name
    path.write_bytes(garble(path.read_bytes()))
    line = _refused(capsys, ["train", "--source", "torchvision", *RUN], workdir)
    assert line == (f"{TRAIN}mnist file {path} {NOT_IDX}{problem}; replace it with "
                    f"torchvision's file (the original {name}.gz gunzipped, or delete the MNIST "
                    "folder and rerun with --download)")


def test_mnist_images_and_labels_that_do_not_belong_together(workdir, capsys, monkeypatch):
    raw = _write_mnist(workdir / "datasets")
    monkeypatch.setenv("DATA_DIR", str(workdir / "datasets"))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(19) % 10, 0x801))
    line = _refused(capsys, ["train", "--source", "torchvision", *RUN], workdir)
    assert line == (f"{TRAIN}mnist files {raw / 't10k-images-idx3-ubyte'} and "
                    f"{raw / 't10k-labels-idx1-ubyte'} do not belong together: 20 images but "
                    "19 labels; replace them with torchvision's files")
