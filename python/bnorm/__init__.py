"""bnorm: batch normalization done properly, over numpy.

PyTorch names, numpy arrays:

    import numpy as np, bnorm
    bn = bnorm.BatchNorm2d(64)            # eps=1e-5, momentum=0.1, affine, running stats
    y = bn(x)                             # x: (N, 64, H, W) float32, training mode
    dx = bn.backward(dy)                  # fills bn.grad_weight, bn.grad_bias
    bn.eval(); y = bn(x)                  # running statistics

    y = bnorm.batch_norm(x, running_mean, running_var, training=True)  # functional
    y = bnorm.batch_norm_relu(x, running_mean, running_var, training=True)  # fused ReLU
"""
from . import _bnorm
from .functional import (
    batch_norm,
    batch_norm_backward,
    batch_norm_backward_inference,
    batch_norm_relu,
    batch_norm_relu_backward,
    batch_norm_relu_backward_inference,
    batch_norm_relu_training,
    batch_norm_training,
)
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d

__version__ = _bnorm.__version__
set_num_threads = _bnorm.set_num_threads
get_num_threads = _bnorm.get_num_threads
kernel_isa = _bnorm.kernel_isa

__all__ = [
    "batch_norm",
    "batch_norm_training",
    "batch_norm_backward",
    "batch_norm_backward_inference",
    "batch_norm_relu",
    "batch_norm_relu_training",
    "batch_norm_relu_backward",
    "batch_norm_relu_backward_inference",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "set_num_threads",
    "get_num_threads",
    "kernel_isa",
    "__version__",
]
