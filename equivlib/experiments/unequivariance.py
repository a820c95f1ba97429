"""A network can learn to break equivariance (notebook 03, claim C4): the smallest G-CNN,
``p4_single_layer`` (one P4 lifting conv, 3x3 stride 2 padding 1), is trained to tell an
image (label 0) from its own 90° rotation (label 1) at an inexact (even) and an exact (odd)
input size, from the same initial weights. At the exact size its logits are invariant, so
it cannot beat chance; at the inexact size it learns to exploit the one-pixel grid shift.

The image is scikit-image's horse silhouette (the paper's chess knight's stand-in), inverted
so the horse is bright on a zero background, resized and standardised, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from equivlib._deprecation import renamed
from equivlib.exactness import is_exact
from equivlib.groups import P4
from equivlib.models import get_model
from equivlib.tracer import trace

MODEL = "p4_single_layer"
KERNEL, STRIDE, PADDING = 3, 2, 1  # its lifting conv
ROT = 1  # the group element r: rotation by 90°
CHANCE_LOSS = math.log(2)  # cross-entropy of identical logits for the two classes
LOSS_TARGET = 0.01  # "loss -> 0": the inexact network must end below this
TIE = 1e-9  # logit margins below this are float rounding: a tie, counted as half right
LABELS = torch.tensor([0, 1])  # x, then T x
INVARIANT = 1e-12  # the logits' invariance error at float64 rounding, with margin


def check_sizes(inexact_size: int, exact_size: int) -> tuple[int, int]:
    """``(inexact_size, exact_size)``; ValueError unless the lifting conv is inexact at the
    first and exact at the second (an even and an odd size)."""
    if is_exact(inexact_size, KERNEL, STRIDE, PADDING) or \
            not is_exact(exact_size, KERNEL, STRIDE, PADDING):
        raise ValueError(f"inexact_size must be even and exact_size odd (a 3x3 stride-2 "
                         f"padding-1 layer), got {inexact_size} and {exact_size}")
    return inexact_size, exact_size


def exactness_label(n: int) -> str:
    return f"{n}×{n} ({'exact' if is_exact(n, KERNEL, STRIDE, PADDING) else 'not exact'})"


# ---------------------------------------------------------------------------- data
def silhouette() -> np.ndarray:
    """The horse silhouette, horse = 1 and background = 0 (float64)."""
    from equivlib.data.photos import photo_grey

    return 1.0 - photo_grey("horse")


def make_image(n: int, image: np.ndarray | None = None) -> torch.Tensor:
    """The silhouette resized to n x n and standardised, shape (1, 1, n, n), float64."""
    from skimage.transform import resize

    img = resize(silhouette() if image is None else image, (n, n), anti_aliasing=True)
    return torch.from_numpy((img - img.mean()) / img.std())[None, None]


def make_batches(sizes: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per size, the batch ``[x, r x]`` of shape (2, 1, n, n): labels 0 and 1."""
    image = silhouette()
    batches = {}
    for n in sizes:
        x = make_image(n, image)
        batches[n] = torch.cat([x, P4.act_on_image(ROT, x)])
    return batches


def describe_batches(batches: dict[int, torch.Tensor]) -> str:
    return "\n".join(f"n={n}: batch {tuple(b.shape)}, image != its rotation: "
                     f"{not torch.equal(b[0], b[1])}" for n, b in batches.items())


# ---------------------------------------------------------------------------- training
def accuracy(logits: torch.Tensor, labels: torch.Tensor = LABELS, tie: float = TIE) -> float:
    """Fraction correct; a tie (top-two logits within ``tie``) counts as half right."""
    top2 = logits.topk(2, dim=1).values
    correct = (logits.argmax(1) == labels).double()
    return torch.where(top2[:, 0] - top2[:, 1] < tie, 0.5, correct).mean().item()


def train(batch: torch.Tensor, steps: int, lr: float, seed: int
          ) -> tuple[torch.nn.Module, list[dict]]:
    """Adam on the full batch for ``steps`` steps from the weights of ``seed``; the loss,
    accuracy and the largest logit gap between x and T x before every update (step 0 is
    the initial network). Returns the model in eval mode and that history."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    n = batch.shape[-1]
    torch.manual_seed(seed)
    model = get_model(MODEL).double()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for step in range(steps + 1):
        logits = model(batch)
        loss = F.cross_entropy(logits, LABELS)
        gap = (logits[0] - logits[1]).abs().max().item()  # how differently x and T x are seen
        history.append(dict(step=step, size=n, loss=loss.item(), accuracy=accuracy(logits),
                            gap=gap))
        if step == steps:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), history


@dataclass
class Training:
    """The trained networks and their curves, per input size."""

    batches: dict[int, torch.Tensor]
    models: dict[int, torch.nn.Module]
    curves: pd.DataFrame  # step, size, loss, accuracy (the CSV)
    gaps: pd.Series  # largest |logits(x) - logits(T x)| per row of ``curves``

    @property
    def sizes(self) -> list[int]:
        return list(self.batches)

    def curve(self, n: int) -> pd.DataFrame:
        return self.curves[self.curves["size"] == n]


def train_sizes(batches: dict[int, torch.Tensor], steps: int, lr: float,
                seed: int) -> Training:
    """:func:`train` at every size, from the same seed (hence the same initial filter)."""
    models, histories = {}, {}
    for n, batch in batches.items():
        models[n], histories[n] = train(batch, steps, lr, seed)
    curves = pd.DataFrame([row for n in batches for row in histories[n]])
    gaps = curves.pop("gap")  # diagnostics only: the CSV keeps step, size, loss, accuracy
    return Training(batches, models, curves, gaps)


def training_summary(run: Training) -> str:
    lines = [f"{'size':>4}  {'exact':>5}  {'initial loss':>12}  {'final loss':>10}  "
             f"{'min loss':>9}  {'final acc':>9}"]
    for n in run.sizes:
        h = run.curve(n)
        lines.append(f"{n:>4}  {str(is_exact(n, KERNEL, STRIDE, PADDING)):>5}  "
                     f"{h.loss.iloc[0]:12.4f}  {h.loss.iloc[-1]:10.2e}  {h.loss.min():9.2e}  "
                     f"{100 * h.accuracy.iloc[-1]:8.1f}%")
    return "\n".join(lines)


def assert_claim_c4(run: Training, inexact_size: int, exact_size: int) -> str:
    """Claim C4, asserted (AssertionError when it breaks): at the inexact size 100 % accuracy
    and a loss below LOSS_TARGET; at the exact size 50 % at every step, x and T x never told
    apart and a loss never below ln 2. Returns three lines of evidence."""
    inexact, exact = run.curve(inexact_size), run.curve(exact_size)
    steps = len(exact) - 1
    checks = [
        (inexact.accuracy.iloc[-1] == 1.0, "the inexact network did not learn the task"),
        (inexact.loss.iloc[-1] < LOSS_TARGET, f"final loss {inexact.loss.iloc[-1]:.3g}"),
        ((exact.accuracy == 0.5).all(), "the exact network beat chance"),
        (run.gaps[exact.index].max() < TIE, "the exact network told x and T x apart"),
        (exact.loss.min() >= CHANCE_LOSS - 1e-12, "the exact network's loss fell below ln 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise AssertionError(message)
    # evidence against the thresholds only: the values themselves follow the training
    # trajectory, which another CPU's rounding moves (training_summary prints them)
    return "\n".join([
        f"inexact ({inexact_size}): final accuracy 100.0%, final loss below {LOSS_TARGET}",
        f"exact   ({exact_size}): accuracy 50.0% at all {steps + 1} steps, "
        f"loss never below ln 2 = {CHANCE_LOSS:.4f}",
        f"largest |logits(x) - logits(T x)| over training: {inexact_size}: above {TIE:.0e} "
        f"(told apart), {exact_size}: below {TIE:.0e} (float rounding)"])


check_claim = renamed("check_claim", assert_claim_c4)


# ---------------------------------------------------------------------------- why
def invariance_report(run: Training, numbers: bool = False) -> str:
    """Per size: the tracer's report of the trained network and the measured invariance
    error of its logits under r, r², r³: "< 1e-12" or "> 1e-12" (true on any machine), or
    the values themselves with ``numbers=True`` (they follow the training trajectory)."""
    from equivlib.checks import equivariance_error

    blocks = []
    for n in run.sizes:
        text = str(trace(run.models[n], n, name=f"{MODEL} (trained at {n})"))
        errors = equivariance_error(run.models[n], run.batches[n][:1], P4, output="invariant")
        shown = [f"{P4.element_name(g)}: " + ((f"{e:.1e}" if numbers else f"> {INVARIANT:.0e}")
                                              if e > INVARIANT else f"< {INVARIANT:.0e}")
                 for g, e in zip(range(1, 4), errors.tolist(), strict=True)]
        blocks.append(text + "\n  invariance error of the logits: " + ", ".join(shown) + "\n")
    return "\n".join(blocks)


def pooled_features(run: Training) -> tuple[pd.DataFrame, dict[int, tuple]]:
    """The lifted maps f(x) and T^-1 f(T x) of each trained network (channel 0) and the
    global average of each orientation of both: (table, {size: (f_x, back)})."""
    maps, pooled = {}, []
    with torch.no_grad():
        for n in run.sizes:
            model, (x, rx) = run.models[n], run.batches[n][:, None]
            f_x = model.features(x)[0, 0]
            back = P4.act_on_group_map(P4.inverse(ROT), model.features(rx))[0, 0]
            maps[n] = (f_x.numpy(), back.numpy())
            for h in range(4):
                pooled.append(dict(size=n, orientation=h, f_x=f_x[h].mean().item(),
                                   f_back=back[h].mean().item()))
    return pd.DataFrame(pooled), maps


def learned_filter(run: Training, n: int) -> np.ndarray:
    return run.models[n].lift.weight[0, 0].detach().numpy()


def format_pooled(pooled: pd.DataFrame, run: Training) -> str:
    lines = ["global average of each orientation of f(x) and of T^-1 f(T x):",
             pooled.to_string(index=False, float_format=lambda v: f"{v:9.4f}")]
    for n in run.sizes:
        lines += [f"learned 3x3 filter at {n}:",
                  np.array2string(learned_filter(run, n), precision=3, suppress_small=True)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- figure
def plot_figure(run: Training, pooled: pd.DataFrame, maps: dict[int, tuple],
                inexact_size: int, exact_size: int):
    """Loss and accuracy curves, pooled features per orientation, the images, the learned
    filters and the lifted feature maps at the inexact size."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from equivlib import plots

    sizes = (inexact_size, exact_size)
    steps = int(run.curves.step.max())
    colors = {inexact_size: plots.INEXACT_COLOR, exact_size: plots.EXACT_COLOR}
    labels = {n: exactness_label(n) for n in sizes}

    fig = plt.figure(figsize=(12, 8.2))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.35], hspace=0.02)
    ax_loss, ax_acc, ax_pool = top.subplots(1, 3, gridspec_kw=dict(wspace=0.32))

    for n in sizes:
        h = run.curve(n)
        ax_loss.plot(h.step, h.loss, color=colors[n], lw=1.6, label=labels[n])
        ax_acc.plot(h.step, 100 * h.accuracy, color=colors[n], lw=1.6, label=labels[n])
    ax_loss.axhline(CHANCE_LOSS, color=plots.NEUTRAL_COLOR, ls=":", lw=1)
    ax_loss.annotate("ln 2: identical logits", (steps, CHANCE_LOSS), xytext=(0, 4),
                     textcoords="offset points", ha="right", fontsize=7,
                     color=plots.NEUTRAL_COLOR)
    ax_loss.set(yscale="log", xlabel="Adam step", ylabel="cross-entropy", title="training loss")
    ax_loss.legend(loc="lower left")
    ax_acc.set(ylim=(40, 105), yticks=[50, 75, 100], xlabel="Adam step", ylabel="accuracy (%)",
               title="accuracy: image vs its 90° rotation")
    ax_acc.legend(loc="center right")

    width = 0.38
    for i, n in enumerate(sizes):
        p = pooled[pooled["size"] == n]
        pos = np.arange(4) + 5 * i
        ax_pool.bar(pos - width / 2, p.f_x, width, color=colors[n])
        ax_pool.bar(pos + width / 2, p.f_back, width, color=colors[n], alpha=0.45,
                    hatch="///", edgecolor="white")
    ax_pool.set_xticks([h + 5 * i for i in range(2) for h in range(4)],
                       [f"{P4.element_name(h)}" for _ in range(2) for h in range(4)])
    ax_pool.axhline(0, color=plots.NEUTRAL_COLOR, lw=0.6)
    ax_pool.set_xlabel(f"orientation   (left: {inexact_size}, right: {exact_size})")
    ax_pool.set_ylabel("global average")
    ax_pool.set_title("pooled features per orientation (trained)")
    ax_pool.legend(handles=[Patch(color=plots.NEUTRAL_COLOR, label="f(x)"),
                            Patch(facecolor=plots.NEUTRAL_COLOR, alpha=0.45, hatch="///",
                                  edgecolor="white", label="$T^{-1}f(Tx)$")], loc="lower right")

    left, right = bottom.subfigures(1, 2, width_ratios=[1, 1.9], wspace=0.02)
    ax_img = left.subplots(2, 2, gridspec_kw=dict(hspace=0.35, wspace=0.15))
    x, rx = run.batches[inexact_size][:, 0].numpy()
    ax_img[0, 0].imshow(x, cmap="gray")
    ax_img[0, 0].set_title(f"x: label 0 ({inexact_size}×{inexact_size})")
    ax_img[0, 1].imshow(rx, cmap="gray")
    ax_img[0, 1].set_title("T x = rot90(x): label 1")
    for ax, n in zip(ax_img[1], sizes, strict=True):
        w = learned_filter(run, n)
        lim = np.abs(w).max()
        ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for (i, j), v in np.ndenumerate(w):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if abs(v) > 0.6 * lim else "black")
        ax.set_title(f"learned filter ({n}×{n})", color=colors[n])
    for ax in ax_img.flat:
        ax.set(xticks=[], yticks=[])

    f_x, back = maps[inexact_size]
    rows = [("f(x)", f_x), ("$T^{-1} f(T x)$", back), ("difference", back - f_x)]
    ax_maps = right.subplots(3, 4, gridspec_kw=dict(hspace=0.12, wspace=0.06))
    lim = max(np.abs(f_x).max(), np.abs(back).max())
    for r, (name, m) in enumerate(rows):
        for h in range(4):
            ax = ax_maps[r, h]
            im = ax.imshow(m[h], cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(f"orientation {P4.element_name(h)}")
            if h == 0:
                ax.set_ylabel(name)
    right.colorbar(im, ax=ax_maps, shrink=0.8, pad=0.015)
    right.suptitle(f"lifted feature maps at {inexact_size}×{inexact_size} (trained): "
                   "the one-pixel grid shift the network exploits", fontsize=10)
    return fig
