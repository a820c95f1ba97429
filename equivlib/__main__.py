"""``python -m equivlib``: the commands of :mod:`equivlib.cli`."""

from __future__ import annotations

from equivlib._deprecation import moved_names
from equivlib.cli import main, run_script

# names this module held before equivlib.cli (deprecated aliases until equivlib 0.2)
_MOVED = {"CliError": "equivlib.cli", "DEBUG_HELP": "equivlib.cli",
          "build_parser": "equivlib.cli", "one_line": "equivlib.cli",
          "load_model": "equivlib.cli.check", "model_group": "equivlib.cli.check",
          "GRIDS": "equivlib.cli.check", "measured_verdict": "equivlib.cli.check",
          "check": "equivlib.cli.check:check_command",
          "MAX_ZOO_SIZES": "equivlib.cli.zoo", "ZooProgress": "equivlib.cli.zoo",
          "zoo": "equivlib.cli.zoo:zoo_command"}
__getattr__ = moved_names(__name__, _MOVED)


__all__ = ["main"]

if __name__ == "__main__":
    run_script()
