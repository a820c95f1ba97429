import pytest

from equivlib.experiments import rotmnist

PARAMS = dict(models="p4_mnist_cnn@28,p4_mnist_cnn@27,z2_mnist_cnn@28",
              regimes="none,biased:20", seeds=2, epochs=1, batch_size=32, lr=0.01,
              weight_decay=1e-5, lr_step=10, dropout=0.0, sizes="128,64,48", angle_step=45.0,
              source="embedded")


def test_notebook_grid_is_the_grid_of_the_cli():
    grid = rotmnist.notebook_grid(PARAMS)
    assert [c.to_dict() for c in grid.configs] == \
        [c.to_dict() for c in rotmnist.configs_from_params(PARAMS)]
    assert [m.label for m in grid.models] == ["P4-28", "P4-27", "Z2-28"]
    assert [r.label for r in grid.regimes] == ["none", "biased σ=20°"]
    assert grid.description.splitlines() == [
        "12 runs: 3 models x 2 regimes x 2 seed(s); 1 epoch(s) of 128 images, batch 32; "
        "tested on 48 images at 8 angles",
        "  P4-28 (exact)", "  P4-27 (approximate)", "  Z2-28 (not equivariant)"]


@pytest.mark.parametrize("source, note", [("embedded", rotmnist.STAND_IN_NOTE),
                                          ("torchvision", "")])
def test_stand_in_note_follows_the_source(source, note):
    grid = rotmnist.notebook_grid({**PARAMS, "source": source})
    assert grid.stand_in == note
    assert all(c.data.options["source"] == source for c in grid.configs)


@pytest.mark.parametrize("key, value", [("models", "p4_mnist_cnn@30"), ("regimes", "sideways"),
                                        ("seeds", 0), ("sizes", "128,64")])
def test_bad_parameters_fail_before_any_run(key, value):
    with pytest.raises(ValueError):
        rotmnist.notebook_grid({**PARAMS, key: value})


def test_run_reports_every_run_and_returns_metrics_in_order(monkeypatch, capsys):
    import equivlib.engine.grid

    grid = rotmnist.notebook_grid({**PARAMS, "seeds": 1, "regimes": "none"})
    seen = {}

    def fake_run_grid(configs, results_dir, checkpoint_dir, *, on_done, **kwargs):
        seen.update(kwargs, results_dir=results_dir, checkpoint_dir=checkpoint_dir)
        timing = {"train_images": 10, "train_seconds": 1.0, "test_images": 20,
                  "test_seconds": 1.0}
        out = []
        for i, c in enumerate(configs):
            metrics = {"timing": timing, "test_acc": {"0.0": i / 10}}
            on_done(c.to_dict(), metrics, i == 0)  # the first one reused
            out.append(metrics)
        return out

    monkeypatch.setattr(equivlib.engine.grid, "run_grid", fake_run_grid)
    metrics = grid.run("res", "ckpt", workers=2, threads=1, data_dir="", device="cpu")
    assert [m["test_acc"]["0.0"] for m in metrics] == [0.0, 0.1, 0.2]
    assert seen == {"workers": 2, "threads": 1, "data_dir": None, "device": "cpu",
                    "download": False, "processes_per_run": 1,
                    "results_dir": "res", "checkpoint_dir": "ckpt"}
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[2/3] P4-27  none           seed 0: train 1 s, test 1 s, accuracy at 0° 0.100"
    assert out[2].startswith("2 runs trained, 1 reused from res; wall time ")
    assert out[-1].split() == ["Z2-28", "10.0", "20.0"]
