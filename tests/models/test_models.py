"""Model registry and builders: parameter counts, depth, invariance exactly where the
exactness condition says so (and `trace` agreeing with the measurement)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equivlib import models
from equivlib.checks import equivariance_error
from equivlib.layers import GroupConv2d, LiftingConv2d
from equivlib.models import get_model, list_models, register_model
from equivlib.tracer import trace

NAMES = ["z2_resnet44", "p4_resnet44", "p4m_resnet44", "z2_resnet20", "p4_resnet20",
         "p4m_resnet20", "z2_resnet18", "p4_resnet18", "p4m_resnet18", "z2_mnist_cnn",
         "p4_mnist_cnn", "p4_single_layer"]
EXACT_TOL, INEXACT_MIN = 1e-10, 1e-3
# same depth, fewer channels
SMALL = {"resnet44": [2, 4, 8], "resnet20": [2, 4, 8], "resnet18": [2, 4, 4, 4]}


def small(name: str, **config) -> nn.Module:
    """The registered architecture with small widths, eval mode, float64."""
    family = name.split("_", 1)[1]
    if family in SMALL:
        config.setdefault("widths", SMALL[family])
    return get_model(name, **config).double().eval()


def logits_error(model: nn.Module, size: int) -> torch.Tensor:
    x = torch.randn(1, model.in_channels, size, size, dtype=torch.float64)
    return equivariance_error(model, x, model.group, output="invariant")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- registry
def test_list_models_names_every_architecture():
    assert list_models() == sorted(NAMES)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'p4_resnet50'") as err:
        get_model("p4_resnet50")
    assert all(name in str(err.value) for name in NAMES)


def test_get_model_builder_of_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'p4_resnet50'; known models: p4_mnist"):
        models.get_model_builder("p4_resnet50")


def test_unknown_config_key_is_a_type_error():
    with pytest.raises(TypeError, match=r"p4_resnet44: unknown config key\(s\) 'width'.*widths"):
        get_model("p4_resnet44", width=8)
    with pytest.raises(TypeError, match="'widths'.*accepted: num_classes, channels"):
        get_model("p4_mnist_cnn", widths=[4, 8, 8])


@pytest.mark.parametrize("widths", [[4, 8], [4, 8, 0], [4, 8, 8, 8]])
def test_bad_widths_are_rejected(widths):
    with pytest.raises(ValueError, match="widths must be 3 positive ints"):
        get_model("p4_resnet44", widths=widths)


def test_register_model_adds_a_name_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(models._api, "_REGISTRY", dict(models._api._REGISTRY))

    @register_model("tiny")
    def tiny(num_classes: int = 3, width: int = 2) -> nn.Module:
        return nn.Linear(width, num_classes)

    assert "tiny" in list_models()
    assert models.get_model_builder("tiny") is tiny
    assert get_model("tiny", width=5).in_features == 5
    assert get_model("tiny").out_features == 3
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny")(tiny)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_classify(name):
    model = small(name)
    size = 28 if "mnist" in name else 33
    x = torch.randn(2, model.in_channels, size, size, dtype=torch.float64)
    classes = 2 if name == "p4_single_layer" else 10
    assert model(x).shape == (2, classes)
    assert small(name, num_classes=7)(x).shape == (2, 7)
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, LiftingConv2d)))
    assert isinstance(first, nn.Conv2d if name.startswith("z2") else LiftingConv2d)


# ---------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name, params", [("p4_mnist_cnn", 24_990), ("z2_mnist_cnn", 25_570)])
def test_mnist_cnn_parameter_counts_match_the_paper(name, params):
    assert n_params(get_model(name)) == params


@pytest.mark.parametrize("name, widths, params", [
    ("z2_resnet44", [8, 14, 28], 129_538), ("p4_resnet44", [4, 7, 14], 128_652)])
def test_pcam_resnet_parameter_counts_match_the_paper(name, widths, params):
    """docs/design.md §7: the counts hold with a BN after each 1x1 shortcut conv (without it they
    are 84 and 42 short)."""
    assert n_params(get_model(name, num_classes=2, widths=widths)) == params


@pytest.mark.parametrize("name, widths", [
    ("z2_resnet44", [32, 64, 128]), ("p4_resnet44", [16, 32, 64]), ("p4m_resnet44", [12, 24, 48]),
    ("z2_resnet20", [32, 64, 128]), ("p4_resnet20", [16, 32, 64]), ("p4m_resnet20", [12, 24, 48]),
    ("z2_resnet18", [64, 128, 256, 512]), ("p4_resnet18", [32, 64, 128, 256]),
    ("p4m_resnet18", [23, 46, 92, 184]),
])
def test_resnet_default_widths(name, widths, monkeypatch):
    built = {}
    monkeypatch.setattr(models.resnet, "PreActResNet",
                        lambda group, **kw: built.update(kw, group=group))
    get_model(name)
    assert built["widths"] == widths
    assert built["group"] == (None if name.startswith("z2") else name.split("_")[0])


@pytest.mark.parametrize("name", [n for n in NAMES if "resnet" in n])
def test_resnet_depth_and_strides(name):
    model = small(name)
    depth, stages = int(name[-2:]), len(SMALL[name.split("_")[1]])
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, LiftingConv2d, GroupConv2d))
             and m.kernel_size in (3, (3, 3))]
    assert len(convs) + 1 == depth  # 3x3 convs + the linear layer (shortcuts not counted)
    strides = [stage[0].conv1.stride for stage in model.stages]
    assert [s if isinstance(s, int) else s[0] for s in strides] == [1] + [2] * (stages - 1)
    shortcuts = [block.shortcut for stage in model.stages for block in stage]
    assert sum(s is not None for s in shortcuts) == stages - 1  # one per stride-2 stage


# ---------------------------------------------------------------------------- invariance
CASES = [  # (name, input size, exact?)
    ("p4_resnet44", 33, True), ("p4_resnet44", 32, False),
    ("p4m_resnet44", 33, True), ("p4m_resnet44", 32, False),
    ("p4_resnet20", 33, True), ("p4_resnet20", 32, False),
    ("p4m_resnet20", 33, True), ("p4m_resnet20", 32, False),
    ("p4_resnet18", 225, True), ("p4_resnet18", 224, False),
    ("p4m_resnet18", 225, True), ("p4m_resnet18", 224, False),
    ("p4_mnist_cnn", 28, True), ("p4_mnist_cnn", 27, False), ("p4_mnist_cnn", 29, False),
    ("p4_single_layer", 33, True), ("p4_single_layer", 32, False),
]


@pytest.mark.parametrize("name, size, exact", CASES, ids=[f"{n}-{s}" for n, s, _ in CASES])
def test_logits_invariant_exactly_at_exact_sizes(name, size, exact):
    model = small(name)
    worst = logits_error(model, size).max().item()
    if exact:
        assert worst <= EXACT_TOL
    else:
        assert worst >= INEXACT_MIN
    assert trace(model, size).exact is exact


@pytest.mark.parametrize("name, size", [("p4_resnet44", 33), ("p4m_resnet44", 33),
                                        ("p4_mnist_cnn", 28)])
def test_without_coset_pooling_logits_are_not_invariant(name, size):
    """Same seed, same weights, exact size: the coset-pooled model is invariant, the one that
    flattens the orientation axis is not, although its features are exactly equivariant."""
    pooled = small(name)
    torch.manual_seed(0)  # conftest seeded `pooled` with 0 too: identical feature weights
    flat = small(name, coset_pool=False)
    pooled_state = pooled.state_dict()
    for key, value in flat.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, pooled_state[key]), key
    assert trace(pooled, size).exact is True and trace(flat, size).exact is True
    assert logits_error(pooled, size).max().item() <= EXACT_TOL
    x = torch.randn(1, flat.in_channels, size, size, dtype=torch.float64)
    features = equivariance_error(flat.features, x, flat.group, output="group")
    assert features.max().item() <= EXACT_TOL
    assert logits_error(flat, size).max().item() >= INEXACT_MIN


@pytest.mark.parametrize("name, exact_size, inexact_size", [
    ("z2_resnet44", 33, 32), ("z2_resnet18", 225, 224), ("z2_mnist_cnn", 28, 27),
])
def test_trace_sees_the_same_grids_in_z2_models(name, exact_size, inexact_size):
    model = small(name)
    assert trace(model, exact_size).exact is True
    assert trace(model, inexact_size).exact is False


# ---------------------------------------------------------------------------- channels_last
@pytest.mark.parametrize("name", NAMES)
def test_channels_last_converts_every_model_and_computes_the_same(name):
    """``model.to(memory_format=torch.channels_last)`` (what GPU users do) works on every
    registered model, keeps the state dict's shapes, and computes what the NCHW model does."""
    torch.manual_seed(0)
    model = small(name).float()
    converted = small(name).float()
    converted.load_state_dict(model.state_dict())
    converted = converted.to(memory_format=torch.channels_last)
    assert {k: v.shape for k, v in converted.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    size = 28 if "mnist" in name else 33
    x = torch.randn(2, model.in_channels, size, size)
    with torch.no_grad():
        want = model(x)
        got = converted(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, size, exact", [
    ("p4_resnet44", 33, True), ("p4_resnet44", 32, False),
    ("p4m_resnet20", 33, True), ("p4m_resnet20", 32, False)])
def test_channels_last_keeps_exactness(name, size, exact):
    model = small(name).to(memory_format=torch.channels_last)
    x = torch.randn(1, model.in_channels, size, size, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    worst = equivariance_error(model, x, model.group, output="invariant").max().item()
    assert worst <= EXACT_TOL if exact else worst >= INEXACT_MIN
