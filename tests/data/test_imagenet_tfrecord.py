"""ImageNet TFRecord reader on shards written by its own writer (small images, few records).

TensorFlow is imported once in this process (writing, and reading in the main process);
DataLoader workers use the ``forkserver`` context (TensorFlow is not fork-safe)."""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import ChainDataset, DataLoader

from equivlib.data import imagenet_tfrecord
from equivlib.data.base import IMAGENET_MEAN, DatasetMissingError
from equivlib.data.imagenet_tfrecord import (
    MULTIPROCESSING_CONTEXT,
    TFRecordImages,
    check_imagenet,
    count_records,
    find_shards,
    load_imagenet,
    write_tfrecord_shards,
)
from equivlib.data.registry import dataset_source, get_dataset

N = 24  # records per split; labels are distinct, so a label identifies its record


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 20, 24, 3): random 3x4 images upsampled bilinearly (JPEG-friendly)."""
    coarse = torch.from_numpy(np.random.default_rng(seed).random((n, 3, 3, 4))).float()
    fine = F.interpolate(coarse, size=(20, 24), mode="bilinear", align_corners=True)
    return (fine * 255).round().byte().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("imagenet")
    images = _smooth_images(N, 0)
    labels = np.arange(N)
    out = {"images": images, "base": base}
    # TensorFlow's naming: {root}/train-*, {root}/validation-*; 6 files, more than 4 shards
    out["std"] = base / "std"
    out["train"] = write_tfrecord_shards(out["std"], images, labels, 6)
    out["valid"] = write_tfrecord_shards(out["std"], images[:8], labels[:8], 2, "validation")
    # the authors' layout {root}/train/data/*, {root}/val/data/*; 3 files, fewer than 4 shards
    out["alt"] = base / "alt"
    out["alt_train"] = write_tfrecord_shards(out["alt"] / "train" / "data", images, labels + N, 3)
    write_tfrecord_shards(out["alt"] / "val" / "data", images[:5], labels[:5], 1, "val")
    # the same two shapes again, with other labels, for the shuffled sharding
    out["many_shuffled"] = write_tfrecord_shards(base / "m", images, labels + 2 * N, 6)
    out["few_shuffled"] = write_tfrecord_shards(base / "f", images, labels + 3 * N, 3)
    return out


def test_writer_names_and_count_without_tensorflow(data: dict) -> None:
    assert [p.name for p in data["train"]][:2] == ["train-00000-of-00006", "train-00001-of-00006"]
    assert [p.name for p in data["valid"]] == ["validation-00000-of-00002",
                                               "validation-00001-of-00002"]
    assert count_records(data["train"]) == N and count_records(data["valid"]) == 8
    assert [count_records([p]) for p in data["train"]] == [4] * 6
    # in a fresh process: counting never imports TensorFlow
    code = ("import sys; from equivlib.data.imagenet_tfrecord import count_records, find_shards;"
            f"n = count_records(find_shards('{{root}}/train-*', {str(data['std'])!r}));"
            "assert 'tensorflow' not in sys.modules; print(n)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], check=True)
    assert done.stdout.strip() == str(N)


def test_truncated_file_is_an_error(data: dict, tmp_path: Path) -> None:
    cut = tmp_path / "train-00000-of-00001"
    cut.write_bytes(data["train"][0].read_bytes()[:-3])
    with pytest.raises(ValueError, match="TFRecord"):
        count_records([cut])


def test_labels_and_images(data: dict) -> None:
    ds = TFRecordImages(data["train"])
    assert len(ds) == N
    items = list(ds)
    assert [label for _, label in items] == list(range(N))  # 0-based, in file order
    decoded = torch.stack([image for image, _ in items])
    assert decoded.dtype == torch.uint8 and decoded.shape == (N, 3, 20, 24)
    original = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float()
    assert (decoded.float() - original).abs().mean() < 4  # JPEG quality 95
    assert (decoded.float() - original.roll(1, 0)).abs().mean() > 30  # not any image
    assert items[0][0].is_contiguous()
    items[0][0].add_(1)  # writable: a copy of TensorFlow's read-only array


def test_shard_index_in_the_main_process(data: dict) -> None:
    assert TFRecordImages(data["train"]).shard() == (0, 1)
    assert TFRecordImages(data["train"], rank=1, world_size=3).shard() == (1, 3)
    labels = [label for _, label in TFRecordImages(data["train"], rank=1, world_size=3)]
    assert labels == [4, 5, 6, 7, 16, 17, 18, 19]  # files 1 and 4 of 6
    with pytest.raises(ValueError, match="rank"):
        TFRecordImages(data["train"], rank=2, world_size=2)


def test_rank_of_the_parent_travels_to_workers(data: dict, monkeypatch) -> None:
    """Workers are not in the process group: the rank is taken when the dataset is pickled
    for them, in the parent."""
    ds = TFRecordImages(data["train"])
    with monkeypatch.context() as patch:
        patch.setattr(imagenet_tfrecord, "_distributed_rank_world", lambda: (1, 2))
        assert ds.rank_world() == (1, 2)
        sent = pickle.dumps(ds)
    assert ds.rank_world() == (0, 1) and pickle.loads(sent).rank_world() == (1, 2)
    explicit = pickle.loads(pickle.dumps(TFRecordImages(data["train"], rank=0, world_size=1)))
    assert explicit.rank_world() == (0, 1)


def test_sharding_over_ranks_and_workers(data: dict) -> None:
    """2 ranks x 2 workers = 4 shards: by files (6 files), by records (3 files), each
    unshuffled and shuffled. Every record is read exactly once."""
    context = multiprocessing.get_context(MULTIPROCESSING_CONTEXT)
    # workers fork from a server that has imported torch and the reader once (no TensorFlow:
    # each worker imports it); effective only if this session's forkserver is not running yet
    context.set_forkserver_preload(["torch", "equivlib.data.imagenet_tfrecord"])
    per_rank = []
    for rank in range(2):
        chain = ChainDataset([
            TFRecordImages(data[key], rank=rank, world_size=2, shuffle=shuffle, seed=3)
            for key, shuffle in (("train", False), ("alt_train", False),
                                 ("many_shuffled", True), ("few_shuffled", True))])
        loader = DataLoader(chain, batch_size=None, num_workers=2, multiprocessing_context=context)
        per_rank.append([label for _, label in loader])
    assert all(per_rank)
    everything = per_rank[0] + per_rank[1]
    assert sorted(everything) == list(range(4 * N))  # all records, no duplicates


def test_forked_worker_refuses_inherited_tensorflow(data: dict) -> None:
    """This process used TensorFlow (the writer): a forked worker raises rather than risk a
    hang."""
    loader = DataLoader(TFRecordImages(data["train"]), batch_size=None, num_workers=1,
                        multiprocessing_context="fork")
    batches = iter(loader)
    message = ""
    try:
        next(batches)
    except RuntimeError as error:
        message = str(error)
        # break the traceback's cycle through the iterator: deleting it then shuts the worker
        # down at once (a shutdown left to the garbage collector waits ~5 s on the worker)
        traceback.clear_frames(error.__traceback__)
    del batches
    assert "not fork-safe" in message and "forkserver" in message


def test_shuffle_is_seeded_by_seed_and_epoch(data: dict) -> None:
    ds = TFRecordImages(data["train"], shuffle=True, seed=0, shuffle_buffer=100)

    def order() -> list[int]:
        return [label for _, label in ds]

    first = order()
    assert sorted(first) == list(range(N)) and first != list(range(N))
    assert order() == first
    ds.set_epoch(1)
    second = order()
    assert sorted(second) == list(range(N)) and second != first
    ds.set_epoch(0)
    assert order() == first
    assert order() != [label for _, label in TFRecordImages(data["train"], shuffle=True,
                                                            seed=1, shuffle_buffer=100)]


def test_load_splits_and_authors_layout(data: dict) -> None:
    splits = load_imagenet(data["std"])
    assert splits.valid is None  # the paper reports on ImageNet's validation set
    assert len(splits.train) == N and len(splits.test) == 8
    assert splits.train.shuffle and not splits.test.shuffle
    assert [label for _, label in splits.test] == list(range(8))
    info = splits.info
    assert (info.num_classes, info.channels, info.mean, info.native_size) \
        == (1000, 3, IMAGENET_MEAN, None)
    patterns = {"train_pattern": "{root}/train/data/*", "valid_pattern": "{root}/val/data/*"}
    check_imagenet(data["alt"], False, **patterns)
    # the alternative layout's training labels are N..2N-1: 2N classes
    alt = load_imagenet(data["alt"], False, num_classes=2 * N, train_records=N, **patterns)
    assert len(alt.train) == N and len(alt.test) == 5 and alt.info.num_classes == 2 * N
    assert sorted(label for _, label in alt.train) == list(range(N, 2 * N))
    assert find_shards("{root}/train/*", data["alt"]) == []  # directories are not shards


def test_missing_data_error(data: dict, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    with pytest.raises(DatasetMissingError) as info:
        check_imagenet(empty, False)
    msg = str(info.value)
    assert "ImageNet" in msg and str(empty.resolve()) in msg and "train-*" in msg
    assert "validation-*" in msg and "image-net.org" in msg and "--data-dir" in msg
    assert "download=True" not in msg
    with pytest.raises(DatasetMissingError, match="download=True was given"):
        check_imagenet(empty, True)
    with pytest.raises(DatasetMissingError) as info:  # the validation shards alone missing
        check_imagenet(data["alt"], False, train_pattern="{root}/train/data/*")
    msg = str(info.value)
    assert "validation-*" in msg and str(data["alt"] / "train" / "data") not in msg


def test_through_the_registry(data: dict, tmp_path: Path) -> None:
    nothing = tmp_path / "nothing"
    with pytest.raises(DatasetMissingError) as info:
        get_dataset("imagenet", data_dir=nothing)
    msg = str(info.value)
    assert "ImageNet" in msg and str(nothing.resolve()) in msg and "train-*" in msg
    with pytest.raises(DatasetMissingError, match="download=True was given"):
        get_dataset("imagenet", data_dir=nothing, download=True)
    assert dataset_source("imagenet").protocol == "imagenet"
    splits = get_dataset("imagenet", data_dir=data["alt"], num_classes=2 * N,
                         train_pattern="{root}/train/data/*", valid_pattern="{root}/val/data/*")
    assert len(splits.train) == N and splits.valid is None and len(splits.test) == 5
