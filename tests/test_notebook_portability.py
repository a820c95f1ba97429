"""Notebook outputs that nbval compares must hold on any machine (docs/design.md §5).

A compared output prints verdicts against thresholds, counts and configurations; numbers
that float rounding or a training trajectory can move go to cells tagged
``nbval-ignore-output`` whose first line says why. ``./run_all.sh --test`` also runs the
notebooks under ``tools/float_perturbation`` (another rounding, same meaning); the tests
below check that this perturbation really changes rounding, so the pass cannot become a
no-op unnoticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PERTURBATION = ROOT / "tools" / "float_perturbation"
IGNORE = "nbval-ignore-output"
REASON = re.compile(rf"^# {IGNORE}: \S.{{10,}}")
# a measured float printed with its digits (1.34e-07, 3.8e-16): its last digits are the
# machine's; thresholds are printed without a mantissa (1e-04) and pass
ROUNDED_FLOAT = re.compile(r"\b\d\.\d+e[-+]?\d+\b")


def code_cells(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def compared_text(cell: dict) -> str:
    """The text nbval compares in ``cell`` (stream and text/plain outputs)."""
    if IGNORE in cell["metadata"].get("tags", []):
        return ""
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        elif "text/plain" in out.get("data", {}) and "image/png" not in out["data"]:
            parts.append("".join(out["data"]["text/plain"]))
    return "".join(parts)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_ignored_cell_says_why(notebook):
    for cell in code_cells(notebook):
        if IGNORE in cell["metadata"].get("tags", []):
            first = "".join(cell["source"]).splitlines()[0]
            assert REASON.match(first), (
                f"{notebook.name}: a cell tagged {IGNORE} must start with "
                f"'# {IGNORE}: <why its output differs between machines>', got {first!r}")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_outputs_hold_no_measured_floats(notebook):
    for i, cell in enumerate(code_cells(notebook)):
        found = ROUNDED_FLOAT.findall(compared_text(cell))
        assert not found, (
            f"{notebook.name}, code cell {i}: compared output holds measured floats {found}; "
            f"print a verdict against a threshold and move the numbers to a cell tagged "
            f"{IGNORE}")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_still_compares_something(notebook):
    compared = [c for c in code_cells(notebook) if compared_text(c).strip()]
    assert len(compared) >= 2, f"{notebook.name}: fewer than 2 compared outputs"


@pytest.mark.parametrize("text, flagged", [
    ("P4-97 stem 1.34e-07", True),
    ("exact: at most 3.8e-16", True),
    ("error below 1e-04 at every depth", False),
    ("loss never below ln 2 = 0.6931", False),
])
def test_the_float_pattern(text, flagged):
    assert bool(ROUNDED_FLOAT.search(text)) == flagged


PROBE = """
import json, torch
torch.manual_seed(0)
conv = torch.nn.Conv2d(8, 16, 3, padding=1)
x = torch.randn(4, 8, 33, 33)
with torch.no_grad():
    y = conv(x)
print(json.dumps({"mkldnn": torch.backends.mkldnn.enabled, "threads": torch.get_num_threads(),
                  "y": y.flatten()[::97].tolist()}))
"""


def _probe(perturbed: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if perturbed:
        env["PYTHONPATH"] = str(PERTURBATION)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_perturbation_changes_rounding_not_meaning():
    plain, perturbed = _probe(False), _probe(True)
    assert perturbed["mkldnn"] is False and perturbed["threads"] == 1
    assert plain["y"] != perturbed["y"], "the perturbation no longer changes float rounding"
    assert max(abs(a - b) for a, b in zip(plain["y"], perturbed["y"], strict=True)) < 1e-5


def test_run_all_runs_the_portability_pass():
    script = (ROOT / "run_all.sh").read_text()
    test_part = script[script.index("# ---- tests"):]
    assert "tools/float_perturbation" in test_part and test_part.count("--nbval ") >= 2
