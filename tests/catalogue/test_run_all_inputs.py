"""Catalogue of bad inputs to ``./run_all.sh``: each gives one clear line and a non-zero exit,
runs no notebook and leaves every figure as it was (bytes and modification times).

Each case runs against a small project in a temporary folder: copies of ``run_all.sh`` and
``tools/run_notebooks.py``, the project's ``.venv`` (a link), fake notebooks and a params
file. Add a case here for every bad input found.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from tests.fakes import write_notebook
from tools import run_notebooks

ROOT = Path(__file__).resolve().parents[2]


OLD_TIME = 1_600_000_000  # the old figures' modification time (2020)
ALPHA_PARAMETERS = 'count: int = 3  # c\nrate: float = 0.5  # r\nlabel: str = "a"  # l'
ALPHA_BODY = "\n".join([
    "from pathlib import Path",
    "for name in ('01_alpha.csv', '01_alpha.extra.csv', '01_alpha.pdf', '01_alpha.png'):",
    "    Path(out_dir, name).write_text(f'new {count}')"])
BETA_BODY = "from pathlib import Path\nPath(out_dir, '02_beta.csv').write_text('new')"
CPU_PARAMS = "01_alpha:\n  count: 5\n02_beta: {}\n"


def _venv_is_current() -> bool:
    """Whether run_all.sh would use the project's .venv as it is (no reinstall)."""
    stamp = ROOT / ".venv" / ".installed-requirements"
    want = hashlib.sha256((ROOT / "requirements.txt").read_bytes()
                          + (ROOT / "requirements.lock").read_bytes()
                          + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.exists() and stamp.read_text().strip() == want


def _notebook(path: Path, body: str, parameters: str = "") -> None:
    """A fake notebook (tests/fakes.py) with extra lines in its parameters cell."""
    write_notebook(path, body)
    if parameters:
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].source += "\n" + parameters
        nbformat.write(nb, path)


def _old_figures(figures: Path) -> None:
    """The committed set of notebook 01: three files with old contents and times."""
    figures.mkdir()
    for name in ("01_alpha.csv", "01_alpha.pdf", "01_alpha.png"):
        (figures / name).write_text(f"old {name}")
        os.utime(figures / name, (OLD_TIME, OLD_TIME))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with notebooks 01_alpha (count, rate, label) and 02_beta, cpu params and
    the old figures of 01."""
    if not _venv_is_current():
        pytest.skip("the project's .venv is missing or out of date (run ./run_all.sh once)")
    for name in ("run_all.sh", "tools/run_notebooks.py", "requirements.txt", "requirements.lock",
                 "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_alpha.ipynb", ALPHA_BODY, ALPHA_PARAMETERS)
    _notebook(tmp_path / "notebooks" / "02_beta.ipynb", BETA_BODY)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "cpu.yaml").write_text(CPU_PARAMS)
    _old_figures(tmp_path / "figures")
    return tmp_path


def run_all(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EQUIVLIB_PROGRESS_INTERVAL="0")
    return subprocess.run(["bash", str(project / "run_all.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------ refused before any run
NO_RUN = "; no notebook was run"
TESTS_RUN = ("--test runs pytest tests/ and every notebook with nbval at its committed smoke "
             "defaults")
LAB_RUNS = ("--lab opens JupyterLab at notebooks/ (the executed copies of a rebuild are in "
            "build/<profile>/)")
BAD_INPUTS = [
    pytest.param(
        "01_alpah:\n  count: 5\n", [],
        "params/cpu.yaml: unknown section '01_alpah': did you mean '01_alpha'? Rename or "
        "remove it (sections are the notebook names in notebooks/)" + NO_RUN,
        id="section-typo"),
    pytest.param(
        "07_gamma:\n  count: 5\n", [],
        "params/cpu.yaml: unknown section '07_gamma': valid are 01_alpha, 02_beta. Rename or "
        "remove it (sections are the notebook names in notebooks/)" + NO_RUN,
        id="section-of-no-notebook"),
    pytest.param(
        "01_alpha:\n  cuont: 5\n", [],
        "params/cpu.yaml: 01_alpha: unknown parameter 'cuont': did you mean 'count'? Fix the "
        "key (the parameters are the cell tagged 'parameters' of notebooks/01_alpha.ipynb)"
        + NO_RUN,
        id="key-typo"),
    pytest.param(
        "01_alpha:\n  count: many\n", [],
        "params/cpu.yaml: 01_alpha: count must be int (the notebook's default is 3), got str "
        "'many'; write a whole number, like the default 3" + NO_RUN,
        id="text-for-int"),
    pytest.param(
        "01_alpha:\n  count: 2.5\n", [],
        "params/cpu.yaml: 01_alpha: count must be int (the notebook's default is 3), got float "
        "2.5; write a whole number, like the default 3" + NO_RUN,
        id="fraction-for-int"),
    pytest.param(
        "01_alpha:\n  count: \"7\"\n", [],
        "params/cpu.yaml: 01_alpha: count must be int (the notebook's default is 3), got str "
        "'7'; write it without quotes: count: 7" + NO_RUN,
        id="quoted-number"),
    pytest.param(
        "01_alpha:\n  rate: 1e-3\n", [],
        "params/cpu.yaml: 01_alpha: rate must be float (the notebook's default is 0.5), got str "
        "'1e-3'; YAML reads 1e-3 as text: write rate: 1.0e-3" + NO_RUN,
        id="yaml-1e-3-is-text"),
    pytest.param(
        "01_alpha:\n  label: 5\n", [],
        "params/cpu.yaml: 01_alpha: label must be str (the notebook's default is 'a'), got int "
        "5; quote it: label: \"5\"" + NO_RUN,
        id="number-for-text"),
    pytest.param(
        "01_alpha:\n  count:\n", [],
        "params/cpu.yaml: 01_alpha: count has no value; give one like the notebook's default 3, "
        "or remove the key to use that default" + NO_RUN,
        id="empty-value"),
    pytest.param(
        "01_alpha:\n  out_dir: x\n", [],
        "params/cpu.yaml: 01_alpha: 'out_dir' is set by run_all.sh for every notebook; remove "
        "it from the section" + NO_RUN,
        id="driver-parameter"),
    pytest.param(
        "01_alpha:\n  cuont: 5\n  count: many\n", [],
        "params/cpu.yaml: 01_alpha: unknown parameter 'cuont': did you mean 'count'? Fix the "
        "key (the parameters are the cell tagged 'parameters' of notebooks/01_alpha.ipynb) "
        "(and 1 more problem(s) in this file)" + NO_RUN,
        id="two-problems"),
    pytest.param(
        "01_alpha: [count]\n", [],
        "params/cpu.yaml: section '01_alpha' must map parameter names to values, got list; "
        "write e.g. '01_alpha: {}'" + NO_RUN,
        id="section-not-a-mapping"),
    pytest.param(
        "01_alpha:\n  count: 5\n count: 6\n", [],
        "params/cpu.yaml is not valid YAML at line 3 (expected <block end>, but found "
        "'<block mapping start>'); fix the file" + NO_RUN,
        id="broken-yaml"),
    pytest.param(
        CPU_PARAMS, ["--only", ""],
        "--only '' names no notebook: give numbers such as --only 01,04 (available: 01, 02), "
        "or leave --only out to run them all",
        id="only-empty"),
    pytest.param(
        CPU_PARAMS, ["--only="],
        "--only '' names no notebook: give numbers such as --only 01,04 (available: 01, 02), "
        "or leave --only out to run them all",
        id="only-equals-empty"),
    pytest.param(
        CPU_PARAMS, ["--only", ","],
        "--only ',' names no notebook: give numbers such as --only 01,04 (available: 01, 02), "
        "or leave --only out to run them all",
        id="only-comma"),
    pytest.param(
        CPU_PARAMS, ["--only", "99"],
        "--only '99': unknown notebook number(s) 99 (available: 01, 02)" + NO_RUN,
        id="only-missing-notebook"),
    pytest.param(
        CPU_PARAMS, ["--only", "1x"],
        "--only '1x': unknown notebook number(s) 1x (available: 01, 02)" + NO_RUN,
        id="only-not-a-number"),
    # options the chosen run would ignore: refused before the set-up, nothing started
    pytest.param(
        CPU_PARAMS, ["--test", "--lab"],
        "--test and --lab are different runs: give one of them (or neither, to rebuild)",
        id="test-and-lab"),
    pytest.param(
        CPU_PARAMS, ["--test", "--only", "01"],
        f"--only chooses the notebooks of a rebuild; {TESTS_RUN}: leave --only out",
        id="only-with-test"),
    pytest.param(
        CPU_PARAMS, ["--profile", "cpu", "--test"],
        f"--profile chooses the parameters of a rebuild; {TESTS_RUN}: leave --profile out",
        id="profile-with-test"),
    pytest.param(
        CPU_PARAMS, ["--lab", "--only=01"],
        f"--only chooses the notebooks of a rebuild; {LAB_RUNS}: leave --only out",
        id="only-with-lab"),
    pytest.param(
        CPU_PARAMS, ["--port", "9000"],
        "--port applies only with --lab: add --lab to open JupyterLab, or leave --port out",
        id="port-without-lab"),
    pytest.param(
        CPU_PARAMS, ["--only", "01", "--no-browser"],
        "--no-browser applies only with --lab: add --lab to open JupyterLab, or leave "
        "--no-browser out",
        id="no-browser-without-lab"),
    pytest.param(
        CPU_PARAMS, ["--test", "--", "--allow-root"],
        "-- ARGS applies only with --lab: add --lab to open JupyterLab, or leave -- ARGS out",
        id="jupyter-args-without-lab"),
    # a section deleted from a profile whose figures replace figures/ (was: "ok", smoke
    # defaults written over the committed cpu figures)
    pytest.param(
        "02_beta: {}\n", ["--only", "01"],
        "params/cpu.yaml has no section '01_alpha' (a cpu rebuild replaces figures/, so every "
        "notebook it runs needs its section): restore it (git diff params/cpu.yaml), or write "
        "'01_alpha: {}' to run the notebook's smoke defaults" + NO_RUN,
        id="section-missing"),
    pytest.param(
        "", [],
        "params/cpu.yaml has no section '01_alpha', '02_beta' (a cpu rebuild replaces "
        "figures/, so every notebook it runs needs its section): restore it (git diff "
        "params/cpu.yaml), or write '01_alpha: {}' to run the notebook's smoke defaults"
        + NO_RUN,
        id="every-section-missing"),
    # ports outside 1-65535 (were: served on another port, or printed a URL with :0)
    pytest.param(
        CPU_PARAMS, ["--lab", "--port", "70000"],
        "--port 70000 is not a usable port: give one from 1 to 65535 (e.g. --port 8889)",
        id="port-too-large"),
    pytest.param(
        CPU_PARAMS, ["--lab", "--port=0"],
        "--port 0 is not a usable port: give one from 1 to 65535 (e.g. --port 8889)",
        id="port-zero"),
    pytest.param(
        CPU_PARAMS, ["--lab", "--port", "99999999999999999999"],
        "--port 99999999999999999999 is not a usable port: give one from 1 to 65535 (e.g. "
        "--port 8889)",
        id="port-overflows"),
]


@pytest.mark.parametrize("params, args, message", BAD_INPUTS)
def test_bad_input_is_one_line_and_runs_nothing(project, params, args, message):
    (project / "params" / "cpu.yaml").write_text(params)
    before = snapshot(project / "figures")
    result = run_all(project, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_lines(result.stderr) == [f"run_all.sh: error: {message}"]
    assert result.stdout == ""
    assert snapshot(project / "figures") == before
    assert not (project / "build").exists(), "a notebook ran"


# ------------------------------------------------------------------ promotion failures
def _assert_rolled_back(project: Path, before: dict, out: str, why: str) -> None:
    """Notebook 01 FAILED with its old set intact; 02 still ran; summary and exit status."""
    figures = project / "figures"
    assert re.search(rf"01_alpha\.ipynb .* FAILED +promoting figures failed at \S*01_alpha\.png"
                     rf" \({why}\); the old figures were restored; make 01_alpha\.png "
                     r"replaceable \(permissions\?\) and run again\n", out)
    assert re.search(r"02_beta\.ipynb .* ok ", out)
    assert "summary:" in out
    assert "1 of 2 notebook(s) FAILED: 01_alpha.ipynb" in out
    after = snapshot(figures)
    assert (figures / "02_beta.csv").read_text() == "new"
    del after["02_beta.csv"]
    assert after == before  # the old set, bytes and times; no new file of 01 stays
    assert not list((project / "build" / "cpu" / "staging").glob("*.previous"))


def test_unwritable_figure_file_rolls_back(project, monkeypatch, capsys):
    """The issue's case: one figure cannot be replaced (PermissionError) after two were."""
    replace = os.replace

    def refuse_png(src, dst, *args, **kwargs):
        if Path(dst).name == "01_alpha.png":
            raise PermissionError(13, "Permission denied", str(src), None, str(dst))
        return replace(src, dst, *args, **kwargs)

    before = snapshot(project / "figures")
    monkeypatch.setattr(os, "replace", refuse_png)
    status = run_notebooks.main(["--profile", "cpu", "--root", str(project)])
    monkeypatch.undo()
    assert status == 1
    _assert_rolled_back(project, before, capsys.readouterr().out,
                        "PermissionError: Permission denied")


def test_figure_path_taken_by_a_folder_rolls_back(project):
    """A real obstacle, also as root: a folder where 01's PNG goes, through run_all.sh."""
    png = project / "figures" / "01_alpha.png"
    png.unlink()
    png.mkdir()
    (png / "keep.txt").write_text("not a figure")
    os.utime(png / "keep.txt", (OLD_TIME, OLD_TIME))
    before = snapshot(project / "figures")
    result = run_all(project)
    assert result.returncode == 1, result.stdout + result.stderr
    _assert_rolled_back(project, before, result.stdout, "IsADirectoryError: Is a directory")


# ------------------------------------------------------------------ JupyterLab
def test_lab_port_must_be_a_number(project):
    result = run_all(project, "--lab", "--port", "88x")
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "run_all.sh: error: --port '88x' is not a port number (e.g. --port 8889)"]


def test_lab_refuses_a_port_in_use_before_the_banner(project):
    """A busy port: one line naming it, no banner promising a URL on it, no server."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_all(project, "--lab", "--no-browser", "--port", str(port), "--",
                         "--allow-root")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert error_lines(result.stderr) == [
        f"run_all.sh: error: port {port} on 127.0.0.1 is in use (another JupyterLab?); pick "
        "another with --port N, e.g. --port 8889"]


def test_smoke_profile_may_leave_sections_out(project):
    """The smoke profile's figures stay in build/smoke/: a notebook without a section runs
    at its own (smoke) defaults."""
    (project / "params" / "smoke.yaml").write_text("# no sections\n")
    jobs = run_notebooks.plan("smoke", "01,02", project)
    assert [(j.notebook.stem, j.parameters) for j in jobs] == [
        ("01_alpha", {"profile": "smoke"}), ("02_beta", {"profile": "smoke"})]


def test_paper_profile_needs_its_sections_too(project, capsys):
    (project / "params" / "paper.yaml").write_text("01_alpha: {}\n")
    before = snapshot(project / "figures")
    assert run_notebooks.main(["--profile", "paper", "--only", "01,2",
                               "--root", str(project)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "run_all.sh: error: params/paper.yaml has no section '02_beta' (a paper rebuild "
        "replaces figures/, so every notebook it runs needs its section): restore it (git "
        "diff params/paper.yaml), or write '02_beta: {}' to run the notebook's smoke "
        "defaults; no notebook was run\n")
    assert snapshot(project / "figures") == before and not (project / "build").exists()


def test_lab_refuses_a_config_without_token(project, tmp_path):
    """A user config with ``token = ''`` would let every local user in: refused, no server."""
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text('c.IdentityProvider.token = ""\n')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config))
    result = subprocess.run(["bash", str(project / "run_all.sh"), "--lab", "--no-browser",
                             "--port", "8979", "--", "--allow-root"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error_lines(result.stderr) == [
        "run_all.sh: error: your Jupyter config sets an empty token (no authentication); "
        "remove that setting (see: .venv/bin/jupyter lab --show-config)"]


# ------------------------------------------------------------------ output directories
@pytest.mark.parametrize("blocked, what", [
    ("build", "build directory"), ("results", "01_alpha: results_dir")])
def test_unwritable_output_directory_is_found_before_any_run(project, blocked, what):
    """A directory the run would write (here: a file in its way) stops it before notebook 01
    starts: one line naming it, exit 2, figures untouched."""
    _notebook(project / "notebooks" / "01_alpha.ipynb", ALPHA_BODY,
              ALPHA_PARAMETERS + '\nresults_dir: str = "../build/results"  # store')
    (project / "params" / "cpu.yaml").write_text('01_alpha:\n  results_dir: "../results/sub"\n'
                                                  '02_beta: {}\n')
    (project / blocked).write_text("a file in the way")
    before = snapshot(project / "figures")
    result = run_all(project)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(f"run_all.sh: error: {what} ") and line.endswith(
        "is a file, not a directory; pick another path" + NO_RUN), line
    assert result.stdout == "" and snapshot(project / "figures") == before
    assert (project / blocked).read_text() == "a file in the way"
