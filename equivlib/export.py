"""Export a model to plain PyTorch (escnn's ``export()`` idea): no equivlib at inference.

:func:`export_model` traces the model with :mod:`torch.fx` (equivlib's group layers as
leaves) and rebuilds the graph from ``torch.nn`` standard layers: a walk that asks each group
layer (:class:`~equivlib.layers.GroupLayer`, whatever its class) what it takes, what it
gives and its own plain module (its ``export_flat``), as escnn's ``EquivariantModule.export``
does. What the layers give:

===================================  ==================================================
equivlib layer                       exported as
===================================  ==================================================
:class:`LiftingConv2d`,              ``nn.Conv2d`` holding a copy of the expanded filter
:class:`GroupConv2d`                 bank ``(|G|·Cout, |G|·Cin, k, k)`` and bias
:class:`GroupBatchNorm`              ``nn.BatchNorm2d(|G|·C)``: affine parameters and
                                     running statistics repeated per orientation
:class:`GroupMaxPool2d`,             ``nn.MaxPool2d`` / ``nn.AvgPool2d``
:class:`GroupAvgPool2d`
:class:`CosetPool`                   ``x.unflatten(1, (|G|, -1)).amax(dim=1)`` (or
                                     ``.mean``): two tensor methods in the graph's code
===================================  ==================================================

A group feature map ``(B, C, |G|, H, W)`` becomes ``(B, |G|·C, H, W)`` (orientation-major:
channel ``c``, orientation ``g`` is channel ``g·C + c``), the layout the group layers
themselves compute in, so the exported convs hold bitwise the banks the layers convolve
with. A group map that leaves the graph (as its output, or through ``x.flatten(1)``) is
reordered to channel-major ``(B, C·|G|, ...)``, the order of ``y.flatten(1, 2)`` of the
original's output. Every other module (``nn.ReLU``, ``nn.Dropout``, ``nn.Linear``, plain
``nn.Conv2d`` / ``nn.BatchNorm2d`` of Z2 models, ...) is copied unchanged. The
synchronised batch norms a DDP run puts in (``equivlib.layers.convert_sync_batchnorm``) are
plain (group) batch norm in eval mode and export as such; a batch norm of images from
outside torch exports as ``nn.BatchNorm2d`` with its state.

The result is a :class:`torch.fx.GraphModule`: its submodules are those ``torch.nn``
layers under the original qualified names (``stem``, ``stages.0.0.conv1``, ...), and its
``forward`` is generated Python code (``print(exported.code)``) holding the residual
additions, global average pool, coset pool and flatten. This is why no custom module is
needed at all: an ``nn.Sequential`` cannot express a residual connection, and a small
``Residual`` / ``CosetMax`` class would tie pickled models to equivlib. The export
pickles (``torch.save``), scripts (``torch.jit.script`` / ``trace``) and passes through
``torch.export`` without equivlib installed.

Exactness conditions:

- **eval mode only.** In eval mode the exported model computes the same function as the
  original (the same banks and the same per-element arithmetic: float64 differences are
  ~1e-16 or 0, tested for every registered model). In train mode they differ: a
  :class:`GroupBatchNorm` pools its batch statistics over the orientations, an
  ``nn.BatchNorm2d`` over ``|G|·C`` channels computes them per (channel, orientation). So
  :func:`export_model` refuses a model with any submodule in training mode, and training or
  fine-tuning the exported model (``exported.train()``) gives per-orientation statistics
  and, after updates, per-orientation weights: it stops being equivariant.
- **equivariance is kept**: the exported convolutions and pools have the same kernel,
  stride, padding and dilation, so the exported model is exact at the same input sizes
  (:func:`equivlib.tracer.trace` reports the same) and invariant there.
- the copy is a snapshot: later changes to the original's parameters do not propagate.

Only layout-agnostic operations may touch a group map between equivlib layers:
elementwise modules and functions (ReLU, dropout, ``+``, ...), a spatial reduction over
the last two dims with ``keepdim=True`` (``x.mean(dim=(-2, -1), keepdim=True)``) and
``x.flatten(1)``. Anything else (indexing the orientation axis, ``.shape``, broadcasting
against a plain tensor) raises ``NotImplementedError`` naming the operation, rather than
exporting something that computes a different function.

``equivlib.export`` is this module and :func:`export_model` the function (also
``equivlib.export_model`` and ``model.export()``). Deprecated for one release: calling the
module, ``equivlib.export(model)``, and the old name ``equivlib.export.export``; both warn.
"""

from __future__ import annotations

import copy
import numbers
import operator
import sys
import types
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from equivlib._deprecation import REMOVAL, moved_names
from equivlib.groups import Group
from equivlib.layers import GroupLayer, plain_batch_norm

__all__ = ["ExportMixin", "export_model"]

Layout = Group | None  # a node's value: a flattened group map of this group, or anything else

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                        nn.Tanh, nn.Identity, nn.Dropout)
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv,
                          operator.neg, torch.add, torch.sub, torch.mul, torch.relu,
                          torch.sigmoid, torch.tanh, F.relu, F.gelu, F.silu, F.dropout}
_ELEMENTWISE_METHODS = {"add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh",
                        "contiguous", "clone"}
_SPATIAL_REDUCTIONS = {"mean", "amax", "amin", "sum"}


# ---------------------------------------------------------------------------- layers
def _foreign_batchnorm(m: nn.Module) -> bool:
    """A batch norm of images defined outside torch (its forward may branch on shapes)."""
    return (isinstance(m, _BatchNorm) and not isinstance(m, GroupLayer)
            and type(m).__module__.split(".")[0] != "torch")


# ---------------------------------------------------------------------------- tracing
class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that keeps equivlib's group layers as leaves (their forwards check
    shapes in Python, and the rewrite replaces them whole)."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (isinstance(m, GroupLayer) or _foreign_batchnorm(m)
                or super().is_leaf_module(m, qualified_name))


def _nodes_in(value: object) -> list[fx.Node]:
    """Every fx node inside an argument structure."""
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(
        node.target, "__name__", repr(node.target))
    return f"{node.op} {target!r} (node {node.name!r})"


class _Rewriter:
    """Copies a traced graph node by node into a new one, replacing group layers by plain
    ones and tracking which values are (flattened) group maps."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.layout: dict[fx.Node, Layout] = {}
        self.attrs: dict[str, object] = {}

    # -------------------------------------------------------------- driver
    def rewrite(self, traced: fx.Graph) -> fx.Graph:
        for node in traced.nodes:
            self.env[node], self.layout[node] = self._node(node)
        for node in self.graph.nodes:
            # the traced annotations name equivlib's module globals (``torch.Tensor`` as a
            # string under ``from __future__ import annotations``), which TorchScript cannot
            # resolve; untyped arguments are tensors to TorchScript anyway
            node.type = None
        self.graph.lint()
        return self.graph

    def _node(self, node: fx.Node) -> tuple[fx.Node, Layout]:
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            if isinstance(module, GroupLayer):
                return self._group_layer(node, module)
            if _foreign_batchnorm(module):
                self._expect(node, module, self.layout[node.args[0]], None)
                return self._call(node, plain_batch_norm(module)), None
            return self._copy_module_call(node, module)
        if node.op == "get_attr":
            self._keep_attr(node.target)
        groups = {self.layout[n] for n in _nodes_in((node.args, node.kwargs))} - {None}
        if node.op == "output":
            return self._output(node), None
        if node.op in ("placeholder", "get_attr") or not groups:
            self._check_not_equivlib(node)
            return self._copy(node), None
        if len(groups) > 1:
            raise NotImplementedError(f"{_describe(node)} mixes group maps of different groups")
        return self._on_group_map(node, groups.pop())

    def _copy(self, node: fx.Node) -> fx.Node:
        return self.graph.node_copy(node, lambda n: self.env[n])

    def _channel_major(self, node: fx.Node, group: Group) -> fx.Node:
        """``(B, |G|·C, ...)`` (orientation-major, ``node`` already in the new graph) as
        ``(B, C, |G|, ...)`` in the original's order."""
        stacked = self.graph.call_method("unflatten", (node, 1, (group.order, -1)))
        return self.graph.call_method("transpose", (stacked, 1, 2))

    def _output(self, node: fx.Node) -> fx.Node:
        """The output; group maps in it come out channel-major ``(B, C·|G|, H, W)``."""
        def mapped(n: fx.Node) -> fx.Node:
            group = self.layout[n]
            if group is None:
                return self.env[n]
            return self.graph.call_method("flatten", (self._channel_major(self.env[n], group),
                                                      1, 2))
        return self.graph.output(fx.node.map_arg(node.args[0], mapped))

    def _keep_attr(self, target: str) -> None:
        if target not in self.attrs:
            owner, _, name = target.rpartition(".")
            value = getattr(self.root.get_submodule(owner) if owner else self.root, name)
            self.attrs[target] = value

    @staticmethod
    def _check_not_equivlib(node: fx.Node) -> None:
        module = getattr(node.target, "__module__", None) or ""
        if node.op == "call_function" and module.split(".")[0] == "equivlib":
            raise NotImplementedError(f"{_describe(node)} calls equivlib code, which the "
                                      "exported model must not depend on")

    # -------------------------------------------------------------- modules
    def _copy_module_call(self, node: fx.Node, module: nn.Module) -> tuple[fx.Node, Layout]:
        """A torch.nn leaf: copied; on a group map only if it acts elementwise."""
        groups = {self.layout[n] for n in _nodes_in((node.args, node.kwargs))} - {None}
        if groups and not isinstance(module, _ELEMENTWISE_MODULES):
            raise NotImplementedError(
                f"{_describe(node)} ({type(module).__name__}) is applied to a group map; "
                "export() only passes elementwise modules through group maps")
        self.attrs.setdefault(node.target, module)
        return self._copy(node), (groups.pop() if groups else None)

    def _group_layer(self, node: fx.Node, module: GroupLayer) -> tuple[fx.Node, Layout]:
        """A group layer, asked for what it takes, what it gives and its plain module."""
        (arg,) = node.args
        group = self._expect(node, module, self.layout[arg], module.export_input())
        return self._call(node, module.export_flat(group)), module.export_output(group)

    def _call(self, node: fx.Node, plain: nn.Module) -> fx.Node:
        """A call of ``plain`` (in eval mode) registered under the original layer's qualified
        name; a :class:`torch.fx.GraphModule` of tensor operations is inlined instead."""
        if isinstance(plain, fx.GraphModule):
            return self._inline(node, plain)
        self.attrs[node.target] = plain.train(False)
        return self.graph.call_module(node.target, (self.env[node.args[0]],))

    def _inline(self, node: fx.Node, plain: fx.GraphModule) -> fx.Node:
        """The nodes of ``plain``'s graph (one input, no submodules or attributes) copied in,
        applied to ``node``'s input."""
        nodes = list(plain.graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder"]
        if len(inputs) != 1 or any(n.op in ("call_module", "get_attr") for n in nodes):
            raise NotImplementedError(
                f"{_describe(node)} exports to a graph with {len(inputs)} inputs or with "
                "submodules; export_model() inlines only graphs of tensor operations")
        out = self.graph.graph_copy(plain.graph, {inputs[0]: self.env[node.args[0]]})
        assert isinstance(out, fx.Node)
        return out

    @staticmethod
    def _expect(node: fx.Node, module: nn.Module, layout: Layout,
                wanted: Group | str | None) -> Layout:
        """Check the input of a group layer: an image (``None``), a map of ``wanted``'s
        group, or a map of ``"any"`` group; returns the input's group."""
        if wanted is None and layout is None:
            return None
        if layout is not None and wanted in ("any", layout):
            return layout
        want = "an image" if wanted is None else (
            "a group map" if wanted == "any" else f"a {wanted.name} group map")
        got = "an image or other plain tensor" if layout is None else f"a {layout.name} group map"
        hint = ("; export() takes models whose input is an image (a single group conv has "
                "its own .export() to nn.Conv2d)" if layout is None else "")
        raise ValueError(
            f"{_describe(node)} ({type(module).__name__}) expects {want}, but gets {got}{hint}")

    # -------------------------------------------------------------- ops on group maps
    def _on_group_map(self, node: fx.Node, group: Group) -> tuple[fx.Node, Layout]:
        """Functions and methods applied to a group map: only layout-agnostic ones."""
        if node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS:
            return self._elementwise(node, group)
        if node.op == "call_function" and node.target is torch.flatten:
            return self._flatten(node, group)
        if node.op == "call_method":
            if node.target in _ELEMENTWISE_METHODS:
                return self._elementwise(node, group)
            if node.target in _SPATIAL_REDUCTIONS:
                return self._spatial_reduction(node, group)
            if node.target == "flatten":
                return self._flatten(node, group)
        raise NotImplementedError(
            f"{_describe(node)} is applied to a {group.name} group map, which export() "
            "cannot prove layout-agnostic; supported: elementwise ops, "
            "x.mean/amax/sum(dim=(-2, -1), keepdim=True), x.flatten(1)")

    def _elementwise(self, node: fx.Node, group: Group) -> tuple[fx.Node, Layout]:
        plain = [n for n in _nodes_in((node.args, node.kwargs)) if self.layout[n] is None]
        constants = [a for a in (*node.args, *node.kwargs.values()) if not isinstance(a, fx.Node)]
        if plain or not all(isinstance(a, numbers.Number | str | None) for a in constants):
            raise NotImplementedError(
                f"{_describe(node)} combines a {group.name} group map with a plain tensor or "
                "a non-scalar constant; broadcasting would differ on the flattened map")
        return self._copy(node), group

    def _spatial_reduction(self, node: fx.Node, group: Group) -> tuple[fx.Node, Layout]:
        """``x.mean(dim=(-2, -1), keepdim=True)`` and the like: the same on ``(B, |G|·C, H, W)``."""
        args = _bind(node, ("self", "dim", "keepdim"), {"keepdim": False})
        dim = args.get("dim")
        dims = {d % 5 for d in (dim if isinstance(dim, tuple | list) else [dim])
                if isinstance(d, int)}
        if dims != {3, 4} or args["keepdim"] is not True or set(args) - {"self", "dim",
                                                                           "keepdim"}:
            raise NotImplementedError(
                f"{_describe(node)} reduces a {group.name} group map over dim={dim!r}, "
                f"keepdim={args['keepdim']!r}; export() supports only the spatial dims "
                "(-2, -1) with keepdim=True")
        new = self.graph.call_method(node.target, (self.env[args["self"]],),
                                     {"dim": (-2, -1), "keepdim": True})
        return new, group

    def _flatten(self, node: fx.Node, group: Group) -> tuple[fx.Node, Layout]:
        """``x.flatten(1)``: ``(c, g, h, w)`` order, from the map reordered channel-major."""
        args = _bind(node, ("self", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
        if args["start_dim"] not in (1, -4) or args["end_dim"] not in (-1, 4):
            raise NotImplementedError(
                f"{_describe(node)} flattens a {group.name} group map from dim "
                f"{args['start_dim']!r} to {args['end_dim']!r}; export() supports flatten(1)")
        reordered = self._channel_major(self.env[args["self"]], group)
        return self.graph.call_method("flatten", (reordered, 1)), None


def _bind(node: fx.Node, names: tuple[str, ...], defaults: dict[str, object]) -> dict:
    """A method or function node's arguments by name (``self`` / ``input`` first)."""
    bound = dict(defaults)
    bound.update(zip(names, node.args, strict=False))
    for key, value in node.kwargs.items():
        bound["self" if key == "input" else key] = value
    return bound


# ---------------------------------------------------------------------------- API
def _check_eval(model: nn.Module) -> None:
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"export() needs a model in eval mode (call model.eval() first); in training mode: "
            f"{', '.join(training[:3])}{' ...' if len(training) > 3 else ''}. In train mode "
            "a GroupBatchNorm pools batch statistics over the orientations, which the exported "
            "nn.BatchNorm2d (per channel and orientation) does not; eval mode uses the running "
            "statistics, which the export copies exactly")


def export_model(model: nn.Module) -> fx.GraphModule:
    """A copy of ``model`` built only from ``torch.nn`` layers, as a
    :class:`torch.fx.GraphModule` in eval mode on the model's device and dtype.

    A walk over the model: each group layer (:class:`~equivlib.layers.GroupLayer`) gives its
    own plain module (group convolutions ``nn.Conv2d`` with the expanded bank, group batch
    norm ``nn.BatchNorm2d`` with parameters and running statistics repeated per orientation,
    group pools ``nn.MaxPool2d`` / ``nn.AvgPool2d``, coset pooling two tensor methods in the
    generated ``forward``); group maps ``(B, C, |G|, H, W)`` become ``(B, |G|·C, H, W)``
    (orientation-major, as the layers compute; an output that is a group map comes out
    channel-major ``(B, C·|G|, H, W)``, like ``y.flatten(1, 2)``). Submodules keep the original
    qualified names. See the module docstring for the supported operations.

    Exactness: in eval mode the exported model computes the same function as ``model``
    (float64 differences ~1e-16, float32 ~1e-7), so it is exactly equivariant / invariant at
    the same input sizes. ``model`` must be in eval mode (``ValueError`` otherwise): train-mode
    batch statistics differ (group batch norm pools them over orientations), and training
    the exported model breaks equivariance. ``model`` itself is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export() takes an nn.Module, got {type(model).__name__}")
    _check_eval(model)
    root = copy.deepcopy(model)  # tracing may add constants to its root; kept modules are copies
    if isinstance(root, GroupLayer):
        root = nn.Sequential(root)
    traced = _Tracer().trace(root)
    rewriter = _Rewriter(root)
    graph = rewriter.rewrite(traced)
    exported = fx.GraphModule(rewriter.attrs, graph, class_name=f"Exported{type(model).__name__}")
    return exported.train(False)


class ExportMixin:
    """Gives a model an ``export()`` method: :func:`export_model` of itself."""

    def export(self) -> fx.GraphModule:
        """This model built only from ``torch.nn`` layers (a :class:`torch.fx.GraphModule`),
        giving the same outputs in eval mode; group maps become ``(B, |G|·C, H, W)``. The
        model must be in eval mode. See :func:`equivlib.export.export_model`."""
        return export_model(self)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- aliases
__getattr__ = moved_names(__name__, {"export": f"{__name__}:export_model"})


class _CallableModule(types.ModuleType):
    """This module, callable for one release: ``equivlib.export(model)`` (the function that
    ``import equivlib`` used to bind over the module) warns and calls :func:`export_model`."""

    def __call__(self, model: nn.Module) -> fx.GraphModule:
        warnings.warn(f"equivlib.export(model) moved to equivlib.export_model(model); {REMOVAL}",
                      DeprecationWarning, stacklevel=2)
        return export_model(model)


sys.modules[__name__].__class__ = _CallableModule
