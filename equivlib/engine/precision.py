"""The engine's precision policy: mixed precision may train; float32 measures.

Exactness (docs/design.md §2) survives float32 rounding but not bf16/fp16. A 90° rotation permutes
pixels, so an exact network computes the same sums for an image and its rotation, only in
another order: in float32 the logits then differ by rounding (about 1e-7 relative). Under
autocast every layer's output is also rounded to 8 (bf16) or 11 (fp16) significant bits,
and those float32-level differences flip roundings that the next layers carry on. Measured on
the CPU (``benchmarks/precision_table.py``, briefly trained weights): an exact P4 RotMNIST
CNN at 28 and P4 ResNet-20 at 33 move their logits by less than 1e-6 under a quarter turn in
float32, by up to 5e-3 (mean 4e-5 to 2e-4) in bf16 autocast. No test prediction flipped on
those 10-class test sets, but 0.8-1.4 % of their images have two largest logits closer than
that, so an exact model's "seen = unseen" would hold by luck (the margins of the test set),
not by construction; with 1,000 classes (ImageNet) margins are smaller.

The policy, therefore:

- **training** (forward and loss) runs under autocast when asked (``amp``): bf16 on CUDA
  where supported, else fp16 with a gradient scaler; ``amp="bf16"`` asks for bf16 on any
  device, the CPU included. The weights stay float32 (autocast casts per op).
- **everything that measures** runs in float32, outside autocast: the validation pass that
  selects the model, the test at every angle (so ``seen``, ``unseen`` and each quarter turn),
  the mirrored test and the equivariance errors. It costs only the evaluation's share of a
  run's FLOPs: 0.06 % (08), 0.2 % (06), 8 % (07), 28 % (04: 36 test angles) in the paper
  profile (``tools/paper_cost.py``).

On CUDA, PyTorch runs float32 convolutions as TF32 by default (10 significant bits in the
tensor cores; ``torch.backends.cudnn.conv.fp32_precision == "tf32"``), and cuDNN's
transform-based algorithms may round intermediate tiles that are not rotation-symmetric: the
measurements above do not cover that (no GPU was lent for them), so evaluation also switches
TF32 off (:func:`ieee_float32`) for convolutions and matrix products. Training keeps the
default. ``channels_last`` applies to both; it changes memory layout, not rounding.

``Precision(eval_autocast=...)`` evaluates under autocast anyway: it exists to show what the
policy prevents (tests, benchmarks), not for results.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

AMP_CHOICES = (False, True, "bf16", "fp16")
"""Values of ``amp``: off, automatic (CUDA: bf16 where supported, else fp16), or a dtype."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How forward passes run: ``autocast`` is the training dtype (None: float32),
    ``eval_autocast`` the evaluation dtype (None, the policy: float32), ``channels_last``
    the memory format of both."""

    autocast: torch.dtype | None = None
    channels_last: bool = False
    eval_autocast: torch.dtype | None = None

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context of a training forward pass (and its loss)."""
        return _autocast(device, self.autocast)

    def eval_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context of every measuring forward pass: float32 under the policy, even
        inside a caller's autocast region (autocast is switched off for ``device``), and
        IEEE float32 rather than TF32 on CUDA."""
        if self.eval_autocast is not None:
            return _autocast(device, self.eval_autocast)
        return _float32(device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format of the forward passes."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def describe(self) -> str:
        """One line, e.g. ``train bf16 autocast, evaluate float32``."""
        def name(dtype: torch.dtype | None) -> str:
            return "float32" if dtype is None else f"{_short(dtype)} autocast"
        layout = ", channels_last" if self.channels_last else ""
        return f"train {name(self.autocast)}, evaluate {name(self.eval_autocast)}{layout}"


def _short(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in IEEE float32 (no TF32) inside the
    block; the previous settings come back after it."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


@contextlib.contextmanager
def _float32(device: torch.device) -> Iterator[None]:
    with torch.autocast(device_type=device.type, enabled=False):
        if device.type == "cuda":
            with ieee_float32():
                yield
        else:
            yield


def _autocast(device: torch.device, dtype: torch.dtype | None
              ) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_amp(amp: object) -> None:
    """ValueError unless ``amp`` is one of :data:`AMP_CHOICES`."""
    if not isinstance(amp, (bool, str)) or amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")


def resolve_precision(device: torch.device, amp: bool | str = False,
                      channels_last: bool = False) -> tuple[Precision, Any]:
    """The run's :class:`Precision` and gradient scaler (None unless fp16) for ``amp``:

    - False: float32;
    - True: CUDA: bf16 autocast where supported, else fp16 with a ``GradScaler``; on other
      devices a RuntimeWarning and float32 (as before the policy);
    - ``"bf16"`` / ``"fp16"``: that dtype on any device (fp16 with a scaler).

    Evaluation is float32 in every case (the module's docstring says why)."""
    check_amp(amp)
    if amp is False:
        return Precision(None, channels_last), None
    if amp is True:
        if device.type != "cuda":
            warnings.warn("amp is only used on CUDA; training in float32 (the Python API's "
                          "amp='bf16' asks for bf16 autocast on any device)", RuntimeWarning,
                          stacklevel=3)
            return Precision(None, channels_last), None
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = _DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    return Precision(dtype, channels_last), scaler
