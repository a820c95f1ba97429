"""DataLoaders of the engine (``equivlib.data.loaders``) and the in-memory ``ArrayDataset``:
augmented images are a pure function of (seed, epoch, index), whatever the workers, the
number of DDP processes or a resume."""

import numpy as np
import pytest
import torch

from equivlib.data.base import ArrayDataset
from equivlib.data.loaders import (
    ShardSampler,
    TransformedDataset,
    eval_loader,
    sample_seed,
    set_epoch,
    train_loader,
)
from equivlib.data.transforms import rotate, to_float, train_transform, uniform_angles
from equivlib.data.transforms import test_transform as eval_transform  # not a pytest test

pytestmark = pytest.mark.usefixtures("single_thread")

N = 40  # CIFAR-like images


def _arrays(n: int = N, seed: int = 0, shape=(32, 32, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return images, np.arange(n)  # labels: unique ids


def _cifar_like(n: int = N, seed: int = 0, transform=None, data_seed: int = 5):
    images, labels = _arrays(n, seed)
    return TransformedDataset(ArrayDataset(images, labels),
                              transform or train_transform("cifar", 33), seed=data_seed)


def _epoch(loader, epoch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    set_epoch(loader, epoch)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    return xs, ys


# ------------------------------------------------------------------ sample_seed
def test_sample_seed_no_collisions_and_63_bits():
    seeds = {sample_seed(s, e, i) for s in range(10) for e in range(10) for i in range(100)}
    assert len(seeds) == 10 * 10 * 100
    assert all(0 <= v < 2**63 for v in seeds)
    assert max(seeds) > 2**62  # uses the high bits (well mixed), not small numbers


def test_sample_seed_is_a_function_and_order_matters():
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    triples = [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]
    assert len({sample_seed(*t) for t in triples}) == len(triples)
    big = sample_seed(2**40, 10**6, 10**9)
    assert 0 <= big < 2**63
    torch.Generator().manual_seed(big)  # a valid torch seed


# ------------------------------------------------------------------ TransformedDataset
def test_transformed_dataset_uses_seed_epoch_index():
    ds = _cifar_like()
    assert ds.transform.random
    x0, y0 = ds[3]
    assert y0 == 3 and x0.shape == (3, 33, 33) and x0.dtype == torch.float32
    assert torch.equal(ds[3][0], x0)  # same (seed, epoch, index): same image
    gen = torch.Generator().manual_seed(sample_seed(5, 0, 3))
    assert torch.equal(ds.transform(ds.base[3][0], gen), x0)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x0)
    ds.set_epoch(0)
    assert torch.equal(ds[3][0], x0)
    other_seed = _cifar_like(data_seed=6)
    assert not all(torch.equal(other_seed[i][0], ds[i][0]) for i in range(5))


def test_transformed_dataset_deterministic_transform_ignores_epoch():
    ds = _cifar_like(transform=eval_transform("cifar", 32))
    x = ds[7][0]
    assert torch.equal(x, to_float(ds.base[7][0]))
    ds.set_epoch(3)
    assert torch.equal(ds[7][0], x)


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_images_independent_of_workers_and_differ_between_epochs(workers):
    ref = train_loader(_cifar_like(), batch_size=8, seed=1, workers=0)
    loader = train_loader(_cifar_like(), batch_size=8, seed=1, workers=workers)
    epochs = {}
    for e in (0, 1):
        xs, ys = _epoch(loader, e)
        rx, ry = _epoch(ref, e)
        assert len(xs) == N // 8
        assert all(torch.equal(a, b) for a, b in zip(xs, rx, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(ys, ry, strict=True))
        epochs[e] = (torch.cat(xs), torch.cat(ys))
    (x0, y0), (x1, y1) = epochs[0], epochs[1]
    assert sorted(y0.tolist()) == list(range(N)) == sorted(y1.tolist())  # a permutation
    assert not torch.equal(y0, y1)  # the order changes with the epoch ...
    by_label0, by_label1 = x0[y0.argsort()], x1[y1.argsort()]
    assert not any(torch.equal(by_label0[i], by_label1[i]) for i in range(N))  # ... and the crops


def test_rebuilt_loader_resumes_at_any_epoch():
    loader = train_loader(_cifar_like(), batch_size=8, seed=2)
    run = [_epoch(loader, e) for e in range(3)]
    resumed = train_loader(_cifar_like(), batch_size=8, seed=2)  # a fresh process
    xs, ys = _epoch(resumed, 2)
    assert all(torch.equal(a, b) for a, b in zip(xs, run[2][0], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ys, run[2][1], strict=True))
    # the run seed matters
    other = train_loader(_cifar_like(), batch_size=8, seed=3)
    assert not torch.equal(torch.cat(_epoch(other, 2)[1]), torch.cat(ys))


def test_eval_of_train_dataset_same_images_in_loader_order():
    """The images served by the loader are ds[label] of that epoch (index -> seed)."""
    ds = _cifar_like()
    loader = train_loader(ds, batch_size=8, seed=0)
    xs, ys = _epoch(loader, 4)
    ds.set_epoch(4)
    for x, y in zip(torch.cat(xs), torch.cat(ys), strict=True):
        assert torch.equal(x, ds[int(y)][0])


# ------------------------------------------------------------------ DDP sharding
@pytest.mark.parametrize("seed", [0, 9])
@pytest.mark.parametrize("global_batch", [8, 20])
def test_ranks_batches_union_is_single_process_batch(seed, global_batch):
    single = train_loader(_cifar_like(), batch_size=global_batch, seed=seed)
    ranks = [train_loader(_cifar_like(), batch_size=global_batch, seed=seed, rank=r,
                          world_size=2) for r in (0, 1)]
    assert all(r.batch_size == global_batch // 2 for r in ranks)
    for epoch in (0, 3):
        sx, sy = _epoch(single, epoch)
        parts = [_epoch(r, epoch) for r in ranks]
        assert len(sy) == N // global_batch
        assert all(len(p[1]) == len(sy) for p in parts)
        for t in range(len(sy)):
            labels = [p[1][t] for p in parts]
            assert all(len(lab) == global_batch // 2 for lab in labels)
            union = torch.cat(labels)
            assert len(set(union.tolist())) == global_batch  # disjoint halves
            assert set(union.tolist()) == set(sy[t].tolist())
            images = dict(zip(sy[t].tolist(), sx[t], strict=True))
            for p, lab in zip(parts, labels, strict=True):
                for x, y in zip(p[0][t], lab.tolist(), strict=True):
                    assert torch.equal(x, images[y])


@pytest.mark.parametrize(("batch", "world"), [(9, 2), (10, 4), (7, 3)])
def test_train_loader_global_batch_not_divisible(batch, world):
    with pytest.raises(ValueError, match=str(batch)):
        train_loader(_cifar_like(), batch_size=batch, seed=0, rank=0, world_size=world)


@pytest.mark.parametrize("n", [40, 41, 7])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_loader_covers_each_index_once(n, world):
    images, labels = _arrays(n, shape=(8, 8, 3))
    ds = TransformedDataset(ArrayDataset(images, labels), eval_transform("cifar", 8))
    seen = []
    for rank in range(world):
        loader = eval_loader(ds, batch_size=4, rank=rank, world_size=world)
        ys = [int(y) for _, yb in loader for y in yb]
        assert ys == sorted(ys)  # in order
        assert ys == list(range(rank, n, world))
        assert len(loader.sampler) == len(ys)
        seen += ys
    assert sorted(seen) == list(range(n))  # every index once, no padding


def test_shard_sampler():
    assert list(ShardSampler(10, 1, 3)) == [1, 4, 7]
    assert len(ShardSampler(10, 1, 3)) == 3
    assert list(ShardSampler(2, 2, 3)) == [] and len(ShardSampler(2, 2, 3)) == 0


# ------------------------------------------------------------------ uniform regime
def test_uniform_regime_angles_rotate_each_image():
    n = 12
    images, labels = _arrays(n, shape=(28, 28))
    base = ArrayDataset(images, labels, channels=3)
    angles = uniform_angles(n, seed=4)
    t = eval_transform("resize", 28)
    ds = TransformedDataset(base, t, angles=angles)
    plain = TransformedDataset(base, t)
    for i in range(n):
        x, y = ds[i]
        assert y == i
        expected = rotate(to_float(base[i][0])[None], angles[i:i + 1])[0]
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
        assert (x - plain[i][0]).abs().mean() > 0.01  # it did turn
    # through a loader, in batches
    xs = torch.cat([x for x, _ in eval_loader(ds, batch_size=5)])
    raw = torch.stack([to_float(base[i][0]) for i in range(n)])
    torch.testing.assert_close(xs, rotate(raw, angles.float()), atol=1e-5, rtol=0)


def test_uniform_regime_quarter_angles_are_rot90():
    images, labels = _arrays(4, shape=(9, 9, 3))
    base = ArrayDataset(images, labels)
    ds = TransformedDataset(base, eval_transform("resize", 9),
                            angles=torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64))
    for i in range(4):
        torch.testing.assert_close(ds[i][0], torch.rot90(to_float(base[i][0]), i, (-2, -1)),
                                   atol=1e-5, rtol=0)


def test_angles_length_must_match():
    images, labels = _arrays(5, shape=(8, 8, 3))
    with pytest.raises(ValueError, match="4 angles for 5 images"):
        TransformedDataset(ArrayDataset(images, labels), eval_transform("resize", 8),
                           angles=torch.zeros(4))


# ------------------------------------------------------------------ ArrayDataset
def test_array_dataset_items_are_chw_views():
    images, labels = _arrays(6, shape=(5, 7, 3))
    ds = ArrayDataset(images, labels)
    assert len(ds) == 6
    x, y = ds[2]
    assert x.dtype == torch.uint8 and x.shape == (3, 5, 7)
    assert isinstance(y, int) and y == 2
    assert torch.equal(x, torch.from_numpy(images[2]).permute(2, 0, 1))
    assert ds.targets().tolist() == list(range(6))


def test_array_dataset_getitems_equals_getitem():
    images, labels = _arrays(10, shape=(4, 4, 3))
    labels = (labels * 7) % 10
    for ds in (ArrayDataset(images, labels), ArrayDataset(images, labels, indices=[9, 2, 5, 0])):
        items = [3, 0, 1, 3] if len(ds) > 4 else [3, 0, 1, 3, 2]
        batch = ds.__getitems__(items)
        assert len(batch) == len(items)
        for (bx, by), i in zip(batch, items, strict=True):
            x, y = ds[i]
            assert torch.equal(bx, x) and by == y and isinstance(by, int)


def test_array_dataset_subset_indexes_within_subset():
    images, labels = _arrays(10, shape=(4, 4))
    ds = ArrayDataset(images, labels, indices=[9, 8, 7, 6, 5])
    sub = ds.subset([1, 3])  # positions within ds: images 8 and 6
    assert len(sub) == 2
    assert [sub[i][1] for i in range(2)] == [8, 6]
    assert torch.equal(sub[0][0], torch.from_numpy(images[8])[None])
    assert sub.targets().tolist() == [8, 6]
    subsub = sub.subset(np.array([1]))
    assert [subsub[0][1]] == [6] and len(subsub) == 1
    assert ds.targets().tolist() == [9, 8, 7, 6, 5]  # the parent is unchanged


def test_array_dataset_expands_grey_to_channels():
    images, labels = _arrays(3, shape=(6, 6))
    ds = ArrayDataset(images, labels, channels=3)
    x, _ = ds[1]
    assert x.shape == (3, 6, 6)
    for c in range(3):
        assert torch.equal(x[c], torch.from_numpy(images[1]))
    assert ArrayDataset(images, labels)[1][0].shape == (1, 6, 6)
    assert ArrayDataset(images[..., None], labels, channels=1)[1][0].shape == (1, 6, 6)
    assert ds.subset([2])[0][0].shape == (3, 6, 6)


def test_array_dataset_rejects_bad_input():
    images, labels = _arrays(3, shape=(6, 6, 3))
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(images.astype(np.float32), labels)
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(torch.zeros(3, 6, 6, dtype=torch.int64), labels)
    with pytest.raises(ValueError, match=r"\(N, H, W"):
        ArrayDataset(np.zeros((3, 6), dtype=np.uint8), labels)
    with pytest.raises(ValueError, match=r"\(N, H, W"):
        ArrayDataset(np.zeros((3, 2, 6, 6, 3), dtype=np.uint8), labels)
    with pytest.raises(ValueError, match="cannot expand 3 channels to 1"):
        ArrayDataset(images, labels, channels=1)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArrayDataset(images, labels[:2])


class _UnevenShards(torch.utils.data.IterableDataset):
    """20 images; over 2 ranks split unevenly (13 and 7), as TFRecord files can be."""

    def __init__(self, rank: int, world: int = 1) -> None:
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return 20

    def __iter__(self):
        ids = range(20) if self.world == 1 else range(13) if self.rank == 0 else range(13, 20)
        return iter((torch.full((1, 2, 2), float(i)), i) for i in ids)


@pytest.mark.parametrize("world", [1, 2])
def test_iterable_train_loader_gives_every_rank_the_same_steps(world):
    """DDP needs equal step counts: len(dataset) // global batch on every rank; the short
    shard restarts its stream rather than end the epoch early."""
    steps = []
    for rank in range(world):
        loader = train_loader(_UnevenShards(rank, world), 4, seed=0, rank=rank,
                              world_size=world)
        set_epoch(loader, 0)
        batches = list(loader)
        assert len(loader) == len(batches) == 20 // 4
        steps.append(len(batches))
        labels = torch.cat([labels for _, labels in batches]).tolist()
        if world == 1:
            assert labels == list(range(20))
        elif rank == 1:  # 7 images in batches of 2, then the stream restarts
            assert labels == [13, 14, 15, 16, 17, 18, 19, 13, 14]
        else:  # 13 images: 5 steps of 2; the last 3 are not used this epoch
            assert labels == list(range(10))
    assert len(set(steps)) == 1


def test_empty_stream_is_an_error_not_a_hang():
    class Empty(_UnevenShards):
        def __iter__(self):
            return iter(())

    loader = train_loader(Empty(0), 4, seed=0)
    with pytest.raises(RuntimeError, match="stream of this process is empty"):
        list(loader)
