"""Old names kept for one release: each use warns ``DeprecationWarning`` and says where the
name went. Two forms, used by every module that moved or renamed something:
:func:`moved_names` (a PEP 562 module ``__getattr__``, importing the new home on first use)
and :func:`renamed` (a function under its old name)."""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REMOVAL = "the alias goes in equivlib 0.2"


def moved_names(module: str, moves: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``module`` for its moved names: ``moves`` maps an old name to
    ``"new.module"`` (same name there) or ``"new.module:new_name"``. The new module is
    imported when the name is used, so an alias never imports a layer above its own."""
    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new = moves[name].partition(":")
        new = new or name
        warnings.warn(f"{module}.{name} moved to {target}.{new}; {REMOVAL}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(target), new)

    return __getattr__


def renamed(old: str, new: Callable[..., Any]) -> Callable[..., Any]:
    """The function ``new`` under its old name ``old`` (in ``new``'s module), warning on
    every call; ``new`` is looked up in its module at each call, as a call by name would."""
    module, name = new.__module__, new.__name__

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{module}.{old} was renamed {name}; {REMOVAL}", DeprecationWarning,
                      stacklevel=2)
        return getattr(sys.modules[module], name)(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of :func:`{new.__name__}`."
    return alias
