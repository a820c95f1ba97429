"""The precision policy (equivlib/engine/precision.py) on the CPU with bf16 autocast: models
may train under autocast, every measurement runs in float32, so exact models stay exact.

Tested in pairs: under the policy an exact model's logits move by float32 rounding under a
quarter turn (< 1e-4; measured <= 6e-6, with and without oneDNN) and its predictions agree;
evaluated under bf16 autocast, as the engine did before the policy, the same logits move by
more than 5e-4 (measured 4e-3 to 9e-3 on batches of 32). Nothing here needs a GPU."""

import pytest
import torch

from equivlib.data.mnist import load_raw, make_splits
from equivlib.data.registry import get_dataset
from equivlib.engine.loop import evaluate
from equivlib.engine.precision import Precision, check_amp, ieee_float32, resolve_precision
from equivlib.engine.run import run
from equivlib.experiments.classification import Variant, classification_config
from equivlib.experiments.rotmnist import rotmnist_config
from equivlib.models import get_model

CPU = torch.device("cpu")
BF16 = Precision(torch.bfloat16)  # what --amp gives on a bf16 GPU: the policy
NO_POLICY = Precision(torch.bfloat16, eval_autocast=torch.bfloat16)  # evaluation in bf16
FLOAT32_BOUND = 1e-4  # rotation change of an exact model in float32 stays below this
BF16_BOUND = 5e-4  # ... and under bf16 autocast exceeds this (on 32 images)

EXACT = [  # (model, input size, kwargs): exact at that size (docs/design.md §2)
    ("p4_resnet20", 33, {"widths": [4, 8, 16]}),
    ("p4m_resnet20", 33, {"widths": [2, 4, 8]}),
]


@pytest.fixture(autouse=True)
def _env(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


def quarter_turn_logits(model: torch.nn.Module, x: torch.Tensor,
                        precision: Precision) -> list[torch.Tensor]:
    """The model's logits (eval mode) on ``x`` at 0..3 quarter turns, inside an autocast
    region (as a training step is) and then in ``precision``'s evaluation context."""
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with precision.eval_context(CPU):
            return [model(torch.rot90(x, k, (-2, -1))) for k in range(4)]


def max_change(logits: list[torch.Tensor]) -> float:
    """Largest relative logit change under a non-identity quarter turn, over the images."""
    ref = logits[0].float()
    return max(((y.float() - ref).norm(dim=1) / ref.norm(dim=1)).max().item()
               for y in logits[1:])


def min_margin(logits: torch.Tensor) -> float:
    """Smallest gap between the two largest logits of an image, relative to its norm."""
    top = logits.float().topk(2, dim=1).values
    return ((top[:, 0] - top[:, 1]) / logits.float().norm(dim=1)).min().item()


def _model_and_images(name: str, size: int, kwargs: dict) -> tuple[torch.nn.Module,
                                                                   torch.Tensor]:
    torch.manual_seed(0)
    return get_model(name, num_classes=10, **kwargs), torch.randn(32, 3, size, size)


# ------------------------------------------------------------------ the pair, on logits
@pytest.mark.parametrize("name, size, kwargs", EXACT)
def test_under_the_policy_an_exact_model_stays_exact(name, size, kwargs):
    model, x = _model_and_images(name, size, kwargs)
    logits = quarter_turn_logits(model, x, BF16)
    assert all(y.dtype == torch.float32 for y in logits)  # autocast was off
    assert max_change(logits) < FLOAT32_BOUND
    # a prediction could flip only if two logits were within float32 rounding
    assert min_margin(logits[0]) > 100 * FLOAT32_BOUND, "seeded data too close to a tie"
    predictions = torch.stack([y.argmax(1) for y in logits])
    assert (predictions == predictions[0]).all()


@pytest.mark.parametrize("name, size, kwargs", EXACT)
def test_without_the_policy_bf16_evaluation_breaks_exactness(name, size, kwargs):
    """The evidence that the policy is needed: the same model and images evaluated under
    bf16 autocast move their logits by bf16 rounding under a quarter turn."""
    model, x = _model_and_images(name, size, kwargs)
    logits = quarter_turn_logits(model, x, NO_POLICY)
    assert all(y.dtype == torch.bfloat16 for y in logits)
    assert max_change(logits) > BF16_BOUND


def test_the_policy_ignores_an_outer_autocast_and_changes_no_float32_result():
    """Evaluation under the policy is float32 bit for bit, even inside an autocast region."""
    model, x = _model_and_images(*EXACT[0])
    model.eval()
    with torch.no_grad():
        plain = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), BF16.eval_context(CPU):
            policy = model(x)
    assert torch.equal(plain, policy)


# ------------------------------------------------------------------ the engine
class _Recorder(torch.nn.Module):
    """Records the dtype of the logits the wrapped model returns."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.dtypes = model, set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        self.dtypes.add(y.dtype)
        return y


@pytest.mark.parametrize("precision, dtype", [(Precision(), torch.float32),
                                              (BF16, torch.float32),
                                              (Precision(torch.float16), torch.float32),
                                              (NO_POLICY, torch.bfloat16)])
def test_evaluate_measures_in_float32_under_the_policy(precision, dtype):
    model, x = _model_and_images(*EXACT[0])
    data = torch.utils.data.TensorDataset(x.sigmoid(), torch.arange(len(x)) % 10)
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    recorder = _Recorder(model)
    kw = dict(mean=[0.5] * 3, std=[0.25] * 3, device=CPU, angles=[0.0, 90.0, 180.0, 270.0])
    acc = evaluate(recorder, loader, precision=precision, **kw)
    assert recorder.dtypes == {dtype}
    if dtype == torch.float32:  # the same numbers as a float32 run
        assert acc == evaluate(model, loader, precision=Precision(), **kw)


@pytest.fixture(scope="module")
def mnist_data():
    (x, y), _ = load_raw("embedded")
    return make_splits(x, y, sizes=(256, 64, 64), seed=0)


def _mnist_config():
    return rotmnist_config("p4_mnist_cnn", 28, epochs=1, batch_size=64, sizes=(256, 64, 64),
                           angles=[0.0, 90.0, 180.0, 270.0], seed=3, channels=2,
                           dropout=0.0)


def _resnet_config():
    """P4 ResNet-20 at the exact 33 with the CIFAR protocol, on embedded MNIST digits."""
    return classification_config("mnist", Variant("p4"), 33, width=2, depth=20, flips=False,
                                 epochs=1, batch_size=16, seed=1, stand_in_sizes=(128, 16, 64))


@pytest.mark.parametrize("which", ["p4_mnist_cnn", "p4_resnet20"])
def test_engine_trains_in_bf16_and_reports_seen_equal_unseen(tmp_path, mnist_data, which):
    """An exact model trained under CPU bf16 autocast (``amp="bf16"``): the engine's
    reported quarter-turn accuracies are identical, so seen == unseen."""
    if which == "p4_mnist_cnn":
        config, data = _mnist_config(), mnist_data
    else:
        config = _resnet_config()
        data = get_dataset("mnist", None, False, **config.data.options)
    metrics = run(config, data, checkpoint_dir=tmp_path, amp="bf16")
    assert metrics["timing"]["precision"] == "train bf16 autocast, evaluate float32"
    quarters = [metrics[f"rot{q}"] for q in (0, 90, 180, 270)]
    assert len(set(quarters)) == 1, quarters
    assert metrics["seen"] == metrics["unseen"]


def test_amp_bf16_does_train_in_bf16(tmp_path, mnist_data):
    """The other half: ``amp="bf16"`` changes training (the losses differ from float32),
    and a float32 run records no precision (its stored form is unchanged)."""
    config = _mnist_config()
    bf16 = run(config, mnist_data, checkpoint_dir=tmp_path / "a", amp="bf16")
    fp32 = run(config, mnist_data, checkpoint_dir=tmp_path / "b")
    assert bf16["history"][0]["train_loss"] != fp32["history"][0]["train_loss"]
    assert bf16["history"][0]["train_loss"] == pytest.approx(fp32["history"][0]["train_loss"],
                                                             rel=0.05)
    assert "precision" not in fp32["timing"]


# ------------------------------------------------------------------ resolving amp
@pytest.mark.parametrize("amp, dtype, scaled", [(False, None, False),
                                                ("bf16", torch.bfloat16, False),
                                                ("fp16", torch.float16, True)])
def test_resolve_precision_on_the_cpu(amp, dtype, scaled):
    precision, scaler = resolve_precision(CPU, amp, channels_last=True)
    assert precision == Precision(dtype, channels_last=True)
    assert precision.eval_autocast is None  # the policy: evaluation in float32
    assert (scaler is not None) is scaled


def test_amp_true_on_the_cpu_warns_and_trains_in_float32():
    with pytest.warns(RuntimeWarning, match="only used on CUDA"):
        precision, scaler = resolve_precision(CPU, True)
    assert precision == Precision() and scaler is None


@pytest.mark.parametrize("amp", ["bfloat16", "yes", 1, None, torch.bfloat16])
def test_bad_amp_is_refused(amp, tmp_path, mnist_data):
    with pytest.raises(ValueError, match="amp must be one of"):
        check_amp(amp)
    with pytest.raises(ValueError, match="amp must be one of"):
        run(_mnist_config(), mnist_data, checkpoint_dir=tmp_path, amp=amp)
    assert not (tmp_path / "last.pt").exists()


def test_describe():
    assert Precision().describe() == "train float32, evaluate float32"
    assert NO_POLICY.describe() == "train bf16 autocast, evaluate bf16 autocast"
    assert Precision(torch.float16, True).describe() == (
        "train fp16 autocast, evaluate float32, channels_last")


def test_ieee_float32_switches_tf32_off_and_back():
    """Evaluation on CUDA turns TF32 off (flags only: runs without a GPU)."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with ieee_float32():
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(KeyError), ieee_float32():
        raise KeyError("restored on errors too")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
