"""ImageNet from TFRecord shards (notebook 08): a P4 ResNet-18 (width 32, 3x3 stride-1 stem,
no max-pool, coset pooling) and its Z2 twin (width 64) at input 224 (approximately
equivariant: the three stride-2 stages do not fit) versus 225 (exact: 225 -> 113 -> 57 ->
29), top-1 and top-5 at the four quarter turns, trained with DDP over ``gpus_per_run``
processes launched by torchrun.

ImageNet does not ship in a package; the cpu profile writes a small set of shards in the
ImageNet TFRecord format from photos that ship with scikit-image (:func:`write_stand_in`)
and runs the real reader and a short 2-process gloo DDP training on them: a functional
demonstration, never ImageNet numbers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equivlib._deprecation import renamed
from equivlib.engine.config import RunConfig
from equivlib.experiments.notebook_params import number_list, split_list
from equivlib.experiments.recipes import paper_config, train_overrides
from equivlib.experiments.rotation import ModelSpec, NotebookGrid, run_label

GROUPS = ("z2", "p4")
SIZES = (224, 225)
QUARTERS = ("0.0", "90.0", "180.0", "270.0")
STAND_IN_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "grass", "gravel",
                   "hubble_deep_field", "retina", "rocket")
"""One class per photo (scikit-image's ``cat`` is ``chelsea`` again, so it is left out)."""
STAND_IN_NOTE = ("ImageNet stand-in: TFRecord shards of crops of 10 scikit-image photos, a few "
                 "DDP steps; a functional demonstration, not ImageNet")
_MANIFEST = "stand_in.json"


def _crops(photo: np.ndarray, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random square crops (a quarter to all of the shorter side), resized to
    ``size`` (antialiased), as uint8 ``(count, size, size, 3)``."""
    from skimage.transform import resize

    h, w = photo.shape[:2]
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = resize(photo[y:y + side, x:x + side], (size, size), anti_aliasing=True)
        out[i] = np.clip(np.round(crop * 255), 0, 255).astype(np.uint8)
    return out


def stand_in_manifest_for(train_per_class: int = 20, valid_per_class: int = 4, *,
                          image_size: int = 256, train_shards: int = 4, valid_shards: int = 2,
                          seed: int = 0) -> dict[str, Any]:
    """The manifest of the stand-in shards these arguments write (the arguments and the
    record counts), computed without writing anything; bad arguments raise ValueError."""
    for name, value in (("train_per_class", train_per_class),
                        ("valid_per_class", valid_per_class), ("image_size", image_size),
                        ("train_shards", train_shards), ("valid_shards", valid_shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return {"photos": list(STAND_IN_PHOTOS), "train_per_class": train_per_class,
            "valid_per_class": valid_per_class, "image_size": image_size,
            "train_shards": train_shards, "valid_shards": valid_shards, "seed": seed,
            "train_records": train_per_class * len(STAND_IN_PHOTOS),
            "valid_records": valid_per_class * len(STAND_IN_PHOTOS)}


def write_stand_in(directory: str | Path, train_per_class: int = 20, valid_per_class: int = 4,
                   *, image_size: int = 256, train_shards: int = 4, valid_shards: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """Write ImageNet-format TFRecord shards (``train-0000k-of-...``, ``validation-...``;
    1-based labels, JPEG bytes) of random crops of :data:`STAND_IN_PHOTOS`, one class each.
    Skipped when ``directory`` already holds shards written with the same arguments.
    Returns the manifest (:func:`stand_in_manifest_for`)."""
    manifest = stand_in_manifest_for(train_per_class, valid_per_class, image_size=image_size,
                                     train_shards=train_shards, valid_shards=valid_shards,
                                     seed=seed)
    directory = Path(directory)
    manifest_file = directory / _MANIFEST
    if manifest_file.exists() and json.loads(manifest_file.read_text()) == manifest:
        return manifest
    directory.mkdir(parents=True, exist_ok=True)
    manifest_file.unlink(missing_ok=True)  # no manifest while the shards are replaced
    for old in directory.glob("*-of-*"):
        old.unlink()
    # TensorFlow writes the shards in a fresh process: loaded next to torch in one process
    # (a notebook kernel) it can crash it, and it is not fork-safe (imagenet_tfrecord)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(_write_shards, directory, manifest).result()
    manifest_file.write_text(json.dumps(manifest, indent=1))
    return manifest


def _write_shards(directory: Path, manifest: dict[str, Any]) -> None:
    from equivlib.data.imagenet_tfrecord import write_tfrecord_shards
    from equivlib.data.photos import photo_array

    rng = np.random.default_rng(manifest["seed"])
    train_per_class, valid_per_class = manifest["train_per_class"], manifest["valid_per_class"]
    image_size = manifest["image_size"]
    splits: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
    for photo in STAND_IN_PHOTOS:
        image = photo_array(photo)
        splits["train"].append(_crops(image, train_per_class, image_size, rng))
        splits["validation"].append(_crops(image, valid_per_class, image_size, rng))
    for prefix, shards in (("train", manifest["train_shards"]),
                           ("validation", manifest["valid_shards"])):
        images = np.concatenate(splits[prefix])
        labels = np.repeat(np.arange(len(STAND_IN_PHOTOS)), len(images) // len(STAND_IN_PHOTOS))
        order = rng.permutation(len(images))  # shards hold every class
        write_tfrecord_shards(directory, images[order], labels[order], shards, prefix=prefix)


def imagenet_config(group: str, input_size: int, *, width: int = 32, coset_pool: bool = True,
                    seed: int = 0, epochs: int | None = None, batch_size: int | None = None,
                    lr: float | None = None, error_images: int = 64,
                    stand_in: dict[str, Any] | None = None) -> RunConfig:
    """One run: ImageNet's protocol (docs/design.md §7: SGD, lr 0.1 per 256 images of global batch,
    5 warm-up epochs, x0.1 at 30/60/80) for the P4 ResNet-18 of ``width`` (its Z2 twin:
    ``2 * width``), tested at the quarter turns with top-1/top-5 and the invariance error of
    the logits. ``stand_in`` (a :func:`write_stand_in` manifest) sets the class count and
    record counts of the stand-in shards."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r} for ImageNet; expected one of {GROUPS}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    base = width * (2 if group == "z2" else 1)
    train = train_overrides(seed, epochs, batch_size)
    sections: dict[str, Any] = {
        "model": {"kwargs": {"widths": [base, 2 * base, 4 * base, 8 * base],
                             "coset_pool": coset_pool}},
        "train": train,
        "test": {"error_layers": ["output"], "error_images": error_images}}
    if stand_in is not None:
        sections["data"] = {"options": {
            "num_classes": len(stand_in["photos"]), "train_records": stand_in["train_records"],
            "valid_records": stand_in["valid_records"], "shuffle_buffer": 256}}
    if lr is not None:
        sections["optim"] = {"lr": lr}
    return paper_config("imagenet", f"{group}_resnet18", input_size, **sections)


def configs_from_params(params: dict[str, Any],
                        stand_in: dict[str, Any] | None = None) -> list[RunConfig]:
    """The grid of notebook 08: every (group, size, seed); the global batch is
    ``batch_per_gpu * gpus_per_run`` (the paper: 64 per GPU)."""
    groups = split_list(params["models"], "models")
    sizes = number_list(params["sizes"], "sizes", int)
    for name in ("seeds", "gpus_per_run", "batch_per_gpu", "epochs"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    batch = params["batch_per_gpu"] * params["gpus_per_run"]
    return [imagenet_config(g, s, width=params["width"], coset_pool=params["coset_pool"],
                            seed=seed, epochs=params["epochs"], batch_size=batch,
                            lr=params["lr"] or None, error_images=params["error_images"],
                            stand_in=stand_in)
            for g, s, seed in itertools.product(groups, sizes, range(params["seeds"]))]


def stand_in_manifest(params: dict[str, Any], *, write: bool = True) -> dict[str, Any] | None:
    """The manifest of the stand-in shards the parameters ask for, the shards written if
    needed (``write=False``: only computed, e.g. to list a grid); None for ImageNet."""
    if not params["stand_in"]:
        return None
    train, valid = number_list(params["stand_in_images"], "stand_in_images", int)
    if not write:
        return stand_in_manifest_for(train, valid)
    return write_stand_in(params["stand_in_dir"], train, valid)


PARAMETERS = ("models", "sizes", "width", "coset_pool", "seeds", "epochs", "batch_per_gpu",
              "gpus_per_run", "lr", "error_images", "stand_in", "stand_in_dir",
              "stand_in_images", "device")
"""The notebook parameters the grid of 08 is built from."""


def notebook_grid(params: dict[str, Any], *, write_data: bool = True) -> NotebookGrid:
    """Notebook 08's grid from its parameters (:data:`PARAMETERS`). With ``stand_in`` the
    shards are written first (skipped if present; ``write_data=False``: the same configs,
    nothing written) and the grid's ``data_dir`` is ``stand_in_dir``."""
    manifest = stand_in_manifest(params, write=write_data)
    configs = configs_from_params(params, manifest)
    specs = list(dict.fromkeys(ModelSpec.of(c) for c in configs))
    lines = []
    if manifest:
        lines.append(f"stand-in: {manifest['train_records']} training and "
                     f"{manifest['valid_records']} validation images of "
                     f"{len(manifest['photos'])} classes in {params['stand_in_dir']}")
    lines.append(f"{len(configs)} runs, each over {params['gpus_per_run']} DDP processes "
                 f"({params['device']}); global batch {configs[0].train.batch_size}, SGD lr "
                 f"{configs[0].optim.lr:g}, {params['epochs']} epoch(s)")
    lines += [f"  {s.description}" for s in specs]
    return NotebookGrid(configs, specs, "\n".join(lines),
                        STAND_IN_NOTE if params["stand_in"] else "",
                        data_dir=params["stand_in_dir"] if manifest else None)


def results_table(configs: Sequence[RunConfig], metrics: Sequence[dict[str, Any]],
                  ) -> pd.DataFrame:
    """One row per run and quarter turn: top-1, top-5, and the run's logit invariance error
    and process count."""
    rows = []
    for c, m in zip(configs, metrics, strict=True):
        label = run_label(c)
        top5 = m.get("test_top5", {})
        for angle in QUARTERS:
            rows.append({"model": label, "seed": c.train.seed, "angle": float(angle),
                         "top1": m["test_acc"][angle], "top5": top5.get(angle, np.nan),
                         "logit_error": m.get("equivariance_error", {}).get("output", np.nan),
                         "processes": m["timing"]["processes"]})
    return pd.DataFrame(rows)


LOGITS_ROUNDING = 1e-4  # float32 rounding of the logits' invariance error, with margin


def assert_exact_runs(table: pd.DataFrame, exact: dict[str, bool | None],
                      processes: int) -> str:
    """AssertionError unless every run used ``processes`` DDP processes and every exact model
    has logits invariant to quarter turns (error below ``LOGITS_ROUNDING``) and the same
    top-1 at the four quarter turns in every seed. One line per model that holds on any
    machine (the accuracies and errors themselves: :func:`exactness_report`)."""
    if not (table.processes == processes).all():
        raise AssertionError(f"a run was not trained with {processes} processes")
    lines = []
    for model, sub in table.groupby("model", sort=False):
        error = sub.logit_error.max()
        kind = {True: "exact", False: "approximate", None: "not equivariant"}[exact[model]]
        if exact[model]:
            if not error < LOGITS_ROUNDING:
                raise AssertionError(f"{model} is exact but its logits change by {error:.2g} "
                                     "under quarter turns")
            if sub.groupby("seed").top1.nunique().max() != 1:
                raise AssertionError(f"{model} is exact but its quarter-turn top-1 differ")
            lines.append(f"{model:7s} ({kind}): logit invariance error below "
                         f"{LOGITS_ROUNDING:.0e}, the same top-1 at every quarter turn")
        else:
            where = ("not measured" if np.isnan(error) else
                     f"{'above' if error >= LOGITS_ROUNDING else 'below'} {LOGITS_ROUNDING:.0e}")
            lines.append(f"{model:7s} ({kind}): logit invariance error {where}")
    return "\n".join(lines)


check_exact_runs = renamed("check_exact_runs", assert_exact_runs)


def exactness_report(table: pd.DataFrame, exact: dict[str, bool | None]) -> str:
    """Per model: whether its four quarter-turn top-1 accuracies agree in every seed, and
    its logits' invariance error, against what the architecture's exactness predicts."""
    lines = []
    for model, sub in table.groupby("model", sort=False):
        spread = 100 * sub.groupby("seed").top1.agg(np.ptp).max()
        error = sub.logit_error.max()
        kind = {True: "exact", False: "approximate", None: "not equivariant"}[exact[model]]
        lines.append(f"{model:7s} ({kind:15s}) quarter-turn top-1 spread {spread:5.2f} points, "
                     f"logit invariance error {error:.2e}")
    return "\n".join(lines)


def plot_quarter_turns(table: pd.DataFrame, exact: dict[str, bool | None]):
    """Top-1 and top-5 per quarter turn, one bar group per model (224 beside 225): seaborn's
    bars at the mean over seeds with ±1 sd error bars (``barplot(errorbar="sd")``; none
    with one seed). Green exact, magenta approximate, hatched greys the Z2 twins."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Patch

    from equivlib.plots import EXACT_COLOR, INEXACT_COLOR, NEUTRAL_COLOR

    models = list(dict.fromkeys(table.model))
    greys = iter([NEUTRAL_COLOR, "0.62", "0.8"] * len(models))
    palette = {m: {True: EXACT_COLOR, False: INEXACT_COLOR}.get(exact[m]) or next(greys)
               for m in models}
    hatches = {m: "//" if m.startswith("Z2") else "" for m in models}
    angles = sorted(set(table.angle))
    data = table.assign(rotation=[f"{a:g}°" for a in table.angle],
                        top1=100 * table.top1, top5=100 * table.top5)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, metric in zip(axes, ("top1", "top5"), strict=True):
        sns.barplot(data, x="rotation", y=metric, hue="model", order=[f"{a:g}°" for a in angles],
                    hue_order=models, palette=palette, errorbar="sd", saturation=1, alpha=0.8,
                    edgecolor="white", gap=0.1, capsize=0.1, err_kws={"linewidth": 0.8},
                    legend=False, ax=ax)
        for model, bars in zip(models, ax.containers, strict=True):
            for bar in bars:
                bar.set_hatch(hatches[model])
        ax.set_xlabel("rotation of the validation images")
        ax.set_ylabel("")
        ax.set_title(f"{metric.replace('top', 'top-')} accuracy")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("accuracy (%)")
    seeds = table.seed.nunique()
    fig.legend(handles=[Patch(facecolor=palette[m], alpha=0.8, hatch=hatches[m],
                              edgecolor="white", label=m) for m in models],
               loc="upper center", ncol=len(models), fontsize=8, title_fontsize=8,
               title=f"mean over {seeds} seed(s)" + ("; bars: ±1 std" if seeds > 1 else ""))
    fig.tight_layout(rect=(0, 0.03, 1, 0.88))
    return fig
