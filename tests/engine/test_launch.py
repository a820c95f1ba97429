"""One run over two gloo processes launched with torchrun by the grid (processes_per_run),
as notebook 08 and ``grid`` do with ``gpus_per_run``."""

import sys

import pytest

from equivlib.engine.grid import GridRunError, run_grid
from equivlib.engine.launch import LaunchError, torchrun_command, train_with_torchrun
from equivlib.experiments.recipes import paper_config
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store.results import load_result, provenance_of


def test_command_line():
    command = torchrun_command("c.json", 8, results_dir="r", checkpoint_dir="k",
                               data_dir="/data", device="cuda")
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=8"]
    assert command[5:] == ["-m", "equivlib", "train", "--config", "c.json", "--results-dir",
                           "r", "--checkpoint-dir", "k", "--device", "cuda", "--data-dir",
                           "/data"]
    with pytest.raises(ValueError, match="processes per run"):
        torchrun_command("c.json", 0, results_dir="r", checkpoint_dir="k")


def test_grid_trains_a_run_over_two_processes(tmp_path):
    config = rotmnist_config("p4_mnist_cnn", 28, epochs=1, batch_size=32, sizes=(64, 32, 32),
                             angles=[0.0, 90.0], channels=2, dropout=0.0)
    [metrics] = run_grid([config], tmp_path / "results", tmp_path / "ck", processes_per_run=2)
    assert metrics["timing"]["processes"] == 2
    record = load_result(config.to_dict(), tmp_path / "results")
    assert record["metrics"] == metrics
    assert (record["provenance"]["processes"], record["provenance"]["device"]) == (2, "cpu")
    assert provenance_of([config]) == [record["provenance"]]  # known in this process
    assert (tmp_path / "ck" / config.key() / "torchrun.log").exists()
    assert not list((tmp_path / "ck" / config.key()).glob("*.json"))  # config file removed


def test_a_failed_launch_reports_the_log(tmp_path):
    config = paper_config("pcam", "p4_resnet20", 97)  # no PCam files under data_dir
    with pytest.raises(LaunchError, match="pcam not found") as err:
        train_with_torchrun(config, 2, results_dir=tmp_path / "r", checkpoint_dir=tmp_path / "k",
                            data_dir=tmp_path)
    assert "the processes said: python -m equivlib train: error:" in str(err.value)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_grid_checks_the_data_before_launching(tmp_path):
    config = paper_config("pcam", "p4_resnet20", 97)
    with pytest.raises(FileNotFoundError, match="pcam not found"):
        run_grid([config], tmp_path / "r", tmp_path / "k", data_dir=tmp_path,
                 processes_per_run=2)
    assert not (tmp_path / "k").exists()
    assert GridRunError  # failures of a launched run surface as GridRunError (see grid.py)
