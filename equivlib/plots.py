"""One figure style for every notebook, and atomic, byte-reproducible figure and CSV output.

The style is one seaborn theme (:data:`THEME`) with the rcParams of :data:`STYLE` on top.
Figures are written to a temporary name in the target folder and renamed into place, so a
run that dies never leaves a half-written file where a good one was. PNG and PDF carry no
timestamps and the font is pinned, so the same numbers give the same bytes; the figure
functions use only deterministic seaborn statistics (means, ``errorbar="sd"``, no
bootstrapped intervals, no jitter).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from equivlib.store.atomic import atomic_path

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


def save_csv(table, out_dir: str | os.PathLike, name: str, float_format: str = "%.6g") -> Path:
    """Write a pandas DataFrame as ``out_dir/name.csv`` atomically, with fixed float format."""
    path = Path(out_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format, lineterminator="\n")
    return path


def save_text(text: str, out_dir: str | os.PathLike, filename: str) -> Path:
    """Write ``text`` (e.g. a LaTeX table) as ``out_dir/filename`` atomically."""
    path = Path(out_dir) / filename
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text if text.endswith("\n") else text + "\n")
    return path
