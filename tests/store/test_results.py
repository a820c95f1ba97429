import json
import warnings

import pytest

from equivlib.store import results
from equivlib.store.provenance import collect
from equivlib.store.results import (
    config_hash,
    load_result,
    provenance_of,
    result_path,
    save_result,
)

CFG = {"model": "p4_mnist_cnn", "input_size": 28, "seed": 3, "opt": {"lr": 0.01, "wd": 1e-5}}


def test_round_trip(tmp_path):
    path = save_result(CFG, {"acc": [0.5, 0.75]}, tmp_path)
    assert path == result_path(CFG, tmp_path)
    record = load_result(CFG, tmp_path)
    assert record["metrics"] == {"acc": [0.5, 0.75]} and record["complete"] is True
    assert load_result({**CFG, "seed": 4}, tmp_path) is None


def test_key_stable_across_orderings():
    reordered = {"seed": 3, "opt": {"wd": 1e-5, "lr": 0.01}, "input_size": 28,
                 "model": "p4_mnist_cnn"}
    assert config_hash(CFG) == config_hash(reordered)
    assert len(config_hash(CFG)) == 16
    assert config_hash(CFG) != config_hash({**CFG, "seed": 4})


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save_result(CFG, {"acc": 1.0}, tmp_path)
    save_result(CFG, {"acc": 0.5}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [result_path(CFG, tmp_path).name]
    assert load_result(CFG, tmp_path)["metrics"] == {"acc": 0.5}


def _corrupt(tmp_path, how):
    path = save_result(CFG, {"acc": 1.0}, tmp_path)
    text = path.read_text()
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        record = json.loads(text)
        if how == "wrong_config":
            record["config"]["seed"] = 99
        elif how == "no_marker":
            del record["complete"]
        elif how == "false_marker":
            record["complete"] = False
        elif how == "no_metrics":
            del record["metrics"]
        path.write_text(json.dumps(record))


@pytest.mark.parametrize("how", ["truncated", "wrong_config", "no_marker", "false_marker",
                                 "no_metrics"])
def test_corrupt_file_is_missing_and_warns_once(tmp_path, how):
    _corrupt(tmp_path, how)
    with pytest.warns(RuntimeWarning, match="ignoring invalid result"):
        assert load_result(CFG, tmp_path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_result(CFG, tmp_path) is None


# ------------------------------------------------------------------ provenance


@pytest.fixture
def fresh(monkeypatch):
    """No record saved or loaded yet in this process."""
    monkeypatch.setattr(results, "_seen", {})


def test_a_record_says_where_it_was_made(tmp_path, fresh):
    key_before = config_hash(CFG)
    path = save_result(CFG, {"acc": 0.5}, tmp_path)
    assert path.stem == key_before  # the key is the config's alone
    stored = json.loads(path.read_text())
    assert set(stored) == {"key", "config", "metrics", "provenance", "complete"}
    assert stored["config"] == CFG and stored["metrics"] == {"acc": 0.5}
    assert stored["provenance"] == collect()
    record = load_result(CFG, tmp_path)
    assert record["provenance"] == stored["provenance"] and record["metrics"] == {"acc": 0.5}


def test_a_given_provenance_is_stored(tmp_path):
    made = {**collect("cpu", processes=4, threads=8), "cpu": "AMD EPYC 9R14"}
    save_result(CFG, {"acc": 0.5}, tmp_path, provenance=made)
    assert load_result(CFG, tmp_path)["provenance"] == made


@pytest.mark.parametrize("old", ["absent", "null", "not a dict"])
def test_an_old_record_loads_and_counts_as_unknown(tmp_path, fresh, old):
    path = save_result(CFG, {"acc": 0.5}, tmp_path)
    record = json.loads(path.read_text())
    if old == "absent":  # written before provenance was stored
        del record["provenance"]
    else:
        record["provenance"] = None if old == "null" else "intel"
    path.write_text(json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid result" warning: it is valid
        loaded = load_result(CFG, tmp_path)
    assert loaded["metrics"] == {"acc": 0.5} and loaded["provenance"] is None
    assert provenance_of([CFG]) == [None]
    assert provenance_of([loaded, record]) == [None, None]


def test_provenance_of_configs_and_records(tmp_path, fresh):
    other = {**CFG, "seed": 4}
    made = {**collect("cpu"), "commit": "1" * 40}
    save_result(CFG, {"acc": 0.5}, tmp_path, provenance=made)
    results._seen.clear()  # as in a new process: nothing saved or loaded here yet
    assert provenance_of([CFG, other]) == [None, None]  # not seen, no store given
    assert provenance_of([CFG, other], tmp_path) == [made, None]  # read from the store
    assert provenance_of([CFG]) == [made]  # now remembered
    assert provenance_of([load_result(CFG, tmp_path)]) == [made]  # a record: its own
