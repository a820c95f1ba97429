import json
import subprocess
import sys

import pytest
import torch

from equivlib.data import load_raw, make_splits
from equivlib.results import load_result
from equivlib.train import StopTraining, evaluate, load_checkpoint, make_config, run

TINY = dict(model="p4_mnist_cnn", model_kwargs={"channels": 2}, input_size=28, epochs=3,
            batch_size=64, sizes=[256, 64, 64], test_angles=[0.0, 90.0, 45.0], seed=3)


@pytest.fixture(autouse=True)
def _env(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


@pytest.fixture(scope="module")
def tiny_data():
    (x, y), _ = load_raw("embedded")
    return make_splits(x, y, 28, sizes=(256, 64, 64), seed=0)


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("regime", ["biased", "uniform"])
def test_resume_is_bit_identical(tmp_path, tiny_data, regime):
    config = make_config(**TINY, regime=regime)
    full = run(config, tiny_data, checkpoint_dir=tmp_path / "full")
    with pytest.raises(StopTraining):
        run(config, tiny_data, checkpoint_dir=tmp_path / "cut", stop_after_epoch=1)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    torch.manual_seed(1234)  # disturb global RNGs: resume must restore them
    resumed = run(config, tiny_data, checkpoint_dir=tmp_path / "cut")
    t_full, t_resumed = full.pop("timing"), resumed.pop("timing")
    assert resumed == full
    assert t_full["train_images"] == t_resumed["train_images"] == 3 * 256
    assert t_full["train_seconds"] > 0 and t_resumed["train_seconds"] > 0
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert _same_state(a["model"], b["model"]) and _same_state(a["best_model"], b["best_model"])
    assert len(full["history"]) == 3


def test_checkpoint_loads_weights_only_and_evaluate(tmp_path, tiny_data):
    config = make_config(**{**TINY, "epochs": 1})
    metrics = run(config, tiny_data, checkpoint_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "best_model", "best_valid_acc", "epoch",
            "history"} <= ck.keys()
    assert set(metrics["test_acc"]) == {"0.0", "90.0", "45.0"}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    from equivlib.models import get_model
    model = get_model("p4_mnist_cnn", channels=2)
    model.load_state_dict(ck["best_model"])
    acc = evaluate(model, tiny_data, [0.0, 90.0], split="test")
    assert acc[0.0] == metrics["test_acc"]["0.0"]


def test_results_store_reuse(tmp_path, tiny_data):
    config = make_config(**{**TINY, "epochs": 1})
    first = run(config, tiny_data, checkpoint_dir=tmp_path / "ck", results_dir=tmp_path / "res")
    assert load_result(config, tmp_path / "res")["metrics"] == first
    again = run(config, tiny_data, checkpoint_dir=tmp_path / "other",
                results_dir=tmp_path / "res")
    assert again == first and not (tmp_path / "other").exists()


def test_bad_config_raises_before_work():
    with pytest.raises(ValueError, match="regime"):
        make_config(regime="sideways")
    with pytest.raises(ValueError, match="input_size"):
        make_config(input_size=30)
    with pytest.raises(ValueError, match="unknown config"):
        make_config(lr=0.1)


def _cli(*args, cwd):
    env = {"WANDB_MODE": "disabled", "EQUIVLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "equivlib.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_help(tmp_path):
    out = _cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for opt in ("--model", "--input-size", "--regime", "--sigma", "--seed", "--epochs",
                "--data-dir", "--results-dir", "--checkpoint-dir"):
        assert opt in out.stdout


def test_cli_tiny_run_and_reuse(tmp_path):
    args = ("--model", "z2_mnist_cnn", "--channels", "2", "--input-size", "27", "--regime",
            "biased", "--sigma", "20", "--seed", "3", "--epochs", "1", "--batch-size", "64",
            "--sizes", "128", "32", "32", "--angle-step", "90",
            "--results-dir", str(tmp_path / "res"), "--checkpoint-dir", str(tmp_path / "ck"))
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["reused"] is False and len(list((tmp_path / "res").glob("*.json"))) == 1
    second = _cli(*args, cwd=tmp_path)
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {**summary, "reused": True}


def test_cli_missing_data_is_clear(tmp_path):
    out = _cli("--source", "torchvision", "--data-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert out.returncode == 2 and "DatasetMissingError" in out.stderr
    assert "Traceback" not in out.stderr and "download=True" in out.stderr
    assert not (tmp_path / "results").exists()


def test_progress_switch(monkeypatch):
    from equivlib import train
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "1")
    assert train.progress_enabled()
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")
    assert not train.progress_enabled()


def test_wandb_offline_logs_beside_the_checkpoint(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    config = make_config(**{**TINY, "epochs": 1})
    run(config, tiny_data, checkpoint_dir=tmp_path / "ck")
    runs = list((tmp_path / "ck" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
