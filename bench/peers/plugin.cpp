// The peers plugin's side of peers_plugin.h: the ATen and oneDNN peers behind plain C
// functions. Every C++ exception (c10::Error, dnnl::error, std::bad_alloc) stops here
// and becomes a message. Built with hidden visibility: only the entry point is exported.
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <vector>

#include "peer.hpp"
#include "peers_plugin.h"

struct bnorm_bench_peer {
  std::unique_ptr<bnorm_bench::Peer> peer;
};

namespace bnorm_bench {
namespace {

static_assert(static_cast<int>(Layout::channels_first) == BNORM_BENCH_CHANNELS_FIRST &&
              static_cast<int>(Layout::channels_last) == BNORM_BENCH_CHANNELS_LAST &&
              static_cast<int>(Layout::rows) == BNORM_BENCH_ROWS);
static_assert(static_cast<int>(Norm::batch) == BNORM_BENCH_BATCH &&
              static_cast<int>(Norm::layer) == BNORM_BENCH_LAYER &&
              static_cast<int>(Norm::group) == BNORM_BENCH_GROUP &&
              static_cast<int>(Norm::instance) == BNORM_BENCH_INSTANCE &&
              static_cast<int>(Norm::rms) == BNORM_BENCH_RMS && kNormCount == 5);
static_assert(static_cast<int>(Pass::forward_train) == BNORM_BENCH_FORWARD_TRAIN &&
              static_cast<int>(Pass::inference) == BNORM_BENCH_INFERENCE &&
              static_cast<int>(Pass::backward) == BNORM_BENCH_BACKWARD);

const char *const kNames[] = {"aten", "onednn", "onednn_nChw16c"};
constexpr int32_t kCount = sizeof kNames / sizeof kNames[0];

void set_error(char *error, size_t error_size, const char *message) {
  if (error_size > 0) std::snprintf(error, error_size, "%s", message);
}

// Runs body; 0 when it returned, 1 with the exception's message when it threw.
template <typename Body>
int guarded(char *error, size_t error_size, Body &&body) {
  try {
    body();
    return 0;
  } catch (const std::exception &e) {
    set_error(error, error_size, e.what());
  } catch (...) {
    set_error(error, error_size, "unknown exception");
  }
  return 1;
}

const char *name(int32_t index) { return index >= 0 && index < kCount ? kNames[index] : nullptr; }

bnorm_bench_peer *create(int32_t index, char *error, size_t error_size) {
  bnorm_bench_peer *created = nullptr;
  guarded(error, error_size, [&] {
    std::unique_ptr<Peer> peer;
    switch (index) {
      case 0: peer = make_aten_peer(); break;
      case 1: peer = make_onednn_peer(false); break;
      case 2: peer = make_onednn_peer(true); break;
      default: throw std::out_of_range("no peer with this index");
    }
    created = new bnorm_bench_peer{std::move(peer)};
  });
  return created;
}

void destroy(bnorm_bench_peer *peer) { delete peer; }

int set_threads(bnorm_bench_peer *peer, int32_t threads, char *error, size_t error_size) {
  return guarded(error, error_size, [&] { peer->peer->set_threads(threads); });
}

int supports(const bnorm_bench_peer *peer, int32_t norm, int32_t layout) {
  return peer->peer->supports(static_cast<Norm>(norm), static_cast<Layout>(layout)) ? 1 : 0;
}

int setup(bnorm_bench_peer *peer, int32_t norm, const int64_t *dims, int32_t rank,
          int64_t groups, int32_t layout, char *error, size_t error_size) {
  return guarded(error, error_size, [&] {
    const Problem problem{static_cast<Norm>(norm), Shape{std::vector<int64_t>(dims, dims + rank)},
                          groups};
    peer->peer->setup(problem, static_cast<Layout>(layout));
  });
}

int run(bnorm_bench_peer *peer, int32_t pass, char *error, size_t error_size) {
  return guarded(error, error_size, [&] { peer->peer->run(static_cast<Pass>(pass)); });
}

void teardown(bnorm_bench_peer *peer) {
  char ignored[1];
  guarded(ignored, 0, [&] { peer->peer->teardown(); });
}

const bnorm_bench_peers_api kApi = {BNORM_PEERS_PLUGIN_ABI, kCount, name, create, destroy,
                                    set_threads, supports, setup, run, teardown};

}  // namespace
}  // namespace bnorm_bench

extern "C" __attribute__((visibility("default"))) const bnorm_bench_peers_api *
bnorm_bench_peers_plugin(void) {
  return &bnorm_bench::kApi;
}
