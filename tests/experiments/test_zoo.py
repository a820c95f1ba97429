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
