"""The throughput benchmark compares like with like: its dense twin is the same network
(same logits, no bank gather), its RotMNIST CNNs are built as the cpu profile trains them,
and the script runs end to end. Nothing here is timed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equivlib.layers import GroupConv2d, LiftingConv2d
from equivlib.models import get_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, size, kwargs", [
    ("p4_mnist_cnn", 28, {"dropout": 0.0}),
    ("p4_mnist_cnn", 29, {"dropout": 0.0}),
    ("p4_resnet20", 33, {"widths": [2, 2, 2]}),
    ("p4m_resnet20", 32, {"widths": [2, 2, 2]}),
])
def test_dense_twin_is_the_same_network_without_the_gather(bench, single_thread, name, size,
                                                           kwargs):
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, **kwargs).eval()
    twin = bench.dense_twin(model).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x), atol=1e-5, rtol=1e-5)
    convs = [m for m in twin.modules() if isinstance(m, (LiftingConv2d, GroupConv2d))]
    assert convs and all(not hasattr(m, "weight") and m.dense_weight.dim() == 4 for m in convs)


@pytest.mark.parametrize("dropout, same", [(0.0, True), (0.3, False)])
def test_mnist_set_ups_follow_the_dropout(bench, single_thread, dropout, same):
    """Two train-mode forwards of one batch agree exactly only without dropout."""
    models = bench.setups("p4_mnist_cnn", 28, 4, None, "train", dropout)
    for key in ("p4_mnist_cnn NCHW", "z2_mnist_cnn NCHW"):
        model, x = models[key]
        model.train()
        torch.manual_seed(1)
        a = model(x)
        b = model(x)
        assert torch.equal(a, b) is same, key


def test_the_script_runs_and_prints_a_row_per_set_up(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--case", "p4_resnet20:33:2,2,2", "--reps", "1",
         "--steps", "1", "--batch", "2"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    for row in ("p4_resnet20 NCHW", "dense twin NCHW", "p4_resnet20 channels_last",
                "dense twin channels_last", "p4_resnet20 NCHW uncached",
                "bank rebuild per forward"):
        assert row in out, out
