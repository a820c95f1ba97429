"""Restore a finished run: its model rebuilt from its checkpoint, and that model's predictions
on the test set.

The results store keeps a run's metrics, not its outputs; analyses that need per-image
predictions (which digits a model confuses) rebuild the tested model from
``<checkpoint dir>/last.pt``: the best-valid weights when the run selected them
(``train.select = "best_valid"``), else the last ones. That is one forward pass over the test
set, never a retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from equivlib.data.base import DatasetSplits
from equivlib.data.registry import get_dataset
from equivlib.data.transforms import normalize, rotate
from equivlib.engine.checkpoint import load_checkpoint
from equivlib.engine.config import RunConfig
from equivlib.engine.run import RunDatasets
from equivlib.models import get_model


def rebuild_tested_model(config: dict[str, Any] | RunConfig, checkpoint_dir: str | Path,
                         num_classes: int) -> nn.Module:
    """The model ``config``'s run tested, from ``checkpoint_dir/last.pt``, in eval mode.

    Raises FileNotFoundError when there is no checkpoint, ValueError when it belongs to
    another run or the run has not finished its epochs."""
    config = RunConfig.from_dict(config)
    path = Path(checkpoint_dir) / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"run {config.key()}: no checkpoint at {path}; train the run "
                                "first (its result alone holds no weights)")
    ck = load_checkpoint(path)
    if ck.get("key") != config.key():
        raise ValueError(f"{path} belongs to run {ck.get('key')}, not {config.key()}")
    if ck["epoch"] < config.train.epochs:
        raise ValueError(f"run {config.key()} stopped after epoch {ck['epoch']} of "
                         f"{config.train.epochs}: finish it before reading its predictions")
    best = config.train.select == "best_valid" and ck.get("best_model") is not None
    model = get_model(config.model.name, num_classes=num_classes, **config.model.kwargs)
    model.load_state_dict(ck["best_model"] if best else ck["model"])
    return model.eval()


def predict_test_set(config: dict[str, Any] | RunConfig, checkpoint_dir: str | Path, *,
                     angle: float = 0.0, data_dir: str | Path | None = None,
                     data: DatasetSplits | None = None, batch_size: int = 500,
                     device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, predicted classes), on the CPU, of the run's tested model on its test set
    rotated by ``angle`` degrees, computed as the engine's evaluation does, on ``device``.
    ``data``: the raw splits of the run's dataset, when already loaded."""
    config = RunConfig.from_dict(config)
    if data is None:
        data = get_dataset(config.data.dataset, data_dir, False, **config.data.options)
    sets = RunDatasets(config, data)
    dev = torch.device(device)
    model = rebuild_tested_model(config, checkpoint_dir, sets.info.num_classes).to(dev)
    targets, predicted = [], []
    loader = torch.utils.data.DataLoader(sets.test, batch_size=batch_size)
    with torch.no_grad():
        for x, y in loader:
            x = normalize(rotate(x.to(dev), float(angle)), sets.info.mean, sets.info.std)
            predicted.append(model(x).argmax(1).cpu())
            targets.append(y)
    return torch.cat(targets), torch.cat(predicted)
