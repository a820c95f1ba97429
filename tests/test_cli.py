"""python -m equivlib check: trace, nearest exact sizes, measured per-layer errors."""

import re

import pytest

from equivlib.cli import main


def _measured(out: str, module: str) -> float:
    table = out.split("2. measured equivariance error")[1]
    found = re.search(rf"^  {re.escape(module)} +\S+ +\S+ +(\S+)", table, re.M)
    assert found, table
    return float(found.group(1))


def test_check_torchvision_model_at_an_inexact_size(capsys):
    assert main(["check", "torchvision.models:resnet18", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "torchvision.models:resnet18 at input 64x64"
    assert "1. sampling grids (architecture only, no weights involved): NOT symmetric" in out
    assert "nearest input sizes with symmetric grids: below 33, above 65" in out
    assert _measured(out, "conv1") > 1e-3
    assert "result: NOT equivariant (max error" in out


def test_check_separates_symmetric_grids_from_measured_weights(capsys):
    """resnet18 at 225: the grids are symmetric, the (ordinary) weights are not equivariant;
    the output says which statement is about what and never prints a bare EXACT."""
    assert main(["check", "torchvision.models:resnet18", "--size", "225", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "EXACT" not in out
    grids, measured = out.split("2. measured equivariance error of these weights under P4")
    assert "sampling grids (architecture only, no weights involved): symmetric" in grids
    assert _measured(out, "conv1") > 0.1
    result = " ".join(measured.split("result:")[1].split())
    assert result.startswith("NOT equivariant") and "although the grids are symmetric" in result


def test_check_an_exact_group_model(capsys):
    assert main(["check", "p4_single_layer", "--size", "9"]) == 0
    out = capsys.readouterr().out
    assert "grids (architecture only, no weights involved): symmetric" in out
    assert _measured(out, "output") < 1e-12
    assert "result: equivariant up to float rounding" in out


def test_check_without_measurement(capsys):
    assert main(["check", "torchvision.models:resnet18", "--size", "65", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "no weights involved): symmetric" in out
    assert "2. measured equivariance error: skipped (--no-measure)" in out
    assert "result:" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "no_such_model", "--size", "32"], "unknown model 'no_such_model'"),
        (["check", "torchvision.models:nope", "--size", "32"], "cannot import"),
        (["check", "torchvision.models:resnet18", "--size", "0"], "--size must be positive"),
        (["check", "torchvision.models:resnet18", "--size", "32", "--group", "so3"],
         "unknown group"),
    ],
)
def test_bad_input_gives_one_clear_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m equivlib check: error:") and re.search(message, err, re.I)
