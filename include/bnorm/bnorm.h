/*
 * bnorm: batch normalization (Ioffe & Szegedy 2015), C API.
 *
 * C99-compatible, cuDNN-like: plain pointers and sizes in, a status code out.
 * The message of a failure is kept per thread and read with bnorm_last_error().
 * A failing call writes nothing: outputs, running buffers and counters are left
 * exactly as they were.
 *
 * Tensors
 *   x holds n*c*spatial values, in (n, c, spatial) order for BNORM_CHANNELS_FIRST
 *   or (n, spatial, c) order for BNORM_CHANNELS_LAST. spatial is the product of the
 *   trailing dims: 1 for (N, C), L for (N, C, L), H*W for (N, C, H, W), D*H*W for
 *   (N, C, D, H, W). Statistics are per channel over the m = n*spatial values.
 *   Per-channel buffers (weight, bias, running_*, save_*, dweight, dbias) hold c values.
 *   Every size must be >= 1 and n*c*spatial must fit in int64_t.
 *
 * The transform (per channel, over the m values)
 *   mean = sum(x) / m,  var = sum((x - mean)^2) / m            (biased)
 *   invstd = 1 / sqrt(var + eps), but 0 when var == 0 and eps == 0 (PyTorch's InvStd:
 *            a constant channel with eps = 0 gives y = bias and dx = 0, not NaN;
 *            inference keeps 1 / sqrt(running_var + eps))
 *   y = weight * (x - mean) * invstd + bias
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)
 *   (PyTorch/cuDNN convention; see BNORM_MOMENTUM_CUMULATIVE and
 *   BNORM_RUNNING_VAR_BIASED for the other conventions.)
 *
 * Momentum conventions of other frameworks
 *   Keras / TF: momentum 0.99 there == momentum 0.01 here (they keep a "keep" factor).
 *   ONNX BatchNormalization (training_mode) and d2l: momentum 0.9 there == 0.1 here,
 *   with BNORM_RUNNING_VAR_BIASED.
 *
 * NaN and Inf (docs/batch_norm.md) propagate as in PyTorch, channel by channel, and
 *   never reach another channel. Training: a NaN or +-Inf among a channel's x makes its
 *   var, save_invstd, running_var, y, dx and dweight NaN; mean, save_mean and
 *   running_mean are sum(x) / m (+Inf or -Inf for infinities of one sign, else NaN);
 *   dbias = sum(dy). A NaN in dy makes the channel's dx, dweight and dbias NaN.
 *   Inference: a NaN or Inf in x or dy reaches the outputs at its own positions (and
 *   the channel's dweight, dbias); a NaN running statistic, weight or bias makes the
 *   channel's y NaN.
 *
 * Aliasing: y may equal x (in-place forward) and dx may equal dy (in-place backward),
 * exactly (same pointer). Any other overlap between a buffer a call writes and any
 * other buffer of the call fails with BNORM_ERROR_OVERLAP, whose message names both
 * (e.g. "y overlaps x (partial overlap; only y == x in place is allowed)"). Extents
 * are [ptr, ptr + count * sizeof(T)) bytes, count = n*c*spatial for tensors, c for
 * per-channel buffers, bnorm_relu_mask_bytes() for a ReLU mask, 1 for
 * num_batches_tracked. Inputs may share memory with each other.
 */
#ifndef BNORM_BNORM_H
#define BNORM_BNORM_H

#include <stdint.h>
#include <bnorm/export.h>

#ifdef __cplusplus
extern "C" {
#endif
BNORM_PUBLIC_BEGIN

/* In C++ the enums name C's underlying type (GCC and clang: unsigned int) explicitly.
   Then any value a C caller passes (layout 7, say) is a value of the type and is
   rejected with an error; without it, loading 7 as a two-value C++ enum is undefined
   behaviour before any check can run. The ABI is C's either way. */
#ifdef __cplusplus
#define BNORM_ENUM_BASE : unsigned int
#else
#define BNORM_ENUM_BASE
#endif

typedef enum BNORM_ENUM_BASE { BNORM_CHANNELS_FIRST = 0, BNORM_CHANNELS_LAST = 1 } bnorm_layout;

typedef enum BNORM_ENUM_BASE {
  BNORM_SUCCESS = 0,
  BNORM_ERROR_NULL_POINTER = 1,    /* a required pointer argument was NULL */
  BNORM_ERROR_INVALID_SHAPE = 2,   /* a size < 1, a bad rank, or an unknown layout */
  BNORM_ERROR_SIZE_OVERFLOW = 3,   /* n * c * spatial does not fit in int64_t */
  BNORM_ERROR_TOO_FEW_VALUES = 4,  /* training with one value per channel (m == 1) */
  BNORM_ERROR_INVALID_VALUE = 5,   /* eps, momentum or another scalar out of range */
  BNORM_ERROR_SHAPE_MISMATCH = 6,  /* a buffer's length disagrees with the channels (C++, Python) */
  BNORM_ERROR_INVALID_STATE = 7,   /* e.g. backward before any training forward (C++, Python) */
  BNORM_ERROR_OUT_OF_MEMORY = 8,   /* scratch memory could not be allocated */
  BNORM_ERROR_INTERNAL = 9,        /* a bug in bnorm: please report it */
  BNORM_ERROR_OVERLAP = 10,        /* an output shares memory with another buffer (Aliasing) */
  BNORM_ERROR_COLLECTIVE = 11      /* SyncBN: a collective failed, or another process refused
                                      its arguments (sync_batch_norm.h) */
} bnorm_status;

/* Momentum sentinel: the cumulative average of every batch seen so far
   (PyTorch's momentum=None): factor = 1 / num_batches_tracked after it is
   incremented. Needs num_batches_tracked, so only the _ex functions take it. */
#define BNORM_MOMENTUM_CUMULATIVE (-1.0)

typedef enum BNORM_ENUM_BASE {
  BNORM_RUNNING_VAR_UNBIASED = 0, /* var * m / (m - 1): PyTorch, cuDNN, the paper */
  BNORM_RUNNING_VAR_BIASED = 1    /* var: ONNX, Keras 3, d2l */
} bnorm_running_var_estimator;

/* How a training forward updates the running statistics. */
typedef struct {
  double momentum;                    /* in [0, 1], or BNORM_MOMENTUM_CUMULATIVE */
  bnorm_running_var_estimator running_var_estimator;
  int64_t *num_batches_tracked;       /* NULL, or incremented by one per call;
                                         required with BNORM_MOMENTUM_CUMULATIVE */
} bnorm_running_stats_update;

/* ---- float32 ------------------------------------------------------------------ */

/* Training forward: batch statistics. weight/bias NULL mean 1 and 0.
   running_mean/running_var NULL: that buffer is not updated.
   save_mean/save_invstd NULL: not saved (backward needs them). */
bnorm_status bnorm_batch_norm_forward_training_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias,
    double eps, double momentum, float *running_mean, float *running_var,
    float *save_mean, float *save_invstd);

/* The same with every running-statistics convention (cumulative average,
   biased running var, num_batches_tracked). update NULL: momentum 0.1, unbiased. */
bnorm_status bnorm_batch_norm_forward_training_ex_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias, double eps,
    const bnorm_running_stats_update *update, float *running_mean, float *running_var,
    float *save_mean, float *save_invstd);

/* Inference forward: y = weight * (x - running_mean) / sqrt(running_var + eps) + bias. */
bnorm_status bnorm_batch_norm_forward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias,
    const float *running_mean, const float *running_var, double eps);

/* Backward of the training forward (the batch statistics depend on x):
     xhat = (x - mean) * invstd,  dbias = sum(dy),  dweight = sum(dy * xhat),
     dx = weight * invstd / m * (m * dy - dbias - xhat * dweight).
   save_mean/save_invstd are what the training forward saved. dx, dweight, dbias:
   NULL means not computed. save_mean serves as a shift: the exact batch mean is
   recovered from x in the same pass, so a float save_mean loses no digits even when
   |mean| >> std. */
bnorm_status bnorm_batch_norm_backward_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *dy, float *dx, const float *weight,
    const float *save_mean, const float *save_invstd,
    float *dweight, float *dbias);

/* Backward of the inference forward (statistics held fixed):
     invstd = 1 / sqrt(running_var + eps),  dx = dy * weight * invstd,
     dweight = sum(dy * (x - running_mean) * invstd),  dbias = sum(dy).
   x, dy, running_mean and running_var are required. */
bnorm_status bnorm_batch_norm_backward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *dy, float *dx, const float *weight,
    const float *running_mean, const float *running_var, double eps,
    float *dweight, float *dbias);

/* ---- fused batch norm + ReLU, float32 ---------------------------------------------
   out = max(bn(x), 0) in one pass over the data (oneDNN's fuse_norm_relu): the forwards
   take the arguments of their plain twins and write out into y (a NaN stays NaN, as
   torch.relu). relu_mask, when not NULL, receives the ReLU's bit mask: bnorm_relu_mask_bytes
   bytes; value i of the tensor (index in memory order, whatever the layout) is bit i % 8
   of byte i / 8, set when !(out_i <= 0); the last byte's unused bits are 0.
   The backwards take dy = d loss / d out and the ReLU's gate from exactly one of y (the
   fused forward's output) and relu_mask (its bit mask; the other NULL): dy_i counts
   where !(y_i <= 0) / the bit is set, and as 0 elsewhere, as torch's threshold_backward.
   dx may equal dy. */

/* Bytes of the ReLU bit mask of n * c * spatial values: ceil(n * c * spatial / 8);
   -1 when a size is negative or the product overflows int64_t. */
int64_t bnorm_relu_mask_bytes(int64_t n, int64_t c, int64_t spatial);

bnorm_status bnorm_batch_norm_relu_forward_training_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias, double eps,
    const bnorm_running_stats_update *update, float *running_mean, float *running_var,
    float *save_mean, float *save_invstd, uint8_t *relu_mask);

bnorm_status bnorm_batch_norm_relu_forward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias,
    const float *running_mean, const float *running_var, double eps, uint8_t *relu_mask);

bnorm_status bnorm_batch_norm_relu_backward_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *y, const uint8_t *relu_mask, const float *dy, float *dx,
    const float *weight, const float *save_mean, const float *save_invstd,
    float *dweight, float *dbias);

bnorm_status bnorm_batch_norm_relu_backward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *y, const uint8_t *relu_mask, const float *dy, float *dx,
    const float *weight, const float *running_mean, const float *running_var, double eps,
    float *dweight, float *dbias);

/* ---- float64: the same functions over double ------------------------------------ */

bnorm_status bnorm_batch_norm_forward_training_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias,
    double eps, double momentum, double *running_mean, double *running_var,
    double *save_mean, double *save_invstd);

bnorm_status bnorm_batch_norm_forward_training_ex_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias, double eps,
    const bnorm_running_stats_update *update, double *running_mean, double *running_var,
    double *save_mean, double *save_invstd);

bnorm_status bnorm_batch_norm_forward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias,
    const double *running_mean, const double *running_var, double eps);

bnorm_status bnorm_batch_norm_backward_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *dy, double *dx, const double *weight,
    const double *save_mean, const double *save_invstd,
    double *dweight, double *dbias);

bnorm_status bnorm_batch_norm_backward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *dy, double *dx, const double *weight,
    const double *running_mean, const double *running_var, double eps,
    double *dweight, double *dbias);

/* ---- fused batch norm + ReLU, float64 --------------------------------------------- */

bnorm_status bnorm_batch_norm_relu_forward_training_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias, double eps,
    const bnorm_running_stats_update *update, double *running_mean, double *running_var,
    double *save_mean, double *save_invstd, uint8_t *relu_mask);

bnorm_status bnorm_batch_norm_relu_forward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias,
    const double *running_mean, const double *running_var, double eps, uint8_t *relu_mask);

bnorm_status bnorm_batch_norm_relu_backward_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *y, const uint8_t *relu_mask, const double *dy, double *dx,
    const double *weight, const double *save_mean, const double *save_invstd,
    double *dweight, double *dbias);

bnorm_status bnorm_batch_norm_relu_backward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *y, const uint8_t *relu_mask, const double *dy, double *dx,
    const double *weight, const double *running_mean, const double *running_var, double eps,
    double *dweight, double *dbias);

/* ---- group norm and instance norm ----------------------------------------------------
   x is (N, C, *spatial) given as for batch norm (layout, n, c, spatial). Group norm's
   `groups` (>= 1) divides c; its statistics are per (sample, group) over the group's
   c / groups channels x spatial values, with the biased variance:
     y = (x - mean) / sqrt(var + eps) * weight[ch] + bias[ch]
   weight, bias: c values or NULL (1 and 0). save_mean, save_rstd: n * groups values at
   n * groups + g, rstd = 1 / sqrt(var + eps); NULL: not saved (the backward needs them).
   eps must be > 0. Instance norm is group norm with groups = c (statistics per sample and
   channel, over spatial); in training it can update running statistics as PyTorch:
     running_mean = (1 - momentum) * running_mean + momentum * (mean over n of the means)
     running_var  = (1 - momentum) * running_var + momentum * (mean over n of the
                    unbiased variances)
   (NULL: not updated); with running statistics and use_input_stats = False it is a
   per-channel map, the _inference functions. y may equal x, dx may equal dy; any other
   overlap is BNORM_ERROR_OVERLAP. docs/normalizations.md has the formulas. */

bnorm_status bnorm_group_norm_forward_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups,
    const float *x, float *y, const float *weight, const float *bias, double eps,
    float *save_mean, float *save_rstd);

/* dx, dweight, dbias: NULL means not computed. */
bnorm_status bnorm_group_norm_backward_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups,
    const float *x, const float *dy, float *dx, const float *weight,
    const float *save_mean, const float *save_rstd, float *dweight, float *dbias);

/* spatial must be > 1 (PyTorch: more than one spatial element when training);
   momentum in [0, 1]. save_mean, save_rstd: n * c values. */
bnorm_status bnorm_instance_norm_forward_training_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias, double eps, double momentum,
    float *running_mean, float *running_var, float *save_mean, float *save_rstd);

bnorm_status bnorm_instance_norm_forward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, float *y, const float *weight, const float *bias,
    const float *running_mean, const float *running_var, double eps);

bnorm_status bnorm_instance_norm_backward_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *dy, float *dx, const float *weight,
    const float *save_mean, const float *save_rstd, float *dweight, float *dbias);

bnorm_status bnorm_instance_norm_backward_inference_f32(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const float *x, const float *dy, float *dx, const float *weight,
    const float *running_mean, const float *running_var, double eps, float *dweight, float *dbias);

/* float64: the same functions over double. */
bnorm_status bnorm_group_norm_forward_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups,
    const double *x, double *y, const double *weight, const double *bias, double eps,
    double *save_mean, double *save_rstd);

bnorm_status bnorm_group_norm_backward_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups,
    const double *x, const double *dy, double *dx, const double *weight,
    const double *save_mean, const double *save_rstd, double *dweight, double *dbias);

bnorm_status bnorm_instance_norm_forward_training_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias, double eps, double momentum,
    double *running_mean, double *running_var, double *save_mean, double *save_rstd);

bnorm_status bnorm_instance_norm_forward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, double *y, const double *weight, const double *bias,
    const double *running_mean, const double *running_var, double eps);

bnorm_status bnorm_instance_norm_backward_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *dy, double *dx, const double *weight,
    const double *save_mean, const double *save_rstd, double *dweight, double *dbias);

bnorm_status bnorm_instance_norm_backward_inference_f64(
    bnorm_layout layout, int64_t n, int64_t c, int64_t spatial,
    const double *x, const double *dy, double *dx, const double *weight,
    const double *running_mean, const double *running_var, double eps, double *dweight, double *dbias);

/* ---- layer norm and RMS norm ---------------------------------------------------------
   x is viewed as (rows, cols): cols = the product of normalized_shape (the trailing dims
   normalized together), rows = everything before them; row-major, contiguous.
   weight, bias, dweight, dbias: cols values (NULL: weight 1, bias 0, not computed);
   save_mean, save_rstd: rows values (NULL in the forwards: not saved; the backwards need
   them). rows, cols >= 1; eps > 0 (RMS norm: PyTorch's eps=None is the dtype's machine
   epsilon, FLT_EPSILON or DBL_EPSILON). y may equal x, dx may equal dy.
   Layer norm, per row: y = (x - mean) / sqrt(var + eps) * weight[j] + bias[j] (biased var).
   RMS norm, per row:   y = x / sqrt(mean(x^2) + eps) * weight[j].
   docs/normalizations.md has the backward formulas. */

bnorm_status bnorm_layer_norm_forward_f32(
    int64_t rows, int64_t cols, const float *x, float *y, const float *weight, const float *bias,
    double eps, float *save_mean, float *save_rstd);

bnorm_status bnorm_layer_norm_backward_f32(
    int64_t rows, int64_t cols, const float *x, const float *dy, float *dx, const float *weight,
    const float *save_mean, const float *save_rstd, float *dweight, float *dbias);

bnorm_status bnorm_rms_norm_forward_f32(
    int64_t rows, int64_t cols, const float *x, float *y, const float *weight, double eps, float *save_rstd);

bnorm_status bnorm_rms_norm_backward_f32(
    int64_t rows, int64_t cols, const float *x, const float *dy, float *dx, const float *weight,
    const float *save_rstd, float *dweight);

bnorm_status bnorm_layer_norm_forward_f64(
    int64_t rows, int64_t cols, const double *x, double *y, const double *weight, const double *bias,
    double eps, double *save_mean, double *save_rstd);

bnorm_status bnorm_layer_norm_backward_f64(
    int64_t rows, int64_t cols, const double *x, const double *dy, double *dx, const double *weight,
    const double *save_mean, const double *save_rstd, double *dweight, double *dbias);

bnorm_status bnorm_rms_norm_forward_f64(
    int64_t rows, int64_t cols, const double *x, double *y, const double *weight, double eps, double *save_rstd);

bnorm_status bnorm_rms_norm_backward_f64(
    int64_t rows, int64_t cols, const double *x, const double *dy, double *dx, const double *weight,
    const double *save_rstd, double *dweight);

/* ---- batch norm folded into the layer before it (inference) ---------------------
   In eval mode batch norm is y = (z - running_mean) * s + beta per channel, with
   s = gamma / sqrt(running_var + eps). When z comes from a convolution or linear layer
   (z = W x + b, output channel c = row c of W) both maps are one layer:
     folded_weight[c, j] = weight[c, j] * s[c]
     folded_bias[c]      = (bias[c] - running_mean[c]) * s[c] + beta[c]
   computed in double and rounded once. weight holds out_channels rows of per_channel
   values: a conv weight (Cout, Cin, kh, kw) has out_channels = Cout and per_channel =
   Cin*kh*kw; a linear weight (out, in) has per_channel = in. bias, gamma, beta NULL mean
   0, 1, 0 (a layer without bias gets one). eps finite and >= 0; running_var[c] + eps must
   be > 0 (a negative variance is refused, naming the channel); a NaN statistic makes
   its channel's outputs NaN. folded_weight may equal weight and folded_bias may equal
   bias (in place); any other overlap is BNORM_ERROR_OVERLAP. */
bnorm_status bnorm_fold_batch_norm_f32(
    int64_t out_channels, int64_t per_channel, const float *weight, const float *bias,
    const float *running_mean, const float *running_var, const float *gamma, const float *beta,
    double eps, float *folded_weight, float *folded_bias);

bnorm_status bnorm_fold_batch_norm_f64(
    int64_t out_channels, int64_t per_channel, const double *weight, const double *bias,
    const double *running_mean, const double *running_var, const double *gamma,
    const double *beta, double eps, double *folded_weight, double *folded_bias);

/* ---- errors, threads, version ---------------------------------------------------- */

/* Message of this thread's last failure ("" if none yet). Valid until the next
   failing call on this thread. */
const char *bnorm_last_error(void);

/* A short constant name for a status, e.g. "BNORM_ERROR_NULL_POINTER". */
const char *bnorm_status_string(bnorm_status status);

/* Threads used by every call. n >= 1 sets it; n <= 0 restores the default (the
   OpenMP default, usually one per core). Results are bitwise identical whatever
   the thread count. */
void bnorm_set_num_threads(int n);
int bnorm_get_num_threads(void);

/* The compiled variant of the kernels this CPU runs: "x86-64-v4 (AVX-512)",
   "x86-64-v3 (AVX2, FMA)" or "x86-64 (SSE2)". With the environment variable
   BNORM_LOG set (not "0"), the first call also prints it to stderr, with the thread
   count and the policies that choose the kernels' paths (docs/kernels.md). */
const char *bnorm_kernel_isa(void);

/* Version as major * 10000 + minor * 100 + patch, and as "major.minor.patch". */
int bnorm_version(void);
const char *bnorm_version_string(void);

BNORM_PUBLIC_END
#ifdef __cplusplus
}
#endif

#endif /* BNORM_BNORM_H */
