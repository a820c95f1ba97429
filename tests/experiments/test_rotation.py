"""The shared rotation analysis: run labels, the one Welch helper, the deprecated aliases
of the names that moved out of rotmnist."""

import warnings

import numpy as np
import pytest

from equivlib.experiments import rotation
from equivlib.experiments.classification import Variant, classification_config
from equivlib.experiments.imagenet import imagenet_config
from equivlib.experiments.pcam import pcam_config
from equivlib.experiments.rotation import ModelSpec, RegimeSpec, grid_label, run_label, welch
from equivlib.experiments.rotmnist import rotmnist_config


@pytest.mark.parametrize("config, label", [
    (rotmnist_config("p4_mnist_cnn", 27), "P4-27"),
    (rotmnist_config("z2_mnist_cnn", 28), "Z2-28"),
    (pcam_config("pcam_stand_in", "p4", 97, depth=20), "P4-97"),
    (imagenet_config("p4", 225, width=2), "P4-225"),
    (imagenet_config("p4", 224, width=2, coset_pool=False), "P4 no pool-224"),
    (classification_config("mnist", Variant("p4", coset_pool=False), 33, depth=20),
     "P4 no pool-33"),
    (classification_config("mnist", Variant("z2", coset_pool=False), 32, depth=20), "Z2-32"),
])
def test_run_label_is_the_model_at_its_size(config, label):
    assert run_label(config) == run_label(config.to_dict()) == label
    assert ModelSpec.of(config).label == label


def test_grid_label_pads_model_and_regime_as_the_cli_prints_them():
    config = rotmnist_config("p4_mnist_cnn", 27, regime="biased", sigma=20.0)
    assert grid_label(config) == "P4-27  biased σ=20°  "
    assert RegimeSpec.of(rotmnist_config(regime="none", sigma=5.0)) == RegimeSpec("none")


@pytest.mark.parametrize("a, b, finite", [
    ([0.5, 0.6, 0.7], [0.5, 0.5, 0.5], True),   # one side constant: defined
    ([0.5, 0.5], [0.4, 0.4], False),            # both constant: undefined, not ±inf
    ([0.5], [0.4, 0.3], False),                 # one seed: undefined
])
def test_welch_is_nan_where_undefined(a, b, finite):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, p = welch(np.array(a), np.array(b))
    assert np.isfinite(p) == finite and np.isfinite(t) == finite


@pytest.mark.parametrize("module, old, new", [
    ("rotmnist", "ModelSpec", "ModelSpec"),
    ("rotmnist", "RunLog", "RunLog"),
    ("rotmnist", "welch_tests", "welch_tests"),
    ("rotmnist", "plot_accuracy_vs_rotation", "plot_accuracy_vs_rotation"),
    ("rotmnist", "check_exact_quarter_turns", "assert_exact_quarter_turns"),
])
def test_moved_names_stay_importable_from_rotmnist_with_a_warning(module, old, new):
    import importlib

    mod = importlib.import_module(f"equivlib.experiments.{module}")
    with pytest.warns(DeprecationWarning, match=f"{old} moved to .*rotation.{new}.*0.2"):
        value = getattr(mod, old)
    assert value is getattr(rotation, new)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_run_labels_alias():
    config = rotmnist_config("p4_mnist_cnn", 27, regime="uniform")
    from equivlib.experiments import rotmnist
    with pytest.warns(DeprecationWarning, match="run_label"):
        assert rotmnist.run_labels(config) == ("P4-27", "uniform")


@pytest.mark.parametrize("module, old, new", [
    ("classification", "check_invariant_runs", "assert_invariant_runs"),
    ("imagenet", "check_exact_runs", "assert_exact_runs"),
    ("equivariance_error", "check_tracer", "assert_tracer_agrees"),
    ("equivariance_error", "training_check", "assert_losses_finite"),
    ("unequivariance", "check_claim", "assert_claim_c4"),
])
def test_renamed_assertions_keep_a_deprecated_alias(module, old, new, monkeypatch):
    import importlib

    mod = importlib.import_module(f"equivlib.experiments.{module}")
    called = []
    monkeypatch.setattr(mod, new, lambda *args: called.append(args) or "ok")
    with pytest.warns(DeprecationWarning, match=f"{old} was renamed {new}"):
        assert getattr(mod, old)(*range(mod.__dict__[old].__code__.co_argcount)) == "ok"
    assert len(called) == 1


def test_protocols_is_a_deprecated_alias_of_recipes():
    import importlib
    import sys

    from equivlib.experiments import recipes

    sys.modules.pop("equivlib.experiments.protocols", None)
    with pytest.warns(DeprecationWarning, match="protocols moved to .*recipes"):
        protocols = importlib.import_module("equivlib.experiments.protocols")
    assert protocols.paper_config is recipes.paper_config
    assert protocols.PAPER_PROTOCOLS is recipes.PAPER_RECIPES
    with pytest.warns(DeprecationWarning, match="PAPER_RECIPES"):
        assert recipes.PAPER_PROTOCOLS is recipes.PAPER_RECIPES


def test_the_rotmnist_recipe_stands_in_one_place():
    from equivlib.experiments.recipes import PAPER_RECIPES, ROTMNIST

    config = rotmnist_config()
    assert (config.train.epochs, config.train.batch_size) == (ROTMNIST.epochs,
                                                                ROTMNIST.batch_size)
    assert (config.optim.lr, config.optim.weight_decay) == (ROTMNIST.lr, ROTMNIST.weight_decay)
    assert config.schedule.kwargs["step_size"] == ROTMNIST.lr_step
    assert config.model.kwargs["dropout"] == ROTMNIST.dropout
    assert tuple(config.data.options["sizes"]) == ROTMNIST.sizes
    assert PAPER_RECIPES["mnist"]["train"]["epochs"] == ROTMNIST.epochs
