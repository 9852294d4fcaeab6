#include "agent/cli/cli.hpp"

#include <chrono>
#include <map>

#include "agent/cli/commands.hpp"
#include "agent/config/config.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/enroll/enroll.hpp"
#include "shared/core/log.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::agent::cli {
namespace {

constexpr const char* kUsage =
    "usage: outpost-agent [--state-dir DIR] [--config FILE] <command> [options]\n"
    "\n"
    "commands:\n"
    "  join --hub URL --token TOKEN [--ca-hash sha256:HEX] [--name NAME] [--label k=v]...\n"
    "       [--force]          enroll this device with a hub\n"
    "  run                     the agent daemon (foreground; systemd Type=notify)\n"
    "  status [--json]         what runs here, connection, backlog, certificate\n"
    "  doctor [--json]         local checks; exits non-zero when one fails\n"
    "  version                 print the version\n"
    "\n"
    "global options:\n"
    "  --state-dir DIR         default /var/lib/outpost-agent\n"
    "  --config FILE           default /etc/outpost/agent.yaml (optional)\n";

bool TakeValue(const std::vector<std::string>& args, std::size_t& i, const std::string& flag,
               std::string* value, std::string* error) {
  const std::string& a = args[i];
  if (a == flag) {
    if (i + 1 >= args.size()) {
      *error = flag + " needs a value";
      return true;
    }
    *value = args[++i];
    return true;
  }
  if (a.starts_with(flag + "=")) {
    *value = a.substr(flag.size() + 1);
    return true;
  }
  return false;
}

Result<config::AgentConfig> LoadConfig(const Invocation& inv) {
  return config::Load(inv.config_file, inv.config_given);
}

void ApplyLogLevel(const config::AgentConfig& cfg) {
  log::Level level;
  if (log::ParseLevel(cfg.log_level, &level)) log::SetLevel(level);
}

int Join(const Invocation& inv, const Env& env) {
  enroll::JoinOptions o;
  o.state_dir = inv.state_dir;
  for (std::size_t i = 0; i < inv.args.size(); ++i) {
    std::string error;
    std::string label;
    const std::string& a = inv.args[i];
    if (TakeValue(inv.args, i, "--hub", &o.hub_url, &error) ||
        TakeValue(inv.args, i, "--token", &o.token, &error) ||
        TakeValue(inv.args, i, "--ca-hash", &o.ca_hash, &error) ||
        TakeValue(inv.args, i, "--name", &o.name, &error)) {
    } else if (TakeValue(inv.args, i, "--label", &label, &error)) {
      if (error.empty()) {
        auto eq = label.find('=');
        if (eq == std::string::npos || eq == 0) {
          error = "--label takes k=v, got \"" + label + "\"";
        } else {
          o.labels[label.substr(0, eq)] = label.substr(eq + 1);
        }
      }
    } else if (a == "--force") {
      o.force = true;
    } else {
      error = "join: unknown option " + a;
    }
    if (!error.empty()) {
      env.err << "outpost-agent join: " << error << "\n";
      return 2;
    }
  }
  if (o.hub_url.empty() || o.token.empty()) {
    env.err << "outpost-agent join: --hub URL and --token TOKEN are required\n";
    return 2;
  }
  auto cfg = LoadConfig(inv);
  if (!cfg.ok()) {
    env.err << "outpost-agent join: " << cfg.error().message() << "\n";
    return 2;
  }
  o.roots.proc_root = cfg->proc_root;
  o.roots.dev_root = cfg->dev_root;
  o.roots.etc_root = cfg->etc_root;
  o.roots.nvidia_smi = cfg->nvidia_smi;
  // Join speaks in one line on failure; library chatter stays below warnings.
  log::SetLevel(log::Level::kError);
  auto result = enroll::Join(o, enroll::HttpSend(http::Send));
  if (!result.ok()) {
    env.err << "outpost-agent join: " << result.error().message() << "\n";
    return 1;
  }
  if (!result->ca_pinned_by_hash)
    env.err << "warning: no --ca-hash given; trusting the hub's CA " << result->ca_hash
            << " on first use\n";
  env.out << "enrolled as device " << result->device_id << " (hub " << result->hub_url
          << ", broker " << result->broker_url << ")\n";
  env.out << "start the agent: systemctl enable --now outpost-agent   (or: outpost-agent";
  if (inv.state_dir != config::kDefaultStateDir) env.out << " --state-dir " << inv.state_dir;
  env.out << " run)\n";
  return 0;
}

int RunDaemon(const Invocation& inv, const Env& env) {
  if (!inv.args.empty()) {
    env.err << "outpost-agent run: unexpected argument " << inv.args[0] << "\n";
    return 2;
  }
  auto cfg = LoadConfig(inv);
  if (!cfg.ok()) {
    env.err << "outpost-agent run: " << cfg.error().message() << "\n";
    return 2;
  }
  ApplyLogLevel(*cfg);
  for (const auto& k : cfg->unknown_keys)
    log::Warn("config: unknown key \"", k, "\" ignored");
  daemon::DaemonOptions options;
  options.state_dir = inv.state_dir;
  options.config = *cfg;
  return daemon::Run(std::move(options));
}

}  // namespace

Result<Invocation> ParseInvocation(const std::vector<std::string>& args) {
  Invocation inv;
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    std::string error;
    const std::string& a = args[i];
    if (TakeValue(args, i, "--state-dir", &inv.state_dir, &error)) {
    } else if (TakeValue(args, i, "--config", &inv.config_file, &error)) {
      inv.config_given = true;
    } else if (a == "-h" || a == "--help") {
      inv.command = "help";
      return inv;
    } else if (!a.empty() && a[0] == '-') {
      return Error(Errc::kInvalidArgument, "unknown option " + a);
    } else {
      break;
    }
    if (!error.empty()) return Error(Errc::kInvalidArgument, error);
  }
  if (i >= args.size()) return Error(Errc::kInvalidArgument, "no command given");
  inv.command = args[i++];
  // Global options are also accepted after the command.
  for (; i < args.size(); ++i) {
    std::string error;
    if (TakeValue(args, i, "--state-dir", &inv.state_dir, &error)) {
    } else if (TakeValue(args, i, "--config", &inv.config_file, &error)) {
      inv.config_given = true;
    } else {
      inv.args.push_back(args[i]);
    }
    if (!error.empty()) return Error(Errc::kInvalidArgument, error);
  }
  if (inv.state_dir.empty()) return Error(Errc::kInvalidArgument, "--state-dir is empty");
  return inv;
}

int Main(const std::vector<std::string>& args, const Env& env) {
  auto inv = ParseInvocation(args);
  if (!inv.ok()) {
    env.err << "outpost-agent: " << inv.error().message() << "\n" << kUsage;
    return 2;
  }
  const std::string& cmd = inv->command;
  if (cmd == "help") {
    env.out << kUsage;
    return 0;
  }
  if (cmd == "version") {
    env.out << OUTPOST_VERSION << "\n";
    return 0;
  }
  if (cmd == "join") return Join(*inv, env);
  if (cmd == "run") return RunDaemon(*inv, env);
  if (cmd == "status") return StatusCommand(*inv, env);
  if (cmd == "doctor") return DoctorCommand(*inv, env);
  env.err << "outpost-agent: unknown command \"" << cmd << "\"\n" << kUsage;
  return 2;
}

}  // namespace outpost::agent::cli
