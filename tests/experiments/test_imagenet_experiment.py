"""Notebook 08's experiment: the stand-in shards in ImageNet's format, the grid from its
parameters (global batch, lr scaling, twin widths), tables and figure."""

import json

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from equivlib.data.imagenet_tfrecord import TFRecordImages, count_records, find_shards  # noqa: E402
from equivlib.experiments import imagenet  # noqa: E402

PARAMS = dict(models="z2,p4", sizes="224,225", width=2, coset_pool=True, seeds=2, epochs=1,
              batch_per_gpu=4, gpus_per_run=2, lr=0.0, error_images=4, stand_in=True,
              stand_in_dir="", stand_in_images="3,1")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stand_in")
    return directory, imagenet.write_stand_in(directory, 3, 1, image_size=64, train_shards=2,
                                              valid_shards=1)


def test_stand_in_is_in_imagenet_format(shards):
    directory, manifest = shards
    train = find_shards("{root}/train-*", directory)
    valid = find_shards("{root}/validation-*", directory)
    assert [p.name for p in train] == ["train-00000-of-00002", "train-00001-of-00002"]
    assert count_records(train) == manifest["train_records"] == 30
    assert count_records(valid) == manifest["valid_records"] == 10
    records = list(TFRecordImages(valid))
    assert sorted(label for _, label in records) == list(range(10))  # 1-based on disk
    assert all(image.shape == (3, 64, 64) for image, _ in records)


def test_stand_in_is_written_once_per_arguments(shards, tmp_path):
    directory, manifest = shards
    stamps = {p: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert imagenet.write_stand_in(directory, 3, 1, image_size=64, train_shards=2,
                                   valid_shards=1) == manifest
    assert {p: p.stat().st_mtime_ns for p in directory.iterdir()} == stamps
    other = imagenet.write_stand_in(tmp_path, 2, 1, image_size=32, train_shards=1,
                                    valid_shards=1)
    assert json.loads((tmp_path / "stand_in.json").read_text()) == other
    assert other["train_records"] == 20 and len(find_shards("{root}/train-*", tmp_path)) == 1


@pytest.mark.parametrize("bad", [dict(train_per_class=0), dict(image_size=-1),
                                 dict(valid_shards=True)])
def test_bad_stand_in_arguments(tmp_path, bad):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        imagenet.write_stand_in(tmp_path, **{"train_per_class": 2, **bad})
    assert not any(tmp_path.iterdir())


def test_grid_from_parameters(shards):
    _, manifest = shards
    configs = imagenet.configs_from_params(PARAMS, manifest)
    assert len(configs) == 8
    p4 = next(c for c in configs if c.model.name == "p4_resnet18")
    z2 = next(c for c in configs if c.model.name == "z2_resnet18")
    assert p4.model.kwargs["widths"] == [2, 4, 8, 16] and z2.model.kwargs["widths"][0] == 4
    assert p4.train.batch_size == 8 and p4.optim.lr == pytest.approx(0.1 * 8 / 256)
    assert p4.test.topk == [1, 5] and p4.test.error_layers == ["output"]
    assert p4.data.options["num_classes"] == 10 and p4.data.options["train_records"] == 30
    paper = imagenet.imagenet_config("p4", 225, batch_size=512)
    assert paper.data.options == {} and paper.optim.lr == pytest.approx(0.2)
    assert paper.model.kwargs == {"widths": [32, 64, 128, 256], "coset_pool": True}
    assert paper.schedule.name == "warmup_multistep" and paper.train.epochs == 90
    assert not imagenet.imagenet_config("p4", 224, coset_pool=False).model.kwargs["coset_pool"]


@pytest.mark.parametrize("key, value, message", [
    ("gpus_per_run", 0, "gpus_per_run must be"), ("models", "p4m", "unknown group"),
    ("width", 0, "width must be"), ("seeds", 1.5, "seeds must be")])
def test_bad_parameters(key, value, message):
    with pytest.raises(ValueError, match=message):
        imagenet.configs_from_params({**PARAMS, key: value})


def _metrics(top1, error, processes=2):
    return {"test_acc": dict(zip(imagenet.QUARTERS, top1, strict=True)),
            "test_top5": dict(zip(imagenet.QUARTERS, [0.9] * 4, strict=True)),
            "equivariance_error": {"output": error}, "timing": {"processes": processes}}


def test_tables_and_figure(shards):
    _, manifest = shards
    configs = [c for c in imagenet.configs_from_params({**PARAMS, "seeds": 1}, manifest)
               if c.model.name == "p4_resnet18"]
    metrics = [_metrics([0.5, 0.4, 0.3, 0.45], 0.03), _metrics([0.5] * 4, 2e-7)]
    table = imagenet.results_table(configs, metrics)
    assert list(table.model.unique()) == ["P4-224", "P4-225"] and len(table) == 8
    report = imagenet.exactness_report(table, {"P4-224": False, "P4-225": True})
    assert "P4-224  (approximate    ) quarter-turn top-1 spread 20.00 points" in report
    assert "P4-225  (exact          ) quarter-turn top-1 spread  0.00 points" in report
    fig = imagenet.plot_quarter_turns(table, {"P4-224": False, "P4-225": True})
    heights = [round(b.get_height()) for b in fig.axes[0].patches]
    assert heights == [50, 40, 30, 45, 50, 50, 50, 50]
    assert np.isclose(table.top5, 0.9).all()


EXACT = {"P4-224": False, "P4-225": True}


def _runs(shards, metrics):
    """``results_table`` of P4-224 and P4-225 (two seeds each) with the given metrics:
    ``{model: [seed 0's, seed 1's]}``."""
    _, manifest = shards
    configs = [c for c in imagenet.configs_from_params(PARAMS, manifest)
               if c.model.name == "p4_resnet18"]
    labels = {224: "P4-224", 225: "P4-225"}
    return imagenet.results_table(configs, [metrics[labels[c.data.input_size]][c.train.seed]
                                            for c in configs])


GOOD_RUNS = {"P4-224": [_metrics([0.5, 0.4, 0.3, 0.45], 0.03), _metrics([0.5] * 4, 0.02)],
             "P4-225": [_metrics([0.5] * 4, 2e-7), _metrics([0.25] * 4, 3e-5)]}


@pytest.mark.parametrize("runs, exact, expected", [
    (GOOD_RUNS, EXACT, [
        "P4-224  (approximate): logit invariance error above 1e-04",
        "P4-225  (exact): logit invariance error below 1e-04, the same top-1 at every "
        "quarter turn"]),
    # an approximate model's error is only reported, on either side of the bound
    ({**GOOD_RUNS, "P4-224": [_metrics([0.5] * 4, 1e-6)] * 2}, EXACT, [
        "P4-224  (approximate): logit invariance error below 1e-04",
        "P4-225  (exact): logit invariance error below 1e-04, the same top-1 at every "
        "quarter turn"]),
    (GOOD_RUNS, {"P4-224": None, "P4-225": False}, [
        "P4-224  (not equivariant): logit invariance error above 1e-04",
        "P4-225  (approximate): logit invariance error below 1e-04"]),
])
def test_assert_exact_runs_passes(shards, runs, exact, expected):
    table = _runs(shards, runs)
    assert imagenet.assert_exact_runs(table, exact, 2).splitlines() == expected


@pytest.mark.parametrize("runs, processes, message", [
    (GOOD_RUNS, 1, "^a run was not trained with 1 processes$"),
    ({**GOOD_RUNS, "P4-224": [_metrics([0.5] * 4, 0.03, processes=1)] * 2}, 2,
     "^a run was not trained with 2 processes$"),
    ({**GOOD_RUNS, "P4-225": [_metrics([0.5] * 4, 2e-7), _metrics([0.5] * 4, 1e-4)]}, 2,
     "^P4-225 is exact but its logits change by 0.0001 under quarter turns$"),
    ({**GOOD_RUNS, "P4-225": [_metrics([0.5] * 4, 0.2), _metrics([0.5] * 4, 1e-7)]}, 2,
     "^P4-225 is exact but its logits change by 0.2 under quarter turns$"),
    ({**GOOD_RUNS, "P4-225": [_metrics([0.5] * 4, 2e-7), _metrics([0.5, 0.5, 0.5, 0.501], 2e-7)]},
     2, "^P4-225 is exact but its quarter-turn top-1 differ$"),
])
def test_assert_exact_runs_refuses(shards, runs, processes, message):
    with pytest.raises(AssertionError, match=message):
        imagenet.assert_exact_runs(_runs(shards, runs), EXACT, processes)
