// bnorm export and bnorm quantize: a checkpoint as an ONNX model (float, batch norm
// folded unless --no-fold), and as a post-training static int8 QDQ model of the folded
// network with the engine's prediction of its accuracy (src/deploy/).
#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "cli_common.h"
#include "deploy/model_folding.h"
#include "deploy/onnx_export.h"
#include "deploy/quantization.h"
#include "io/atomic_file.h"
#include "io/output_paths.h"
#include "model_runs.h"

namespace bnorm::cli {

namespace {

struct ExportArgs {
  std::string checkpoint;
  std::string onnx;
  bool no_fold = false;
  bool force = false;
};

struct QuantizeArgs {
  std::string checkpoint;
  std::string onnx;
  int64_t calibration_examples = 1000;
  std::string calibration = "minmax";
  double percentile = 99.99;
  bool percentile_given = false;
  int threads = 0;
  bool force = false;
  DataOptions data;
};

// The --onnx output: a new file, an empty one or an ONNX model (else --force), never the
// checkpoint or a data file. Checked before any work.
void check_onnx_path(const std::string& onnx, const std::string& checkpoint,
                     const std::vector<std::string>& data_inputs, bool force) {
  std::vector<io::NamedPath> inputs{{"--checkpoint", checkpoint}};
  for (const std::string& file : data_inputs) inputs.push_back({"--data", file});
  const io::NamedPath out{"--onnx", onnx};
  io::check_distinct(inputs, {out});  // first: "the same file as --checkpoint" says more
  io::check_output(out, io::OutputKind::onnx, force);
}

std::string describe_doc(const CheckpointModel& m, const char* what) {
  return std::string("bnorm ") + what + " of " + m.options.model + " after " +
         std::to_string(m.epochs) + " epochs; input: (N, 1, 28, 28) float32 pixels / 255";
}

// What the model-level steps (state checks, folding, calibration) refuse is the
// checkpoint's problem: their messages name the layer, this adds the file.
template <class F>
auto about_checkpoint(const std::string& checkpoint, F&& step) {
  try {
    return step();
  } catch (const deploy::ExportError& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(checkpoint + ": " + e.what());
  }
}

// The checkpoint's model, checked for state no model file should hold, and folded.
CheckpointModel load_checked(const std::string& checkpoint, bool fold) {
  CheckpointModel m = load_checkpoint_model(checkpoint);
  about_checkpoint(checkpoint, [&] { deploy::check_exportable_state(*m.model); });
  if (fold) {
    const deploy::FoldReport report =
        about_checkpoint(checkpoint, [&] { return deploy::fold_batch_norms(*m.model); });
    std::printf("%s", report.summary().c_str());
  }
  return m;
}

void run_export(const ExportArgs& a) {
  check_onnx_path(a.onnx, a.checkpoint, {}, a.force);
  CheckpointModel m = load_checked(a.checkpoint, !a.no_fold);
  deploy::OnnxExportOptions o;
  o.graph_name = m.options.model;
  o.doc = describe_doc(m, a.no_fold ? "float export" : "float export, batch norm folded");
  const std::string bytes = deploy::export_onnx(*m.model, o);
  io::write_file_atomically(a.onnx, bytes);
  std::printf("%s (%d epochs) -> %s: ONNX opset 13, %zu bytes, checked by onnx's checker\n",
              m.options.model.c_str(), m.epochs, a.onnx.c_str(), bytes.size());
}

void run_quantize(const QuantizeArgs& a) {
  if (a.percentile_given && a.calibration != "percentile")
    throw UsageError("--percentile applies to --calibration percentile only (the calibration "
                     "is " + a.calibration + ")");
  if (a.percentile <= 50)
    throw UsageError("--percentile must be above 50 (at 50 the kept range is one value), got " +
                     (std::ostringstream() << a.percentile).str());
  if (a.calibration_examples < 1)
    throw UsageError("--calibration-examples must be at least 1 (got " +
                     std::to_string(a.calibration_examples) + ")");
  check_onnx_path(a.onnx, a.checkpoint, data_files(a.data), a.force);
  const int threads = apply_threads(a.threads);
  const data::TrainTest d = load_data(a.data);
  if (a.calibration_examples > d.train.count)
    throw UsageError("--calibration-examples " + std::to_string(a.calibration_examples) +
                     " exceeds the " + std::to_string(d.train.count) + " training examples");
  CheckpointModel m = load_checked(a.checkpoint, true);
  deploy::CalibrationOptions co;
  co.method = a.calibration == "percentile" ? deploy::Calibration::percentile
                                            : deploy::Calibration::minmax;
  co.percentile = a.percentile;
  co.examples = a.calibration_examples;
  co.batch_size = m.options.batch_size;
  const deploy::QuantizationPlan plan =
      about_checkpoint(a.checkpoint, [&] { return deploy::calibrate(*m.model, d.train, co); });

  deploy::OnnxExportOptions o;
  o.graph_name = m.options.model + "-int8";
  o.doc = describe_doc(m, "int8 QDQ export (batch norm folded)");
  o.quantization = &plan;
  const std::string bytes = deploy::export_onnx(*m.model, o);

  // The float (folded) network and the engine's simulation of the int8 one, on the test set.
  nn::ReplicaEvaluator float_evaluator, int8_evaluator;
  const ModelScore f = score_model(float_evaluator, *m.model,
                                   copies_of(m.options.model, [](nn::Sequential<float>& c) {
                                     deploy::fold_batch_norms(c);
                                   }),
                                   d.test, m.options.batch_size, threads);
  deploy::simulate(*m.model, plan);
  const ModelScore q = score_model(int8_evaluator, *m.model,
                                   copies_of(m.options.model, [&plan](nn::Sequential<float>& c) {
                                     deploy::fold_batch_norms(c);
                                     deploy::simulate(c, plan);
                                   }),
                                   d.test, m.options.batch_size, threads);
  io::write_file_atomically(a.onnx, bytes);
  if (co.method == deploy::Calibration::minmax)
    std::printf("calibrated on %lld training examples (min/max)\n",
                static_cast<long long>(co.examples));
  else
    std::printf("calibrated on %lld training examples (percentile %g)\n",
                static_cast<long long>(co.examples), co.percentile);
  std::printf("test acc on %lld examples: float %.4f, int8 (simulated) %.4f  |  test loss float "
              "%.4f, int8 %.4f\n",
              static_cast<long long>(d.test.count), f.accuracy, q.accuracy, f.loss, q.loss);
  std::printf("%s (%d epochs) -> %s: ONNX opset 13 QDQ, %zu bytes, checked by onnx's checker\n",
              m.options.model.c_str(), m.epochs, a.onnx.c_str(), bytes.size());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* sub = app.add_subcommand(
      "export", "Write a checkpoint's network as an ONNX model (batch norm folded unless --no-fold)");
  sub->add_option("--checkpoint", args->checkpoint, "A checkpoint written by `bnorm train`")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--onnx", args->onnx,
                  "The ONNX file to write: input 'input' (N, 1, 28, 28) float32 in [0, 1], "
                  "output 'logits' (N, 10)")
      ->required();
  sub->add_flag("--no-fold", args->no_fold,
                "Keep batch norm as BatchNormalization nodes instead of folding it away");
  sub->add_flag("--force", args->force, "Replace an existing --onnx file that is not an ONNX model");
  sub->callback([args] { run_export(*args); });
}

void add_quantize_command(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "quantize",
      "Post-training static int8 quantization of the folded network, written as ONNX "
      "QuantizeLinear/DequantizeLinear; prints the float and the simulated int8 test accuracy");
  sub->add_option("--checkpoint", args->checkpoint, "A checkpoint written by `bnorm train`")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--onnx", args->onnx, "The int8 ONNX file to write")->required();
  sub->add_option("--calibration-examples", args->calibration_examples,
                  "Calibrate the activation ranges on the first N training examples")
      ->capture_default_str();
  sub->add_option("--calibration", args->calibration,
                  "minmax: the smallest and largest value seen; percentile: clip to the "
                  "--percentile range of the values seen")
      ->check(CLI::IsMember({"minmax", "percentile"}))
      ->capture_default_str();
  sub->add_option("--percentile", args->percentile,
                  "With --calibration percentile: keep the values between the (100 - P)-th and "
                  "the P-th percentile (50 < P <= 100)")
      ->check(finite_between(50, 100))
      ->capture_default_str()
      ->each([args](const std::string&) { args->percentile_given = true; });
  sub->add_flag("--force", args->force, "Replace an existing --onnx file that is not an ONNX model");
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, false);
  sub->callback([args] { run_quantize(*args); });
}

}  // namespace bnorm::cli
