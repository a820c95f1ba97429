"""The model-zoo table (notebook 09): verdicts per torchvision model and size from meta-device
traces, models that refuse a size or compute while building, and the tracer checked against
a measurement with D4-symmetric weights (paired: the exact size at rounding, one off not)."""

from __future__ import annotations

import pytest
import torch

from equivlib.__main__ import main
from equivlib.experiments import zoo


@pytest.mark.parametrize("name, fam", [("resnet50", "resnet"), ("wide_resnet50_2", "wide_resnet"),
                                       ("efficientnet_v2_s", "efficientnet"),
                                       ("regnet_y_400mf", "regnet"), ("p4_resnet44", "resnet")])
def test_family(name, fam):
    assert zoo.family(name) == fam


def test_sizes_parse_ranges_and_refuse_nonsense():
    assert zoo.parse_sizes("220-223, 256") == [220, 221, 222, 223, 256]
    for bad in ("", "a", "0", "224,224", "230-220"):
        with pytest.raises(ValueError, match="sizes"):
            zoo.parse_sizes(bad)


@pytest.mark.parametrize("name, size, verdict, layer", [
    ("resnet18", 224, "not exact", "conv1"), ("resnet18", 225, "exact", ""),
    ("alexnet", 223, "exact", ""), ("alexnet", 224, "not exact", "features.0"),
    ("vit_b_16", 224, "exact", ""), ("vit_b_16", 225, "n/a", ""),
])
def test_trace_cell(name, size, verdict, layer):
    cell = zoo.trace_cell(zoo.build_on_meta(name), size)
    assert (cell["verdict"], cell["layer"]) == (verdict, layer)


def test_a_builder_that_computes_is_built_with_meta_parameters():
    model = zoo.build_on_meta("regnet_x_400mf")  # computes its widths with real tensors
    assert all(p.device.type == "meta" for p in model.parameters())
    assert zoo.trace_cell(model, 225)["verdict"] == "exact"


def test_table_rows_and_nearest_sizes():
    cells, models = zoo.zoo_table(["resnet18", "densenet121"], [224, 225])
    assert len(cells) == 4 and set(cells.verdict) <= set(zoo.VERDICTS)
    assert dict(zip(models.model, models.nearest, strict=True)) == {"resnet18": 225,
                                                                    "densenet121": 221}
    assert zoo.family_summary(cells, 224).loc["resnet", "not exact"] == 1
    assert zoo.breaking_ops(cells, 224).to_dict() == {"conv2d": 2}


def test_unbuildable_model_is_listed_with_its_reason():
    def build(name):
        raise RuntimeError("needs a GPU")

    cells, models = zoo.zoo_table(["mine"], [224], build=build)
    assert cells.empty and not models.built[0] and "needs a GPU" in models.note[0]


def test_symmetrize_makes_kernels_d4_invariant():
    conv = torch.nn.Conv2d(2, 3, 3).double()
    zoo.symmetrize(conv)
    w = conv.weight
    assert torch.allclose(torch.rot90(w, 1, (-2, -1)), w) and torch.allclose(w.flip(-1), w)
    with pytest.raises(ValueError, match="non-square"):
        zoo.symmetrize(torch.nn.Conv2d(1, 1, (1, 3)))


def test_measurement_agrees_with_the_tracer_for_resnet18():
    check = zoo.measured_check(["resnet18"], lambda name: [224, 225]).set_index("size")
    assert check.loc[225, "trace"] == "exact" and check.loc[225, "max_error"] < 1e-10
    assert check.loc[224, "trace"] == "not exact" and check.loc[224, "max_error"] > 1e-3


def test_zoo_command(capsys):
    assert main(["zoo", "resnet18", "convnext_tiny", "p4_resnet44", "--sizes", "224-225"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows == {"convnext_tiny": ["E", "."], "p4_resnet44": [".", "E"],
                    "resnet18": [".", "E"]}
    assert main(["zoo", "nope:thing"]) == 2
    assert main(["zoo", "resnet18", "--sizes", "x"]) == 2


def _check(*rows):
    import pandas as pd

    return pd.DataFrame([dict(zip(("model", "size", "trace", "max_error"), row, strict=True))
                         for row in rows], columns=["model", "size", "trace", "max_error"])


AGREE = [("resnet18", 224, "not exact", 0.03), ("resnet18", 225, "exact", 1e-15),
         ("convnext_tiny", 224, "exact", 0.0), ("convnext_tiny", 225, "not exact", 2e-4)]


@pytest.mark.parametrize("rows, expected", [
    (AGREE, "tracer and measurement agree on 4 model x size pairs: 2 exact (logit change "
            "below 1e-10), 2 not exact (above 1e-04)"),
    (AGREE + [("vit_b_16", 225, "n/a", float("nan")), ("maxvit_t", 224, "unknown", 0.5),
              ("vit_b_16", 226, "n/a", float("nan"))],
     "tracer and measurement agree on 4 model x size pairs: 2 exact (logit change below "
     "1e-10), 2 not exact (above 1e-04); 3 not judged (tracer: n/a, unknown)"),
    (AGREE[1:2], "tracer and measurement agree on 1 model x size pairs: 1 exact (logit change "
                 "below 1e-10), 0 not exact (above 1e-04)"),
])
def test_measured_verdict_agrees(rows, expected):
    assert zoo.measured_verdict(_check(*rows)) == expected


DISAGREE = [
    (("resnet18", 227, "exact", 1e-10), "an exact size shows a measurable error:"),
    (("resnet18", 227, "exact", 0.2), "an exact size shows a measurable error:"),
    (("resnet18", 227, "exact", float("nan")), "an exact size shows a measurable error:"),
    (("resnet18", 227, "not exact", 1e-4), "an inexact size shows no error:"),
    (("resnet18", 227, "not exact", 0.0), "an inexact size shows no error:"),
    (("resnet18", 227, "not exact", float("nan")), "an inexact size shows no error:"),
]


@pytest.mark.parametrize("row, message", DISAGREE)
def test_measured_verdict_refuses_a_disagreement(row, message):
    with pytest.raises(AssertionError, match=f"^{message}\n"):
        zoo.measured_verdict(_check(*AGREE, row))


@pytest.mark.parametrize("row, message", DISAGREE)
def test_measured_verdict_shows_the_offending_row(row, message):
    with pytest.raises(AssertionError) as error:
        zoo.measured_verdict(_check(*AGREE, row))
    shown = str(error.value).splitlines()
    assert shown[0] == message and len(shown) == 3  # a header line and the one row
    assert shown[2].split()[1:3] == ["resnet18", "227"] and f" {row[2]} " in shown[2]


def test_measured_verdict_of_nothing_measured():
    assert zoo.measured_verdict(zoo.measured_check([], lambda name: [224])) == "no model measured"


def test_measured_verdict_of_a_measurement():
    check = zoo.measured_check(["resnet18"], lambda name: [224, 225])
    assert zoo.measured_verdict(check) == (
        "tracer and measurement agree on 2 model x size pairs: 1 exact (logit change below "
        "1e-10), 1 not exact (above 1e-04)")
