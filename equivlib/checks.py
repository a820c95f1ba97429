"""The equivariance measurement: :func:`equivariance_error` (per group element),
:func:`layerwise_errors` (per submodule, one batched forward pass) and
:func:`assert_equivariant` (raises ``AssertionError`` above a tolerance).

"Checks" here means measuring a network's equivariance on inputs. What the layer shapes alone
say (is every subsampling grid symmetric?) is :mod:`equivlib.exactness` (the condition) and
:mod:`equivlib.tracer` (any ``nn.Module``); measured and traced verdicts agree for exact
layers with symmetric weights. Bad arguments raise ``ValueError`` / ``TypeError`` before any
forward pass.

The error of a map ``Φ`` on inputs ``x`` under a non-identity element ``g`` is

    mean over samples of  ||Φ(g·x) - g·Φ(x)|| / ||Φ(x)||

(L2 per sample over all non-batch dims). ``g`` acts on images spatially, on group maps
``(B, C, |G|, H, W)`` spatially and on the orientation axis, and trivially on invariant
outputs (logits). Exact layers give float rounding (~1e-7 in float32, ~1e-15 in float64);
inexact subsampling gives O(0.1-1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from equivlib.groups import Group, get_group

__all__ = ["assert_equivariant", "default_tolerance", "equivariance_error", "layerwise_errors"]

_INPUTS = ("image", "group")
_OUTPUTS = ("image", "group", "invariant")
_RANKS = {"image": "(B, C, H, W) with H == W", "group": "(B, C, {order}, H, W) with H == W",
          "invariant": "(B, K)"}
_TOLERANCES = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def default_tolerance(dtype: torch.dtype) -> float:
    """Default ``assert_equivariant`` tolerance for a dtype (float64 1e-12, float32 1e-5,
    float16 1e-2, bfloat16 5e-2)."""
    if dtype not in _TOLERANCES:
        raise ValueError(f"no default tolerance for dtype {dtype}; pass tol explicitly")
    return _TOLERANCES[dtype]


def _check_kind(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_x(x: object, group: Group, kind: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if kind == "group":
        if x.dim() != 5 or x.shape[2] != group.order:
            raise ValueError(
                f"input='group' needs x of shape (B, C, {group.order}, H, W) for "
                f"{group.name}, got {tuple(x.shape)}"
            )
    elif x.dim() < 3:
        raise ValueError(f"input='image' needs x of shape (B, ..., H, W), got {tuple(x.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square inputs, got spatial size {tuple(x.shape[-2:])}")
    if x.shape[0] < 1:
        raise ValueError("x must contain at least one sample")
    return x


def _act(group: Group, g: int, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "group":
        return group.act_on_group_map(g, y)
    if kind == "image":
        return group.act_on_image(g, y)
    return y


def _relative_error(y_g: torch.Tensor, y_ref: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||y_g - y_ref|| / ||y_ref|| (L2 over non-batch dims)."""
    if y_g.dtype in (torch.float16, torch.bfloat16):
        y_g, y_ref = y_g.float(), y_ref.float()
    diff = (y_g - y_ref).flatten(1).norm(dim=1)
    ref = y_ref.flatten(1).norm(dim=1)
    # 0/0 (both outputs zero) counts as exact
    ref = ref.clamp_min(torch.finfo(ref.dtype).tiny)
    return (diff / ref).mean()


def _kind_of(y: torch.Tensor, group: Group) -> str | None:
    """How ``g`` acts on an output, from its rank: 5-D with dim 2 == |G| (square) -> group
    map, 4-D square -> image, 2-D -> invariant; None when the rank does not say."""
    square = y.dim() >= 4 and y.shape[-1] == y.shape[-2]
    if y.dim() == 5 and y.shape[2] == group.order and square:
        return "group"
    if y.dim() == 4 and square:
        return "image"
    if y.dim() == 2:
        return "invariant"
    return None


def _fits(y: torch.Tensor, group: Group, kind: str) -> bool:
    """Whether an output of this shape can be acted on as ``kind``."""
    square = y.dim() >= 3 and y.shape[-1] == y.shape[-2]
    if kind == "group":
        return y.dim() == 5 and y.shape[2] == group.order and square
    if kind == "image":
        return y.dim() in (3, 4) and square
    return y.dim() == 2 or (y.dim() == 4 and tuple(y.shape[-2:]) == (1, 1))


def _shapes(group: Group) -> str:
    return (f"output='image' for (B, C, H, W), 'group' for (B, C, {group.order}, H, W) "
            "or 'invariant' for (B, K)")


def _output_kind(y: object, group: Group, kind: str | None, where: str) -> str:
    """The output kind: ``kind`` checked against the output's rank, or inferred from it."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{where} must return a torch.Tensor, got {type(y).__name__}")
    shape = tuple(y.shape)
    if kind is None:
        inferred = _kind_of(y, group)
        if inferred is None:
            raise ValueError(f"cannot tell how {group.name} acts on the output of {where}, "
                             f"shape {shape}: pass {_shapes(group)}")
        return inferred
    if not _fits(y, group, kind):
        seen = _kind_of(y, group)
        hint = (f"it looks like output={seen!r} (or leave output unset to infer it)"
                if seen else f"pass {_shapes(group)}")
        raise ValueError(f"output={kind!r} but {where} returned shape {shape}, which is not "
                         f"{_RANKS[kind].format(order=group.order)}; {hint}")
    return kind


def _is_oom(err: RuntimeError) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return "out of memory" in msg or "can't allocate memory" in msg


def equivariance_error(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    group: str | Group,
    input: str = "image",
    output: str | None = None,
) -> torch.Tensor:
    """Per-element equivariance error, shape ``(|G|-1,)`` (elements ``1 .. |G|-1`` in order).

    ``input``: how ``g`` acts on ``x`` (``"image"`` or ``"group"``); ``output``: how it acts
    on ``fn(x)``: ``"image"`` (B, C, H, W), ``"group"`` (B, C, |G|, H, W) or ``"invariant"``
    (B, K). Left unset, it is inferred from the output's rank and the group (5-D with
    |G| orientations: group map, 4-D: image, 2-D: invariant); a given ``output`` that
    contradicts the rank raises ``ValueError``. All transformed copies go through ``fn`` in
    one batched call (split per element if that runs out of memory). Runs under
    ``torch.no_grad``. Note that a module in training mode with batch norm sees the batch
    ``[x, g1·x, ...]``; call ``.eval()`` first for per-sample behaviour.
    """
    return _errors(fn, x, get_group(group), input, output)[0]


def _errors(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, group: Group,
            input: str, output: str | None) -> tuple[torch.Tensor, str]:
    """The per-element errors and the output kind used (given or inferred)."""
    _check_kind("input", input, _INPUTS)
    if output is not None:
        _check_kind("output", output, _OUTPUTS)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x = _check_x(x, group, input)
    with torch.no_grad():
        xs = [_act(group, g, x, input) for g in group.elements()]
        ys, kind = _outputs(fn, xs, group, output)
        errs = [
            _relative_error(ys[g], _act(group, g, ys[0], kind))
            for g in group.elements() if g != 0
        ]
    return torch.stack(errs), kind


def _outputs(fn: Callable[[torch.Tensor], torch.Tensor], xs: list[torch.Tensor],
             group: Group, output: str | None) -> tuple[list[torch.Tensor], str]:
    """``fn`` of every transformed copy (one batched call, per element on out-of-memory)
    and the output kind."""
    b = xs[0].shape[0]
    try:
        y = fn(torch.cat(xs))
        kind = _output_kind(y, group, output, "fn")
        ys = list(y.split(b))
        if len(ys) != group.order:
            raise ValueError(
                f"fn changed the batch size: {len(xs) * b} inputs gave {y.shape[0]} outputs"
            )
        return ys, kind
    except RuntimeError as err:
        if not _is_oom(err):
            raise
    ys = [fn(xg) for xg in xs]
    kind = _output_kind(ys[0], group, output, "fn")
    for y in ys[1:]:
        _output_kind(y, group, kind, "fn")
    return ys, kind


def layerwise_errors(
    model: nn.Module,
    x: torch.Tensor,
    group: str | Group,
    input: str = "image",
    names: Iterable[str] | None = None,
) -> list[dict]:
    """Equivariance error of every submodule's output, in forward order, from ONE batched
    forward pass over ``[x, g1·x, g2·x, ...]``.

    How ``g`` acts on a module output: 5-D with dim 2 == |G| -> group map; 4-D -> image;
    2-D -> invariant; anything else (non-tensors, other ranks, changed batch size) is
    skipped. The whole model is reported last as ``"output"``; a module called more than
    once gets one row per call (``name#2``, ...). Rows: ``name``, ``type``, ``shape`` (of one
    sample's output), ``error`` (mean over non-identity elements), ``max_error``.
    ``names`` restricts the rows to these submodules (``"output"``: the whole model).
    A model in training mode is switched to eval for the pass and restored afterwards.
    """
    group = get_group(group)
    _check_kind("input", input, _INPUTS)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x = _check_x(x, group, input)
    b = x.shape[0]
    records: list[tuple[str, str, torch.Tensor]] = []
    calls: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, out: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor):
                label = name if calls[name] == 1 else f"{name}#{calls[name]}"
                records.append((label, type(module).__name__, out.detach()))
        return hook

    wanted = None if names is None else set(names)
    modules = dict(model.named_modules())
    if wanted is not None:
        missing = wanted - set(modules) - {"output"}
        if missing:
            raise ValueError(f"no submodule named {sorted(missing)} in {type(model).__name__}")
    handles = [
        module.register_forward_hook(make_hook(name or "output"))
        for name, module in modules.items()
        if wanted is None or (name or "output") in wanted
    ]
    modes = {m: m.training for m in model.modules()}
    switch = any(modes.values())
    try:
        if switch:
            model.eval()
        with torch.no_grad():
            model(torch.cat([_act(group, g, x, input) for g in group.elements()]))
    finally:
        for h in handles:
            h.remove()
        if switch:  # parents come before children in modules(), so children end up right
            for m, mode in modes.items():
                m.train(mode)

    rows = []
    for name, type_name, y in records:
        if y.shape[0] != group.order * b:
            continue
        kind = _kind_of(y, group)
        if kind is None:
            continue
        ys = y.split(b)
        errs = torch.stack([
            _relative_error(ys[g], _act(group, g, ys[0], kind))
            for g in group.elements() if g != 0
        ])
        rows.append({
            "name": name,
            "type": type_name,
            "shape": tuple(y.shape[1:]),
            "error": errs.mean().item(),
            "max_error": errs.max().item(),
        })
    return rows


def assert_equivariant(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    group: str | Group,
    input: str = "image",
    output: str | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """Raise ``AssertionError`` if the max per-element error exceeds ``tol`` (or is not
    finite); return the errors. ``output`` as in :func:`equivariance_error` (inferred when
    unset). Default ``tol`` from ``x.dtype`` (see :func:`default_tolerance`)."""
    group = get_group(group)
    errors, output = _errors(fn, x, group, input, output)
    if tol is None:
        tol = default_tolerance(x.dtype if x.is_floating_point() else torch.get_default_dtype())
    worst = errors.max().item()
    if not (worst <= tol):  # also catches NaN
        per_element = ", ".join(
            f"{group.element_name(g)}: {e:.3g}" for g, e in zip(range(1, group.order),
                                                                  errors.tolist(), strict=True)
        )
        raise AssertionError(
            f"not equivariant under {group.name}: max relative error {worst:.3g} > tol "
            f"{tol:.3g} ({x.dtype}, input={input!r}, output={output!r}, input size "
            f"{tuple(x.shape[-2:])}).\n  per element: {per_element}\n"
            "  Hint: the usual cause is an inexact subsampling layer (stride > 1 whose input "
            "size n does not satisfy (n + 2p - d(k-1) - 1) % s == 0); see equivlib.tracer "
            "for the nearest exact input sizes."
        )
    return errors
