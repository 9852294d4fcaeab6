#include "agent/runtime/workload_machine.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <string>

namespace outpost::agent {

namespace v1 = outpost::v1;

std::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kWaiting:
      return "waiting";
    case Phase::kStarting:
      return "starting";
    case Phase::kRunning:
      return "running";
    case Phase::kBackoff:
      return "backoff";
    case Phase::kStopping:
      return "stopping";
    case Phase::kStopped:
      return "stopped";
    case Phase::kFailed:
      return "failed";
  }
  return "unknown";
}

std::string DescribeExit(const ExitStatus& status) {
  if (!status.known) return "exit status unknown (adopted)";
  if (status.code >= 0) return "exit code " + std::to_string(status.code);
  const char* name = strsignal(-status.code);
  return "signal " + std::to_string(-status.code) + (name ? std::string(" (") + name + ")" : "");
}

namespace {

std::string Seconds(std::chrono::milliseconds d) {
  auto tenths = (d.count() + 50) / 100;
  std::string s = std::to_string(tenths / 10);
  if (tenths % 10 != 0) s += "." + std::to_string(tenths % 10);
  return s + "s";
}

std::string WaitingMessage(const Readiness& r) {
  std::string msg;
  if (!r.missing_devices.empty()) {
    msg = "waiting for ";
    for (std::size_t i = 0; i < r.missing_devices.size(); ++i) {
      if (i) msg += ", ";
      msg += r.missing_devices[i];
    }
  }
  if (!r.other.empty()) {
    if (!msg.empty()) msg += "; ";
    msg += r.other;
  }
  return msg;
}

}  // namespace

WorkloadMachine::WorkloadMachine(std::string name, MachineConfig config)
    : name_(std::move(name)),
      config_(std::move(config)),
      backoff_(config_.backoff_initial, config_.backoff_max, config_.jitter) {}

bool WorkloadMachine::NeedsReadiness() const {
  return has_spec_ && (spec_.devices_size() > 0 || spec_.gpus().all() || spec_.gpus().count() > 0);
}

std::chrono::milliseconds WorkloadMachine::Grace() const {
  if (has_spec_ && spec_.stop_grace_seconds() > 0) {
    return std::chrono::seconds(spec_.stop_grace_seconds());
  }
  return config_.stop_grace;
}

void WorkloadMachine::Enter(Phase phase, Instant now, std::string message) {
  if (phase != phase_) since_ms_ = now.unix_ms;
  phase_ = phase;
  message_ = std::move(message);
  ++revision_;
}

void WorkloadMachine::Emit(Actions& out, v1::EventType type, int exit_code, std::string message,
                           std::string device_path) {
  Action a{Action::Kind::kEmit};
  a.event.type = type;
  a.event.workload = name_;
  a.event.exit_code = exit_code;
  a.event.message = std::move(message);
  a.event.device_path = std::move(device_path);
  out.push_back(std::move(a));
}

void WorkloadMachine::Arm(Actions& out, std::chrono::steady_clock::time_point deadline) {
  deadline_ = deadline;
  Action a{Action::Kind::kArmTimer};
  a.deadline = deadline;
  out.push_back(a);
}

void WorkloadMachine::Cancel(Actions& out) {
  if (!deadline_) return;
  deadline_.reset();
  out.push_back(Action{Action::Kind::kCancelTimer});
}

void WorkloadMachine::NoteDevices(Actions& out, const Readiness& readiness) {
  if (readiness_known_) {
    const auto& before = readiness_.missing_devices;
    const auto& after = readiness.missing_devices;
    auto contains = [](const std::vector<std::string>& v, const std::string& s) {
      return std::find(v.begin(), v.end(), s) != v.end();
    };
    for (const auto& path : after) {
      if (!contains(before, path)) {
        Emit(out, v1::EVENT_TYPE_DEVICE_VANISHED, 0, "device " + path + " vanished", path);
      }
    }
    for (const auto& path : before) {
      if (!contains(after, path)) {
        Emit(out, v1::EVENT_TYPE_DEVICE_APPEARED, 0, "device " + path + " appeared", path);
      }
    }
  }
  if (!readiness_known_ || readiness.missing_devices != readiness_.missing_devices ||
      readiness.other != readiness_.other) {
    ++revision_;
  }
  readiness_ = readiness;
  readiness_known_ = true;
}

void WorkloadMachine::TryStart(Actions& out, Instant now) {
  Cancel(out);
  if (!readiness_.ready()) {
    Enter(Phase::kWaiting, now, WaitingMessage(readiness_));
    return;
  }
  if (attempted_) ++restarts_;
  attempted_ = true;
  Enter(Phase::kStarting, now, "");
  out.push_back(Action{Action::Kind::kSpawn});
}

void WorkloadMachine::BeginStop(Actions& out, StopReason reason, Instant now) {
  pending_ = reason;
  std::string why =
      reason == StopReason::kSpecChanged ? "stopping the previous version" : "stopping";
  Enter(Phase::kStopping, now, why + " (SIGTERM sent)");
  Action sig{Action::Kind::kSignal};
  sig.signal = SIGTERM;
  out.push_back(sig);
  Arm(out, now.mono + Grace());
}

bool WorkloadMachine::ShouldRestart(const ExitStatus& status) const {
  switch (has_spec_ ? spec_.restart_policy() : v1::RESTART_POLICY_ALWAYS) {
    case v1::RESTART_POLICY_NEVER:
      return false;
    case v1::RESTART_POLICY_ON_FAILURE:
      return !status.known || status.code != 0;
    default:
      return true;
  }
}

void WorkloadMachine::Adopt(const std::string& spec_hash, int pid, std::uint32_t restarts,
                            std::int64_t started_at_ms, Instant now) {
  spec_hash_ = spec_hash;
  pid_ = pid;
  restarts_ = restarts;
  adopted_ = true;
  attempted_ = true;
  started_at_ms_ = started_at_ms;
  // The run's length before the agent restarted is unknown to the steady
  // clock; approximate it from the wall clock (only used for the backoff reset).
  auto ran = std::chrono::milliseconds(std::max<std::int64_t>(0, now.unix_ms - started_at_ms));
  started_mono_ = now.mono - ran;
  Enter(Phase::kRunning, now, "");
  since_ms_ = started_at_ms > 0 ? started_at_ms : now.unix_ms;
}

Actions WorkloadMachine::Apply(const v1::WorkloadSpec& spec, const Readiness& readiness,
                               Instant now) {
  Actions out;
  bool first = !has_spec_;
  bool same = spec.spec_hash() == spec_hash_ && !spec_hash_.empty();
  spec_ = spec;
  has_spec_ = true;
  spec_hash_ = spec.spec_hash();
  NoteDevices(out, readiness);
  ++revision_;

  if (first && !adopted_) {  // a new workload
    TryStart(out, now);
    return out;
  }
  if (same) {
    adopted_ = false;
    // Re-added while being stopped for removal: keep it (start again after the exit).
    if (phase_ == Phase::kStopping && pending_ != StopReason::kSpecChanged) {
      pending_ = StopReason::kSpecChanged;
      message_ = "restarting (was being removed)";
    }
    return out;
  }
  // A changed spec: a fresh start with a fresh restart count and backoff.
  adopted_ = false;
  restarts_ = 0;
  attempted_ = false;
  backoff_.Reset();
  switch (phase_) {
    case Phase::kRunning:
      BeginStop(out, StopReason::kSpecChanged, now);
      break;
    case Phase::kStopping:
      pending_ = StopReason::kSpecChanged;
      break;
    case Phase::kStarting:  // Spawn already requested for the old spec: let Started/Failed come
      break;
    default:
      pending_ = StopReason::kNone;
      TryStart(out, now);
      break;
  }
  return out;
}

Actions WorkloadMachine::Started(int pid, Instant now) {
  Actions out;
  pid_ = pid;
  started_mono_ = now.mono;
  started_at_ms_ = now.unix_ms;
  bool restart = restarts_ > 0;
  Enter(Phase::kRunning, now, "");
  if (restart) {
    Emit(out, v1::EVENT_TYPE_WORKLOAD_RESTARTED, 0,
         "restart " + std::to_string(restarts_) + ", pid " + std::to_string(pid));
  } else {
    Emit(out, v1::EVENT_TYPE_WORKLOAD_STARTED, 0, "pid " + std::to_string(pid));
  }
  return out;
}

Actions WorkloadMachine::SpawnFailed(const std::string& message, bool permanent, Instant now) {
  Actions out;
  pid_ = 0;
  Emit(out, v1::EVENT_TYPE_WORKLOAD_FAILED, 0, message);
  bool retry = !permanent && (!has_spec_ || spec_.restart_policy() != v1::RESTART_POLICY_NEVER);
  if (!retry) {
    Cancel(out);
    Enter(Phase::kFailed, now, message);
    return out;
  }
  auto delay = backoff_.Next(config_.unit_random ? config_.unit_random() : 0.0);
  Enter(Phase::kBackoff, now, message + "; retrying in " + Seconds(delay));
  Arm(out, now.mono + delay);
  return out;
}

Actions WorkloadMachine::Exited(ExitStatus status, Instant now) {
  Actions out;
  int code = status.known ? status.code : -1;
  pid_ = 0;
  last_exit_ = status;
  adopted_ = false;
  std::string how = DescribeExit(status);

  if (phase_ == Phase::kStopping) {
    StopReason reason = pending_;
    pending_ = StopReason::kNone;
    Cancel(out);
    std::string why = reason == StopReason::kSpecChanged ? "spec changed"
                      : reason == StopReason::kStopAll   ? "agent stopping workloads"
                                                         : "removed from the desired state";
    Emit(out, v1::EVENT_TYPE_WORKLOAD_STOPPED, code, "stopped (" + why + "), " + how);
    if (reason == StopReason::kSpecChanged) {
      TryStart(out, now);
    } else {
      Enter(Phase::kStopped, now, "stopped (" + why + ")");
      out.push_back(Action{Action::Kind::kDone});
    }
    return out;
  }

  Emit(out, v1::EVENT_TYPE_WORKLOAD_EXITED, code, "exited: " + how);
  if (now.mono - started_mono_ >= config_.stable_after) backoff_.Reset();
  if (ShouldRestart(status)) {
    auto delay = backoff_.Next(config_.unit_random ? config_.unit_random() : 0.0);
    Enter(Phase::kBackoff, now, "exited (" + how + "); restarting in " + Seconds(delay));
    Arm(out, now.mono + delay);
    return out;
  }
  Cancel(out);
  if (status.known && status.code == 0) {
    Enter(Phase::kStopped, now, "completed (exit code 0)");
  } else {
    std::string msg = "exited (" + how + "), restart policy does not restart it";
    Enter(Phase::kFailed, now, msg);
    Emit(out, v1::EVENT_TYPE_WORKLOAD_FAILED, code, msg);
  }
  return out;
}

Actions WorkloadMachine::TimerFired(Instant now) {
  Actions out;
  if (!deadline_ || now.mono < *deadline_) return out;  // stale or early
  deadline_.reset();
  switch (phase_) {
    case Phase::kBackoff:
      TryStart(out, now);
      break;
    case Phase::kStopping: {
      Action sig{Action::Kind::kSignal};
      sig.signal = SIGKILL;
      out.push_back(sig);
      message_ = "stop grace of " + Seconds(Grace()) + " over, SIGKILL sent";
      ++revision_;
      break;
    }
    default:
      break;
  }
  return out;
}

Actions WorkloadMachine::ReadinessChanged(const Readiness& readiness, Instant now) {
  Actions out;
  NoteDevices(out, readiness);
  if (phase_ == Phase::kWaiting && has_spec_) {
    if (readiness_.ready()) {
      TryStart(out, now);
    } else {
      std::string msg = WaitingMessage(readiness_);
      if (msg != message_) {
        message_ = msg;
        ++revision_;
      }
    }
  }
  return out;
}

Actions WorkloadMachine::Stop(StopReason reason, Instant now) {
  Actions out;
  if (pid_ > 0 && (phase_ == Phase::kRunning || phase_ == Phase::kStopping)) {
    if (phase_ == Phase::kStopping) {
      pending_ = reason;  // removal overrides a pending restart; keep the armed KILL deadline
      message_ = "stopping";
      ++revision_;
    } else {
      BeginStop(out, reason, now);
    }
    return out;
  }
  Cancel(out);
  pending_ = StopReason::kNone;
  std::string why = reason == StopReason::kStopAll ? "agent stopping workloads"
                                                   : "removed from the desired state";
  Enter(Phase::kStopped, now, "stopped (" + why + ")");
  Emit(out, v1::EVENT_TYPE_WORKLOAD_STOPPED, 0, "stopped (" + why + ")");
  out.push_back(Action{Action::Kind::kDone});
  return out;
}

v1::WorkloadStatus WorkloadMachine::Status() const {
  v1::WorkloadStatus s;
  s.set_name(name_);
  switch (phase_) {
    case Phase::kWaiting:
      s.set_state(v1::WORKLOAD_STATE_WAITING);
      break;
    case Phase::kStarting:
      s.set_state(v1::WORKLOAD_STATE_STARTING);
      break;
    case Phase::kRunning:
      s.set_state(v1::WORKLOAD_STATE_RUNNING);
      break;
    case Phase::kBackoff:
      s.set_state(v1::WORKLOAD_STATE_BACKOFF);
      break;
    case Phase::kStopping:
      // A restart for a new spec is "starting"; a removal is "stopped" (pid
      // still shown until the process is gone).
      s.set_state(pending_ == StopReason::kSpecChanged ? v1::WORKLOAD_STATE_STARTING
                                                       : v1::WORKLOAD_STATE_STOPPED);
      break;
    case Phase::kStopped:
      s.set_state(v1::WORKLOAD_STATE_STOPPED);
      break;
    case Phase::kFailed:
      s.set_state(v1::WORKLOAD_STATE_FAILED);
      break;
  }
  s.set_pid(pid_);
  s.set_restarts(restarts_);
  if (last_exit_) {
    s.set_has_exited(true);
    s.set_last_exit_code(last_exit_->known ? last_exit_->code : -1);
  }
  s.set_since_ms(since_ms_);
  s.set_message(message_);
  s.set_spec_hash(spec_hash_);
  return s;
}

}  // namespace outpost::agent
