#include "dist/sync_batch_norm.h"

#include <algorithm>
#include <new>
#include <optional>
#include <string>

#include "kernels/batch_norm.h"
#include "norm/batch_norm_steps.h"
#include "norm/overlap.h"
#include "norm/threads.h"
#include "norm/validation.h"

namespace bnorm::dist {
namespace {

using kernels::BackwardSums;
using kernels::Geometry;
using kernels::Moments;
using norm::fail;
using norm::str;

struct MomentsTag {};
struct SumsTag {};
struct MessageTag {};

// The collective itself must be usable before any process can tell the others anything:
// a broken one fails here, locally.
void check_collective(const char* op, const bnorm_collective* collective) {
  norm::require(collective, op, "collective");
  if (collective->size < 1 || collective->rank < 0 || collective->rank >= collective->size)
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "collective rank must be in [0, size) and size >= 1, got rank " +
             str(collective->rank) + " of size " + str(collective->size));
  if (!collective->allgather_f64 || !collective->allreduce_sum_f64)
    fail(BNORM_ERROR_NULL_POINTER, op,
         "collective allgather_f64 and allreduce_sum_f64 must not be NULL");
}

// This process's slice: n >= 0 (an empty slice still joins the collective); c and
// spatial as batch norm's.
Geometry check_slice(const char* op, const norm::Problem& p) {
  if (p.n < 0) fail(BNORM_ERROR_INVALID_SHAPE, op, "n must be >= 0 (this process's slice), got " + str(p.n));
  norm::Problem at_least_one = p;
  if (p.n == 0) at_least_one.n = 1;
  Geometry g = norm::check_problem(op, at_least_one);
  if (g.c > BNORM_SYNC_MAX_CHANNELS)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         "c must be <= BNORM_SYNC_MAX_CHANNELS (" + str(BNORM_SYNC_MAX_CHANNELS) +
             ") for SyncBN, got " + str(g.c));
  g.n = p.n;
  return g;
}

// The collective's verdict on the arguments: each process's message starts with 0
// (accepted) or its status; a process that refused rethrows its own error, the others
// name the first that refused. `messages`: `ranks` messages of `doubles` each.
void check_verdicts(const char* op, const double* messages, int64_t doubles, int ranks,
                    int rank, const bnorm::Error* own) {
  if (own) throw *own;
  for (int r = 0; r < ranks; ++r)
    if (const double v = messages[r * doubles]; v != 0) {
      // A status as the peer sent it; anything else (a peer of another build) is named so.
      const auto status = v >= 1 && v <= 64 ? static_cast<bnorm_status>(static_cast<int>(v))
                                            : BNORM_ERROR_INTERNAL;
      fail(BNORM_ERROR_COLLECTIVE, op,
           "process " + str(r) + " refused its arguments (" + bnorm_status_string(status) +
               "; its own error says why); this process (rank " + str(rank) +
               ") wrote nothing");
    }
}

// The channels a refusing process's message is sized by: the caller's c, within the
// bounds every accepted call has (a c out of them is refused by every process alike).
int64_t message_channels(int64_t c) {
  return std::clamp<int64_t>(c, 0, BNORM_SYNC_MAX_CHANNELS);
}

void check_rc(const char* op, const char* function, int rc) {
  if (rc != 0)
    fail(BNORM_ERROR_COLLECTIVE, op,
         std::string("collective ") + function + " returned " + str(rc) + " (nothing written)");
}

}  // namespace

// ---- forward ------------------------------------------------------------------------

template <class T>
void sync_forward_training(const char* op, const bnorm_collective* collective,
                           const norm::Problem& p, const T* x, T* y, const T* weight,
                           const T* bias, double eps, const bnorm_running_stats_update& update,
                           T* running_mean, T* running_var, T* save_mean, T* save_invstd,
                           const bnorm::Error* caller_refused) {
  check_collective(op, collective);
  const int ranks = collective->size;
  // 1. Check this process's arguments and reduce its slice; a refusal is kept, not
  //    thrown, until every process has heard of it.
  Geometry g{};
  double factor = 0;
  double* message = nullptr;
  Moments* moments = nullptr;
  T* coefficients = nullptr;
  const std::optional<bnorm::Error> refused = refusal_of(op, caller_refused, [&] {
    g = check_slice(op, p);
    if (g.n > 0) {
      norm::require(x, op, "x");
      norm::require(y, op, "y");
    }
    norm::check_eps(op, eps);
    factor = norm::check_update(op, update);
    const int64_t count = g.n * g.c * g.spatial;
    message = norm::scratch<MessageTag, double>(
        static_cast<size_t>(forward_message_doubles(g.c) * (ranks + 1)));
    moments = norm::scratch<MomentsTag, Moments>(static_cast<size_t>(g.c));
    coefficients = norm::Coefficients<T>(g.c, 4).storage;
    norm::check_no_overlap(
        op,
        {norm::buffer_of("x", x, count, false), norm::buffer_of("y", y, count, true),
         norm::buffer_of("weight", weight, g.c, false), norm::buffer_of("bias", bias, g.c, false),
         norm::buffer_of("running_mean", running_mean, g.c, true),
         norm::buffer_of("running_var", running_var, g.c, true),
         norm::buffer_of("save_mean", save_mean, g.c, true),
         norm::buffer_of("save_invstd", save_invstd, g.c, true),
         norm::buffer_of("num_batches_tracked", update.num_batches_tracked, 1, true)},
        "y", "x");
  });
  // A refusal before the channel count is known sends a message of the caller's c, as
  // every other process does (c must agree across processes).
  const int64_t c = refused ? message_channels(p.c) : g.c;
  if (refused)
    message = norm::scratch<MessageTag, double>(
        static_cast<size_t>(forward_message_doubles(c) * (ranks + 1)));
  const int64_t doubles = forward_message_doubles(c);
  double* send = message;
  double* recv = message + doubles;
  if (!refused) {
    if (g.n > 0) kernels::batch_norm_moments(g, x, moments, norm::num_threads());
    send[1] = static_cast<double>(g.n * g.spatial);
    for (int64_t ch = 0; ch < c; ++ch) {
      send[2 + ch] = moments[ch].mean;
      send[2 + c + ch] = moments[ch].m2;
    }
  }
  send[0] = refused ? static_cast<double>(refused->status()) : 0.0;

  // 2. One collective: every process's [verdict, count, mean[c], m2[c]].
  check_rc(op, "allgather_f64", collective->allgather_f64(collective->context, send, recv, doubles));
  check_verdicts(op, recv, doubles, ranks, collective->rank, refused ? &*refused : nullptr);

  // 3. Chan's merge in rank order: the same bits on every process.
  for (int64_t ch = 0; ch < c; ++ch) {
    Moments merged;
    for (int r = 0; r < ranks; ++r) {
      const double* part = recv + r * doubles;
      merged = kernels::merge(merged, Moments{part[1], part[2 + ch], part[2 + c + ch]});
    }
    moments[ch] = merged;
  }
  const double global_count = c > 0 ? moments[0].count : 0;
  if (global_count <= 1)
    fail(BNORM_ERROR_TOO_FEW_VALUES, op,
         "Expected more than 1 value per channel in the global batch when training, got " +
             str(global_count) + " over " + str(ranks) + " processes (nothing written)");

  // 4. Coefficients, then this process's slice.
  const norm::TrainingAffine<T> affine{weight,           bias,
                                       eps,              coefficients,
                                       coefficients + c, coefficients + 2 * c,
                                       coefficients + 3 * c, save_mean,
                                       save_invstd};
  for (int64_t ch = 0; ch < c; ++ch) affine(ch, moments[ch]);
  if (g.n > 0)
    kernels::batch_norm_apply(
        g, x, y, kernels::ChannelAffine<T>{affine.hi, affine.lo, affine.scale, affine.shift},
        norm::num_threads());
  norm::update_running_stats(moments, c, factor, update.running_var_estimator, running_mean,
                             running_var);
  if (update.num_batches_tracked) ++*update.num_batches_tracked;
}

// ---- backward -----------------------------------------------------------------------

template <class T>
void sync_backward(const char* op, const bnorm_collective* collective, const norm::Problem& p,
                   const T* x, const T* dy, T* dx, const T* weight, const T* save_mean,
                   const T* save_invstd, T* dweight, T* dbias, const bnorm::Error* caller_refused) {
  check_collective(op, collective);
  Geometry g{};
  double* message = nullptr;
  BackwardSums* sums = nullptr;
  T* coefficients = nullptr;
  const std::optional<bnorm::Error> refused = refusal_of(op, caller_refused, [&] {
    g = check_slice(op, p);
    if (g.n > 0) {
      norm::require(x, op, "x");
      norm::require(dy, op, "dy");
    }
    norm::require(save_mean, op, "save_mean");
    norm::require(save_invstd, op, "save_invstd");
    const int64_t count = g.n * g.c * g.spatial;
    message = norm::scratch<MessageTag, double>(static_cast<size_t>(backward_message_doubles(g.c)));
    sums = norm::scratch<SumsTag, BackwardSums>(static_cast<size_t>(g.c));
    coefficients = norm::Coefficients<T>(g.c, 4).storage;
    norm::check_no_overlap(
        op,
        {norm::buffer_of("x", x, count, false), norm::buffer_of("dy", dy, count, false),
         norm::buffer_of("dx", dx, count, true), norm::buffer_of("weight", weight, g.c, false),
         norm::buffer_of("save_mean", save_mean, g.c, false),
         norm::buffer_of("save_invstd", save_invstd, g.c, false),
         norm::buffer_of("dweight", dweight, g.c, true), norm::buffer_of("dbias", dbias, g.c, true)},
        "dx", "dy");
  });
  const int64_t c = refused ? message_channels(p.c) : g.c;
  if (refused)
    message = norm::scratch<MessageTag, double>(static_cast<size_t>(backward_message_doubles(c)));
  const int64_t doubles = backward_message_doubles(c);
  // Every process joins the collective, even one asked for no output at all.
  if (!refused) {
    message[1] = static_cast<double>(g.n * g.spatial);
    if (g.n > 0) {
      kernels::batch_norm_backward_sums(g, x, dy, save_mean, sums, norm::num_threads());
      for (int64_t ch = 0; ch < c; ++ch) {
        message[2 + ch] = sums[ch].dy_sum;
        message[2 + c + ch] = sums[ch].dy_xc_sum;
        message[2 + 2 * c + ch] = sums[ch].xc_sum;
      }
    }
  }
  // The sum of the verdicts is 0 exactly when every process accepted its arguments.
  message[0] = refused ? 1.0 : 0.0;

  check_rc(op, "allreduce_sum_f64", collective->allreduce_sum_f64(collective->context, message, doubles));
  if (refused) throw *refused;
  if (message[0] != 0)
    fail(BNORM_ERROR_COLLECTIVE, op,
         str(message[0]) + " other process(es) refused their arguments (their own errors say "
         "why); this process (rank " + str(collective->rank) + ") wrote nothing");
  const double m = message[1];
  if (m < 1)
    fail(BNORM_ERROR_INVALID_VALUE, op, "the global batch is empty (every process has n = 0)");

  const norm::BackwardAffineMaker<T> affine{m,
                                            weight,
                                            save_mean,
                                            save_invstd,
                                            coefficients,
                                            coefficients + c,
                                            coefficients + 2 * c,
                                            coefficients + 3 * c,
                                            dweight,
                                            dbias};
  for (int64_t ch = 0; ch < c; ++ch)
    affine(ch, BackwardSums{message[2 + ch], message[2 + c + ch], message[2 + 2 * c + ch]});
  if (dx && g.n > 0)
    kernels::batch_norm_backward_apply(
        g, x, dy, dx,
        kernels::BackwardAffine<T>{save_mean, affine.lo, affine.k, affine.q, affine.r},
        norm::num_threads());
}

#define BNORM_INSTANTIATE(T)                                                                   \
  template void sync_forward_training<T>(const char*, const bnorm_collective*,                 \
                                         const norm::Problem&, const T*, T*, const T*,         \
                                         const T*, double, const bnorm_running_stats_update&,  \
                                         T*, T*, T*, T*, const bnorm::Error*);                 \
  template void sync_backward<T>(const char*, const bnorm_collective*, const norm::Problem&,   \
                                 const T*, const T*, T*, const T*, const T*, const T*, T*, T*, \
                                 const bnorm::Error*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::dist
