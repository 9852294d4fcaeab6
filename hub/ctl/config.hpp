// How outpostctl finds the hub: the admin connection (URL, token, CA).
//
// ctl.yaml (written by `outpost-hub init`, docs/hub.md):
//   hub: "https://hub.example.com:8443"
//   token: "<admin token>"
//   ca: "/var/lib/outpost-hub/ca.crt"   # relative paths: relative to ctl.yaml
//
// Precedence, per field: --hub/--token/--ca flags, then OUTPOST_HUB,
// OUTPOST_ADMIN_TOKEN, OUTPOST_CA, then the file named by --config (or, when
// no --config is given, /var/lib/outpost-hub/ctl.yaml if it is readable).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "shared/core/result.hpp"

namespace outpost::hub::ctl {

inline constexpr const char* kDefaultCtlConfig = "/var/lib/outpost-hub/ctl.yaml";

struct Connection {
  std::string hub_url;
  std::string token;
  std::string ca_path;
};

// Parses ctl.yaml text; `base_dir` resolves a relative `ca`. Unknown keys
// are an error.
Result<Connection> ParseCtlYaml(std::string_view text, const std::string& base_dir);

struct ConnectionFlags {
  std::string config;  // --config
  std::string hub;     // --hub
  std::string token;   // --token
  std::string ca;      // --ca
};

using GetEnv = std::function<std::optional<std::string>(const char* name)>;

// Merges flags, environment and file; fails naming what is missing.
Result<Connection> ResolveConnection(const ConnectionFlags& flags, const GetEnv& env);

}  // namespace outpost::hub::ctl
