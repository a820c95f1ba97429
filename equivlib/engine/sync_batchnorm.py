"""Deprecated alias: the synchronised batch norms moved to :mod:`equivlib.layers.sync_norm`
(``from equivlib.layers import convert_sync_batchnorm, SyncBatchNorm, ...``); this module
goes in equivlib 0.2."""

import warnings

from equivlib.layers.sync_norm import (
    ProcessExchange,
    SyncBatchNorm,
    SyncGroupBatchNorm,
    convert_sync_batchnorm,
    sync_batch_norm,
)

warnings.warn("equivlib.engine.sync_batchnorm moved to equivlib.layers.sync_norm; the alias "
              "goes in equivlib 0.2", DeprecationWarning, stacklevel=2)

__all__ = ["ProcessExchange", "SyncBatchNorm", "SyncGroupBatchNorm", "convert_sync_batchnorm",
           "sync_batch_norm"]
