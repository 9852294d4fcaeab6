// `outpost-sim agent-startup`: how long outpost-agent takes from exec to
// every cached workload launched (each has exec'd its own program), measured
// from outside over repeated runs. The probe is a child subreaper, so the
// workloads (which outlive the agent on purpose) come back to it to be ended
// between runs.
#pragma once

#include <string>
#include <vector>

namespace outpost::hub::sim {

struct StartupOptions {
  std::vector<std::string> argv;  // the agent command line ("... run")
  int runs = 20;
  int warmup = 1;  // runs not counted
  int expect = 3;  // workloads to wait for
  int timeout_ms = 10000;
  std::string log;      // the agent's output (appended); default /dev/null
  std::string results;  // figure lines are appended here too
};

int MeasureAgentStartup(const StartupOptions& options);

}  // namespace outpost::hub::sim
