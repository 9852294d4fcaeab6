// Validation of a desired document's workload specs before the agent accepts
// it (docs/protocol.md: "every workload spec passes validation").
#pragma once

#include <string>
#include <string_view>

#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace outpost::agent::sync {

inline constexpr std::size_t kMaxWorkloads = 256;
inline constexpr std::size_t kMaxWorkloadNameBytes = 127;

// The hub names workloads "<application>.<workload>": one or more DNS labels
// (1..63 of [a-z0-9-], starting and ending alphanumeric) joined by dots, at
// most 127 characters. No '/', no "." or ".." component: names become file
// and cgroup names.
bool ValidWorkloadName(std::string_view name);

// Checks one spec; the message names the workload and the field:
// "workload \"cam\": command is empty".
Status ValidateWorkload(const outpost::v1::WorkloadSpec& spec);

// Checks every spec and that names are unique; at most kMaxWorkloads.
// Fills in spec_hash where the hub left it empty (hex SHA-256 of the spec
// serialized deterministically with spec_hash empty), so the runtime can
// always tell a changed spec from an unchanged one.
Status ValidateAndNormalize(outpost::v1::DesiredState& document);

// Deterministic hex SHA-256 of `spec` with spec_hash cleared.
std::string ComputeSpecHash(const outpost::v1::WorkloadSpec& spec);

}  // namespace outpost::agent::sync
