// The ONNX library's own verdict on a model we built: onnx::checker::check_model and
// strict shape and type inference (every node's inferred output must agree with the
// next node's input). Kept apart from the exporter because <onnx/checker.h> must not
// meet <sys/mman.h>'s MAP_TYPE macro, which the engine's headers bring in.
#pragma once

#include <onnx/onnx_pb.h>

namespace bnorm::deploy {

// Throws ExportError (onnx_export.h) with the checker's complaint.
void check_onnx_model(const onnx::ModelProto& model);

}  // namespace bnorm::deploy
