"""Lifting and group convs: the bank cache (bitwise the rebuilt bank, invalidated by every
change of a parameter), init, the conv's own export, the bank's structure and gather paths."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import equivlib.layers.conv as conv_module
from equivlib.groups import P4, P4M, Group
from equivlib.layers import GroupConv2d, LiftingConv2d

pytestmark = pytest.mark.usefixtures("single_thread")

gid = pytest.mark.parametrize("group", [P4, P4M], ids=lambda g: g.name)


# ---------------------------------------------------------------------------- bank cache
def conv_pair(kind: str, group: Group) -> tuple[nn.Module, torch.Tensor]:
    if kind == "lifting":
        return LiftingConv2d(group, 2, 3, 3, padding=1), torch.randn(2, 2, 7, 7)
    return GroupConv2d(group, 2, 3, 3, padding=1), torch.randn(2, 2, group.order, 7, 7)


def fresh(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Uncached output (a training forward that needs gradients rebuilds the bank) of a copy
    of ``layer``; ``layer`` itself is untouched."""
    twin = copy.deepcopy(layer).train().requires_grad_(True)
    with torch.enable_grad():
        return twin(x).detach()


def cached_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward under no_grad (fills / uses the cache) in the layer's current mode; does NOT
    toggle the mode, since ``train()`` / ``eval()`` drop the cache and would hide staleness."""
    with torch.no_grad():
        return layer(x)


def uses_cache(layer: nn.Module) -> bool:
    return layer.expanded_weight()[0] is layer.expanded_weight()[0]


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bitwise equal (values, dtype, shape)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0)


ckind = pytest.mark.parametrize("kind", ["lifting", "group"])
cmode = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])


def cache_case(kind: str, group: Group, training: bool) -> tuple[nn.Module, torch.Tensor]:
    layer, x = conv_pair(kind, group)
    return layer.train(training), x


@gid
@ckind
@cmode
def test_cache_bitwise_equal_and_state_dict_unchanged(group: Group, kind: str,
                                                      training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    sd_before = layer.state_dict()
    y = cached_forward(layer, x)
    with torch.no_grad():
        assert uses_cache(layer)
        bank = layer.expanded_weight()[0]
    assert bank.grad_fn is None and not bank.requires_grad  # no graph kept alive
    same(y, fresh(layer, x))
    same(cached_forward(layer, x), y)  # served from the cache
    sd_after = layer.state_dict()
    assert list(sd_before) == list(sd_after) == ["weight", "bias"]
    assert all(torch.equal(sd_before[k], sd_after[k]) for k in sd_before)
    # the gather indices are constants: neither state nor buffers (DDP broadcasts buffers)
    assert "index" not in sd_after and not dict(layer.named_buffers())


@gid
@ckind
@cmode
def test_cache_never_used_when_parameter_gradients_are_needed(group: Group, kind: str,
                                                             training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    cached_forward(layer, x)
    assert not uses_cache(layer)  # grad enabled, parameters require grad
    bank = layer.expanded_weight()[0]
    assert bank.requires_grad and bank.grad_fn is not None
    assert (layer._cache is None) == training  # a training forward drops the stale bank


@gid
@ckind
@cmode
def test_cache_invalidated_by_optimizer_step(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(x).pow(2).mean().backward()  # gradients bypass the cache
    y0 = cached_forward(layer, x)
    opt.step()
    y1 = cached_forward(layer, x)
    assert not torch.allclose(y0, y1)
    same(y1, fresh(layer, x))


@gid
@ckind
@cmode
def test_cache_invalidated_by_load_state_dict(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    other, _ = conv_pair(kind, group)
    y0 = cached_forward(layer, x)
    layer.load_state_dict(other.state_dict())
    y1 = cached_forward(layer, x)
    assert not torch.allclose(y0, y1)
    same(y1, fresh(other, x))
    same(y1, fresh(layer, x))


@gid
@ckind
@cmode
def test_cache_invalidated_by_to(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    cached_forward(layer, x)
    layer.double()
    y = cached_forward(layer, x.double())
    assert y.dtype == torch.float64
    same(y, fresh(layer, x.double()))
    layer.to(torch.float32)
    same(cached_forward(layer, x), fresh(layer, x))


@gid
@ckind
@cmode
def test_cache_with_channels_last(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    y = cached_forward(layer, x)
    layer.to(memory_format=torch.channels_last)
    x_cl = x.flatten(1, -3).contiguous(memory_format=torch.channels_last).view(x.shape)
    y_cl = cached_forward(layer, x_cl)
    same(y_cl, fresh(layer, x_cl))
    same(cached_forward(layer, x_cl), y_cl)
    torch.testing.assert_close(y_cl, y)  # values (the conv's summation order may differ)


@gid
@ckind
@cmode
def test_cache_invalidated_by_data_assignment(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    cached_forward(layer, x)
    layer.weight.data = torch.randn_like(layer.weight)
    same(cached_forward(layer, x), fresh(layer, x))
    layer.bias.data = torch.randn_like(layer.bias)  # bias alone
    same(cached_forward(layer, x), fresh(layer, x))


@gid
@ckind
@cmode
def test_cache_invalidated_by_in_place_edit(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    y0 = cached_forward(layer, x)
    with torch.no_grad():  # in-place edits of the parameter bump its version counter
        layer.weight.mul_(-1.0)
    y = cached_forward(layer, x)
    assert not torch.allclose(y, y0)
    same(y, fresh(layer, x))
    with torch.no_grad():
        layer.bias.add_(1.0)
    same(cached_forward(layer, x), fresh(layer, x))
    # edits through .data bypass the version counter: clear_cache() is the documented escape
    layer.weight.data.mul_(2.0)
    layer.clear_cache()
    same(cached_forward(layer, x), fresh(layer, x))


@gid
@ckind
@cmode
def test_cache_dropped_by_pickle_and_deepcopy(group: Group, kind: str, training: bool) -> None:
    layer, x = cache_case(kind, group, training)
    y = cached_forward(layer, x)
    twin = copy.deepcopy(layer)
    assert layer._cache is not None and twin._cache is None
    buffer = io.BytesIO()
    torch.save(layer, buffer)  # a populated cache must not break whole-module saving
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    unpickled = pickle.loads(pickle.dumps(layer))
    for copied in (twin, loaded, unpickled):
        assert copied._cache is None
        same(cached_forward(copied, x), y)
    assert layer._cache is not None  # the original keeps its cache


@gid
@ckind
def test_eval_mode_gradients_flow(group: Group, kind: str) -> None:
    layer, x = conv_pair(kind, group)
    layer.eval()
    cached_forward(layer, x)  # fill the cache
    layer(x).pow(2).sum().backward()
    g_eval = (layer.weight.grad.clone(), layer.bias.grad.clone())
    layer.zero_grad()
    layer.train()
    layer(x).pow(2).sum().backward()
    assert g_eval[0].abs().sum() > 0
    torch.testing.assert_close(g_eval[0], layer.weight.grad)
    torch.testing.assert_close(g_eval[1], layer.bias.grad)


@ckind
def test_cache_with_frozen_weights_and_input_grad(kind: str) -> None:
    layer, x = conv_pair(kind, P4)
    layer.requires_grad_(False).eval()
    with torch.inference_mode():
        y_inf = layer(x)  # the cache built here is a normal tensor without a graph
    bank = layer.expanded_weight()[0]
    assert not bank.is_inference() and bank.grad_fn is None
    x.requires_grad_(True)
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same(y.detach(), y_inf)
    # frozen parameters: the cache serves grad-enabled eval forwards too, not training ones
    assert uses_cache(layer)
    assert not uses_cache(layer.train())


@ckind
def test_layer_built_in_inference_mode(kind: str) -> None:
    """Inference-tensor parameters have no version counter: they are never cached."""
    with torch.inference_mode():
        layer, x = conv_pair(kind, P4)
        layer.eval()
        y = layer(x)
        assert layer._cache is None
        with torch.no_grad():
            layer.weight.mul_(2.0)
        same(layer(x), fresh(layer, x))
    assert not torch.allclose(layer(x), y)


@gid
@ckind
def test_forward_mode_ad_bypasses_cache(group: Group, kind: str) -> None:
    """Dual (or torch.func-wrapped) parameters share the plain ones' storage and version: a
    cached bank would drop their tangent."""
    layer, x = conv_pair(kind, group)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    tangents = {k: torch.randn_like(v) for k, v in params.items()}

    def jvp_dual() -> torch.Tensor:
        with torch.no_grad(), fwAD.dual_level():
            duals = {k: fwAD.make_dual(v, tangents[k]) for k, v in params.items()}
            return fwAD.unpack_dual(functional_call(layer, duals, (x,))).tangent

    def jvp_func() -> torch.Tensor:
        f = lambda p: functional_call(layer, p, (x,))  # noqa: E731
        return torch.func.jvp(f, (params,), (tangents,))[1]

    expected = jvp_dual()  # training mode: uncached
    layer.eval()
    for _ in range(2):  # the second round would hit a cache filled by the first
        cached_forward(layer, x)
        same(jvp_dual(), expected)
        same(jvp_func(), expected)


# ---------------------------------------------------------------------------- init, export
def circular_pad(h: torch.Tensor) -> torch.Tensor:
    """Pad the last two dims by one pixel, wrapping around (no zero border)."""
    flat = h.reshape(-1, *h.shape[-3:]) if h.dim() == 5 else h
    out = F.pad(flat, (1, 1, 1, 1), mode="circular")
    return out.view(*h.shape[:-2], *out.shape[-2:])


@gid
def test_init_keeps_activation_scale(group: Group) -> None:
    """He init: the activation std stays within 2x of the first layer's through 10
    GroupConv2d+ReLU layers. Zero padding would shrink activations near the border on small
    inputs whatever the init, so the test pads circularly; a single narrow net's scale is a
    random walk (width-limited), so the variance is averaged over 8 independent nets."""
    width, depth, nets = {4: 32, 8: 24}[group.order], 10, 8
    var = torch.zeros(depth + 1)
    with torch.no_grad():
        for _ in range(nets):
            h = torch.randn(2, 3, 8, 8)
            for i in range(depth + 1):
                conv = (LiftingConv2d(group, 3, width, 3) if i == 0
                        else GroupConv2d(group, width, width, 3))
                h = torch.relu(conv(circular_pad(h)))
                var[i] += h.var().item() / nets
    ratios = (var / var[0]).sqrt()
    assert ((ratios >= 0.5) & (ratios <= 2.0)).all(), ratios


@gid
def test_init_fan_in(group: Group) -> None:
    conv = GroupConv2d(group, 16, 16, 3)
    expected = (2 / (16 * group.order * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.1
    assert torch.count_nonzero(conv.bias) == 0
    lift = LiftingConv2d(group, 16, 32, 3)
    assert abs(lift.weight.std().item() / (2 / (16 * 9)) ** 0.5 - 1) < 0.1


@gid
@ckind
def test_export_matches(group: Group, kind: str) -> None:
    layer = (LiftingConv2d if kind == "lifting" else GroupConv2d)(group, 2, 3, 3, stride=2,
                                                                  padding=1)
    x = torch.randn(2, 2, 9, 9) if kind == "lifting" else torch.randn(2, 2, group.order, 9, 9)
    conv = layer.export()
    assert type(conv) is nn.Conv2d
    assert conv.weight.shape == (3 * group.order, 2 * (1 if kind == "lifting" else group.order),
                                 3, 3)
    y = conv(x.flatten(1, 2) if x.dim() == 5 else x)
    torch.testing.assert_close(y.view(2, 3, group.order, 5, 5), layer(x))


@gid
def test_bank_structure(group: Group) -> None:
    """The bank is literally the rot90/flip-transformed filters (no hidden conventions)."""
    lift = LiftingConv2d(group, 2, 3, 3)
    # the bank the layer convolves with is orientation-major: output channel h·Cout + o
    bank = lift.expanded_weight()[0].view(group.order, 3, 2, 3, 3)
    export = lift.channel_major_weight()[0].view(3, group.order, 2, 3, 3)
    for h in group.elements():
        assert torch.equal(bank[h], group.act_on_image(h, lift.weight))
        assert torch.equal(export[:, h], group.act_on_image(h, lift.weight))
    gc = GroupConv2d(group, 2, 3, 3, bias=False)
    # ... and input channel g·Cin + i
    bank = gc.expanded_weight()[0].view(group.order, 3, group.order, 2, 3, 3)
    export = gc.channel_major_weight()[0].view(3, group.order, 2, group.order, 3, 3)
    for h in group.elements():
        assert torch.equal(bank[h].transpose(1, 2), group.act_on_group_map(h, gc.weight))
        assert torch.equal(export[:, h], group.act_on_group_map(h, gc.weight))
    assert gc.expanded_weight()[1] is None
    assert list(gc.state_dict()) == ["weight"] and gc.bias is None


def test_non_contiguous_input() -> None:
    gc = GroupConv2d(P4M, 2, 3, 3, padding=1)
    x = torch.randn(2, 2, 8, 6, 6).transpose(-1, -2)
    assert not x.is_contiguous()
    torch.testing.assert_close(gc(x), gc(x.contiguous()), rtol=0, atol=0)


def test_double_backward() -> None:
    gc = GroupConv2d(P4, 2, 2, 3).double()
    x = torch.randn(1, 2, 4, 5, 5, dtype=torch.float64)
    (grad,) = torch.autograd.grad(gc(x).pow(2).sum(), gc.weight, create_graph=True)
    grad.sum().backward()
    assert gc.weight.grad is not None


def test_group_input_viewed_not_copied() -> None:
    gc = GroupConv2d(P4, 2, 3, 3)
    x = torch.randn(1, 2, 4, 5, 5)
    assert x.reshape(1, -1, 5, 5).data_ptr() == x.data_ptr()
    assert gc(x).shape == (1, 3, 4, 3, 3)


def test_deepcopy_and_pickle_roundtrip() -> None:
    gc = GroupConv2d("p4m", 2, 3, 3)
    x = torch.randn(1, 2, 8, 5, 5)
    torch.testing.assert_close(copy.deepcopy(gc)(x), gc(x))
    assert copy.deepcopy(gc).group is P4M


@pytest.mark.parametrize("kind", ["lifting", "group"])
@pytest.mark.parametrize("group_name", ["p4", "p4m"])
def test_block_index_path_builds_the_same_bank(monkeypatch, kind, group_name):
    """Large layers use a per-block index; it must give the flat path's bank bit for bit."""
    cls = LiftingConv2d if kind == "lifting" else GroupConv2d
    torch.manual_seed(0)
    flat = cls(group_name, 3, 5, 3, padding=1)
    monkeypatch.setattr(conv_module, "FLAT_INDEX_LIMIT", 0)
    block = cls(group_name, 3, 5, 3, padding=1)
    block.load_state_dict(flat.state_dict())
    assert flat._flat and not block._flat
    assert block.index.numel() < flat.index.numel()
    assert torch.equal(flat.expanded_weight()[0], block.expanded_weight()[0])
    block.weight.sum().backward()  # the block path is differentiable, like the flat one
    assert block.weight.grad is not None and torch.isfinite(block.weight.grad).all()


def test_large_layers_hold_a_small_index():
    conv = GroupConv2d("p4m", 184, 184, 3, padding=1)
    assert conv.index.numel() * conv.index.element_size() < 1 << 20
