// outpost::agent::daemon — `outpost-agent run`.
//
// Threads: one boost::asio::io_context thread runs everything (signals,
// timers, the status socket, the supervisor, the sync engine, agent.db);
// Paho's threads only post() what they receive onto it; one Worker thread runs
// blocking jobs (discovery, renewal) and posts their results back.
//
// Start order: agent.db, Supervisor::Adopt(), apply the cached desired
// document at once (no network needed), status socket, MQTT client, READY=1.
// SIGTERM/SIGINT: presence offline (bounded wait), Supervisor::Detach() —
// workloads keep running (KillMode=process) and are re-adopted on the next
// start — then a clean disconnect.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "agent/config/config.hpp"
#include "agent/enroll/enroll.hpp"
#include "agent/runtime/process_ops.hpp"
#include "shared/core/result.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::agent::daemon {

struct DaemonOptions {
  std::string state_dir;
  config::AgentConfig config;
  // Injection points (tests); defaults: Paho, Beast, the Linux process layer.
  std::function<Result<mqtt::ClientPtr>(mqtt::ClientOptions)> make_client;
  enroll::HttpSend http_send;
  std::unique_ptr<ProcessOps> ops;
};

// Runs until SIGTERM/SIGINT. Returns the process exit code; a failure to
// start is one line on stderr (through the log) and exit code 1.
int Run(DaemonOptions options);

}  // namespace outpost::agent::daemon
