import json

import pytest
import torch

from equivlib.data import DatasetMissingError
from equivlib.engine import grid
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store.results import result_path

TINY = dict(channels=2, epochs=1, batch_size=64, sizes=[128, 32, 32], angles=[0.0, 90.0])


def make_config(input_size=28, **kw):
    return rotmnist_config("p4_mnist_cnn", input_size, **{**TINY, **kw})


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


def _configs():
    return [make_config(seed=0), make_config(27, seed=1),
            make_config(seed=0, regime="biased", sigma=20.0)]


def _strip(metrics):
    return [{k: v for k, v in m.items() if k != "timing"} for m in metrics]


def test_parallel_equals_in_process_and_is_reused(tmp_path):
    serial = grid.run_grid(_configs(), tmp_path / "a", tmp_path / "ca", workers=1)
    parallel = grid.run_grid(_configs(), tmp_path / "b", tmp_path / "cb", workers=2)
    assert _strip(serial) == _strip(parallel)
    assert all(m["timing"]["threads"] == 1 for m in serial + parallel)
    seen = []
    again = grid.run_grid(_configs(), tmp_path / "b", tmp_path / "cc", workers=2,
                          on_done=lambda c, m, reused: seen.append(reused))
    assert again == parallel and seen == [True] * 3 and not (tmp_path / "cc").exists()


def test_corrupt_result_is_trained_again(tmp_path):
    config = _configs()[0]
    first = grid.run_grid([config], tmp_path, tmp_path / "ck")
    path = result_path(config.to_dict(), tmp_path)
    path.write_text(path.read_text()[:50])  # a half-written file
    with pytest.warns(RuntimeWarning, match="invalid result"):
        second = grid.run_grid([config], tmp_path, tmp_path / "ck2")
    assert _strip(second) == _strip(first)
    assert json.loads(path.read_text())["complete"] is True


def test_failure_keeps_finished_runs(tmp_path, monkeypatch):
    real = grid.run
    calls = []

    def flaky(config, *args, **kwargs):
        calls.append(config.train.seed)
        if config.train.seed == 1:
            raise RuntimeError("boom")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(grid, "run", flaky)
    with pytest.raises(grid.GridRunError, match="P4|p4_mnist_cnn at 27.*boom"):
        grid.run_grid(_configs(), tmp_path, tmp_path / "ck")
    assert calls == [0, 1]
    assert result_path(_configs()[0].to_dict(), tmp_path).exists()
    assert not result_path(_configs()[1].to_dict(), tmp_path).exists()


def test_bad_input_raises_before_work(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        grid.run_grid(_configs(), tmp_path, workers=0)
    with pytest.raises(ValueError, match="device"):
        grid.run_grid(_configs(), tmp_path, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            grid.run_grid(_configs(), tmp_path, device="cuda")
    with pytest.raises(ValueError, match="regime"):
        grid.run_grid([{"data": {"regime": "sideways"}}], tmp_path)
    with pytest.raises(ValueError, match="unknown key"):
        grid.run_grid([{"train": {"epoch": 3}}], tmp_path)
    with pytest.raises(DatasetMissingError):
        grid.run_grid([make_config(source="torchvision")], tmp_path,
                      data_dir=tmp_path / "none")
    assert list(tmp_path.iterdir()) == []
