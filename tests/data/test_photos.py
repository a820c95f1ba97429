import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
from skimage import data  # noqa: E402
from skimage.color import rgb2gray  # noqa: E402

from equivlib.data.photos import PHOTOS, photo_array, photo_batch, photo_grey  # noqa: E402


@pytest.mark.parametrize("name", ["astronaut", "camera", "horse", "coffee"])
def test_photo_array_is_rgb_uint8(name):
    image = photo_array(name)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert image.shape[:2] == getattr(data, name)().shape[:2]


def test_silhouette_is_black_and_white():
    assert set(np.unique(photo_array("horse"))) == {0, 255}
    assert set(np.unique(photo_grey("horse"))) == {0.0, 1.0}


@pytest.mark.parametrize("name, expected", [
    ("astronaut", lambda: rgb2gray(data.astronaut())),
    ("camera", lambda: data.camera().astype(np.float64) / 255),
    ("horse", lambda: data.horse().astype(np.float64)),
])
def test_photo_grey_matches_the_package_image(name, expected):
    grey = photo_grey(name)
    assert grey.dtype == np.float64 and grey.ndim == 2
    assert 0.0 <= grey.min() and grey.max() <= 1.0
    np.testing.assert_array_equal(grey, expected())


@pytest.mark.parametrize("size", [17, 32])
def test_photo_grey_resizes(size):
    from skimage.transform import resize

    grey = photo_grey("camera", size)
    assert grey.shape == (size, size)
    np.testing.assert_array_equal(grey, resize(photo_grey("camera"), (size, size),
                                               anti_aliasing=True))


@pytest.mark.parametrize("call", [lambda: photo_grey("lena"), lambda: photo_array("lena"),
                                  lambda: photo_grey("camera", 0),
                                  lambda: photo_grey("camera", 2.5)])
def test_bad_names_and_sizes(call):
    with pytest.raises(ValueError, match="unknown photo|size"):
        call()


@pytest.mark.parametrize("names, channels", [("astronaut,camera", 3), (["horse"], 1),
                                             ("coffee", 2)])
def test_photo_batch_is_standardised(names, channels):
    x = photo_batch(names, 20, channels=channels, dtype=torch.float32)
    count = len(names.split(",")) if isinstance(names, str) else len(names)
    assert x.shape == (count, channels, 20, 20) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.zeros(count), atol=1e-5)
    assert torch.allclose(x.std(dim=(1, 2, 3)), torch.ones(count), atol=1e-5)


def test_every_listed_photo_ships_with_scikit_image():
    for name in PHOTOS:
        assert hasattr(data, name)
