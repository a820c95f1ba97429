"""Helper for layout tests (imported like ``fakes``): a tensor in the layouts the layers see."""

import torch


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` with the same values in one of the layouts the layers see: ``as_given`` (as it
    is; for a contiguous group map, the channel-major fold), or ``nchw`` / ``channels_last``:
    a 4-D tensor in that memory format, and a group map ``(B, C, |G|, H, W)`` as the
    orientation-major view of one (what the layers themselves produce)."""
    if layout == "as_given":
        return x
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if x.dim() == 4:
        return x.contiguous(memory_format=fmt)
    b, c, g, h, w = x.shape
    folded = x.transpose(1, 2).reshape(b, g * c, h, w).contiguous(memory_format=fmt)
    return folded.view(b, g, c, h, w).transpose(1, 2)
