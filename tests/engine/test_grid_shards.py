"""A grid across processes: ``--shard K/N`` parts are disjoint and cover the grid; shards
(started by the SLURM array script) and whole grids running at once over one results store
train every run exactly once and leave a valid store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from equivlib.cli import CliError, main
from equivlib.cli.grid import parse_shard
from equivlib.engine.grid import shard
from equivlib.store.results import load_result

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "04_rotmnist_rotation"


@pytest.mark.parametrize("n_configs", [1, 7, 16])
@pytest.mark.parametrize("count", [1, 2, 3, 16])
def test_shards_are_disjoint_balanced_and_cover_the_grid(n_configs, count):
    configs = list(range(n_configs))
    parts = [shard(configs, k, count) for k in range(1, count + 1)]
    assert sorted(c for p in parts for c in p) == configs
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0/4", "5/4", "3", "a/b", "2/0", "-1/2", "1/2/3"])
def test_bad_shard_is_refused(text):
    with pytest.raises(CliError, match="K/N"):
        parse_shard(text)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root with the real notebooks and params, and this interpreter as .venv."""
    for part in ("params", "notebooks", "slurm"):
        shutil.copytree(ROOT / part, tmp_path / part)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def _keys(project: Path, capsys) -> list[str]:
    assert main(["grid", "--notebook", NOTEBOOK, "--profile", "smoke", "--root", str(project),
                 "--list"]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()]


def _env(**extra: str) -> dict[str, str]:
    return {"WANDB_MODE": "disabled", "EQUIVLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _lines(out: str, word: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith(word)]


def _check_store(project: Path, keys: list[str]) -> None:
    results = project / "build" / "results"
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(keys)
    for path in results.glob("*.json"):
        record = json.loads(path.read_text())
        assert load_result(record["config"], results) is not None  # valid, complete
    assert not list(results.glob("*.claim*"))  # every claim released


def test_two_slurm_array_tasks_at_once_train_each_run_once(project, capsys):
    keys = _keys(project, capsys)
    procs = [subprocess.Popen(
        ["bash", "slurm/grid_array.sh", NOTEBOOK, "smoke"], cwd=project, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN="1",
                 SLURM_ARRAY_TASK_COUNT="2", SLURM_SUBMIT_DIR=str(project)))
        for task in (1, 2)]
    outs = _wait(procs)
    trained = [_lines(out, "trained") for out in outs]
    assert all(f"shard {k}/2: 8 run(s)" in out for k, out in zip((1, 2), outs, strict=True))
    assert set(trained[0]).isdisjoint(trained[1])
    assert sorted(trained[0] + trained[1]) == sorted(keys)
    _check_store(project, keys)


def test_two_whole_grids_at_once_share_the_work(project, capsys):
    """Without shards both processes walk the same 16 runs; claims make them split the
    work, and each waits for (then reuses) the runs the other trained."""
    keys = _keys(project, capsys)
    command = [sys.executable, "-m", "equivlib", "grid", "--notebook", NOTEBOOK,
               "--profile", "smoke", "--root", str(project), "--workers", "1"]
    procs = [subprocess.Popen(command, cwd=project, text=True, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = _wait(procs)
    trained = [_lines(out, "trained") for out in outs]
    assert sorted(trained[0] + trained[1]) == sorted(keys)  # each run trained once in all
    for out in outs:  # and each process ends with every run's metrics
        assert sorted(_lines(out, "trained") + _lines(out, "reused")) == sorted(keys)
    _check_store(project, keys)
