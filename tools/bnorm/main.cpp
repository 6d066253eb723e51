// bnorm: the command line. Subcommands: train, evaluate, bench, models.
// Exit status: 0 success, 1 a run-time failure (data, checkpoint, I/O), 2 bad
// arguments. Every failure is one line on stderr starting "bnorm: error: ".
#include <bnorm/bnorm.hpp>

#include <cstdio>
#include <exception>

#include "cli_common.h"
#include "openmp_environment.h"
#include "progress_bar.h"

int main(int argc, char** argv) {
  bnorm::cli::ensure_openmp_wait_policy(argv);
  CLI::App app{"bnorm: batch normalization, and the seed's LeNet experiment on Fashion-MNIST"};
  app.set_version_flag("--version", std::string("bnorm ") + bnorm::version());
  app.require_subcommand(1);
  bnorm::cli::add_train_command(app);
  bnorm::cli::add_evaluate_command(app);
  bnorm::cli::add_bench_command(app);
  bnorm::cli::add_models_command(app);
  // CLI11 would report an unknown first word as "A subcommand is required".
  const auto known = [&](const char* name) {
    for (const CLI::App* sub : app.get_subcommands({}))
      if (sub->get_name() == name) return true;
    return false;
  };
  if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
    std::fprintf(stderr,
                 "bnorm: error: unknown subcommand '%s' (expected train, evaluate, bench or "
                 "models; see bnorm --help)\n",
                 argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "bnorm: error: %s (see bnorm --help)\n", e.what());
    return 2;
  } catch (const bnorm::cli::UsageError& e) {
    std::fprintf(stderr, "bnorm: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    if (bnorm::cli::stderr_is_terminal()) std::fprintf(stderr, "\r\033[K");  // a progress bar
    std::fprintf(stderr, "bnorm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
