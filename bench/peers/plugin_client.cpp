#include "plugin_client.hpp"

#include <dlfcn.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "peers_plugin.h"

// The plugin's file name, from CMake; empty when the build made none. It is looked for
// beside the running executable (the build tree's layout: build/bnorm and
// build/bench/bench_peers, the plugin in build/bench/peers/), never by an absolute path
// compiled in: an installed bnorm carries no path into the build tree.
#ifndef BNORM_PEERS_PLUGIN_NAME
#error "CMake defines BNORM_PEERS_PLUGIN_NAME"
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

// The directory of the running executable (from /proc/self/exe), with a trailing '/'.
std::string executable_directory() {
  std::vector<char> buffer(4096);
  const ssize_t length = readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  if (length <= 0) throw PluginUnavailable("cannot read /proc/self/exe to find the plugin");
  std::string path(buffer.data(), static_cast<size_t>(length));
  return path.substr(0, path.rfind('/') + 1);
}

// $BNORM_PEERS_PLUGIN, else the first of <exe dir>/bench/peers/NAME (bnorm) and
// <exe dir>/peers/NAME (bench_peers) that exists.
std::string plugin_path() {
  if (const char *from_environment = std::getenv("BNORM_PEERS_PLUGIN")) return from_environment;
  const std::string name = BNORM_PEERS_PLUGIN_NAME;
  if (name.empty())
    throw PluginUnavailable("this build made no peers plugin (it needs libtorch and oneDNN "
                            "found by CMake, and BNORM_BUILD_PEERS on)");
  const std::string directory = executable_directory();
  for (const char *relative : {"bench/peers/", "peers/"}) {
    const std::string candidate = directory + relative + name;
    if (access(candidate.c_str(), R_OK) == 0) return candidate;
  }
  throw PluginUnavailable("no " + name + " in " + directory + "bench/peers/ or " + directory +
                          "peers/ (an installed bnorm has none)");
}

const bnorm_bench_peers_api &load_api() {
  const std::string path = plugin_path();
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
