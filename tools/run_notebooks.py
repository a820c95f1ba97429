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
notebook starts, by :mod:`equivlib.experiments.notebook_params` (which ``python -m equivlib
grid`` uses too, so both refuse the same files with the same messages).

While a notebook runs, the terminal shows which one, what it is doing (the training grid
reports through ``EQUIVLIB_PROGRESS_FILE``; :mod:`equivlib.progress` shows it), the elapsed time
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
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from equivlib import progress
from equivlib.experiments.notebook_params import (
    DRIVER_PARAMETERS,
    ParamsError,
    available_notebooks,
    check_profile,
    check_sections,
    load_profile,
    notebook_parameters,
)
from equivlib.progress import Display, clock, describe
from equivlib.store import check_writable_dir

ROOT = Path(__file__).resolve().parent.parent
NO_RUN = "; no notebook was run"  # the end of every line that refuses a params file


class UsageError(Exception):
    """Bad command-line input: reported in one line, before any work is done."""


@dataclass(frozen=True)
class Job:
    number: str
    notebook: Path
    parameters: dict


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


def plan(profile: str, only: str | None, root: Path = ROOT) -> list[Job]:
    """Validate the request and return the jobs to run, before running anything."""
    try:
        settings = load_profile(root / "params", profile, tail=NO_RUN)
        notebooks = available_notebooks(root / "notebooks")
        numbers = select(notebooks, only)
        check_profile(settings, notebooks, f"params/{profile}.yaml", tail=NO_RUN)
        check_sections(settings, profile, [notebooks[n].stem for n in numbers], tail=NO_RUN)
    except ParamsError as exc:
        raise UsageError(str(exc)) from None
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
    for path, what in dirs.items():
        try:
            check_writable_dir(path.resolve(), what)
        except ValueError as exc:
            raise UsageError(f"{exc}{NO_RUN}") from None


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
        lines.append(f"  {o.name:<36} {clock(o.seconds):>8}  {runs:>19}  {result}")
    lines.append(f"  {'total':<36} {clock(total):>8}")
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
    except (UsageError, ParamsError) as exc:  # ParamsError: a parameters cell that won't parse
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
