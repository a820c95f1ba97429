"""Why subsampling breaks equivariance (notebook 01, claim C1): the sampling centres of a
strided layer before and after a rotation, one strided convolution measured on a photo, and
the exact input sizes of the paper's architectures, found by tracing the registered models
(:func:`equivlib.tracer.exact_input_sizes`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from equivlib.exactness import is_exact, output_size
from equivlib.models import get_model
from equivlib.tracer import exact_input_sizes, trace

KERNEL, STRIDE, PADDING = 3, 2, 1  # the layer of the demo: a 3x3 conv, stride 2, padding 1
DRAW_SIZES = (8, 9)  # small even/odd grids for the picture; only the parity matters
SIZE_RANGES = (range(24, 49), range(90, 101), range(220, 231))
PAPER_SIZES = frozenset({27, 28, 29, 32, 33, 96, 97, 224, 225})  # the sizes the paper compares
ARCHITECTURES = {  # figure / CSV label -> registered model that is traced
    "ResNet-44 (strides 1,2,2)": "p4_resnet44",
    "ResNet-18, 3x3 stem (strides 1,2,2,2)": "p4_resnet18",
    "RotMNIST CNN (one 2x2 max-pool)": "p4_mnist_cnn",
}
VERDICT_CASES = (  # (architecture, input size) shown layer by layer
    ("ResNet-44 (strides 1,2,2)", 32), ("ResNet-44 (strides 1,2,2)", 33),
    ("ResNet-18, 3x3 stem (strides 1,2,2,2)", 224), ("ResNet-18, 3x3 stem (strides 1,2,2,2)", 225),
    ("RotMNIST CNN (one 2x2 max-pool)", 27), ("RotMNIST CNN (one 2x2 max-pool)", 28),
    ("RotMNIST CNN (one 2x2 max-pool)", 29),
)
ROTATIONS = (1, 2, 3)  # quarter turns measured in the photo demo
LAYER_NAME = f"conv k{KERNEL} s{STRIDE} p{PADDING}"
DEMO_EXACT = 1e-12  # float64 rounding of the demo, with margin: below it means exact
DEMO_INEXACT = 1e-2  # a size one pixel off changes the output by more than this


# ---------------------------------------------------------------------------- 1. sampling grid
def sample_centres(n: int, k: int = KERNEL, s: int = STRIDE, p: int = PADDING) -> np.ndarray:
    """Input coordinates of the output samples' centres along one axis."""
    return s * np.arange(output_size(n, k, s, p)) - p + (k - 1) / 2


def grid_report(sizes: Sequence[int] = DRAW_SIZES) -> str:
    """Per size: the demo layer's sample centres, the centres after a rotation, and whether
    they coincide; AssertionError if that ever disagrees with :func:`is_exact`."""
    lines = []
    for n in sizes:
        c = sample_centres(n)
        mirrored = np.sort(n - 1 - c)
        same, exact = bool(np.array_equal(c, mirrored)), is_exact(n, KERNEL, STRIDE, PADDING)
        if same != exact:
            raise AssertionError(f"n={n}: symmetric grid {same} but is_exact {exact}")
        lines.append(f"n={n}: centres {c.tolist()}  after rotation {mirrored.tolist()}  "
                     f"same grid: {same}  is_exact: {exact}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- 2. photo demo
@dataclass
class PhotoDemo:
    """The strided convolution on a photo: relative error per size and quarter turn, the
    (resized photo, |Φ(Rx) − RΦ(x)| map) per size, and the CSV rows."""

    errors: dict[int, list[float]] = field(default_factory=dict)
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{'size':>4}  {'is_exact':>8}  "
                 + "  ".join(f"{'err ' + str(90 * r) + '°':>9}" for r in ROTATIONS)]
        for n, errors in self.errors.items():
            exact = is_exact(n, KERNEL, STRIDE, PADDING)
            lines.append(f"{n:>4}  {str(exact):>8}  " + "  ".join(f"{e:9.1e}" for e in errors))
        return "\n".join(lines)


def symmetric_kernels(num_kernels: int, seed: int) -> torch.Tensor:
    """``num_kernels`` random 3x3 kernels averaged over the quarter turns (float64)."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(num_kernels, 1, KERNEL, KERNEL, generator=generator, dtype=torch.float64)
    return sum(torch.rot90(raw, r, dims=(-2, -1)) for r in range(4)) / 4


def photo_demo(photo: str, sizes: Sequence[int], num_kernels: int, seed: int) -> PhotoDemo:
    """Convolve the grey photo, resized to each size, with 90°-symmetric kernels (stride 2,
    padding 1) and measure ||Φ(R x) − R Φ(x)|| / ||Φ(x)|| averaged over the kernels;
    AssertionError unless the error is float rounding exactly at the exact sizes."""
    from skimage.transform import resize

    from equivlib.data.photos import photo_grey

    kernels = symmetric_kernels(num_kernels, seed)
    grey = photo_grey(photo)

    def layer(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernels, stride=STRIDE, padding=PADDING)

    demo = PhotoDemo()
    for n in sizes:
        x = torch.from_numpy(resize(grey, (n, n), anti_aliasing=True)).reshape(1, 1, n, n)
        errors = []
        for r in ROTATIONS:
            out_of_rotated = layer(torch.rot90(x, r, dims=(-2, -1)))
            rotated_out = torch.rot90(layer(x), r, dims=(-2, -1))
            diff = (out_of_rotated - rotated_out).flatten(1).norm(dim=1)
            errors.append((diff / layer(x).flatten(1).norm(dim=1)).mean().item())
            if r == 1:
                demo.maps[n] = (x[0, 0].numpy(),
                                (out_of_rotated - rotated_out)[0].abs().mean(0).numpy())
            demo.rows.append(dict(section="photo_demo", model=LAYER_NAME, input_size=n,
                                  quantity=f"rel_error_rot{90 * r}", value=errors[-1]))
        demo.errors[n] = errors
        if (max(errors) < DEMO_EXACT) != is_exact(n, KERNEL, STRIDE, PADDING):
            raise AssertionError(f"n={n}: the measurement ({max(errors):.1e}) disagrees with "
                                 f"the exactness condition")
        if not is_exact(n, KERNEL, STRIDE, PADDING) and min(errors) <= DEMO_INEXACT:
            raise AssertionError(f"n={n}: inexact, yet a quarter turn changes the output by "
                                 f"only {min(errors):.1e} (expected > {DEMO_INEXACT:g})")
    return demo


def demo_verdicts(demo: PhotoDemo) -> str:
    """One line per size that holds on any machine: the condition's verdict and the bound
    the measured errors fall under or above (the numbers themselves: ``str(demo)``);
    AssertionError where the errors disagree with the verdict."""
    lines = []
    for n, errors in demo.errors.items():
        turns = ", ".join(f"{90 * r}°" for r in ROTATIONS)
        exact = is_exact(n, KERNEL, STRIDE, PADDING)
        if not (max(errors) < DEMO_EXACT if exact else min(errors) > DEMO_INEXACT):
            raise AssertionError(f"n={n}: the measured errors {errors} disagree with "
                                 f"is_exact {exact}")
        if exact:
            lines.append(f"n={n}: is_exact True;  error at {turns} below {DEMO_EXACT:.0e} "
                         "(float64 rounding): exact")
        else:
            lines.append(f"n={n}: is_exact False; error at {turns} above {DEMO_INEXACT:g}: "
                         "not exact")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- 3. exact sizes
@functools.cache
def _model(name: str) -> torch.nn.Module:
    return get_model(name)


def exact_sizes(architectures: dict[str, str] | None = None,
                ranges: Sequence[range] = SIZE_RANGES) -> dict[tuple[str, int], bool]:
    """``{(label, n): exact}`` for every architecture (label -> registered model name) and
    every size of ``ranges``, from :func:`equivlib.tracer.exact_input_sizes`."""
    architectures = ARCHITECTURES if architectures is None else architectures
    table = {}
    for label, name in architectures.items():
        exact = set(exact_input_sizes(_model(name), [n for sizes in ranges for n in sizes]))
        table.update({(label, n): n in exact for sizes in ranges for n in sizes})
    return table


def exact_size_rows(table: dict[tuple[str, int], bool]) -> list[dict]:
    """The exact-size table as CSV rows (``value`` 1: exact, 0: not)."""
    return [dict(section="exact_sizes", model=label, input_size=n, quantity="exact",
                 value=int(exact)) for (label, n), exact in table.items()]


def format_exact_sizes(table: dict[tuple[str, int], bool],
                       ranges: Sequence[range] = SIZE_RANGES) -> str:
    """Per architecture and range: the exact sizes."""
    lines = []
    for label in dict.fromkeys(label for label, _ in table):
        lines.append(label)
        for sizes in ranges:
            exact = [n for n in sizes if table[label, n]]
            lines.append(f"  {sizes.start}-{sizes.stop - 1}: exact at {exact if exact else 'none'}")
    return "\n".join(lines)


def verdict(label: str, n: int, architectures: dict[str, str] | None = None) -> str:
    """One line: the input sizes of the architecture's subsampling layers at input ``n``
    and the tracer's verdict, naming the first layer that breaks exactness."""
    architectures = ARCHITECTURES if architectures is None else architectures
    report = trace(_model(architectures[label]), n)
    inputs = list(dict.fromkeys(row.input_size[0] for row in report.rows))
    seen = " -> ".join(map(str, inputs)) if inputs else "none"
    if report.exact:
        result = "EXACT"
    else:
        row = report.breaking()[0]
        d = row.as_dict()
        result = (f"approximate (breaks at {row.module}, {row.module_type} {d['kernel']}x"
                  f"{d['kernel']} stride {d['stride']}, at size {row.input_size[0]})")
    return f"{label:<38} n={n:<4} subsampling layers see {seen}: {result}"


# ---------------------------------------------------------------------------- figure
def figure_table(demo: PhotoDemo, table: dict[tuple[str, int], bool]) -> pd.DataFrame:
    """Every number of the figure: the photo demo's errors, then the exact-size table."""
    return pd.DataFrame(demo.rows + exact_size_rows(table))


def plot_subsampling(demo: PhotoDemo, table: dict[tuple[str, int], bool],
                     draw_sizes: Sequence[int] = DRAW_SIZES,
                     ranges: Sequence[range] = SIZE_RANGES):
    """Top: the sampling centres on an even and an odd grid, the photo demo's error maps;
    bottom: the exact (green) / approximate (magenta) input sizes per architecture, as
    seaborn heatmaps."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import ListedColormap

    from equivlib import plots

    fig = plt.figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.15, 1], hspace=0.45, wspace=0.3)

    for col, n in enumerate(draw_sizes):
        ax = fig.add_subplot(grid[0, col])
        c = sample_centres(n)
        exact = is_exact(n, KERNEL, STRIDE, PADDING)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="0.85", lw=0.6)
        ax.tick_params(which="both", length=0, labelsize=7)
        yy, xx = np.meshgrid(c, c, indexing="ij")
        ax.scatter(xx, yy, s=60, color=plots.NEUTRAL_COLOR, label="sample centres", zorder=3)
        # a 90° rotation about the centre sends pixel (row y, col x) to (row n-1-x, col y)
        ax.scatter(yy, n - 1 - xx, s=90, marker="x", lw=1.8,
                   color=plots.EXACT_COLOR if exact else plots.INEXACT_COLOR,
                   label="after 90° rotation", zorder=4)
        ax.plot((n - 1) / 2, (n - 1) / 2, marker="+", color="k", ms=10)
        ax.set_title(f"{n}×{n} input, 3×3 stride 2 pad 1\n" + (
            "grid maps onto itself: exact" if exact else "grid shifts by one pixel: not exact"),
            fontsize=9)
        if col == 0:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=2, fontsize=7)

    vmax = max(m.max() for _, m in demo.maps.values())
    for col, n in enumerate(demo.maps, start=2):
        ax = fig.add_subplot(grid[0, col])
        photo_small, err_map = demo.maps[n]
        ax.imshow(err_map, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"|Φ(Rx) − RΦ(x)| at {n}×{n}\nrelative error {demo.errors[n][0]:.1e}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        inset = ax.inset_axes([1.02, 0.0, 0.3, 0.3])
        inset.imshow(photo_small, cmap="gray")
        inset.set_xticks([])
        inset.set_yticks([])
        inset.set_title("input x", fontsize=7)

    cmap = ListedColormap([plots.INEXACT_COLOR, plots.EXACT_COLOR])
    arch_names = list(dict.fromkeys(label for label, _ in table))
    short_names = [a.split(" (")[0].split(",")[0] for a in arch_names]
    spans = [(ranges[0], grid[1, :2]), (ranges[1], grid[1, 2]), (ranges[2], grid[1, 3])]
    for i, (sizes, cell) in enumerate(spans):
        ax = fig.add_subplot(cell)
        values = pd.DataFrame([[table[a, n] for n in sizes] for a in arch_names],
                              index=short_names, columns=list(sizes), dtype=float)
        sns.heatmap(values, cmap=cmap, vmin=0, vmax=1, cbar=False, linewidths=1,
                    linecolor="white", xticklabels=True, yticklabels=i == 0, ax=ax)
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_xlabel("input size")
        for label in ax.get_xticklabels():
            if int(label.get_text()) in PAPER_SIZES:
                label.set_fontweight("bold")
        if i == 0:
            ax.set_title("exact (green) / approximately equivariant (magenta) input sizes; "
                         "bold: sizes the paper compares", loc="left")
    return fig
