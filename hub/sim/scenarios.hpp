// `outpost-sim run`: loads the enrolled fleet, connects it, and runs the
// benchmark phases in order, printing one line per figure:
//
//   connect  all devices connected and settled (retained documents handled)
//   idle     traffic per device over an idle window (TCP_INFO of the device
//            sockets), hub and broker CPU meanwhile
//   reports  every device sends one report: hub CPU time per report
//   rollout  apply a manifest touching every device: time until the hub holds
//            every device's report of the new generation (the ack of the
//            DESIRED_APPLIED event sent right after the report), p50/p99 per
//            device, checked against the hub's rollout status; hub CPU, RSS,
//            database size
//   storm    restart the broker (a command) under the connected fleet: time
//            until every device has reconnected and its outbox is acked, and
//            the events lost (queued by the devices, not stored by the hub)
//   floor    the same number and size of messages fanned out by a broker
//            alone (a second mosquitto) from one publisher to the same
//            devices, each answering once with a report-sized message
//
// Without phases it connects the fleet and holds it until SIGINT/SIGTERM.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::hub::sim {

struct RunOptions {
  std::string state_dir;
  std::size_t count = 0;  // 0: every enrolled device
  int threads = 4;
  std::string broker_url;    // default: the one given at enrollment
  std::string hub_data_dir;  // ctl.yaml, hub.db, mosquitto.pid, hub.crt/key
  int hub_pid = 0;
  std::vector<std::string> phases;
  std::string manifest;      // rollout: the EdgeApplication YAML to apply; every
                             // "@ROLLOUT@" in it becomes a new value per rollout
  std::string app;           // rollout: its name (for the rollout status)
  int rollouts = 1;          // rollout: how many, one after the other
  std::string restart_cmd;   // storm: restarts the broker, returns when it listens
  std::string floor_broker;  // floor: ssl://host:port of a broker alone
  int idle_seconds = 60;
  int connect_timeout_seconds = 10;  // per attempt, as the agent
  int timeout_seconds = 600;         // per phase
  std::string results;               // figure lines are appended here too
};

// Returns the process exit code (0: every phase completed).
int RunFleet(const RunOptions& options);

}  // namespace outpost::hub::sim
