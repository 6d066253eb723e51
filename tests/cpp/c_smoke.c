/* Compiled as C99: the headers are C, one forward/backward round trip works, and so does
   SyncBN over a collective written in C (one process: it gives batch norm's values). */
#include <bnorm/bnorm.h>
#include <bnorm/sync_batch_norm.h>

#include <math.h>
#include <stdio.h>

static int alone_allgather(void *context, const double *send, double *recv, int64_t count) {
  int64_t i;
  ++*(int *)context;
  for (i = 0; i < count; ++i) recv[i] = send[i];
  return 0;
}
static int alone_allreduce(void *context, double *values, int64_t count) {
  (void)values;
  (void)count;
  ++*(int *)context;
  return 0;
}

int main(void) {
  float x[6] = {1, 2, 3, 4, 5, 6}, y[6], mean[3], invstd[3], dy[6] = {1, 0, 0, 0, 0, 1}, dx[6];
  float running_mean[3] = {0, 0, 0}, running_var[3] = {1, 1, 1};
  int i;
  /* (N=2, C=3): channel 0 holds {1, 4}: mean 2.5, biased var 2.25 */
  bnorm_status s = bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, 2, 3, 1, x, y, NULL,
                                                         NULL, 1e-5, 0.1, running_mean,
                                                         running_var, mean, invstd);
  if (s != BNORM_SUCCESS) { fprintf(stderr, "forward: %s\n", bnorm_last_error()); return 1; }
  if (fabsf(mean[0] - 2.5f) > 1e-6f || fabsf(y[0] + 1.0f) > 1e-4f ||
      fabsf(running_mean[0] - 0.25f) > 1e-6f || fabsf(running_var[0] - 1.35f) > 1e-6f) {
    fprintf(stderr, "forward values wrong: mean %g y %g rm %g rv %g\n", mean[0], y[0],
            running_mean[0], running_var[0]);
    return 1;
  }
  s = bnorm_batch_norm_backward_f32(BNORM_CHANNELS_FIRST, 2, 3, 1, x, dy, dx, NULL, mean, invstd,
                                    NULL, NULL);
  if (s != BNORM_SUCCESS) { fprintf(stderr, "backward: %s\n", bnorm_last_error()); return 1; }
  for (i = 0; i < 6; ++i) if (!isfinite(dx[i])) return 1;
  s = bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, 2, 3, 1, NULL, y, NULL, NULL,
                                            1e-5, 0.1, NULL, NULL, NULL, NULL);
  if (s != BNORM_ERROR_NULL_POINTER) return 1;
  {
    int calls = 0;
    float sy[6], smean[3], sinvstd[3];
    bnorm_collective alone = {&calls, 0, 1, alone_allgather, alone_allreduce};
    s = bnorm_sync_batch_norm_forward_training_f32(&alone, BNORM_CHANNELS_FIRST, 2, 3, 1, x, sy,
                                                   NULL, NULL, 1e-5, NULL, NULL, NULL, smean,
                                                   sinvstd);
    if (s != BNORM_SUCCESS) { fprintf(stderr, "sync forward: %s\n", bnorm_last_error()); return 1; }
    s = bnorm_sync_batch_norm_backward_f32(&alone, BNORM_CHANNELS_FIRST, 2, 3, 1, x, dy, dx, NULL,
                                           smean, sinvstd, NULL, NULL);
    if (s != BNORM_SUCCESS) { fprintf(stderr, "sync backward: %s\n", bnorm_last_error()); return 1; }
    if (calls != 2 || smean[0] != mean[0] || sy[0] != y[0]) {
      fprintf(stderr, "sync: %d calls, mean %g (want %g)\n", calls, smean[0], mean[0]);
      return 1;
    }
  }
  printf("c smoke: ok (%s; last error: %s)\n", bnorm_version_string(), bnorm_last_error());
  return 0;
}
