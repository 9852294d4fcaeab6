// Enrolls simulated devices through the hub's real API, as `outpost-agent
// join` does: fetch the CA and check it against the CA hash, then per device
// a fresh P-256 key, a CSR and POST /v1/enroll with the join token (one token
// with --uses N serves the whole fleet). Keys and certificates go into the
// state dir's sim.db, so later runs reuse them.
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::hub::sim {

struct EnrollOptions {
  std::string state_dir;
  std::string hub_url;  // https://host:port
  std::string token;
  std::string ca_hash;    // sha256:HEX
  std::size_t count = 0;  // enroll until the state dir holds this many
  std::string prefix = "sim";
  int jobs = 4;
  std::map<std::string, std::string> labels;
};

// Enrolls the devices missing up to `count`; prints progress to stderr.
Status EnrollFleet(const EnrollOptions& options);

}  // namespace outpost::hub::sim
