"""Deprecated: the training recipes moved to :mod:`equivlib.experiments.recipes`."""

import warnings

from equivlib.experiments.recipes import (  # noqa: F401 (re-exported for one release)
    EVERY_10_DEGREES,
    PAPER_RECIPES,
    PCAM_WIDTHS,
    QUARTER_TURNS,
    paper_config,
    train_overrides,
)

PAPER_PROTOCOLS = PAPER_RECIPES

warnings.warn("equivlib.experiments.protocols moved to equivlib.experiments.recipes; the alias "
              "goes in equivlib 0.2", DeprecationWarning, stacklevel=2)
