"""Every "exact" cell of the zoo table measured (notebook 09).

A cell is exact when the tracer finds every sampling grid symmetric. That is a claim about
real networks, so each one is measured: the model is built with random weights in float64,
its position-indexed weights are made D4-symmetric (:func:`symmetrize`), and the logits of a
random image are compared with those of the image turned by 90° (one quarter turn suffices:
invariance to it implies invariance to all four), relative to the change that another
random image makes. Exact must mean a change at float64 rounding (below :data:`INVARIANT`);
a cell the measurement contradicts stops the notebook.

Cells the tracer marks ``grid_only`` (a positional embedding or a flattening head) are
measured with those weights symmetrised too, and once per model without them, where the
change must be visible (above :data:`VARIANT`): the grids are exact, the embedding or head
is what breaks invariance. A few cells one pixel off the exact size are measured as well,
with every weight symmetrised: their change must be visible.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from equivlib.experiments.symmetric_weights import symmetrize
from equivlib.progress import emit

INVARIANT = 1e-10  # float64 rounding of the logits, with a wide margin
VARIANT = 1e-6  # a broken symmetry: far above float64 rounding (a shifted Swin v1 window: ~3e-4)
MIN_SENSITIVITY = 1e-4  # logits that another image changes less than this prove nothing
KERNELS, POSITIONAL = "kernels", "kernels + positional"
COLUMNS = ["model", "size", "trace", "grid_only", "weights", "change", "sensitivity"]


@dataclass(frozen=True)
class Task:
    """One measurement: ``model`` at ``size`` with ``weights`` (KERNELS or POSITIONAL)
    symmetrised; ``trace`` and ``grid_only`` are the tracer's verdict for that cell."""

    model: str
    size: int
    trace: str
    grid_only: bool
    weights: str


def plan(cells: pd.DataFrame, extra: pd.DataFrame | None = None) -> list[Task]:
    """The measurements for a zoo table: every exact cell (with positional weights
    symmetrised where the tracer says ``grid_only``), the smallest exact size of each
    grid-only model once more with kernels only, and the not-exact cells in ``extra``
    (all weights symmetrised)."""
    tasks: list[Task] = []
    exact = cells[cells.verdict == "exact"].sort_values(["model", "size"])
    for row in exact.itertuples():
        tasks.append(Task(row.model, int(row.size), "exact", bool(row.grid_only),
                          POSITIONAL if row.grid_only else KERNELS))
    for model, rows in exact[exact.grid_only.astype(bool)].groupby("model"):
        tasks.append(Task(model, int(rows["size"].min()), "exact", True, KERNELS))
    if extra is not None:
        for row in extra[extra.verdict == "not exact"].itertuples():
            tasks.append(Task(row.model, int(row.size), "not exact", bool(row.grid_only),
                              POSITIONAL))
    return tasks


def off_by_one_cells(cells: pd.DataFrame, per_model: pd.DataFrame, models: Sequence[str],
                     reference: int) -> pd.DataFrame:
    """The cells of ``models`` one pixel above their nearest exact size (at ``reference``
    for a model with none): where each must measure as not exact (the ``extra`` of
    :func:`plan`)."""
    nearest = per_model.set_index("model").nearest
    size = {m: int(nearest[m]) + 1 if pd.notna(nearest.get(m)) else reference for m in models}
    return cells[cells.model.isin(models) & (cells["size"] == cells.model.map(size))]


def change_by_kind(check: pd.DataFrame) -> pd.DataFrame:
    """Count, smallest and largest measured change per kind of cell (the tracer's verdict,
    grid only or not, and which weights were symmetrised)."""
    grid_only = check.grid_only.map({True: ", grid only", False: ""})
    kinds = check.assign(kind=check.trace + grid_only + " / " + check.weights)
    return kinds.groupby("kind").change.agg(["count", "min", "max"])


@contextmanager
def _default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build_float64(name: str, seed: int = 0) -> nn.Module:
    """torchvision model ``name`` with random weights (``seed``), built in float64 (no
    float32 copy: the largest zoo models hold 0.6 billion weights; buffers a builder makes
    in float32, e.g. Swin v2's offset table, are converted), in eval mode, prepared by
    :func:`prepare_for_measurement`."""
    import warnings

    import torchvision

    torch.manual_seed(seed)
    with _default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet / Inception init notes
        model = torchvision.models.get_model(name, weights=None).double().eval()
    return prepare_for_measurement(model)


def prepare_for_measurement(model: nn.Module) -> nn.Module:
    """Make the logits depend on the image, so that an unchanged logit proves something:
    every bias is set to zero (per channel, so symmetry is untouched; at random
    initialisation a classifier's bias can outweigh the features a million to one, as in
    ShuffleNet) and weights that their builder initialises to zero (a ViT's head) are
    refilled with random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                p.zero_()
        for m in model.modules():
            weight = getattr(m, "weight", None)
            if isinstance(m, nn.Linear | nn.Conv2d) and weight is not None \
                    and not weight.any():
                weight.normal_(0.0, weight[0].numel() ** -0.5)
    return model


def quarter_turn_change(model: nn.Module, size: int, seed: int = 0) -> tuple[float, float]:
    """``(change, sensitivity)`` for random float64 images ``x``, ``x2`` of ``size``:
    change = ||f(rot90 x) - f(x)|| / ||f(x2) - f(x)||, the logit change under a quarter turn
    relative to the change another image makes, and sensitivity = ||f(x2) - f(x)|| /
    ||f(x)||. The change is NaN (counted as a contradiction) when the sensitivity is below
    :data:`MIN_SENSITIVITY`: logits that hardly depend on the image prove nothing."""
    x = torch.randn(2, 3, size, size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(torch.cat([x[:1], torch.rot90(x[:1], 1, (-2, -1)), x[1:]]))
    other = (y[2] - y[0]).norm()
    sensitivity = float(other / y[0].norm()) if y[0].norm() > 0 else 0.0
    if not sensitivity >= MIN_SENSITIVITY:
        return float("nan"), sensitivity
    return float((y[1] - y[0]).norm() / other), sensitivity


def measure_model(tasks: Sequence[Task], seed: int = 0,
                  build: Callable[[str, int], nn.Module] = build_float64,
                  threads: int | None = None) -> tuple[list[dict], float]:
    """The measurements of one model (all ``tasks`` name it) and the seconds they took:
    kernels-only tasks first, then the positional weights are symmetrised for the rest."""
    tick = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    model = build(tasks[0].model, seed)
    rows, done_positional = [], False
    for task in sorted(tasks, key=lambda t: (t.weights == POSITIONAL, t.size)):
        if task.weights == KERNELS and not rows:
            symmetrize(model)
        elif task.weights == POSITIONAL and not done_positional:
            symmetrize(model, positional=True)
            done_positional = True
        change, sensitivity = quarter_turn_change(model, task.size, seed)
        rows.append({**task.__dict__, "change": change, "sensitivity": sensitivity})
    return rows, time.perf_counter() - tick


def _flops_per_pixel(name: str) -> float:
    """Multiply-adds per input pixel of torchvision model ``name``, from its default weights'
    metadata (``_ops`` at their crop size; nothing is downloaded); 1.0 when it has none."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        return float(weights.meta["_ops"]) / weights.transforms.keywords["crop_size"] ** 2
    except Exception:  # not a torchvision model, or weights without that metadata
        return 1.0


def _cost(tasks: Sequence[Task]) -> float:
    """The relative time a model's measurements take: its forward passes' multiply-adds."""
    return _flops_per_pixel(tasks[0].model) * sum(t.size ** 2 for t in tasks)


def measure(tasks: Sequence[Task], workers: int = 1, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Run ``tasks`` (model by model, the costliest first (:func:`_cost`); ``workers`` > 1:
    that many spawned processes, one thread each) and return one row per task (:data:`COLUMNS`).
    ``progress(done, total)`` is called as models finish (left unset: a progress event for
    ``./run_all.sh``'s display). The seconds per model are in ``attrs["timing"]``."""
    if progress is None:
        def progress(done: int, total: int) -> None:
            emit(f"measuring {done}/{total} models in float64")

    by_model: dict[str, list[Task]] = {}
    for task in tasks:
        by_model.setdefault(task.model, []).append(task)
    groups = sorted(by_model.values(), key=_cost, reverse=True)
    results: list[list[dict]] = []
    seconds: dict[str, float] = {}

    def finished(result: tuple[list[dict], float]) -> None:
        rows, took = result
        results.append(rows)
        seconds[rows[0]["model"]] = round(took, 1)
        progress(len(results), len(groups))

    if workers > 1 and len(groups) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(measure_model, group, seed, build_float64, threads)
                       for group in groups]
            for future in as_completed(futures):
                finished(future.result())
    else:
        for group in groups:
            finished(measure_model(group, seed))
    table = pd.DataFrame([row for rows in results for row in rows], columns=COLUMNS)
    table = table.sort_values(["model", "size", "weights"]).reset_index(drop=True)
    table.attrs["timing"] = {"seconds_per_model": seconds}
    return table


def measured_verdict(check: pd.DataFrame) -> str:
    """AssertionError where a measurement contradicts the tracer: an exact cell (with the
    weights its verdict needs symmetric) above :data:`INVARIANT`; a grid-only model with
    kernels alone, or a not-exact cell, not above :data:`VARIANT`. Otherwise one line of
    counts that holds on any machine (the changes themselves: the ``check`` table)."""
    if check.empty:
        return "no model measured"
    exact = check[check.trace == "exact"]
    needs = exact.grid_only.astype(bool).map({True: POSITIONAL, False: KERNELS})
    claims = exact[exact.weights == needs]
    grid_only_kernels = exact[exact.grid_only.astype(bool) & (exact.weights == KERNELS)]
    broken = check[check.trace == "not exact"]
    problems = [
        ("an exact cell is not invariant", claims[~(claims.change < INVARIANT)]),
        ("a grid-only cell is invariant without symmetric positional weights (the tracer's "
         "grid-only flag is wrong)", grid_only_kernels[~(grid_only_kernels.change > VARIANT)]),
        ("a not-exact cell shows no change", broken[~(broken.change > VARIANT)]),
    ]
    for message, rows in problems:  # NaN fails every comparison: counted as a contradiction
        if len(rows):
            raise AssertionError(f"{message}:\n{rows.to_string()}")
    with_positional = int((claims.weights == POSITIONAL).sum())
    return (f"every exact cell measured: {len(claims)} of {len(claims)} invariant to float64 "
            f"rounding (quarter-turn logit change below {INVARIANT:.0e} of another image's), "
            f"{with_positional} of them once "
            f"the positional embedding or flattening head is symmetric too; without it "
            f"{len(grid_only_kernels)} of {len(grid_only_kernels)} grid-only models change "
            f"above {VARIANT:.0e}; {len(broken)} of {len(broken)} cells one pixel off change "
            f"above {VARIANT:.0e}")
