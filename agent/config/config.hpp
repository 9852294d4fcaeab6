// The agent's optional tuning file (/etc/outpost/agent.yaml) and the layout of
// its state directory.
//
// The file is a flat subset of YAML, parsed here on purpose (the agent is
// cross-compiled for small ARM boards and does not link yaml-cpp):
//
//   # comment
//   log_level: info
//   outbox_max_events: 100000
//   workload_user: "outpost-workload"
//
// One `key: value` per line; values may be single- or double-quoted; a `#`
// after whitespace starts a comment. Nesting, lists and anchors are refused
// with a message naming the line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::agent::config {

inline constexpr const char* kDefaultStateDir = "/var/lib/outpost-agent";
inline constexpr const char* kDefaultConfigFile = "/etc/outpost/agent.yaml";

struct AgentConfig {
  std::string log_level = "info";  // debug | info | warn | error
  // Workloads run as this user when the agent runs as root and the spec names
  // none. Empty: the runtime's default.
  std::string workload_user;
  std::uint64_t outbox_max_events = 100000;  // 10 .. 10,000,000
  // Parent of the per-workload cgroups; empty: detected (a writable cgroup v2
  // hierarchy), else rlimits.
  std::string cgroup_root;
  // Where discovery and the runtime look (tests point them at prepared
  // directories): device nodes, /proc (driver/nvidia), /etc (os-release).
  std::string dev_root = "/dev";
  std::string proc_root = "/proc";
  std::string etc_root = "/etc";
  // nvidia-smi: a path, empty = search PATH, "-" = never run it.
  std::string nvidia_smi;
  // A DISK_LOW event is queued when the state dir's filesystem has less than
  // this percentage free (1..50), or less than disk_low_mib.
  std::uint32_t disk_low_percent = 5;
  std::uint64_t disk_low_mib = 64;
  // MQTT reconnect backoff.
  std::uint32_t reconnect_min_ms = 500;
  std::uint32_t reconnect_max_ms = 30000;
  std::uint32_t keepalive_seconds = 30;
  // Per-workload log files are rotated past this size.
  std::uint64_t workload_log_max_bytes = 10u << 20;
  // Certificate renewal when less than this fraction (1/N) of the validity is
  // left; 1 renews at once (tests).
  std::uint32_t renew_fraction_denominator = 3;

  // Keys that were present in the file but are not known (reported by doctor).
  std::vector<std::string> unknown_keys;
};

// Parses the text of a config file. Errors name the line: "line 3: ...".
Result<AgentConfig> Parse(std::string_view text);

// Loads `path`. A missing file is fine when `required` is false (the defaults
// apply); when the user named the file explicitly it must exist.
Result<AgentConfig> Load(const std::string& path, bool required);

// Where everything lives inside the state directory.
struct StatePaths {
  explicit StatePaths(std::string dir);
  std::string dir;
  std::string db;      // agent.db
  std::string key;     // device.key (0600)
  std::string cert;    // device.crt
  std::string ca;      // ca.crt
  std::string socket;  // agent.sock (status)
  std::string logs;    // logs/ (per-workload logs, written by the runtime)
  std::string run;     // run/ (runtime scratch)
};

}  // namespace outpost::agent::config
