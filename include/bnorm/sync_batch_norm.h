/*
 * bnorm: synchronized batch norm (SyncBN), C API, independent of any communication
 * library.
 *
 * When a batch is split across processes, each process holds a slice: nr of the
 * N = sum(nr) samples. SyncBN normalizes every slice with the statistics of the whole
 * batch, so the K processes together compute exactly what one process computes on the
 * concatenated batch (bnorm.h's batch norm: formulas, conventions, aliasing, NaN).
 *
 * The processes talk through a bnorm_collective the caller supplies: the MPI one of
 * bnorm's src/dist (bnorm::dist::MpiCommunicator), or the caller's own over NCCL, Gloo
 * or anything else. Per call, each function makes exactly one collective call:
 *
 *   forward (training):  every process reduces its slice to (count, mean, M2) per
 *     channel in double; ONE allgather of them; every process merges the K parts with
 *     Chan's formula in rank order 0, 1, ..., K-1, so every process holds the same bits
 *     of the global statistics; then it normalizes its slice. Running statistics use the
 *     global count (unbiased: M2 / (N_global * spatial - 1)).
 *   backward:  every process sums (dy, dy * (x - save_mean), x - save_mean) per channel
 *     over its slice; ONE allreduce-sum of them; then dx of its slice. dweight and dbias
 *     are the global ones (those of one-process batch norm on the concatenated batch,
 *     the same on every process): a data-parallel trainer must not sum them again.
 *
 * Every process calls the same function, in the same order, with the same c, spatial,
 * layout, eps and update settings. A process may hold an empty slice (n = 0; x, y, dy
 * and dx may then be NULL): it still joins the collective, and nothing divides by its
 * zero count. Each process's arguments are checked before the collective, and the
 * verdict travels inside it: when any process refuses its arguments, every process
 * returns BNORM_ERROR_COLLECTIVE (the refusing one its own status and message) and no
 * process writes anything: no process waits for a peer that gave up.
 *
 * Inference needs no communication: use bnorm_batch_norm_forward_inference_*. As in
 * PyTorch's SyncBatchNorm, a module in eval mode without running statistics uses its
 * local batch's statistics (bnorm_batch_norm_forward_training_* without buffers).
 */
#ifndef BNORM_SYNC_BATCH_NORM_H
#define BNORM_SYNC_BATCH_NORM_H

#include <bnorm/bnorm.h>
#include <bnorm/export.h>

#ifdef __cplusplus
extern "C" {
#endif
BNORM_PUBLIC_BEGIN

/* The most channels a SyncBN call takes (each process's forward message is 2 + 2c
   doubles, and it receives one from every process): a larger c is
   BNORM_ERROR_INVALID_SHAPE. */
#define BNORM_SYNC_MAX_CHANNELS (1 << 20)

/* The collective calls SyncBN needs. Every function returns 0 on success; any other
   value fails the SyncBN call with BNORM_ERROR_COLLECTIVE, naming the code. Both must
   give the same bits on every process (a sum in rank order does; so does MPI_Reduce
   followed by MPI_Bcast). */
typedef struct bnorm_collective {
  void *context;
  int rank; /* this process, 0 <= rank < size */
  int size; /* the processes sharing the batch, >= 1 */
  /* recv[r * count + i] = process r's send[i], for every r, on every process. */
  int (*allgather_f64)(void *context, const double *send, double *recv, int64_t count);
  /* values[i] = the sum over processes of their values[i], in place. */
  int (*allreduce_sum_f64)(void *context, double *values, int64_t count);
} bnorm_collective;

/* Doubles one forward (training) call moves per process: 2 + 2 * c through allgather
   (its verdict and count, then each channel's mean and M2). */
int64_t bnorm_sync_batch_norm_forward_doubles(int64_t c);
/* Doubles one backward call all-reduces: 2 + 3 * c (verdict, count, three sums per
   channel). */
int64_t bnorm_sync_batch_norm_backward_doubles(int64_t c);

/* Training forward over the global batch. Arguments as
   bnorm_batch_norm_forward_training_ex_* (update NULL: momentum 0.1, unbiased); n >= 0
   is this process's slice. The global batch needs more than one value per channel. */
bnorm_status bnorm_sync_batch_norm_forward_training_f32(
    const bnorm_collective *collective, bnorm_layout layout, int64_t n, int64_t c,
    int64_t spatial, const float *x, float *y, const float *weight, const float *bias,
    double eps, const bnorm_running_stats_update *update, float *running_mean,
    float *running_var, float *save_mean, float *save_invstd);

/* Backward of it: arguments as bnorm_batch_norm_backward_*, save_mean and save_invstd
   those the forward saved (the same on every process). dweight and dbias, when not
   NULL, receive the global gradients. */
bnorm_status bnorm_sync_batch_norm_backward_f32(
    const bnorm_collective *collective, bnorm_layout layout, int64_t n, int64_t c,
    int64_t spatial, const float *x, const float *dy, float *dx, const float *weight,
    const float *save_mean, const float *save_invstd, float *dweight, float *dbias);

bnorm_status bnorm_sync_batch_norm_forward_training_f64(
    const bnorm_collective *collective, bnorm_layout layout, int64_t n, int64_t c,
    int64_t spatial, const double *x, double *y, const double *weight, const double *bias,
    double eps, const bnorm_running_stats_update *update, double *running_mean,
    double *running_var, double *save_mean, double *save_invstd);

bnorm_status bnorm_sync_batch_norm_backward_f64(
    const bnorm_collective *collective, bnorm_layout layout, int64_t n, int64_t c,
    int64_t spatial, const double *x, const double *dy, double *dx, const double *weight,
    const double *save_mean, const double *save_invstd, double *dweight, double *dbias);

BNORM_PUBLIC_END
#ifdef __cplusplus
}
#endif

#endif /* BNORM_SYNC_BATCH_NORM_H */
