"""The training and evaluation loops over DataLoaders: :func:`train_one_epoch` and
:func:`evaluate`, DDP-ready (sums are all-reduced through the :class:`DistContext`).

Batches arrive as float images in [0, 1]; on the device the loop applies the batch-level
steps in this order: rotation (training regime or test angle; zero padding is black),
optional mirror, normalisation. Multiples of 90° are exact ``rot90``s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from equivlib.data.transforms import normalize, rotate
from equivlib.engine.distributed import DistContext
from equivlib.engine.precision import Precision

BatchHook = Callable[[torch.Tensor, int], torch.Tensor]
"""``hook(x, step) -> x``: a batch-level change of the (unnormalised) training images at
global step ``step``, e.g. the RotMNIST biased regime's one angle per batch."""


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    *, mean: Sequence[float], std: Sequence[float], device: torch.device,
                    ctx: DistContext | None = None, batch_scheduler: Any = None,
                    batch_hook: BatchHook | None = None, first_step: int = 0,
                    precision: Precision | None = None, scaler: Any = None,
                    label_smoothing: float = 0.0, progress: Any = None) -> dict[str, float]:
    """One pass over ``loader``; ``batch_scheduler`` (if any) is stepped after every batch.
    Returns the mean loss, training accuracy and number of images, summed over processes."""
    ctx, precision = ctx or DistContext(), precision or Precision()
    model.train()
    loss_sum = correct = seen = 0.0
    step = first_step
    for images, labels in loader:
        x = images.to(device, non_blocking=True)
        y = labels.to(device, non_blocking=True)
        if batch_hook is not None:
            x = batch_hook(x, step)
        x = precision.prepare(normalize(x, mean, std))
        with precision.context(device):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        n = len(y)
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        step += 1
        if progress is not None:
            progress.update(1)
    loss_sum, correct, seen = ctx.all_reduce_sum([loss_sum, correct, seen], device)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "train_images": int(seen)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, mean: Sequence[float],
             std: Sequence[float], device: torch.device, angles: Sequence[float] = (0.0,),
             flip: bool = False, topk: Sequence[int] = (1,), ctx: DistContext | None = None,
             precision: Precision | None = None) -> dict[int, dict[float, float]]:
    """Top-k accuracy of ``model`` (eval mode) on ``loader`` rotated by each of ``angles``
    (mirrored left-right first if ``flip``): ``{k: {angle: accuracy}}``, over all processes.
    The loader is read once; every angle is applied to each batch. The forward passes run in
    ``precision.eval_context``: float32 even when training used autocast
    (:mod:`equivlib.engine.precision`)."""
    ctx, precision = ctx or DistContext(), precision or Precision()
    was_training = model.training
    model.eval()
    kmax = max(topk)
    correct = {k: {float(a): 0.0 for a in angles} for k in topk}
    total = 0.0
    for images, labels in loader:
        x0 = images.to(device, non_blocking=True)
        y = labels.to(device, non_blocking=True)
        if flip:
            x0 = x0.flip(-1)
        for angle in angles:
            x = precision.prepare(normalize(rotate(x0, float(angle)), mean, std))
            with precision.eval_context(device):  # float32 under the policy
                logits = model(x)
            top = logits.topk(min(kmax, logits.shape[1]), dim=1).indices
            hit = top == y[:, None]
            for k in topk:
                correct[k][float(angle)] += hit[:, :k].any(1).sum().item()
        total += len(y)
    model.train(was_training)
    flat = [correct[k][float(a)] for k in topk for a in angles] + [total]
    flat = ctx.all_reduce_sum(flat, device)
    total = flat[-1]
    out, i = {}, 0
    for k in topk:
        out[k] = {}
        for a in angles:
            out[k][float(a)] = flat[i] / max(total, 1)
            i += 1
    return out


def quarter_turn_summary(acc: dict[float, float]) -> dict[str, float]:
    """The classification metrics of docs/design.md §7 from accuracies per angle: ``seen`` (0°),
    ``unseen`` (0/90/180/270 pooled) and each quarter turn; empty when an angle is missing."""
    quarters = [0.0, 90.0, 180.0, 270.0]
    if not all(q in acc for q in quarters):
        return {}
    out = {"seen": acc[0.0], "unseen": sum(acc[q] for q in quarters) / 4}
    out.update({f"rot{int(q)}": acc[q] for q in quarters})
    return out


@torch.no_grad()
def equivariance_errors(model: nn.Module, loader: DataLoader, layers: Sequence[str], *,
                        group: str, mean: Sequence[float], std: Sequence[float],
                        device: torch.device, images: int = 64) -> dict[str, float]:
    """Mean relative equivariance error (docs/design.md §4) of the trained model at the modules
    ``layers`` (``"output"``: the logits) on the first ``images`` test images, eval mode,
    in float32 (the precision policy)."""
    from equivlib.checks import layerwise_errors

    batches, n = [], 0
    for x, _ in loader:
        batches.append(x)
        n += len(x)
        if n >= images:
            break
    x = normalize(torch.cat(batches)[:images].to(device), mean, std)
    rows = []
    with Precision().eval_context(device):  # float32 even inside an autocast region
        for chunk in x.split(16):
            rows.append({r["name"]: r["error"] for r in
                         layerwise_errors(model, chunk, group, names=list(layers))})
    return {name: sum(r[name] * len(c) for r, c in zip(rows, x.split(16), strict=True))
            / len(x) for name in layers if name in rows[0]}
