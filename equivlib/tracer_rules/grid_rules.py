"""The sampling condition of each grid op at its own input size, from its arguments: the
row to report, the geometry of its output grid and the windows it reads on each axis.
Convolutions (padding as numbers, 'valid' or 'same'), max / avg / lp pooling (ceil_mode
included), adaptive pooling, interpolation (nearest, bilinear, bicubic as PyTorch samples;
other modes unknown) and transposed convolutions (exact iff no output_padding)."""

from __future__ import annotations

import math

import numpy as np

from equivlib.exactness import (
    adaptive_windows,
    as_pair,
    is_exact,
    pool_windows,
    windows_symmetric,
)


def _bind(args: tuple, kwargs: dict, names: list[str], defaults: dict) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


def _conv_windows(n, k, s, p, d, out) -> list[tuple[int, int]]:
    """The input indices [lo, hi) each output of a convolution reads (padding included)."""
    return [(s * i - p, s * i - p + d * (k - 1) + 1) for i in range(out)]


def _mapped_symmetric(windows, a: float, b: float, offset: int, n: int) -> bool:
    """Are windows (index units of a view whose index i is grid coordinate a + b*(i-offset))
    mirror-symmetric about the centre of the grid of size n?"""
    def coord(t):
        return a + b * (t - offset)
    spans = sorted((coord(lo), coord(hi - 1)) for lo, hi in windows)
    mirrored = sorted((n - 1 - hi, n - 1 - lo) for lo, hi in spans)
    return all(abs(x[0] - y[0]) < 1e-9 and abs(x[1] - y[1]) < 1e-9
               for x, y in zip(spans, mirrored, strict=True))


def _conv_rule(op, args, kwargs, size, out_size):
    b = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "dilation",
                             "groups"], {"stride": 1, "padding": 0, "dilation": 1})
    k, s, d = as_pair(tuple(b["weight"].shape[-2:])), as_pair(b["stride"]), as_pair(b["dilation"])
    padding = b["padding"]
    if isinstance(padding, str):
        if padding == "valid":
            p = (0, 0)
        else:  # 'same' (stride 1 only in PyTorch): the left side gets the smaller half
            totals = [d[i] * (k[i] - 1) for i in range(2)]
            symmetric = all(t % 2 == 0 for t in totals)
            note = "" if symmetric else \
                "padding='same' with an even effective kernel pads one side more"
            geometry = "identity" if symmetric else ("same", tuple(totals))
            windows = tuple(_conv_windows(size[i], k[i], 1, totals[i] // 2, d[i], out_size[i])
                            for i in range(2))
            return dict(op=op, input_size=size, kernel=k, stride=s, padding="same",
                        dilation=d, exact=symmetric, note=note), geometry, windows
    else:
        p = as_pair(padding)
    exact = all(is_exact(size[i], k[i], s[i], p[i], d[i]) for i in range(2))
    offsets = tuple(d[i] * (k[i] - 1) / 2 - p[i] for i in range(2))
    # outputs centred at the same input coordinates stand for the same positions, whichever
    # op made them (a strided conv and its pooled shortcut)
    geometry = "identity" if s == (1, 1) and offsets == (0, 0) else ("sample", offsets, s)
    windows = tuple(_conv_windows(size[i], k[i], s[i], p[i], d[i], out_size[i])
                    for i in range(2))
    return dict(op=op, input_size=size, kernel=k, stride=s, padding=p, dilation=d,
                exact=exact), geometry, windows


def _pool_rule(op, args, kwargs, size, out_size):
    names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
    if op in ("avg_pool2d",):
        names = ["input", "kernel_size", "stride", "padding", "ceil_mode"]
    if op == "lp_pool2d":
        names = ["input", "norm_type", "kernel_size", "stride", "ceil_mode"]
    b = _bind(args, kwargs, names, defaults)
    k = as_pair(b["kernel_size"])
    s = as_pair(b["stride"]) if b["stride"] not in (None, (), []) else k
    p, d, ceil = as_pair(b["padding"]), as_pair(b["dilation"]), bool(b["ceil_mode"])
    exact = all(
        windows_symmetric(pool_windows(size[i], k[i], s[i], p[i], d[i], ceil), size[i])
        for i in range(2)
    )
    offsets = tuple(d[i] * (k[i] - 1) / 2 - p[i] for i in range(2))
    geometry = "identity" if s == (1, 1) and offsets == (0, 0) and out_size == size else \
        ("sample", offsets, s)
    windows = tuple(pool_windows(size[i], k[i], s[i], p[i], d[i], ceil) for i in range(2))
    return dict(op=op.replace("_with_indices", ""), input_size=size, kernel=k, stride=s,
                padding=p, dilation=d, exact=exact, note="ceil_mode" if ceil else ""), \
        geometry, windows


def _adaptive_rule(op, args, kwargs, size, out_size):
    out = tuple(int(v) for v in out_size)
    if out == size:
        return None, "identity", None
    windows = tuple(adaptive_windows(size[i], out[i]) for i in range(2))
    exact = all(windows_symmetric(windows[i], size[i]) for i in range(2))
    stride = tuple(max(1, size[i] // out[i]) for i in range(2))
    return dict(op=op.replace("_with_indices", ""), input_size=size, kernel=None,
                stride=stride, padding=None, exact=exact,
                note=f"output {out[0]}x{out[1]}"), ("adaptive", out), windows


def _sample_positions(n: int, out: int, mode: str, align_corners, scale) -> list[float]:
    """Source coordinate of each output sample along one axis, as PyTorch computes it."""
    if mode in ("nearest", "nearest-exact"):
        r = np.float32(n / out if scale is None else 1.0 / scale)
        offset = np.float32(0.5 if mode == "nearest-exact" else 0.0)
        return [float(min(math.floor(np.float32((np.float32(i) + offset) * r)), n - 1))
                for i in range(out)]
    if align_corners:
        return [i * (n - 1) / (out - 1) if out > 1 else 0.0 for i in range(out)]
    r = n / out if scale is None else 1.0 / scale
    return [(i + 0.5) * r - 0.5 for i in range(out)]


def _interpolate_rule(op, args, kwargs, size, out_size):
    names = ["input", "size", "scale_factor", "mode", "align_corners",
             "recompute_scale_factor", "antialias"]
    b = _bind(args, kwargs, names, {"size": None, "scale_factor": None, "mode": "nearest",
                                    "align_corners": None, "recompute_scale_factor": None})
    mode = b["mode"]
    if op == "upsample_bilinear":
        mode, b["align_corners"] = "bilinear", True
    out = tuple(int(v) for v in out_size)
    scales = (None, None)
    if b["size"] is None and b["scale_factor"] is not None and not b["recompute_scale_factor"]:
        sf = b["scale_factor"]
        scales = tuple(float(v) for v in sf) if isinstance(sf, (tuple, list)) else \
            (float(sf), float(sf))
    if mode == "area":
        exact = True
    elif mode in ("nearest", "nearest-exact", "bilinear", "bicubic"):
        exact = True
        for i in range(2):
            pos = _sample_positions(size[i], out[i], mode, b["align_corners"], scales[i])
            mirrored = [size[i] - 1 - v for v in reversed(pos)]
            if any(abs(a - c) > 1e-9 * max(1, size[i]) for a, c in zip(pos, mirrored,
                                                                       strict=True)):
                exact = False
    else:
        return dict(op="interpolate", input_size=size, exact=None,
                    note=f"interpolate ({mode}) not judged", show=True), ("interp", mode), None
    note = f"{mode} to {out[0]}x{out[1]}" + ("" if exact else
                                              ": sample positions not mirror-symmetric")
    windows = None
    if mode != "area":
        windows = tuple([(v, v + 1) for v in _sample_positions(
            size[i], out[i], mode, b["align_corners"], scales[i])] for i in range(2))
    return dict(op="interpolate", input_size=size, exact=exact, note=note, show=True), \
        ("interp", mode, b["align_corners"], scales), windows


def _conv_transpose_rule(op, args, kwargs, size, out_size):
    b = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "output_padding",
                             "groups", "dilation"],
              {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1})
    k, s = as_pair(tuple(b["weight"].shape[-2:])), as_pair(b["stride"])
    p, op_pad = as_pair(b["padding"]), as_pair(b["output_padding"])
    # the adjoint of a convolution from the output size back to n: its sample centres are
    # symmetric iff ((n-1)s + output_padding) % s == 0, i.e. iff output_padding == 0
    exact = op_pad == (0, 0)
    return dict(op=op, input_size=size, kernel=k, stride=s, padding=p, exact=exact,
                note="" if exact else f"output_padding {op_pad[0]}x{op_pad[1]}", show=True), \
        ("convT", k, s, p, op_pad), None


_GRID_RULES = {
    "conv2d": _conv_rule,
    "max_pool2d": _pool_rule,
    "max_pool2d_with_indices": _pool_rule,
    "avg_pool2d": _pool_rule,
    "lp_pool2d": _pool_rule,
    "adaptive_avg_pool2d": _adaptive_rule,
    "adaptive_max_pool2d": _adaptive_rule,
    "adaptive_max_pool2d_with_indices": _adaptive_rule,
    "interpolate": _interpolate_rule,
    "upsample": _interpolate_rule,
    "upsample_nearest": _interpolate_rule,
    "upsample_bilinear": _interpolate_rule,
    "conv_transpose2d": _conv_transpose_rule,
}
