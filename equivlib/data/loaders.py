"""DataLoaders of the engine: per-sample transforms with their own seeded generator, a
shuffling sampler that is a pure function of (seed, epoch), and sharding over DDP ranks.

Every random number of data loading is drawn from a generator seeded by (run seed, epoch,
sample index), so the images of an epoch are the same with 0 or 4 DataLoader workers, with
1 or 2 DDP processes (given the same global batch), and after a resume at any epoch: the
sampler's position is the epoch number, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from equivlib.data.transforms import Compose, rotate

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (splitmix64 of the triple)."""
    z = (seed * _MIX[0] + epoch * _MIX[1] + index * _MIX[2] + 1) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * _MIX[1]) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * _MIX[2]) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1


class TransformedDataset(Dataset):
    """``base`` with a per-sample transform; random transforms draw from a generator seeded
    by (seed, epoch, index). ``angles`` (degrees, one per sample) rotates each image by a
    fixed angle after the transform (the RotMNIST ``uniform`` regime)."""

    def __init__(self, base: Dataset, transform: Compose, seed: int = 0,
                 angles: torch.Tensor | None = None) -> None:
        if angles is not None and len(angles) != len(base):
            raise ValueError(f"{len(angles)} angles for {len(base)} images")
        self.base, self.transform, self.seed, self.angles = base, transform, seed, angles
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[i]
        gen = None
        if self.transform.random:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
        x = self.transform(image, gen)
        if self.angles is not None:
            x = rotate(x[None], self.angles[i:i + 1].to(x.dtype))[0]
        return x, label


class TransformedIterable(IterableDataset):
    """An iterable (sharded, e.g. TFRecord) dataset with a per-sample transform; the k-th
    sample of a stream draws from a generator seeded by (seed, epoch, stream id, k)."""

    def __init__(self, base: IterableDataset, transform: Compose, seed: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = torch.utils.data.get_worker_info()
        stream = 0 if info is None else info.id
        if hasattr(self.base, "rank_world"):  # survives pickling into spawned workers
            rank = self.base.rank_world()[0]
        else:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        stream += 1000 * rank
        for k, (image, label) in enumerate(self.base):
            gen = None
            if self.transform.random:
                gen = torch.Generator().manual_seed(
                    sample_seed(self.seed, self.epoch, (stream << 40) + k))
            yield self.transform(image, gen), label


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, without padding (evaluation: every image
    counted once over all processes)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _context(dataset: Dataset, workers: int) -> str | None:
    # TensorFlow-backed iterable datasets are not fork-safe once TF ran in the parent
    return "forkserver" if workers and isinstance(dataset, IterableDataset) else None


class FixedSteps:
    """Exactly ``steps`` batches per pass over ``loader`` (a DataLoader of an iterable,
    sharded dataset), restarting the stream if it ends first. DDP needs every process to
    take the same number of steps, and the shards of a sharded stream (TFRecord files per
    rank and worker) hold slightly different numbers of images; a short shard repeats its
    first images to fill the epoch (in the same seeded order)."""

    def __init__(self, loader: DataLoader, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.loader, self.steps = loader, steps
        self.dataset, self.sampler = loader.dataset, None

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        taken = 0
        while taken < self.steps:
            before = taken
            for batch in self.loader:
                yield batch
                taken += 1
                if taken == self.steps:
                    return
            if taken == before:
                raise RuntimeError("the training stream of this process is empty: fewer "
                                   "shards (files) than processes x DataLoader workers?")


def train_loader(dataset: Dataset, batch_size: int, seed: int, *, rank: int = 0,
                 world_size: int = 1, workers: int = 0,
                 pin_memory: bool = False) -> DataLoader | FixedSteps:
    """Shuffled batches of ``batch_size // world_size`` per process. Call
    :func:`set_epoch` before each epoch: the order is a pure function of (seed, epoch), and
    when ``len(dataset)`` is divisible by ``world_size`` the union of the processes' t-th
    batches is the single-process t-th batch (otherwise DistributedSampler repeats up to
    ``world_size - 1`` images to even out the processes). An iterable (sharded) dataset
    gives ``len(dataset) // batch_size`` steps per epoch on every process
    (:class:`FixedSteps`)."""
    if batch_size % world_size:
        raise ValueError(f"global batch size {batch_size} is not divisible by the "
                         f"{world_size} processes")
    per_rank = batch_size // world_size
    sampler = None
    if not isinstance(dataset, IterableDataset):
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers,
                        worker_init_fn=_worker_init if workers else None,
                        multiprocessing_context=_context(dataset, workers),
                        pin_memory=pin_memory, persistent_workers=False)
    if isinstance(dataset, IterableDataset):
        return FixedSteps(loader, max(1, len(dataset) // batch_size))
    return loader


def eval_loader(dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of this process's share of ``dataset``, in order, each image once."""
    sampler = None
    if not isinstance(dataset, IterableDataset):
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context=_context(dataset, workers), pin_memory=pin_memory)


def set_epoch(loader: DataLoader | FixedSteps, epoch: int) -> None:
    """Tell the loader's sampler and dataset which epoch comes next."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
