// Size-based rotation of a workload log that its process writes directly
// (O_APPEND), copytruncate-style: the writer keeps its descriptor, so the log
// is copied to <path>.1 (older copies shifted to .2 .. .keep, the oldest
// dropped) and then truncated in place. Bytes written between the copy and
// the truncate are lost; the window is one in-kernel copy of at most a few
// MiB. A pipe through the agent would avoid that, but would tie every
// workload's life to the agent's (EPIPE/SIGPIPE on agent restart).
#pragma once

#include <cstdint>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::agent {

// Rotates `path` when it is larger than `max_bytes`; true when it rotated.
// keep = 0 only truncates. A missing file is not an error (false).
Result<bool> RotateLogIfNeeded(const std::string& path, std::uint64_t max_bytes, int keep);

}  // namespace outpost::agent
