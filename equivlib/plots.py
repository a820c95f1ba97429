"""One figure style for every notebook, and atomic, byte-reproducible figure and CSV output.

The style is one seaborn theme (:data:`THEME`) with the rcParams of :data:`STYLE` on top.
Figures are written to a temporary name in the target folder and renamed into place, so a
run that dies never leaves a half-written file where a good one was. PNG and PDF carry no
timestamps and the font is pinned, so the same numbers give the same bytes; the figure
functions use only deterministic seaborn statistics (means, ``errorbar="sd"``, no
bootstrapped intervals, no jitter).

Every CSV gets a sidecar ``NAME.provenance.json`` that says where its numbers were made
(:func:`save_csv`): the CSV holds only the numbers, so it changes only when they do.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from equivlib.store.atomic import atomic_path, atomic_write_bytes
from equivlib.store.provenance import collect as collect_provenance
from equivlib.store.results import provenance_of

EXACT_COLOR = "#1b7837"
INEXACT_COLOR = "#c51b7d"
NEUTRAL_COLOR = "#4d4d4d"

THEME: dict[str, str] = {"style": "ticks", "context": "paper"}
"""The seaborn theme of every figure (:func:`seaborn.set_theme`)."""

STYLE: dict[str, object] = {
    # seaborn's font list starts with Arial: pinning matplotlib's own font keeps the bytes
    # the same on machines with and without Arial
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.hashsalt": "equivlib",
}
"""rcParams applied over :data:`THEME`: sizes, no top/right spines, frameless legends and
what makes the output byte-reproducible."""

PROFILE_NOTES = {
    "smoke": "SMOKE profile: a quick functional check, not the paper's numbers",
    "cpu": "cpu profile: embedded data on a 2-core CPU (smaller than the paper's runs)",
    "paper": "paper profile: the paper's datasets and hyperparameters",
}


def apply_style() -> None:
    """Set the shared style (call once per notebook): seaborn's :data:`THEME`, then
    :data:`STYLE`."""
    import seaborn as sns

    sns.set_theme(**THEME, rc=STYLE)


def stamp(fig: plt.Figure, profile: str, extra: str = "") -> None:
    """Write the profile (and e.g. a stand-in-data note) in the figure's bottom-left corner."""
    if profile not in PROFILE_NOTES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILE_NOTES)}")
    text = PROFILE_NOTES[profile] + (f" — {extra}" if extra else "")
    fig.text(0.005, 0.005, text, fontsize=7, color=NEUTRAL_COLOR, ha="left", va="bottom")


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.png`` and ``.pdf`` atomically; return the paths."""
    paths = []
    for ext, metadata in ((".png", {"Software": None}), (".pdf", {"CreationDate": None,
                                                                  "Producer": None})):
        path = Path(out_dir) / f"{name}{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext[1:], metadata=metadata, bbox_inches="tight")
        paths.append(path)
    return paths


def save_and_show(fig: plt.Figure, out_dir: str | os.PathLike, name: str):
    """Save ``fig`` (PNG + PDF), close it, and return the saved PNG as an IPython image, so a
    notebook shows exactly the file it wrote whatever the matplotlib backend."""
    from IPython.display import Image

    paths = save_figure(fig, out_dir, name)
    plt.close(fig)
    return Image(filename=str(paths[0]))


SIDECAR_SUFFIX = ".provenance.json"
_NOT_IN_CSV = re.compile(r"(^|_)(seconds|secs|elapsed|timing|wall_time|provenance|commit)$",
                         re.IGNORECASE)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def sidecar(name: str, *, runs: Iterable[Any] | None = None,
            timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``name``'s provenance sidecar (see :func:`save_csv`)."""
    content: dict[str, Any] = {"csv": f"{name}.csv", "written": collect_provenance()}
    if runs is not None:
        found = provenance_of(list(runs))
        counts = Counter(json.dumps(p, sort_keys=True) for p in found)
        order = sorted(counts, key=lambda text: (-counts[text], text == "null", text))
        content["runs"] = {  # the most frequent first, unknown (null) last among equals
            "count": len(found), "unknown": counts.get("null", 0),
            "provenances": [{"count": counts[text], "provenance": json.loads(text)}
                            for text in order]}
    if timing is not None:
        content["timing"] = timing
    return content


def save_csv(table, out_dir: str | os.PathLike, name: str, float_format: str = "%.6g", *,
             runs: Iterable[Any] | None = None, timing: dict[str, Any] | None = None) -> Path:
    """Write a pandas DataFrame as ``out_dir/name.csv`` atomically, with fixed float format,
    and beside it ``name.provenance.json`` (sorted keys, atomic): where the table was
    written (``"written"``: :func:`equivlib.store.provenance.collect`), and with ``runs``
    (the run configs or store records the table came from, e.g. the configs given to
    :func:`equivlib.engine.grid.run_grid`) the distinct provenances of those runs with
    counts (``"runs"``; a run whose provenance is unknown counts under ``null``), and
    ``timing`` (a JSON-able dict; default: the table's ``attrs["timing"]``, if any).

    The CSV holds only numbers: a column named like a timing or provenance (``seconds``,
    ``*_seconds``, ``elapsed``, ``timing``, ``commit``, ...) is refused with ValueError, as
    such values belong in ``timing``. Returns the CSV's path."""
    bad = [str(c) for c in table.columns if _NOT_IN_CSV.search(str(c))]
    if bad:
        raise ValueError(f"{name}.csv: column(s) {bad} hold timing or provenance, which "
                         "would change the CSV on every rebuild; drop them and pass them as "
                         "save_csv(..., timing={...}) (written to the sidecar)")
    if timing is None:
        timing = getattr(table, "attrs", {}).get("timing")
    content = sidecar(name, runs=runs, timing=timing)
    text = json.dumps(content, sort_keys=True, indent=1, default=_jsonable) + "\n"
    path = Path(out_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")
    atomic_write_bytes(Path(out_dir) / f"{name}{SIDECAR_SUFFIX}", text.encode())
    return path


def save_text(text: str, out_dir: str | os.PathLike, filename: str) -> Path:
    """Write ``text`` (e.g. a LaTeX table) as ``out_dir/filename`` atomically."""
    path = Path(out_dir) / filename
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text if text.endswith("\n") else text + "\n")
    return path
