"""bnorm: batch normalization done properly, over numpy.

PyTorch names, numpy arrays:

    import numpy as np, bnorm
    bn = bnorm.BatchNorm2d(64)            # eps=1e-5, momentum=0.1, affine, running stats
    y = bn(x)                             # x: (N, 64, H, W) float32, training mode
    dx = bn.backward(dy)                  # fills bn.grad_weight, bn.grad_bias
    bn.eval(); y = bn(x)                  # running statistics

    y = bnorm.batch_norm(x, running_mean, running_var, training=True)  # functional
    y = bnorm.batch_norm_relu(x, running_mean, running_var, training=True)  # fused ReLU

SyncBatchNorm over mpi4py (python/bnorm/sync.py), under mpirun:

    bn = bnorm.SyncBatchNorm(64)          # comm=None: MPI.COMM_WORLD
    y = bn(x_slice); dx = bn.backward(dy_slice)   # the whole batch's statistics

The rest of the family, with torch.nn's names and defaults (python/bnorm/norms.py):

    ln = bnorm.LayerNorm(768)             # also RMSNorm(768, eps=None), GroupNorm(32, 256),
    y = ln(x); dx = ln.backward(dy)       # InstanceNorm1d/2d/3d(64, affine=False, ...)
    y = bnorm.layer_norm(x, (768,), w, b)             # like F.layer_norm; also rms_norm,
    y, mean, rstd = bnorm.layer_norm_training(x, (768,), w, b)  # group_norm, instance_norm
    dx, dw, db = bnorm.layer_norm_backward(x, dy, (768,), mean, rstd, w)

Batch norm folded into the conv / linear layer before it, for inference (folding.py):

    w2, b2 = bnorm.fold_batch_norm(conv_w, conv_b, bn.running_mean, bn.running_var,
                                   bn.weight, bn.bias, bn.eps)
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
from .folding import fold_batch_norm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .sync import MPICollective, SyncBatchNorm
from .norm_functional import (
    group_norm,
    group_norm_backward,
    group_norm_training,
    instance_norm,
    instance_norm_backward,
    instance_norm_backward_inference,
    instance_norm_training,
    layer_norm,
    layer_norm_backward,
    layer_norm_training,
    rms_norm,
    rms_norm_backward,
    rms_norm_training,
)
from .norms import (
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    RMSNorm,
)

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
    "SyncBatchNorm",
    "MPICollective",
    "layer_norm",
    "layer_norm_training",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_training",
    "rms_norm_backward",
    "group_norm",
    "group_norm_training",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_training",
    "instance_norm_backward",
    "instance_norm_backward_inference",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "fold_batch_norm",
    "set_num_threads",
    "get_num_threads",
    "kernel_isa",
    "__version__",
]
