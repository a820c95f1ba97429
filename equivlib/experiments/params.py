"""Deprecated: :mod:`equivlib.experiments.notebook_params` holds ``split_list`` and
``number_list`` now; this alias goes in equivlib 0.2."""

import warnings

from equivlib.experiments.notebook_params import number_list, split_list

warnings.warn("equivlib.experiments.params moved to equivlib.experiments.notebook_params; "
              "the alias goes in equivlib 0.2", DeprecationWarning, stacklevel=2)

__all__ = ["number_list", "split_list"]
