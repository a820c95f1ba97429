"""The PCam stand-in: PCam's h5 layout and dtypes, labels from the patch's own centre (so
invariant under the square's symmetries), disjoint tiles per split, reproducible."""

import h5py
import numpy as np
import pytest
from skimage.color import rgb2hed

from equivlib.data import get_dataset
from equivlib.data import pcam_stand_in as stand_in
from equivlib.data.pcam import PCamDataset, pcam_files


def _label_from_patch(patch: np.ndarray) -> int:
    stained = rgb2hed(patch)[..., 2] > stand_in.DAB_THRESHOLD
    lo, hi = (stand_in.PATCH - stand_in.CENTRE) // 2, (stand_in.PATCH + stand_in.CENTRE) // 2
    return int(stained[lo:hi, lo:hi].mean() >= stand_in.POSITIVE_FRACTION)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_labels_come_from_the_patch_centre_in_any_orientation(split):
    images, labels = stand_in.stand_in_patches(split, 40, seed=1)
    assert images.shape == (40, 96, 96, 3) and images.dtype == np.uint8
    assert [_label_from_patch(p) for p in images] == labels.tolist()
    for k in range(1, 8):  # the label is the same for every symmetry of the square
        assert [_label_from_patch(stand_in._dihedral(p, k)) for p in images] == labels.tolist()


def test_both_classes_in_every_split_and_reproducible():
    for split in ("train", "valid", "test"):
        _, labels = stand_in.stand_in_patches(split, 300)
        assert 0.15 < labels.mean() < 0.85, (split, labels.mean())
    a = stand_in.stand_in_patches("test", 20, seed=3)
    b = stand_in.stand_in_patches("test", 20, seed=3)
    c = stand_in.stand_in_patches("test", 20, seed=4)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_splits_use_disjoint_tiles_of_the_photo():
    tiles = [set(t) for t in stand_in.SPLIT_TILES.values()]
    assert sum(map(len, tiles)) == len(set.union(*tiles)) == 16
    assert all(0 <= r < 4 and 0 <= c < 4 for t in tiles for r, c in t)


def test_loads_through_the_pcam_h5_reader_in_pcam_layout():
    splits = get_dataset("pcam_stand_in", sizes=[12, 6, 5])
    assert all(isinstance(s, PCamDataset) for s in (splits.train, splits.valid, splits.test))
    assert [len(s) for s in (splits.train, splits.valid, splits.test)] == [12, 6, 5]
    root = splits.extra["directory"]
    with h5py.File(root / pcam_files("valid")[0]) as fx, h5py.File(
            root / pcam_files("valid")[1]) as fy:
        assert fx["x"].dtype == np.uint8 and fx["x"].shape == (6, 96, 96, 3)
        assert fy["y"].dtype == np.uint8 and fy["y"].shape == (6, 1, 1, 1)
    image, label = splits.test[0]
    images, labels = stand_in.stand_in_patches("test", 5)
    assert image.shape == (3, 96, 96) and label == labels[0]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), images[0])
    assert splits.info.stand_in and "not PatchCamelyon" in splits.info.stand_in


@pytest.mark.parametrize("sizes", [[10, 0, 5], [10, 5], [10, -1, 5], [10, 5.5, 5]])
def test_bad_sizes_fail_before_any_work(sizes):
    with pytest.raises(ValueError, match="sizes must be three positive ints"):
        get_dataset("pcam_stand_in", sizes=sizes)
