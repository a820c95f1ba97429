"""The ``check`` command (is this network exact at this input size: the sampling grids
traced, then the equivariance error of its weights measured) and ``list`` (the registered
models or datasets).

    python -m equivlib check p4_resnet44 --size 32
    python -m equivlib check torchvision.models:resnet18 --size 224 --group p4
    python -m equivlib list datasets
"""

from __future__ import annotations

import argparse
import copy
import importlib
import textwrap
from types import ModuleType
from typing import Any

import torch
from torch import nn

from equivlib.cli import CliError
from equivlib.data.photos import photo_batch
from equivlib.groups import get_group
from equivlib.tracer import nearest_exact_size, trace


def _registry() -> ModuleType | None:
    try:
        return importlib.import_module("equivlib.models")
    except ImportError:  # the registry ships with the models module
        return None


def load_model(spec: str) -> tuple[nn.Module, str]:
    """A registry name (``p4_resnet44``) or ``package.module:attribute``, where the attribute
    is an ``nn.Module`` or a callable that builds one without arguments."""
    registry = _registry()
    if ":" not in spec:
        known = registry.list_models() if registry is not None else []
        if spec not in known:
            raise CliError(
                f"unknown model {spec!r}: use a registry name ({', '.join(known) or 'none'}) "
                "or an importable 'package.module:callable'"
            )
        return registry.get_model(spec), spec
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CliError(f"cannot import {spec!r}: {exc}") from exc
    model = obj if isinstance(obj, nn.Module) else obj() if callable(obj) else None
    if not isinstance(model, nn.Module):
        raise CliError(f"{spec!r} is not an nn.Module nor a callable that returns one")
    return model, spec


def model_group(model: nn.Module, requested: str | None) -> Any:
    """The group named by ``--group``, else the model's own, else P4."""
    if requested:
        try:
            return get_group(requested)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    found = next((m.group for m in model.modules() if hasattr(m, "group")), None)
    return found if found is not None else get_group("p4")


GRIDS = {
    True: "symmetric: every subsampling layer samples a grid that 90-degree rotations and "
          "flips map onto itself, so the architecture allows exact equivariance at this "
          "size (whether the weights are equivariant is measured below)",
    False: "NOT symmetric: the layers marked NO sample off-centre grids, so even "
           "equivariant layers are only approximately equivariant at this size",
    None: "unknown: an operation the tracer cannot judge (see the note column)",
}


def _say(text: str) -> None:
    """Print a paragraph wrapped at 100 columns, continuation lines indented."""
    print(textwrap.fill(text, 100, subsequent_indent="   "))


def _print_grids(report, size: int, below: int | None, above: int | None) -> None:
    """Part 1: the sampling grids (a property of the architecture, not of the weights)."""
    print(f"{report.model_name} at input {size}x{size}\n")
    _say(f"1. sampling grids (architecture only, no weights involved): {GRIDS[report.exact]}")
    table = str(report).splitlines()[1:]
    print("\n".join(table))
    if report.rows:
        print("  (column exact: whether that layer's sampling grid is symmetric)")
    print(f"nearest input sizes with symmetric grids: below {below or 'none'}, above "
          f"{above or 'none'} (searched 64 pixels each way)")


def _print_errors(rows: list[dict], depth: int) -> None:
    shown = [r for r in rows if r["name"] == "output" or r["name"].count(".") < depth]
    width = max(len(r["name"]) for r in shown)
    print(f"  {'module':<{width}}  {'type':<16} {'output shape':<20} mean error   max error")
    for r in shown:
        shape = "x".join(map(str, r["shape"]))
        print(f"  {r['name']:<{width}}  {r['type']:<16} {shape:<20} {r['error']:10.2e}  "
              f"{r['max_error']:10.2e}")


def measured_verdict(rows: list[dict], grids: bool | None) -> str:
    """One line on what the measured errors say, next to what the grids said."""
    from equivlib.checks import default_tolerance

    tol = default_tolerance(torch.float64)
    out = next((r for r in rows if r["name"] == "output"), rows[-1])
    worst = max(rows, key=lambda r: r["max_error"])
    where = f"max error {out['max_error']:.1e} at the {out['name']}"
    if worst is not out and worst["max_error"] > out["max_error"]:
        where += f", {worst['max_error']:.1e} inside at {worst['name']}"
    if worst["max_error"] <= tol:
        return f"equivariant up to float rounding ({where}; tolerance {tol:.0e})"
    if grids is True:
        return (f"NOT equivariant ({where}) although the grids are symmetric: these layers "
                "or weights are not equivariant themselves (e.g. ordinary Conv2d kernels)")
    return f"NOT equivariant ({where})"


def _print_measured(model: nn.Module, group, args: argparse.Namespace,
                    grids: bool | None) -> None:
    """Part 2: the measured equivariance error of the model's weights on a photo."""
    from equivlib.checks import layerwise_errors

    channels = args.in_channels or next(m.in_channels for m in model.modules()
                                        if hasattr(m, "in_channels"))
    measured = copy.deepcopy(model).double().eval()
    rows = layerwise_errors(measured, photo_batch("astronaut", args.size, channels), group)
    print()
    _say(f"2. measured equivariance error of these weights under {group.name.upper()}: "
         "||f(g.x) - g.f(x)|| / ||f(x)|| on a photo (float64, eval mode); float rounding "
         "gives ~1e-15, a broken symmetry ~0.01-1")
    _print_errors(rows, args.depth)
    _say(f"result: {measured_verdict(rows, grids)}")


def check_command(args: argparse.Namespace) -> int:
    """Trace ``args.model`` at ``args.size`` and (unless ``--no-measure``) measure it."""
    if args.size < 1:
        raise CliError(f"--size must be positive, got {args.size}")
    model, name = load_model(args.model)
    group = model_group(model, args.group)
    try:
        report = trace(model, args.size, in_channels=args.in_channels, name=name)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    below = nearest_exact_size(model, args.size, args.in_channels, direction="down")
    above = nearest_exact_size(model, args.size, args.in_channels, direction="up")
    _print_grids(report, args.size, below, above)
    if args.no_measure:
        print("\n2. measured equivariance error: skipped (--no-measure)")
        return 0
    _print_measured(model, group, args, report.exact)
    return 0


def list_command(args: argparse.Namespace) -> int:
    """Print the registered models, or the datasets with what each is."""
    if args.what == "datasets":
        from equivlib.data.registry import dataset_source, list_datasets
        for name in list_datasets():
            print(f"{name:12s} {dataset_source(name).description}")
        return 0
    registry = _registry()
    print("\n".join(registry.list_models() if registry else []))
    return 0


def add_check_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="trace a model's subsampling layers at an input size")
    p.add_argument("model", help="registry name or package.module:callable")
    p.add_argument("--size", type=int, required=True, help="spatial input size (square)")
    p.add_argument("--group", default=None, help="p4 or p4m (default: the model's own, else p4)")
    p.add_argument("--in-channels", type=int, default=None, help="override inferred channels")
    p.add_argument("--depth", type=int, default=2, help="module depth shown in the error table")
    p.add_argument("--no-measure", action="store_true", help="trace only; skip the measurement")
    return p


def add_list_parser(sub: Any) -> argparse.ArgumentParser:
    lp = sub.add_parser("list", help="list the registered models (and datasets)")
    lp.add_argument("what", nargs="?", default="models", choices=("models", "datasets"),
                    help="what to list")
    return lp
