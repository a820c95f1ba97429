"""The registry of notebook grids: one line per notebook, the same configs as the
experiment modules build, parameters taken by name from a namespace."""

import pytest

from equivlib.experiments import classification, grids, imagenet, pcam, rotmnist
from equivlib.experiments.rotation import NotebookGrid

ROTMNIST = dict(models="p4_mnist_cnn@28,z2_mnist_cnn@28", regimes="none", seeds=1, epochs=1,
                batch_size=32, lr=0.01, weight_decay=1e-5, lr_step=10, dropout=0.0,
                sizes="64,32,32", angle_step=90.0, source="embedded")
PCAM = dict(dataset="pcam_stand_in", models="z2,p4", sizes="96,97", seeds=1, depth=20,
            epochs=1, batch_size=8, lr=0.01, angle_step=90.0, error_images=4,
            stand_in_sizes="16,8,8")
CLASSIFICATION = dict(datasets="mnist", models="z2,p4:nopool", sizes="32,33",
                      augment="none", fractions="1.0", seeds=1, widths="z2:4,p4:2,p4m:2",
                      depth=20, flips=False, epochs=1, batch_size=16, lr=0.003,
                      stand_in_sizes="64,10,32")
IMAGENET = dict(models="z2,p4", sizes="224,225", width=2, coset_pool=True, seeds=1, epochs=1,
                batch_per_gpu=4, gpus_per_run=2, lr=0.0, error_images=4, stand_in=True,
                stand_in_dir="unused", stand_in_images="8,2", device="cpu")


def test_names():
    assert grids.grid_names() == ["04_rotmnist_rotation", "05_rotmnist_statistics",
                                  "06_classification", "07_pcam", "08_imagenet"]


@pytest.mark.parametrize("name, params, configs", [
    ("04_rotmnist_rotation", ROTMNIST, rotmnist.configs_from_params),
    ("05_rotmnist_statistics", ROTMNIST, rotmnist.configs_from_params),
    ("06_classification", CLASSIFICATION, classification.configs_from_params),
    ("07_pcam", PCAM, pcam.configs_from_params),
])
def test_the_grid_has_the_configs_of_its_experiment(name, params, configs):
    namespace = {**params, "profile": "smoke", "out_dir": "x", "unrelated": object()}
    grid = grids.notebook_grid(name, namespace)
    assert isinstance(grid, NotebookGrid)
    assert [c.key() for c in grid.configs] == [c.key() for c in configs(params)]
    assert grid.description and grid.stand_in


def test_imagenet_grid_without_writing_data(tmp_path):
    params = {**IMAGENET, "stand_in_dir": str(tmp_path / "shards")}
    grid = grids.notebook_grid("08_imagenet", params, write_data=False)
    manifest = imagenet.stand_in_manifest(params, write=False)
    assert [c.key() for c in grid.configs] == \
        [c.key() for c in imagenet.configs_from_params(params, manifest)]
    assert grid.data_dir == params["stand_in_dir"] and not (tmp_path / "shards").exists()
    assert grid.description.splitlines()[0].startswith("stand-in: 80 training and 20 ")
    assert [m.label for m in grid.models] == ["Z2-224", "Z2-225", "P4-224", "P4-225"]
    real = grids.notebook_grid("08_imagenet", {**params, "stand_in": False}, write_data=False)
    assert real.data_dir is None and real.stand_in == ""


def test_labels_are_the_cli_lines():
    grid = grids.notebook_grid("06_classification", CLASSIFICATION)
    assert grid.label(grid.configs[2]) == \
        "P4 no pool   32 mnist      augment none    64 images"
    pcam_grid = grids.notebook_grid("07_pcam", PCAM)
    assert pcam_grid.label(pcam_grid.configs[-1]) == "P4-97  none          "


def test_unknown_name_and_missing_parameter_fail_first():
    with pytest.raises(ValueError, match="no grid for notebook '09_model_zoo'; known: 04_"):
        grids.notebook_grid("09_model_zoo", {})
    with pytest.raises(ValueError, match=r"needs the parameter\(s\) \['source'\]"):
        grids.notebook_grid("04_rotmnist_rotation",
                            {k: v for k, v in ROTMNIST.items() if k != "source"})
    assert grids.grid_parameters("07_pcam") == pcam.PARAMETERS
