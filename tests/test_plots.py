"""plots: atomic, byte-reproducible figure and CSV files with ordinary permissions."""

import os
import stat

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from equivlib import plots


def _figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 2])
    plots.stamp(fig, "smoke")
    return fig


def test_same_figure_gives_the_same_bytes(tmp_path):
    plots.save_figure(_figure(), tmp_path / "a", "fig")
    plots.save_figure(_figure(), tmp_path / "b", "fig")
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"fig.{ext}").read_bytes() == \
            (tmp_path / "b" / f"fig.{ext}").read_bytes()


def test_files_get_the_usual_mode_and_no_temp_files_remain(tmp_path):
    umask = os.umask(0o022)
    try:
        paths = plots.save_figure(_figure(), tmp_path, "fig")
        paths.append(plots.save_csv(pd.DataFrame({"x": [0.1234567891]}), tmp_path, "fig"))
    finally:
        os.umask(umask)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.csv", "fig.pdf", "fig.png"]
    assert (tmp_path / "fig.csv").read_text() == "x\n0.123457\n"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    (tmp_path / "fig.csv").write_text("old")

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_csv(Broken({"x": [1]}), tmp_path, "fig")
    assert (tmp_path / "fig.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.csv"]


def test_unknown_profile_in_stamp():
    with pytest.raises(ValueError, match="unknown profile"):
        plots.stamp(_figure(), "fast")
