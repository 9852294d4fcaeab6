// outpost::agent::cli — the `outpost-agent` command line. main.cpp only calls
// Main(); everything here is testable with string streams.
//
//   outpost-agent [--state-dir DIR] [--config FILE] <command> [options]
//     join --hub URL --token TOKEN [--ca-hash sha256:HEX] [--name NAME]
//          [--label k=v]... [--force]
//     run
//     status [--json]
//     doctor [--json]
//     version
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::agent::cli {

struct Env {
  std::ostream& out;
  std::ostream& err;
  bool color = false;       // stdout is a TTY and NO_COLOR is unset
  std::int64_t now_ms = 0;  // 0: the system clock (tests fix it)
};

// Runs one command; returns the process exit code.
int Main(const std::vector<std::string>& args, const Env& env);

// Parsed global options and the command's own arguments.
struct Invocation {
  std::string state_dir = "/var/lib/outpost-agent";
  std::string config_file = "/etc/outpost/agent.yaml";
  bool config_given = false;
  std::string command;
  std::vector<std::string> args;  // after the command
};
Result<Invocation> ParseInvocation(const std::vector<std::string>& args);

}  // namespace outpost::agent::cli
