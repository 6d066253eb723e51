// bnorm: batch normalization, C++ API (and, through norms.hpp at the end, the family).
//
// The same operations as the C API (bnorm.h; formulas and conventions are documented
// there), with tensor shapes instead of flat sizes, spans whose lengths are checked,
// and a bnorm::Error exception instead of a status code. On top of them, BatchNorm<T>:
// a module owning weight, bias, running statistics and train/eval mode, like
// torch.nn.BatchNorm{1,2,3}d.
//
//   bnorm::BatchNorm<float> bn(64);                        // 64 channels
//   bnorm::TensorView<const float> x{data, {32, 64, 28, 28}};
//   bnorm::TensorView<float> y{out, {32, 64, 28, 28}};
//   bn.forward(x, y);                                       // training mode by default
//   bn.backward(x, dy, dx);                                 // fills bn.grad_weight(), bn.grad_bias()
//   bn.eval();  bn.forward(x, y);                           // running statistics
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>  // Error, Layout, RunningVar
#include <bnorm/sync_batch_norm.h>  // bnorm_collective (BatchNorm::synchronize)
#include <bnorm/tensor_view.hpp>  // TensorView

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

BNORM_PUBLIC_BEGIN
namespace bnorm {

// How a training forward updates running statistics. momentum nullopt = cumulative
// average (PyTorch's momentum=None), which needs num_batches_tracked.
struct RunningStatsUpdate {
  std::optional<double> momentum = 0.1;
  RunningVar running_var = RunningVar::unbiased;
  int64_t* num_batches_tracked = nullptr;  // incremented per call when not null
};

// ---- functional API: an empty span means "not given" (weight 1, bias 0, buffer not
// updated, output not computed). Per-channel spans hold C values. ----------------

template <class T>
void batch_norm_forward_training(const TensorView<const T>& x, const TensorView<T>& y, std::span<const T> weight,
                                 std::span<const T> bias, double eps,
                                 const RunningStatsUpdate& update, std::span<T> running_mean,
                                 std::span<T> running_var, std::span<T> save_mean,
                                 std::span<T> save_invstd);

template <class T>
void batch_norm_forward_inference(const TensorView<const T>& x, const TensorView<T>& y,
                                  std::span<const T> weight, std::span<const T> bias,
                                  std::span<const T> running_mean,
                                  std::span<const T> running_var, double eps);

// dx.data == nullptr: dx not computed.
template <class T>
void batch_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy, const TensorView<T>& dx,
                         std::span<const T> weight, std::span<const T> save_mean,
                         std::span<const T> save_invstd, std::span<T> dweight,
                         std::span<T> dbias);

template <class T>
void batch_norm_backward_inference(const TensorView<const T>& x, const TensorView<const T>& dy,
                                   const TensorView<T>& dx, std::span<const T> weight,
                                   std::span<const T> running_mean,
                                   std::span<const T> running_var, double eps,
                                   std::span<T> dweight, std::span<T> dbias);

// ---- fused batch norm + ReLU (bnorm.h: out = max(bn(x), 0), one pass) -----------------
// relu_mask: empty, or bnorm_relu_mask_bytes(N, C, spatial) bytes receiving the ReLU's bit
// mask. The backwards take dy = d loss / d out and the gate from exactly one of y (the
// fused forward's output; y.data == nullptr: not given) and relu_mask (empty: not given).

template <class T>
void batch_norm_relu_forward_training(const TensorView<const T>& x, const TensorView<T>& y,
                                      std::span<const T> weight, std::span<const T> bias,
                                      double eps, const RunningStatsUpdate& update,
                                      std::span<T> running_mean, std::span<T> running_var,
                                      std::span<T> save_mean, std::span<T> save_invstd,
                                      std::span<uint8_t> relu_mask);

template <class T>
void batch_norm_relu_forward_inference(const TensorView<const T>& x, const TensorView<T>& y,
                                       std::span<const T> weight, std::span<const T> bias,
                                       std::span<const T> running_mean,
                                       std::span<const T> running_var, double eps,
                                       std::span<uint8_t> relu_mask);

template <class T>
void batch_norm_relu_backward(const TensorView<const T>& x, const TensorView<const T>& y,
                              std::span<const uint8_t> relu_mask, const TensorView<const T>& dy,
                              const TensorView<T>& dx, std::span<const T> weight,
                              std::span<const T> save_mean, std::span<const T> save_invstd,
                              std::span<T> dweight, std::span<T> dbias);

template <class T>
void batch_norm_relu_backward_inference(const TensorView<const T>& x,
                                        const TensorView<const T>& y,
                                        std::span<const uint8_t> relu_mask,
                                        const TensorView<const T>& dy, const TensorView<T>& dx,
                                        std::span<const T> weight,
                                        std::span<const T> running_mean,
                                        std::span<const T> running_var, double eps,
                                        std::span<T> dweight, std::span<T> dbias);

// ---- the module ----------------------------------------------------------------------

struct BatchNormOptions {
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // nullopt: cumulative average
  bool affine = true;                    // false: no weight and bias
  bool track_running_stats = true;       // false: batch statistics in eval mode too
  RunningVar running_var = RunningVar::unbiased;
};

// Where a BatchNorm<T> keeps its parameters and buffers when they live in memory its
// caller owns (BatchNorm::use_state): each span holds num_features values, or is empty
// where the module has none (weight and bias without affine, the running statistics
// without track_running_stats); num_batches_tracked is null exactly when there are no
// running statistics.
template <class T>
struct BatchNormState {
  std::span<T> weight, bias, running_mean, running_var;
  int64_t* num_batches_tracked = nullptr;
};

template <class T>  // float or double
class BatchNorm {
 public:
  explicit BatchNorm(int64_t num_features, BatchNormOptions options = {});

  // y = BN(x); y.data may equal x.data. Training mode (or no running statistics):
  // batch statistics, running statistics updated in training mode, statistics saved
  // for backward. Eval mode: running statistics.
  void forward(const TensorView<const T>& x, const TensorView<T>& y);

  // Gradient of the last forward, whose input was x (same sizes and layout; it must not
  // have changed since). dx.data may be nullptr (not computed) or equal dy.data.
  // Fills grad_weight() and grad_bias() when affine.
  void backward(const TensorView<const T>& x, const TensorView<const T>& dy, const TensorView<T>& dx);

  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }

  // The mode switch, as torch.nn.BatchNorm's: forward normalizes with the batch's
  // statistics in training mode or when there are no running statistics, and updates
  // the running statistics (and counts the batch) in training mode when there are.
  bool uses_batch_statistics() const { return training_ || !options_.track_running_stats; }
  bool updates_running_stats() const { return training_ && options_.track_running_stats; }

  int64_t num_features() const { return num_features_; }
  const BatchNormOptions& options() const { return options_; }

  // Parameters (empty when !affine), buffers (empty when !track_running_stats), grads.
  std::span<T> weight() { return borrowed_ ? borrowed_->weight : std::span<T>(weight_); }
  std::span<T> bias() { return borrowed_ ? borrowed_->bias : std::span<T>(bias_); }
  std::span<T> running_mean() {
    return borrowed_ ? borrowed_->running_mean : std::span<T>(running_mean_);
  }
  std::span<T> running_var() {
    return borrowed_ ? borrowed_->running_var : std::span<T>(running_var_);
  }
  std::span<const T> weight() const {
    return borrowed_ ? std::span<const T>(borrowed_->weight) : std::span<const T>(weight_);
  }
  std::span<const T> bias() const {
    return borrowed_ ? std::span<const T>(borrowed_->bias) : std::span<const T>(bias_);
  }
  std::span<const T> running_mean() const {
    return borrowed_ ? std::span<const T>(borrowed_->running_mean)
                     : std::span<const T>(running_mean_);
  }
  std::span<const T> running_var() const {
    return borrowed_ ? std::span<const T>(borrowed_->running_var)
                     : std::span<const T>(running_var_);
  }
  std::span<const T> grad_weight() const { return grad_weight_; }
  std::span<const T> grad_bias() const { return grad_bias_; }
  int64_t num_batches_tracked() const {
    return borrowed_ && borrowed_->num_batches_tracked ? *borrowed_->num_batches_tracked
                                                       : num_batches_tracked_;
  }
  void set_num_batches_tracked(int64_t count);
  // Like assigning bn.momentum in PyTorch (std::nullopt: the cumulative average);
  // throws bnorm::Error outside [0, 1].
  void set_momentum(std::optional<double> momentum);
  // Like assigning bn.eps in PyTorch; throws bnorm::Error unless finite and >= 0.
  void set_eps(double eps);

  // SyncBN (sync_batch_norm.hpp): from now on training-mode forwards, and their
  // backwards, normalize with the statistics of the batch split across `collective`'s
  // processes, one collective each; nullptr: this process's batch alone. The collective
  // must stay valid while the module uses it. Every process must call forward and
  // backward in the same order.
  void synchronize(const bnorm_collective* collective) { collective_ = collective; }
  const bnorm_collective* collective() const { return collective_; }

  // From now on keep weight, bias, the running statistics and num_batches_tracked in
  // `state`, memory the caller owns (a binding's arrays): its contents are the state
  // (nothing is copied), every call reads and writes it in place, and the accessors
  // above return it. It must stay valid while the module uses it, and share no byte
  // with another buffer of a call (bnorm.h's aliasing rule); a later use_state replaces
  // it. Throws bnorm::Error, changing nothing, when a span's length or the counter's
  // presence does not match the module (BatchNormState).
  void use_state(const BatchNormState<T>& state);

  // running_mean = 0, running_var = 1, num_batches_tracked = 0.
  void reset_running_stats();
  // weight = 1, bias = 0, and reset_running_stats().
  void reset_parameters();

 private:
  enum class Saved { nothing, batch_statistics, running_statistics, global_statistics };

  // The batch counter: use_state's when given, else the module's own.
  int64_t* counter() {
    return borrowed_ && borrowed_->num_batches_tracked ? borrowed_->num_batches_tracked
                                                       : &num_batches_tracked_;
  }

  int64_t num_features_;
  BatchNormOptions options_;
  bool training_ = true;
  std::vector<T> weight_, bias_, running_mean_, running_var_;  // unused after use_state
  int64_t num_batches_tracked_ = 0;
  std::optional<BatchNormState<T>> borrowed_;
  const bnorm_collective* collective_ = nullptr;
  std::vector<T> save_mean_, save_invstd_, grad_weight_, grad_bias_;
  Saved saved_ = Saved::nothing;
  std::vector<int64_t> saved_sizes_;
  Layout saved_layout_ = Layout::channels_first;
};

extern template class BatchNorm<float>;
extern template class BatchNorm<double>;

// ---- batch norm folded into the conv or linear layer before it (bnorm.h has the
// formulas). weight: shape (out_channels, ...), channels-first, e.g. conv (Cout, Cin, kh,
// kw) or linear (out, in); folded_weight has the same sizes and layout. bias, gamma, beta:
// empty or one value per output channel (empty: 0, 1, 0); running statistics and
// folded_bias: one per channel.
// folded_weight may be weight's memory and folded_bias bias's (in place).
template <class T>
void fold_batch_norm(const TensorView<const T>& weight, std::span<const T> bias,
                     std::span<const T> running_mean, std::span<const T> running_var,
                     std::span<const T> gamma, std::span<const T> beta, double eps,
                     const TensorView<T>& folded_weight, std::span<T> folded_bias);

// ---- threads and version ----------------------------------------------------------------

inline void set_num_threads(int n) { bnorm_set_num_threads(n); }
inline int get_num_threads() { return bnorm_get_num_threads(); }
inline const char* version() { return bnorm_version_string(); }
inline const char* kernel_isa() { return bnorm_kernel_isa(); }

}  // namespace bnorm
BNORM_PUBLIC_END

// The normalization family beside batch norm: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.
#include <bnorm/norms.hpp>
