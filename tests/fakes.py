"""Small files in the real on-disk formats of downloadable datasets, for tests (imported
by test modules as ``tests.fakes``: pyproject's pytest ``pythonpath`` puts the root on
sys.path)."""

import pickle
import struct

import numpy as np

N_TRAIN_BATCH, N_TEST = 24, 30  # CIFAR-10: 5 training batches of 24 -> 120 training images
N_TRAIN_100 = 200  # CIFAR-100: 2 images per fine class


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as in the real
    CIFAR files: ``pickle.load(encoding="latin1")`` (torchvision) reads them as ``str``,
    ``encoding="bytes"`` as ``bytes``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump(path, obj):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane


def _write_cifar10(root):
    """Five training batches and a test batch, labels cycling through the 10 classes."""
    rng = np.random.default_rng(0)
    train = [(_images(rng, N_TRAIN_BATCH), [(b + i) % 10 for i in range(N_TRAIN_BATCH)])
             for b in range(1, 6)]
    test = (_images(rng, N_TEST), [i % 10 for i in range(N_TEST)])
    write_cifar10_batches(root, train, test)
    xs, ys = zip(*train, strict=True)
    return (np.concatenate(xs), np.concatenate(ys)), (test[0], np.asarray(test[1]))


def write_cifar10_batches(root, train, test):
    """CIFAR-10's files from 5 training batches and one test batch, each ``(rows, labels)``
    with rows of 3072 uint8 (R plane, G plane, B plane)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, (data, labels) in enumerate(train, start=1):
        _dump(folder / f"data_batch_{b}", {
            b"batch_label": b"training batch %d of 5" % b, b"labels": list(labels),
            b"data": data, b"filenames": [b"img_%d_%d.png" % (b, i) for i in range(len(data))]})
    data, labels = test
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": list(labels),
                                  b"data": data, b"filenames": [b"t.png"] * len(data)})
    _dump(folder / "batches.meta", {b"num_cases_per_batch": len(train[0][0]), b"num_vis": 3072,
                                    b"label_names": [b"class%d" % c for c in range(10)]})


def _write_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = []
    for split, n in (("train", N_TRAIN_100), ("test", N_TEST)):
        data, fine = _images(rng, n), [int(c) for c in rng.permutation(n) % 100]
        _dump(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": [c // 5 for c in fine],
                               b"data": data})
        out.append((data, np.asarray(fine)))
    _dump(folder / "meta", {b"fine_label_names": [b"fine%d" % c for c in range(100)],
                            b"coarse_label_names": [b"coarse%d" % c for c in range(20)]})
    return out


def write_notebook(path, body: str) -> None:
    """A notebook with a tagged parameters cell (``profile``, ``out_dir``) and one code cell
    ``body``, for the rebuild driver's tests."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile: str = "smoke"  # p\nout_dir: str = "build"  # o')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
