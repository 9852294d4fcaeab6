// The subcommands of outpost-agent (internal to agent/cli).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/cli/cli.hpp"
#include "agent/config/config.hpp"

namespace outpost::agent::cli {

int StatusCommand(const Invocation& inv, const Env& env);
int DoctorCommand(const Invocation& inv, const Env& env);

// The status document: from the daemon's socket when it answers, else from
// agent.db (read-only) marked "daemon": "not-running".
Result<nlohmann::json> CollectStatus(const std::string& state_dir, std::int64_t now_ms);

// The text view of a status document: the headline, then details.
std::string RenderStatus(const nlohmann::json& status, std::int64_t now_ms, bool color);
// The headline alone ("connected, in sync, 3 workloads running").
std::string Headline(const nlohmann::json& status, std::int64_t now_ms);

struct Check {
  std::string check;
  bool ok = false;
  std::string detail;
};
struct DoctorOptions {
  std::string state_dir;
  std::string config_file;
  bool config_given = false;
  std::int64_t now_ms = 0;
  int broker_timeout_ms = 5000;
};
std::vector<Check> RunDoctor(const DoctorOptions& options);

// Helpers shared by the views.
std::int64_t ParseIsoMs(const std::string& iso);                   // 0 when empty/invalid
std::string Ago(std::int64_t then_ms, std::int64_t now_ms);        // "3h ago", "just now"
std::string ClockTime(std::int64_t then_ms, std::int64_t now_ms);  // "14:02" or "Nov 21 14:02"
std::string Duration(std::int64_t seconds);                        // "3h2m", "45s", "2d4h"

}  // namespace outpost::agent::cli
