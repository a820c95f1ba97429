"""Catalogue of bad inputs to the command line (``python -m equivlib train`` / ``check`` /
``grid``) and the Python API: each gives one line that says what was wrong and what is
expected, a non-zero exit (2 for bad input, 1 for anything unexpected) and writes nothing:
no result file, no checkpoint, no directory. Add a case here for every bad input found."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from equivlib import LiftingConv2d, assert_equivariant, equivariance_error
from equivlib.cli import main
from equivlib.data.mnist import load_mnist, load_raw, make_splits
from equivlib.data.registry import get_dataset
from equivlib.engine import checkpoint as checkpoint_module
from equivlib.engine import run as run_module
from equivlib.engine.config import RunConfig
from equivlib.engine.run import StopTraining, run
from equivlib.experiments.rotmnist import configs_from_params, rotmnist_config
from equivlib.store import writable as writable_module

TRAIN = "python -m equivlib train: error: "
TINY = dict(epochs=2, batch_size=64, sizes=(128, 32, 32), angles=[0.0, 90.0], channels=2)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory holding one regular file, ``afile`` (a path that cannot
    be a directory); default ``results/`` and ``checkpoints/`` would land here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.rstrip("\n")


# ------------------------------------------------------------------ train: bad flags
TRAIN_CASES = [
    (["--epochs", "0"], r"--epochs 0: expected an int >= 1$"),
    (["--batch-size", "-1"], r"--batch-size -1: expected an int >= 1$"),
    (["--lr", "inf"], r"--lr inf: expected a finite number > 0$"),
    (["--lr", "0"], r"--lr 0: expected a finite number > 0$"),
    (["--mu", "nan"], r"--mu nan: expected a finite angle in degrees$"),
    (["--regime", "biased", "--sigma", "-5"], r"--sigma -5: expected a finite number of "
                                                r"degrees >= 0$"),
    (["--angle-step", "-10"], r"--angle-step -10: expected a finite step in degrees in "
                              r"\(0, 360\]$"),
    (["--angles", "0", "inf"], r"--angles 0 inf: expected finite angles in degrees$"),
    (["--sizes", "64", "-32", "32"], r"--sizes 64 -32 32: expected 3 positive ints \(train, "
                                     r"valid, test images\)$"),
    (["--sizes", "64", "0", "32"], r"--sizes 64 0 32: expected 3 positive ints"),
    (["--sizes", "4000", "1000", "1000"], r"mnist sizes \[4000, 1000, 1000\] need 6000 images "
                                          r"but the embedded source has 5000; use smaller sizes"),
    (["--split-seed", "-1"], r"--split-seed -1: expected an int >= 0$"),
    (["--dropout", "1.5"], r"--dropout 1.5: expected a probability in \[0, 1\)$"),
    (["--workers", "-1"], r"--workers -1: expected an int >= 0$"),
    (["--lr-step", "0"], r"--lr-step 0: expected an int >= 1$"),
    (["--input-size", "30"], r"RotMNIST input_size must be one of"),
    (["--model", "p4_resnet44"], r"--model p4_resnet44 cannot run with --dataset mnist: the "
                                 r"RotMNIST protocol trains a CNN with dropout.*; models for "
                                 r"mnist: p4_mnist_cnn, z2_mnist_cnn$"),
    (["--model", "p4_single_layer"], r"--model p4_single_layer cannot run with --dataset "
                                     r"mnist: it takes 1-channel images"),
    (["--dataset", "cifar10", "--model", "p4_single_layer", "--input-size", "33"],
     r"--model p4_single_layer cannot run with --dataset cifar10: it takes 1-channel images "
     r"and every dataset gives 3; models for cifar10: .*p4_resnet44"),
    (["--dataset", "cifar10", "--model", "z2_mnist_cnn", "--input-size", "33", "--widths", "4",
      "4", "4"], r"--model z2_mnist_cnn has no option widths \(from --widths\); it takes: "),
    (["--set", "model.kwargs.channels=0"], r"--model p4_mnist_cnn cannot be built with "
                                           r"dropout=0.3, channels=0: out_channels must be a "
                                           r"positive int, got 0$"),
    (["--model", "nope"], r"model.name = 'nope': expected one of "),
    (["--dataset", "nope", "--model", "p4_resnet44", "--input-size", "33"],
     r"unknown dataset 'nope'.*known: .*mnist"),
    (["--dataset", "cifar10"], r"--model and --input-size are required for --dataset cifar10"),
    (["--set", "test.flipz=true"], r"unknown key\(s\) \['flipz'\] in config section 'test'"),
    (["--set", "nonsense"], r"expected SECTION.KEY=VALUE"),
    (["--device", "gpu0"], r"bad device 'gpu0'"),
    (["--results-dir", "afile"], r"--results-dir afile exists and is not a directory; pick a "
                                 r"directory$"),
    (["--results-dir", "afile/sub"], r"--results-dir afile/sub cannot be created: afile is a "
                                     r"file, not a directory; pick another path$"),
    (["--checkpoint-dir", "afile/ck"], r"--checkpoint-dir \(checkpoints and W&B files\) "
                                       r"afile/ck cannot be created: afile is a file"),
]


@pytest.mark.parametrize("argv, message", TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_bad_input(workdir, capsys, argv, message):
    before = _tree(workdir)
    assert main(["train", *argv]) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith(TRAIN) and re.search(message, line[len(TRAIN):]), line
    assert captured.out == "" and _tree(workdir) == before


# ------------------------------------------------------------------ train: unwritable dirs
@pytest.fixture
def read_only(workdir, monkeypatch) -> Path:
    """A directory ``ro`` whose writes fail with EACCES (simulated: tests may run as root,
    which ignores permission bits)."""
    ro = workdir / "ro"
    ro.mkdir()
    mkstemp = writable_module.tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(ro.resolve()):
            raise PermissionError(13, "Permission denied")
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(writable_module.tempfile, "mkstemp", refuse)
    return ro


@pytest.mark.parametrize("flag, shown", [("--results-dir", "--results-dir"),
                                         ("--checkpoint-dir", "--checkpoint-dir")])
def test_train_unwritable_directory_found_before_any_work(read_only, capsys, monkeypatch,
                                                          flag, shown):
    monkeypatch.setattr(run_module, "get_dataset", _no_data)
    before = _tree(read_only.parent)
    assert main(["train", flag, "ro/sub"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert re.fullmatch(rf"{re.escape(TRAIN + shown)}.* ro/sub is not writable \(Permission "
                        r"denied in ro\); pick a writable directory", line), line
    assert _tree(read_only.parent) == before


def test_default_checkpoint_dir_is_probed_too(read_only, capsys, monkeypatch):
    monkeypatch.chdir(read_only)  # checkpoints/<key> would be created here
    assert main(["train", "--results-dir", "../res"]) == 2
    assert "checkpoints/" in _one_line(capsys.readouterr().err)
    assert _tree(read_only.parent) == {"afile", "ro"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes through permission bits")
def test_train_read_only_directory_for_real(workdir, capsys):
    (workdir / "ro").mkdir(mode=0o500)
    assert main(["train", "--results-dir", "ro/res"]) == 2
    assert "is not writable" in _one_line(capsys.readouterr().err)


def _no_data(*args, **kwargs):
    raise AssertionError("data loaded before the input was checked")


# ------------------------------------------------------------------ train: unexpected errors
@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_unexpected_error_is_one_line_or_the_traceback(workdir, capsys, monkeypatch, debug):
    def boom(*args, **kwargs):
        raise RuntimeError("something broke\n  on a second line")

    monkeypatch.setattr(run_module, "run", boom)
    argv = ["train", "--results-dir", "res", "--checkpoint-dir", "ck", *debug]
    if debug:
        with pytest.raises(RuntimeError, match="something broke"):
            main(argv)
        with pytest.raises(RuntimeError, match="something broke"):
            main(["--debug", *argv[:-1]])  # before the command as well
        return
    assert main(argv) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"{TRAIN}RuntimeError: something broke on a second line (run with --debug for the "
        "traceback)")
    assert _tree(workdir) == {"afile"}


def test_debug_shows_the_traceback_of_bad_input_too(workdir):
    from equivlib.cli import CliError

    with pytest.raises(CliError, match="--epochs 0"):
        main(["train", "--epochs", "0", "--debug"])


def test_help_offers_only_models_that_fit(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    mnist = re.search(r"for --dataset mnist: (.*?) \(default p4_mnist_cnn\)", text).group(1)
    assert mnist.split(", ") == ["p4_mnist_cnn", "z2_mnist_cnn"]
    other = re.search(r"for the other datasets \(required\): (.*?) \(default", text).group(1)
    assert "p4_resnet44" in other and "p4_single_layer" not in other


# ------------------------------------------------------------------ check / grid
OTHER_CASES = [
    (["check", "no_such_model", "--size", "32"], 2, r"unknown model 'no_such_model': use a "
                                                    r"registry name"),
    (["check", "torchvision.models:resnet18", "--size", "0"], 2, r"--size must be positive"),
    (["check", "torchvision.models:resnet18", "--size", "32", "--group", "so3"], 2,
     r"unknown group"),
    (["grid", "--notebook", "99_none"], 2, r"no grid for notebook '99_none'; known: "),
    (["grid", "--notebook", "04_rotmnist_rotation"], 2, r"not found \(run from the project "
                                                        r"root or pass --root\)"),
]


@pytest.mark.parametrize("argv, code, message", OTHER_CASES,
                         ids=[" ".join(a) for a, _, _ in OTHER_CASES])
def test_other_commands_bad_input(workdir, capsys, argv, code, message):
    assert main(argv) == code
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("python -m equivlib") and re.search(message, line), line
    assert _tree(workdir) == {"afile"}


# ------------------------------------------------------------------ Python API
def _lift() -> torch.nn.Module:
    return LiftingConv2d("p4", 3, 4, 3, stride=2, padding=1).double()


X33 = torch.randn(2, 3, 33, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
API_CASES = [
    (lambda: equivariance_error(_lift(), X33, "p4", output="image"),
     r"output='image' but fn returned shape \(8, 4, 4, 17, 17\), which is not \(B, C, H, W\) "
     r"with H == W; it looks like output='group' \(or leave output unset to infer it\)"),
    (lambda: assert_equivariant(_lift(), X33, "p4", output="invariant"),
     r"output='invariant' but fn returned shape .* it looks like output='group'"),
    (lambda: equivariance_error(lambda t: t.sum(), X33, "p4"),
     r"cannot tell how p4 acts on the output of fn, shape \(\): pass output='image'"),
    (lambda: load_mnist(28, sizes=(64, -32, 32)),
     r"mnist sizes must be 3 positive ints \(train, valid, test\), got \(64, -32, 32\)"),
    (lambda: get_dataset("mnist", sizes="643"), r"3 positive ints .* got '643'"),
    (lambda: make_splits(*load_raw("embedded")[0], sizes=(64, 0, 32)), r"3 positive ints"),
    (lambda: configs_from_params({"models": "p4_mnist_cnn@28", "regimes": "none", "seeds": 1,
                                  "epochs": 1, "batch_size": 64, "lr": 0.01,
                                  "weight_decay": 0.0, "lr_step": 1, "dropout": 0.3,
                                  "sizes": "643", "angle_step": 90, "source": "embedded"}),
     r"sizes must be 3 numbers \(train, valid, test\), got \[643\]"),
    (lambda: RunConfig.from_dict({"train": {"epochs": 0}}),
     r"config train.epochs = 0: expected an int >= 1"),
    (lambda: RunConfig.from_dict({"optim": {"lr": math.inf}}),
     r"config optim.lr = inf: expected a finite number > 0$"),
    (lambda: RunConfig.from_dict({"data": {"mu": math.nan}}),
     r"config data.mu = nan: expected a finite number$"),
    (lambda: RunConfig.from_dict({"test": {"angles": [0.0, math.nan]}}),
     r"config test.angles = nan: expected a finite number$"),
]


@pytest.mark.parametrize("call, message", API_CASES, ids=range(len(API_CASES)))
def test_api_bad_input(call, message):
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and re.search(message, text), text


def test_default_output_kind_cannot_mislead():
    """An exact lifting layer measures float rounding with the defaults (was ~1.3)."""
    assert equivariance_error(_lift(), X33, "p4").max() < 1e-12


def test_rotmnist_config_refuses_a_sizes_string():
    with pytest.raises(ValueError, match="got the string '643'"):
        rotmnist_config("p4_mnist_cnn", 28, sizes="643")


@pytest.mark.parametrize("where", ["results_dir", "checkpoint_dir"])
def test_api_run_refuses_an_unusable_directory_before_loading_data(workdir, monkeypatch, where):
    monkeypatch.setattr(run_module, "get_dataset", _no_data)
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    dirs = {"results_dir": workdir / "res", "checkpoint_dir": workdir / "ck",
            where: workdir / "afile" / "sub"}
    with pytest.raises(ValueError, match=r"afile/sub cannot be created: .*afile is a file"):
        run(config, **dirs)
    assert _tree(workdir) == {"afile"}


def test_api_run_refuses_bad_split_sizes_before_work(workdir, monkeypatch):
    monkeypatch.setattr(run_module, "get_dataset", _no_data)
    config = RunConfig.from_dict({"data": {"options": {"sizes": [64, -32, 32]}}})
    with pytest.raises(ValueError, match=r"mnist sizes must be 3 positive ints"):
        run(config, results_dir=workdir / "res", checkpoint_dir=workdir / "ck")
    assert _tree(workdir) == {"afile"}


# ------------------------------------------------------------------ another run's checkpoint
@pytest.fixture
def foreign_checkpoint(workdir) -> Path:
    """``ck/`` holding the checkpoint of a stopped Z2 run (not the P4 run asked for)."""
    with pytest.raises(StopTraining):
        run(rotmnist_config("z2_mnist_cnn", 28, **TINY), checkpoint_dir=workdir / "ck",
            stop_after_epoch=1)
    return workdir / "ck"


def test_api_run_refuses_another_runs_checkpoint_before_loading_data(foreign_checkpoint,
                                                                      workdir, monkeypatch):
    monkeypatch.setattr(run_module, "get_dataset", _no_data)
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    before = (foreign_checkpoint / "last.pt").read_bytes()
    with pytest.raises(run_module.ForeignCheckpoint,
                       match=rf"belongs to another config \(\w+, not {config.key()}\); delete "
                             "it or pick another directory"):
        run(config, checkpoint_dir=foreign_checkpoint, results_dir=workdir / "res")
    assert (foreign_checkpoint / "last.pt").read_bytes() == before
    assert not (workdir / "res").exists()


def test_train_refuses_another_runs_checkpoint_as_bad_input(foreign_checkpoint, workdir,
                                                            capsys):
    argv = ["train", "--channels", "2", "--epochs", "2", "--sizes", "128", "32", "32",
            "--checkpoint-dir", str(foreign_checkpoint), "--results-dir", "res"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(rf"{TRAIN}checkpoint .*last\.pt belongs to another config .*; delete "
                        "it or pick another directory", _one_line(captured.err))
    assert not (workdir / "res").exists()


# ------------------------------------------------------------------ corrupt checkpoint
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint_is_moved_aside_and_the_run_restarts(workdir, damage):
    """A truncated (killed mid-copy, disk full) or garbage ``last.pt`` never costs the run:
    it is moved to ``last.pt.corrupt-<timestamp>`` with a warning naming it, and the run
    trains from epoch 0 to the end."""
    config = rotmnist_config("p4_mnist_cnn", 28, **TINY)
    ck = workdir / "ck"
    if damage == "truncated":
        with pytest.raises(StopTraining):
            run(config, checkpoint_dir=ck, stop_after_epoch=1)
        good = (ck / "last.pt").read_bytes()
        (ck / "last.pt").write_bytes(good[:len(good) // 3])
    else:
        ck.mkdir()
        (ck / "last.pt").write_bytes(b"\x80\x04 not a checkpoint")
    bad = (ck / "last.pt").read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run(config, checkpoint_dir=ck, results_dir=workdir / "res")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert re.fullmatch(rf"run {config.key()}: checkpoint {re.escape(str(ck / 'last.pt'))} "
                        r"cannot be read \(.+\); moved it to .*last\.pt\.corrupt-\d{8}-\d{6} "
                        r"and starting the run from epoch 0", messages[0]), messages[0]
    moved = list(ck.glob("last.pt.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == bad
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert checkpoint_module.load_checkpoint(ck / "last.pt")["epoch"] == 2
    assert len(list((workdir / "res").glob("*.json"))) == 1
