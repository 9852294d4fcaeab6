// What the benchmarks read about the hub and the broker from outside: their
// processes (/proc: CPU time, RSS), files (database size) and the hub's admin
// API (apply, rollout status, /healthz), with the hub's own ctl.yaml.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "shared/core/result.hpp"

namespace outpost::hub::sim {

struct ProcSample {
  bool ok = false;
  double cpu_seconds = 0;  // user + system
  std::int64_t rss_kib = 0;
  std::int64_t peak_rss_kib = 0;  // VmHWM
  int threads = 0;
};
ProcSample SampleProcess(int pid);

// Size in bytes of a file, 0 when missing.
std::int64_t FileBytes(const std::string& path);

// The pid in a pid file, 0 when none.
int ReadPidFile(const std::string& path);

class HubApi {
 public:
  // From <data_dir>/ctl.yaml (URL, admin token, CA).
  static Result<HubApi> FromDataDir(const std::string& data_dir);

  Result<nlohmann::json> Get(const std::string& target) const;
  // POST with a body; returns the JSON answer (any 2xx).
  Result<nlohmann::json> Post(const std::string& target, const std::string& body,
                              const std::string& content_type) const;

  const std::string& url() const { return url_; }
  const std::string& ca_pem() const { return ca_pem_; }

 private:
  std::string url_;
  std::string token_;
  std::string ca_pem_;
};

}  // namespace outpost::hub::sim
