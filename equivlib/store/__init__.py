"""The results store (one JSON file per run, keyed by its config's hash, saying where it was
made), atomic writes, claims that keep processes sharing a store from training the same
run twice, and the writable-directory probe."""

from equivlib.store.atomic import atomic_path, atomic_write_bytes
from equivlib.store.claims import claimed, read_claim, release, try_claim
from equivlib.store.provenance import collect as collect_provenance
from equivlib.store.results import (
    config_hash,
    load_result,
    provenance_of,
    result_path,
    save_result,
)
from equivlib.store.writable import check_writable_dir

__all__ = ["atomic_path", "atomic_write_bytes", "check_writable_dir", "claimed",
           "collect_provenance", "config_hash", "load_result", "provenance_of", "read_claim",
           "release", "result_path", "save_result", "try_claim"]
