"""The results store (one JSON file per run, keyed by its config's hash) and atomic writes."""

from equivlib.store.atomic import atomic_path, atomic_write_bytes
from equivlib.store.results import config_hash, load_result, result_path, save_result

__all__ = ["atomic_path", "atomic_write_bytes", "config_hash", "load_result", "result_path",
           "save_result"]
