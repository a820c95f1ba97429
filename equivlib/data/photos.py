"""Natural photos that ship inside scikit-image, for equivariance checks (never a file path
inside the library, never a download: only the files in the installed package)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# skimage.data functions whose images are files inside the installed package
PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


def photo_array(name: str) -> np.ndarray:
    """The photo ``name`` as an RGB ``uint8`` array (H, W, 3); grey photos repeated."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; shipped photos: {', '.join(PHOTOS)}")
    from skimage import data

    image = getattr(data, name)()
    image = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
    return image[..., :3]


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
