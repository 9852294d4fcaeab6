// The status document of `outpost-agent status --json` (keys fixed by
// CONTRACT.md), built from agent.db's snapshot and — when the daemon serves
// it — the daemon's live view. One builder for both, so the daemon's socket
// answer and the daemon-down answer have the same shape.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/runtime/supervisor.hpp"
#include "agent/state/agent_store.hpp"
#include "outpost.pb.h"

namespace outpost::agent::daemon {

// What only the running daemon knows.
struct LiveStatus {
  bool connected = false;
  std::int64_t connection_since_ms = 0;
  std::int64_t last_connected_ms = 0;
  std::string connection_detail;
  std::vector<outpost::v1::WorkloadStatus> workloads;
  std::uint64_t hub_generation = 0;
  std::int64_t daemon_pid = 0;
  std::int64_t daemon_started_ms = 0;
  std::string broker_url;
};

struct CertSummary {
  bool present = false;
  std::int64_t not_before_unix = 0;
  std::int64_t not_after_unix = 0;
  std::string error;  // why it could not be read
};

// Reads device.crt (bounded) into a CertSummary.
CertSummary ReadCertSummary(const std::string& cert_path);

// Whether the process of a record still runs (pid alive with the same start
// time); used when the daemon is down.
using AliveFn = std::function<bool(const ProcessRecord&)>;

nlohmann::json BuildStatus(const state::Snapshot& snapshot, const LiveStatus* live,
                           const CertSummary& cert, std::int64_t now_ms, const AliveFn& alive);

// "2026-11-22T03:20:02Z"; "" for 0.
std::string IsoTime(std::int64_t unix_ms);
// "running", "starting", ... (the contract's names).
std::string StateName(outpost::v1::WorkloadState state);
std::string ResourceModeName(outpost::v1::ResourceMode mode);

}  // namespace outpost::agent::daemon
