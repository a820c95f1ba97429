"""Command line of equivlib: is my network exact, and training runs.

    python -m equivlib check p4_resnet44 --size 32
    python -m equivlib check torchvision.models:resnet18 --size 224 --group p4
    python -m equivlib zoo resnet18 convnext_tiny --sizes 220-232
    python -m equivlib list
    python -m equivlib train --dataset cifar10 --model p4_resnet44 --input-size 33
    python -m equivlib grid --notebook 04_rotmnist_rotation --profile paper
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
import textwrap

import torch
from torch import nn

from equivlib.data.photos import photo_batch
from equivlib.exactness import nearest_exact_size, trace
from equivlib.groups import get_group

DEBUG_HELP = "show the full traceback of an error instead of one line"


class CliError(Exception):
    """Bad input on the command line: one line on stderr, exit status 2."""


def _registry():
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


def model_group(model: nn.Module, requested: str | None):
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


def check(args: argparse.Namespace) -> int:
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


MAX_ZOO_SIZES = 512  # a 1-100000 range traced for an hour without a word; now refused


class ZooProgress:
    """``zoo``'s progress on stderr (stdout keeps only the table): on a terminal one line
    rewritten in place; otherwise a plain line at most every ``EQUIVLIB_PROGRESS_INTERVAL``
    seconds (default 10), the first after that long, so quick runs print nothing.
    ``EQUIVLIB_PROGRESS=0`` turns it off."""

    def __init__(self, models: int, stream=None) -> None:
        import time

        self.stream = stream or sys.stderr
        self.models, self.clock = models, time.monotonic
        self.on = os.environ.get("EQUIVLIB_PROGRESS", "1") != "0"
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else float(
            os.environ.get("EQUIVLIB_PROGRESS_INTERVAL", "10"))
        self.start = self.last = self.clock()
        self.width = 0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if not self.on or done >= total or now - self.last < self.interval:
            return  # off, finished (the table follows), or said a moment ago
        self.last = now
        elapsed = now - self.start
        left = f", ~{_clock(elapsed / done * (total - done))} left" if done else ""
        line = (f"zoo: {done:,}/{total:,} model x size traces ({self.models} model"
                f"{'s' if self.models != 1 else ''}), {_clock(elapsed)} elapsed{left}")
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def zoo(args: argparse.Namespace) -> int:
    from equivlib.experiments import zoo as zoo_module

    try:
        sizes = zoo_module.parse_sizes(args.sizes, max_count=MAX_ZOO_SIZES)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")
    known = set(zoo_module.torchvision_models())
    names = args.models or sorted(known)
    custom = [n for n in names if n not in known]
    for name in custom:  # registry names and module:callable specs, checked before any work
        load_model(name)

    def build(name: str) -> nn.Module:
        return zoo_module.build_on_meta(name) if name in known else load_model(name)[0]

    progress = ZooProgress(len(names))
    try:
        if custom:  # a local builder cannot go to worker processes
            cells, models = zoo_module.zoo_table(names, sizes, build=build, progress=progress)
        else:
            cells, models = zoo_module.zoo_table(names, sizes, workers=args.workers,
                                                 progress=progress)
    finally:
        progress.clear()
    if len(cells):
        print(zoo_module.format_wide(cells))
    for row in models.itertuples():
        if not row.built:
            print(f"{row.model}: {row.note}")
    print("\nE exact, G exact grids but invariance also needs a symmetric positional "
          "embedding or flattening head, . not exact, ? unknown (an op the tracer cannot "
          "judge), - n/a (the model refuses the size); about the sampling grids, not the "
          "weights")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: check, list, train, grid."""
    parser = argparse.ArgumentParser(prog="python -m equivlib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="trace a model's subsampling layers at an input size")
    p.add_argument("model", help="registry name or package.module:callable")
    p.add_argument("--size", type=int, required=True, help="spatial input size (square)")
    p.add_argument("--group", default=None, help="p4 or p4m (default: the model's own, else p4)")
    p.add_argument("--in-channels", type=int, default=None, help="override inferred channels")
    p.add_argument("--depth", type=int, default=2, help="module depth shown in the error table")
    p.add_argument("--no-measure", action="store_true", help="trace only; skip the measurement")
    zp = sub.add_parser("zoo", help="which input sizes keep a family of models exact",
                        description="Trace models (torchvision names, registry names or "
                                    "package.module:callable) at many input sizes on the meta "
                                    "device: E exact, G exact grids (positional embedding or "
                                    "flattening head), . not exact, ? unknown, - the model "
                                    "refuses the size.")
    zp.add_argument("models", nargs="*", help="default: every torchvision classification model")
    zp.add_argument("--sizes", default="220-232,256,299,384,512", help="sizes and ranges")
    zp.add_argument("--workers", type=int, default=1, help="processes tracing models")
    lp = sub.add_parser("list", help="list the registered models (and datasets)")
    lp.add_argument("what", nargs="?", default="models", choices=("models", "datasets"),
                    help="what to list")
    from equivlib.engine.cli import add_grid_parser, add_train_parser
    add_train_parser(sub)
    add_grid_parser(sub)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for command in sub.choices.values():  # also after the command: ... train --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
    return parser


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line (newlines folded, long messages cut)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    from equivlib.engine.cli import run_command

    if args.command in ("train", "grid"):
        return run_command(args)
    try:
        if args.command == "zoo":
            return zoo(args)
        if args.command == "list":
            if args.what == "datasets":
                from equivlib.data.registry import dataset_source, list_datasets
                for name in list_datasets():
                    print(f"{name:12s} {dataset_source(name).description}")
                return 0
            registry = _registry()
            print("\n".join(registry.list_models() if registry else []))
            return 0
        return check(args)
    except CliError as exc:
        if args.debug:
            raise
        print(f"python -m equivlib: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input: one line on stderr, exit 2; any other error: one line
    ``error: Type: message``, exit 1; ``--debug``: the full traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if args.debug:
            raise
        print(f"python -m equivlib {args.command}: error: {one_line(exc)} (run with --debug "
              "for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a torchrun process whose run is over (result written, process group destroyed):
        # skip interpreter teardown, where gloo's threads can abort the process (SIGABRT,
        # "terminate called without an active exception") and turn a finished run into a
        # failed launch
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
