"""ImageNet (ILSVRC-2012) as TFRecord shards, read with TensorFlow's ``tf.data`` (no DALI).

The shards are those of TensorFlow's ImageNet conversion script (``train-00000-of-01024``,
``validation-00000-of-00128``): one ``tf.train.Example`` per image with ``image/encoded``
(JPEG bytes) and ``image/class/label`` (int64, 1-based; yielded 0-based). They are found by
the glob patterns ``train_pattern`` / ``valid_pattern`` (``{root}`` is the data directory),
so another layout works by passing patterns, e.g. ``{root}/train/data/*``.

Before any work (:func:`check_imagenet`) every shard must be non-empty, and the first
:data:`SCAN_RECORDS` records of the first and last shard of each split are parsed (without
TensorFlow) for ``image/encoded`` and a label in ``1..num_classes``; while reading, a label
outside that range is an error naming the convention (never "Target -1 is out of bounds").

TensorFlow is imported lazily, inside the iteration (so in each DataLoader worker; the parent
process never needs it), with few threads, no GPU and quiet logs. Counting the records of a
split (``len``) parses the TFRecord framing directly and does not import TensorFlow.

DataLoader workers: use the ``"forkserver"`` (or ``"spawn"``) multiprocessing context
(:data:`MULTIPROCESSING_CONTEXT`). TensorFlow is not fork-safe once initialised: a process
that used TensorFlow (e.g. wrote stand-in shards with :func:`write_tfrecord_shards`) must not
fork workers that use it again.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from equivlib.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    DatasetSplits,
    missing_error,
)
from equivlib.data.registry import register_dataset

TRAIN_PATTERN = "{root}/train-*"
VALID_PATTERN = "{root}/validation-*"
MULTIPROCESSING_CONTEXT = "forkserver"
"""The DataLoader ``multiprocessing_context`` for :class:`TFRecordImages` workers."""

_FEATURE_IMAGE = "image/encoded"
_FEATURE_LABEL = "image/class/label"
_HEADER = struct.Struct("<Q")  # record length; then uint32 crc, data, uint32 crc
_COUNT_CACHE: dict[tuple[str, int, int], int] = {}
SCAN_RECORDS = 32
"""Records whose features and label the pre-flight check parses, per scanned shard."""
LABEL_CONVENTION = ("image/class/label must be 1-based, 1..num_classes, as TensorFlow's "
                    "ImageNet conversion writes it (this reader yields label - 1)")


# -- finding and counting shards (no TensorFlow) ---------------------------------------------

def expand_pattern(pattern: str, root: str | os.PathLike) -> str:
    """``pattern`` with ``{root}`` replaced by ``root`` (no other substitution)."""
    return pattern.replace("{root}", str(root))


def find_shards(pattern: str, root: str | os.PathLike) -> list[Path]:
    """The files (not directories) matching ``pattern`` under ``root``, sorted."""
    return sorted(Path(p) for p in glob.glob(expand_pattern(pattern, root)) if os.path.isfile(p))


def _count_file(path: Path) -> int:
    size = path.stat().st_size
    count = pos = 0
    with open(path, "rb", buffering=0) as f:
        while pos < size:
            f.seek(pos)
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            (length,) = _HEADER.unpack(header)
            pos += _HEADER.size + 4 + length + 4
            count += 1
    if pos != size:
        raise ValueError(f"{path}: not a complete (uncompressed) TFRecord file: the framing "
                         f"ends at byte {pos} but the file has {size} bytes")
    return count


def count_records(files: Sequence[str | os.PathLike]) -> int:
    """The number of records in TFRecord ``files``, from the framing alone (record lengths
    and seeks; no TensorFlow, no CRC check). Cached in memory per (file, size, mtime)."""
    total = 0
    for file in files:
        path = Path(file)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _COUNT_CACHE:
            _COUNT_CACHE[key] = _count_file(path)
        total += _COUNT_CACHE[key]
    return total


# -- parsing records without TensorFlow (the pre-flight check) ----------------------------

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of a serialized protocol buffer message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("a field runs past the end of the message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            value, pos = buf[pos:pos + (8 if wire == 1 else 4)], pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unknown wire type {wire}")
        yield number, wire, value


def example_features(record: bytes) -> dict[str, tuple[str, list[int]]]:
    """The features of a serialized ``tf.train.Example``: ``{name: (kind, int64 values)}``
    with kind ``bytes``, ``float`` or ``int64`` (values only for int64). ValueError when it
    is not one."""
    kinds = {1: "bytes", 2: "float", 3: "int64"}
    out: dict[str, tuple[str, list[int]]] = {}
    for number, wire, features in _fields(memoryview(record)):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, entry in _fields(features):
            if entry_number != 1 or entry_wire != 2:
                continue
            name, kind, values = "", "", []
            for n, w, v in _fields(entry):
                if n == 1 and w == 2:
                    name = bytes(v).decode("utf-8", "replace")
                elif n == 2 and w == 2:
                    for kind_number, kind_wire, data in _fields(v):
                        kind = kinds.get(kind_number, "")
                        if kind == "int64" and kind_wire == 2:
                            for vn, vw, x in _fields(data):
                                if vn == 1 and vw == 0:
                                    values.append(x)
                                elif vn == 1 and vw == 2:  # packed
                                    pos = 0
                                    while pos < len(x):
                                        value, pos = _varint(x, pos)
                                        values.append(value)
            out[name] = (kind, [v - (1 << 64) if v >= 1 << 63 else v for v in values])
    return out


def first_records(path: Path, count: int) -> list[bytes]:
    """The first ``count`` records of the TFRecord file ``path`` (framing only)."""
    size = path.stat().st_size
    records = []
    with open(path, "rb") as f:
        while len(records) < count and f.tell() < size:
            header = f.read(_HEADER.size + 4)
            length = _HEADER.unpack(header[:_HEADER.size])[0] if len(header) == 12 else -1
            if length < 0 or f.tell() + length + 4 > size:
                raise ValueError(f"{path}: not a complete (uncompressed) TFRecord file: "
                                 f"record {len(records)} runs past the end of the file")
            records.append(f.read(length))
            f.seek(4, os.SEEK_CUR)
    return records


def check_records(path: Path, num_classes: int, count: int | None = None) -> None:
    """ValueError naming ``path`` unless its first ``count`` (:data:`SCAN_RECORDS`) records
    are ``tf.train.Example`` s with ``image/encoded`` bytes and one ``image/class/label``
    in ``1..num_classes``."""
    path = Path(path).resolve()
    for i, record in enumerate(first_records(path, SCAN_RECORDS if count is None else count)):
        try:
            features = example_features(record)
        except ValueError as exc:
            raise ValueError(f"imagenet shard {path}: record {i} is not a tf.train.Example "
                             f"({exc}); expected the shards of TensorFlow's ImageNet "
                             "conversion") from None
        label = features.get(_FEATURE_LABEL, ("", []))
        if features.get(_FEATURE_IMAGE, ("",))[0] != "bytes" or label[0] != "int64" \
                or len(label[1]) != 1:
            held = ", ".join(f"{k} ({v[0] or '?'})" for k, v in sorted(features.items()))
            raise ValueError(f"imagenet shard {path}: record {i} lacks the features of "
                             f"TensorFlow's ImageNet conversion, {_FEATURE_IMAGE} (bytes) and "
                             f"{_FEATURE_LABEL} (one int64): it holds {held or 'none'}; write "
                             f"the shards with them ({LABEL_CONVENTION})")
        value = label[1][0]
        if not 1 <= value <= num_classes:
            raise ValueError(f"imagenet shard {path}: record {i} has {_FEATURE_LABEL} {value}, "
                             f"outside 1..{num_classes}: {label_fix(value, num_classes)}")


def label_fix(value: int, num_classes: int) -> str:
    """What a label outside ``1..num_classes`` means and how to fix it."""
    if value < 1:
        return (f"{LABEL_CONVENTION}; shards written with 0-based labels must be written "
                "again with label + 1")
    return (f"{LABEL_CONVENTION}; give the shards' number of classes as num_classes "
            f"(--set data.options.num_classes=N, now {num_classes}), or write them again "
            f"with labels 1..{num_classes}")


# -- TensorFlow, lazily ---------------------------------------------------------------------

_TF_CONFIGURED = False  # this process has used TensorFlow through this module
_TF_INHERITED = False  # ... and so had the process this one was forked from


def _after_fork_in_child() -> None:
    global _TF_INHERITED
    _TF_INHERITED = _TF_INHERITED or _TF_CONFIGURED


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _import_tf(threads: int = 1) -> Any:
    """TensorFlow with quiet logs, ``threads`` op threads and no GPU (configured once).

    Raises RuntimeError in a process forked from one that had used TensorFlow (whose thread
    pools do not survive ``fork``: TensorFlow may hang there)."""
    global _TF_CONFIGURED
    if _TF_INHERITED:
        raise RuntimeError(
            "TensorFlow was used in the parent of this forked process and is not fork-safe; "
            f"create DataLoader workers with multiprocessing_context={MULTIPROCESSING_CONTEXT!r}"
            " (or 'spawn')")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # else an INFO line on import
    import tensorflow as tf

    if not _TF_CONFIGURED:
        _TF_CONFIGURED = True
        tf.get_logger().setLevel("ERROR")
        try:  # only possible before TensorFlow's runtime is initialised
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            tf.config.set_visible_devices([], "GPU")  # decoding only: leave the GPU to torch
        except (RuntimeError, ValueError):
            pass
    return tf


# -- the dataset ----------------------------------------------------------------------------

def _distributed_rank_world() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


class TFRecordImages(IterableDataset):
    """Images of TFRecord ``files`` as ``(uint8 tensor (3, H, W), int label)``, decoded by
    TensorFlow (``tf.io.decode_jpeg``, 3 channels) at their native size.

    No two processes read the same records: the stream is split into ``world_size *
    num_workers`` shards (DataLoader workers of every rank), this process reading shard
    ``rank * num_workers + worker_id``; by files when there are at least as many files as
    shards, else by records (each process then reads every file and keeps one record in
    ``num_shards``). ``rank`` / ``world_size`` default to :mod:`torch.distributed`'s when it
    is initialised (taken in the parent process), else 0 / 1.

    ``len`` is the number of records of the whole split (``num_records``, else counted once
    without TensorFlow), for the schedule's steps per epoch; each process yields about
    ``len / num_shards`` of them, each rank about ``len / world_size``.

    With ``shuffle``, the file order, the interleaving of files and a ``shuffle_buffer``
    are seeded by ``(seed, epoch)``: the same pair gives the same order, each epoch another.
    The buffer holds serialized records (about 110 kB each for ImageNet) in every process.
    Call :meth:`set_epoch` before creating the epoch's iterator (with ``persistent_workers``
    the workers keep the epoch they started with).

    ``num_classes``: a record whose ``image/class/label`` is outside ``1..num_classes`` is a
    ValueError saying so (the 1-based convention) when it is read; None: not checked."""

    def __init__(self, files: Sequence[str | os.PathLike], *, num_records: int | None = None,
                 shuffle: bool = False, seed: int = 0, shuffle_buffer: int = 10_000,
                 rank: int | None = None, world_size: int | None = None,
                 threads: int = 1, num_classes: int | None = None) -> None:
        if not files:
            raise ValueError("TFRecordImages needs at least one file")
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        if world_size is not None and not 0 <= rank < world_size:  # type: ignore[operator]
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.files = [str(f) for f in files]
        self.num_records = num_records
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.threads = threads
        self.num_classes = num_classes
        self.epoch = 0
        self._parent_rank_world: tuple[int, int] | None = None

    def __len__(self) -> int:
        if self.num_records is None:
            self.num_records = count_records(self.files)
        return self.num_records

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next iteration with ``(seed, epoch)``."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # pickled in the parent for spawn/forkserver workers, where torch.distributed is
        # initialised; the workers are not part of the process group
        state = dict(self.__dict__)
        if self.rank is None:
            state["_parent_rank_world"] = _distributed_rank_world() or self._parent_rank_world
        return state

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)`` of the split: the constructor's, else torch.distributed's
        (this process's or, in a spawned worker, its parent's), else ``(0, 1)``."""
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return _distributed_rank_world() or self._parent_rank_world or (0, 1)

    def shard(self) -> tuple[int, int]:
        """``(index, num_shards)`` of the shard this process (and worker) reads."""
        rank, world = self.rank_world()
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        return rank * num_workers + worker_id, world * num_workers

    def _rng(self, *more: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *more])

    def _records(self, tf: Any) -> Any:
        """The ``tf.data`` pipeline of serialized records of this process's shard."""
        index, num_shards = self.shard()
        files = list(self.files)
        if self.shuffle:  # the same permutation in every process: the shards stay disjoint
            files = [files[i] for i in self._rng().permutation(len(files))]
        if len(files) >= num_shards:
            mine = files[index::num_shards]
            if self.shuffle and len(mine) > 1:
                records = tf.data.Dataset.from_tensor_slices(mine).interleave(
                    tf.data.TFRecordDataset, cycle_length=min(len(mine), 8), block_length=1)
            else:
                records = tf.data.TFRecordDataset(mine)
        else:
            records = tf.data.TFRecordDataset(files).shard(num_shards, index)
        if self.shuffle:
            seed = int(self._rng(index).integers(2**31 - 1))
            records = records.shuffle(self.shuffle_buffer, seed=seed,
                                      reshuffle_each_iteration=False)
        return records

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        tf = _import_tf(self.threads)
        features = {_FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
                    _FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64)}

        def decode(serialized: Any) -> tuple[Any, Any]:
            example = tf.io.parse_single_example(serialized, features)
            image = tf.io.decode_jpeg(example[_FEATURE_IMAGE], channels=3,
                                      dct_method="INTEGER_ACCURATE")
            return image, example[_FEATURE_LABEL] - 1

        options = tf.data.Options()
        options.threading.private_threadpool_size = self.threads
        options.deterministic = True
        dataset = self._records(tf).map(decode).prefetch(1).with_options(options)
        for image, label in dataset.as_numpy_iterator():
            if self.num_classes is not None and not 0 <= label < self.num_classes:
                first = Path(self.files[0]).resolve()
                where = (first if len(self.files) == 1
                         else f"one of the {len(self.files)} shards {first}, ...")
                raise ValueError(f"imagenet: a record of {where} has {_FEATURE_LABEL} "
                                 f"{label + 1}, outside 1..{self.num_classes}: "
                                 f"{label_fix(int(label) + 1, self.num_classes)}")
            # TensorFlow's arrays are read-only: the transposing copy makes a writable one
            yield torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C")), int(label)


# -- writing shards (tests, small stand-ins) ------------------------------------------------

def write_tfrecord_shards(directory: str | os.PathLike, images: np.ndarray,
                          labels: Sequence[int] | np.ndarray, num_shards: int,
                          prefix: str = "train") -> list[Path]:
    """Write ``uint8`` images ``(N, H, W, 3)`` with 0-based ``labels`` as ``num_shards``
    TFRecord files ``{prefix}-00000-of-00004``, ... in ``directory`` (consecutive images per
    file; JPEG quality 95, 1-based labels, the features of TensorFlow's ImageNet
    conversion script). Returns the paths in order."""
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} "
                         f"{images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{len(images)} images but labels of shape {labels.shape}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    tf = _import_tf()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def feature(value: bytes | int) -> Any:
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(images)), num_shards)):
        path = directory / f"{prefix}-{i:05d}-of-{num_shards:05d}"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for j in part:
                encoded = tf.io.encode_jpeg(images[j], quality=95).numpy()
                height, width = images[j].shape[:2]
                example = tf.train.Example(features=tf.train.Features(feature={
                    _FEATURE_IMAGE: feature(encoded),
                    _FEATURE_LABEL: feature(int(labels[j]) + 1),
                    "image/height": feature(int(height)),
                    "image/width": feature(int(width)),
                    "image/channels": feature(3),
                    "image/colorspace": feature(b"RGB"),
                    "image/format": feature(b"JPEG"),
                }))
                writer.write(example.SerializeToString())
        paths.append(path)
    return paths


# -- the registered source ------------------------------------------------------------------

def _how_to_get(download: bool) -> str:
    how = ("ImageNet cannot be downloaded automatically (torchvision does not download it). "
           "Obtain ILSVRC-2012 from https://image-net.org (registration required), convert "
           "it to TFRecord shards with TensorFlow's ImageNet conversion script (TF-models' "
           "imagenet_to_gcs.py or the Inception build_imagenet_data.py, which write "
           "train-00000-of-01024 ... and validation-00000-of-00128 ...), then pass "
           "--data-dir DIR (or set DATA_DIR) to their directory, or the options "
           "train_pattern / valid_pattern for another layout (e.g. '{root}/train/data/*' "
           "and '{root}/val/data/*').")
    if download:
        how = "download=True was given but does not help here: " + how
    return how


def check_imagenet(root: Path, download: bool = False, train_pattern: str = TRAIN_PATTERN,
                   valid_pattern: str = VALID_PATTERN, num_classes: int = 1000,
                   **_options: Any) -> None:
    """Raise :class:`~equivlib.data.base.DatasetMissingError` if a pattern matches no file;
    ValueError naming the shards if some are empty (0 bytes), or if the first
    :data:`SCAN_RECORDS` records of the first or last shard of a split are not ImageNet
    examples with a label in ``1..num_classes``."""
    missing = [f"{expand_pattern(p, root)} (pattern {p!r})"
               for p in (train_pattern, valid_pattern) if not find_shards(p, root)]
    if missing:
        raise missing_error("ImageNet", root, missing, _how_to_get(download))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"imagenet num_classes must be a positive int, got {num_classes!r}")
    for pattern in (train_pattern, valid_pattern):
        shards = find_shards(pattern, root)
        empty = [p for p in shards if p.stat().st_size == 0]
        if empty:
            names = ", ".join(str(p.resolve()) for p in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            matching = expand_pattern(pattern, Path(root).resolve())
            raise ValueError(f"imagenet: empty (0-byte) TFRecord shard(s) {names}{more} "
                             f"({len(empty)} of the {len(shards)} matching {matching!r}): an "
                             "unfinished conversion or copy; write or copy them again, or move "
                             "them out of the pattern's way")
        for shard in dict.fromkeys((shards[0], shards[-1])):
            check_records(shard, num_classes)


def imagenet_files(root: Path, train_pattern: str = TRAIN_PATTERN,
                   valid_pattern: str = VALID_PATTERN, **_options: Any) -> list[Path]:
    """The shards the patterns match (the identity of a run's data)."""
    return find_shards(train_pattern, root) + find_shards(valid_pattern, root)


@register_dataset("imagenet", protocol="imagenet", check=check_imagenet, files=imagenet_files,
                  description="ImageNet ILSVRC-2012 from TFRecord shards (tf.data); "
                              "test = the validation set")
def load_imagenet(root: Path, download: bool = False, train_pattern: str = TRAIN_PATTERN,
                  valid_pattern: str = VALID_PATTERN, train_records: int | None = None,
                  valid_records: int | None = None, num_classes: int = 1000,
                  shuffle_buffer: int = 10_000, seed: int = 0) -> DatasetSplits:
    """ImageNet's train shards (shuffled by ``seed`` and the epoch) and validation shards.

    ``valid`` is ``None`` and ``test`` is the validation set: the paper's protocol reports
    on ImageNet's validation set, with no model selection. ``train_records`` /
    ``valid_records`` skip counting the records (1,281,167 / 50,000 for ILSVRC-2012);
    ``num_classes`` below 1000 serves a small stand-in written by
    :func:`write_tfrecord_shards`."""
    check_imagenet(root, download, train_pattern, valid_pattern, num_classes)
    train_files = find_shards(train_pattern, root)
    valid_files = find_shards(valid_pattern, root)
    train = TFRecordImages(train_files, num_records=train_records, shuffle=True, seed=seed,
                           shuffle_buffer=shuffle_buffer, num_classes=num_classes)
    test = TFRecordImages(valid_files, num_records=valid_records, shuffle=False,
                          num_classes=num_classes)
    info = DatasetInfo("imagenet", num_classes=num_classes, channels=3, mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, native_size=None)
    return DatasetSplits(train=train, valid=None, test=test, info=info,
                         extra={"train_files": train_files, "test_files": valid_files,
                                "multiprocessing_context": MULTIPROCESSING_CONTEXT})
