"""The scripts behind the README's precision and cost tables count what they say:
benchmarks/precision_table.py's statistics, tools/paper_cost.py's grids and arithmetic.
Nothing here is timed or trained."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return _load("benchmarks/precision_table.py")


@pytest.fixture(scope="module")
def cost():
    return _load("tools/paper_cost.py")


def test_rotation_stats_counts_changes_agreement_and_spread(table):
    ref = torch.tensor([[3.0, 0.0], [0.0, 4.0], [2.0, 1.0], [1.0, 2.0]])
    turned = ref.clone()
    turned[2] = torch.tensor([1.0, 2.0])  # image 2 flips its prediction at one turn
    stats = table.rotation_stats([ref, ref, turned, ref], torch.tensor([0, 1, 0, 1]))
    assert stats["agreement"] == 0.75
    assert stats["seen"] == 1.0 and stats["acc_spread"] == 0.25
    assert stats["unseen"] == pytest.approx((1 + 1 + 0.75 + 1) / 4)
    change = (turned[2] - ref[2]).norm() / ref[2].norm()
    assert stats["change_max"] == pytest.approx(change.item())
    assert stats["change_mean"] == pytest.approx(change.item() / 12)


def test_quarter_turn_logits_of_an_exact_model_agree_in_float32(table, single_thread):
    from equivlib.models import get_model

    model = get_model("p4_mnist_cnn", num_classes=10, dropout=0.0)
    x = torch.randn(4, 3, 28, 28)
    stats = table.rotation_stats(table.quarter_turn_logits(model, x, None), torch.zeros(4))
    assert stats["change_max"] < 1e-4 and stats["agreement"] == 1.0


@pytest.mark.parametrize("notebook, runs", [("04_rotmnist_rotation", 160),
                                            ("06_classification", 420), ("07_pcam", 12),
                                            ("08_imagenet", 4)])
def test_paper_grids_are_the_grid_commands(cost, notebook, runs):
    configs, params = cost.grid_configs(notebook)
    assert len(configs) == runs
    if notebook == "08_imagenet":
        assert params["gpus_per_run"] == 8


def test_run_cost_counts_epochs_angles_and_fractions(cost):
    configs, _ = cost.grid_configs("06_classification")
    tenth = next(c for c in configs if c.data.options.get("fraction") == 0.1)
    r = cost.run_cost("06", tenth, 1)
    assert r.train_images == 5_000 * tenth.train.epochs == 5_000 * 2_000  # steps constant
    assert r.eval_images == 10_000 * 4 * (2 if tenth.test.flips else 1)
    assert r.gflops > 0 and r.ops >= r.eval_ops > 0


def test_seconds_per_image_takes_the_slower_of_flops_ops_and_loading(cost):
    a = cost.Assumptions(peak_tf32=1e12, peak_bf16=2e12, utilisation=0.5, op_latency=0.015,
                         loader_workers=4)
    r = cost.RunCost("06", "m", 33, "cifar10", "cifar", batch=10, gpus=1, train_images=100,
                     eval_images=0, gflops=1.0, ops=1, eval_ops=1)
    s = cost.seconds_per_image(r, loader=100.0, a=a)
    assert s["gpu_tf32"] == pytest.approx(3e9 / 0.5e12)  # FLOP-bound: 6 ms an image
    assert s["gpu_bf16"] == pytest.approx(3 * 0.015 / 10)  # op-bound: 3 ops of 15 ms a batch
    assert s["today"] == pytest.approx(1 / 100 + 6e-3)  # loading, then computing
    assert s["tuned"] == pytest.approx(4.5e-3)  # 4 loader workers (2.5 ms) keep up
