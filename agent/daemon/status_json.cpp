#include "agent/daemon/status_json.hpp"

#include <ctime>
#include <map>

#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"

namespace outpost::agent::daemon {

std::string IsoTime(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string StateName(outpost::v1::WorkloadState state) {
  std::string_view name = WorkloadStateName(state);
  return std::string(name);
}

std::string ResourceModeName(outpost::v1::ResourceMode mode) {
  switch (mode) {
    case outpost::v1::RESOURCE_MODE_CGROUP:
      return "cgroup";
    case outpost::v1::RESOURCE_MODE_RLIMIT:
      return "rlimit";
    case outpost::v1::RESOURCE_MODE_NONE:
      return "none";
    default:
      return "";
  }
}

CertSummary ReadCertSummary(const std::string& cert_path) {
  CertSummary c;
  auto pem = fs::ReadFile(cert_path, 1u << 20);
  if (!pem.ok()) {
    c.error = pem.error().message();
    return c;
  }
  auto info = crypto::ParseCertificate(*pem);
  if (!info.ok()) {
    c.error = info.error().message();
    return c;
  }
  c.present = true;
  c.not_before_unix = info->not_before_unix;
  c.not_after_unix = info->not_after_unix;
  return c;
}

namespace {

nlohmann::json OptTime(std::int64_t ms) {
  if (ms <= 0) return nullptr;
  return IsoTime(ms);
}

nlohmann::json WorkloadJson(const outpost::v1::WorkloadStatus& w, std::int64_t now_ms) {
  nlohmann::json j;
  j["name"] = w.name();
  j["state"] = StateName(w.state());
  j["pid"] = w.pid();
  j["restarts"] = w.restarts();
  std::int64_t uptime = 0;
  if (w.state() == outpost::v1::WORKLOAD_STATE_RUNNING && w.since_ms() > 0 && now_ms > w.since_ms())
    uptime = (now_ms - w.since_ms()) / 1000;
  j["uptime"] = uptime;
  j["since"] = OptTime(w.since_ms());
  j["lastExitCode"] = w.has_exited() ? nlohmann::json(w.last_exit_code()) : nlohmann::json();
  j["message"] = w.message();
  j["resourceMode"] = ResourceModeName(w.resource_mode());
  j["specHash"] = w.spec_hash();
  return j;
}

}  // namespace

nlohmann::json BuildStatus(const state::Snapshot& s, const LiveStatus* live,
                           const CertSummary& cert, std::int64_t now_ms, const AliveFn& alive) {
  nlohmann::json j;
  j["enrolled"] = s.identity.has_value();
  j["deviceId"] = s.identity ? s.identity->device_id : "";
  j["hub"] = s.identity ? s.identity->hub_url : "";
  j["broker"] = s.identity ? s.identity->broker_url : "";
  // As given at enrollment; the hub may have changed them since.
  j["enrollmentLabels"] =
      s.identity ? nlohmann::json(s.identity->labels) : nlohmann::json::object();
  j["daemon"] = live != nullptr ? "running" : "not-running";
  j["agentVersion"] = OUTPOST_VERSION;
  const bool connected = live != nullptr ? live->connected : false;
  j["connection"] = connected ? "connected" : "disconnected";
  const std::int64_t since = live != nullptr ? live->connection_since_ms : s.connection.since_ms;
  const std::int64_t last_connected =
      live != nullptr ? live->last_connected_ms : s.connection.last_connected_ms;
  j["connectionSince"] = OptTime(since);
  j["lastConnected"] = OptTime(last_connected);
  j["connectionDetail"] = live != nullptr ? live->connection_detail : s.connection.detail;
  // When the daemon is down the stored state says how it last was.
  j["lastKnownConnection"] = s.connection.connected ? "connected" : "disconnected";
  j["daemonPid"] = live != nullptr ? live->daemon_pid : 0;
  j["daemonStartedAt"] = OptTime(live != nullptr ? live->daemon_started_ms : s.daemon_started_ms);
  j["desiredGeneration"] = s.held_generation;
  j["appliedGeneration"] = s.applied_generation;
  j["hubGeneration"] = live != nullptr ? live->hub_generation : 0;
  j["appliedAt"] = OptTime(s.applied_at_ms);
  j["outboxDepth"] = s.outbox.depth;
  j["outboxDroppedTotal"] = s.outbox.dropped_total;
  j["ackedSeq"] = s.outbox.acked_seq;
  j["staleDocuments"] = s.counters.stale;
  j["duplicateDocuments"] = s.counters.duplicate;
  j["rejectedDocuments"] = s.counters.rejected;
  if (cert.present) {
    j["certNotAfter"] = IsoTime(cert.not_after_unix * 1000);
    j["certDaysLeft"] = (cert.not_after_unix * 1000 - now_ms) / (86400 * 1000);
  } else {
    j["certNotAfter"] = nullptr;
    j["certDaysLeft"] = nullptr;
  }
  j["statusAsOf"] = live != nullptr ? IsoTime(now_ms) : IsoTime(s.workloads_saved_ms);

  // Workloads: the live statuses, or the last saved ones checked against the
  // process table; then any cached workload without a status.
  std::vector<outpost::v1::WorkloadStatus> statuses;
  if (live != nullptr) {
    statuses = live->workloads;
  } else {
    std::map<std::string, const ProcessRecord*> records;
    for (const auto& r : s.processes)
      records[r.name] = &r;
    for (auto w : s.workloads) {
      const bool claims_process = w.pid() > 0;
      if (claims_process) {
        auto it = records.find(w.name());
        bool still =
            it != records.end() && it->second->pid == w.pid() && alive && alive(*it->second);
        if (!still) {
          w.set_state(outpost::v1::WORKLOAD_STATE_STOPPED);
          w.set_pid(0);
          w.set_message("process gone while the agent was not running");
        }
      }
      statuses.push_back(std::move(w));
    }
  }
  std::map<std::string, bool> seen;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& w : statuses) {
    seen[w.name()] = true;
    list.push_back(WorkloadJson(w, now_ms));
  }
  for (const auto& spec : s.desired_workloads) {
    if (seen.count(spec.name()) != 0) continue;
    outpost::v1::WorkloadStatus w;
    w.set_name(spec.name());
    w.set_state(outpost::v1::WORKLOAD_STATE_STOPPED);
    w.set_message("not started yet");
    w.set_spec_hash(spec.spec_hash());
    list.push_back(WorkloadJson(w, now_ms));
  }
  j["workloads"] = std::move(list);
  return j;
}

}  // namespace outpost::agent::daemon
