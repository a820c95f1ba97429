"""The tracer: which subsampling layers of any ``nn.Module`` does an input size make exact?

:func:`trace` runs one forward pass (on the meta device when it can) and checks every
subsampling layer by the condition of :mod:`equivlib.exactness` at its own input size; every
op between the convolutions is judged by its own rule (shifted windows, patch merges, masks,
pads in either memory layout, interpolation, strided slicing, ...; see
:mod:`equivlib.tracer_rules`), and what it cannot prove symmetric is "unknown", never
"exact". :func:`exact_input_sizes` and :func:`nearest_exact_size` search sizes with it.

Exactness conditions it assumes rather than checks: the layers themselves are equivariant
(group convolutions, or kernels, relative position biases and merge weights that are
D4-symmetric); positional embeddings and flattening heads are reported as ``grid_only``.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from equivlib.exactness import Pair, as_pair
from equivlib.layers import GroupConv2d
from equivlib.tracer_rules import Recorder

__all__ = ["STOPS", "TraceReport", "TraceRow", "exact_input_sizes", "infer_input_shape",
           "nearest_exact_size", "trace"]


@dataclass(frozen=True)
class TraceRow:
    """One spatial operation seen during the traced forward pass."""

    module: str  # qualified name of the innermost module that called it ("" = the model)
    module_type: str
    op: str  # conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d, pad, ...
    input_size: Pair  # (H, W) of the op's own input
    kernel: Pair | None = None
    stride: Pair | None = None
    padding: Pair | str | None = None
    dilation: Pair | None = None
    exact: bool | None = None  # None: cannot be judged (never counted as exact)
    note: str = ""
    # the grid is symmetric but invariance also needs symmetric weights that are not kernels:
    # a positional embedding, a flattening head (reported, never counted as inexact)
    grid_only: bool = False
    show: bool = False  # listed in the report although exact and not subsampling (windows)

    @property
    def subsampling(self) -> bool:
        return self.stride is not None and max(self.stride) > 1

    def as_dict(self) -> dict:
        return {
            "module": self.module or "(model)",
            "type": self.module_type,
            "op": self.op,
            "input": f"{self.input_size[0]}x{self.input_size[1]}",
            "kernel": _fmt(self.kernel),
            "stride": _fmt(self.stride),
            "padding": _fmt(self.padding),
            "exact": {True: "yes", False: "NO", None: "unknown"}[self.exact],
            "note": self.note,
        }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return str(value[0])
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass
class TraceReport:
    """Every subsampling (or unjudgeable / asymmetric) operation of one forward pass."""

    model_name: str
    input_size: Pair
    rows: list[TraceRow] = field(default_factory=list)

    @property
    def exact(self) -> bool | None:
        """True: exactly equivariant to 90° rotations and flips (given equivariant layers);
        False: at least one layer breaks it; None: some layer could not be judged."""
        verdicts = [row.exact for row in self.rows]
        if False in verdicts:
            return False
        return None if None in verdicts else True

    @property
    def grid_only(self) -> list[TraceRow]:
        """Rows where the grid is symmetric but invariance needs symmetric weights that the
        architecture does not impose (positional embeddings, flattening heads)."""
        return [row for row in self.rows if row.grid_only]

    @property
    def verdict(self) -> str:
        """EXACT, NOT EXACT or UNKNOWN (from :attr:`exact`); ``EXACT (GRID ONLY)`` when the
        grids are symmetric but a positional embedding or flattening head needs symmetric
        weights for invariance (``exact`` stays True: the grids are what it judges)."""
        if self.exact is True and self.grid_only:
            return "EXACT (GRID ONLY)"
        return {True: "EXACT", False: "NOT EXACT", None: "UNKNOWN"}[self.exact]

    def breaking(self) -> list[TraceRow]:
        return [row for row in self.rows if row.exact is False]

    def unjudged(self) -> list[TraceRow]:
        return [row for row in self.rows if row.exact is None]

    def as_dicts(self) -> list[dict]:
        return [row.as_dict() for row in self.rows]

    def __str__(self) -> str:
        h, w = self.input_size
        lines = [f"{self.model_name} at input {h}x{w}: {self.verdict}"]
        if not self.rows:
            lines.append("  no subsampling layer and no other op that moves, mixes or weights "
                         "positions asymmetrically at this size")
            return "\n".join(lines)
        table = self.as_dicts()
        cols = ["module", "type", "op", "input", "kernel", "stride", "padding", "exact", "note"]
        widths = {c: max(len(c), *(len(r[c]) for r in table)) for c in cols}
        lines.append("  " + "  ".join(c.ljust(widths[c]) for c in cols).rstrip())
        for r in table:
            lines.append("  " + "  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
        return "\n".join(lines)


def infer_input_shape(model: nn.Module, input_size: Pair, in_channels: int | None) -> tuple:
    """(1, C, H, W), or (1, C, |G|, H, W) when the first convolution is a group conv."""
    first = next((m for m in model.modules() if hasattr(m, "in_channels")), None)
    if in_channels is None:
        if first is None:
            raise ValueError(
                "cannot infer the number of input channels (no convolution with "
                "`in_channels` found); pass in_channels=..."
            )
        in_channels = int(first.in_channels)
    if isinstance(first, GroupConv2d):  # subclasses too: input is a group map
        return (1, in_channels, first.group.order, *input_size)
    return (1, in_channels, *input_size)


STOPS = (None, "broken", "unproven")


class _Stopped(BaseException):
    """Ends a forward pass whose verdict is decided (a BaseException: the rules' own
    ``except Exception`` clauses, which turn a failing rule into "unknown", let it through)."""


def _recorder(input_size: Pair, stop: str | None):
    """A :class:`equivlib.tracer_rules.Recorder` that, with ``stop``, stops judging once
    the verdict cannot become exact any more: "broken" at the first row that breaks
    exactness (the forward pass still runs to its end on the meta device, unjudged, so a
    model that refuses the size still raises), "unproven" at the first row that is not
    exact (not exact or unknown), ending the forward pass there."""
    if stop is None:
        return Recorder(input_size)
    halt = (False,) if stop == "broken" else (False, None)

    class Stopping(Recorder):
        stopped = False

        def record(self, *args, **kwargs) -> None:
            before = len(self.rows)
            super().record(*args, **kwargs)
            if len(self.rows) > before and any(self.rows[-1]["exact"] is v for v in halt):
                if stop == "unproven":
                    raise _Stopped
                self.stopped = True

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if self.stopped:  # the verdict is decided: the op runs, nothing is judged
                return func(*args, **(kwargs or {}))
            return super().__torch_function__(func, types, args, kwargs)

    return Stopping(input_size)


def _record(model: nn.Module, shape: tuple, device: torch.device,
            source: nn.Module | None = None, stop: str | None = None):
    """One forward pass on zeros with every op recorded (see :mod:`equivlib.tracer_rules`);
    mode and hooks restored. ``source``: the model ``model`` is a meta-device copy of, whose
    buffers' values (e.g. a precomputed attention mask) the rules may need. ``stop``: see
    :func:`trace`."""
    param = next(model.parameters(), None)
    x = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32,
                    device=device)
    recorder = _recorder(tuple(shape[-2:]), stop)
    recorder.track_input(x)
    if source is not None:
        values = dict(source.named_buffers())
        for name, buffer in model.named_buffers():
            value = values.get(name)
            if value is not None and value.device.type != "meta" and \
                    value.numel() <= 4_000_000 and buffer.shape == value.shape:
                recorder.know(buffer, value.detach().cpu())

    def enter(qualified: str):
        def hook(module: nn.Module, args) -> None:
            recorder.stack.append((qualified, type(module).__name__))
        return hook

    def leave(module: nn.Module, args, output) -> None:
        recorder.stack.pop()

    handles = []
    for qualified, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(qualified)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    was_training = model.training
    model.eval()
    # the recorder's bookkeeping is many small CPU tensor ops: one thread is fastest (and
    # immune to busy cores); the previous setting is restored
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), recorder:
            model(x)
    except _Stopped:
        pass
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return recorder


def _on_meta(model: nn.Module) -> bool:
    param = next(model.parameters(), None)
    return param is not None and param.device.type == "meta"


def _search_model(model: nn.Module, n: int, in_channels: int | None) -> nn.Module:
    """A meta-device copy for repeated traces when the model runs on meta, else the model
    (a model already on the meta device is its own copy)."""
    if _on_meta(model):
        return model
    try:
        meta = copy.deepcopy(model).to("meta")
        _record(meta, infer_input_shape(meta, (n, n), in_channels), torch.device("meta"))
        return meta
    except Exception:
        return model


def trace(
    model: nn.Module, input_size: int | Pair, in_channels: int | None = None,
    name: str | None = None, *, stop: str | None = None,
) -> TraceReport:
    """Run one forward pass of ``model`` on zeros of the given spatial size and report every
    subsampling layer (any stride > 1 conv / pooling, from equivlib layers, torch.nn
    modules or functional calls), each checked at its own input size, plus every other op
    that moves, mixes or weights positions and is not symmetric or cannot be judged:
    asymmetric padding (either memory layout), shifted windows (``torch.roll`` + window
    partition), patch merges, masks, interpolation, ... (:mod:`equivlib.tracer_rules`).
    An op it cannot judge is a row with ``exact=None`` ("<op> at <layer> not judged"): the
    report is then never exact. Windows and merges are listed even where symmetric;
    positional embeddings and flattening heads are ``grid_only`` rows (the verdict reads
    ``EXACT (GRID ONLY)``). Mode and weights are left unchanged.

    ``stop`` (for callers that only need the verdict, e.g. a table of many sizes): "broken"
    stops judging at the first row that breaks exactness (the report has the rows up to it:
    the same verdict and the same first breaking layer; the forward pass still runs to its
    end, so a size the model refuses still raises); "unproven" ends the forward pass at the
    first row that is not exact (the report then says only that the size is not exact: not
    exact, unknown, or refused further on). None (default): every row."""
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {STOPS}, got {stop!r}")
    size = as_pair(input_size)
    if min(size) < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    shape = infer_input_shape(model, size, in_channels)
    try:  # shapes are all the trace needs: a copy on the meta device computes no values
        meta = model if _on_meta(model) else copy.deepcopy(model).to("meta")
        recorder = _record(meta, shape, torch.device("meta"),
                           source=None if meta is model else model, stop=stop)
    except Exception as exc:  # data-dependent code cannot run on meta: run the real model
        if _on_meta(model):  # nothing real to run: the model's own reason (e.g. a fixed size)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{type(model).__name__} refuses input {size[0]}x{size[1]} "
                             f"(meta-device forward): {reason}") from None
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        try:
            recorder = _record(model, shape, device, stop=stop)
        except RuntimeError as exc:
            raise ValueError(
                f"{type(model).__name__} cannot run on input of shape {tuple(shape)}: {exc}"
            ) from exc
    rows = [TraceRow(**r) for r in recorder.rows]
    rows = [r for r in rows if r.subsampling or r.exact is not True or r.show]
    return TraceReport(name or type(model).__name__, size, rows)


def exact_input_sizes(model: nn.Module, sizes, in_channels: int | None = None) -> list[int]:
    """The sizes among ``sizes`` at which ``trace`` finds the model exact."""
    sizes = list(sizes)
    probe = _search_model(model, max(sizes), in_channels) if sizes else model
    return [n for n in sizes if trace(probe, n, in_channels, stop="broken").exact is True]


def nearest_exact_size(
    model: nn.Module, n: int, in_channels: int | None = None, max_distance: int = 64,
    direction: str = "nearest", known: Mapping[int, bool] | None = None,
) -> int | None:
    """The exact input size closest to ``n`` (ties go to the larger size), searching at most
    ``max_distance`` pixels away; ``direction`` 'up' or 'down' searches one side only.
    None when there is none in range (e.g. a layer with asymmetric padding), or at a size
    the network refuses. ``known``: sizes already traced, each with whether ``trace`` found
    it exact (a size it refused: False); they are not traced again. Each other size is
    traced only until its first row that is not exact (``trace(..., stop="unproven")``)."""
    if direction not in ("nearest", "up", "down"):
        raise ValueError(f"direction must be 'nearest', 'up' or 'down', got {direction!r}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer (an input size), got {n!r}")
    if isinstance(max_distance, bool) or not isinstance(max_distance, numbers.Integral) \
            or max_distance < 0:
        raise ValueError(f"max_distance must be an integer >= 0, got {max_distance!r}")
    n, max_distance = int(n), int(max_distance)
    known = {} if known is None else known
    probe = None
    for distance in range(max_distance + 1):
        candidates = []
        if direction in ("nearest", "up"):
            candidates.append(n + distance)
        if direction in ("nearest", "down") and distance and n - distance >= 1:
            candidates.append(n - distance)
        for m in candidates:
            if m in known:
                if known[m]:
                    return m
                continue
            if probe is None:
                probe = _search_model(model, n, in_channels)
            try:
                if trace(probe, m, in_channels, stop="unproven").exact is True:
                    return m
            except ValueError:
                continue  # too small for the network
    return None
