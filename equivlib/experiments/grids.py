"""The registry of notebook grids: a notebook (or table) name -> the builder of its
:class:`~equivlib.experiments.rotation.NotebookGrid` from the notebook's parameters.

Notebooks 04-08 and ``python -m equivlib grid`` build their runs here, so the same
parameters give the same configs and results-store keys. ``params`` may be a notebook's
whole namespace (``globals()``): each builder takes only the parameters it names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from equivlib.experiments import classification, imagenet, pcam, rotmnist
from equivlib.experiments.rotation import NotebookGrid


@dataclass(frozen=True)
class _Entry:
    parameters: tuple[str, ...]
    build: Callable[..., NotebookGrid]
    writes_data: bool = False  # the builder writes data unless write_data=False


_GRIDS: dict[str, _Entry] = {
    "04_rotmnist_rotation": _Entry(rotmnist.PARAMETERS, rotmnist.notebook_grid),
    "05_rotmnist_statistics": _Entry(rotmnist.PARAMETERS, rotmnist.notebook_grid),
    "06_classification": _Entry(classification.PARAMETERS, classification.notebook_grid),
    "07_pcam": _Entry(pcam.PARAMETERS, pcam.notebook_grid),
    "08_imagenet": _Entry(imagenet.PARAMETERS, imagenet.notebook_grid, writes_data=True),
}


def grid_names() -> list[str]:
    """The names with a grid, in notebook order."""
    return list(_GRIDS)


def grid_parameters(name: str) -> tuple[str, ...]:
    """The notebook parameters the grid ``name`` is built from."""
    return _entry(name).parameters


def notebook_grid(name: str, params: Mapping[str, Any], *,
                  write_data: bool = True) -> NotebookGrid:
    """The grid of notebook ``name`` from ``params`` (a dict or a notebook's ``globals()``;
    only the parameters of :func:`grid_parameters` are read). ``write_data=False``: the same
    configs, nothing written (08's stand-in shards; e.g. to list a grid). ValueError for an
    unknown name, a missing parameter or a bad value, before any work."""
    entry = _entry(name)
    missing = [p for p in entry.parameters if p not in params]
    if missing:
        raise ValueError(f"grid {name!r} needs the parameter(s) {missing}")
    chosen = {p: params[p] for p in entry.parameters}
    build = functools.partial(entry.build, write_data=write_data) if entry.writes_data \
        else entry.build
    return build(chosen)


def _entry(name: str) -> _Entry:
    if name not in _GRIDS:
        raise ValueError(f"no grid for notebook {name!r}; known: {', '.join(_GRIDS)}")
    return _GRIDS[name]
