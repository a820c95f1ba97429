"""The training engine: typed configs, the loops, optimisers and schedules, checkpoints,
torchrun/DDP, one run (resume, results store, W&B) and grids of runs.

One run is :func:`equivlib.engine.run.run` (also ``equivlib.run``); the function is not
re-exported here, so that ``equivlib.engine.run`` stays the module."""

from equivlib.engine.config import RunConfig
from equivlib.engine.grid import GridRunError, run_grid
from equivlib.engine.loop import evaluate, train_one_epoch
from equivlib.engine.run import StopTraining

__all__ = ["GridRunError", "RunConfig", "StopTraining", "evaluate", "run_grid",
           "train_one_epoch"]


def __getattr__(name: str) -> object:
    """Deprecated alias: ``convert_sync_batchnorm`` moved to :mod:`equivlib.layers`."""
    if name == "convert_sync_batchnorm":
        import warnings

        from equivlib.layers import convert_sync_batchnorm

        warnings.warn("equivlib.engine.convert_sync_batchnorm moved to "
                      "equivlib.layers.convert_sync_batchnorm; the alias goes in equivlib 0.2",
                      DeprecationWarning, stacklevel=2)
        return convert_sync_batchnorm
    raise AttributeError(f"module 'equivlib.engine' has no attribute {name!r}")
