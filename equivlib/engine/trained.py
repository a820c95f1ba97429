"""Deprecated alias of :mod:`equivlib.engine.restore` (rebuilding a trained model from its
checkpoint and predicting with it); the alias goes in equivlib 0.2."""

from equivlib._deprecation import moved_names

__getattr__ = moved_names(__name__, dict.fromkeys(("predict_test_set", "rebuild_tested_model"),
                                                  "equivlib.engine.restore"))
