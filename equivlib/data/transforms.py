"""Image transforms of every protocol in docs/design.md §7, and the rotations of the tests.

Per-sample transforms take a ``uint8`` image ``(C, H, W)`` and a ``torch.Generator`` and
return a float image in ``[0, 1]``; every random choice is drawn from that generator, which
the engine seeds from (run seed, epoch, sample index). An augmented image therefore does not
depend on DataLoader workers, on the number of DDP processes or on a resume.

Batch transforms (:func:`rotate`, :func:`normalize`) run on the device after the loader.
Rotations by multiples of 90° use ``rot90`` and are exact pixel permutations about the image
centre (odd and even sizes alike); other angles are bilinear with zero padding, which is why
normalisation comes *after* rotation (the padding is the black background).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

SampleTransform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
PROTOCOLS = ("resize", "cifar", "flowers", "pcam", "imagenet")


# ------------------------------------------------------------------ per-sample pieces
def to_float(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` -> float32 in [0, 1] (float input is returned as float32)."""
    if image.dtype == torch.uint8:
        return image.float().div_(255)
    return image.float()


def resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float ``(C, H, W)`` image to ``size`` (square int or (h, w)),
    antialiased when shrinking (as torchvision's ``Resize``); a no-op at the same size."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == hw:
        return image
    return F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""
    h, w = image.shape[-2:]
    if h <= w:
        return resize(image, (size, max(1, round(w * size / h))))
    return resize(image, (max(1, round(h * size / w)), size))


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window (zero-padded if the image is smaller)."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        image = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def _randint(high: int, gen: torch.Generator | None) -> int:
    return int(torch.randint(high, (), generator=gen))


def _uniform(low: float, high: float, gen: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def pad_random_crop(image: torch.Tensor, size: int, padding: int,
                    gen: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then a random ``size`` x ``size`` window
    (torchvision's ``RandomCrop(size, padding)``)."""
    padded = F.pad(image, (padding,) * 4)
    h, w = padded.shape[-2:]
    top, left = _randint(h - size + 1, gen), _randint(w - size + 1, gen)
    return padded[..., top:top + size, left:left + size]


def random_hflip(image: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Mirror left-right with probability 1/2."""
    return image.flip(-1) if _randint(2, gen) else image


def random_quarter_turn(image: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Rotate by 0, 90, 180 or 270 degrees, uniformly (exact, ``rot90``)."""
    return torch.rot90(image, _randint(4, gen), dims=(-2, -1))


def random_resized_crop(image: torch.Tensor, size: int, gen: torch.Generator | None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """A random window of ``scale`` of the area and aspect ``ratio`` (log-uniform), resized
    to ``size`` (torchvision's ``RandomResizedCrop``: 10 tries, then a central crop)."""
    h, w = image.shape[-2:]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(*scale, gen)
        aspect = math.exp(_uniform(*log_ratio, gen))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = _randint(h - ch + 1, gen), _randint(w - cw + 1, gen)
            return resize(image[..., top:top + ch, left:left + cw], size)
    in_ratio = w / h  # fallback: the largest central crop within the ratio bounds
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        ch, cw = h, round(h * ratio[1])
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize(image[..., top:top + ch, left:left + cw], size)


# ------------------------------------------------------------------ protocols
class Compose:
    """Apply per-sample steps in order; ``random`` tells whether any step draws numbers."""

    def __init__(self, steps: Sequence[SampleTransform], random: bool, name: str) -> None:
        self.steps, self.random, self.name = list(steps), random, name

    def __call__(self, image: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(image)
        for step in self.steps:
            x = step(x, gen)
        return x.contiguous()

    def __repr__(self) -> str:
        return f"Compose({self.name})"


def train_transform(protocol: str, size: int, *, quarter_turns: bool = False,
                    flips: bool = True) -> Compose:
    """The training transform of ``protocol`` at input ``size``:

    - ``resize`` (RotMNIST) and ``pcam``: resize to ``size`` only (no augmentation);
    - ``cifar``: resize, pad 4 + random crop, horizontal flip;
    - ``flowers``: random resized crop (area 0.08-1, aspect 3/4-4/3), flip;
    - ``imagenet``: random resized crop (area 0.1-1, aspect 0.8-1.25), flip.

    ``quarter_turns`` adds a random quarter turn per image; ``flips=False`` drops the flip.
    """
    _check(protocol, size)
    steps: list[SampleTransform] = []
    if protocol in ("resize", "pcam"):
        steps.append(lambda x, g: resize(x, size))
    elif protocol == "cifar":
        steps += [lambda x, g: resize(x, size), lambda x, g: pad_random_crop(x, size, 4, g)]
    elif protocol == "flowers":
        steps.append(lambda x, g: random_resized_crop(x, size, g))
    else:  # imagenet
        steps.append(lambda x, g: random_resized_crop(x, size, g, (0.1, 1.0), (0.8, 1.25)))
    random = protocol in ("cifar", "flowers", "imagenet") or quarter_turns
    if flips and protocol in ("cifar", "flowers", "imagenet"):
        steps.append(random_hflip)
    if quarter_turns:
        steps.append(random_quarter_turn)
    return Compose(steps, random, f"train:{protocol}@{size}")


def test_transform(protocol: str, size: int) -> Compose:
    """The (deterministic) test transform of ``protocol`` at input ``size``:
    resize (``resize``, ``cifar``, ``pcam``); shorter side to ``round(size * 8 / 7)`` and a
    central crop (``flowers``: not the authors' fixed 256, which mismatches training at small
    sizes); shorter side to 256 and a central crop (``imagenet``)."""
    _check(protocol, size)
    if protocol in ("resize", "cifar", "pcam"):
        steps = [lambda x, g: resize(x, size)]
    else:
        shorter = round(size * 8 / 7) if protocol == "flowers" else 256
        steps = [lambda x, g: center_crop(resize_shorter(x, shorter), size)]
    return Compose(steps, False, f"test:{protocol}@{size}")


def _check(protocol: str, size: int) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"input size must be a positive int, got {size!r}")


# ------------------------------------------------------------------ batch transforms
def rotate_exact(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate (..., H, W) by ``k`` quarter turns counter-clockwise (exact)."""
    return torch.rot90(x, k, dims=(-2, -1))


def rotate(x: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Rotate (B, C, H, W) counter-clockwise (as ``rot90``) about the image centre by
    bilinear interpolation, zero padding. ``degrees``: a scalar or one angle per image.

    A scalar multiple of 90° is done with :func:`rotate_exact`, so the test set rotated by
    90°, 180°, 270° is exactly the permuted pixels, as an exact P4 model needs to give
    identical predictions there."""
    b = x.shape[0]
    if not torch.is_tensor(degrees) and float(degrees) % 90 == 0:
        return rotate_exact(x, round(float(degrees) / 90) % 4).clone()
    a = torch.as_tensor(degrees, dtype=torch.float64).expand(b) * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1),
                         torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape),
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a (B, C, H, W) batch (one value: every channel)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - m) / s


def uniform_angles(n: int, seed: int) -> torch.Tensor:
    """The RotMNIST ``uniform`` regime: one fixed angle in [0, 360) per training image."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64) * 360


def biased_angle(generator: torch.Generator, mu: float = 45.0, sigma: float = 20.0) -> float:
    """The RotMNIST ``biased`` regime: one angle for a whole batch, drawn from N(mu, sigma)."""
    return float(mu + sigma * torch.randn((), generator=generator, dtype=torch.float64))
