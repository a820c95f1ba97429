"""python -m equivlib train / grid (and the python -m equivlib.train alias)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from equivlib.cli import build_parser, main
from equivlib.cli.train import config_from_args

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--channels", "2", "--epochs", "1", "--batch-size", "64", "--sizes", "128", "32", "32",
        "--angle-step", "90"]


def _cli(*args, cwd, module="equivlib"):
    env = {"WANDB_MODE": "disabled", "EQUIVLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_train_help_lists_the_options(tmp_path):
    out = _cli("train", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for opt in ("--dataset", "--model", "--input-size", "--regime", "--sigma", "--seed",
                "--epochs", "--data-dir", "--download", "--results-dir", "--checkpoint-dir",
                "--set", "--workers", "--amp", "--channels-last"):
        assert opt in out.stdout


def test_tiny_run_is_stored_and_reused_through_the_alias(tmp_path):
    args = ("--model", "z2_mnist_cnn", "--input-size", "27", "--regime", "biased", "--sigma",
            "20", "--seed", "3", *TINY, "--results-dir", str(tmp_path / "res"),
            "--checkpoint-dir", str(tmp_path / "ck"))
    first = _cli("train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["reused"] is False and len(list((tmp_path / "res").glob("*.json"))) == 1
    second = _cli(*args, cwd=tmp_path, module="equivlib.train")  # the old entry point
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {**summary, "reused": True}


@pytest.mark.parametrize("argv, message", [
    (["--source", "torchvision", "--data-dir", "{tmp}/none"], "MNIST not found"),
    (["--dataset", "cifar10", "--model", "p4_resnet44", "--input-size", "33",
      "--data-dir", "{tmp}/none"], "cifar10 not found"),
    (["--dataset", "cifar10"], "--model and --input-size are required"),
    (["--dataset", "nope", "--model", "p4_resnet44", "--input-size", "33"], "unknown dataset"),
    (["--epochs", "0"], "--epochs 0: expected an int >= 1"),
    (["--lr", "inf"], "--lr inf: expected a finite number > 0"),
    (["--batch-size", "-1"], "--batch-size -1: expected an int >= 1"),
    (["--set", "test.flipz=true"], "unknown key"),
    (["--set", "nonsense"], "SECTION.KEY=VALUE"),
    (["--device", "gpu0"], "device"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["train", *argv, "--results-dir", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m equivlib train: error:") and message in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_cifar_paper_protocol_from_the_command_line():
    args = build_parser().parse_args(
        ["train", "--dataset", "cifar10", "--model", "p4_resnet44", "--input-size", "33",
         "--quarter-turns", "--fraction", "0.1", "--set", "test.flips=true"])
    c = config_from_args(args)
    assert (c.optim.name, c.optim.lr, c.optim.weight_decay) == ("adam", 1e-3, 1e-5)
    assert c.schedule.name == "onecycle" and c.schedule.unit == "batch"
    assert (c.train.epochs, c.train.batch_size, c.train.select) == (200, 256, "last")
    assert c.test.angles == [0.0, 90.0, 180.0, 270.0] and c.test.flips
    assert c.data.protocol == "cifar" and c.data.quarter_turns
    assert c.data.options == {"fraction": 0.1}


def test_imagenet_lr_follows_the_global_batch():
    args = build_parser().parse_args(
        ["train", "--dataset", "imagenet", "--model", "p4_resnet18", "--input-size", "225",
         "--batch-size", "512"])
    c = config_from_args(args)
    assert c.optim.lr == pytest.approx(0.2) and c.schedule.name == "warmup_multistep"
    assert c.test.topk == [1, 5]


def test_grid_lists_the_notebook_runs(tmp_path, capsys):
    for part in ("params", "notebooks"):
        shutil.copytree(ROOT / part, tmp_path / part)
    assert main(["grid", "--notebook", "04_rotmnist_rotation", "--profile", "smoke",
                 "--root", str(tmp_path), "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 16 and all(len(line.split()[0]) == 16 for line in lines)
    assert main(["grid", "--notebook", "99_none", "--root", str(tmp_path)]) == 2


def test_grid_list_of_the_imagenet_stand_in_writes_nothing(tmp_path, capsys):
    """--list gives the keys the run would use (the stand-in's record counts are in the
    configs) without writing the TFRecord shards."""
    from equivlib.cli.grid import notebook_defaults, notebook_grid

    for part in ("params", "notebooks"):
        shutil.copytree(ROOT / part, tmp_path / part)
    assert main(["grid", "--notebook", "08_imagenet", "--profile", "smoke",
                 "--root", str(tmp_path), "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(listed) == 4
    assert not (tmp_path / "build").exists() and not list(tmp_path.rglob("*-of-*"))
    # the keys are those of the grid that writes the shards (the same manifest)
    params = notebook_defaults(tmp_path / "notebooks" / "08_imagenet.ipynb")
    params["stand_in_dir"] = str(tmp_path / "shards")
    unwritten = [c.key() for c in notebook_grid("08_imagenet", params, write_data=False)[0]]
    assert not (tmp_path / "shards").exists()
    written = [c.key() for c in notebook_grid("08_imagenet", params)[0]]
    assert list((tmp_path / "shards").glob("train-*-of-*")) and written == unwritten


def test_set_reads_exponent_numbers_as_numbers():
    """YAML 1.1 reads 1e-3 (no dot) as a string; --set takes it as the number it is."""
    args = build_parser().parse_args(["train", "--set", "optim.lr=1e-3",
                                      "--set", "optim.name=sgd"])
    config = config_from_args(args)
    assert config.optim.lr == 1e-3 and config.optim.name == "sgd"


def test_a_diverging_run_is_one_line_and_stores_nothing(tmp_path):
    out = _cli("train", *TINY, "--set", "optim.name=sgd", "--set", "optim.lr=1e30",
               "--set", "optim.momentum=0", "--results-dir", str(tmp_path / "r"),
               "--checkpoint-dir", str(tmp_path / "ck"), cwd=tmp_path)
    assert out.returncode == 2
    assert "training loss became nan in epoch 1" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "r").exists()


def test_set_replaces_one_nested_key_and_keeps_the_others():
    args = build_parser().parse_args(["train", "--set", "schedule.kwargs.gamma=0.25",
                                      "--set", "model.kwargs.channels=4"])
    config = config_from_args(args)
    assert config.schedule.kwargs == {"step_size": 10, "gamma": 0.25}
    assert config.model.kwargs == {"dropout": 0.3, "channels": 4}


@pytest.mark.parametrize("notebook, dataset", [("07_pcam", "pcam"), ("08_imagenet", "ImageNet")])
def test_grid_of_the_paper_profile_without_data_is_one_error(tmp_path, capsys, monkeypatch,
                                                              notebook, dataset):
    """PCam / ImageNet missing under DATA_DIR: one line naming the dataset and where it was
    looked for, exit 2, before any run is claimed or any file written."""
    for part in ("params", "notebooks"):
        shutil.copytree(ROOT / part, tmp_path / part)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "no-data"))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["grid", "--notebook", notebook, "--profile", "paper", "--root",
                 str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"error: {dataset} not found in {tmp_path / 'no-data'}" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("flags, numbers, key", [
    ([], {}, "f822ef5eedf249e2"),
    (["--epochs", "3", "--lr", "0.5"], {"epochs": 3, "lr": 0.5}, "126489c472a6cd27"),
    (["--batch-size", "64", "--weight-decay", "0"], {"batch_size": 64, "weight_decay": 0.0},
     "ada2765632e1ff97"),
])
def test_mnist_numbers_not_given_are_rotmnist_configs_defaults(flags, numbers, key):
    """epochs, batch size, lr and weight decay left out: rotmnist_config's own defaults (the
    one place that spells them), the same config and results-store key as before the CLI
    stopped repeating them (keys pinned from that version)."""
    from equivlib.experiments.rotmnist import rotmnist_config

    config = config_from_args(build_parser().parse_args(["train", *flags]))
    want = rotmnist_config("p4_mnist_cnn", 28, sigma=20.0, angles=[10.0 * i for i in range(36)],
                           **numbers)
    assert config.to_dict() == want.to_dict() and config.key() == want.key() == key
