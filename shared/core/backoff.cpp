#include "shared/core/backoff.hpp"

#include <algorithm>

namespace outpost {

Backoff::Duration Backoff::Peek() const {
  // Double without overflow: stop doubling once past the cap.
  auto d = initial_;
  for (std::uint32_t i = 0; i < attempt_ && d < max_; ++i)
    d *= 2;
  return std::min(d, max_);
}

Backoff::Duration Backoff::Next(double unit_random) {
  Duration base = Peek();
  if (attempt_ < 64) ++attempt_;
  double r = std::clamp(unit_random, 0.0, 1.0);
  double scale = 1.0 - jitter_ * r;
  auto ms = static_cast<Duration::rep>(static_cast<double>(base.count()) * scale);
  return Duration(std::max<Duration::rep>(ms, 1));
}

}  // namespace outpost
