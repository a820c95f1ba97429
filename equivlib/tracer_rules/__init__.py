"""The rules of :func:`equivlib.tracer.trace`: which image positions every op reads, and
whether the symmetries of the input (flips of either axis, and the transpose on a square
input: together the 90° rotations and flips) map that structure onto itself.

What the tracer cannot prove symmetric is "unknown" (``exact=None``), never "exact".

**Labels.** Every tensor computed from the input carries, for each element, a *location*:
a point of a sampling grid (the input's pixels, or the output grid of a convolution / pooling /
interpolation), a *region* (the set of points a mixing op merged, e.g. a 2x2 patch merge), or
``CONST`` for values no symmetry moves (constants, zero padding, class tokens, globally pooled
features). Attention scores carry two labels per element (query, key). Each grid is
symmetric about its own centre: whether it is centred in the image is what the grid op that
made it was judged on (docs/design.md §2, at the op's own input size).

**Ops.**

- *Data movement* (view / reshape / permute / transpose / flatten / squeeze / expand,
  ``torch.roll``, flips, indexing and strided slices ``x[..., ::2]``, cat / stack / chunk /
  split, pixel (un)shuffle, ``F.unfold``, pads in either memory layout) only moves values: the
  labels are moved the same way (the op is replayed on them) and nothing is judged there.
  Asymmetric padding of a dim that carries positions is judged at once (not exact), whatever
  the memory layout: the spatial dims are the dims along which the labels vary.
- *Pointwise* ops need every operand to stand for the same location element by element (or
  operand pairs that the symmetries permute consistently). A constant that varies along the
  positions is judged by its values when they are known (masks built in ``forward``: the
  mask must be the same function of the label pair after every symmetry), reported unknown
  when not, and a *parameter* that varies along the positions is a **positional embedding**:
  the grid stays symmetric but invariance needs symmetric weights (``grid_only`` rows; on
  attention scores a parameter is a relative position bias, a kernel-like weight that is
  assumed symmetric like a convolution kernel).
- *Mixing* ops (reductions, softmax, normalisations, matmul / linear / einsum, attention)
  mix groups of positions: the family of groups (with the location each output element
  keeps, e.g. the query) must be mapped onto itself by every symmetry. This is where windows
  are judged: a Swin block's attention mixes the tokens of each window, and after
  ``torch.roll`` by ``s`` on an axis of size ``n`` the windows of size ``w`` (``w | n``) are
  the cyclic intervals ``[k*w + s, (k+1)*w + s) mod n``; mirrored (``x -> n-1-x``) they are
  ``[k*w - s, ...)``: the same family iff ``2s ≡ 0 (mod w)`` (shift 0 or ``w/2``; see
  :func:`equivlib.exactness.shifted_windows_symmetric`). Swin v1 (window 7, shift 3) fails
  it at every size, Swin v2 (window 8, shift 4) passes it. A merge (Swin's
  ``PatchMerging``, a Linear over ``cat(x[0::2, 0::2], x[1::2, 0::2], ...)``) mixes 2x2
  blocks: symmetric iff the size is even. Weights indexed by the position inside a group
  (convolution kernels, relative position bias tables, merge weights) are assumed
  D4-symmetric, as for convolutions; a parameterised contraction over a whole invariant map
  (a flattening classifier head) is reported ``grid_only`` like a positional embedding.
- *Grid ops* (conv2d, pooling, adaptive pooling, interpolation, transposed convolution) are
  judged by their sampling condition at their own input size when their input is a whole
  grid on its last two dims (padded evenly or not at all). When it is a regular sub-lattice
  of a grid (a strided slice ``x[..., 1::2, 1::2]``, a crop, positions overwritten at one
  border, one-sided padding), the op's sample windows are mapped onto that grid and must be
  mirror-symmetric there, and so must the part of the grid the view covers. An input that is
  rearranged otherwise (rolled, transposed, channels-last) is unknown unless the
  rearrangement commutes with the symmetries (a roll by ``n/2``).
- Any deterministic op on values that no symmetry moves (after global pooling) is fine.
  Anything else that touches a tensor computed from the input is "<op> at <layer> not
  judged" (``exact=None``), and so is data-dependent control flow on values that depend on
  position; later grid ops are still judged at their own sizes (so a report can be "not
  exact" after an unknown op, never "exact").

**Reports.** The rows (``TraceRow``): grid ops that subsample or are not exact as before;
``window`` / ``shifted_window`` (attention windows: kernel = window, padding = "shift s"),
``merge`` (a Linear or reduction over blocks), ``interpolate``, ``pad``, ``mask`` rows;
``pos_embedding`` / ``flatten_head`` / ``per_position_weights`` rows with ``grid_only=True``
(exact, and the report's verdict reads ``EXACT (GRID ONLY)``: the grids are symmetric, and
invariance also needs those weights to be symmetric, which the architecture does not
impose); and "<op> at <layer> not judged" rows with ``exact=None``.

**Values.** On the meta device constants have no values; masks built in ``forward`` from
``new_zeros``, ``arange``, slice assignments, ... are recomputed on the CPU as they are built,
and the buffers of the model a meta copy was made of are read from that model.

**Modules**, one per op family: :mod:`.recorder` (the ``TorchFunctionMode``, its bookkeeping
and the dispatch), :mod:`.catalogue` (which family each torch function belongs to),
:mod:`.locations` (grids, regions and their images under the symmetries), :mod:`.tensors`
(what is known of each tensor), :mod:`.movement`, :mod:`.pointwise`, :mod:`.mixing`
(reductions, normalisations, windows, merges), :mod:`.contraction` (linear, matmul, einsum,
attention), :mod:`.grid` and :mod:`.grid_rules` (convolution, pooling, interpolation).
"""

from __future__ import annotations

from equivlib._deprecation import moved_names
from equivlib.tracer_rules.recorder import Recorder

__all__ = ["Recorder"]

# the module's other public names before it became a package (deprecated aliases)
_MOVED = {
    **dict.fromkeys(("CONST", "INVALID", "Space"), "locations"),
    **dict.fromkeys(("CONSTANT", "Info", "OPAQUE", "PARAM", "TRACKED"), "tensors"),
    **dict.fromkeys(("ATTENTION", "CONTRACTIONS", "DATA_DEPENDENT", "FACTORY_LIKE", "GRID",
                     "IDENTITY", "INPLACE_DUNDER", "INPLACE_SOURCE", "KEEP_MIXING",
                     "METADATA", "MOVEMENT", "PER_CHANNEL", "POINTWISE", "RANDOM",
                     "REDUCTIONS"), "catalogue"),
}

__getattr__ = moved_names(__name__, {name: f"{__name__}.{module}"
                                     for name, module in _MOVED.items()})
