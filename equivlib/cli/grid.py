"""The ``grid`` command: train (or reuse) every run of a notebook's grid with a profile's
parameters, into the results store the notebook reads (e.g. on a GPU machine, or as a
SLURM array with ``--shard K/N``, before the notebook re-draws its figures from the store).

The notebook's parameters come from :mod:`equivlib.experiments.notebook_params`, the
parser ``./run_all.sh`` uses: ``grid --notebook X --profile P`` refuses what
``./run_all.sh --profile P --only X`` refuses, with the same line (run_all.sh adds "; no
notebook was run").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from equivlib.cli import CliError
from equivlib.data.base import DatasetMissingError
from equivlib.experiments.notebook_params import (
    DEFAULTS_PROFILE,
    ParamsError,
    available_notebooks,
    check_profile,
    load_profile,
    parameter_defaults,
)


# ------------------------------------------------------------------ the notebooks' grids
def grid_notebooks() -> list[str]:
    """The notebooks that have a grid, in order (:mod:`equivlib.experiments.grids`)."""
    from equivlib.experiments import grids

    return grids.grid_names()


def notebook_grid(notebook: str, params: dict[str, Any], *,
                  write_data: bool = True) -> tuple[list[Any], Callable[[Any], str]]:
    """The run configs of ``notebook``'s grid with ``params`` and the one-line label of a
    run, from the registry the notebooks use (``write_data=False``: no stand-in data
    written, for ``--list``). ValueError for parameters the grid refuses."""
    from equivlib.experiments import grids

    grid = grids.notebook_grid(notebook, params, write_data=write_data)
    return grid.configs, grid.label


# ------------------------------------------------------------------ parameters
def notebook_defaults(notebook: Path) -> dict[str, Any]:
    """The defaults of a notebook's ``parameters`` cell; CliError when it has none."""
    try:
        return parameter_defaults(notebook)
    except ParamsError as exc:
        raise CliError(str(exc)) from None


def profile_parameters(root: Path, profile: str, notebook: str) -> dict[str, Any]:
    """``notebook``'s parameters in ``params/<profile>.yaml`` (its defaults, updated with
    its section), after the checks ``./run_all.sh`` makes of the whole file; CliError
    otherwise."""
    params_file = root / "params" / f"{profile}.yaml"
    try:
        settings = load_profile(root / "params", profile)
        check_profile(settings, available_notebooks(root / "notebooks"),
                      f"params/{profile}.yaml")
    except ParamsError as exc:
        raise CliError(str(exc)) from None
    if profile != DEFAULTS_PROFILE and notebook not in settings:  # smoke: its defaults
        raise CliError(f"{params_file} has no section {notebook!r}, so this grid would "
                       f"train the notebook's smoke defaults into the {profile} store: "
                       f"restore the section (git diff {params_file}), or use --profile smoke")
    params = notebook_defaults(root / "notebooks" / f"{notebook}.ipynb")
    params.update(settings.get(notebook) or {})
    return params


# ------------------------------------------------------------------ the command
def add_grid_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "grid", help="train (or reuse) every run of a notebook's grid",
        description="Train the runs a notebook needs, with a profile's parameters, into the "
                    "same results store the notebook reads (stored runs are reused).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--notebook", required=True, help="notebook name, e.g. 04_rotmnist_rotation")
    p.add_argument("--profile", default="cpu", help="params/<profile>.yaml section to use")
    p.add_argument("--root", default=".", help="project root (holds params/ and notebooks/)")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: profile's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--device", default=None, help="torch device (default: profile's)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="train only the K-th of N disjoint parts of the grid (1 <= K <= N), "
                        "e.g. K=$SLURM_ARRAY_TASK_ID; shards share the results store")
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    return p


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N."""
    k, slash, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not slash or not 1 <= index <= count:
        raise CliError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8")
    return index, count


def grid_command(a: argparse.Namespace) -> int:
    """List, or train (reusing stored runs), the runs of ``--notebook``'s grid."""
    from equivlib.engine.config import RunConfig
    from equivlib.engine.grid import run_grid, shard
    from equivlib.store.writable import check_writable_dir

    known = grid_notebooks()
    if a.notebook not in known:
        raise CliError(f"no grid for notebook {a.notebook!r}; known: {', '.join(known)}")
    root = Path(a.root)
    notebook = root / "notebooks" / f"{a.notebook}.ipynb"
    params_file = root / "params" / f"{a.profile}.yaml"
    for path in (notebook, params_file):
        if not path.exists():
            raise CliError(f"{path} not found (run from the project root or pass --root)")
    params = profile_parameters(root, a.profile, a.notebook)
    for flag in ("workers", "threads", "device"):
        if getattr(a, flag) is not None:
            params[flag] = getattr(a, flag)
    part = parse_shard(a.shard) if a.shard is not None else None
    # the notebook's directories are relative to notebooks/, where papermill runs it
    base = root / "notebooks"
    if params.get("stand_in_dir"):
        params["stand_in_dir"] = str(base / params["stand_in_dir"])
    try:
        configs, label = notebook_grid(a.notebook, params, write_data=not a.list)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if part is not None:
        configs = shard(configs, *part)
    results_dir = base / params["results_dir"]
    checkpoint_dir = base / params["checkpoint_dir"]
    if a.list:
        for c in configs:
            print(c.key(), label(c), f"seed {c.train.seed}")
        return 0

    def describe(config: Any) -> str:
        return f"{RunConfig.from_dict(config).key()} {label(config)} seed " \
               f"{config['train']['seed']}"

    def report(config: Any, metrics: dict[str, Any], reused: bool) -> None:
        print(f"{'reused ' if reused else 'trained'} {describe(config)}: mean accuracy "
              f"{metrics['test_acc_mean']:.3f}", flush=True)

    def held(config: Any, holder: dict[str, Any] | None) -> None:
        who = (f"{holder.get('host', '?')} pid {holder.get('pid', '?')} since "
               f"{holder.get('since', '?')}" if holder else "another process")
        print(f"waiting {describe(config)}: being trained by {who}", flush=True)

    try:
        check_writable_dir(results_dir, f"results directory of {a.notebook}")
        check_writable_dir(checkpoint_dir, f"checkpoint directory of {a.notebook}")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if part is not None:
        print(f"shard {part[0]}/{part[1]}: {len(configs)} run(s)", flush=True)
    try:
        data_dir = (params["stand_in_dir"] if params.get("stand_in")
                    else params.get("data_dir") or None)
        run_grid(configs, results_dir, checkpoint_dir, workers=params["workers"],
                 threads=params["threads"], data_dir=data_dir,
                 download=bool(params.get("download", False)), device=params["device"],
                 processes_per_run=params.get("gpus_per_run", 1), on_done=report,
                 on_held=held)
    except (ValueError, DatasetMissingError) as exc:
        raise CliError(str(exc)) from None
    return 0
