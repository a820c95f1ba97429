"""One run over several processes, launched with ``torchrun`` (PyTorch's own launcher): what
:func:`equivlib.engine.grid.run_grid` does with ``processes_per_run > 1`` (e.g. notebook
08's ``gpus_per_run``).

The run's config goes to a file, ``torchrun --standalone --nproc_per_node N -m equivlib
train --config FILE`` trains it with DDP (NCCL on GPUs, gloo on the CPU), rank 0 stores the
result, and this process reads it back from the results store. Across machines, start
``torchrun`` yourself with a rendezvous endpoint (README, "Scaling out").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from equivlib.engine.config import RunConfig
from equivlib.store.results import load_result

LOG_NAME = "torchrun.log"


class LaunchError(RuntimeError):
    """The torchrun processes of a run failed; the message ends with their last log lines."""


def torchrun_command(config_file: str | os.PathLike, processes: int, *,
                     results_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike,
                     data_dir: str | os.PathLike | None = None, download: bool = False,
                     device: str = "cpu") -> list[str]:
    """The command line that trains ``config_file`` on ``processes`` local processes."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes per run must be an int >= 1, got {processes!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "equivlib", "train",
               "--config", str(config_file), "--results-dir", str(results_dir),
               "--checkpoint-dir", str(checkpoint_dir), "--device", device]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    if download:
        command.append("--download")
    return command


def train_with_torchrun(config: RunConfig, processes: int, *, results_dir: str | os.PathLike,
                        checkpoint_dir: str | os.PathLike,
                        data_dir: str | os.PathLike | None = None, download: bool = False,
                        device: str = "cpu", threads: int = 1) -> dict[str, Any]:
    """Train ``config`` with ``processes`` DDP processes (``threads`` torch threads each) and
    return its stored metrics. Their output goes to ``checkpoint_dir/torchrun.log``; a
    failure raises :class:`LaunchError` with the log's tail."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=checkpoint_dir,
                                     delete=False) as f:
        f.write(config_json(config))
    command = torchrun_command(f.name, processes, results_dir=results_dir,
                               checkpoint_dir=checkpoint_dir, data_dir=data_dir,
                               download=download, device=device)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "EQUIVLIB_PROGRESS": "0"}
    log = checkpoint_dir / LOG_NAME
    try:
        with open(log, "w") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  check=False).returncode
    finally:
        os.unlink(f.name)
    stored = load_result(config.to_dict(), results_dir)
    if code != 0 or stored is None:
        raise LaunchError(f"torchrun with {processes} processes exited with status {code} "
                          f"(full log: {log}); {_reason(log)}")
    return stored["metrics"]


def _reason(log: Path) -> str:
    """The processes' own error lines (``python -m equivlib train: error: ...``, once each),
    else the log's last lines."""
    lines = log.read_text(errors="replace").splitlines()
    errors = list(dict.fromkeys(line.strip() for line in lines
                                if "python -m equivlib train: error:" in line))
    if errors:
        return "the processes said: " + " / ".join(errors)
    return "last lines:\n" + "\n".join(lines[-15:])


def config_json(config: RunConfig) -> str:
    """The config as JSON, the form ``train --config`` reads."""
    return json.dumps(config.to_dict(), indent=1)
