// Pure helpers that turn a WorkloadSpec into what the child process gets:
// its environment (spec env, GPU variables), device paths under a test root,
// and the GPU selection for a `gpus` request.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/runtime/process_ops.hpp"
#include "outpost.pb.h"

namespace outpost::agent {

// The GPU variables for a request, given the GPUs this device has:
//   count 0 (and not all)  -> NVIDIA_VISIBLE_DEVICES=void, CUDA_VISIBLE_DEVICES="" (none visible)
//   count N                -> the first N GPUs by index: "0,1"; fewer than N found -> `shortage`
//   all                    -> NVIDIA_VISIBLE_DEVICES=all, CUDA_VISIBLE_DEVICES=every index
//                             (no GPU at all: as for count 0)
struct GpuSelection {
  std::string nvidia_visible_devices;
  std::string cuda_visible_devices;
  std::string shortage;  // non-empty: the workload must wait ("needs 2 GPUs, 1 found")
};
GpuSelection SelectGpus(const outpost::v1::GpuRequest& request,
                        const std::vector<outpost::v1::Gpu>& gpus);

// The child's complete environment ("K=V", sorted by key):
//   PATH (the agent's PATH, else a standard one), HOME/USER/LOGNAME when
//   switching to `user`, OUTPOST_WORKLOAD=<name>, then the spec's env
//   (overriding those), then the GPU variables (a spec that sets
//   NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES itself keeps its value).
std::vector<std::string> BuildEnvironment(const outpost::v1::WorkloadSpec& spec,
                                          const GpuSelection& gpus,
                                          const std::optional<UserIds>& user,
                                          const std::string& agent_path);

// "/dev/video0" under dev_root "/tmp/x/dev" -> "/tmp/x/dev/video0"; paths not
// below /dev, and dev_root "/dev", are returned unchanged.
std::string DevicePathUnder(const std::string& dev_root, const std::string& spec_path);

// spec.spec_hash(), or (when the hub left it empty) a hash of the
// deterministic serialization, so a changed spec is always noticed.
std::string EffectiveSpecHash(const outpost::v1::WorkloadSpec& spec);

}  // namespace outpost::agent
