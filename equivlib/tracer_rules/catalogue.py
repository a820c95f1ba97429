"""Which family of rules judges each torch function, by name (what the recorder dispatches
on): metadata, identities, data movement, pointwise ops, reductions, mixing, contractions,
attention, grid ops, factories and random ops."""

from __future__ import annotations

METADATA = {
    "size", "dim", "ndim", "shape", "numel", "stride", "is_contiguous", "dtype", "device",
    "element_size", "is_floating_point", "is_complex", "__len__", "data_ptr",
    "storage_offset", "layout", "requires_grad", "is_leaf", "grad_fn", "is_nested",
    "is_cuda", "is_meta", "is_sparse", "is_quantized", "nelement", "names", "get_device",
    "__hash__", "__repr__", "__format__", "__str__", "_is_view", "is_mkldnn", "grad",
    "output_nr", "_version", "is_inference", "has_names", "is_cpu", "itemsize", "nbytes",
    "requires_grad_", "retain_grad", "__reduce_ex__", "__deepcopy__", "is_mps", "is_xpu",
}
DATA_DEPENDENT = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__",
                  "__array__", "numpy", "nonzero", "argwhere", "unique", "equal", "allclose"}
IDENTITY = {
    "contiguous", "clone", "detach", "detach_", "to", "float", "double", "half", "bfloat16",
    "type", "type_as", "cpu", "cuda", "data", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "positive", "__pos__",
    "requires_grad_", "coalesce", "pin_memory", "as_subclass", "identity",
}
MOVEMENT = {
    "view", "reshape", "permute", "transpose", "swapaxes", "swapdims", "flatten", "unflatten",
    "unsqueeze", "squeeze", "expand", "roll", "flip", "fliplr", "flipud", "rot90", "narrow",
    "select", "movedim", "moveaxis", "t", "T", "mT", "chunk", "split", "tensor_split",
    "split_with_sizes", "unbind", "repeat", "tile", "__getitem__", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "view_as", "reshape_as",
    "expand_as", "unfold", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "atleast_1d", "atleast_2d", "atleast_3d", "ravel", "repeat_interleave", "index_select",
    "gather", "take_along_dim", "diagonal", "broadcast_to", "unsqueeze_copy", "view_copy",
}
POINTWISE = {
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "rsub",
    "floor_divide", "remainder", "fmod", "pow", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__",
    "__rtruediv__", "__itruediv__", "__div__", "__rdiv__", "__idiv__", "__floordiv__",
    "__rfloordiv__", "__mod__", "__pow__", "__rpow__", "__ipow__", "__neg__", "neg",
    "negative", "__abs__", "abs", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "sqrt", "rsqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "atan", "asin", "acos",
    "sigmoid", "relu", "relu6", "gelu", "silu", "hardswish", "hardsigmoid", "hardtanh",
    "elu", "selu", "celu", "leaky_relu", "rrelu", "mish", "softplus", "softsign",
    "logsigmoid", "tanhshrink", "softshrink", "hardshrink", "threshold", "clamp", "clip",
    "clamp_min", "clamp_max", "minimum", "maximum", "fmin", "fmax", "where", "masked_fill",
    "eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
    "__ge__", "logical_and", "logical_or", "logical_not", "logical_xor", "__and__",
    "__or__", "__xor__", "__invert__", "__iand__", "__ior__", "bitwise_and", "bitwise_or",
    "bitwise_not", "sign", "sgn", "square", "erf", "erfc", "reciprocal", "floor", "ceil",
    "round", "trunc", "frac", "lerp", "addcmul", "addcdiv", "nan_to_num", "isnan", "isinf",
    "isfinite", "sigmoid_", "relu_", "silu_", "tanh_", "add_", "sub_", "mul_", "div_",
    "clamp_", "hardtanh_", "leaky_relu_", "elu_", "masked_fill_", "exp_", "pow_", "neg_",
    "abs_", "sqrt_", "hardswish_", "hardsigmoid_", "threshold_", "copysign", "xlogy",
    "logit", "sinc", "float_power", "mvlgamma", "digamma", "lgamma", "heaviside", "hypot",
    "atan2", "arctan2", "logaddexp", "batch_norm", "prelu", "fill_", "zero_", "copy_",
    "clamp_min_", "clamp_max_",
}
PER_CHANNEL = {"batch_norm", "prelu"}  # their parameters run along dim 1
REDUCTIONS = {"mean", "sum", "nansum", "nanmean", "amax", "amin", "max", "min", "prod",
              "logsumexp", "std", "var", "norm", "all", "any", "count_nonzero", "median",
              "nanmedian", "std_mean", "var_mean", "aminmax"}
KEEP_MIXING = {"softmax", "log_softmax", "softmin", "normalize", "layer_norm", "group_norm",
               "instance_norm", "local_response_norm", "rms_norm", "_softmax"}
CONTRACTIONS = {"linear", "matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "mv",
                "einsum", "bilinear"}
ATTENTION = {"multi_head_attention_forward", "scaled_dot_product_attention"}
GRID = {"conv2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d",
        "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
        "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
        "conv_transpose2d", "lp_pool2d"}
FACTORY_LIKE = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like",
                "ones_like", "full_like", "empty_like", "rand_like", "randn_like",
                "randint_like"}
RANDOM = {"empty", "empty_like", "new_empty", "rand", "randn", "randint", "rand_like",
          "randn_like", "randint_like", "normal", "bernoulli", "multinomial", "randperm",
          "empty_strided", "uniform_", "normal_"}
INPLACE_SOURCE = {"fill_", "zero_", "copy_"}
INPLACE_DUNDER = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__", "__ipow__",
                  "__iand__", "__ior__", "__ixor__"}
