// bnorm models: the models `train` knows, with their layers and parameter counts.
#include <cstdio>

#include "cli_common.h"
#include "nn/models.h"

namespace bnorm::cli {

void add_models_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("models", "List the models with their layers");
  sub->callback([] {
    for (const auto& name : nn::model_names()) {
      auto m = nn::make_model<float>(name, 0);
      std::printf("%s (%lld parameters, default lr %g)\n%s\n", name.c_str(),
                  static_cast<long long>(m->parameter_count()), default_lr(name),
                  m->describe().c_str());
    }
  });
}

}  // namespace bnorm::cli
