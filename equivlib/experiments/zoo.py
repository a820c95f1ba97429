"""Which well-known architectures are exact at which input sizes (notebook 09).

Every torchvision classification model is built on the meta device (no weights, no memory)
and traced with :func:`equivlib.tracer.trace` at each input size: exact (every
subsampling grid symmetric under 90° rotations and flips), not exact (the first layer
that breaks it is named), unknown (an op the tracer cannot judge, e.g. interpolation:
never guessed) or n/a (the model refuses the size, e.g. a ViT built for 224). "Exact" is
about the sampling grids: with equivariant weights (group convolutions, or D4-symmetric
kernels as in :func:`equivlib.experiments.symmetric_weights.symmetrize`) such a network is
exactly invariant after global pooling; with ordinary trained weights it is not invariant
at any size. An exact cell is ``grid_only`` when invariance also needs weights that the
architecture leaves free (a positional embedding, a flattening head): the figure and
:func:`categories` tell those apart. :mod:`equivlib.experiments.zoo_measure` measures
every exact cell.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from equivlib.experiments.notebook_params import split_list
from equivlib.progress import emit
from equivlib.tracer import nearest_exact_size, trace

COMMON_SIZES = (*range(220, 233), 256, 299, 384, 512)
VERDICTS = ("exact", "not exact", "unknown", "n/a")
GRID_ONLY = "exact (grid only)"
CATEGORIES = ("exact", GRID_ONLY, "not exact", "unknown", "n/a")  # what the figure shows
_FAMILY_FIXES = {"wide": "wide_resnet", "resnext": "resnext", "mobilenet": "mobilenet",
                 "efficientnet": "efficientnet", "regnet": "regnet", "vit": "vit",
                 "swin": "swin", "maxvit": "maxvit", "shufflenet": "shufflenet"}


def family(name: str) -> str:
    """The architecture family of a torchvision model name (``resnet50`` -> ``resnet``,
    ``efficientnet_v2_s`` -> ``efficientnet``, ``wide_resnet50_2`` -> ``wide_resnet``)."""
    name = re.sub(r"^(z2|p4m?)_", "", name.rsplit(":", 1)[-1].lower())  # equivlib, custom
    head = re.match(r"[a-z]+", name)
    base = head.group(0) if head else name
    return _FAMILY_FIXES.get(base, base)


def torchvision_models() -> list[str]:
    """The classification models of torchvision (``list_models(module=torchvision.models)``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


@contextmanager
def _tensors_to_meta() -> Iterator[None]:
    """Move every parameter and buffer to the meta device as modules register them (for
    builders that compute with real tensors, e.g. RegNet's block widths)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self: nn.Module, name: str, tensor: torch.Tensor | None,
               persistent: bool = True) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, \
            register_buffer


def build_on_meta(name: str) -> nn.Module:
    """torchvision model ``name`` without weights, its parameters on the meta device."""
    import torchvision

    with warnings.catch_warnings():  # GoogLeNet / Inception: notes about future init defaults
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None)
        except Exception:  # a builder that computes with tensors: meta parameters only
            with _tensors_to_meta():
                return torchvision.models.get_model(name, weights=None)


def trace_cell(model: nn.Module, size: int) -> dict:
    """One cell of the table: ``verdict`` (see :data:`VERDICTS`), ``grid_only`` (exact grids,
    but invariance also needs a symmetric positional embedding or flattening head), the
    first layer that breaks exactness, cannot be judged or is grid-only, and a short note.
    The trace stops judging at the first layer that breaks exactness (``stop="broken"``:
    the cell only names that layer; a size the model refuses is still n/a)."""
    try:
        report = trace(model, size, stop="broken")
    except Exception as exc:  # the model refuses this size (fixed-size ViTs, too small)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"verdict": "n/a", "grid_only": False, "layer": "", "note": reason[:160]}
    verdict = {True: "exact", False: "not exact", None: "unknown"}[report.exact]
    grid_only = report.exact is True and bool(report.grid_only)
    culprit = next((r for r in report.rows if r.exact is False), None) or \
        next((r for r in report.rows if r.exact is None), None)
    if culprit is None:
        if grid_only:
            row = report.grid_only[0]
            return {"verdict": verdict, "grid_only": True, "layer": row.module or "(model)",
                    "note": f"grid only: {row.op.replace('_', ' ')}"}
        return {"verdict": verdict, "grid_only": False, "layer": "", "note": ""}
    return {"verdict": verdict, "grid_only": False, "layer": culprit.module or "(model)",
            "note": f"{culprit.op} k={culprit.kernel} s={culprit.stride} p={culprit.padding} "
                    f"at {culprit.input_size[0]}" if culprit.exact is False
            else culprit.note or culprit.op}


def model_rows(name: str, sizes: Sequence[int], reference: int = 224,
               build: Callable[[str], nn.Module] = build_on_meta,
               on_cell: Callable[[], None] | None = None,
               ) -> tuple[list[dict], dict]:
    """The table cells of one model at ``sizes`` and its summary row (family, the nearest
    exact size to ``reference`` within 32 pixels, seconds, or why it could not be built).
    ``on_cell()`` is called after each size is traced. The search for the nearest size
    reuses the verdicts of ``sizes`` and traces only the other sizes it needs."""
    tick = time.perf_counter()
    try:
        model = build(name)
    except Exception as exc:
        return [], {"model": name, "family": family(name), "built": False, "nearest": None,
                    "seconds": 0.0, "note": f"cannot build: {exc}"[:200]}
    cells = []
    for size in sizes:
        cells.append({"model": name, "family": family(name), "size": size,
                      **trace_cell(model, size)})
        if on_cell is not None:
            on_cell()
    try:
        nearest = nearest_exact_size(model, reference, max_distance=32, known={
            cell["size"]: cell["verdict"] == "exact" for cell in cells})
    except Exception:  # a model that refuses other sizes
        nearest = None
    return cells, {"model": name, "family": family(name), "built": True, "nearest": nearest,
                   "seconds": time.perf_counter() - tick, "note": ""}


def zoo_table(names: Sequence[str], sizes: Iterable[int] = COMMON_SIZES, *,
              reference: int = 224, workers: int = 1,
              build: Callable[[str], nn.Module] = build_on_meta,
              progress: Callable[[int, int], None] | None = None,
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, models)``: one row per model and size (verdict, first breaking layer, note)
    and one row per model (:func:`model_rows`, without its ``seconds``: a timing would
    change the saved CSV on every rebuild; the seconds per model are in
    ``models.attrs["timing"]``, which :func:`equivlib.plots.save_csv` writes to the CSV's
    provenance sidecar); ``workers`` > 1 traces models in that many spawned processes.
    ``progress(done, total)``: called as model x size cells are traced (per size in this
    process, per model from worker processes); left unset, a progress event for
    ``./run_all.sh``'s display (:mod:`equivlib.progress`)."""
    sizes = list(sizes)
    if progress is None:
        def progress(done: int, total: int) -> None:
            emit(f"tracing {done}/{total} model x size cells")

    total, done = len(names) * len(sizes), 0

    def advance(cells: int) -> None:
        nonlocal done
        done += cells
        progress(done, total)

    results: list = [None] * len(names)
    if workers > 1 and len(names) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(model_rows, name, sizes, reference, build): i
                       for i, name in enumerate(names)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                advance(len(sizes))
    else:
        for i, name in enumerate(names):
            results[i] = model_rows(name, sizes, reference, build, on_cell=lambda: advance(1))
            if done < (i + 1) * len(sizes):  # not counted per size, or could not be built
                advance((i + 1) * len(sizes) - done)
    cells = [cell for model_cells, _ in results for cell in model_cells]
    models = pd.DataFrame([{k: v for k, v in row.items() if k != "seconds"}
                           for _, row in results])
    models.attrs["timing"] = {"seconds_per_model": {row["model"]: round(row["seconds"], 3)
                                                    for _, row in results}}
    return pd.DataFrame(cells), models


def categories(cells: pd.DataFrame) -> pd.Series:
    """Each cell's :data:`CATEGORIES` entry: its verdict, or :data:`GRID_ONLY` for an exact
    cell whose invariance also needs a symmetric positional embedding or head."""
    grid_only = cells.get("grid_only", pd.Series(False, index=cells.index)).astype(bool)
    return cells.verdict.where(~grid_only, GRID_ONLY)


def wide(cells: pd.DataFrame) -> pd.DataFrame:
    """Models x sizes, each cell its category (:func:`categories`); rows grouped by family."""
    table = cells.assign(category=categories(cells)).pivot_table(
        index=["family", "model"], columns="size", values="category", aggfunc="first")
    return table.sort_index()


def family_summary(cells: pd.DataFrame, size: int = 224) -> pd.DataFrame:
    """Per family at ``size``: how many models fall in each of :data:`CATEGORIES`."""
    at = cells[cells["size"] == size]
    counts = at.assign(category=categories(at)).groupby(["family", "category"]).size()
    return counts.unstack(fill_value=0).reindex(columns=list(CATEGORIES), fill_value=0)


def breaking_ops(cells: pd.DataFrame, size: int = 224) -> pd.Series:
    """What breaks exactness at ``size``: the count of first-breaking ops (conv2d,
    max_pool2d, ...) over the models that are not exact there."""
    broken = cells[(cells["size"] == size) & (cells.verdict == "not exact")]
    return broken.note.str.split().str[0].value_counts()


_LEGEND = {"exact": "exact: invariant with symmetric kernels",
           GRID_ONLY: "exact grids: invariant once the positional embedding / head is "
                      "symmetric too",
           "not exact": "not exact", "unknown": "unknown", "n/a": "n/a (refuses the size)"}


def plot_zoo(cells: pd.DataFrame, measured: bool = False):
    """Models (rows, grouped by family) x input sizes (columns), a seaborn heatmap: dark
    green exact, light green exact grids that need a symmetric positional embedding or head,
    magenta not exact, grey unknown, white n/a. ``measured``: every exact cell was measured
    invariant (:mod:`equivlib.experiments.zoo_measure`), and the legend says so."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from equivlib.plots import EXACT_COLOR, INEXACT_COLOR

    table = wide(cells)
    codes = table.replace({v: i for i, v in enumerate(CATEGORIES)}).astype(float)
    codes.index = [m for _, m in table.index]
    colours = [EXACT_COLOR, "#a6dba0", INEXACT_COLOR, "#bdbdbd", "#ffffff"]
    n_rows, n_cols = codes.shape
    legend_inches = 0.65  # three rows of legend above the title
    height = 1.8 + legend_inches + 0.17 * n_rows
    fig, ax = plt.subplots(figsize=(max(7.0, 2.4 + 0.42 * n_cols), height))
    sns.heatmap(codes, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5,
                cbar=False, linewidths=0.4, linecolor="white", xticklabels=True,
                yticklabels=True, ax=ax)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelrotation=0, labelsize=6)
    ax.tick_params(length=0)
    families = [f for f, _ in table.index]
    for i in range(1, n_rows):  # row i covers y in [i, i + 1]
        if families[i] != families[i - 1]:
            ax.axhline(i, color="black", lw=0.6)
    for j, s in enumerate(codes.columns):
        if s == 224:
            ax.axvline(j, color="black", lw=0.8, ls=":")
            ax.axvline(j + 1, color="black", lw=0.8, ls=":")
    ax.set_xlabel("input size (square)")
    ax.set_ylabel("")
    ax.set_title("torchvision classification models: are the subsampling grids symmetric?"
                 + ("\nevery exact cell measured invariant (float64, symmetrised random "
                    "weights)" if measured else ""), fontsize=9)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.6", label=_LEGEND[v])
                        for c, v in zip(colours, CATEGORIES, strict=True)],
               loc="upper center", ncol=2, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - legend_inches / height))
    return fig


def parse_sizes(text: str, max_count: int | None = None) -> list[int]:
    """``"220-232,256,299"`` -> the sizes, ranges inclusive; positive and unique; at most
    ``max_count`` of them (counted before any list is built: ``1-10**12`` is refused, not
    expanded)."""
    ranges: list[range | list[int]] = []
    for part in split_list(text, "sizes"):
        lo, dash, hi = part.partition("-")
        try:
            ranges.append(range(int(lo), int(hi) + 1) if dash else [int(part)])
        except ValueError:
            raise ValueError(f"sizes: bad entry {part!r}; expected e.g. 220-232,256") from None
    count = sum(len(r) for r in ranges)
    if max_count is not None and count > max_count:
        raise ValueError(f"sizes: {text!r} names {count:,} sizes, more than {max_count:,} at "
                         f"once (each size is traced on every model): narrow the ranges, e.g. "
                         f"220-260,299, or split the run into several commands")
    sizes = [size for r in ranges for size in r]
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes: need distinct positive sizes, got {text!r}")
    return sizes


def format_wide(cells: pd.DataFrame) -> str:
    """The models x sizes table as text: ``E`` exact, ``G`` exact grids that need a
    symmetric positional embedding or head, ``.`` not exact, ``?`` unknown, ``-`` n/a."""
    table = wide(cells).replace({"exact": "E", GRID_ONLY: "G", "not exact": ".",
                                 "unknown": "?", "n/a": "-"})
    width = max(len(m) for _, m in table.index)
    header = " " * (width + 2) + " ".join(f"{s:>3}"[-3:] for s in table.columns)
    lines = [header]
    for (_, model), row in table.iterrows():
        lines.append(f"{model:<{width}}  " + " ".join(f"{v:>3}" for v in row))
    return "\n".join(lines)
