"""The ``zoo`` command: which input sizes keep a family of models exact (each model traced at
each size on the meta device; the sampling grids only, no weights).

    python -m equivlib zoo resnet18 convnext_tiny --sizes 220-232
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from torch import nn

from equivlib.cli import CliError
from equivlib.cli.check import load_model

MAX_ZOO_SIZES = 512  # a 1-100000 range traced for an hour without a word; now refused


class ZooProgress:
    """``zoo``'s progress on stderr (stdout keeps only the table): on a terminal one line
    rewritten in place; otherwise a plain line at most every ``EQUIVLIB_PROGRESS_INTERVAL``
    seconds (default 10), the first after that long, so quick runs print nothing.
    ``EQUIVLIB_PROGRESS=0`` turns it off."""

    def __init__(self, models: int, stream: TextIO | None = None) -> None:
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


def zoo_command(args: argparse.Namespace) -> int:
    """Trace every model at every size on the meta device; print the table."""
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


def add_zoo_parser(sub: Any) -> argparse.ArgumentParser:
    zp = sub.add_parser("zoo", help="which input sizes keep a family of models exact",
                        description="Trace models (torchvision names, registry names or "
                                    "package.module:callable) at many input sizes on the meta "
                                    "device: E exact, G exact grids (positional embedding or "
                                    "flattening head), . not exact, ? unknown, - the model "
                                    "refuses the size.")
    zp.add_argument("models", nargs="*", help="default: every torchvision classification model")
    zp.add_argument("--sizes", default="220-232,256,299,384,512", help="sizes and ranges")
    zp.add_argument("--workers", type=int, default=1, help="processes tracing models")
    return zp
