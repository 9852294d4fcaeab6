// WorkloadMachine: the decisions for one workload, with no process, clock or
// file underneath. The supervisor feeds it inputs (a spec, "started",
// "exited", "timer fired", device readiness, "stop") together with the time,
// and executes the Actions it returns (spawn, signal, arm timer, emit event).
//
// Phases and transitions (one table, top to bottom):
//
//   phase      input                       -> next phase  actions
//   ---------  --------------------------  -----------  ---------------------------
//   (new)      Apply(spec), not ready      -> kWaiting
//   (new)      Apply(spec), ready          -> kStarting   Spawn
//   (adopted)  Apply(same hash)            -> kRunning
//   (adopted)  Apply(other hash)           -> kStopping   Signal TERM, ArmTimer(grace)
//   kWaiting   Readiness(ready)            -> kStarting   Spawn
//   kStarting  Started(pid)                -> kRunning    Emit STARTED / RESTARTED
//   kStarting  SpawnFailed, will retry     -> kBackoff    Emit FAILED, ArmTimer(backoff)
//   kStarting  SpawnFailed, no retry       -> kFailed     Emit FAILED
//   kRunning   Exited, policy restarts     -> kBackoff    Emit EXITED, ArmTimer(backoff)
//   kRunning   Exited(0), no restart       -> kStopped    Emit EXITED
//   kRunning   Exited(!=0), no restart     -> kFailed     Emit EXITED, Emit FAILED
//   kBackoff   TimerFired, not ready       -> kWaiting
//   kBackoff   TimerFired, ready           -> kStarting   Spawn (a restart)
//   any live   Apply(other hash)           -> kStopping   Signal TERM, ArmTimer(grace)
//   not live   Apply(other hash)           -> as (new)    CancelTimer
//   any live   Stop(removed / all)         -> kStopping   Signal TERM, ArmTimer(grace)
//   not live   Stop(removed / all)         -> kStopped    CancelTimer, Emit STOPPED, Done
//   kStopping  TimerFired (grace over)     -> kStopping   Signal KILL
//   kStopping  Exited, spec changed        -> as (new)    Emit STOPPED, CancelTimer, Spawn
//   kStopping  Exited, removed / all       -> kStopped    Emit STOPPED, CancelTimer, Done
//   any        Readiness(devices changed)  -> (same)      Emit DEVICE_APPEARED / VANISHED
//
// "live" = a process exists (kRunning, kStopping, an adopted process).
// Restart policy: ALWAYS (and UNSPECIFIED) restarts after every exit;
// ON_FAILURE after a non-zero exit, a signal, or an unknown status (adopted);
// NEVER does not restart. Backoff: capped exponential (shared Backoff), reset
// when the run that just ended lasted at least `stable_after`, and on a new spec.
// A device that vanishes while the workload runs does not stop it (events
// only); the next start waits for it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/runtime/process_ops.hpp"
#include "agent/runtime/supervisor.hpp"
#include "outpost.pb.h"
#include "shared/core/backoff.hpp"

namespace outpost::agent {

// A moment, in both clocks: steady for deadlines (immune to clock jumps on
// devices without an RTC), Unix ms for what is reported.
struct Instant {
  std::chrono::steady_clock::time_point mono;
  std::int64_t unix_ms = 0;
};

enum class Phase { kWaiting, kStarting, kRunning, kBackoff, kStopping, kStopped, kFailed };
std::string_view PhaseName(Phase phase);

enum class StopReason { kNone, kSpecChanged, kRemoved, kStopAll };

// Whether a workload may start now.
struct Readiness {
  std::vector<std::string> missing_devices;  // spec paths that do not exist
  std::string other;                         // another reason to wait ("needs 2 GPUs, 1 found")
  bool ready() const { return missing_devices.empty() && other.empty(); }
};

struct Action {
  enum class Kind {
    kSpawn,        // start the process for spec()
    kSignal,       // `signal` to the process group of pid()
    kArmTimer,     // (re)arm the workload's one timer for `deadline`
    kCancelTimer,  // the timer is not needed any more
    kEmit,         // hand `event` to on_event
    kDone,         // the machine is finished (stopped after removal): drop it
  };
  explicit Action(Kind k) : kind(k) {}
  Kind kind;
  int signal = 0;
  std::chrono::steady_clock::time_point deadline{};
  RuntimeEvent event;
};
using Actions = std::vector<Action>;

struct MachineConfig {
  std::chrono::milliseconds stop_grace{10000};  // when spec.stop_grace_seconds == 0
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{60000};
  std::chrono::milliseconds stable_after{30000};
  double jitter = 0.0;                  // Backoff jitter band (0: none)
  std::function<double()> unit_random;  // in [0, 1); empty: 0
};

class WorkloadMachine {
 public:
  WorkloadMachine(std::string name, MachineConfig config);

  // A live process adopted from a ProcessRecord (before any Apply).
  void Adopt(const std::string& spec_hash, int pid, std::uint32_t restarts,
             std::int64_t started_at_ms, Instant now);

  // A (new or repeated) spec for this workload. `readiness` as of now.
  Actions Apply(const outpost::v1::WorkloadSpec& spec, const Readiness& readiness, Instant now);
  Actions Started(int pid, Instant now);
  // `permanent`: retrying cannot help (unsupported kind, empty command).
  Actions SpawnFailed(const std::string& message, bool permanent, Instant now);
  Actions Exited(ExitStatus status, Instant now);
  Actions TimerFired(Instant now);
  Actions ReadinessChanged(const Readiness& readiness, Instant now);
  Actions Stop(StopReason reason, Instant now);

  const std::string& name() const { return name_; }
  Phase phase() const { return phase_; }
  const outpost::v1::WorkloadSpec& spec() const { return spec_; }
  bool has_spec() const { return has_spec_; }
  const std::string& spec_hash() const { return spec_hash_; }
  int pid() const { return pid_; }
  std::uint32_t restarts() const { return restarts_; }
  std::int64_t started_at_ms() const { return started_at_ms_; }
  StopReason stopping_for() const { return pending_; }
  // The armed deadline, if any.
  std::optional<std::chrono::steady_clock::time_point> deadline() const { return deadline_; }
  // Bumped whenever something Status() shows changed.
  std::uint64_t revision() const { return revision_; }
  // Whether the machine needs device readiness polled (devices or GPUs asked for).
  bool NeedsReadiness() const;

  // The reported status (resource_mode is filled in by the supervisor).
  outpost::v1::WorkloadStatus Status() const;

 private:
  void Enter(Phase phase, Instant now, std::string message);
  void TryStart(Actions& out, Instant now);
  void BeginStop(Actions& out, StopReason reason, Instant now);
  void Emit(Actions& out, outpost::v1::EventType type, int exit_code, std::string message,
            std::string device_path = "");
  void Arm(Actions& out, std::chrono::steady_clock::time_point deadline);
  void Cancel(Actions& out);
  void NoteDevices(Actions& out, const Readiness& readiness);
  bool ShouldRestart(const ExitStatus& status) const;
  std::chrono::milliseconds Grace() const;

  std::string name_;
  MachineConfig config_;
  Backoff backoff_;
  outpost::v1::WorkloadSpec spec_;
  bool has_spec_ = false;
  std::string spec_hash_;
  Phase phase_ = Phase::kWaiting;
  std::string message_;
  std::int64_t since_ms_ = 0;
  int pid_ = 0;
  std::uint32_t restarts_ = 0;
  bool attempted_ = false;  // a start was attempted under this spec
  bool adopted_ = false;    // pid_ was adopted (no spec seen yet)
  std::chrono::steady_clock::time_point started_mono_{};
  std::int64_t started_at_ms_ = 0;
  std::optional<ExitStatus> last_exit_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  StopReason pending_ = StopReason::kNone;
  bool readiness_known_ = false;
  Readiness readiness_;
  std::uint64_t revision_ = 0;
};

// "3" / "signal 9 (Killed)" / "exit status unknown (adopted)".
std::string DescribeExit(const ExitStatus& status);

}  // namespace outpost::agent
