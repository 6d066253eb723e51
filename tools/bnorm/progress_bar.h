// A one-line progress bar with an ETA on stderr, redrawn in place at most ten times
// a second; silent when stderr is not a terminal (logs and CI stay clean).
#pragma once

#include <chrono>
#include <string>

#include "nn/trainer.h"

namespace bnorm::cli {

class ProgressBar {
 public:
  explicit ProgressBar(int epochs, bool enabled);
  void update(const nn::BatchProgress& p);
  void clear();  // erases the bar before a result line is printed
  bool enabled() const { return enabled_; }

 private:
  int epochs_;
  bool enabled_;
  bool drawn_ = false;
  double last_draw_ = -1;
};

bool stderr_is_terminal();

}  // namespace bnorm::cli
