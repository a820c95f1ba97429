"""``python -m equivlib``: the commands of :mod:`equivlib.cli`."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from equivlib.cli import main, run_script

# names this module held before equivlib.cli (deprecated aliases until equivlib 0.2)
_MOVED = {"CliError": "equivlib.cli", "DEBUG_HELP": "equivlib.cli",
          "build_parser": "equivlib.cli", "one_line": "equivlib.cli",
          "load_model": "equivlib.cli.check", "model_group": "equivlib.cli.check",
          "GRIDS": "equivlib.cli.check", "measured_verdict": "equivlib.cli.check",
          "check": "equivlib.cli.check:check_command",
          "MAX_ZOO_SIZES": "equivlib.cli.zoo", "ZooProgress": "equivlib.cli.zoo",
          "zoo": "equivlib.cli.zoo:zoo_command"}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, new = _MOVED[name].partition(":")
    new = new or name
    warnings.warn(f"equivlib.__main__.{name} moved to {module}.{new}; the alias goes in "
                  "equivlib 0.2", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), new)


__all__ = ["main"]

if __name__ == "__main__":
    run_script()
