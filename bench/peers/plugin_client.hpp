// The runner's side of peers_plugin.h: loads the plugin and wraps its peers as Peer.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "peer.hpp"

namespace bnorm_bench {

// Why the plugin's peers are missing: the message names the file and the loader's
// reason.
class PluginUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PluginPeers {
  std::unique_ptr<Peer> aten, onednn_plain, onednn_blocked;
};

// The plugin at $BNORM_PEERS_PLUGIN, else the one this build tree made, found beside the
// running executable (plugin_client.cpp). Loaded once,
// never unloaded (libtorch does not survive dlclose). Throws PluginUnavailable.
PluginPeers load_plugin_peers();

}  // namespace bnorm_bench
