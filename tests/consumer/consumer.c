/* A C program using an installed bnorm (tests/install/run builds it against the install
   prefix with find_package and with pkg-config): the C API's forward and backward give
   the formula's values, a bad argument comes back as a status with a message naming it,
   and the version the header promises is the library's. */
#include <bnorm/bnorm.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  /* (N=4, C=2) channels-first: channel 0 = {1, 2, 3, 4}, channel 1 = {10, 10, 10, 14} */
  const float x[8] = {1, 10, 2, 10, 3, 10, 4, 14};
  float y[8], mean[2], invstd[2], running_mean[2] = {0, 0}, running_var[2] = {1, 1};
  float dy[8] = {1, 0, 0, 0, 0, 0, 0, 1}, dx[8], dweight[2], dbias[2];
  bnorm_status s = bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, 4, 2, 1, x, y,
                                                         NULL, NULL, 0.0, 0.1, running_mean,
                                                         running_var, mean, invstd);
  if (s != BNORM_SUCCESS) { fprintf(stderr, "forward: %s\n", bnorm_last_error()); return 1; }
  /* channel 0: mean 2.5, biased var 1.25; y[0] = (1 - 2.5) / sqrt(1.25) */
  if (fabsf(mean[0] - 2.5f) > 1e-6f || fabsf(y[0] - (float)(-1.5 / sqrt(1.25))) > 1e-6f ||
      fabsf(running_var[0] - (0.9f + 0.1f * 1.25f * 4.0f / 3.0f)) > 1e-6f) {
    fprintf(stderr, "forward values wrong: mean %g y %g running_var %g\n", mean[0], y[0],
            running_var[0]);
    return 1;
  }
  s = bnorm_batch_norm_backward_f32(BNORM_CHANNELS_FIRST, 4, 2, 1, x, dy, dx, NULL, mean, invstd,
                                    dweight, dbias);
  if (s != BNORM_SUCCESS) { fprintf(stderr, "backward: %s\n", bnorm_last_error()); return 1; }
  if (fabsf(dbias[0] - 1.0f) > 1e-6f || fabsf(dbias[1] - 1.0f) > 1e-6f) {
    fprintf(stderr, "backward values wrong: dbias %g %g\n", dbias[0], dbias[1]);
    return 1;
  }
  /* a bad argument: a status, a message naming it, nothing written */
  y[0] = 42.0f;
  s = bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, 4, 0, 1, x, y, NULL, NULL,
                                            1e-5, 0.1, NULL, NULL, NULL, NULL);
  if (s == BNORM_SUCCESS || strstr(bnorm_last_error(), "c") == NULL || y[0] != 42.0f) {
    fprintf(stderr, "c = 0 was accepted or y written (status %d: %s)\n", (int)s,
            bnorm_last_error());
    return 1;
  }
  printf("bnorm %s (C): forward, backward and the error path work; kernels %s\n",
         bnorm_version_string(), bnorm_kernel_isa());
  return 0;
}
