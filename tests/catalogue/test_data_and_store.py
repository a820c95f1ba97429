"""Catalogue of bad data and bad store files that were used silently (issue 26):

- PCam h5 files whose images are not uint8 (N, 96, 96, 3) (float images in [0, 1] were cast
  to uint8 and trained as black images), whose labels are not 0/1, or whose dataset names
  differ: refused before any work, in one line naming the file and what was expected;
- a stored result must not outlive its data: a result (and a checkpoint) made from data
  files that changed since is trained again, with one line saying what changed; a copy of
  the same files elsewhere is the same data; the results-store key does not change;
- a stored result holding NaN or infinite metrics is corrupt: reported and trained again,
  never reused; the command line prints valid JSON only;
- an unreadable claim file (garbage) is stale at once: the grid does not wait 10 minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from equivlib.cli import main
from equivlib.cli.train import json_line
from equivlib.data.identity import data_identity
from equivlib.data.pcam import pcam_files
from equivlib.data.pcam_stand_in import write_pcam_h5
from equivlib.engine import run as run_module
from equivlib.engine.grid import run_grid
from equivlib.experiments.recipes import paper_config
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store.claims import claim_path, read_claim
from equivlib.store.results import load_result, result_path, save_result

TRAIN = "python -m equivlib train: error: "
SIZES = {"train": 16, "valid": 8, "test": 8}
TINY = dict(epochs=1, batch_size=64, sizes=(128, 32, 32), angles=[0.0, 90.0], channels=2)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.rstrip("\n")


def write_pcam(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Small PCam files in torchvision's layout and dtypes under ``root``."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in SIZES.items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = (np.arange(n) % 2).astype(np.uint8)
        write_pcam_h5(root, split, x, y)
        data[split] = (x, y)
    return data


def _rewrite(path: Path, key: str, array: np.ndarray) -> None:
    """Replace the file (a new file renamed into place, as a fixed copy would be)."""
    new = path.with_suffix(".new")
    with h5py.File(new, "w") as f:
        f.create_dataset(key, data=array)
    new.replace(path)


# ------------------------------------------------------------------ PCam files
@pytest.fixture
def pcam_dir(tmp_path) -> Path:
    data = tmp_path / "data"
    write_pcam(data)
    return data


def _x(split: str = "train") -> str:
    return pcam_files(split)[0]


def _y(split: str = "train") -> str:
    return pcam_files(split)[1]


X_EXPECTED = ("expected 'x': uint8 images (N, 96, 96, 3), values 0-255, as in torchvision's "
              "PCam files")
Y_EXPECTED = ("expected 'y': uint8 labels 0 or 1, shape (N, 1, 1, 1), as in torchvision's PCam "
              "files")
PCAM_CASES = [
    pytest.param(_x(), "x", lambda rng: rng.random((16, 96, 96, 3), dtype=np.float32),
                 "'x' holds float32 images of shape (16, 96, 96, 3); float images in [0, 1] "
                 "must be stored as uint8: (x * 255).round().astype('uint8'); " + X_EXPECTED,
                 id="float-images-in-0-1"),
    pytest.param(_x(), "x", lambda rng: rng.integers(0, 256, (16, 3, 96, 96), dtype=np.uint8),
                 "'x' has shape (16, 3, 96, 96); the images are channels-first: store "
                 "x.transpose(0, 2, 3, 1); " + X_EXPECTED,
                 id="channels-first"),
    pytest.param(_x(), "images", lambda rng: rng.integers(0, 256, (16, 96, 96, 3),
                                                          dtype=np.uint8),
                 "no dataset 'x' (it holds 'images'); " + X_EXPECTED, id="other-key"),
    pytest.param(_y(), "y", lambda rng: np.full((16, 1, 1, 1), 2, np.uint8),
                 r"labels must be 0 or 1, found 2 (first at index 0); " + Y_EXPECTED,
                 id="labels-not-0-1"),
    pytest.param(_y(), "y", lambda rng: (np.arange(16) % 2).astype(np.float32),
                 "'y' holds float32 of shape (16,); " + Y_EXPECTED, id="float-labels"),
]


@pytest.mark.parametrize("name, key, make, problem", PCAM_CASES)
def test_bad_pcam_file_is_refused_before_any_work(pcam_dir, tmp_path, monkeypatch, capsys,
                                                  name, key, make, problem):
    """Was: float images cast to uint8 (black), trained and stored as complete, exit 0."""
    _rewrite(pcam_dir / name, key, make(np.random.default_rng(1)))
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    argv = ["train", "--dataset", "pcam", "--model", "z2_resnet20", "--input-size", "96",
            "--data-dir", str(pcam_dir), "--results-dir", "res", "--checkpoint-dir", "ck"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _one_line(captured.err) == f"{TRAIN}pcam file {pcam_dir / name}: {problem}"
    assert _tree(tmp_path) == before  # no result, no checkpoint, no directory


# ------------------------------------------------------------------ data identity
def _pcam_run(seed: int = 0):
    return paper_config("pcam", "z2_resnet20", 96, data={"options": {"limit": 8}},
                        model={"kwargs": {"widths": [2, 2, 2]}},
                        train={"epochs": 1, "batch_size": 8, "seed": seed},
                        test={"angles": [0.0], "error_layers": []})


def _run(config, tmp_path, data_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_module.run(config, results_dir=tmp_path / "res",
                                 checkpoint_dir=tmp_path / "ck", data_dir=data_dir)
    return metrics, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def _no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained although the stored result was current")

    monkeypatch.setattr(run_module, "get_dataset", refuse)


def test_a_result_does_not_outlive_its_data(pcam_dir, tmp_path, monkeypatch):
    """Was: after the data was fixed, the rerun reused the result of the old data."""
    config = _pcam_run()
    first, said = _run(config, tmp_path, pcam_dir)
    assert said == []
    path = result_path(config.to_dict(), tmp_path / "res")
    record = json.loads(path.read_text())
    assert path.stem == config.key() == record["key"]  # the key is the config's alone
    assert record["data"]["dataset"] == "pcam" and record["data"]["count"] == 6
    assert sorted(record["data"]["files"]) == sorted(f for s in SIZES for f in pcam_files(s))

    with monkeypatch.context() as patch:  # same data: reused, nothing loaded
        _no_training(patch)
        assert _run(config, tmp_path, pcam_dir) == (first, [])
        # a copy elsewhere (new times, same bytes) is the same data
        copy = tmp_path / "copy"
        shutil.copytree(pcam_dir, copy)
        assert _run(config, tmp_path, copy) == (first, [])

    labels = pcam_dir / _y()  # fixed labels: same size, other contents
    _rewrite(labels, "y", (1 - np.arange(16) % 2).astype(np.uint8).reshape(-1, 1, 1, 1))
    again, said = _run(config, tmp_path, pcam_dir)
    ckpt = tmp_path / "ck" / "last.pt"
    assert said == [
        f"not reusing {path}: the pcam files it was trained on have changed in {pcam_dir} "
        f"({_y()}: same size, other contents); training the run again",
        f"run {config.key()}: not resuming checkpoint {ckpt}: the pcam files it was trained "
        f"on have changed in {pcam_dir} ({_y()}: same size, other contents); moved it to "
        f"{next((tmp_path / 'ck').glob('last.pt.other-data-*'))} and starting the run from "
        "epoch 0"]
    assert again["history"][0]["epoch"] == 1  # trained from scratch
    assert json.loads(path.read_text())["data"] != record["data"]
    with monkeypatch.context() as patch:  # and now current again
        _no_training(patch)
        assert _run(config, tmp_path, pcam_dir)[1] == []


def test_the_grid_retrains_a_result_of_other_data(pcam_dir, tmp_path, capsys):
    config = _pcam_run()
    run_grid([config], tmp_path / "res", tmp_path / "ck", data_dir=pcam_dir)
    x, _ = write_pcam(tmp_path / "other", seed=5)["train"]
    _rewrite(pcam_dir / _x(), "x", x)  # other images, same size
    done = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_grid([config], tmp_path / "res", tmp_path / "ck", data_dir=pcam_dir,
                 on_done=lambda c, m, reused: done.append(reused))
    assert done == [False]
    stored = json.loads(result_path(config.to_dict(), tmp_path / "res").read_text())["data"]
    assert stored == data_identity("pcam", pcam_dir, limit=8)  # the data it was trained on
    said = {str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)}
    assert (f"not reusing {result_path(config.to_dict(), tmp_path / 'res')}: the pcam files it "
            f"was trained on have changed in {pcam_dir} ({_x()}: same size, other contents); "
            "training the run again") in said


def test_data_that_ships_with_a_package_has_no_identity(tmp_path):
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    run_module.run(config, results_dir=tmp_path / "res", checkpoint_dir=tmp_path / "ck")
    assert "data" not in json.loads(result_path(config.to_dict(), tmp_path / "res").read_text())


# ------------------------------------------------------------------ NaN metrics
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_stored_nan_is_corrupt_and_trained_again(tmp_path, bad):
    """Was: reused; notebook 04 drew no curve and the CLI printed "test_acc_mean": NaN."""
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    path = result_path(config.to_dict(), tmp_path / "res")
    path.parent.mkdir()
    path.write_text(json.dumps({"key": config.key(), "config": config.to_dict(),
                                "metrics": {"test_acc_mean": bad, "test_acc": {"0.0": bad}},
                                "complete": True}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_result(config.to_dict(), tmp_path / "res") is None
    assert [str(w.message) for w in caught] == [
        f"ignoring invalid result file {path}: metric test_acc_mean = {bad} is not a finite "
        "number"]
    metrics = run_module.run(config, results_dir=tmp_path / "res", checkpoint_dir=tmp_path / "ck")
    assert np.isfinite(metrics["test_acc_mean"])
    assert load_result(config.to_dict(), tmp_path / "res")["metrics"] == metrics


def test_non_finite_metrics_are_never_stored(tmp_path):
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY).to_dict()
    with pytest.raises(ValueError, match=r"metric history\[0\]\.valid_acc = nan is not a "
                                         r"finite number; nothing was stored in "):
        save_result(config, {"test_acc_mean": 0.5, "history": [{"valid_acc": float("nan")}]},
                    tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_train_prints_valid_json_after_a_stored_nan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--channels", "2", "--epochs", "1", "--batch-size", "64", "--sizes", "128",
            "32", "32", "--angles", "0", "90", "--results-dir", "res", "--checkpoint-dir", "ck"]
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    path = result_path(config.to_dict(), tmp_path / "res")
    path.parent.mkdir()
    path.write_text(json.dumps({"key": config.key(), "config": config.to_dict(),
                                "metrics": {"test_acc_mean": float("nan")}, "complete": True}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0

    def no_constants(name):
        raise AssertionError(f"not JSON: {name}")

    summary = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert summary["key"] == config.key() and summary["reused"] is False
    assert np.isfinite(summary["test_acc_mean"])


def test_json_line_writes_no_nan():
    line = json_line({"a": float("nan"), "b": [float("inf"), 0.5]})
    assert line == '{"a": null, "b": [null, 0.5]}'


# ------------------------------------------------------------------ claims
@pytest.mark.parametrize("garbage", [b"", b"\x00\xffgarbage", b"[1, 2]", b'{"host": 3}'])
def test_an_unreadable_claim_is_stale_at_once(tmp_path, garbage):
    """Was: the grid waited 10 minutes, "being trained by ? pid ?"."""
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    claim = claim_path(tmp_path / "res", config.key())
    claim.parent.mkdir()
    claim.write_bytes(garbage)
    assert read_claim(tmp_path / "res", config.key())["unreadable"] is True
    held = []
    run_grid([config], tmp_path / "res", tmp_path / "ck", poll_seconds=60,
             on_held=lambda c, holder: held.append(holder))
    assert held == []
    assert load_result(config.to_dict(), tmp_path / "res") is not None
    assert not claim.exists() and re.fullmatch(
        r"[0-9a-f]{16}\.json", " ".join(p.name for p in (tmp_path / "res").iterdir()))
