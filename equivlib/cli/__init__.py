"""Command line of equivlib: is my network exact, and training runs.

    python -m equivlib check p4_resnet44 --size 32
    python -m equivlib check torchvision.models:resnet18 --size 224 --group p4
    python -m equivlib zoo resnet18 convnext_tiny --sizes 220-232
    python -m equivlib list
    python -m equivlib train --dataset cifar10 --model p4_resnet44 --input-size 33
    python -m equivlib grid --notebook 04_rotmnist_rotation --profile paper

The commands sit on top of the library (as torchvision's ``references/`` sit on top of
torchvision): they import the engine and the experiments, and nothing in ``equivlib``
imports them. One verb per module (:mod:`~equivlib.cli.check` with ``list``,
:mod:`~equivlib.cli.zoo`, :mod:`~equivlib.cli.train`, :mod:`~equivlib.cli.grid`); this
module builds the parser and turns errors into one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

DEBUG_HELP = "show the full traceback of an error instead of one line"
PROG = "python -m equivlib"


class CliError(Exception):
    """Bad input on the command line: one line ``python -m equivlib COMMAND: error: ...`` on
    stderr, exit status 2."""


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Each command's name -> the function that runs it (imported here: the verb modules
    import :class:`CliError` from this package)."""
    from equivlib.cli import check, grid, train, zoo

    return {"check": check.check_command, "zoo": zoo.zoo_command,
            "list": check.list_command, "train": train.train_command,
            "grid": grid.grid_command}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: check, zoo, list, train, grid."""
    from equivlib.cli import check, grid, train, zoo

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check.add_check_parser(sub)
    zoo.add_zoo_parser(sub)
    check.add_list_parser(sub)
    train.add_train_parser(sub)
    grid.add_grid_parser(sub)
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


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input (:class:`CliError`) becomes one line on stderr and
    exit status 2 (``--debug``: the traceback)."""
    try:
        return _commands()[args.command](args)
    except CliError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input: one line on stderr, exit 2; any other error: one line
    ``error: Type: message``, exit 1; ``--debug``: the full traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {one_line(exc)} (run with --debug "
              "for the traceback)", file=sys.stderr)
        return 1


def run_script(argv: list[str] | None = None) -> NoReturn:
    """Exit the process with :func:`main`'s status (``python -m equivlib``)."""
    try:
        code = main(argv)
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


__all__ = ["CliError", "build_parser", "main", "one_line", "run_command", "run_script"]
