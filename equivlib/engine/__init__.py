"""The training engine: typed configs, the loops, optimisers and schedules, checkpoints,
torchrun/DDP (synchronised batch norm), one run (resume, results store, W&B) and grids of runs.

One run is :func:`equivlib.engine.run.run` (also ``equivlib.run``); the function is not
re-exported here, so that ``equivlib.engine.run`` stays the module."""

from equivlib.engine.config import RunConfig
from equivlib.engine.grid import GridRunError, run_grid
from equivlib.engine.loop import evaluate, train_one_epoch
from equivlib.engine.run import StopTraining
from equivlib.engine.sync_batchnorm import convert_sync_batchnorm

__all__ = ["GridRunError", "RunConfig", "StopTraining", "convert_sync_batchnorm", "evaluate",
           "run_grid", "train_one_epoch"]
