"""The model registry: ``register_model`` adds a builder under a name and an architecture
revision, ``get_model(name, num_classes=..., **config)`` builds it (as torchvision's
``get_model``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

__all__ = ["get_model", "get_model_builder", "list_models", "model_revision", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_REVISIONS: dict[str, int] = {}


def register_model(name: str, revision: int = 0,
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes=..., **config) -> nn.Module``.

    ``revision`` counts changes of the architecture; it is part of a run's config (and so
    of its results-store key), so results of an older architecture are never reused."""
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        _REVISIONS[name] = revision
        return builder
    return decorator


def model_revision(name: str) -> int:
    """The architecture revision of registered model ``name`` (see :func:`register_model`)."""
    if name not in _REVISIONS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REVISIONS[name]


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_REGISTRY)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (its keyword parameters are the config keys
    :func:`get_model` accepts). Unknown names raise ``ValueError``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, num_classes: int | None = None, **config) -> nn.Module:
    """Build a registered model. ``num_classes`` defaults to the builder's default (10 for
    everything except ``p4_single_layer``: 2). Unknown names raise ``ValueError``, unknown
    config keys ``TypeError``."""
    builder = get_model_builder(name)
    accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"accepted: num_classes, {', '.join(accepted)}"
        )
    if num_classes is not None:
        config["num_classes"] = num_classes
    return builder(**config)

