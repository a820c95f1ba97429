"""One run over 2 gloo processes: the engine's DDP step (synchronised batch norm, gradient
all-reduce, sharded batches) is the single-process step, checked in float64 where summation
order cannot hide a wrong formula; the ``train`` command under torchrun (``python -m
torch.distributed.run``) matches a 1-process run; and a killed 2-process run resumes from
its last checkpoint to the very same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from equivlib.data.loaders import set_epoch, train_loader
from equivlib.engine.distributed import DistContext
from equivlib.engine.loop import train_one_epoch
from equivlib.layers import convert_sync_batchnorm
from equivlib.models import get_model
from tests.ddp_helpers import exit_worker

EPOCHS = 3
RUN = ["train", "--dataset", "mnist", "--model", "p4_mnist_cnn", "--channels", "4",
       "--epochs", str(EPOCHS), "--batch-size", "32", "--lr", "0.003", "--dropout", "0",
       "--set", "optim.name=sgd",
       "--sizes", "512", "128", "128", "--angle-step", "90", "--regime", "biased"]
ENV = {"WANDB_MODE": "disabled", "EQUIVLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1",
       "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _command(processes: int, workdir: Path) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(processes), "-m", "equivlib"] if processes > 1
                else [sys.executable, "-m", "equivlib"])
    return [*launcher, *RUN, "--results-dir", str(workdir / "results"),
            "--checkpoint-dir", str(workdir / "checkpoint")]


def _train(processes: int, workdir: Path) -> dict:
    out = subprocess.run(_command(processes, workdir), env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    summaries = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 alone reports (and writes)
    return _stored(workdir)


def _stored(workdir: Path) -> dict:
    files = list((workdir / "results").glob("*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())["metrics"]


# ------------------------------------------------------------------ the step, in float64
def _train_steps(rank: int, world: int, sync: bool, store: str, out: str) -> None:
    """Two epochs of 4 global batches of 16 with Adam, through the engine's loader and loop;
    rank 0 saves the final weights and epoch statistics."""
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world)
    try:
        torch.manual_seed(0)
        base = get_model("p4_mnist_cnn", num_classes=10, channels=4, dropout=0.0).double()
        model = base
        if world > 1:
            base = convert_sync_batchnorm(base) if sync else base
            model = torch.nn.parallel.DistributedDataParallel(base)
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.rand(64, 3, 28, 28, generator=g, dtype=torch.float64),
                             torch.randint(0, 10, (64,), generator=g))
        loader = train_loader(data, 16, seed=0, rank=rank, world_size=world)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        ctx = DistContext(rank, world)
        for epoch in range(2):
            set_epoch(loader, epoch)
            stats = train_one_epoch(model, loader, optimizer, mean=[0.5] * 3, std=[0.3] * 3,
                                    device=torch.device("cpu"), ctx=ctx)
        if rank == 0:
            torch.save({"state": base.state_dict(), "stats": stats}, out)
    finally:
        if world > 1:
            dist.destroy_process_group()
    if world > 1:
        exit_worker()


def _trained(tmp_path: Path, world: int, sync: bool = True) -> dict:
    out = str(tmp_path / f"w{world}-{sync}.pt")
    if world == 1:
        _train_steps(0, 1, sync, "", out)
    else:
        mp.spawn(_train_steps, args=(world, sync, str(tmp_path / f"store-{sync}"), out),
                 nprocs=world, join=True)
    return torch.load(out)


def _bn_cancelled() -> set[str]:
    """Biases of the convs that feed a batch norm, and those norms' running means: batch
    norm subtracts the bias again, so its true gradient is exactly 0 and Adam steps on the
    rounding noise of that 0 (full-size steps of either sign, in any precision); the running
    mean follows the bias. Neither changes what the network computes in training."""
    body = get_model("p4_mnist_cnn", num_classes=10, channels=4, dropout=0.0).body
    keys = set()
    for i in range(len(body) - 1):
        if isinstance(body[i + 1], torch.nn.modules.batchnorm._BatchNorm):
            keys |= {f"body.{i}.bias", f"body.{i + 1}.running_mean"}
    return keys


def _max_relative_gap(a: dict, b: dict, skip: set[str] = frozenset()) -> float:
    gaps = [((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)).item()
            for k in b if b[k].is_floating_point() and k not in skip]
    return max(gaps)


def test_ddp_step_equals_the_one_process_step_in_float64(tmp_path):
    """Float64 leaves only summation order (~1e-16) between the two, so after 8 Adam steps
    every weight, batch-norm parameter and running variance must agree to 1e-9 (measured:
    3e-13); per-process batch statistics (no sync, the control) miss by far more."""
    one = _trained(tmp_path, 1)
    two = _trained(tmp_path, 2)
    skip = _bn_cancelled()
    assert len(skip) == 14  # 7 conv + batch-norm pairs
    assert _max_relative_gap(two["state"], one["state"], skip) < 1e-9
    assert two["stats"]["train_images"] == one["stats"]["train_images"] == 64
    assert two["stats"]["train_loss"] == pytest.approx(one["stats"]["train_loss"], rel=1e-9)
    unsynced = _trained(tmp_path, 2, sync=False)
    assert _max_relative_gap(unsynced["state"], one["state"], skip) > 1e-4


# ------------------------------------------------------------------ the command, in float32
@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    return _train(2, tmp_path_factory.mktemp("ddp2"))


def test_train_command_under_torchrun_matches_one_process(two_processes, tmp_path):
    """The same config trained by 1 process and by torchrun with 2: same images, same
    counts, rank 0 alone writes, and in float32 the same numbers up to summation order. With
    plain SGD that stays at rounding level: measured 2e-8 relative on the epoch losses, so
    every epoch's loss must agree to 1e-5 and each accuracy to one of the 128 images. (With
    Adam the same config drifts 3e-4 within the first 16 steps: its first steps are nearly
    sign steps, which turn rounding-level gradient differences into lr-size ones, whatever
    the number of processes; the float64 test above checks the DDP step with Adam.)"""
    one = _train(1, tmp_path)
    two = two_processes
    assert one["timing"]["processes"] == 1 and two["timing"]["processes"] == 2
    assert len(one["history"]) == len(two["history"]) == EPOCHS
    assert [h["train_images"] for h in one["history"]] == \
        [h["train_images"] for h in two["history"]] == [512] * EPOCHS
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["valid_acc"] == pytest.approx(a["valid_acc"], abs=1 / 128 + 1e-9)
    assert set(one["test_acc"]) == set(two["test_acc"]) == {"0.0", "90.0", "180.0", "270.0"}
    for angle, acc in one["test_acc"].items():
        assert two["test_acc"][angle] == pytest.approx(acc, abs=1 / 128 + 1e-9)


def _epoch_of(checkpoint: Path) -> int | None:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def test_killed_two_process_run_resumes_to_the_same_result(two_processes, tmp_path):
    """SIGKILL the whole torchrun process group once a checkpoint exists and before the
    last epoch; the restarted run resumes from it and ends bit-identical (gloo sums two
    addends in a fixed order, so a 2-process CPU run is deterministic)."""
    proc = subprocess.Popen(_command(2, tmp_path), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "checkpoint" / "last.pt"
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            epoch = _epoch_of(checkpoint) if checkpoint.exists() else None
            if epoch is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = epoch
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at is not None and 1 <= killed_at < EPOCHS, "the run was not killed mid-way"
    assert not list((tmp_path / "results").glob("*.json"))  # nothing stored by the dead run
    resumed = _train(2, tmp_path)
    drop = ("timing",)
    assert {k: v for k, v in resumed.items() if k not in drop} == \
        {k: v for k, v in two_processes.items() if k not in drop}
