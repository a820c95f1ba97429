"""The results store (one JSON file per run, keyed by its config's hash), atomic writes, and
claims that keep processes sharing a store from training the same run twice."""

from equivlib.store.atomic import atomic_path, atomic_write_bytes
from equivlib.store.claims import claimed, read_claim, release, try_claim
from equivlib.store.results import config_hash, load_result, result_path, save_result

__all__ = ["atomic_path", "atomic_write_bytes", "claimed", "config_hash", "load_result",
           "read_claim", "release", "result_path", "save_result", "try_claim"]
