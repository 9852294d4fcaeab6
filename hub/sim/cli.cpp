#include "hub/sim/cli.hpp"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>

#include "hub/sim/enroll.hpp"
#include "hub/sim/scenarios.hpp"
#include "hub/sim/startup_probe.hpp"
#include "shared/core/log.hpp"

namespace outpost::hub::sim {

namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  outpost-sim enroll --state-dir DIR --hub URL --token T --ca-hash sha256:HEX --count N\n"
    "                     [--prefix sim] [--jobs 4] [--label k=v]...\n"
    "  outpost-sim run --state-dir DIR [--count N] [--threads 4] [--broker ssl://HOST:PORT]\n"
    "                  [--hub-data-dir DIR] [--hub-pid PID]\n"
    "                  [--phases connect,idle,reports,rollout,storm,floor]\n"
    "                  [--manifest FILE --app NAME] [--rollouts 1] [--restart-cmd CMD]\n"
    "                  [--floor-broker ssl://HOST:PORT] [--idle-seconds 60] [--timeout 600]\n"
    "                  [--connect-timeout 10]\n"
    "                  [--results FILE] [--log-level warn]\n"
    "  outpost-sim agent-startup [--runs 20] [--warmup 1] [--expect 3] [--log FILE]\n"
    "                  [--results FILE] -- OUTPOST-AGENT ARGS... run\n"
    "  outpost-sim version\n"
    "docs/benchmarks.md describes the phases and the figures.\n";

int Usage(const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "outpost-sim: %s\n", why.c_str());
  std::fprintf(stderr, "%s", kUsage);
  return 2;
}

// Flags of the form --name VALUE; `repeated` ones collect every value.
struct Flags {
  std::map<std::string, std::string> values;
  std::map<std::string, std::vector<std::string>> repeated;
  std::vector<std::string> rest;  // after "--"
};

bool Parse(const std::vector<std::string>& args, std::size_t from,
           const std::vector<std::string>& known, const std::vector<std::string>& multi, Flags* out,
           std::string* why) {
  for (std::size_t i = from; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out->rest.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      return true;
    }
    if (a.rfind("--", 0) != 0) {
      *why = "unexpected argument " + a;
      return false;
    }
    std::string name = a.substr(2);
    std::string value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) {
        *why = a + " needs a value";
        return false;
      }
      value = args[++i];
    }
    bool is_multi = std::find(multi.begin(), multi.end(), name) != multi.end();
    if (!is_multi && std::find(known.begin(), known.end(), name) == known.end()) {
      *why = "unknown option --" + name;
      return false;
    }
    if (is_multi) {
      out->repeated[name].push_back(value);
    } else {
      out->values[name] = value;
    }
  }
  return true;
}

bool ToInt(const Flags& f, const std::string& name, long long* out, std::string* why) {
  auto it = f.values.find(name);
  if (it == f.values.end()) return true;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (end == it->second.c_str() || *end != '\0' || v < 0) {
    *why = "--" + name + " takes a non-negative number";
    return false;
  }
  *out = v;
  return true;
}

std::string Get(const Flags& f, const std::string& name, const std::string& def = "") {
  auto it = f.values.find(name);
  return it == f.values.end() ? def : it->second;
}

int Enroll(const std::vector<std::string>& args) {
  Flags f;
  std::string why;
  if (!Parse(args, 1, {"state-dir", "hub", "token", "ca-hash", "count", "prefix", "jobs"},
             {"label"}, &f, &why)) {
    return Usage(why);
  }
  EnrollOptions o;
  o.state_dir = Get(f, "state-dir");
  o.hub_url = Get(f, "hub");
  o.token = Get(f, "token");
  o.ca_hash = Get(f, "ca-hash");
  o.prefix = Get(f, "prefix", "sim");
  long long count = 0;
  long long jobs = 4;
  if (!ToInt(f, "count", &count, &why) || !ToInt(f, "jobs", &jobs, &why)) return Usage(why);
  if (o.state_dir.empty() || count <= 0) return Usage("enroll needs --state-dir and --count");
  o.count = static_cast<std::size_t>(count);
  o.jobs = static_cast<int>(jobs);
  for (const auto& kv : f.repeated["label"]) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) return Usage("--label takes k=v");
    o.labels[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  Status s = EnrollFleet(o);
  if (!s.ok()) {
    std::fprintf(stderr, "outpost-sim: %s\n", s.error().ToString().c_str());
    return 1;
  }
  return 0;
}

int Run(const std::vector<std::string>& args) {
  Flags f;
  std::string why;
  if (!Parse(args, 1,
             {"state-dir", "count", "threads", "broker", "hub-data-dir", "hub-pid", "phases",
              "manifest", "app", "rollouts", "restart-cmd", "floor-broker", "idle-seconds",
              "timeout", "results", "log-level", "connect-timeout"},
             {}, &f, &why)) {
    return Usage(why);
  }
  RunOptions o;
  o.state_dir = Get(f, "state-dir");
  if (o.state_dir.empty()) return Usage("run needs --state-dir");
  long long count = 0, threads = 4, hub_pid = 0, idle = 60, timeout = 600, rollouts = 1,
            connect_timeout = 10;
  if (!ToInt(f, "count", &count, &why) || !ToInt(f, "threads", &threads, &why) ||
      !ToInt(f, "hub-pid", &hub_pid, &why) || !ToInt(f, "idle-seconds", &idle, &why) ||
      !ToInt(f, "timeout", &timeout, &why) || !ToInt(f, "rollouts", &rollouts, &why) ||
      !ToInt(f, "connect-timeout", &connect_timeout, &why)) {
    return Usage(why);
  }
  o.count = static_cast<std::size_t>(count);
  o.threads = std::max(1, static_cast<int>(threads));
  o.hub_pid = static_cast<int>(hub_pid);
  o.idle_seconds = static_cast<int>(idle);
  o.timeout_seconds = static_cast<int>(timeout);
  o.rollouts = static_cast<int>(rollouts);
  o.connect_timeout_seconds = std::max(1, static_cast<int>(connect_timeout));
  o.broker_url = Get(f, "broker");
  o.hub_data_dir = Get(f, "hub-data-dir");
  o.manifest = Get(f, "manifest");
  o.app = Get(f, "app");
  o.restart_cmd = Get(f, "restart-cmd");
  o.floor_broker = Get(f, "floor-broker");
  o.results = Get(f, "results");
  std::stringstream phases(Get(f, "phases"));
  for (std::string p; std::getline(phases, p, ',');) {
    if (!p.empty()) o.phases.push_back(p);
  }
  log::Level level = log::Level::kWarn;
  if (!log::ParseLevel(Get(f, "log-level", "warn"), &level)) {
    return Usage("--log-level takes debug, info, warn or error");
  }
  log::SetLevel(level);
  return RunFleet(o);
}

int AgentStartup(const std::vector<std::string>& args) {
  Flags f;
  std::string why;
  if (!Parse(args, 1, {"runs", "warmup", "expect", "log", "results", "timeout-ms"}, {}, &f, &why)) {
    return Usage(why);
  }
  StartupOptions o;
  long long runs = 20, warmup = 1, expect = 3, timeout = 10000;
  if (!ToInt(f, "runs", &runs, &why) || !ToInt(f, "warmup", &warmup, &why) ||
      !ToInt(f, "expect", &expect, &why) || !ToInt(f, "timeout-ms", &timeout, &why)) {
    return Usage(why);
  }
  o.runs = std::max(1, static_cast<int>(runs));
  o.warmup = static_cast<int>(warmup);
  o.expect = std::max(1, static_cast<int>(expect));
  o.timeout_ms = static_cast<int>(timeout);
  o.log = Get(f, "log");
  o.results = Get(f, "results");
  o.argv = f.rest;
  return MeasureAgentStartup(o);
}

}  // namespace

int Main(const std::vector<std::string>& args) {
  if (args.empty()) return Usage("");
  const std::string& cmd = args[0];
  if (cmd == "enroll") return Enroll(args);
  if (cmd == "run") return Run(args);
  if (cmd == "agent-startup") return AgentStartup(args);
  if (cmd == "version") {
    std::printf("outpost-sim %s\n", OUTPOST_VERSION);
    return 0;
  }
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::printf("%s", kUsage);
    return 0;
  }
  return Usage("unknown command " + cmd);
}

}  // namespace outpost::hub::sim
