"""python -m equivlib check: trace, nearest exact sizes, measured per-layer errors."""

import re

import pytest

from equivlib.__main__ import main


def test_check_torchvision_model_at_an_inexact_size(capsys):
    assert main(["check", "torchvision.models:resnet18", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "torchvision.models:resnet18 at input 64x64: NOT EXACT"
    assert "nearest exact input sizes: below 33, above 65" in out
    table = out.split("measured equivariance error")[1]
    measured = re.search(r"^  conv1 +Conv2d +\S+ +(\S+)", table, re.M)
    assert measured and float(measured.group(1)) > 1e-3


def test_check_without_measurement(capsys):
    assert main(["check", "torchvision.models:resnet18", "--size", "65", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "65x65: EXACT" in out and "measured" not in out


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
    assert err.startswith("python -m equivlib: error:") and re.search(message, err, re.I)
