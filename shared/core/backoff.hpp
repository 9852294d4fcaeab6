// Capped exponential backoff with jitter, with no clock and no global random
// source inside: callers pass the random number, so tests are deterministic.
#pragma once

#include <chrono>
#include <cstdint>

namespace outpost {

class Backoff {
 public:
  using Duration = std::chrono::milliseconds;

  // The n-th delay (n = 0, 1, ...) is min(initial * 2^n, max), then jittered:
  // with jitter j in [0, 1], the delay is drawn from [d * (1 - j), d].
  Backoff(Duration initial, Duration max, double jitter = 0.5)
      : initial_(initial), max_(max), jitter_(jitter) {}

  // The next delay; `unit_random` in [0, 1) picks the point in the jitter band.
  Duration Next(double unit_random);
  // Back to the initial delay (after a success or a stable run).
  void Reset() { attempt_ = 0; }
  std::uint32_t attempts() const { return attempt_; }
  // The un-jittered delay the next call would be based on.
  Duration Peek() const;

 private:
  Duration initial_;
  Duration max_;
  double jitter_;
  std::uint32_t attempt_ = 0;
};

}  // namespace outpost
