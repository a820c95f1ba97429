"""Natural photos that ship inside scikit-image, for equivariance checks (never a file path
inside the library, never a download: only the files in the installed package).

The one place the notebooks and the library read them: :func:`photo_array` (RGB ``uint8``),
:func:`photo_grey` (one float channel in [0, 1]) and :func:`photo_batch` (a standardised
batch for a model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# skimage.data functions whose images are files inside the installed package
PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "grass", "gravel",
          "horse", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


def _load(name: str) -> np.ndarray:
    """The array exactly as ``skimage.data.<name>()`` returns it."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; shipped photos: {', '.join(PHOTOS)}")
    from skimage import data

    return getattr(data, name)()


def photo_array(name: str) -> np.ndarray:
    """The photo ``name`` as an RGB ``uint8`` array (H, W, 3); grey photos repeated, a
    black-and-white silhouette (``horse``) as 0 / 255."""
    image = _load(name)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    image = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
    return image[..., :3]


def photo_grey(name: str, size: int | None = None) -> np.ndarray:
    """The photo ``name`` as one float64 channel in [0, 1], shape (H, W): colour photos
    through ``skimage.color.rgb2gray``, grey ones divided by 255, a black-and-white
    silhouette as 0 / 1. With ``size``, resized to ``size`` x ``size`` (antialiased)."""
    image = _load(name)
    if image.dtype == bool:
        grey = image.astype(np.float64)
    elif image.ndim == 3:
        from skimage.color import rgb2gray

        grey = rgb2gray(image[..., :3])
    else:
        grey = image.astype(np.float64) / 255
    if size is None:
        return grey
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    from skimage.transform import resize

    return resize(grey, (size, size), anti_aliasing=True)


def photo_batch(names: str | Sequence[str], size: int, channels: int = 3,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The photos resized to ``size`` x ``size`` (antialiased), each standardised to mean 0
    and std 1, as ``(N, channels, size, size)``; ``channels != 3`` uses the grey image
    repeated ``channels`` times."""
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("no photo names given")
    if size < 1 or channels < 1:
        raise ValueError(f"size and channels must be >= 1, got {size}, {channels}")
    images = []
    for name in names:
        rgb = photo_array(name)
        if channels == 3:
            image = resize(rgb, (size, size), anti_aliasing=True)
        else:
            grey = resize(rgb2gray(rgb), (size, size), anti_aliasing=True)
            image = np.repeat(grey[..., None], channels, -1)
        images.append(image)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(dtype)
    return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
