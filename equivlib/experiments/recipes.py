"""The paper's training recipe per dataset (docs/design.md §7) as run configs: what
``python -m equivlib train --dataset NAME`` starts from before its flags override it.

Facts from the paper and the authors' code; where docs/design.md §7 is silent the choice is said
here. Data *sources* (embedded vs downloaded files) are options, not recipe: MNIST uses
the embedded digits unless ``source: torchvision`` is asked for. (The transform presets
of :data:`equivlib.data.transforms.PROTOCOLS` are a different thing: how images are
prepared, not how a model is trained.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from equivlib._deprecation import moved_names
from equivlib.engine.config import RunConfig


@dataclass(frozen=True)
class RotMNISTRecipe:
    """The paper's RotMNIST numbers, in one place: Adam at ``lr`` with ``weight_decay``,
    StepLR halving every ``lr_step`` epochs, ``dropout`` after the first six convs, and
    ``sizes`` (train, valid, test images) of the embedded digits' split."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 1e-5
    lr_step: int = 10
    dropout: float = 0.3
    sizes: tuple[int, int, int] = (3000, 1000, 1000)


ROTMNIST = RotMNISTRecipe()
QUARTER_TURNS = [0.0, 90.0, 180.0, 270.0]
EVERY_10_DEGREES = [float(a) for a in range(0, 360, 10)]
_CLASSIFICATION = {  # CIFAR-10/100 and Flowers-102: ResNet-44, Adam + per-batch OneCycleLR
    "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
    "schedule": {"name": "onecycle", "kwargs": {}},
    "train": {"epochs": 200, "batch_size": 256, "select": "last"},
    "test": {"angles": QUARTER_TURNS},
}
PAPER_RECIPES: dict[str, dict[str, Any]] = {
    "mnist": {  # RotMNIST CNN, best-on-valid model, tested every 10 degrees
        "optim": {"name": "adam", "lr": ROTMNIST.lr, "weight_decay": ROTMNIST.weight_decay},
        "schedule": {"name": "step", "kwargs": {"step_size": ROTMNIST.lr_step, "gamma": 0.5}},
        "train": {"epochs": ROTMNIST.epochs, "batch_size": ROTMNIST.batch_size,
                  "select": "best_valid"},
        "test": {"angles": EVERY_10_DEGREES},
    },
    "cifar10": _CLASSIFICATION,
    "cifar100": _CLASSIFICATION,
    "flowers102": _CLASSIFICATION,
    "pcam": {  # SGD + MultiStepLR, best-on-valid, rotations every 10 degrees + errors
        "optim": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-5},
        "schedule": {"name": "multistep",
                     "kwargs": {"milestones": [8, 16, 20, 24, 26, 28], "gamma": 0.75}},
        "train": {"epochs": 30, "batch_size": 32, "select": "best_valid"},
        "test": {"angles": EVERY_10_DEGREES,
                 "error_layers": ["stem", "stages.0", "stages.1", "stages.2"]},
    },
    "pcam_stand_in": None,  # PCam's recipe (filled in below)
    "imagenet": {  # lr 0.1 per 256 images of global batch; 64 per GPU in the paper
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"name": "warmup_multistep",
                     "kwargs": {"warmup_epochs": 5, "milestones": [30, 60, 80], "gamma": 0.1}},
        "train": {"epochs": 90, "batch_size": 256, "select": "last"},
        "test": {"angles": QUARTER_TURNS, "topk": [1, 5]},
    },
}
PAPER_RECIPES["pcam_stand_in"] = PAPER_RECIPES["pcam"]  # the stand-in runs PCam's
PCAM_WIDTHS = {"z2_resnet44": [8, 14, 28], "p4_resnet44": [4, 7, 14]}


def paper_config(dataset: str, model: str, input_size: int, /, **sections: dict[str, Any],
                 ) -> RunConfig:
    """The paper's recipe for ``dataset`` with ``model`` at ``input_size``; ``sections``
    override keys section by section (``train={"seed": 3}``). PCam ResNet-44s get the
    paper's narrow widths unless ``model={"kwargs": {...}}`` says otherwise. ImageNet's lr
    follows the global batch (0.1 x batch / 256) unless ``optim={"lr": ...}`` is given."""
    if dataset not in PAPER_RECIPES:
        raise ValueError(f"unknown dataset {dataset!r} (no paper protocol for it); known: "
                         f"{', '.join(PAPER_RECIPES)}")
    base = copy.deepcopy(PAPER_RECIPES[dataset])
    base["data"] = {"dataset": dataset, "input_size": input_size}
    base["model"] = {"name": model, "kwargs": {}}
    if dataset in ("pcam", "pcam_stand_in") and model in PCAM_WIDTHS:
        base["model"]["kwargs"]["widths"] = PCAM_WIDTHS[model]
    for name, values in sections.items():
        if not isinstance(values, dict):
            raise ValueError(f"override of section {name!r} must be a dict, got {values!r}")
        base[name] = _merge(base.get(name, {}), values)
    if dataset == "imagenet" and "lr" not in sections.get("optim", {}):
        base["optim"]["lr"] = 0.1 * base["train"]["batch_size"] / 256
    return RunConfig.from_dict(base)


def train_overrides(seed: int, epochs: int | None = None,
                    batch_size: int | None = None) -> dict[str, Any]:
    """The ``train`` section override of :func:`paper_config`: the seed, and the epochs and
    batch size where given (None keeps the recipe's)."""
    train: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        train["epochs"] = epochs
    if batch_size is not None:
        train["batch_size"] = batch_size
    return train


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, dicts inside merged key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


__getattr__ = moved_names(__name__, {"PAPER_PROTOCOLS": f"{__name__}:PAPER_RECIPES"})
