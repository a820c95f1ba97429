"""equivlib: exactly equivariant P4/P4M layers and tools that tell whether a network is exact.

Runnable companion of *Using and Abusing Equivariance* (Edixhoven, Lengyel, van Gemert,
ICCV Workshops 2023). The public API, by concern:

- groups and layers: :data:`P4`, :data:`P4M`, :func:`get_group`, :class:`LiftingConv2d`,
  :class:`GroupConv2d`, :class:`GroupBatchNorm`, :class:`GroupMaxPool2d`,
  :class:`GroupAvgPool2d`, :class:`CosetPool`;
- models: :func:`get_model`, :func:`list_models`, :func:`register_model`;
  :func:`export_model` (also ``model.export()``) rebuilds a model from ``torch.nn`` layers
  only, same outputs in eval mode (``equivlib.export`` is its module; calling the module,
  ``equivlib.export(model)``, still works for one release and warns);
- exactness: :func:`trace`, :func:`exact_input_sizes`, :func:`nearest_exact_size` (the
  tracer, any ``nn.Module``), :func:`is_exact` (the condition for one layer);
- checks: :func:`equivariance_error`, :func:`layerwise_errors`, :func:`assert_equivariant`;
- data: :func:`get_dataset`, :func:`list_datasets`; training: :func:`run`, :func:`run_grid`,
  :class:`RunConfig` (imported on first use: ``equivlib.data``, ``equivlib.engine``).
"""

from equivlib.checks import assert_equivariant, equivariance_error, layerwise_errors
from equivlib.exactness import is_exact
from equivlib.export import export_model
from equivlib.groups import P4, P4M, get_group
from equivlib.layers import (
    CosetPool,
    GroupAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupMaxPool2d,
    LiftingConv2d,
)
from equivlib.models import get_model, list_models, register_model
from equivlib.tracer import exact_input_sizes, nearest_exact_size, trace

__version__ = "0.1.0"

_LAZY = {"get_dataset": "equivlib.data", "list_datasets": "equivlib.data",
         "run": "equivlib.engine.run", "run_grid": "equivlib.engine",
         "RunConfig": "equivlib.engine"}

__all__ = ["P4", "P4M", "CosetPool", "GroupAvgPool2d", "GroupBatchNorm", "GroupConv2d",
           "GroupMaxPool2d", "LiftingConv2d", "assert_equivariant", "equivariance_error",
           "exact_input_sizes", "export", "export_model", "get_group", "get_model", "is_exact",
           "layerwise_errors", "list_models", "nearest_exact_size", "register_model", "trace",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'equivlib' has no attribute {name!r}")
