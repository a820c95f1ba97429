"""Catalogue of command-line flags that were dropped silently (issue 26), each now one line,
exit status 2 and nothing written:

- ``train --config FILE`` with flags that say what to train (the file is the whole run):
  refused, naming the ``--set`` that gives each value on top of the file;
- a flag of one dataset given with another (``--regime biased --sigma 20`` on
  ``pcam_stand_in``, ``--fraction`` on MNIST): refused, naming the datasets it applies to;
- ``grid --profile cpu`` for a notebook without its section in ``params/cpu.yaml``;
- ``grid`` with a params file ``./run_all.sh`` refuses (mistyped values, unknown keys, a bad
  section of another notebook): refused with run_all.sh's line;
- ``zoo --sizes 1-100000`` (an hour without a word): more than 512 sizes are refused; long
  runs show their progress on stderr.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest

from equivlib.cli import main
from equivlib.cli.zoo import ZooProgress
from equivlib.experiments.rotmnist import rotmnist_config
from tools import run_notebooks  # the driver of run_all.sh

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "python -m equivlib train: error: "


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The working directory, holding ``mnist.json``: a whole MNIST run config."""
    monkeypatch.chdir(tmp_path)
    config = rotmnist_config("p4_mnist_cnn", 28, epochs=1, sizes=(128, 32, 32), channels=2)
    (tmp_path / "mnist.json").write_text(json.dumps(config.to_dict()))
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


# ------------------------------------------------------------------ --config and flags
WHOLE_RUN = "--config mnist.json is the whole run, so "
CONFIG_CASES = [
    (["--dataset", "cifar10", "--model", "p4_resnet20", "--input-size", "33"],
     WHOLE_RUN + "--dataset, --model, --input-size would be ignored: change the file (or write "
     "a new one with train --dataset cifar10 --model p4_resnet20 --input-size 33 --print-config"
     " > FILE), or leave them out"),
    (["--epochs", "5"], WHOLE_RUN + "--epochs would be ignored: give it as --set "
                                    "train.epochs=5 (applied on top of the file), or leave it out"),
    (["--seed", "0"], WHOLE_RUN + "--seed would be ignored: give it as --set train.seed=0 "
                                  "(applied on top of the file), or leave it out"),
    (["--regime", "biased", "--sizes", "64", "32", "32"],
     WHOLE_RUN + "--regime, --sizes would be ignored: give them as --set data.regime=biased "
     "--set data.options.sizes=[64,32,32] (applied on top of the file), or leave them out"),
    (["--lr", "0.1", "--no-coset-pool"],
     WHOLE_RUN + "--lr, --no-coset-pool would be ignored: give them as --set optim.lr=0.1 "
     "--set model.kwargs.coset_pool=false (applied on top of the file), or leave them out"),
    (["--angle-step", "90"],
     WHOLE_RUN + "--angle-step would be ignored: change the file (or write a new one with train "
     "--angle-step 90 --print-config > FILE), or leave it out"),
]


@pytest.mark.parametrize("flags, message", CONFIG_CASES,
                         ids=[" ".join(f) for f, _ in CONFIG_CASES])
def test_config_with_flags_that_it_replaces(workdir, capsys, flags, message):
    """Was: the flags were dropped and the file's MNIST run trained, exit 0."""
    line = _refused(capsys, ["train", "--config", "mnist.json", *flags], workdir)
    assert line == TRAIN + message


def test_config_with_set_and_where_flags_still_runs(workdir, capsys):
    argv = ["train", "--config", "mnist.json", "--set", "train.epochs=2", "--results-dir",
            "res", "--device", "cpu", "--print-config"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["train"]["epochs"] == 2


# ------------------------------------------------------------------ flags of another dataset
ROTMNIST = "mnist only (the RotMNIST protocol)"
STAND_IN = ["--dataset", "pcam_stand_in", "--model", "p4_resnet20", "--input-size", "97"]
CIFAR = ["--dataset", "cifar10", "--model", "p4_resnet20", "--input-size", "33"]
DATASET_CASES = [
    (STAND_IN + ["--regime", "biased", "--sigma", "20"],
     f"--regime, --sigma do not apply to --dataset pcam_stand_in: they apply to --dataset "
     f"{ROTMNIST}; leave them out; to rotate pcam_stand_in's training images, use --set "
     "data.regime=biased --set data.mu=45 --set data.sigma=20"),
    (["--fraction", "0.5"],
     "--fraction does not apply to --dataset mnist: it applies to --dataset cifar10, cifar100; "
     "leave it out; with mnist, --sizes sets the number of training images"),
    (["--widths", "4", "4", "4"],
     "--widths does not apply to --dataset mnist: it applies to --dataset cifar10, cifar100, "
     "flowers102, imagenet, pcam, pcam_stand_in; leave it out; the MNIST CNNs take --channels"),
    (CIFAR + ["--sizes", "64", "32", "32", "--split-seed", "1"],
     f"--sizes, --split-seed do not apply to --dataset cifar10: they apply to --dataset "
     f"{ROTMNIST}; leave them out"),
    (CIFAR + ["--dropout", "0.5"],
     f"--dropout does not apply to --dataset cifar10: it applies to --dataset {ROTMNIST}; "
     "leave it out"),
    (STAND_IN + ["--fraction", "0.5"],
     "--fraction does not apply to --dataset pcam_stand_in: it applies to --dataset cifar10, "
     "cifar100; leave it out"),
]


@pytest.mark.parametrize("flags, message", DATASET_CASES,
                         ids=[" ".join(f) for f, _ in DATASET_CASES])
def test_flag_of_another_dataset(workdir, capsys, flags, message):
    """Was: pcam_stand_in trained without rotations under the plain run's key; MNIST
    ignored --fraction."""
    assert _refused(capsys, ["train", *flags], workdir) == TRAIN + message


def test_flags_of_every_dataset_apply_to_mnist_too(workdir, capsys):
    """--quarter-turns and --no-coset-pool were dropped on MNIST: now they are applied."""
    assert main(["train", "--quarter-turns", "--no-coset-pool", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["data"]["quarter_turns"] is True
    assert config["model"]["kwargs"]["coset_pool"] is False
    assert main(["train", "--print-config"]) == 0  # without them: the notebooks' key
    plain = json.loads(capsys.readouterr().out)
    assert plain["data"]["quarter_turns"] is False and "coset_pool" not in plain["model"]["kwargs"]


# ------------------------------------------------------------------ grid: missing section
def test_grid_refuses_a_profile_without_the_notebooks_section(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    for name in ("04_rotmnist_rotation", "05_rotmnist_statistics"):
        shutil.copy2(ROOT / "notebooks" / f"{name}.ipynb", tmp_path / "notebooks")
    (tmp_path / "params" / "cpu.yaml").write_text("05_rotmnist_statistics: {}\n")
    before = _tree(tmp_path)
    assert main(["grid", "--notebook", "04_rotmnist_rotation", "--root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    params = tmp_path / "params" / "cpu.yaml"
    assert captured.out == "" and _one_line(captured.err) == (
        f"python -m equivlib grid: error: {params} has no section '04_rotmnist_rotation', so "
        "this grid would train the notebook's smoke defaults into the cpu store: restore the "
        f"section (git diff {params}), or use --profile smoke")
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------ grid and run_all.sh alike
NB04 = "04_rotmnist_rotation"
HINT = "Fix the key (the parameters are the cell tagged 'parameters' of notebooks/"
PARAMS_CASES = [
    pytest.param(f"{NB04}:\n  epochs: many\n",
                 f"params/cpu.yaml: {NB04}: epochs must be int (the notebook's default is 1), "
                 "got str 'many'; write a whole number, like the default 1", id="text-for-int"),
    pytest.param(f"{NB04}:\n  seeds: 2.5\n",
                 f"params/cpu.yaml: {NB04}: seeds must be int (the notebook's default is 1), "
                 "got float 2.5; write a whole number, like the default 1", id="float-for-int"),
    pytest.param(f"{NB04}:\n  lr: 1e-3\n",
                 f"params/cpu.yaml: {NB04}: lr must be float (the notebook's default is 0.01), "
                 "got str '1e-3'; YAML reads 1e-3 as text: write lr: 1.0e-3", id="yaml-1e-3"),
    pytest.param(f"{NB04}:\n  sizes: 4000\n",
                 f"params/cpu.yaml: {NB04}: sizes must be str (the notebook's default is "
                 "'128,64,64'), got int 4000; quote it: sizes: \"4000\"", id="number-for-text"),
    pytest.param(f"{NB04}:\n  epohcs: 3\n",
                 f"params/cpu.yaml: {NB04}: unknown parameter 'epohcs': did you mean 'epochs'? "
                 f"{HINT}{NB04}.ipynb)", id="key-typo"),
    pytest.param(f"{NB04}:\n  out_dir: x\n",
                 f"params/cpu.yaml: {NB04}: 'out_dir' is set by run_all.sh for every notebook; "
                 "remove it from the section", id="driver-parameter"),
    pytest.param(f"{NB04}: {{}}\n06_classification:\n  epochs: x\n",
                 "params/cpu.yaml: 06_classification: epochs must be int (the notebook's "
                 "default is 1), got str 'x'; write a whole number, like the default 1",
                 id="another-section"),
    pytest.param(f"{NB04}:\n  epochs: 2\n count: 6\n",
                 "params/cpu.yaml is not valid YAML at line 3 (expected <block end>, but "
                 "found '<block mapping start>'); fix the file", id="broken-yaml"),
]


@pytest.mark.parametrize("text, problem", PARAMS_CASES)
def test_grid_refuses_what_run_all_refuses_with_the_same_message(tmp_path, capsys, text,
                                                                   problem):
    """Was: grid took the values untyped (``epochs: many``, ``seeds: 2.5``: a TypeError deep
    in the grid, exit 1; ``lr: 1e-3``, ``sizes: 4000``: refused by the config in other words;
    a bad value in another section: accepted). Both read
    :mod:`equivlib.experiments.notebook_params` now."""
    for part in ("params", "notebooks"):
        shutil.copytree(ROOT / part, tmp_path / part)
    (tmp_path / "params" / "cpu.yaml").write_text(text)
    before = _tree(tmp_path)
    assert main(["grid", "--notebook", NB04, "--profile", "cpu", "--root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _one_line(captured.err) == f"python -m equivlib grid: error: {problem}"
    assert run_notebooks.main(["--profile", "cpu", "--only", "04", "--root",
                               str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _one_line(captured.err) == f"run_all.sh: error: {problem}; no notebook was run"
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------ zoo
@pytest.mark.parametrize("sizes, count", [("1-100000", "100,000"), ("1-1000000000000",
                                                                    "1,000,000,000,000"),
                                          ("200-400,500-900", "602")])
def test_zoo_refuses_more_than_512_sizes(tmp_path, monkeypatch, capsys, sizes, count):
    """Was: ran for an hour without output (a 10**12 range was expanded into a list)."""
    monkeypatch.chdir(tmp_path)
    line = _refused(capsys, ["zoo", "resnet18", "--sizes", sizes], tmp_path)
    assert line == (
        f"python -m equivlib zoo: error: sizes: {sizes!r} names {count} sizes, more than 512 at "
        "once (each size is traced on every model): narrow the ranges, e.g. 220-260,299, or "
        "split the run into several commands")


def test_zoo_shows_progress_on_stderr_and_the_table_on_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "1")
    monkeypatch.setenv("EQUIVLIB_PROGRESS_INTERVAL", "0")
    assert main(["zoo", "resnet18", "--sizes", "224-227"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [re.sub(r", \d+:\d\d elapsed.*", "", line) for line in lines] == [
        f"zoo: {n}/4 model x size traces (1 model)" for n in (1, 2, 3)]
    assert "zoo:" not in captured.out and "resnet18" in captured.out


def test_zoo_progress_rewrites_one_line_on_a_terminal(monkeypatch):
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "1")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = ZooProgress(2, stream=out)
    progress.interval = 0
    for done in (1, 2, 3, 4):
        progress(done, 4)
    progress.clear()
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 5 and text.endswith("\r")
    assert "zoo: 3/4 model x size traces (2 models)" in text
