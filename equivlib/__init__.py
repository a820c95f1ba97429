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

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it. Imported on first use (PEP 562), so that
# ``import equivlib.experiments.notebook_params`` (the run_all.sh driver checking its
# parameters) does not pay for torch.
_HOMES = {
    "P4": "equivlib.groups", "P4M": "equivlib.groups", "get_group": "equivlib.groups",
    "CosetPool": "equivlib.layers", "GroupAvgPool2d": "equivlib.layers",
    "GroupBatchNorm": "equivlib.layers", "GroupConv2d": "equivlib.layers",
    "GroupMaxPool2d": "equivlib.layers", "LiftingConv2d": "equivlib.layers",
    "is_exact": "equivlib.exactness",
    "trace": "equivlib.tracer", "exact_input_sizes": "equivlib.tracer",
    "nearest_exact_size": "equivlib.tracer",
    "assert_equivariant": "equivlib.checks", "equivariance_error": "equivlib.checks",
    "layerwise_errors": "equivlib.checks",
    "export_model": "equivlib.export",
    "get_model": "equivlib.models", "list_models": "equivlib.models",
    "register_model": "equivlib.models",
    "get_dataset": "equivlib.data", "list_datasets": "equivlib.data",
    "run": "equivlib.engine.run", "run_grid": "equivlib.engine", "RunConfig": "equivlib.engine",
}

__all__ = ["assert_equivariant", "CosetPool", "equivariance_error", "exact_input_sizes", "export",
           "export_model", "get_dataset", "get_group", "get_model", "GroupAvgPool2d",
           "GroupBatchNorm", "GroupConv2d", "GroupMaxPool2d", "is_exact", "layerwise_errors",
           "LiftingConv2d", "list_datasets", "list_models", "nearest_exact_size", "P4", "P4M",
           "register_model", "run", "run_grid", "RunConfig", "trace"]

if TYPE_CHECKING:
    from equivlib import export
    from equivlib.checks import assert_equivariant, equivariance_error, layerwise_errors
    from equivlib.data import get_dataset, list_datasets
    from equivlib.engine import RunConfig, run_grid
    from equivlib.engine.run import run
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


def __getattr__(name: str):
    """A public name from its module, or a submodule (``equivlib.layers``), on first use."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'equivlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
