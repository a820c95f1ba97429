"""Execute the numbered notebooks with papermill for one profile (called by run_all.sh).

Each notebook runs with the parameters of ``params/<profile>.yaml`` (its own section, plus
``profile`` and ``out_dir``) and writes its executed copy to ``build/<profile>/``. Its
figures go to a fresh staging folder; only when the notebook finishes are they renamed
into ``figures/`` (``build/smoke/figures/`` for the smoke profile, so a quick check never
replaces the committed cpu figures), so a failing notebook leaves its old figures untouched;
the renames are all-or-nothing per notebook (a failure restores the old set). All arguments
and the params file (its sections are notebook names, its keys the notebook's parameters,
its values of the declared types; every notebook to run has its section, except in the
smoke profile, whose notebooks may run at their own defaults) are validated before any
notebook starts.

While a notebook runs, the terminal shows which one, what it is doing (the training grid
reports through ``EQUIVLIB_PROGRESS_FILE``, see :mod:`equivlib.progress`), the elapsed time
and an estimate of what is left: one line updated in place on a terminal, plain lines (at
most one per ``EQUIVLIB_PROGRESS_INTERVAL`` seconds, default 10) otherwise. None of it
enters the executed notebooks. A summary follows the last notebook. Ctrl-C, SIGTERM or
SIGHUP ends every process of the running notebook (papermill, the kernel, which runs in a
session of its own, the grid's workers, the multiprocessing resource tracker, W&B's service:
each carries a marker in its environment, :func:`marked_processes`), says what finished and
what is kept, and exits 130; processes a finished notebook leaves behind are ended too.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


class UsageError(Exception):
    """Bad command-line input: reported in one line, before any work is done."""


@dataclass(frozen=True)
class Job:
    number: str
    notebook: Path
    parameters: dict


def available_notebooks(notebook_dir: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(notebook_dir.glob("*.ipynb")):
        match = NOTEBOOK_NAME.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


def available_profiles(params_dir: Path) -> list[str]:
    return sorted(p.stem for p in params_dir.glob("*.yaml"))


def load_profile(params_dir: Path, profile: str) -> dict:
    """The parsed ``params/<profile>.yaml`` (a mapping of notebook names to parameters)."""
    profiles = available_profiles(params_dir)
    if profile not in profiles:
        raise UsageError(
            f"unknown profile {profile!r}: expected one of {', '.join(profiles)} "
            f"(files in {params_dir})"
        )
    try:
        data = yaml.safe_load((params_dir / f"{profile}.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UsageError(f"params/{profile}.yaml is not valid YAML{line} ({problem}); "
                         f"fix the file; no notebook was run") from None
    if not isinstance(data, dict):
        raise UsageError(f"params/{profile}.yaml must map notebook names to parameters "
                         f"('01_subsampling: {{...}}'); no notebook was run")
    return data


def select(notebooks: dict[str, Path], only: str | None) -> list[str]:
    """The notebook numbers ``--only`` asks for (all when it is not given)."""
    if not notebooks:
        raise UsageError("no notebooks found (expected notebooks/NN_name.ipynb)")
    if only is None:
        return list(notebooks)
    available = ", ".join(notebooks)
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    wanted = [w.zfill(2) if w.isdigit() else w for w in wanted]
    if not wanted:
        raise UsageError(
            f"--only {only!r} names no notebook: give numbers such as --only 01,04 "
            f"(available: {available}), or leave --only out to run them all"
        )
    unknown = [w for w in wanted if w not in notebooks]
    if unknown:
        raise UsageError(
            f"--only {only!r}: unknown notebook number(s) {', '.join(unknown)} "
            f"(available: {available}); no notebook was run"
        )
    return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class Parameter:
    """One line of a notebook's ``parameters`` cell: its name, declared type and default."""

    name: str
    kind: str | None
    default: object


def _parameters_source(notebook: Path) -> str | None:
    """The source of the code cell tagged ``parameters`` (None when there is none)."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") == "code" and \
                "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            return "".join(source) if isinstance(source, list) else source
    return None


def _literal(node: ast.expr | None) -> object:
    """The value of a literal default (None for anything computed)."""
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def notebook_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters a notebook declares (``name: type = default`` or ``name = default``)."""
    source = _parameters_source(notebook)
    if source is None:
        return {}
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UsageError(f"{notebook.name}: its parameters cell does not parse ({exc.msg}, "
                         f"line {exc.lineno}); fix the notebook") from None
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = _literal(node.value)
            kind = node.annotation.id if isinstance(node.annotation, ast.Name) else None
            found[node.target.id] = Parameter(node.target.id, kind, default)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            default = _literal(node.value)
            kind = type(default).__name__ if default is not None else None
            found[node.targets[0].id] = Parameter(node.targets[0].id, kind, default)
    return found


DRIVER_PARAMETERS = ("profile", "out_dir")  # set by this driver for every notebook
TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text",
              "bool": "true or false"}


def _suggest(name: str, valid: list[str]) -> str:
    """"did you mean 'x'?" for the closest valid name, else the list of valid names."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid are {', '.join(valid) or 'none'}."


def _fits(kind: str | None, value: object) -> bool:
    """Whether a YAML value can stand for a parameter declared as ``kind``."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True  # a type this check does not know: the notebook decides


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _type_hint(parameter: Parameter, value: object) -> str:
    """What to write instead of ``value`` for ``parameter``."""
    name, kind = parameter.name, parameter.kind
    if kind == "str":
        return f'quote it: {name}: "{value}"'
    numeric = isinstance(value, str) and _looks_numeric(value)
    exponent = re.fullmatch(r"([+-]?\d+)(?:\.(\d*))?[eE]([+-]?)(\d+)", value) \
        if isinstance(value, str) else None
    if kind == "float" and exponent:  # YAML 1.1 floats need a point and a signed exponent
        mantissa, decimals, sign, power = exponent.groups()
        fixed = f"{mantissa}.{decimals or 0}e{sign or '+'}{power}"
        return f"YAML reads {value} as text: write {name}: {fixed}"
    if numeric and (kind == "float" or value.strip().lstrip("+-").isdigit()):
        return f"write it without quotes: {name}: {value.strip()}"
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return f"write {name}: {int(value)}"
    if kind == "bool":
        return f"write {name}: true or {name}: false"
    return f"write {TYPE_WORDS.get(kind, kind)}, like the default {parameter.default!r}"


def _type_problem(section: str, parameter: Parameter, value: object) -> str | None:
    """Why ``value`` cannot be given to ``parameter`` (None when it can)."""
    if value is None and parameter.default is not None:
        return (f"{section}: {parameter.name} has no value; give one like the notebook's "
                f"default {parameter.default!r}, or remove the key to use that default")
    if value is None or _fits(parameter.kind, value):
        return None
    got = f"{type(value).__name__} {value!r}"
    if len(got) > 60:
        got = got[:57] + "..."
    return (f"{section}: {parameter.name} must be {parameter.kind} "
            f"(the notebook's default is {parameter.default!r}), got {got}; "
            f"{_type_hint(parameter, value)}")


def _section_problems(section: str, values: object, notebook: Path) -> list[str]:
    """What is wrong with one section of a params file (empty when nothing is)."""
    if values is None:
        return []
    if not isinstance(values, dict):
        return [f"section {section!r} must map parameter names to values, "
                f"got {type(values).__name__}; write e.g. '{section}: {{}}'"]
    declared = notebook_parameters(notebook)
    valid = [name for name in declared if name not in DRIVER_PARAMETERS]
    problems = []
    for key, value in values.items():
        if key in DRIVER_PARAMETERS:
            problems.append(f"{section}: {key!r} is set by run_all.sh for every notebook; "
                            f"remove it from the section")
        elif key not in declared:
            problems.append(f"{section}: unknown parameter {key!r}: {_suggest(str(key), valid)}"
                            f" Fix the key (the parameters are the cell tagged 'parameters'"
                            f" of notebooks/{notebook.name})")
        else:
            problem = _type_problem(section, declared[key], value)
            if problem:
                problems.append(problem)
    return problems


def profile_problems(settings: dict, notebooks: dict[str, Path]) -> list[str]:
    """Every problem of a params file: unknown sections, unknown keys, mistyped values."""
    by_name = {path.stem: path for path in notebooks.values()}
    problems = []
    for section, values in settings.items():
        if section not in by_name:
            problems.append(f"unknown section {section!r}: {_suggest(str(section), list(by_name))}"
                            f" Rename or remove it (sections are the notebook names in"
                            f" notebooks/)")
        else:
            problems.extend(_section_problems(section, values, by_name[section]))
    return problems


def check_profile(settings: dict, notebooks: dict[str, Path], params_file: str) -> None:
    """Raise one line naming the params file's first problem (and how many more there are)."""
    problems = profile_problems(settings, notebooks)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) in this file)" \
            if len(problems) > 1 else ""
        raise UsageError(f"{params_file}: {problems[0]}{more}; no notebook was run")


DEFAULTS_PROFILE = "smoke"  # the committed defaults: its sections may be left out


def check_sections(settings: dict, profile: str, names: list[str]) -> None:
    """UsageError when a profile other than smoke has no section for a notebook it would run:
    its figures replace ``figures/``, so a section deleted by mistake must not silently run
    the notebook at its smoke defaults."""
    if profile == DEFAULTS_PROFILE:
        return
    missing = [name for name in names if name not in settings]
    if missing:
        sections = ", ".join(repr(m) for m in missing)
        raise UsageError(
            f"params/{profile}.yaml has no section {sections} (a {profile} rebuild replaces "
            f"figures/, so every notebook it runs needs its section): restore it (git diff "
            f"params/{profile}.yaml), or write '{missing[0]}: {{}}' to run the notebook's "
            f"smoke defaults; no notebook was run")


def plan(profile: str, only: str | None, root: Path = ROOT) -> list[Job]:
    """Validate the request and return the jobs to run, before running anything."""
    settings = load_profile(root / "params", profile)
    notebooks = available_notebooks(root / "notebooks")
    numbers = select(notebooks, only)
    check_profile(settings, notebooks, f"params/{profile}.yaml")
    check_sections(settings, profile, [notebooks[n].stem for n in numbers])
    jobs = []
    for number in numbers:
        path = notebooks[number]
        params = dict(settings.get(path.stem) or {})
        params["profile"] = profile
        jobs.append(Job(number, path, params))
    return jobs


class PromotionError(Exception):
    """A staged file could not be renamed into place; the old set was restored."""


def _keep_copy(target: Path, backup: Path) -> None:
    """Keep the current ``target`` as ``backup`` (a hard link; a copy where links fail)."""
    try:
        os.link(target, backup)
    except OSError:
        shutil.copy2(target, backup)


def _roll_back(done: list[tuple[Path, Path | None]]) -> list[str]:
    """Undo renames (newest first): restore each kept old file, delete the new-only ones.
    Return the names that could not be restored."""
    stuck = []
    for target, backup in reversed(done):
        try:
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
        except OSError:
            stuck.append(target.name)
    return stuck


def _staged_files(staging: Path) -> list[Path]:
    """The files a notebook left in its staging folder, in name order."""
    return [p for p in sorted(staging.iterdir()) if p.is_file() and not p.name.startswith(".")]


def _promotion_failure(exc: OSError, stuck: list[str], backups: Path) -> str:
    """The one line that says which file failed and what the figures now hold."""
    what = f"{type(exc).__name__}: {exc.strerror or exc}"
    where = exc.filename2 or exc.filename or "?"
    kept = (f"could not restore {', '.join(stuck)} (old copies in {backups})" if stuck
            else "the old figures were restored")
    return (f"promoting figures failed at {where} ({what}); {kept}; make "
            f"{Path(where).name} replaceable (permissions?) and run again")


def promote(staging: Path, figures: Path) -> list[Path]:
    """Rename every file the notebook staged into ``figures`` (same filesystem: atomic each),
    all or nothing: when one rename fails, the files already renamed are put back to the old
    set (new-only files deleted) and :class:`PromotionError` says which file failed."""
    backups = staging.with_name(staging.name + ".previous")
    done: list[tuple[Path, Path | None]] = []
    try:
        figures.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(backups, ignore_errors=True)
        backups.mkdir(parents=True)
        for path in _staged_files(staging):
            target, backup = figures / path.name, None
            if target.exists():
                backup = backups / path.name
                _keep_copy(target, backup)
            os.replace(path, target)
            done.append((target, backup))
    except BaseException as exc:  # an OSError, or Ctrl-C / SIGTERM mid-way: old set back
        stuck = _roll_back(done)
        if not stuck:
            shutil.rmtree(backups, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        raise PromotionError(_promotion_failure(exc, stuck, backups)) from None
    shutil.rmtree(backups, ignore_errors=True)
    return [target for target, _ in done]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while a notebook ran."""


@dataclass
class Outcome:
    """How one notebook went."""

    name: str
    ok: bool
    detail: str
    seconds: float
    promoted: list[Path] = field(default_factory=list)
    trained: int | None = None
    reused: int | None = None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def describe(event: dict | None, elapsed: float) -> str:
    """One status phrase from the latest progress event: stage, counts, time left."""
    if not event:
        return f"running, {_clock(elapsed)} elapsed"
    stage = event.get("stage", "running")
    if stage in ("training", "waiting") and event.get("total"):
        total, done = int(event["total"]), int(event.get("done", 0))
        trained, reused = int(event.get("trained", 0)), int(event.get("reused", 0))
        text = f"{stage} {done}/{total} runs ({reused} reused)"
        if stage == "waiting":
            text += f", {event.get('held', '?')} held by other processes"
        left = ""
        if trained and done < total:  # the pace so far (parallel workers included)
            left = f", ~{_clock(elapsed / trained * (total - done))} left"
        return f"{text}, {_clock(elapsed)} elapsed{left}"
    return f"{stage}, {_clock(elapsed)} elapsed"


class Display:
    """Live status: one line rewritten in place on a terminal; otherwise a plain line when
    the status changed, at most one per ``interval`` seconds (and one a minute regardless)."""

    def __init__(self, stream=None, interval: float | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        if interval is None:
            interval = float(os.environ.get("EQUIVLIB_PROGRESS_INTERVAL", "10"))
        self.interval, self.last_time, self.last_text, self.width = interval, 0.0, "", 0

    def update(self, name: str, text: str) -> None:
        line = f"  {name:<36} {text}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self.width = len(line)
            return
        now = time.monotonic()
        key = re.sub(r"[\d:]+ elapsed.*", "", text)  # a change of stage or counts
        due = now - self.last_time >= (self.interval if key != self.last_text
                                       else max(60.0, self.interval))  # or a heartbeat
        if due:
            print(line, file=self.stream, flush=True)
            self.last_time, self.last_text = now, key

    def clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines()
             if line.strip() and "TCP without encryption" not in line]
    return (lines[-1] if lines else "papermill failed")[:300]


RUN_MARKER = "EQUIVLIB_RUN_MARKER"  # in the environment of every process a notebook starts


def marked_processes(token: str) -> list[int]:
    """The live processes whose environment holds ``RUN_MARKER=token``: everything a
    notebook started (papermill, the kernel, which runs in its own session, the grid's
    workers, the multiprocessing resource tracker, W&B's service, torchrun), whatever
    session or process group it moved to and whoever its parent now is (Linux ``/proc``;
    elsewhere an empty list). Zombies have no environment left and are not listed."""
    needle = f"{RUN_MARKER}={token}".encode()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            found.append(int(name))
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(proc: subprocess.Popen, token: str | None = None, grace: float = 5.0) -> None:
    """End every process of the notebook: papermill's process group and each process that
    carries the run's marker (:func:`marked_processes`; the kernel is in a session of its
    own, workers and W&B may outlive it); SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if token:
            _signal(marked_processes(token), sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not (token and marked_processes(token)):
                return
            time.sleep(0.1)


def _end_leftovers(token: str, grace: float = 2.0) -> None:
    """After a notebook ended: give what it started ``grace`` seconds to end by itself
    (e.g. W&B's service flushing), then end the rest."""
    deadline = time.monotonic() + grace
    while marked_processes(token):
        if time.monotonic() >= deadline:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _signal(marked_processes(token), sig)
                end = time.monotonic() + 5.0
                while marked_processes(token) and time.monotonic() < end:
                    time.sleep(0.1)
            return
        time.sleep(0.1)


def run_job(job: Job, profile: str, root: Path, figures: Path,
            display: Display | None = None) -> Outcome:
    """Execute one notebook with papermill in its own process group, showing its progress;
    on success rename its staged files into ``figures``."""
    from equivlib import progress  # here: equivlib loads torch, not needed to refuse bad input

    display = display or Display()
    build = root / "build" / profile
    staging = build / "staging" / job.notebook.stem
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    params_file = build / "staging" / f"{job.notebook.stem}.params.yaml"
    params_file.write_text(yaml.safe_dump(dict(job.parameters, out_dir=str(staging))))
    events = build / "staging" / f"{job.notebook.stem}.progress.jsonl"
    events.unlink(missing_ok=True)
    token = f"{os.getpid()}-{time.time_ns()}"  # marks every process this notebook starts
    env = dict(os.environ, **{progress.ENV: str(events), RUN_MARKER: token})
    command = [sys.executable, "-m", "papermill", str(job.notebook),
               str(build / job.notebook.name), "-f", str(params_file),
               "--cwd", str(job.notebook.parent), "--no-progress-bar", "--no-log-output",
               "-k", "python3"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    stderr_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()),
                              daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            display.update(job.notebook.name,
                           describe(progress.latest(events), time.perf_counter() - start))
            time.sleep(0.5)
    except (KeyboardInterrupt, Interrupted):
        display.clear()
        _stop(proc, token)
        raise
    _end_leftovers(token)
    reader.join(timeout=5)
    display.clear()
    seconds = time.perf_counter() - start
    last = progress.latest(events) or {}
    counts = {k: last.get(k) for k in ("trained", "reused")} if "total" in last else {}
    if proc.returncode != 0:
        return Outcome(job.notebook.name, False, _last_error("".join(stderr_chunks)), seconds,
                       **counts)
    try:
        moved = promote(staging, figures)
    except PromotionError as exc:
        return Outcome(job.notebook.name, False, str(exc), seconds, **counts)
    return Outcome(job.notebook.name, True, f"{len(moved)} file(s) -> {figures}", seconds,
                   moved, **counts)


def output_dirs(jobs: list[Job], profile: str, root: Path, figures: Path) -> dict[Path, str]:
    """Every directory the run will write: the figures, ``build/<profile>``, and each
    notebook's ``*_dir`` parameters (results, checkpoints, stand-in data; relative to
    notebooks/, where papermill runs them) -> what it is, for the error message."""
    dirs = {figures: "figures directory", root / "build" / profile: "build directory"}
    for job in jobs:
        values = {name: p.default for name, p in notebook_parameters(job.notebook).items()}
        values.update(job.parameters)
        for name, value in values.items():
            if name.endswith("_dir") and name not in DRIVER_PARAMETERS and value \
                    and name != "data_dir":  # data_dir is read, not written
                dirs.setdefault(root / "notebooks" / str(value),
                                f"{job.notebook.stem}: {name}")
    return dirs


def check_output_dirs(dirs: dict[Path, str]) -> None:
    """UsageError naming the first directory that cannot be written (probed without
    creating anything), before any notebook runs."""
    from equivlib.engine.checkpoint import check_writable_dir

    for path, what in dirs.items():
        try:
            check_writable_dir(path.resolve(), what)
        except ValueError as exc:
            raise UsageError(f"{exc}; no notebook was run") from None


def figures_dir(profile: str, root: Path = ROOT) -> Path:
    """Where a profile's figures land: ``figures/`` for cpu and paper (the committed ones
    come from cpu); smoke runs are functional checks and stay in ``build/smoke/figures``."""
    return root / "build" / "smoke" / "figures" if profile == "smoke" else root / "figures"


def summary(outcomes: list[Outcome], total: float) -> list[str]:
    """The closing table: per notebook the wall time, runs trained/reused, files promoted."""
    lines = [f"  {'notebook':<36} {'wall':>8}  {'runs trained/reused':>19}  result"]
    for o in outcomes:
        runs = f"{o.trained}/{o.reused}" if o.trained is not None else "-"
        result = f"{len(o.promoted)} file(s) promoted" if o.ok else "FAILED"
        lines.append(f"  {o.name:<36} {_clock(o.seconds):>8}  {runs:>19}  {result}")
    lines.append(f"  {'total':<36} {_clock(total):>8}")
    return lines


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def rebuild(jobs: list[Job], profile: str, root: Path, figures: Path,
            outcomes: list[Outcome] | None = None) -> list[str]:
    """Run every job (going on past failures), print one line each and a summary; return
    the failed names. ``outcomes`` collects what finished (also when interrupted)."""
    print(f"profile {profile}: {len(jobs)} notebook(s); executed copies in build/{profile}/",
          flush=True)
    outcomes = [] if outcomes is None else outcomes
    display = Display()
    start = time.perf_counter()
    for job in jobs:
        o = run_job(job, profile, root, figures, display)
        outcomes.append(o)
        print(f"  {o.name:<36} {o.seconds:7.1f} s  {'ok' if o.ok else 'FAILED':<6} {o.detail}",
              flush=True)
    print("summary:")
    print("\n".join(summary(outcomes, time.perf_counter() - start)), flush=True)
    return [o.name for o in outcomes if not o.ok]


def interrupted_report(jobs: list[Job], outcomes: list[Outcome], why: str) -> str:
    finished = [o.name for o in outcomes if o.ok]
    promoted = [p.name for o in outcomes for p in o.promoted]
    stopped = jobs[len(outcomes)].notebook.name if len(outcomes) < len(jobs) else "-"
    return "\n".join([
        f"interrupted ({why}) during {stopped}; its processes were ended.",
        f"  finished notebooks: {', '.join(finished) or 'none'}",
        f"  figures promoted: {', '.join(promoted) or 'none'}"
        f" (the interrupted notebook's figures were not touched)",
        "  finished training runs (results store) and per-epoch checkpoints are kept:",
        "  run the same command again to resume."])


def print_parameters(jobs: list[Job]) -> int:
    """Print one notebook's parameters as a papermill parameters file (``-f``)."""
    if len(jobs) != 1:
        raise UsageError("--params-for takes one notebook number, e.g. --params-for 01")
    print(yaml.safe_dump(jobs[0].parameters, sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers")
    parser.add_argument("--params-for", metavar="NN", default=None,
                        help="print notebook NN's parameters in this profile as YAML (for "
                             "papermill -f) and exit")
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        jobs = plan(args.profile, args.only if args.params_for is None else args.params_for,
                    root)
        if args.params_for is not None:
            return print_parameters(jobs)
    except UsageError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    figures = figures_dir(args.profile, root)
    try:
        check_output_dirs(output_dirs(jobs, args.profile, root, figures))
    except UsageError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    outcomes: list[Outcome] = []
    stops = (signal.SIGTERM, signal.SIGHUP)  # kill PID, a closed terminal
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in stops}
    # Ctrl-C even where the shell that started us ignores SIGINT (a non-interactive shell's
    # background job inherits SIG_IGN): the driver must still end every process of the run
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        failed = rebuild(jobs, args.profile, root, figures, outcomes)
    except (KeyboardInterrupt, Interrupted) as exc:
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print("\n" + interrupted_report(jobs, outcomes, why), flush=True)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        print(f"{len(failed)} of {len(jobs)} notebook(s) FAILED: {', '.join(failed)} "
              f"(why: the FAILED lines above; executed copies in build/{args.profile}/)")
        return 1
    print(f"all {len(jobs)} notebook(s) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
