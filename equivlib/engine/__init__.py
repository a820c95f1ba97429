"""The training engine: typed configs, the loops, optimisers and schedules, checkpoints,
torchrun/DDP, one run (resume, results store, W&B) and grids of runs.

One run is :func:`equivlib.engine.run.run` (also ``equivlib.run``); the function is not
re-exported here, so that ``equivlib.engine.run`` stays the module."""

from equivlib._deprecation import moved_names
from equivlib.engine.config import RunConfig
from equivlib.engine.grid import GridRunError, run_grid
from equivlib.engine.loop import evaluate, train_one_epoch
from equivlib.engine.run import StopTraining

__all__ = ["GridRunError", "RunConfig", "StopTraining", "evaluate", "run_grid",
           "train_one_epoch"]

__getattr__ = moved_names(__name__, {"convert_sync_batchnorm": "equivlib.layers"})
