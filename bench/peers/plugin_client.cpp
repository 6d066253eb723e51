#include "plugin_client.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "peers_plugin.h"

// The plugin's path in the build tree, from CMake; empty when the build made none.
#ifndef BNORM_PEERS_PLUGIN_PATH
#error "CMake defines BNORM_PEERS_PLUGIN_PATH"
#endif

namespace bnorm_bench {
namespace {

// A peer of the plugin, driven through its C functions; errors come back as
// std::runtime_error, as from any peer.
class PluginPeer final : public Peer {
 public:
  PluginPeer(const bnorm_bench_peers_api &api, int32_t index, bnorm_bench_peer *peer)
      : api_(api), name_(api.name(index)), peer_(peer) {}
  ~PluginPeer() override { api_.destroy(peer_); }
  PluginPeer(const PluginPeer &) = delete;
  PluginPeer &operator=(const PluginPeer &) = delete;

  std::string name() const override { return name_; }
  void set_threads(int threads) override {
    check(api_.set_threads(peer_, threads, error_, sizeof error_));
  }
  bool supports(Norm norm, Layout layout) const override {
    return api_.supports(peer_, static_cast<int32_t>(norm), static_cast<int32_t>(layout)) != 0;
  }
  void setup(const Problem &problem, Layout layout) override {
    const Shape &shape = problem.shape;
    check(api_.setup(peer_, static_cast<int32_t>(problem.norm), shape.dims.data(),
                     static_cast<int32_t>(shape.dims.size()), problem.groups,
                     static_cast<int32_t>(layout), error_, sizeof error_));
  }
  void run(Pass pass) override {
    check(api_.run(peer_, static_cast<int32_t>(pass), error_, sizeof error_));
  }
  void teardown() override { api_.teardown(peer_); }

 private:
  void check(int status) const {
    if (status != 0) throw std::runtime_error(error_);
  }
  const bnorm_bench_peers_api &api_;
  std::string name_;
  bnorm_bench_peer *peer_;
  char error_[512] = {};
};

const bnorm_bench_peers_api &load_api() {
  const char *from_environment = std::getenv("BNORM_PEERS_PLUGIN");
  const std::string path = from_environment ? from_environment : BNORM_PEERS_PLUGIN_PATH;
  if (path.empty())
    throw PluginUnavailable("this build made no peers plugin (it needs libtorch and oneDNN "
                            "found by CMake, and BNORM_BUILD_PEERS on)");
  void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) throw PluginUnavailable(dlerror());
  auto entry = reinterpret_cast<bnorm_bench_peers_entry>(
      dlsym(library, BNORM_PEERS_PLUGIN_ENTRY));
  if (!entry) throw PluginUnavailable(path + ": no " BNORM_PEERS_PLUGIN_ENTRY " in it");
  const bnorm_bench_peers_api *api = entry();
  if (!api || api->abi != BNORM_PEERS_PLUGIN_ABI)
    throw PluginUnavailable(path + ": plugin interface version " +
                            std::to_string(api ? api->abi : 0) + ", expected " +
                            std::to_string(BNORM_PEERS_PLUGIN_ABI) + " (rebuild it)");
  return *api;
}

std::unique_ptr<Peer> make_plugin_peer(const bnorm_bench_peers_api &api, const char *name) {
  for (int32_t index = 0; index < api.count; ++index) {
    if (std::strcmp(api.name(index), name) != 0) continue;
    char error[512] = {};
    bnorm_bench_peer *peer = api.create(index, error, sizeof error);
    if (!peer) throw PluginUnavailable(std::string(name) + ": " + error);
    return std::make_unique<PluginPeer>(api, index, peer);
  }
  throw PluginUnavailable(std::string("the plugin has no peer ") + name);
}

}  // namespace

PluginPeers load_plugin_peers() {
  static const bnorm_bench_peers_api &api = load_api();
  return {make_plugin_peer(api, "aten"), make_plugin_peer(api, "onednn"),
          make_plugin_peer(api, "onednn_nChw16c")};
}

}  // namespace bnorm_bench
