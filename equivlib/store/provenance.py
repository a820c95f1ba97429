"""Where a result was made: the machine, the software, the code.

:func:`collect` returns one flat, JSON-able dict, stored with every run of the results store
(``record["provenance"]``) and beside every figure's numbers (``NAME.provenance.json``)::

    cpu        CPU model (/proc/cpuinfo "model name", else platform.processor(), else "unknown")
    machine    architecture (platform.machine(), e.g. "x86_64")
    platform   OS string (platform.platform())
    python     Python version
    torch      torch.__version__
    cuda       torch.version.cuda (None for a CPU-only build of torch)
    device     the device used ("cpu", "cuda:0", ...; None where none was used, e.g. a figure)
    gpu        the GPU's name when the device is CUDA, else None
    threads    torch.get_num_threads()
    processes  number of processes of the run (DDP world size; else 1)
    lock       sha256 (first 16 hex) of the repository's requirements.lock, or "absent"
    commit     git commit of the repository holding the package, or "unknown" (no git, an
               installed wheel, a timeout)
    dirty      whether that work tree differs from the commit (tracked changes or untracked,
               not ignored, files; figures/, which a rebuild itself rewrites, not counted);
               None when the commit is unknown

The git and lock part is computed once per process (git runs with a short timeout). Only
:data:`RESULT_FIELDS` can change a result; :func:`differences` names those that differ.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOCK_NAME = "requirements.lock"
GIT_TIMEOUT_SECONDS = 3.0
RESULT_FIELDS = ("commit", "cpu", "gpu", "torch", "cuda", "lock")
"""The fields that can change a result (the commit compares with its dirty flag)."""
UNKNOWN = "unknown"
OUTPUTS_DIR = "figures"  # what ./run_all.sh rebuilds; not counted as a dirty tree


def repo_root() -> Path:
    """The folder that holds the ``equivlib`` package (the repository in a checkout; the
    site-packages folder when installed)."""
    return Path(__file__).resolve().parents[2]


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name; ``platform.processor()`` where /proc/cpuinfo has none;
    "unknown" where neither says."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return " ".join(platform.processor().split()) or UNKNOWN


def lock_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 (first 16 hex digits) of ``root/requirements.lock``; "absent" without one."""
    path = Path(root if root is not None else repo_root()) / LOCK_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "absent"


def _git(root: Path, *args: str) -> str | None:
    """stdout of ``git -C root ARGS``, or None (no git, not a repository, error, timeout).
    GIT_* variables that point git elsewhere are dropped; optional locks are off, so a
    ``git status`` never competes with the user's own git commands for the index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_SECONDS, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: str | os.PathLike | None = None) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the work tree at ``root``; ``("unknown", None)`` when git or
    the repository is unavailable, or when ``root`` is only a folder inside another
    repository (e.g. a virtual environment inside a checkout)."""
    root = Path(root if root is not None else repo_root()).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root:
        return UNKNOWN, None
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    # figures/ holds what a rebuild writes: its own outputs do not make the code dirty
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--",
                  ".", f":(exclude){OUTPUTS_DIR}")
    if commit is None or status is None:
        return UNKNOWN, None
    return commit.strip(), bool(status.strip())


@functools.lru_cache(maxsize=8)
def _static(root: str) -> dict[str, Any]:
    commit, dirty = git_state(root)
    return {"cpu": cpu_model(), "machine": platform.machine() or UNKNOWN,
            "platform": platform.platform(), "python": platform.python_version(),
            "lock": lock_hash(root), "commit": commit, "dirty": dirty}


def clear_cache() -> None:
    """Forget the cached git / lock / machine part (e.g. after a commit in a long session)."""
    _static.cache_clear()


def _processes() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def collect(device: Any = None, *, processes: int | None = None, threads: int | None = None,
            root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The provenance of this process (see the module's docstring for the fields).

    ``device``: the device a run used (a string or ``torch.device``; None: none);
    ``processes``: its number of processes (default: the world size of an initialised
    ``torch.distributed`` group, else 1); ``threads``: default ``torch.get_num_threads()``;
    ``root``: the repository (default: the one holding the package)."""
    import torch

    static = _static(str(Path(root if root is not None else repo_root()).resolve()))
    dev = None if device is None else torch.device(device)
    gpu = None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(dev)
    return {**static, "torch": str(torch.__version__), "cuda": torch.version.cuda,
            "device": None if dev is None else str(dev), "gpu": gpu,
            "threads": int(threads if threads is not None else torch.get_num_threads()),
            "processes": int(processes if processes is not None else _processes())}


def commit_label(provenance: dict[str, Any]) -> str:
    """``"1a2b3c4"``, ``"1a2b3c4 (dirty)"`` or ``"unknown"``."""
    commit = str(provenance.get("commit") or UNKNOWN)
    if commit == UNKNOWN:
        return UNKNOWN
    return commit[:7] + (" (dirty)" if provenance.get("dirty") else "")


def _compared(provenance: dict[str, Any], field: str) -> Any:
    if field == "commit":
        return provenance.get("commit") or UNKNOWN, provenance.get("dirty")
    return provenance.get(field)


def _phrase(provenance: dict[str, Any], field: str) -> str:
    value = provenance.get(field)
    if field == "commit":
        label = commit_label(provenance)
        return "at an unknown commit" if label == UNKNOWN else f"at commit {label}"
    if field == "cpu":
        return f"on {value or UNKNOWN}"
    if field == "gpu":
        return f"on GPU {value}" if value else "without a GPU"
    if field == "torch":
        return f"with torch {value or UNKNOWN}"
    if field == "cuda":
        return f"with CUDA {value}" if value else "with a CPU-only torch"
    return f"with lock {value}" if value and value != "absent" else f"without {LOCK_NAME}"


def _value(provenance: dict[str, Any], field: str) -> str:
    value = provenance.get(field)
    if field == "commit":
        return f"commit {commit_label(provenance)}"
    if field == "cpu":
        return str(value or UNKNOWN)
    if field == "gpu":
        return f"GPU {value}" if value else "no GPU"
    if field == "torch":
        return f"torch {value or UNKNOWN}"
    if field == "cuda":
        return f"CUDA {value}" if value else "no CUDA"
    return f"lock {value}" if value and value != "absent" else f"no {LOCK_NAME}"


def differing_fields(made: dict[str, Any] | None, here: dict[str, Any] | None) -> list[str]:
    """The :data:`RESULT_FIELDS` in which ``made`` and ``here`` differ (all of them when
    either is unknown, i.e. None or not a dict)."""
    if not isinstance(made, dict) or not isinstance(here, dict):
        return [] if made is None and here is None else list(RESULT_FIELDS)
    return [f for f in RESULT_FIELDS if _compared(made, f) != _compared(here, f)]


def differences(made: dict[str, Any] | None, here: dict[str, Any] | None) -> str:
    """Where ``made`` differs from ``here`` in a field that can change results, as a short
    phrase about ``made`` (``"at commit 1a2b3c4 (dirty), on AMD EPYC 9R14"``); "" when they
    agree; ``"with unknown provenance"`` when ``made`` is unknown (None, e.g. a record
    from before provenance was stored)."""
    if not isinstance(made, dict):
        return "" if made is None and here is None else "with unknown provenance"
    return ", ".join(_phrase(made, f) for f in differing_fields(made, here))


def made_elsewhere(provenances: Iterable[dict[str, Any] | None],
                   here: dict[str, Any]) -> str | None:
    """One line about the runs whose provenance differs from ``here`` (None when none does):
    ``"reused 12 runs made elsewhere: 8 at commit 1a2b3c4 (dirty); 4 on AMD EPYC 9R14
    (this: commit 5e6f7a8, Intel Xeon ...)"``: counts per distinct difference, largest
    first, then this process's own values of the fields named."""
    groups: Counter[str] = Counter()
    named: set[str] = set()
    for made in provenances:
        text = differences(made, here)
        if text:
            groups[text] += 1
            if isinstance(made, dict):
                named.update(differing_fields(made, here))
    if not groups:
        return None
    total = sum(groups.values())
    parts = "; ".join(f"{n} {text}" for text, n in sorted(groups.items(),
                                                            key=lambda kv: (-kv[1], kv[0])))
    this = ", ".join(_value(here, f) for f in RESULT_FIELDS if f in named)
    return (f"reused {total} run{'s' if total != 1 else ''} made elsewhere: {parts}"
            + (f" (this: {this})" if this else ""))
