"""The grid and provenance: a trained run's record says where it was made (device, threads,
processes), outside its config and metrics; a grid that reuses runs made elsewhere (another
commit, CPU, torch, lock, or unknown) says so in one line, and says nothing when they were
made here; the provenance of every run it returned is then known to the caller."""

import json

import pytest

from equivlib.engine import grid
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.store import results
from equivlib.store.provenance import collect
from equivlib.store.results import load_result, provenance_of, result_path, save_result

TINY = dict(channels=2, epochs=1, batch_size=64, sizes=[128, 32, 32], angles=[0.0, 90.0])


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")
    monkeypatch.setattr(results, "_seen", {})  # nothing saved or loaded in this process


def _configs(n=3):
    return [rotmnist_config("p4_mnist_cnn", 28, seed=seed, **TINY) for seed in range(n)]


def _store(configs, root, provenances):
    """Finished runs in the store (fake metrics: nothing trains), with these provenances
    (None: a record from before provenance was stored)."""
    for seed, (config, made) in enumerate(zip(configs, provenances, strict=True)):
        path = save_result(config.to_dict(), {"seed": seed}, root,
                           provenance=made or collect("cpu"))
        if made is None:
            record = json.loads(path.read_text())
            del record["provenance"]
            path.write_text(json.dumps(record))


def _elsewhere(out):
    return [line for line in out.splitlines() if "made elsewhere" in line]


def test_a_trained_run_records_where_it_was_made(tmp_path, capsys):
    [config] = _configs(1)
    [metrics] = grid.run_grid([config], tmp_path / "r", tmp_path / "ck", threads=1)
    record = load_result(config.to_dict(), tmp_path / "r")
    made = record["provenance"]
    assert (made["device"], made["threads"], made["processes"]) == ("cpu", 1, 1)
    assert made == {**collect("cpu"), "threads": 1}
    assert "provenance" not in record["config"] and "provenance" not in record["metrics"]
    assert record["metrics"] == metrics
    assert provenance_of([config]) == [made]
    again = grid.run_grid([config], tmp_path / "r", tmp_path / "ck2", threads=2)
    assert again == [metrics] and not _elsewhere(capsys.readouterr().out)


HERE = collect("cpu")


@pytest.mark.parametrize("altered, phrase", [
    ({"commit": "1a2b3c4" + "0" * 33, "dirty": True}, "at commit 1a2b3c4 (dirty)"),
    ({"cpu": "AMD EPYC 9R14"}, "on AMD EPYC 9R14"),
    ({"torch": "2.3.0"}, "with torch 2.3.0"),
    ({"lock": "fedcba9876543210"}, "with lock fedcba9876543210"),
    (None, "with unknown provenance"),
])
def test_reused_runs_made_elsewhere_are_named_once(tmp_path, capsys, altered, phrase):
    configs = _configs()
    made = None if altered is None else {**HERE, **altered}
    _store(configs, tmp_path, [made, made, HERE])
    metrics = grid.run_grid(configs, tmp_path, tmp_path / "ck")
    assert metrics == [{"seed": 0}, {"seed": 1}, {"seed": 2}]  # reused, not trained
    lines = _elsewhere(capsys.readouterr().out)
    assert len(lines) == 1
    assert lines[0].startswith(f"reused 2 runs made elsewhere: 2 {phrase}")
    assert provenance_of(configs) == [made, made, HERE]


@pytest.mark.parametrize("same", [{}, {"threads": 16, "processes": 4, "python": "3.12.1",
                                        "platform": "Linux-other"}])
def test_runs_made_here_are_reused_silently(tmp_path, capsys, same):
    configs = _configs()
    _store(configs, tmp_path, [{**HERE, **same}] * 3)
    grid.run_grid(configs, tmp_path, tmp_path / "ck")
    assert not _elsewhere(capsys.readouterr().out)


def test_the_line_names_this_process(tmp_path, capsys):
    configs = _configs()
    _store(configs, tmp_path, [{**HERE, "cpu": "AMD EPYC 9R14"}] * 2 + [None])
    grid.run_grid(configs, tmp_path, tmp_path / "ck")
    [line] = _elsewhere(capsys.readouterr().out)
    assert line == (f"reused 3 runs made elsewhere: 2 on AMD EPYC 9R14; 1 with unknown "
                    f"provenance (this: {HERE['cpu']})")


def test_a_run_finished_by_another_process_meanwhile_is_checked_too(tmp_path, capsys,
                                                                    monkeypatch):
    """A run missing at the start but stored by another shard before this grid claims it
    ("reused" by the worker) counts as reused; its provenance is read back here."""
    [config] = _configs(1)
    other = {**HERE, "cpu": "AMD EPYC 9R14"}
    real = grid._train_one

    def finished_meanwhile(c, results_dir, *args):
        _store([config], results_dir, [other])
        return real(c, results_dir, *args)

    monkeypatch.setattr(grid, "_train_one", finished_meanwhile)
    assert grid.run_grid([config], tmp_path, tmp_path / "ck") == [{"seed": 0}]
    [line] = _elsewhere(capsys.readouterr().out)
    assert line.startswith("reused 1 run made elsewhere: 1 on AMD EPYC 9R14")
    assert provenance_of([config]) == [other]
    assert result_path(config.to_dict(), tmp_path).exists()
