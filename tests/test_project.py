"""The companion's plumbing: profiles, notebook conventions, the rebuild driver, pins."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.fakes import write_notebook
from tools import run_notebooks

ROOT = Path(__file__).resolve().parent.parent


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILES = sorted((ROOT / "params").glob("*.yaml"))


def parameters_of(notebook: Path) -> dict[str, str]:
    """Names and default source of the notebook's tagged parameters cell."""
    nb = json.loads(notebook.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "parameters" in first["metadata"].get("tags", []), f"{notebook.name}: untagged"
    tree = ast.parse("".join(first["source"]))
    return {
        node.target.id: ast.unparse(node.value)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def test_there_are_notebooks_and_profiles():
    assert NOTEBOOKS, "no notebooks found"
    assert {p.stem for p in PROFILES} == {"smoke", "cpu", "paper"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(notebook):
    params = parameters_of(notebook)
    assert params.get("profile") == "'smoke'", "committed defaults must be the smoke profile"
    assert "build" in params.get("out_dir", ""), "default out_dir must point into build/"
    source = json.loads(notebook.read_text())
    first = next(c for c in source["cells"] if c["cell_type"] == "code")
    for line in "".join(first["source"]).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^\w+: \w+ = .+  # .+", line), f"untyped or uncommented: {line!r}"
    assert any(c.get("outputs") for c in source["cells"] if c["cell_type"] == "code"), \
        "no stored outputs: nbval would compare nothing"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profiles_name_real_notebooks_and_parameters(profile):
    settings = yaml.safe_load(profile.read_text()) or {}
    by_stem = {nb.stem: nb for nb in NOTEBOOKS}
    for stem, params in settings.items():
        assert stem in by_stem, f"{profile.name}: no notebook {stem}.ipynb"
        known = parameters_of(by_stem[stem])
        unknown = set(params or {}) - set(known)
        assert not unknown, f"{profile.name}/{stem}: unknown parameters {sorted(unknown)}"


def test_requirements_are_pinned_exactly():
    """The direct pins; requirements.lock and environment.yml: tests/test_environment_lock.py."""
    pins = {
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    }
    assert all("==" in pin for pin in pins), "every requirement must be pinned exactly"


def test_unknown_profile_is_a_usage_error():
    with pytest.raises(run_notebooks.UsageError, match="unknown profile 'fast'.*smoke"):
        run_notebooks.plan("fast", None)


def test_unknown_notebook_number_is_a_usage_error():
    with pytest.raises(run_notebooks.UsageError, match="unknown notebook number.*99.*01"):
        run_notebooks.plan("smoke", "01,99")


def test_plan_injects_profile_and_keeps_order():
    jobs = run_notebooks.plan("cpu", "1")
    assert [j.number for j in jobs] == ["01"]
    assert jobs[0].parameters["profile"] == "cpu"


def test_failing_notebook_keeps_old_figures_and_others_still_run(tmp_path, capsys):
    """A notebook that raises is reported, its old figure survives, the next one still runs."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("{}\n")
    write = "from pathlib import Path\nPath(out_dir, '{name}.csv').write_text('{text}')\n"
    write_notebook(tmp_path / "notebooks" / "01_broken.ipynb",
                    write.format(name="01_broken", text="half") + "raise RuntimeError('boom')")
    write_notebook(tmp_path / "notebooks" / "02_fine.ipynb",
                    write.format(name="02_fine", text="new"))
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "01_broken.csv").write_text("good old result")

    jobs = run_notebooks.plan("smoke", None, root=tmp_path)
    failed = run_notebooks.rebuild(jobs, "smoke", tmp_path, figures)

    out = capsys.readouterr().out
    assert failed == ["01_broken.ipynb"]
    assert re.search(r"01_broken\.ipynb .* FAILED .*boom", out)
    assert re.search(r"02_fine\.ipynb .* ok", out)
    assert (figures / "01_broken.csv").read_text() == "good old result"
    assert (figures / "02_fine.csv").read_text() == "new"


def test_smoke_figures_never_replace_the_committed_ones():
    assert run_notebooks.figures_dir("smoke") == ROOT / "build" / "smoke" / "figures"
    assert run_notebooks.figures_dir("cpu") == ROOT / "figures"
    assert run_notebooks.figures_dir("paper") == ROOT / "figures"
