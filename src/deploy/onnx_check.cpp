// Only ONNX headers come before the checker (see onnx_check.h).
#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include "deploy/onnx_check.h"

#include <exception>
#include <string>

#include "deploy/onnx_export.h"

namespace bnorm::deploy {

void check_onnx_model(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
    onnx::ModelProto inferred = model;
    // error_mode true: an inconsistency throws; type checks on; no data propagation.
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const ExportError&) {
    throw;
  } catch (const std::exception& e) {
    throw ExportError(std::string("export: the ONNX checker refuses the model: ") + e.what());
  }
}

}  // namespace bnorm::deploy
