// Common interface of the contenders in the kernel table (bench_peers, `bnorm bench
// kernels`): each one owns its buffers, allocates and first-touches them in setup(),
// and run() times nothing itself. A case is one normalization over one shape; a peer
// says which normalizations and layouts it has (supports()), the table shows "-" for
// the others. The runner holds bnorm and the copy directly; ATen
// and oneDNN live in the peers plugin and reach it through the C boundary of
// peers_plugin.h, so this header is compiled on both sides of it.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace bnorm_bench {

// rows: the row-wise norms' one layout, (rows, cols) row-major; the normalized dim is
// the last and contiguous. Not a choice of --layouts.
enum class Layout { channels_first, channels_last, rows };
enum class Pass { forward_train, inference, backward };
// What each reduces over (docs/normalizations.md): batch per channel over (N, spatial);
// layer and rms per row over the last dim; group per (sample, group) over
// (C/G, spatial); instance per (sample, channel) over spatial (group with G = C).
enum class Norm { batch, layer, group, instance, rms };
constexpr int kNormCount = 5;

// dims = (N, C, spatial...); spatial may be empty for (N, C). For layer and rms norm
// (rows..., cols): the last dim is normalized, the others are rows.
struct Shape {
  std::vector<int64_t> dims;
  int64_t n() const { return dims[0]; }
  int64_t c() const { return dims[1]; }
  int64_t spatial() const {
    int64_t s = 1;
    for (size_t i = 2; i < dims.size(); ++i) s *= dims[i];
    return s;
  }
  int64_t numel() const { return n() * c() * spatial(); }
  int64_t cols() const { return dims.back(); }
  int64_t rows() const { return numel() / cols(); }
  std::string str() const;
};

// One problem of the table: a normalization over a shape. groups: group norm's G, and C
// for instance norm (its groups); 0 for the others.
struct Problem {
  Norm norm = Norm::batch;
  Shape shape;
  int64_t groups = 0;
  // True for the norms whose statistics run along rows (layer, rms): Layout::rows only.
  bool row_wise() const { return norm == Norm::layer || norm == Norm::rms; }
};

const char *layout_name(Layout layout);
const char *pass_name(Pass pass);
const char *norm_name(Norm norm);

// Buffers on 64-byte (cache-line) boundaries, as ATen and oneDNN allocate theirs, so
// no peer's timing includes stores split across lines that another's does not.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U> &) {}
  T *allocate(size_t count) {
    void *p = ::operator new(count * sizeof(T), std::align_val_t{64});
    return static_cast<T *>(p);
  }
  void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const CacheLineAllocator<U> &) const { return true; }
};
using Floats = std::vector<float, CacheLineAllocator<float>>;

// Deterministic values in [-1, 1) + offset, so every peer sees the same data.
void fill_pattern(float *data, int64_t count, uint32_t seed, float offset = 0.0f);

class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string name() const = 0;
  // Thread count for the following setup()/run() calls.
  virtual void set_threads(int threads) = 0;
  // False where the peer has no such operation (oneDNN 2.6 has no group norm): the
  // cell shows "-" without a message.
  virtual bool supports(Norm norm, Layout layout) const = 0;
  // Allocates and first-touches the buffers of one problem and layout. Throws (any
  // std::exception) when the peer cannot do it; the cell shows "-" and the message
  // goes to stderr.
  virtual void setup(const Problem &problem, Layout layout) = 0;
  // One call of the pass on the buffers of the last setup(). Throws on failure.
  virtual void run(Pass pass) = 0;
  // Releases the buffers of the last setup().
  virtual void teardown() = 0;
};

// In the runner (bnorm_bench_table).
std::unique_ptr<Peer> make_bnorm_peer();
std::unique_ptr<Peer> make_copy_peer();
// In the plugin (bnorm_bench_peers).
std::unique_ptr<Peer> make_aten_peer();
// blocked: nChw16c (channels-first only); otherwise nchw / nhwc by layout.
std::unique_ptr<Peer> make_onednn_peer(bool blocked);

}  // namespace bnorm_bench
