// `outpost-agent status [--json]`.
#include <ctime>
#include <iomanip>
#include <sstream>

#include "agent/cli/commands.hpp"
#include "agent/daemon/status_json.hpp"
#include "agent/daemon/status_server.hpp"
#include "agent/runtime/process_ops.hpp"
#include "agent/state/agent_store.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"

namespace outpost::agent::cli {
namespace {

std::int64_t NowMs(const Env& env) {
  if (env.now_ms != 0) return env.now_ms;
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Str(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

std::int64_t Int(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  return it->get<std::int64_t>();
}

const char* kReset = "\033[0m";
const char* kGreen = "\033[32m";
const char* kYellow = "\033[33m";
const char* kRed = "\033[31m";
const char* kBold = "\033[1m";
const char* kDim = "\033[2m";

std::string Paint(const std::string& text, const char* colour, bool color) {
  if (!color) return text;
  return std::string(colour) + text + kReset;
}

std::string Plural(std::int64_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

struct Counts {
  std::int64_t total = 0;
  std::int64_t running = 0;
  std::int64_t failed = 0;
};

Counts CountWorkloads(const nlohmann::json& status) {
  Counts c;
  auto it = status.find("workloads");
  if (it == status.end() || !it->is_array()) return c;
  for (const auto& w : *it) {
    ++c.total;
    std::string st = Str(w, "state");
    if (st == "running") ++c.running;
    if (st == "failed") ++c.failed;
  }
  return c;
}

std::string WorkloadPhrase(const Counts& c, bool cached) {
  std::string s = cached ? "running " + std::to_string(c.running) + " cached workload" +
                               (c.running == 1 ? "" : "s")
                         : Plural(c.running, "workload") + " running";
  if (c.total > c.running) s += ", " + std::to_string(c.total - c.running) + " not running";
  return s;
}

std::string OfflinePhrase(const nlohmann::json& status, std::int64_t now_ms) {
  std::int64_t since = ParseIsoMs(Str(status, "connectionSince"));
  std::string s = "offline";
  if (since > 0) s += " since " + ClockTime(since, now_ms) + " (" + Ago(since, now_ms) + ")";
  if (ParseIsoMs(Str(status, "lastConnected")) == 0) s += ", never connected";
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// Time helpers

std::int64_t ParseIsoMs(const std::string& iso) {
  std::tm tm{};
  std::istringstream in(iso);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  if (in.fail()) return 0;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

std::string Duration(std::int64_t s) {
  if (s < 0) s = 0;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + (s % 60 ? std::to_string(s % 60) + "s" : "");
  if (s < 86400)
    return std::to_string(s / 3600) + "h" +
           (s % 3600 / 60 ? std::to_string(s % 3600 / 60) + "m" : "");
  return std::to_string(s / 86400) + "d" +
         (s % 86400 / 3600 ? std::to_string(s % 86400 / 3600) + "h" : "");
}

std::string Ago(std::int64_t then_ms, std::int64_t now_ms) {
  std::int64_t s = (now_ms - then_ms) / 1000;
  if (s < 5) return "just now";
  if (s < 60) return std::to_string(s) + "s ago";
  if (s < 3600) return std::to_string(s / 60) + "m ago";
  if (s < 86400) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string ClockTime(std::int64_t then_ms, std::int64_t now_ms) {
  std::time_t t = static_cast<std::time_t>(then_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  if (now_ms - then_ms < 20LL * 3600 * 1000 && now_ms >= then_ms) {
    std::strftime(buf, sizeof buf, "%H:%M", &tm);
  } else {
    std::strftime(buf, sizeof buf, "%b %d %H:%M", &tm);
  }
  return buf;
}

// ---------------------------------------------------------------------------
// Collecting

Result<nlohmann::json> CollectStatus(const std::string& state_dir, std::int64_t now_ms) {
  config::StatePaths paths(state_dir);
  std::string unanswered;
  if (auto answer = daemon::QueryStatus(paths.socket); answer.ok()) {
    auto j = nlohmann::json::parse(*answer, nullptr, false);
    if (!j.is_discarded() && j.is_object() && !j.contains("error")) return j;
    unanswered = "the daemon's answer was unusable";
  } else if (answer.error().code() != Errc::kUnavailable) {
    // It accepted the connection but did not answer in time: it runs, busy
    // or stuck. Show agent.db, but do not claim it is down.
    unanswered = answer.error().message();
  }
  if (!fs::Exists(paths.db)) {
    nlohmann::json j;
    j["enrolled"] = false;
    j["deviceId"] = "";
    j["hub"] = "";
    j["connection"] = "disconnected";
    j["daemon"] = "not-running";
    j["desiredGeneration"] = 0;
    j["appliedGeneration"] = 0;
    j["outboxDepth"] = 0;
    j["certNotAfter"] = nullptr;
    j["workloads"] = nlohmann::json::array();
    return j;
  }
  state::OpenOptions ro;
  ro.read_only = true;
  auto store = state::AgentStore::Open(paths.db, ro);
  if (!store.ok()) return store.error().WithContext("reading " + paths.db);
  auto snap = (*store)->ReadSnapshot();
  if (!snap.ok()) return snap.error().WithContext("reading " + paths.db);
  auto ops = NewLinuxProcessOps();
  daemon::AliveFn alive = [&ops](const ProcessRecord& r) {
    auto start = ops->StartTime(r.pid);
    return start.ok() && *start == r.start_time_ticks;
  };
  auto j = daemon::BuildStatus(*snap, nullptr, daemon::ReadCertSummary(paths.cert), now_ms, alive);
  if (!unanswered.empty()) {
    j["daemon"] = "running";
    j["daemonPid"] = snap->daemon_pid;
    j["connection"] = j["lastKnownConnection"];
    j["note"] = "the daemon did not answer (" + unanswered + "); showing agent.db";
  }
  return j;
}

// ---------------------------------------------------------------------------
// Rendering

std::string Headline(const nlohmann::json& j, std::int64_t now_ms) {
  if (j.contains("enrolled") && j["enrolled"].is_boolean() && !j["enrolled"].get<bool>())
    return "not enrolled — run: outpost-agent join --hub URL --token TOKEN";
  Counts c = CountWorkloads(j);
  const bool daemon_up = Str(j, "daemon") == "running";
  if (!daemon_up) return "daemon not running — last known state:";
  if (Str(j, "connection") == "connected") {
    std::int64_t desired = Int(j, "desiredGeneration");
    std::int64_t applied = Int(j, "appliedGeneration");
    std::string sync = desired == applied ? "in sync"
                                          : "applying generation " + std::to_string(desired) +
                                                " (applied " + std::to_string(applied) + ")";
    return "connected, " + sync + ", " + WorkloadPhrase(c, false);
  }
  return OfflinePhrase(j, now_ms) + ", " + WorkloadPhrase(c, true);
}

std::string RenderStatus(const nlohmann::json& j, std::int64_t now_ms, bool color) {
  std::ostringstream o;
  Counts c = CountWorkloads(j);
  const bool enrolled =
      !(j.contains("enrolled") && j["enrolled"].is_boolean() && !j["enrolled"].get<bool>());
  const bool daemon_up = Str(j, "daemon") == "running";
  const bool connected = Str(j, "connection") == "connected";
  const bool in_sync = Int(j, "desiredGeneration") == Int(j, "appliedGeneration");
  const char* colour = !enrolled || !daemon_up || c.failed > 0        ? kRed
                       : connected && in_sync && c.running == c.total ? kGreen
                                                                      : kYellow;
  o << Paint(Headline(j, now_ms), colour, color) << "\n";
  if (!enrolled) return o.str();
  if (!daemon_up) {
    // What the workloads and the link were when the daemon last ran.
    std::string last =
        Str(j, "lastKnownConnection") == "connected" ? "was connected" : OfflinePhrase(j, now_ms);
    o << "  " << last << ", " << Plural(c.running, "workload") << " still running";
    if (c.total > c.running) o << ", " << (c.total - c.running) << " not running";
    o << "\n";
  }
  o << "\n";
  auto row = [&](const std::string& key, const std::string& value) {
    o << (color ? kBold : "") << std::left << std::setw(13) << key << (color ? kReset : "") << value
      << "\n";
  };
  row("Device", Str(j, "deviceId"));
  row("Hub", Str(j, "hub"));
  if (!Str(j, "broker").empty()) row("Broker", Str(j, "broker"));
  {
    std::int64_t since = ParseIsoMs(Str(j, "connectionSince"));
    std::string v = connected ? "connected" : "disconnected";
    if (since > 0) v += " since " + ClockTime(since, now_ms) + " (" + Ago(since, now_ms) + ")";
    std::string detail = Str(j, "connectionDetail");
    if (!connected && !detail.empty()) v += " — " + detail;
    row("Connection", v);
  }
  {
    std::string v = daemon_up ? "running" : "not running";
    if (daemon_up) {
      std::int64_t started = ParseIsoMs(Str(j, "daemonStartedAt"));
      v += " (pid " + std::to_string(Int(j, "daemonPid"));
      if (started > 0) v += ", up " + Duration((now_ms - started) / 1000);
      v += ")";
    } else {
      v += " (start it: systemctl start outpost-agent)";
    }
    row("Daemon", v);
  }
  {
    std::string v = "desired " + std::to_string(Int(j, "desiredGeneration")) + ", applied " +
                    std::to_string(Int(j, "appliedGeneration"));
    if (Int(j, "hubGeneration") > Int(j, "desiredGeneration"))
      v += " (the hub has " + std::to_string(Int(j, "hubGeneration")) + ")";
    row("Generation", v);
  }
  {
    std::string v = Plural(Int(j, "outboxDepth"), "event") + " waiting to be sent";
    if (Int(j, "outboxDroppedTotal") > 0)
      v += " (" + std::to_string(Int(j, "outboxDroppedTotal")) + " dropped when full)";
    row("Outbox", v);
  }
  // Duplicates are normal (the retained document arrives again on every
  // reconnect); stale or rejected documents are worth a line.
  if (Int(j, "staleDocuments") + Int(j, "rejectedDocuments") > 0) {
    row("Documents", std::to_string(Int(j, "staleDocuments")) + " stale, " +
                         std::to_string(Int(j, "duplicateDocuments")) + " duplicate, " +
                         std::to_string(Int(j, "rejectedDocuments")) + " rejected");
  }
  {
    std::string not_after = Str(j, "certNotAfter");
    if (not_after.empty()) {
      row("Certificate", Paint("missing or unreadable", kRed, color));
    } else {
      std::int64_t days = Int(j, "certDaysLeft");
      std::string v = "valid until " + not_after.substr(0, 10) + " (" +
                      (days < 0 ? "EXPIRED" : Plural(days, "day") + " left") + ")";
      row("Certificate", days < 14 ? Paint(v, days < 0 ? kRed : kYellow, color) : v);
    }
  }
  o << "\n";
  auto wl = j.find("workloads");
  if (wl == j.end() || !wl->is_array() || wl->empty()) {
    o << "no workloads\n";
    return o.str();
  }
  std::size_t name_width = 10;
  for (const auto& w : *wl)
    name_width = std::max(name_width, Str(w, "name").size() + 2);
  name_width = std::min<std::size_t>(name_width, 48);
  const int nw = static_cast<int>(name_width);
  o << (color ? kDim : "") << std::left << std::setw(nw) << "WORKLOAD" << std::setw(10) << "STATE"
    << std::setw(9) << "PID" << std::setw(10) << "RESTARTS" << std::setw(9) << "UPTIME"
    << std::setw(10) << "LIMITS"
    << "MESSAGE" << (color ? kReset : "") << "\n";
  for (const auto& w : *wl) {
    std::string st = Str(w, "state");
    const char* sc = st == "running"                       ? kGreen
                     : st == "failed"                      ? kRed
                     : st == "starting" || st == "stopped" ? kDim
                                                           : kYellow;
    std::string pid = Int(w, "pid") > 0 ? std::to_string(Int(w, "pid")) : "-";
    std::string uptime = st == "running" ? Duration(Int(w, "uptime")) : "-";
    std::string mode = Str(w, "resourceMode");
    std::string message = Str(w, "message");
    if (w.contains("lastExitCode") && w["lastExitCode"].is_number() && st != "running") {
      std::int64_t code = w["lastExitCode"].get<std::int64_t>();
      std::string exit = code < 0 ? "killed by signal " + std::to_string(-code)
                                  : "exit code " + std::to_string(code);
      message = message.empty() ? exit : message + " (" + exit + ")";
    }
    std::string name = Str(w, "name");
    o << std::left << std::setw(nw)
      << (name.size() > name_width - 1 ? name.substr(0, name_width - 2) + "~" : name);
    std::string padded = st;
    padded.resize(std::max<std::size_t>(st.size(), 10), ' ');
    o << Paint(padded, sc, color) << std::setw(9) << pid << std::setw(10)
      << std::to_string(Int(w, "restarts")) << std::setw(9) << uptime << std::setw(10)
      << (mode.empty() ? "-" : mode) << message << "\n";
  }
  return o.str();
}

int StatusCommand(const Invocation& inv, const Env& env) {
  bool json = false;
  for (const auto& a : inv.args) {
    if (a == "--json" || a == "-o=json") {
      json = true;
    } else {
      env.err << "outpost-agent status: unknown option " << a << "\n";
      return 2;
    }
  }
  log::SetLevel(log::Level::kError);
  const std::int64_t now = NowMs(env);
  auto status = CollectStatus(inv.state_dir, now);
  if (!status.ok()) {
    env.err << "outpost-agent status: " << status.error().message() << "\n";
    return 1;
  }
  if (json) {
    env.out << status->dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    env.out << RenderStatus(*status, now, env.color);
  }
  const bool enrolled = !(status->contains("enrolled") && (*status)["enrolled"].is_boolean() &&
                          !(*status)["enrolled"].get<bool>());
  return enrolled ? 0 : 1;
}

}  // namespace outpost::agent::cli
