// OpenMP's waiting policy for the bnorm command.
//
// A training step runs about a hundred short parallel regions (every layer, every
// GEMM, every batch norm kernel). libgomp's default lets a thread that reaches a
// barrier spin for a while; on a machine where another process takes a core, the
// spinning thread burns the time slice its preempted partner needs, and every
// region waits a scheduler tick: measured here, LeNet-BN with 2 threads fell from
// ~20k to ~500 examples/sec while a test suite ran on the other core. With
// OMP_WAIT_POLICY=passive waiting threads sleep instead (3.5k under the same load).
// libgomp reads the variable once, when it loads, before main(); so when the user
// has not chosen a policy, bnorm sets it and re-executes itself, once.
#pragma once

namespace bnorm::cli {

// Returns only if the environment already says what to do (or re-exec failed).
void ensure_openmp_wait_policy(char** argv);

}  // namespace bnorm::cli
