"""Optimisers and learning-rate schedules, each schedule with its step unit.

- ``step`` (StepLR) and ``multistep`` (MultiStepLR): stepped once per **epoch**;
- ``onecycle`` (OneCycleLR, max_lr = the optimiser's lr): stepped per **batch**;
- ``warmup_multistep`` (ImageNet): linear warm-up over ``warmup_epochs`` then ×``gamma`` at
  each milestone epoch, stepped per **batch** (milestones counted in epochs);
- ``none``: constant.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR, OneCycleLR, StepLR

from equivlib.engine.config import OptimConfig, ScheduleConfig


def build_optimizer(params: Iterable[torch.nn.Parameter],
                    cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``params``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.name]
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int,
                    steps_per_epoch: int) -> LRScheduler | None:
    """The schedule of ``cfg``; step it per batch or per epoch as ``cfg.unit`` says."""
    kw = dict(cfg.kwargs)
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        return StepLR(optimizer, step_size=kw.get("step_size", 10), gamma=kw.get("gamma", 0.5))
    if cfg.name == "multistep":
        return MultiStepLR(optimizer, milestones=kw.get("milestones", []),
                           gamma=kw.get("gamma", 0.1))
    if cfg.name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                          steps_per_epoch=steps_per_epoch, **kw)
    if cfg.name == "warmup_multistep":
        return LambdaLR(optimizer, warmup_multistep(
            steps_per_epoch, kw.get("warmup_epochs", 5), kw.get("milestones", [30, 60, 80]),
            kw.get("gamma", 0.1)))
    raise ValueError(f"unknown schedule {cfg.name!r}")


class warmup_multistep:  # noqa: N801 - used like a function; a class so it pickles
    """LR factor at batch step ``t``: linear from 1/steps to 1 over the warm-up epochs, then
    ``gamma`` per milestone epoch passed."""

    def __init__(self, steps_per_epoch: int, warmup_epochs: float, milestones: list[int],
                 gamma: float) -> None:
        self.steps_per_epoch, self.warmup_steps = steps_per_epoch, warmup_epochs * steps_per_epoch
        self.milestones, self.gamma = list(milestones), gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        epoch = step // self.steps_per_epoch
        return self.gamma ** sum(epoch >= m for m in self.milestones)
