"""One run on the engine: bit-identical resume (MNIST and CIFAR formats), the RNG restore
that makes it so, checkpoints loadable with weights_only, the results store, W&B offline."""

import os
import pickle

import numpy as np
import pytest
import torch

from equivlib.data.base import ArrayDataset, DatasetInfo, DatasetSplits
from equivlib.data.mnist import load_raw, make_splits
from equivlib.engine import checkpoint as checkpoint_module
from equivlib.engine.checkpoint import load_checkpoint
from equivlib.engine.config import RunConfig
from equivlib.engine.run import NonFiniteLoss, StopTraining, progress_enabled, run
from equivlib.experiments.recipes import paper_config
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store.results import config_hash, load_result
from tests.fakes import _write_cifar10

MNIST = dict(epochs=3, batch_size=64, sizes=(256, 64, 64), angles=[0.0, 90.0, 45.0], seed=3,
             channels=2)


@pytest.fixture(autouse=True)
def _env(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


@pytest.fixture(scope="module")
def mnist_data():
    (x, y), _ = load_raw("embedded")
    return make_splits(x, y, sizes=(256, 64, 64), seed=0)


@pytest.fixture(scope="module")
def cifar_data(tmp_path_factory):
    """A CIFAR-format dataset: real pickle batches written here, read by the cifar source
    (torchvision's MD5 check patched to accept the small files, nothing else)."""
    import torchvision.datasets.cifar as tv_cifar

    from equivlib.data.registry import get_dataset

    root = tmp_path_factory.mktemp("cifar")
    _write_cifar10(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
        return get_dataset("cifar10", data_dir=root)


def _cifar_config(**train):
    return paper_config("cifar10", "p4_resnet44", 33,
                        model={"kwargs": {"widths": [2, 2, 2]}},
                        data={"quarter_turns": True},
                        train={"epochs": 3, "batch_size": 16, "seed": 1, **train})


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stop_and_resume(config, data, tmp_path, stop):
    with pytest.raises(StopTraining):
        run(config, data, checkpoint_dir=tmp_path / "cut", stop_after_epoch=stop)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == stop
    torch.manual_seed(1234)  # disturb the global RNGs: the resume must restore them
    np.random.seed(5)
    return run(config, data, checkpoint_dir=tmp_path / "cut")


@pytest.mark.parametrize("regime", ["biased", "uniform"])
def test_mnist_resume_is_bit_identical(tmp_path, mnist_data, regime):
    config = rotmnist_config("p4_mnist_cnn", 28, regime=regime, sigma=20.0, dropout=0.3,
                             **MNIST)
    full = run(config, mnist_data, checkpoint_dir=tmp_path / "full")
    resumed = _stop_and_resume(config, mnist_data, tmp_path, stop=1)
    t_full, t_resumed = full.pop("timing"), resumed.pop("timing")
    assert resumed == full
    assert t_full["train_images"] == t_resumed["train_images"] == 3 * 256
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert _same_state(a["model"], b["model"]) and _same_state(a["best_model"], b["best_model"])


def test_resume_without_the_rng_restore_differs(tmp_path, mnist_data, monkeypatch):
    """The evidence that the resume test can fail: dropout draws from the global RNG, so
    skipping the restore of the saved RNG states changes the resumed run."""
    config = rotmnist_config("p4_mnist_cnn", 28, dropout=0.3, **MNIST)
    full = run(config, mnist_data, checkpoint_dir=tmp_path / "full")
    monkeypatch.setattr("equivlib.engine.run.set_rng_state", lambda state: None)
    resumed = _stop_and_resume(config, mnist_data, tmp_path, stop=1)
    assert resumed["history"][1:] != full["history"][1:]
    assert checkpoint_module.set_rng_state is not None  # the real one is untouched


@pytest.mark.parametrize("stop", [1, 2])
def test_cifar_format_resume_is_bit_identical(tmp_path, cifar_data, stop):
    config = _cifar_config()
    full = run(config, cifar_data, checkpoint_dir=tmp_path / "full")
    resumed = _stop_and_resume(config, cifar_data, tmp_path, stop)
    full.pop("timing"), resumed.pop("timing")
    assert resumed == full
    assert set(full) >= {"seen", "unseen", "rot0", "rot90", "rot180", "rot270"}
    assert full["unseen"] == pytest.approx(
        sum(full[f"rot{q}"] for q in (0, 90, 180, 270)) / 4)
    assert full["best_valid_acc"] is None and full["best_epoch"] == 3  # last epoch kept


def test_exact_model_gives_identical_quarter_turn_accuracies(tmp_path, cifar_data):
    """P4 ResNet-44 at 33 is exact: its predictions at the four quarter turns agree."""
    exact = run(_cifar_config(epochs=1), cifar_data, checkpoint_dir=tmp_path / "a")
    assert len({exact[f"rot{q}"] for q in (0, 90, 180, 270)}) == 1


def test_channels_last_run_of_a_group_model_matches_nchw(tmp_path, cifar_data):
    """The ``channels_last`` run option on a P4 ResNet (5-D weights): it trains, it is still
    exact, and it computes the NCHW run's numbers up to float32 summation order."""
    config = _cifar_config(epochs=1)
    plain = run(config, cifar_data, checkpoint_dir=tmp_path / "a")
    last = run(config, cifar_data, checkpoint_dir=tmp_path / "b", channels_last=True)
    assert len({last[f"rot{q}"] for q in (0, 90, 180, 270)}) == 1
    assert last["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"],
                                                             rel=1e-4)


def test_a_diverging_run_stops_with_a_clear_error_and_stores_nothing(tmp_path, mnist_data):
    config = rotmnist_config("p4_mnist_cnn", 28, **MNIST).replace(
        optim={"name": "sgd", "lr": 1e30, "momentum": 0.0})
    with pytest.raises(NonFiniteLoss, match=r"loss became (nan|inf).*Lower the learning rate"):
        run(config, mnist_data, checkpoint_dir=tmp_path / "ck", results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())
    assert not (tmp_path / "ck" / "last.pt").exists()  # the diverged epoch is not saved


def test_checkpoint_contents_and_weights_only(tmp_path, mnist_data):
    config = rotmnist_config("p4_mnist_cnn", 28, **{**MNIST, "epochs": 1})
    metrics = run(config, mnist_data, checkpoint_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "sampler", "best_model",
            "best_valid_acc", "epoch", "history", "key"} <= ck.keys()
    assert ck["key"] == config.key() and ck["sampler"] == {"seed": 3, "next_epoch": 1}
    assert set(metrics["test_acc"]) == {"0.0", "90.0", "45.0"}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("content", [b"", b"garbage", "truncated"])
def test_an_unreadable_checkpoint_names_its_file(tmp_path, content):
    path = tmp_path / "last.pt"
    checkpoint_module.save_checkpoint(path, {"key": "k", "epoch": 1, "w": torch.ones(64)})
    good = path.read_bytes()
    path.write_bytes(good[:len(good) // 2] if content == "truncated" else content)
    with pytest.raises(checkpoint_module.CorruptCheckpoint) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "delete it or move it aside" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).path == path
    moved = checkpoint_module.set_aside(path)
    assert not path.exists() and moved.name.startswith("last.pt.corrupt-")
    path.write_bytes(b"again")
    assert checkpoint_module.set_aside(path) != moved  # never over an earlier one


def test_checkpoint_of_another_config_is_refused(tmp_path, mnist_data):
    config = rotmnist_config("p4_mnist_cnn", 28, **{**MNIST, "epochs": 1})
    run(config, mnist_data, checkpoint_dir=tmp_path)
    other = config.replace(train={"seed": 4})
    with pytest.raises(ValueError, match="another config"):
        run(other, mnist_data, checkpoint_dir=tmp_path)


def test_results_store_reuse(tmp_path, mnist_data):
    config = rotmnist_config("p4_mnist_cnn", 28, **{**MNIST, "epochs": 1})
    first = run(config, mnist_data, checkpoint_dir=tmp_path / "ck", results_dir=tmp_path / "r")
    assert load_result(config.to_dict(), tmp_path / "r")["metrics"] == first
    again = run(config, mnist_data, checkpoint_dir=tmp_path / "other",
                results_dir=tmp_path / "r")
    assert again == first and not (tmp_path / "other").exists()


def test_last_epoch_selection_and_top5(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 9, 9, 3), dtype=np.uint8)
    pool = ArrayDataset(images, np.arange(60) % 6)
    info = DatasetInfo("mnist", 6, 3, (0.5,) * 3, (0.25,) * 3, 9)
    data = DatasetSplits(pool.subset(range(40)), None, pool.subset(range(40, 60)), info)
    config = RunConfig.from_dict({
        "data": {"dataset": "mnist", "input_size": 9},
        "model": {"name": "z2_mnist_cnn", "kwargs": {"channels": 2}},
        "train": {"epochs": 2, "batch_size": 10, "select": "last"},
        "test": {"angles": [0.0], "topk": [1, 5], "flips": True,
                 "error_layers": ["body.0", "output"]}})
    m = run(config, data, checkpoint_dir=tmp_path)
    assert m["test_top5"]["0.0"] >= m["test_acc"]["0.0"]
    assert set(m["test_acc_flipped"]) == {"0.0"}
    assert set(m["equivariance_error"]) == {"body.0", "output"}
    assert all(v > 1e-3 for v in m["equivariance_error"].values())  # a Z2 CNN: not invariant
    with pytest.raises(ValueError, match="validation split"):
        run(config.replace(train={"select": "best_valid"}), data, checkpoint_dir=tmp_path / "b")


def test_progress_switch(monkeypatch):
    import sys
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "1")
    assert progress_enabled()
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")
    assert not progress_enabled()


def test_wandb_offline_logs_beside_the_checkpoint(tmp_path, mnist_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    config = rotmnist_config("p4_mnist_cnn", 28, **{**MNIST, "epochs": 1})
    run(config, mnist_data, checkpoint_dir=tmp_path / "ck")
    runs = list((tmp_path / "ck" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_revised_architecture_gets_a_new_results_key():
    """The ResNets' revision (BN after the shortcut) is part of the config and its key; models
    never revised keep the key they had (no revision entry)."""
    resnet = RunConfig.from_dict({"data": {"dataset": "mnist", "input_size": 33},
                                  "model": {"name": "p4_resnet20"}})
    assert resnet.to_dict()["model"]["revision"] == 1
    assert resnet.key() != config_hash({**resnet.to_dict(), "model": {
        "name": "p4_resnet20", "kwargs": {}}})
    cnn = RunConfig.from_dict({"model": {"name": "p4_mnist_cnn", "revision": 7}})
    assert "revision" not in cnn.to_dict()["model"]  # set from the registry, not the user
