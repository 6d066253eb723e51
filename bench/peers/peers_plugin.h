/* The C boundary between the kernel table's runner (bench_peers, `bnorm bench
 * kernels`) and the peers plugin, the shared module that holds the peers needing
 * libtorch and oneDNN. The runner dlopen()s the plugin, so `bnorm` does not load
 * libtorch (about a second at start-up) for train or evaluate, and builds without it.
 * Only C types cross: the plugin may be compiled with another libstdc++ ABI
 * (-D_GLIBCXX_USE_CXX11_ABI, set by torch's CMake target) than the runner, and no
 * exception may unwind through it. */
#ifndef BNORM_BENCH_PEERS_PLUGIN_H
#define BNORM_BENCH_PEERS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Raised on any change to the table below; the runner refuses another version. */
#define BNORM_PEERS_PLUGIN_ABI 2
/* The one exported symbol: const bnorm_bench_peers_api *bnorm_bench_peers_plugin(void). */
#define BNORM_PEERS_PLUGIN_ENTRY "bnorm_bench_peers_plugin"

/* The values of bnorm_bench::Layout, bnorm_bench::Pass and bnorm_bench::Norm. */
enum { BNORM_BENCH_CHANNELS_FIRST = 0, BNORM_BENCH_CHANNELS_LAST = 1, BNORM_BENCH_ROWS = 2 };
enum { BNORM_BENCH_FORWARD_TRAIN = 0, BNORM_BENCH_INFERENCE = 1, BNORM_BENCH_BACKWARD = 2 };
enum {
  BNORM_BENCH_BATCH = 0,
  BNORM_BENCH_LAYER = 1,
  BNORM_BENCH_GROUP = 2,
  BNORM_BENCH_INSTANCE = 3,
  BNORM_BENCH_RMS = 4
};

typedef struct bnorm_bench_peer bnorm_bench_peer; /* one peer instance, opaque */

/* The functions that can fail return 0 on success; otherwise nonzero, with a
 * NUL-terminated message in error[0, error_size). Mirrors bnorm_bench::Peer. */
typedef struct bnorm_bench_peers_api {
  int32_t abi; /* BNORM_PEERS_PLUGIN_ABI */
  int32_t count; /* peers offered, indices 0 .. count-1 */
  /* "aten", "onednn" (nchw / nhwc by layout), "onednn_nChw16c" */
  const char *(*name)(int32_t index);
  bnorm_bench_peer *(*create)(int32_t index, char *error, size_t error_size);
  void (*destroy)(bnorm_bench_peer *peer);
  int (*set_threads)(bnorm_bench_peer *peer, int32_t threads, char *error, size_t error_size);
  /* 1 when the peer has this normalization in this layout, else 0. */
  int (*supports)(const bnorm_bench_peer *peer, int32_t norm, int32_t layout);
  /* dims: (N, C, spatial...) or (rows..., cols), rank >= 2 values; groups: group
     norm's G, C for instance norm, else 0. */
  int (*setup)(bnorm_bench_peer *peer, int32_t norm, const int64_t *dims, int32_t rank,
               int64_t groups, int32_t layout, char *error, size_t error_size);
  int (*run)(bnorm_bench_peer *peer, int32_t pass, char *error, size_t error_size);
  void (*teardown)(bnorm_bench_peer *peer);
} bnorm_bench_peers_api;

typedef const bnorm_bench_peers_api *(*bnorm_bench_peers_entry)(void);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_BENCH_PEERS_PLUGIN_H */
