"""Optimisers and learning-rate schedules (``equivlib.engine.optim``), each with its step
unit, and the round trip of a schedule's state through a checkpoint."""

import io
import math

import pytest
import torch

from equivlib.engine.config import SCHEDULES, OptimConfig, ScheduleConfig
from equivlib.engine.optim import build_optimizer, build_scheduler, warmup_multistep

pytestmark = pytest.mark.usefixtures("single_thread")

BASE_LR = 0.1
PCAM_MILESTONES = [8, 16, 20, 24, 26, 28]


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def _sgd(lr: float = BASE_LR) -> torch.optim.Optimizer:
    return build_optimizer(_params(), OptimConfig(name="sgd", lr=lr))


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def _trajectory(optimizer, scheduler, steps: int) -> list[float]:
    """The lr in force at each of ``steps`` steps (read before stepping)."""
    lrs = []
    for _ in range(steps):
        lrs.append(_lr(optimizer))
        optimizer.step()
        scheduler.step()
    return lrs


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize(("step_size", "gamma"), [(10, 0.5), (3, 0.5), (4, 0.1)])
def test_step_schedule_per_epoch(step_size, gamma):
    opt = _sgd()
    sched = build_scheduler(opt, ScheduleConfig("step", {"step_size": step_size, "gamma": gamma}),
                            epochs=30, steps_per_epoch=100)
    lrs = _trajectory(opt, sched, 30)
    for epoch, lr in enumerate(lrs):
        assert lr == pytest.approx(BASE_LR * gamma ** (epoch // step_size), rel=1e-9)


def test_step_schedule_default_halves_every_10_epochs():
    opt = _sgd()
    sched = build_scheduler(opt, ScheduleConfig(), epochs=50, steps_per_epoch=7)
    lrs = _trajectory(opt, sched, 35)
    assert lrs[0] == lrs[9] == pytest.approx(BASE_LR)
    assert lrs[10] == lrs[19] == pytest.approx(BASE_LR / 2)
    assert lrs[20] == pytest.approx(BASE_LR / 4)
    assert lrs[30] == pytest.approx(BASE_LR / 8)


def test_multistep_pcam_milestones():
    opt = _sgd()
    cfg = ScheduleConfig("multistep", {"milestones": PCAM_MILESTONES, "gamma": 0.75})
    sched = build_scheduler(opt, cfg, epochs=30, steps_per_epoch=100)
    lrs = _trajectory(opt, sched, 30)
    for epoch, lr in enumerate(lrs):
        passed = sum(epoch >= m for m in PCAM_MILESTONES)
        assert lr == pytest.approx(BASE_LR * 0.75**passed, rel=1e-9)
    assert lrs[7] == pytest.approx(BASE_LR) and lrs[8] == pytest.approx(0.75 * BASE_LR)
    assert lrs[29] == pytest.approx(BASE_LR * 0.75**6)


def test_multistep_defaults_to_gamma_0_1():
    opt = _sgd()
    sched = build_scheduler(opt, ScheduleConfig("multistep", {"milestones": [2]}), 5, 1)
    assert _trajectory(opt, sched, 4) == pytest.approx([0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("optim", ["sgd", "adam", "adamw"])
def test_onecycle_peaks_at_the_optimiser_lr(optim):
    lr, epochs, steps = 0.02, 2, 10  # pct_start 0.3: the peak at step 0.3 * 20 - 1 = 5
    opt = build_optimizer(_params(), OptimConfig(name=optim, lr=lr))
    sched = build_scheduler(opt, ScheduleConfig("onecycle", {}), epochs, steps)
    lrs = _trajectory(opt, sched, epochs * steps)  # every batch step is allowed
    assert max(lrs) == pytest.approx(lr, rel=1e-9)
    assert lrs.index(max(lrs)) == 5
    assert lrs[0] == pytest.approx(lr / 25)  # default div_factor
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6], strict=True))  # up ...
    assert all(a > b for a, b in zip(lrs[5:-1], lrs[6:], strict=True))  # ... then down
    assert lrs[-1] < lr / 25
    with pytest.raises(ValueError):  # stepped past epochs * steps_per_epoch
        sched.step()


def test_onecycle_kwargs_and_groups():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.4},
                           {"params": model[1].parameters(), "lr": 0.04}], lr=0.4, momentum=0.9)
    cfg = ScheduleConfig("onecycle", {"pct_start": 0.25, "div_factor": 10.0,
                                      "final_div_factor": 100.0})
    sched = build_scheduler(opt, cfg, epochs=4, steps_per_epoch=5)
    first = [g["lr"] for g in opt.param_groups]
    assert first == pytest.approx([0.04, 0.004])
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[4] == pytest.approx([0.4, 0.04])  # peak at step 0.25 * 20 - 1 = 4
    assert max(lr[0] for lr in lrs) == pytest.approx(0.4)
    assert lrs[-1] == pytest.approx([0.04 / 100, 0.004 / 100])  # initial / final_div_factor


def test_warmup_multistep_trajectory():
    spe, warmup = 10, 5
    opt = _sgd()
    cfg = ScheduleConfig("warmup_multistep", {"warmup_epochs": warmup})
    sched = build_scheduler(opt, cfg, epochs=90, steps_per_epoch=spe)
    lrs = _trajectory(opt, sched, 90 * spe)
    n = warmup * spe
    # linear rise over the 50 warm-up batch steps, reaching the base lr at the last one
    assert lrs[0] == pytest.approx(BASE_LR / n)
    for t in (9, 24, 48):
        assert lrs[t] == pytest.approx(BASE_LR * (t + 1) / n)
    diffs = [b - a for a, b in zip(lrs[:n - 1], lrs[1:n], strict=True)]
    assert max(diffs) == pytest.approx(min(diffs)) == pytest.approx(BASE_LR / n)
    assert lrs[n - 1] == pytest.approx(BASE_LR)
    expected = {50: 1, 123: 1, 299: 1, 300: 0.1, 599: 0.1, 600: 0.01, 799: 0.01, 800: 0.001,
                899: 0.001}
    for t, factor in expected.items():
        assert lrs[t] == pytest.approx(BASE_LR * factor, rel=1e-9), t


def test_warmup_multistep_custom_kwargs():
    f = warmup_multistep(steps_per_epoch=4, warmup_epochs=2.5, milestones=[3, 5], gamma=0.5)
    assert [f(t) for t in range(10)] == pytest.approx([(t + 1) / 10 for t in range(10)])
    assert f(10) == f(11) == 1.0  # epoch 2 (steps 8-11) after the 10 warm-up steps
    assert f(12) == pytest.approx(0.5)  # epoch 3
    assert f(19) == pytest.approx(0.5) and f(20) == pytest.approx(0.25)  # epoch 5
    no_warmup = warmup_multistep(steps_per_epoch=3, warmup_epochs=0, milestones=[1], gamma=0.1)
    assert [no_warmup(t) for t in range(6)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1])


def test_none_schedule_is_none():
    opt = _sgd()
    assert build_scheduler(opt, ScheduleConfig("none", {}), epochs=5, steps_per_epoch=3) is None
    assert _lr(opt) == BASE_LR


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="'cosine'"):
        build_scheduler(_sgd(), ScheduleConfig("cosine", {}), epochs=5, steps_per_epoch=3)


@pytest.mark.parametrize(("name", "unit"), [("none", "epoch"), ("step", "epoch"),
                                            ("multistep", "epoch"), ("onecycle", "batch"),
                                            ("warmup_multistep", "batch")])
def test_schedule_unit(name, unit):
    assert ScheduleConfig(name, {}).unit == unit
    assert name in SCHEDULES


def test_every_schedule_has_a_unit():
    assert {ScheduleConfig(n).unit for n in SCHEDULES} == {"batch", "epoch"}
    assert set(SCHEDULES) == {"none", "step", "multistep", "onecycle", "warmup_multistep"}


# ------------------------------------------------------------------ checkpoints
CHECKPOINT_CASES = [
    ("step", {"step_size": 2, "gamma": 0.5}, 10),
    ("multistep", {"milestones": PCAM_MILESTONES, "gamma": 0.75}, 30),
    ("onecycle", {"pct_start": 0.3}, 30),
    ("warmup_multistep", {"warmup_epochs": 2, "milestones": [3, 5], "gamma": 0.1}, 40),
]


def _build(name, kwargs, optim="sgd"):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model.parameters(), OptimConfig(name=optim, lr=BASE_LR))
    sched = build_scheduler(opt, ScheduleConfig(name, dict(kwargs)), epochs=6,
                            steps_per_epoch=5)
    return model, opt, sched


@pytest.mark.parametrize(("name", "kwargs", "total"), CHECKPOINT_CASES)
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_scheduler_state_round_trip(name, kwargs, total, optim):
    model, opt, sched = _build(name, kwargs, optim)
    cut = total // 2 + 1
    head = _trajectory(opt, sched, cut)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    tail = _trajectory(opt, sched, total - cut)  # the uninterrupted run

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    _, opt2, sched2 = _build(name, kwargs, optim)
    assert _lr(opt2) == pytest.approx(head[0])  # a fresh one starts over
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    resumed = _trajectory(opt2, sched2, total - cut)
    assert resumed == pytest.approx(tail, rel=1e-12)
    assert len(set(head + tail)) > 2  # the schedule did change the lr


def test_warmup_multistep_state_keeps_its_parameters():
    _, opt, sched = _build("warmup_multistep", {"warmup_epochs": 2, "milestones": [3],
                                                "gamma": 0.5})
    _trajectory(opt, sched, 7)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # restoring into a scheduler built with other parameters takes the saved ones
    opt2 = _sgd()
    sched2 = build_scheduler(opt2, ScheduleConfig("warmup_multistep", {}), 6, 5)
    sched2.load_state_dict(state)
    fn = sched2.lr_lambdas[0]
    assert (fn.steps_per_epoch, fn.warmup_steps, fn.milestones, fn.gamma) == (5, 10, [3], 0.5)
    assert sched2.last_epoch == 7


# ------------------------------------------------------------------ optimisers
def test_sgd_has_momentum_and_weight_decay():
    params = _params()
    opt = build_optimizer(params, OptimConfig(name="sgd", lr=0.3, weight_decay=5e-4,
                                              momentum=0.7))
    assert type(opt) is torch.optim.SGD
    (group,) = opt.param_groups
    assert group["lr"] == 0.3 and group["momentum"] == 0.7 and group["weight_decay"] == 5e-4
    assert [id(p) for p in group["params"]] == [id(p) for p in params]


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam),
                                           ("adamw", torch.optim.AdamW)])
def test_adam_ignores_momentum(name, cls):
    opts = [build_optimizer(_params(), OptimConfig(name=name, lr=1e-3, weight_decay=1e-4,
                                                   momentum=m)) for m in (0.1, 0.9)]
    for opt in opts:
        assert type(opt) is cls
        (group,) = opt.param_groups
        assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-4
        assert "momentum" not in group
    strip = [{k: v for k, v in o.param_groups[0].items() if k != "params"} for o in opts]
    assert strip[0] == strip[1]


def test_optimiser_steps_the_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.5, weight_decay=0.0,
                                                          momentum=0.0))
    before = model.weight.detach().clone()
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    # plain SGD: w <- w - lr * grad, and the gradient of sum(w . 1 + b) is 1
    torch.testing.assert_close(model.weight.detach(), before - 0.5)
    assert not math.isnan(float(model.weight.detach().sum()))
