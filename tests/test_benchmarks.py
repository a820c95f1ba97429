"""The throughput benchmark compares like with like: its plain network is the group model's
function in plain torch.nn (train and eval mode, both memory formats), the old dense twin
still computes the same logits, the RotMNIST CNNs are built as the cpu profile trains them,
the group model makes no copy the plain network does not, and the script runs end to end
and says on which CPU. Nothing here is timed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from equivlib.layers import GroupBatchNorm, GroupConv2d, LiftingConv2d
from equivlib.models import get_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
FORMATS = [torch.contiguous_format, torch.channels_last]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    ("p4_mnist_cnn", 28, {"dropout": 0.0}),
    ("p4_mnist_cnn", 29, {"dropout": 0.0}),
    ("p4_resnet20", 33, {"widths": [2, 2, 2]}),
    ("p4m_resnet20", 32, {"widths": [2, 2, 2]}),
    ("p4_resnet20", 33, {"widths": [17, 17, 17]}),  # 17 >= 16 channels: the view path
]


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name, size, kwargs", CASES)
def test_plain_network_is_the_group_model_in_plain_torch(bench, single_thread, name, size,
                                                        kwargs, fmt):
    """Train mode (batch statistics shared over orientations) and eval mode, float64: the
    same outputs; only torch.nn modules (and the benchmark's SharedBatchNorm) inside."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, **kwargs).double()
    plain = bench.plain_network(model).to(memory_format=fmt)
    model = model.to(memory_format=fmt)
    x = torch.randn(3, 3, size, size, dtype=torch.float64).contiguous(memory_format=fmt)
    for mode in (True, False):
        model.train(mode), plain.train(mode)
        torch.testing.assert_close(plain(x), model(x), rtol=1e-12, atol=1e-12)
    kinds = {type(m) for m in plain.modules()} - {type(plain), bench.SharedBatchNorm}
    assert all(k.__module__.startswith("torch.") for k in kinds), kinds
    shared = [m for m in plain.modules() if isinstance(m, bench.SharedBatchNorm)]
    assert len(shared) == sum(isinstance(m, GroupBatchNorm) for m in model.modules())
    assert all(p.requires_grad for p in plain.parameters())


def test_export_as_is_keeps_per_orientation_batch_norm(bench, single_thread):
    model = get_model("p4_mnist_cnn", num_classes=10, dropout=0.0).double()
    plain = bench.plain_network(model, shared_bn=False)
    bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 7 and all(m.num_features == 40 for m in bns)


@pytest.mark.parametrize("name, size, kwargs", CASES[:4])
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


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_group_model_copies_nothing_the_plain_network_does_not(bench, single_thread, mode):
    """channels_last, a P4 ResNet with one stage wide enough for the view path: the copy ops
    (torch.profiler) on feature maps and banks are the plain network's (before issue 28 the
    group batch norm returned NCHW maps and convolution backward copied them)."""
    models = bench.setups("p4_resnet20", 17, 2, [4, 17, 4], mode)
    found = {key: bench.layout_copies(*models[key], mode, min_elements=1 << 10)
             for key in ("p4_resnet20 channels_last", "plain channels_last")}
    assert found["p4_resnet20 channels_last"] == found["plain channels_last"]


def test_the_script_runs_and_prints_a_row_per_set_up(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--case", "p4_resnet20:33:2,2,2", "--reps", "1",
         "--steps", "1", "--batch", "2", "--dense-twin"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    for row in ("p4_resnet20 NCHW", "plain NCHW", "p4_resnet20 channels_last",
                "plain channels_last", "export() as is NCHW", "dense twin channels_last",
                "p4_resnet20 NCHW uncached", "bank rebuild per forward", "vs best plain"):
        assert row in out, out
    capability = torch.backends.cpu.get_cpu_capability()
    assert out.count(f"torch CPU capability {capability}") == 2, out  # one per table
    assert out.count("CPU: ") == 2


def test_the_script_lists_copies(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--case", "p4_resnet20:17:2,2,2", "--modes", "train",
         "--batch", "2", "--profile-copies"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert "copy ops per step" in out and "plain channels_last" in out, out
    assert "CPU: " in out
