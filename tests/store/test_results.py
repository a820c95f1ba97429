import json
import warnings

import pytest

from equivlib.store.results import config_hash, load_result, result_path, save_result

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
