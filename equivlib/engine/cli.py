"""Deprecated: the ``train`` and ``grid`` commands moved to :mod:`equivlib.cli.train` and
:mod:`equivlib.cli.grid` (the commands sit above the engine; nothing in the package imports
this module). Its old names resolve there, with a DeprecationWarning, until equivlib 0.2."""

from __future__ import annotations

from equivlib._deprecation import moved_names

_TRAIN = ("IMAGE_CHANNELS", "KWARG_FLAGS", "model_misfit", "models_for", "check_model",
          "check_flags", "add_train_parser", "given_flags", "CONFIG_FLAGS", "SET_PATHS",
          "ROTMNIST_FLAGS", "check_config_conflicts", "check_flags_apply", "config_from_args",
          "train_command", "json_line", "_checked_config", "_config_file", "_merge",
          "_parse_set")
_GRID = ("add_grid_parser", "parse_shard", "grid_command")
# old name -> "module:new name"
_MOVED = {"CliError": "equivlib.cli:CliError", "run_command": "equivlib.cli:run_command",
          "notebook_parameters": "equivlib.cli.grid:notebook_defaults",
          **{name: f"equivlib.cli.train:{name}" for name in _TRAIN},
          **{name: f"equivlib.cli.grid:{name}" for name in _GRID}}

__getattr__ = moved_names(__name__, _MOVED)
