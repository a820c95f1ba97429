"""export_model(): every registered model rebuilt from torch.nn layers gives the same logits in eval
mode, keeps its exactness and invariance, and runs without equivlib; the public API."""

from __future__ import annotations

import functools
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equivlib
from equivlib.checks import assert_equivariant, equivariance_error
from equivlib.export import export_model
from equivlib.layers import (
    CosetPool,
    GroupAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupLayer,
    GroupMaxPool2d,
    LiftingConv2d,
)
from equivlib.models import get_model, list_models
from equivlib.tracer import nearest_exact_size, trace

# small inputs: a second OpenMP thread costs more than it saves (see conftest.single_thread)
pytestmark = pytest.mark.usefixtures("single_thread")

MODELS = list_models()
GROUP_MODELS = [name for name in MODELS if not name.startswith("z2_")]
# ResNet-18's default widths (up to 184 x 8 orientations) cost minutes per float64 forward on
# two CPU cores; export sees the same blocks, strides and layer types at any width
SMALL_WIDTHS = {"resnet18": (4, 8, 8, 8)}


# ---------------------------------------------------------------------------- helpers
def _config(name: str) -> dict:
    return {"widths": SMALL_WIDTHS["resnet18"]} if "resnet18" in name else {}


def _randomize(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics, affine parameters and biases: a fresh model's identity
    batch norms and zero biases would hide a wrong per-orientation order."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
        for name, param in model.named_parameters():
            if name.endswith("bias") or param.dim() == 1:
                param.normal_()
    return model


@functools.lru_cache(maxsize=2)
def _built(name: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module, int, int]:
    """(model in eval mode, its export, an exact input size, the size one pixel larger),
    for one (model, dtype) at a time (the parametrisation keeps them consecutive)."""
    torch.manual_seed(0)
    model = _randomize(get_model(name, **_config(name))).to(dtype).eval()
    exact = nearest_exact_size(model, 8, direction="up")  # 8 or 9: small keeps it fast
    return model, export_model(model), exact, exact + 1


def _image(model: nn.Module, size: int, dtype: torch.dtype, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, model.in_channels, size, size, dtype=dtype)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _group(name: str) -> str:
    return name.split("_")[0]


# ---------------------------------------------------------------------------- same outputs
@pytest.mark.parametrize(("name", "which"), [(n, w) for n in MODELS for w in ("exact", "off")])
def test_same_logits_float64(name: str, which: str) -> None:
    model, exported, exact, off = _built(name, torch.float64)
    size = exact if which == "exact" else off
    assert trace(model, size).exact is (which == "exact")
    x = _image(model, size, torch.float64)
    with torch.no_grad():
        assert _max_diff(exported(x), model(x)) < 1e-10
    # the same subsampling layers: exact at the same sizes
    assert trace(exported, size).exact is (which == "exact")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_logits_bitwise(name: str, dtype: torch.dtype) -> None:
    """NCHW on the CPU the export computes bit for bit what the model does: its convs hold
    the banks the layers convolve with (orientation-major, the layers' own channel order),
    its batch norms the same per-channel arithmetic."""
    model, exported, exact, _ = _built(name, dtype)
    x = _image(model, exact, dtype)
    with torch.no_grad():
        assert torch.equal(exported(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_same_logits_float32(name: str) -> None:
    model, exported, exact, _ = _built(name, torch.float32)
    x = _image(model, exact, torch.float32)
    with torch.no_grad():
        y = model(x)
        assert exported(x).dtype == torch.float32
        assert _max_diff(exported(x), y) < 1e-5


@pytest.mark.parametrize("name", GROUP_MODELS)
def test_exported_exact_model_stays_invariant(name: str) -> None:
    model, exported, exact, off = _built(name, torch.float64)
    assert_equivariant(exported, _image(model, exact, torch.float64, batch=1), _group(name),
                       output="invariant")
    x_off = _image(model, off, torch.float64, batch=1)
    err = equivariance_error(exported, x_off, _group(name), output="invariant")
    assert err.max() > 1e-6  # one pixel off: not invariant, as the original
    assert torch.allclose(err, equivariance_error(model, x_off, _group(name)), atol=1e-10)


# ---------------------------------------------------------------------------- plain torch
@pytest.mark.parametrize("name", MODELS)
def test_export_holds_only_torch_modules(name: str) -> None:
    model, exported, _, _ = _built(name, torch.float64)
    assert {type(m).__module__.split(".")[0] for m in exported.modules()} == {"torch"}
    state = exported.state_dict()
    assert {type(v) for v in state.values()} == {torch.Tensor}
    assert set(state) == set(model.state_dict())  # the original's names, no new ones
    assert "equivlib" not in exported.code
    assert not exported.training
    assert hasattr(model, "export")


@pytest.mark.parametrize("name", ["p4_single_layer", "p4_mnist_cnn", "p4m_resnet20",
                                  "z2_resnet20"])
def test_export_scripts_and_traces(name: str) -> None:
    model, exported, exact, _ = _built(name, torch.float64)
    x = _image(model, exact, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, not gone
        scripted = torch.jit.script(exported)
        traced = torch.jit.trace(exported, x)
    with torch.no_grad():
        y = model(x)
        assert _max_diff(scripted(x), y) < 1e-10
        assert _max_diff(traced(x), y) < 1e-10


def test_saved_export_runs_without_equivlib(tmp_path: Path) -> None:
    """torch.save, TorchScript and torch.export files of a P4M export load and give the same
    logits in a process where ``import equivlib`` fails."""
    torch.manual_seed(0)
    model = _randomize(get_model("p4m_resnet20", widths=(2, 4, 4))).eval()
    exported = model.export()
    x = _image(model, 9, torch.float32)
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "io.pt")
    torch.save(exported, tmp_path / "pickled.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(exported), tmp_path / "scripted.pt")
    torch.export.save(torch.export.export(exported, (x,)), tmp_path / "program.pt2")
    code = f"""
import sys, warnings
sys.modules["equivlib"] = None  # any import of equivlib now raises
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
d = torch.load({str(tmp_path / 'io.pt')!r})
models = [torch.load({str(tmp_path / 'pickled.pt')!r}, weights_only=False),
          torch.jit.load({str(tmp_path / 'scripted.pt')!r}),
          torch.export.load({str(tmp_path / 'program.pt2')!r}).module()]
with torch.no_grad():
    print(max((m(d["x"]) - d["y"]).abs().max().item() for m in models))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-5


# ---------------------------------------------------------------------------- mode, snapshot
def test_train_mode_is_refused() -> None:
    model = get_model("p4_single_layer")
    with pytest.raises(ValueError, match=r"eval mode \(call model.eval\(\) first\)"):
        export_model(model)
    model.eval()
    model.lift.train()  # one submodule in train mode is enough to differ
    with pytest.raises(ValueError, match="lift"):
        export_model(model)


def test_export_is_a_snapshot_and_leaves_the_model_alone() -> None:
    model = _randomize(get_model("p4_mnist_cnn", channels=2)).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exported = model.export()
    x = _image(model, 8, torch.float64)
    with torch.no_grad():
        y = exported(x)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert not any(m.training for m in model.modules())
        model.body[0].weight.add_(1.0)
        assert torch.equal(exported(x), y)
        assert _max_diff(model(x), y) > 1e-3


def test_batch_norm_without_running_stats_is_refused() -> None:
    model = nn.Sequential(LiftingConv2d("p4", 1, 2, 3), GroupBatchNorm("p4", 2, affine=True,
                                                                       track_running_stats=False))
    with pytest.raises(NotImplementedError, match="pooled over the orientations"):
        export_model(model.eval())


def test_sync_batch_norm_models_export() -> None:
    """A model as a DDP run leaves it (synchronised batch norms) exports like the plain one:
    in eval mode those layers are plain (group) batch norm."""
    from equivlib.layers import convert_sync_batchnorm

    for name in ("p4_mnist_cnn", "z2_mnist_cnn"):
        model = _randomize(get_model(name)).double().eval()
        synced = convert_sync_batchnorm(get_model(name).double())
        synced.load_state_dict(model.state_dict())
        exported = export_model(synced.eval())
        x = _image(model, 8, torch.float64)
        with torch.no_grad():
            assert _max_diff(exported(x), model(x)) < 1e-10
        assert {type(m).__module__.split(".")[0] for m in exported.modules()} == {"torch"}


# ---------------------------------------------------------------------------- other graphs
class _Custom(nn.Module):
    """Every supported operation on group maps: lifting, group conv, batch norm, avg pool,
    max pool, F.relu, scalar arithmetic, a residual, mean coset pooling or flatten."""

    def __init__(self, group: str, coset_pool: bool) -> None:
        super().__init__()
        self.lift = LiftingConv2d(group, 2, 3, 3, padding=1)
        self.conv = GroupConv2d(group, 3, 3, 3, padding=1, bias=True)
        self.bn = GroupBatchNorm(group, 3)
        self.avg = GroupAvgPool2d(2)
        self.max = GroupMaxPool2d(3, stride=1, padding=1)
        self.coset = CosetPool("mean") if coset_pool else None
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lift(x)
        y = self.act(self.bn(self.conv(F.relu(y)) * 0.5 + y))
        y = self.max(self.avg(y)).amax(dim=(3, 4), keepdim=True)
        return self.coset(y).flatten(1) if self.coset is not None else torch.flatten(y, 1)


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("coset_pool", [True, False])
def test_custom_graph_with_every_supported_op(group: str, coset_pool: bool) -> None:
    model = _randomize(_Custom(group, coset_pool)).double().eval()
    exported = export_model(model)
    x = torch.randn(3, 2, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert _max_diff(exported(x), model(x)) < 1e-10
    if coset_pool:
        assert_equivariant(exported, x, group, output="invariant")


def test_group_map_output_comes_out_flattened() -> None:
    model = _randomize(nn.Sequential(LiftingConv2d("p4m", 2, 3, 3, stride=2, padding=1),
                                     GroupBatchNorm("p4m", 3))).double().eval()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        assert _max_diff(export_model(model)(x), y.flatten(1, 2)) < 1e-12
        assert _max_diff(export_model(model[0])(x), model[0](x).flatten(1, 2)) < 1e-12


class _OrientationIndex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lift = LiftingConv2d("p4", 1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lift(x)[:, :, 0]


class _OrientationMean(_OrientationIndex):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lift(x).mean(dim=2)


class _PlainBroadcast(_OrientationIndex):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lift(x) + x.unsqueeze(2)


@pytest.mark.parametrize(("cls", "message"), [
    (_OrientationIndex, "getitem"),
    (_OrientationMean, r"mean.*dim=2"),
    (_PlainBroadcast, "plain tensor"),
])
def test_layout_dependent_ops_are_refused(cls: type, message: str) -> None:
    with pytest.raises(NotImplementedError, match=message):
        export_model(cls().eval())


def test_group_layer_on_an_image_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expects a p4 group map, but gets an image"):
        export_model(GroupConv2d("p4", 1, 1, 3).eval())


# ---------------------------------------------------------------------------- public API
@pytest.mark.parametrize("name", equivlib.__all__)
def test_public_name_imports_and_has_a_docstring(name: str) -> None:
    namespace: dict = {}
    exec(f"from equivlib import {name}", namespace)
    assert (namespace[name].__doc__ or "").strip(), f"equivlib.{name} has no docstring"


def test_public_api_names() -> None:
    assert equivlib.export_model is export_model
    assert {"get_model", "list_models", "export_model", "trace", "exact_input_sizes",
            "equivariance_error", "assert_equivariant", "get_dataset", "list_datasets",
            "LiftingConv2d", "GroupConv2d", "GroupBatchNorm", "GroupMaxPool2d",
            "CosetPool"} <= set(equivlib.__all__)
    assert len(set(equivlib.__all__)) == len(equivlib.__all__)


# ---------------------------------------------------------------------------- the walk
class _GroupReLU6(GroupLayer, nn.Module):
    """A group layer unknown to equivlib.export: the walk must ask it, not know its class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)

    def export_input(self) -> str:
        return "any"

    def export(self, orientation_major: bool = False) -> nn.Module:
        return nn.ReLU6()


def test_the_walk_asks_each_group_layer() -> None:
    model = _randomize(nn.Sequential(LiftingConv2d("p4", 2, 3, 3), _GroupReLU6(),
                                     CosetPool("max"))).double().eval()
    exported = export_model(model)
    assert type(exported.get_submodule("1")) is nn.ReLU6
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64) * 5
    with torch.no_grad():
        assert torch.equal(exported(x), model(x))
    with pytest.raises(ValueError, match=r"_GroupReLU6\) expects a group map, but gets an image"):
        export_model(nn.Sequential(_GroupReLU6()).eval())


# ---------------------------------------------------------------------------- aliases
def test_export_is_the_module_and_export_model_the_function() -> None:
    """``import equivlib.export as m`` gives the module (no function shadows it)."""
    import equivlib.export as module

    assert isinstance(module, types.ModuleType) and equivlib.export is module
    assert module.export_model is export_model is equivlib.export_model
    assert "export_model" in module.__all__


def test_calling_the_module_still_exports_and_warns() -> None:
    model = _randomize(get_model("p4_single_layer")).double().eval()
    with pytest.warns(DeprecationWarning, match=r"equivlib.export\(model\) moved to "
                      r"equivlib.export_model\(model\); the alias goes in equivlib 0.2"):
        old = equivlib.export(model)
    new = export_model(model)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64)
    assert old.code == new.code
    with torch.no_grad():
        assert torch.equal(old(x), new(x))


def test_the_old_function_name_still_imports_and_warns() -> None:
    with pytest.warns(DeprecationWarning, match="equivlib.export.export moved to "
                      "equivlib.export.export_model"):
        from equivlib.export import export
    assert export is export_model
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        equivlib.export.nothing  # noqa: B018


def test_model_export_method_unchanged() -> None:
    model = _randomize(get_model("p4_mnist_cnn", channels=2)).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        exported = model.export()
    assert exported.code == export_model(model).code
