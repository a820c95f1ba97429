"""Execute the numbered notebooks with papermill for one profile (called by run_all.sh).

Each notebook runs with the parameters of ``params/<profile>.yaml`` (its own section, plus
``profile`` and ``out_dir``) and writes its executed copy to ``build/<profile>/``. Its
figures go to a fresh staging folder; only when the notebook finishes are they renamed
into ``figures/`` (``build/smoke/figures/`` for the smoke profile, so a quick check never
replaces the committed cpu figures), so a failing notebook leaves its old figures untouched.
All arguments are validated before any notebook starts.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from dataclasses import dataclass
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


def run_job(job: Job, profile: str, root: Path, figures: Path) -> tuple[bool, str]:
    import papermill

    build = root / "build" / profile
    staging = build / "staging" / job.notebook.stem
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    params = dict(job.parameters, out_dir=str(staging))
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(build / job.notebook.name),
            parameters=params,
            cwd=str(job.notebook.parent),
            progress_bar=False,
            log_output=False,
            kernel_name="python3",
        )
    except Exception as exc:  # a notebook that raises: report it and go on
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        return False, reason[:300]
    moved = promote(staging, figures)
    return True, f"{len(moved)} file(s) -> {figures}"


def figures_dir(profile: str, root: Path = ROOT) -> Path:
    """Where a profile's figures land: ``figures/`` for cpu and paper (the committed ones
    come from cpu); smoke runs are functional checks and stay in ``build/smoke/figures``."""
    return root / "build" / "smoke" / "figures" if profile == "smoke" else root / "figures"


def rebuild(jobs: list[Job], profile: str, root: Path, figures: Path) -> list[str]:
    """Run every job (going on past failures), print one line each; return the failed names."""
    print(f"profile {profile}: {len(jobs)} notebook(s); executed copies in build/{profile}/",
          flush=True)
    failed = []
    for job in jobs:
        start = time.perf_counter()
        ok, detail = run_job(job, profile, root, figures)
        seconds = time.perf_counter() - start
        status = "ok" if ok else "FAILED"
        print(f"  {job.notebook.name:<36} {seconds:7.1f} s  {status:<6} {detail}", flush=True)
        if not ok:
            failed.append(job.notebook.name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers")
    args = parser.parse_args(argv)
    try:
        jobs = plan(args.profile, args.only)
    except UsageError as exc:
        print(f"run_all.sh: error: {exc}", file=sys.stderr)
        return 2
    figures = figures_dir(args.profile)
    failed = rebuild(jobs, args.profile, ROOT, figures)
    if failed:
        print(f"{len(failed)} of {len(jobs)} notebook(s) FAILED: {', '.join(failed)} "
              f"(executed copies with the error in build/{args.profile}/)")
        return 1
    print(f"all {len(jobs)} notebook(s) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
