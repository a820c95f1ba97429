"""Transforms of every protocol (docs/design.md §7) and the rotations of the tests
(``equivlib.data.transforms``)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from equivlib.data import transforms as T
from equivlib.data.transforms import (
    PROTOCOLS,
    biased_angle,
    center_crop,
    normalize,
    pad_random_crop,
    random_hflip,
    random_quarter_turn,
    random_resized_crop,
    resize_shorter,
    rotate,
    rotate_exact,
    to_float,
    train_transform,
    uniform_angles,
)
from equivlib.data.transforms import test_transform as eval_transform  # not a pytest test

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = (27, 28, 32, 33)
# a raw (C, H, W) input of each protocol's usual shape; imagenet and flowers non-square
INPUT_SHAPES = {"resize": (3, 28, 28), "cifar": (3, 32, 32), "flowers": (3, 75, 90),
                "pcam": (3, 96, 96), "imagenet": (3, 250, 300)}
CASES = ([(p, s) for p in PROTOCOLS for s in (32, 33)]
         + [("pcam", 96), ("pcam", 97), ("imagenet", 224), ("imagenet", 225)])
AUGMENTED = ("cifar", "flowers", "imagenet")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(protocol: str, seed: int = 0) -> torch.Tensor:
    """A random uint8 image with no zero pixel (so zero padding is recognisable)."""
    return torch.randint(1, 256, INPUT_SHAPES[protocol], generator=_gen(seed),
                         dtype=torch.uint8)


def _windows(padded: torch.Tensor, out: torch.Tensor) -> list[tuple[int, int]]:
    """Every (top, left) at which ``out`` is a window of ``padded``."""
    s_h, s_w = out.shape[-2:]
    h, w = padded.shape[-2:]
    return [(t, c) for t in range(h - s_h + 1) for c in range(w - s_w + 1)
            if torch.equal(padded[..., t:t + s_h, c:c + s_w], out)]


def _disc(n: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A disc centred at the image centre ((n - 1) / 2), and the distance of each pixel."""
    c = (n - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32),
                            torch.arange(n, dtype=torch.float32), indexing="ij")
    r = torch.sqrt((yy - c) ** 2 + (xx - c) ** 2)
    return (r <= radius).float()[None, None], r


# ------------------------------------------------------------------ rotate
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("degrees", [0, 90, 180, 270, -90, -180, -270, 360, 450, -450, 720,
                                     990.0])
def test_rotate_multiple_of_90_is_exact_rot90(n, degrees):
    x = torch.rand(2, 3, n, n)
    k = int(degrees // 90) % 4
    out = rotate(x, degrees)
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))
    assert torch.equal(out, rotate_exact(x, k))


def test_rotate_exact_is_counter_clockwise():
    x = torch.zeros(1, 1, 3, 3)
    x[..., 0, 2] = 1  # top-right corner
    out = rotate_exact(x, 1)
    assert out[0, 0, 0, 0] == 1 and out.sum() == 1  # ... goes to the top-left corner


def test_rotate_multiple_of_90_returns_a_copy():
    x = torch.rand(1, 1, 5, 5)
    before = x.clone()
    for degrees in (0, 90, 360):
        out = rotate(x, degrees)
        out.add_(1)
        assert torch.equal(x, before)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, -1])
def test_rotate_tensor_angle_bilinear_matches_rot90(n, k):
    x = torch.rand(2, 3, n, n)
    out = rotate(x, torch.tensor(90.0 * k))
    assert out.shape == x.shape
    torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_rotate_tensor_angle_takes_the_bilinear_path(monkeypatch):
    calls = []
    grid_sample = F.grid_sample

    def spy(*args, **kwargs):
        calls.append(1)
        return grid_sample(*args, **kwargs)

    monkeypatch.setattr(T.F, "grid_sample", spy)
    x = torch.rand(1, 1, 8, 8)
    rotate(x, 90)
    assert calls == []
    rotate(x, torch.tensor(90.0))
    assert calls == [1]
    rotate(x, 30.0)
    assert calls == [1, 1]


@pytest.mark.parametrize("n", [28, 33])
def test_rotate_per_image_angles(n):
    x = torch.rand(1, 2, n, n).expand(6, -1, -1, -1).contiguous()
    angles = torch.tensor([0.0, 90.0, 180.0, 270.0, 450.0, -90.0])
    out = rotate(x, angles)
    for i, k in enumerate([0, 1, 2, 3, 1, 3]):
        torch.testing.assert_close(out[i], torch.rot90(x[i], k, dims=(-2, -1)),
                                   atol=1e-5, rtol=0)


def test_rotate_per_image_angles_match_one_at_a_time():
    x = torch.rand(3, 2, 21, 21)
    angles = torch.tensor([17.0, 45.0, -123.5])
    out = rotate(x, angles)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], rotate(x[i:i + 1], float(angles[i])),
                                   atol=1e-6, rtol=0)
    assert (out - x).abs().mean() > 0.05  # the images did turn


@pytest.mark.parametrize("n", [27, 28, 32, 33])
def test_rotate_45_of_centred_disc_is_the_disc(n):
    radius = n / 3
    disc, r = _disc(n, radius)
    out = rotate(disc, 45.0)
    assert out.shape == disc.shape
    inside, outside = r < radius - 1.5, r > radius + 1.5
    torch.testing.assert_close(out[0, 0][inside], torch.ones(int(inside.sum())),
                               atol=1e-5, rtol=0)
    assert out[0, 0][outside].abs().max() < 1e-6
    assert (out - disc).abs().mean() < 0.03
    assert abs(float(out.sum() / disc.sum()) - 1) < 0.05


def test_rotate_off_centre_content_moves():
    """A blob left of centre goes below the centre under +90° (counter-clockwise)."""
    n = 33
    x = torch.zeros(1, 1, n, n)
    x[..., 15:18, 3:6] = 1
    out = rotate(x, 90.0)
    assert torch.equal(out[..., 27:30, 15:18], torch.ones(1, 1, 3, 3))
    out = rotate(x, torch.tensor([90.0]))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert out[..., 27:30, 15:18].min() > 1 - 1e-5


# ------------------------------------------------------------------ normalize
def test_normalize_per_channel():
    x = torch.rand(2, 3, 4, 5)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    before = x.clone()
    out = normalize(x, mean, std)
    assert out.shape == x.shape
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - mean[c]) / std[c])
    assert torch.equal(x, before)  # not in place


@pytest.mark.parametrize("channels", [1, 3])
def test_normalize_one_value_for_every_channel(channels):
    x = torch.rand(2, channels, 4, 4)
    torch.testing.assert_close(normalize(x, (0.5,), (0.25,)), (x - 0.5) / 0.25)
    torch.testing.assert_close(normalize(x, [0.1], [2.0]), (x - 0.1) / 2.0)


def test_normalize_keeps_dtype():
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    out = normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert out.dtype == torch.float64
    assert math.isclose(float(out[0, 2, 0, 0]), (float(x[0, 2, 0, 0]) - 0.406) / 0.225,
                        rel_tol=1e-12)


# ------------------------------------------------------------------ protocols
@pytest.mark.parametrize(("protocol", "size"), CASES)
def test_train_transform_shape_dtype_range(protocol, size):
    t = train_transform(protocol, size)
    for seed in range(3):
        out = t(_image(protocol, seed), _gen(seed))
        assert out.shape == (3, size, size)
        assert out.dtype == torch.float32
        assert out.is_contiguous()
        assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize(("protocol", "size"), CASES)
def test_test_transform_shape_dtype_range(protocol, size):
    t = eval_transform(protocol, size)
    assert t.random is False
    out = t(_image(protocol), None)
    assert out.shape == (3, size, size)
    assert out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("quarter_turns", [False, True])
@pytest.mark.parametrize("flips", [False, True])
def test_train_transform_random_flag(protocol, quarter_turns, flips):
    t = train_transform(protocol, 32, quarter_turns=quarter_turns, flips=flips)
    expected = protocol in AUGMENTED or quarter_turns
    assert t.random is expected


@pytest.mark.parametrize(("protocol", "size"), CASES)
def test_train_transform_same_seed_same_output(protocol, size):
    t = train_transform(protocol, size, quarter_turns=True)
    image = _image(protocol)
    for seed in (0, 1, 12345):
        assert torch.equal(t(image, _gen(seed)), t(image, _gen(seed)))


@pytest.mark.parametrize(("protocol", "size"), CASES)
def test_train_transform_different_seeds_differ_when_augmented(protocol, size):
    t = train_transform(protocol, size)
    image = _image(protocol)
    outs = [t(image, _gen(seed)) for seed in range(8)]
    distinct = [o for i, o in enumerate(outs) if not any(torch.equal(o, p) for p in outs[:i])]
    if protocol in AUGMENTED:
        assert len(distinct) >= 2
    else:  # resize / pcam: no augmentation, the generator is not even needed
        assert len(distinct) == 1
        assert torch.equal(t(image, None), outs[0])


@pytest.mark.parametrize("protocol", ["resize", "pcam"])
def test_quarter_turns_make_resize_protocols_random_rot90s(protocol):
    size = 32
    plain = train_transform(protocol, size)(_image(protocol), None)
    t = train_transform(protocol, size, quarter_turns=True)
    seen = set()
    for seed in range(16):
        out = t(_image(protocol), _gen(seed))
        ks = [k for k in range(4) if torch.equal(out, torch.rot90(plain, k, dims=(-2, -1)))]
        assert len(ks) == 1
        seen.add(ks[0])
    assert len(seen) >= 2


@pytest.mark.parametrize(("protocol", "size"), CASES)
def test_test_transform_is_deterministic(protocol, size):
    t = eval_transform(protocol, size)
    image = _image(protocol)
    ref = t(image, None)
    for seed in (0, 1, 2):
        assert torch.equal(t(image, _gen(seed)), ref)


def test_uint8_0_and_255_map_to_0_and_1():
    image = torch.randint(0, 2, (3, 28, 28), dtype=torch.uint8) * 255
    out = eval_transform("resize", 28)(image)
    assert out.dtype == torch.float32
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out, (image == 255).float())
    assert torch.equal(to_float(image), out)


@pytest.mark.parametrize(("protocol", "size"), CASES)
@pytest.mark.parametrize("value", [0, 255])
def test_constant_images_map_to_0_and_1(protocol, size, value):
    image = torch.full(INPUT_SHAPES[protocol], value, dtype=torch.uint8)
    target = torch.full((3, size, size), value / 255)
    torch.testing.assert_close(eval_transform(protocol, size)(image), target,
                               atol=1e-6, rtol=0)
    if protocol != "cifar":  # cifar's padding brings in zeros
        out = train_transform(protocol, size, quarter_turns=True)(image, _gen(3))
        torch.testing.assert_close(out, target, atol=1e-6, rtol=0)


def test_float_input_is_kept():
    image = torch.rand(3, 32, 32, dtype=torch.float64)
    out = eval_transform("cifar", 32)(image)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, image.float())


def test_cifar_train_is_resize_then_window_of_padded_image():
    image = _image("cifar")
    t = train_transform("cifar", 32, flips=False)
    padded = F.pad(to_float(image), (4,) * 4)
    tops = set()
    for seed in range(20):
        found = _windows(padded, t(image, _gen(seed)))
        assert len(found) == 1
        tops.add(found[0])
    assert len(tops) >= 5
    # with the flip, some outputs are mirrored windows
    t = train_transform("cifar", 32)
    mirrored = 0
    for seed in range(20):
        out = t(image, _gen(seed))
        plain, flipped = _windows(padded, out), _windows(padded, out.flip(-1))
        assert len(plain) + len(flipped) == 1
        mirrored += len(flipped)
    assert 0 < mirrored < 20


# ------------------------------------------------------------------ per-sample pieces
@pytest.mark.parametrize("size", [32, 33])
def test_pad_random_crop_only_shifts(size):
    image = torch.randint(1, 256, (3, size, size), generator=_gen(1)).float()
    padded = F.pad(image, (4,) * 4)
    tops, lefts = [], []
    for seed in range(400):
        out = pad_random_crop(image, size, 4, _gen(seed))
        assert out.shape == (3, size, size)
        found = _windows(padded, out)
        assert len(found) == 1, "the output is not a window of the zero-padded image"
        tops.append(found[0][0])
        lefts.append(found[0][1])
    # every offset 0..8 occurs, about equally often (expected 400 / 9 ≈ 44 each)
    for offsets in (tops, lefts):
        counts = [offsets.count(o) for o in range(9)]
        assert min(counts) >= 15, counts


def test_pad_random_crop_same_seed_same_window():
    image = torch.rand(3, 16, 16)
    assert torch.equal(pad_random_crop(image, 16, 4, _gen(7)),
                       pad_random_crop(image, 16, 4, _gen(7)))


def test_random_hflip_frequency():
    image = torch.rand(3, 9, 10)
    flipped = 0
    for seed in range(400):
        out = random_hflip(image, _gen(seed))
        if torch.equal(out, image.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out, image)
    assert 150 <= flipped <= 250  # Binomial(400, 1/2): 200 ± 10


def test_random_quarter_turn_frequency_and_exactness():
    image = torch.rand(3, 11, 11)
    counts = [0] * 4
    for seed in range(400):
        out = random_quarter_turn(image, _gen(seed))
        ks = [k for k in range(4) if torch.equal(out, torch.rot90(image, k, dims=(-2, -1)))]
        assert len(ks) == 1, "not an exact quarter turn"
        counts[ks[0]] += 1
    assert min(counts) >= 60 and max(counts) <= 140, counts  # 100 ± 8.7 each


@pytest.mark.parametrize(("shape", "size"), [((3, 40, 50), 32), ((3, 250, 300), 224),
                                              ((1, 20, 20), 33)])
def test_random_resized_crop_size(shape, size):
    image = torch.rand(shape)
    for seed in range(5):
        assert random_resized_crop(image, size, _gen(seed)).shape == (shape[0], size, size)


def test_random_resized_crop_of_constant_is_constant():
    image = torch.full((3, 60, 80), 0.37)
    for seed in range(10):
        out = random_resized_crop(image, 33, _gen(seed))
        torch.testing.assert_close(out, torch.full((3, 33, 33), 0.37), atol=1e-6, rtol=0)


def _spy_resize(monkeypatch) -> list[torch.Tensor]:
    """Record the crops ``random_resized_crop`` resizes (and return them unresized)."""
    crops = []

    def fake_resize(image, size):
        crops.append(image)
        return image

    monkeypatch.setattr(T, "resize", fake_resize)
    return crops


def _ramp(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([yy, xx])


def _check_bounds(crops, h, w, scale, ratio):
    areas, aspects = [], []
    for crop in crops:
        ch, cw = crop.shape[-2:]
        assert 0 < ch <= h and 0 < cw <= w
        slack = 0.5 * (ch + cw) + 1  # cw, ch are rounded
        assert scale[0] * h * w - slack <= ch * cw <= scale[1] * h * w + slack
        aspect, tol = cw / ch, 0.5 / cw + 0.5 / ch + 1e-9
        assert ratio[0] * (1 - tol) <= aspect <= ratio[1] * (1 + tol)
        areas.append(ch * cw / (h * w))
        aspects.append(aspect)
    return areas, aspects


@pytest.mark.parametrize(("scale", "ratio"), [((0.08, 1.0), (3 / 4, 4 / 3)),
                                              ((0.3, 0.5), (0.9, 1.1))])
def test_random_resized_crop_respects_scale_and_ratio(monkeypatch, scale, ratio):
    crops = _spy_resize(monkeypatch)
    h, w = 120, 150
    ramp = _ramp(h, w)
    for seed in range(300):
        random_resized_crop(ramp, 32, _gen(seed), scale, ratio)
    assert len(crops) == 300
    areas, aspects = _check_bounds(crops, h, w, scale, ratio)
    # the bounds are used, not just respected
    assert min(areas) < scale[0] + 0.1 * (scale[1] - scale[0])
    assert max(areas) > scale[1] - 0.25 * (scale[1] - scale[0])
    log_width = math.log(ratio[1]) - math.log(ratio[0])
    assert math.log(min(aspects)) < math.log(ratio[0]) + 0.25 * log_width
    assert math.log(max(aspects)) > math.log(ratio[1]) - 0.25 * log_width
    # every crop is a contiguous window of the image, at varying places
    places = set()
    for crop in crops:
        top, left = int(crop[0, 0, 0]), int(crop[1, 0, 0])
        ch, cw = crop.shape[-2:]
        assert torch.equal(crop, ramp[:, top:top + ch, left:left + cw])
        places.add((top, left))
    assert len(places) > 100


@pytest.mark.parametrize(("protocol", "scale", "ratio"),
                         [("flowers", (0.08, 1.0), (3 / 4, 4 / 3)),
                          ("imagenet", (0.1, 1.0), (0.8, 1.25))])
def test_protocol_crop_bounds(monkeypatch, protocol, scale, ratio):
    crops = _spy_resize(monkeypatch)
    t = train_transform(protocol, 32, flips=False)
    image = torch.zeros(3, 250, 300, dtype=torch.uint8)
    for seed in range(200):
        t(image, _gen(seed))
    assert len(crops) == 200
    areas, aspects = _check_bounds(crops, 250, 300, scale, ratio)
    assert min(areas) < scale[0] + 0.05
    assert min(aspects) < ratio[0] * 1.05 and max(aspects) > ratio[1] / 1.05


@pytest.mark.parametrize(("hw", "window"), [((100, 200), (0, 100, 33, 166)),
                                            ((200, 100), (33, 166, 0, 100))])
def test_random_resized_crop_fallback_is_central(monkeypatch, hw, window):
    """A 100x200 (200x100) image cannot hold a full-area crop of aspect within [3/4, 4/3]:
    after 10 tries, the largest central crop of aspect 4/3 (3/4), i.e. 100 x 133 (133 x 100)."""
    crops = _spy_resize(monkeypatch)
    ramp = _ramp(*hw)
    random_resized_crop(ramp, 32, _gen(0), scale=(1.0, 1.0))
    (crop,) = crops
    top, bottom, left, right = window
    assert crop.shape[-2:] == (bottom - top, right - left)
    assert torch.equal(crop, ramp[:, top:bottom, left:right])


@pytest.mark.parametrize("size", [32, 33, 64])
def test_flowers_test_transform_is_resize_shorter_then_centre_crop(size):
    image = _image("flowers")  # 75 x 90
    shorter = round(size * 8 / 7)
    out = eval_transform("flowers", size)(image)
    expected = center_crop(resize_shorter(to_float(image), shorter), size)
    assert torch.equal(out, expected)
    assert not torch.allclose(out, center_crop(resize_shorter(to_float(image), 256), size))


@pytest.mark.parametrize("size", [224, 225, 32])
def test_imagenet_test_transform_uses_256(size):
    image = _image("imagenet")  # 250 x 300
    out = eval_transform("imagenet", size)(image)
    assert torch.equal(out, center_crop(resize_shorter(to_float(image), 256), size))


@pytest.mark.parametrize(("hw", "shorter", "expected"),
                         [((250, 300), 256, (256, 307)), ((300, 250), 37, (44, 37)),
                          ((75, 90), 37, (37, 44)), ((40, 40), 20, (20, 20))])
def test_resize_shorter_shapes(hw, shorter, expected):
    out = resize_shorter(torch.rand(3, *hw), shorter)
    assert tuple(out.shape) == (3, *expected)


def test_center_crop_window():
    ramp = _ramp(37, 44)
    out = center_crop(ramp, 32)
    assert out.shape == (2, 32, 32)
    assert torch.equal(out, ramp[:, 2:34, 6:38])
    # an image smaller than the crop is zero-padded around it
    small = torch.ones(1, 3, 4)
    out = center_crop(small, 6)
    assert out.shape == (1, 6, 6)
    assert out.sum() == 12 and torch.equal(out[0, 1:4, 1:5], torch.ones(3, 4))


def test_flowers_pattern_is_centred():
    """A bright centre square of a large grey image stays in the centre of the crop."""
    image = torch.zeros(3, 140, 168, dtype=torch.uint8)
    image[:, 50:90, 64:104] = 255  # centred: rows 70 ± 20, columns 84 ± 20
    out = eval_transform("flowers", 32)(image)  # 140 -> 37 (scale 37/140), crop 32
    # the square's centre lands on the crop's centre (15.5 ± 1 px)
    mass = out[0]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = float((mass * yy).sum() / mass.sum()), float((mass * xx).sum() / mass.sum())
    assert abs(cy - 15.5) <= 1 and abs(cx - 15.5) <= 1
    # its side is about 40 * 37 / 140 ≈ 10.6 px
    assert 9 <= float(mass.sum()) ** 0.5 <= 12


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("build", [train_transform, eval_transform])
@pytest.mark.parametrize("protocol", ["mnist", "", "CIFAR"])
def test_bad_protocol_raises(build, protocol):
    with pytest.raises(ValueError, match=re.escape(repr(protocol))):
        build(protocol, 32)


@pytest.mark.parametrize("build", [train_transform, eval_transform])
@pytest.mark.parametrize("size", [0, -3, 32.0, True, "32", None])
def test_bad_size_raises(build, size):
    with pytest.raises(ValueError, match=re.escape(repr(size))):
        build("cifar", size)


# ------------------------------------------------------------------ RotMNIST angles
def test_uniform_angles():
    a = uniform_angles(5000, seed=3)
    assert a.shape == (5000,) and a.dtype == torch.float64
    assert float(a.min()) >= 0 and float(a.max()) < 360
    assert torch.equal(a, uniform_angles(5000, seed=3))
    assert not torch.equal(a, uniform_angles(5000, seed=4))
    assert torch.equal(uniform_angles(10, seed=3), a[:10])
    assert abs(float(a.mean()) - 180) < 6  # sd of the mean: 104 / sqrt(5000) ≈ 1.5
    counts = torch.histc(a, bins=4, min=0, max=360)
    assert float(counts.min()) > 1100 and float(counts.max()) < 1400  # 1250 ± 31


@pytest.mark.parametrize(("mu", "sigma"), [(45.0, 20.0), (0.0, 5.0), (-30.0, 1.0)])
def test_biased_angle_is_normal(mu, sigma):
    g = _gen(11)
    draws = torch.tensor([biased_angle(g, mu, sigma) for _ in range(2000)])
    assert abs(float(draws.mean()) - mu) < 4 * sigma / math.sqrt(2000)
    assert abs(float(draws.std()) / sigma - 1) < 0.1
    inside = ((draws - mu).abs() < sigma).double().mean()
    assert abs(float(inside) - 0.6827) < 0.05
    assert isinstance(biased_angle(g, mu, sigma), float)


def test_biased_angle_defaults_and_seeding():
    a = [biased_angle(_gen(5)) for _ in range(2)]
    assert a[0] == a[1]
    g = _gen(5)
    draws = [biased_angle(g) for _ in range(2000)]
    assert abs(sum(draws) / 2000 - 45) < 4 * 20 / math.sqrt(2000)
