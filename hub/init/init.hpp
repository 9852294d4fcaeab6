// `outpost-hub init`: creates the credentials and configuration of a hub in
// its data directory (docs/hub.md, "init").
#pragma once

#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::hub {

struct InitOptions {
  std::string data_dir;
  std::string hostname;
  int broker_port = 8883;
  int api_port = 8443;
  bool force = false;  // overwrite an existing hub's files (not hub.db)
};

struct InitResult {
  std::string data_dir;  // absolute
  std::string ca_hash;   // sha256:<hex> of the CA's SubjectPublicKeyInfo
  std::vector<std::string> files;
};

// Validates the options, refuses a directory that already holds a hub unless
// `force`, then writes every file (keys 0600). When run as root on a directory
// owned by another account, the files are given to that account. On failure
// the files written so far are removed again.
Result<InitResult> InitHub(const InitOptions& options);

}  // namespace outpost::hub
