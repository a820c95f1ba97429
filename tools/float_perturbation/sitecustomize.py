"""Imported at start-up by every Python process that has this folder on PYTHONPATH (the
portability pass of ``./run_all.sh --test``): change how floats round, not what is computed.

Convolutions run through ATen's own kernels instead of oneDNN (another summation order, as
on another CPU or BLAS build), and torch starts with one thread instead of all cores (other
reduction splits). A notebook output that nbval compares must not change under this: one
that does holds a number that another reader's machine can move.
"""

import torch

torch.backends.mkldnn.enabled = False
torch.set_num_threads(1)
