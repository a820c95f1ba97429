"""The model-zoo table (notebook 09): verdicts per torchvision model and size from meta-device
traces, models that refuse a size or compute while building, and the tracer checked against
grid-only cells (positional embeddings, flattening heads); the measurements are in
test_zoo_measure.py."""

from __future__ import annotations

import pytest

from equivlib.cli import main
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
    ("alexnet", 223, "exact", "classifier.1"), ("alexnet", 224, "not exact", "features.0"),
    ("vit_b_16", 224, "exact", "encoder"), ("vit_b_16", 225, "n/a", ""),
])
def test_trace_cell(name, size, verdict, layer):
    cell = zoo.trace_cell(zoo.build_on_meta(name), size)
    assert (cell["verdict"], cell["layer"]) == (verdict, layer)


@pytest.mark.parametrize("name, size, grid_only, note", [
    ("vit_b_16", 224, True, "grid only: pos embedding"),
    ("alexnet", 223, True, "grid only: flatten head"),
    ("vgg11", 224, True, "grid only: flatten head"),
    ("resnet18", 225, False, ""), ("convnext_tiny", 224, False, ""),
    ("alexnet", 224, False, "conv2d k=(11, 11) s=(4, 4) p=(2, 2) at 224"),  # not exact
])
def test_grid_only_cells(name, size, grid_only, note):
    cell = zoo.trace_cell(zoo.build_on_meta(name), size)
    assert (cell["grid_only"], cell["note"]) == (grid_only, note)


@pytest.mark.parametrize("name, size, reason", [
    ("vit_b_16", 225, "VisionTransformer refuses input 225x225 (meta-device forward): Wrong "
                      "image height! Expected 224 but got 225!"),
    ("maxvit_t", 256, "MaxVit refuses input 256x256 (meta-device forward): shape '[1, 64, 9, "
                      "7, 9, 7]' is invalid for input of size 262144"),
])
def test_refused_sizes_give_the_models_own_reason(name, size, reason):
    assert zoo.trace_cell(zoo.build_on_meta(name), size) == {
        "verdict": "n/a", "grid_only": False, "layer": "", "note": reason[:160]}


def test_categories_tell_grid_only_cells_apart():
    cells, _ = zoo.zoo_table(["alexnet", "resnet18"], [223, 225])
    where = zip(cells.model, cells["size"], strict=True)
    assert dict(zip(where, zoo.categories(cells), strict=True)) == {
        ("alexnet", 223): zoo.GRID_ONLY, ("alexnet", 225): "not exact",
        ("resnet18", 223): "not exact", ("resnet18", 225): "exact"}
    assert zoo.format_wide(cells).splitlines()[1:] == ["alexnet     G   .", "resnet18    .   E"]


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


def test_zoo_command(capsys):
    assert main(["zoo", "resnet18", "convnext_tiny", "p4_resnet44", "--sizes", "224-225"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows == {"convnext_tiny": ["E", "."], "p4_resnet44": [".", "E"],
                    "resnet18": [".", "E"]}
    assert main(["zoo", "nope:thing"]) == 2
    assert main(["zoo", "resnet18", "--sizes", "x"]) == 2


@pytest.mark.parametrize("name, nearest, searched", [
    ("resnet18", 225, 0), ("squeezenet1_1", 223, 0), ("densenet121", 221, 0),
    ("googlenet", 237, 13),  # 219-212 below and 233-237 above (237 is found first)
    ("swin_v2_t", 256, 51),  # 193-219 below and 233-256 above (256 before 192)
])
def test_nearest_size_search_reuses_the_traced_cells(monkeypatch, name, nearest, searched):
    """model_rows traces each size once: the search for the nearest exact size starts from
    the table's verdicts and traces only sizes outside it. It finds the same size as a search
    on its own, and one pixel above that size is not exact."""
    import equivlib.tracer as tracer

    calls: list[int] = []
    real = tracer.trace

    def counting(model, size, *args, **kwargs):
        calls.append(size)
        return real(model, size, *args, **kwargs)

    monkeypatch.setattr(tracer, "trace", counting)
    monkeypatch.setattr(zoo, "trace", counting)
    sizes = list(range(220, 233))
    cells, row = zoo.model_rows(name, sizes)
    assert row["nearest"] == nearest
    assert calls[:len(sizes)] == sizes and len(calls) == len(sizes) + searched
    assert not set(calls[len(sizes):]) & set(sizes)
    model = zoo.build_on_meta(name)
    assert tracer.nearest_exact_size(model, 224, max_distance=32) == nearest
    assert zoo.trace_cell(model, nearest)["verdict"] == "exact"
    assert zoo.trace_cell(model, nearest + 1)["verdict"] == "not exact"
