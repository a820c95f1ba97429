"""Rebuilding a finished run's tested model from its checkpoint: its predictions reproduce
the accuracies the run stored, and a missing, foreign or unfinished checkpoint is refused."""

import pytest
import torch

from equivlib.engine.checkpoint import load_checkpoint
from equivlib.engine.restore import predict_test_set, rebuild_tested_model
from equivlib.engine.run import StopTraining, run
from equivlib.experiments.rotmnist import rotmnist_config

SMALL = dict(epochs=3, batch_size=32, sizes=(160, 64, 96), angles=[0.0, 90.0, 30.0],
             channels=4, dropout=0.0, lr=0.01)


@pytest.fixture(autouse=True)
def _env(monkeypatch, single_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("EQUIVLIB_PROGRESS", "0")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished runs (P4 at 29, Z2 at 28) with their checkpoints and stored metrics."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("EQUIVLIB_PROGRESS", "0")
        runs = {}
        for model, size in (("p4_mnist_cnn", 29), ("z2_mnist_cnn", 28)):
            config = rotmnist_config(model, size, seed=1, **SMALL)
            directory = root / config.key()
            metrics = run(config, checkpoint_dir=directory, results_dir=root / "results")
            runs[model] = (config, directory, metrics)
    return runs


@pytest.mark.parametrize("model", ["p4_mnist_cnn", "z2_mnist_cnn"])
@pytest.mark.parametrize("angle", [0.0, 90.0, 30.0])
def test_predictions_reproduce_the_stored_accuracy(finished, model, angle):
    config, directory, metrics = finished[model]
    targets, predicted = predict_test_set(config, directory, angle=angle)
    assert len(targets) == 96
    correct = int((targets == predicted).sum())
    assert correct == round(metrics["test_acc"][str(angle)] * 96)


def test_the_tested_model_has_the_best_valid_weights(finished):
    config, directory, _ = finished["p4_mnist_cnn"]
    ck = load_checkpoint(directory / "last.pt")
    model = rebuild_tested_model(config, directory, num_classes=10)
    assert not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, ck["best_model"][name]), name


def test_a_missing_checkpoint_is_one_clear_error(finished, tmp_path):
    config, _, _ = finished["p4_mnist_cnn"]
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*train the run first"):
        predict_test_set(config, tmp_path / "nothing")


def test_a_checkpoint_of_another_run_is_refused(finished):
    config, _, _ = finished["p4_mnist_cnn"]
    _, other, _ = finished["z2_mnist_cnn"]
    with pytest.raises(ValueError, match=f"belongs to run .*, not {config.key()}"):
        rebuild_tested_model(config, other, num_classes=10)


def test_an_unfinished_run_is_refused(tmp_path):
    config = rotmnist_config("z2_mnist_cnn", 28, seed=2, **SMALL)
    with pytest.raises(StopTraining):
        run(config, checkpoint_dir=tmp_path, stop_after_epoch=1)
    with pytest.raises(ValueError, match="stopped after epoch 1 of 3"):
        rebuild_tested_model(config, tmp_path, num_classes=10)


@pytest.mark.parametrize("name", ["predict_test_set", "rebuild_tested_model"])
def test_the_old_module_path_still_works_and_warns(name):
    import equivlib.engine.restore as restore
    import equivlib.engine.trained as trained

    with pytest.warns(DeprecationWarning, match=rf"^equivlib\.engine\.trained\.{name} moved to "
                      rf"equivlib\.engine\.restore\.{name}; the alias goes in equivlib 0\.2$"):
        assert getattr(trained, name) is getattr(restore, name)
    with pytest.raises(AttributeError):
        trained.no_such_name  # noqa: B018
