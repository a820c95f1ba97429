"""Execute the numbered notebooks with papermill for one profile (called by run_all.sh).

Each notebook runs with the parameters of ``params/<profile>.yaml`` (its own section, plus
``profile`` and ``out_dir``) and writes its executed copy to ``build/<profile>/``. Its
figures go to a fresh staging folder; only when the notebook finishes are they renamed
into ``figures/`` (``build/smoke/figures/`` for the smoke profile, so a quick check never
replaces the committed cpu figures), so a failing notebook leaves its old figures untouched.
All arguments are validated before any notebook starts.

While a notebook runs, the terminal shows which one, what it is doing (the training grid
reports through ``EQUIVLIB_PROGRESS_FILE``, see :mod:`equivlib.progress`), the elapsed time
and an estimate of what is left: one line updated in place on a terminal, plain lines (at
most one per ``EQUIVLIB_PROGRESS_INTERVAL`` seconds, default 10) otherwise. None of it
enters the executed notebooks. A summary follows the last notebook. Ctrl-C or SIGTERM ends
the running notebook's processes, says what finished and what is kept, and exits 130.
"""

from __future__ import annotations

import argparse
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

from equivlib import progress

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
    profiles = available_profiles(params_dir)
    if profile not in profiles:
        raise UsageError(
            f"unknown profile {profile!r}: expected one of {', '.join(profiles)} "
            f"(files in {params_dir})"
        )
    data = yaml.safe_load((params_dir / f"{profile}.yaml").read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{params_dir / profile}.yaml must map notebook names to parameters")
    return data


def select(notebooks: dict[str, Path], only: str | None) -> list[str]:
    if not notebooks:
        raise UsageError("no notebooks found (expected notebooks/NN_name.ipynb)")
    if not only:
        return list(notebooks)
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    wanted = [w.zfill(2) if w.isdigit() else w for w in wanted]
    unknown = [w for w in wanted if w not in notebooks]
    if unknown:
        raise UsageError(
            f"unknown notebook number(s) {', '.join(unknown)}: available are "
            f"{', '.join(notebooks)}"
        )
    return list(dict.fromkeys(wanted))


def plan(profile: str, only: str | None, root: Path = ROOT) -> list[Job]:
    """Validate the request and return the jobs to run, before running anything."""
    settings = load_profile(root / "params", profile)
    notebooks = available_notebooks(root / "notebooks")
    jobs = []
    for number in select(notebooks, only):
        path = notebooks[number]
        params = dict(settings.get(path.stem) or {})
        params["profile"] = profile
        jobs.append(Job(number, path, params))
    return jobs


def promote(staging: Path, figures: Path) -> list[Path]:
    """Rename every file the notebook staged into ``figures`` (same filesystem: atomic)."""
    figures.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in sorted(staging.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            target = figures / path.name
            path.replace(target)
            moved.append(target)
    return moved


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


def _stop(proc: subprocess.Popen) -> None:
    """End the notebook's process group: papermill, its kernel and the kernel's workers."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


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
    env = dict(os.environ, **{progress.ENV: str(events)})
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
        _stop(proc)
        raise
    reader.join(timeout=5)
    display.clear()
    seconds = time.perf_counter() - start
    last = progress.latest(events) or {}
    counts = {k: last.get(k) for k in ("trained", "reused")} if "total" in last else {}
    if proc.returncode != 0:
        return Outcome(job.notebook.name, False, _last_error("".join(stderr_chunks)), seconds,
                       **counts)
    moved = promote(staging, figures)
    return Outcome(job.notebook.name, True, f"{len(moved)} file(s) -> {figures}", seconds,
                   moved, **counts)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers")
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.root)
    try:
        jobs = plan(args.profile, args.only, root)
    except UsageError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    figures = figures_dir(args.profile, root)
    outcomes: list[Outcome] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        failed = rebuild(jobs, args.profile, root, figures, outcomes)
    except (KeyboardInterrupt, Interrupted) as exc:
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print("\n" + interrupted_report(jobs, outcomes, why), flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed:
        print(f"{len(failed)} of {len(jobs)} notebook(s) FAILED: {', '.join(failed)} "
              f"(executed copies with the error in build/{args.profile}/)")
        return 1
    print(f"all {len(jobs)} notebook(s) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
