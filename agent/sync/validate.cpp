#include "agent/sync/validate.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <set>

#include "shared/crypto/crypto.hpp"

namespace outpost::agent::sync {
namespace {

constexpr std::size_t kMaxArgs = 1024;
constexpr std::size_t kMaxArgBytes = 64 * 1024;
constexpr std::size_t kMaxEnv = 1024;
constexpr std::size_t kMaxDevices = 64;
constexpr std::uint32_t kMaxGraceSeconds = 3600;

bool HasNul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

bool ValidEnvName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  auto first = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!first(name.front())) return false;
  for (char c : name) {
    if (!first(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool ValidUserName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return name.front() != '-';
}

bool ValidAbsolutePath(std::string_view path) {
  if (path.empty() || path.front() != '/' || path.size() > 4096 || HasNul(path)) return false;
  // No ".." component.
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t next = path.find('/', pos);
    if (next == std::string_view::npos) next = path.size();
    if (path.substr(pos, next - pos) == "..") return false;
    pos = next + 1;
  }
  return true;
}

Error Bad(const outpost::v1::WorkloadSpec& spec, const std::string& what) {
  std::string name = spec.name().size() <= kMaxWorkloadNameBytes
                         ? spec.name()
                         : spec.name().substr(0, kMaxWorkloadNameBytes) + "...";
  return Error(Errc::kInvalidArgument, "workload \"" + name + "\": " + what);
}

}  // namespace

bool ValidWorkloadName(std::string_view name) {
  if (name.empty() || name.size() > kMaxWorkloadNameBytes) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || !alnum(label.front()) || !alnum(label.back()))
      return false;
    for (char c : label) {
      if (!alnum(c) && c != '-') return false;
    }
    start = dot + 1;
  }
  return true;
}

Status ValidateWorkload(const outpost::v1::WorkloadSpec& spec) {
  if (!ValidWorkloadName(spec.name()))
    return Bad(spec, "name must be DNS labels joined by dots (a-z, 0-9, '-'; at most 127)");
  switch (spec.kind()) {
    case outpost::v1::WORKLOAD_KIND_UNSPECIFIED:
    case outpost::v1::WORKLOAD_KIND_PROCESS:
      break;
    case outpost::v1::WORKLOAD_KIND_CONTAINER:
      return Bad(spec, "container workloads are not supported by this agent");
    default:
      return Bad(spec, "unknown kind " + std::to_string(static_cast<int>(spec.kind())));
  }
  if (spec.command_size() == 0 || spec.command(0).empty()) return Bad(spec, "command is empty");
  if (static_cast<std::size_t>(spec.command_size()) > kMaxArgs)
    return Bad(spec, "command has more than " + std::to_string(kMaxArgs) + " arguments");
  for (const auto& arg : spec.command()) {
    if (HasNul(arg)) return Bad(spec, "command contains a NUL byte");
    if (arg.size() > kMaxArgBytes) return Bad(spec, "a command argument is too long");
  }
  if (spec.env_size() > static_cast<int>(kMaxEnv)) return Bad(spec, "too many env entries");
  for (const auto& [key, value] : spec.env()) {
    if (!ValidEnvName(key)) return Bad(spec, "env name \"" + key + "\" is not valid");
    if (HasNul(value)) return Bad(spec, "env " + key + " contains a NUL byte");
  }
  switch (spec.restart_policy()) {
    case outpost::v1::RESTART_POLICY_UNSPECIFIED:
    case outpost::v1::RESTART_POLICY_ALWAYS:
    case outpost::v1::RESTART_POLICY_ON_FAILURE:
    case outpost::v1::RESTART_POLICY_NEVER:
      break;
    default:
      return Bad(
          spec, "unknown restartPolicy " + std::to_string(static_cast<int>(spec.restart_policy())));
  }
  if (static_cast<std::size_t>(spec.devices_size()) > kMaxDevices)
    return Bad(spec, "too many devices");
  for (const auto& dev : spec.devices()) {
    if (!ValidAbsolutePath(dev) || !dev.starts_with("/dev/"))
      return Bad(spec, "device \"" + dev + "\" must be a path under /dev/");
  }
  if (!spec.working_dir().empty() && !ValidAbsolutePath(spec.working_dir()))
    return Bad(spec, "workingDir must be an absolute path");
  if (!spec.user().empty() && !ValidUserName(spec.user()))
    return Bad(spec, "user \"" + spec.user() + "\" is not a valid user name");
  if (spec.gpus().count() > 64) return Bad(spec, "gpus must be at most 64 (or all)");
  if (spec.resources().milli_cpus() > 1024 * 1000) return Bad(spec, "cpus is too large");
  if (spec.stop_grace_seconds() > kMaxGraceSeconds)
    return Bad(spec, "stop grace must be at most " + std::to_string(kMaxGraceSeconds) + " s");
  if (!spec.spec_hash().empty()) {
    if (spec.spec_hash().size() != 64) return Bad(spec, "spec_hash is not a hex SHA-256");
    for (char c : spec.spec_hash()) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
        return Bad(spec, "spec_hash is not a lowercase hex SHA-256");
    }
  }
  return OkStatus();
}

std::string ComputeSpecHash(const outpost::v1::WorkloadSpec& spec) {
  outpost::v1::WorkloadSpec copy = spec;
  copy.clear_spec_hash();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&out);
  }
  return crypto::Sha256Hex(bytes);
}

Status ValidateAndNormalize(outpost::v1::DesiredState& document) {
  if (static_cast<std::size_t>(document.workloads_size()) > kMaxWorkloads)
    return Error(Errc::kInvalidArgument,
                 "more than " + std::to_string(kMaxWorkloads) + " workloads");
  std::set<std::string> names;
  for (auto& spec : *document.mutable_workloads()) {
    OUTPOST_TRY(ValidateWorkload(spec));
    if (!names.insert(spec.name()).second)
      return Error(Errc::kInvalidArgument, "workload \"" + spec.name() + "\" appears twice");
    if (spec.spec_hash().empty()) spec.set_spec_hash(ComputeSpecHash(spec));
  }
  return OkStatus();
}

}  // namespace outpost::agent::sync
