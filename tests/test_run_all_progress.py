"""The rebuild driver's live progress (non-terminal format), its summary, and Ctrl-C /
SIGTERM: the running notebook's processes end, finished work is reported as kept, exit 130."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from equivlib.progress import Display, describe
from tests.fakes import write_notebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path) -> Path:
    for part in ("notebooks", "params"):
        (tmp_path / part).mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("{}\n")
    return tmp_path


def _driver(project: Path, **popen) -> subprocess.Popen:
    env = dict(os.environ, EQUIVLIB_PROGRESS_INTERVAL="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "run_notebooks.py"),
                             "--profile", "smoke", "--root", str(project)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


# ------------------------------------------------------------------ formatting
@pytest.mark.parametrize("event, elapsed, want", [
    (None, 65, "running, 1:05 elapsed"),
    ({"stage": "training", "total": 32, "done": 10, "trained": 7, "reused": 3}, 70,
     "training 10/32 runs (3 reused), 1:10 elapsed, ~3:40 left"),
    ({"stage": "training", "total": 4, "done": 4, "trained": 0, "reused": 4}, 3,
     "training 4/4 runs (4 reused), 0:03 elapsed"),
    ({"stage": "waiting", "total": 16, "done": 9, "trained": 9, "reused": 0, "held": 7}, 3600,
     "waiting 9/16 runs (0 reused), 7 held by other processes, 1:00:00 elapsed, ~46:40 left"),
])
def test_status_phrase(event, elapsed, want):
    assert describe(event, elapsed) == want


def test_plain_output_prints_changes_not_every_tick():
    out = io.StringIO()
    display = Display(out, interval=0)
    for text in ("training 1/3 runs, 0:01 elapsed", "training 1/3 runs, 0:02 elapsed",
                 "training 2/3 runs, 0:03 elapsed"):
        display.update("04_x.ipynb", text)
    lines = out.getvalue().splitlines()
    assert [line.split(None, 1)[1] for line in lines] == [
        "training 1/3 runs, 0:01 elapsed", "training 2/3 runs, 0:03 elapsed"]
    assert "\r" not in out.getvalue()


# ------------------------------------------------------------------ a whole run
def test_live_progress_and_summary_in_a_log(project):
    write_notebook(project / "notebooks" / "01_grid.ipynb", "\n".join([
        "import time",
        "from pathlib import Path",
        "from equivlib import progress",
        "for i in range(3):",
        "    time.sleep(0.8)",
        "    progress.emit('training', total=3, done=i + 1, trained=i + 1, reused=0)",
        "time.sleep(0.8)",
        "Path(out_dir, '01_grid.csv').write_text('x')"]))
    proc = _driver(project)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "training 1/3 runs (0 reused)" in out and "training 3/3 runs (0 reused)" in out
    assert "~" in out.split("training 1/3 runs", 1)[1].splitlines()[0]  # an estimate
    assert "\r" not in out
    summary = out.split("summary:", 1)[1]
    assert "01_grid.ipynb" in summary and "3/0" in summary and "1 file(s) promoted" in summary
    assert (project / "build" / "smoke" / "figures" / "01_grid.csv").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig, why", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_ends_the_kernel_and_says_what_is_kept(project, sig, why):
    write_notebook(project / "notebooks" / "01_quick.ipynb",
              "from pathlib import Path\nPath(out_dir, '01_quick.csv').write_text('x')")
    marker = project / "kernel.pid"
    write_notebook(project / "notebooks" / "02_slow.ipynb", "\n".join([
        "import os, time",
        "from pathlib import Path",
        f"Path({str(marker)!r}).write_text(str(os.getpid()))",
        "Path(out_dir, '02_slow.csv').write_text('half')",
        "time.sleep(300)"]))
    proc = _driver(project)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the slow notebook never started"
    kernel = int(marker.read_text())
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert f"interrupted ({why}) during 02_slow.ipynb" in out
    assert "finished notebooks: 01_quick.ipynb" in out
    assert "figures promoted: 01_quick.csv" in out and "run the same command again" in out
    for _ in range(50):
        if not _alive(kernel):
            break
        time.sleep(0.2)
    assert not _alive(kernel), "the interrupted notebook's kernel is still running"
    figures = project / "build" / "smoke" / "figures"
    assert (figures / "01_quick.csv").exists() and not (figures / "02_slow.csv").exists()
