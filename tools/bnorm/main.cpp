// bnorm: the command line. Subcommands: train, evaluate, export, quantize, bench
// (kernels, train), models.
// Exit status: 0 success, 1 a run-time failure (data, checkpoint, I/O), 2 bad
// arguments. Every failure is one line on stderr starting "bnorm: error: ".
#include <bnorm/bnorm.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include "cli_common.h"
#include "io/output_paths.h"
#include "openmp_environment.h"
#include "processes.h"
#include "progress_bar.h"

namespace {

// A failure's line on stderr, and the exit status: in an mpirun job of several
// processes each says which rank it is, and the first failure ends the whole job (the
// others may be waiting for it in a collective).
int fail(int status, const char* what, const char* suffix = "") {
  if (bnorm::cli::job_size() > 1) {
    std::fprintf(stderr, "bnorm: error: rank %d of %d: %s%s\n", bnorm::cli::job_rank(),
                 bnorm::cli::job_size(), what, suffix);
    bnorm::cli::abort_job(status);
  }
  std::fprintf(stderr, "bnorm: error: %s%s\n", what, suffix);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  bnorm::cli::ensure_openmp_wait_policy(argv);
  bnorm::cli::join_processes(&argc, &argv);
  CLI::App app{"bnorm: batch normalization, and the seed's LeNet experiment on Fashion-MNIST"};
  app.set_version_flag("--version", std::string("bnorm ") + bnorm::version());
  app.require_subcommand(1);
  bnorm::cli::add_train_command(app);
  bnorm::cli::add_evaluate_command(app);
  bnorm::cli::add_export_command(app);
  bnorm::cli::add_quantize_command(app);
  bnorm::cli::add_bench_command(app);
  bnorm::cli::add_models_command(app);
  // CLI11 would report an unknown first word as "A subcommand is required", a missing
  // or unknown word after `bench` as unexpected arguments: name the choices instead.
  const CLI::App* parent = &app;
  std::string path = "bnorm";
  for (int i = 1;; ++i) {
    const auto subcommands = parent->get_subcommands({});
    if (subcommands.empty()) break;
    const bool at_option = i >= argc || argv[i][0] == '-';
    const bool asks_help = i < argc && (std::string(argv[i]) == "-h" ||
                                        std::string(argv[i]).rfind("--help", 0) == 0);
    if (at_option && (parent == &app || asks_help)) break;
    const CLI::App* chosen = nullptr;
    std::string names;
    for (size_t k = 0; k < subcommands.size(); ++k) {
      if (!at_option && subcommands[k]->get_name() == argv[i]) chosen = subcommands[k];
      names += (k == 0 ? "" : k + 1 == subcommands.size() ? " or " : ", ") +
               subcommands[k]->get_name();
    }
    if (!chosen) {
      if (at_option)
        std::fprintf(stderr, "bnorm: error: %s needs a subcommand: %s (see %s --help)\n",
                     path.c_str(), names.c_str(), path.c_str());
      else
        std::fprintf(stderr,
                     "bnorm: error: unknown subcommand '%s' (expected %s; see %s --help)\n",
                     argv[i], names.c_str(), path.c_str());
      return 2;
    }
    parent = chosen;
    path += " " + chosen->get_name();
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
    return fail(2, e.what(), " (see bnorm --help)");
  } catch (const bnorm::cli::UsageError& e) {
    return fail(2, e.what());
  } catch (const bnorm::io::PathError& e) {  // an output path the rules refuse
    return fail(2, e.what());
  } catch (const std::exception& e) {
    if (bnorm::cli::stderr_is_terminal()) std::fprintf(stderr, "\r\033[K");  // a progress bar
    return fail(1, e.what());
  }
  bnorm::cli::leave_processes();
  return 0;
}
