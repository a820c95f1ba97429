"""Interrupting ``./run_all.sh`` during a training grid leaves no process of the run alive.

Was: Ctrl-C during notebook 04 ended the kernel, but the grid's two training workers (and the
multiprocessing resource tracker, W&B's service) went on as orphans until killed by hand.

A small project in a temporary folder (copies of ``run_all.sh`` and the driver, the
project's ``.venv`` linked) runs one smoke notebook that starts what a grid starts: the
grid's worker pool (:func:`equivlib.engine.grid.worker_pool`, spawned workers busy with a
long task, the resource tracker), and a helper in a session of its own, as W&B's service
is. Then Ctrl-C (SIGINT to the foreground process group) or ``kill PID`` (SIGTERM to
run_all.sh only) must end every one of them: processes are looked up by their working
directory and command line under the temporary folder, not by the kernel's pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.catalogue.test_run_all_inputs import _venv_is_current
from tests.fakes import write_notebook

ROOT = Path(__file__).resolve().parents[2]


GRID = "\n".join([
    "import subprocess, sys, time",
    "from equivlib.engine.grid import worker_pool",
    "pool = worker_pool(2)  # the grid's workers, as run_grid starts them",
    "jobs = [pool.submit(time.sleep, 600) for _ in range(2)]  # a long training run each",
    "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',",
    "                           'detached-helper'], start_new_session=True)  # like wandb-core",
    "time.sleep(600)"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("looks processes up in /proc")
    if not _venv_is_current():
        pytest.skip("the project's .venv is missing or out of date (run ./run_all.sh once)")
    for name in ("run_all.sh", "tools/run_notebooks.py", "requirements.txt", "requirements.lock",
                 "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "notebooks").mkdir()
    write_notebook(tmp_path / "notebooks" / "04_grid.ipynb", GRID)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("04_grid: {}\n")
    return tmp_path.resolve()


def processes_of(project: Path) -> dict[int, str]:
    """pid -> command line of every live process (zombies are dead) working in ``project``
    or naming it on its command line."""
    found = {}
    inside = str(project)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
            cwd = os.readlink(f"/proc/{name}/cwd")
        except (OSError, IndexError):
            continue
        if state != "Z" and (cwd == inside or cwd.startswith(inside + "/") or inside in cmdline):
            found[int(name)] = f"{cmdline} (cwd {cwd})"
    return found


def _grid_is_running(project: Path) -> bool:
    commands = list(processes_of(project).values())
    return (sum("spawn_main" in c for c in commands) >= 2
            and any("resource_tracker" in c for c in commands)
            and any("detached-helper" in c for c in commands))


@pytest.mark.parametrize("sig, why", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupted_run_leaves_no_process_alive(project, sig, why):
    env = dict(os.environ, EQUIVLIB_PROGRESS_INTERVAL="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(["bash", str(project / "run_all.sh"), "--profile", "smoke"],
                            cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _grid_is_running(project) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _grid_is_running(project), f"the grid never started: {processes_of(project)}"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the foreground group
        else:
            os.kill(proc.pid, sig)  # kill PID: run_all.sh only
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, out
        assert f"interrupted ({why}) during 04_grid.ipynb; its processes were ended." in out
        deadline = time.monotonic() + 5
        while processes_of(project) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_of(project) == {}, "still running after the interrupt"
        assert not (project / "build" / "smoke" / "figures").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_of(project):  # never leave a failed test's processes behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
