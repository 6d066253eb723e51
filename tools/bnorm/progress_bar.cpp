#include "progress_bar.h"

#include <unistd.h>

#include <cstdio>

namespace bnorm::cli {

bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(int epochs, bool enabled) : epochs_(epochs), enabled_(enabled) {}

void ProgressBar::update(const nn::BatchProgress& p) {
  if (!enabled_) return;
  const bool last = p.done == p.total;
  if (!last && last_draw_ >= 0 && p.seconds - last_draw_ < 0.1) return;
  last_draw_ = p.seconds;
  constexpr int kWidth = 30;
  const double fraction = static_cast<double>(p.done) / static_cast<double>(p.total);
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  const double eta = fraction > 0 ? p.seconds * (1 - fraction) / fraction : 0;
  std::fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %lld/%lld  loss %.4f  acc %.3f  ETA %.1fs",
               p.epoch, epochs_, bar.c_str(), static_cast<long long>(p.done),
               static_cast<long long>(p.total), p.loss, p.accuracy, eta);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
  last_draw_ = -1;
}

}  // namespace bnorm::cli
