"""Deprecated alias of :mod:`equivlib.engine.restore` (rebuilding a trained model from its
checkpoint and predicting with it); the alias goes in equivlib 0.2."""

from __future__ import annotations

import warnings

_MOVED = frozenset({"predict_test_set", "rebuild_tested_model"})


def __getattr__(name: str):
    """``equivlib.engine.trained.<name>``: :mod:`equivlib.engine.restore`'s name, with a
    DeprecationWarning."""
    if name in _MOVED:
        warnings.warn(f"equivlib.engine.trained.{name} moved to equivlib.engine.restore."
                      f"{name}; the alias goes in equivlib 0.2", DeprecationWarning,
                      stacklevel=2)
        from equivlib.engine import restore

        return getattr(restore, name)
    raise AttributeError(f"module 'equivlib.engine.trained' has no attribute {name!r}")
