// The pure per-workload state machine: no process, no clock (time injected).
#include "agent/runtime/workload_machine.hpp"

#include <gtest/gtest.h>

#include <csignal>

namespace outpost::agent {
namespace {

namespace v1 = outpost::v1;
using std::chrono::milliseconds;
using Kind = Action::Kind;

Instant At(std::int64_t ms) {
  Instant i;
  i.mono = std::chrono::steady_clock::time_point(milliseconds(ms));
  i.unix_ms = 1'700'000'000'000 + ms;
  return i;
}

MachineConfig Config() {
  MachineConfig c;
  c.stop_grace = milliseconds(5000);
  c.backoff_initial = milliseconds(1000);
  c.backoff_max = milliseconds(8000);
  c.stable_after = milliseconds(30000);
  return c;
}

v1::WorkloadSpec Spec(const std::string& hash,
                      v1::RestartPolicy policy = v1::RESTART_POLICY_ALWAYS) {
  v1::WorkloadSpec s;
  s.set_name("w");
  s.add_command("/bin/true");
  s.set_restart_policy(policy);
  s.set_spec_hash(hash);
  return s;
}

Readiness Ready() {
  return {};
}

int Count(const Actions& a, Kind kind) {
  int n = 0;
  for (const auto& x : a)
    n += x.kind == kind;
  return n;
}

std::vector<v1::EventType> Events(const Actions& a) {
  std::vector<v1::EventType> out;
  for (const auto& x : a) {
    if (x.kind == Kind::kEmit) out.push_back(x.event.type);
  }
  return out;
}

const Action* Find(const Actions& a, Kind kind) {
  for (const auto& x : a) {
    if (x.kind == kind) return &x;
  }
  return nullptr;
}

// Starts a fresh machine at t=0 with pid 100; returns it running.
WorkloadMachine Running(v1::RestartPolicy policy = v1::RESTART_POLICY_ALWAYS) {
  WorkloadMachine m("w", Config());
  auto a = m.Apply(Spec("h1", policy), Ready(), At(0));
  EXPECT_EQ(Count(a, Kind::kSpawn), 1);
  EXPECT_EQ(m.phase(), Phase::kStarting);
  auto s = m.Started(100, At(0));
  EXPECT_EQ(Events(s), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_STARTED});
  EXPECT_EQ(m.phase(), Phase::kRunning);
  return m;
}

TEST(WorkloadMachine, NewSpecSpawnsAndReportsRunning) {
  WorkloadMachine m = Running();
  auto st = m.Status();
  EXPECT_EQ(st.state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_EQ(st.pid(), 100);
  EXPECT_EQ(st.restarts(), 0u);
  EXPECT_EQ(st.spec_hash(), "h1");
  EXPECT_FALSE(st.has_exited());
  EXPECT_EQ(st.since_ms(), At(0).unix_ms);
}

struct PolicyCase {
  v1::RestartPolicy policy;
  ExitStatus exit;
  bool restarts;
  Phase final_phase;  // when not restarting
};

class RestartPolicyMatrix : public ::testing::TestWithParam<PolicyCase> {};

TEST_P(RestartPolicyMatrix, DecidesRestart) {
  const auto& c = GetParam();
  WorkloadMachine m = Running(c.policy);
  auto a = m.Exited(c.exit, At(100));
  auto ev = Events(a);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev[0], v1::EVENT_TYPE_WORKLOAD_EXITED);
  const Action* emit = Find(a, Kind::kEmit);
  EXPECT_EQ(emit->event.exit_code, c.exit.known ? c.exit.code : -1);
  if (c.restarts) {
    EXPECT_EQ(m.phase(), Phase::kBackoff);
    ASSERT_NE(Find(a, Kind::kArmTimer), nullptr);
    EXPECT_EQ(Find(a, Kind::kArmTimer)->deadline, At(100).mono + milliseconds(1000));
    auto t = m.TimerFired(At(1100));
    EXPECT_EQ(Count(t, Kind::kSpawn), 1);
    auto s = m.Started(101, At(1100));
    EXPECT_EQ(Events(s), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_RESTARTED});
    EXPECT_EQ(m.restarts(), 1u);
  } else {
    EXPECT_EQ(m.phase(), c.final_phase);
    EXPECT_EQ(Count(a, Kind::kArmTimer), 0);
    bool failed = c.final_phase == Phase::kFailed;
    EXPECT_EQ(ev.size(), failed ? 2u : 1u);
    if (failed) {
      EXPECT_EQ(ev[1], v1::EVENT_TYPE_WORKLOAD_FAILED);
    }
    EXPECT_TRUE(m.Status().has_exited());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RestartPolicyMatrix,
    ::testing::Values(
        PolicyCase{v1::RESTART_POLICY_ALWAYS, {true, 0}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_ALWAYS, {true, 3}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_ALWAYS, {true, -SIGKILL}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_UNSPECIFIED, {true, 0}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_ON_FAILURE, {true, 0}, false, Phase::kStopped},
        PolicyCase{v1::RESTART_POLICY_ON_FAILURE, {true, 2}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_ON_FAILURE, {true, -SIGSEGV}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_ON_FAILURE, {false, -1}, true, Phase::kBackoff},
        PolicyCase{v1::RESTART_POLICY_NEVER, {true, 0}, false, Phase::kStopped},
        PolicyCase{v1::RESTART_POLICY_NEVER, {true, 1}, false, Phase::kFailed},
        PolicyCase{v1::RESTART_POLICY_NEVER, {true, -SIGTERM}, false, Phase::kFailed}));

TEST(WorkloadMachine, BackoffGrowsCapsAndResetsAfterStableRun) {
  WorkloadMachine m = Running();
  std::int64_t t = 0;
  std::vector<std::int64_t> delays;
  int pid = 100;
  for (int i = 0; i < 6; ++i) {
    t += 10;  // crashes quickly
    auto a = m.Exited({true, 1}, At(t));
    const Action* arm = Find(a, Kind::kArmTimer);
    ASSERT_NE(arm, nullptr);
    auto delay = std::chrono::duration_cast<milliseconds>(arm->deadline - At(t).mono).count();
    delays.push_back(delay);
    // Early timer fire does nothing.
    EXPECT_TRUE(m.TimerFired(At(t + delay - 1)).empty());
    t += delay;
    auto f = m.TimerFired(At(t));
    ASSERT_EQ(Count(f, Kind::kSpawn), 1);
    (void)m.Started(++pid, At(t));
  }
  EXPECT_EQ(delays, (std::vector<std::int64_t>{1000, 2000, 4000, 8000, 8000, 8000}));
  EXPECT_EQ(m.restarts(), 6u);

  // A run of at least stable_after resets the backoff to the initial delay.
  t += 30000;
  auto a = m.Exited({true, 1}, At(t));
  const Action* arm = Find(a, Kind::kArmTimer);
  ASSERT_NE(arm, nullptr);
  EXPECT_EQ(arm->deadline - At(t).mono, milliseconds(1000));
}

TEST(WorkloadMachine, BackoffJitterStaysInBand) {
  MachineConfig c = Config();
  c.jitter = 0.5;
  c.unit_random = [] { return 0.999; };
  WorkloadMachine m("w", c);
  (void)m.Apply(Spec("h"), Ready(), At(0));
  (void)m.Started(1, At(0));
  auto a = m.Exited({true, 1}, At(10));
  auto d = Find(a, Kind::kArmTimer)->deadline - At(10).mono;
  EXPECT_GE(d, milliseconds(500));
  EXPECT_LT(d, milliseconds(1000));
}

TEST(WorkloadMachine, WaitsForDevicesThenStartsAndEmitsDeviceEvents) {
  WorkloadMachine m("w", Config());
  v1::WorkloadSpec spec = Spec("h");
  spec.add_devices("/dev/video0");
  Readiness missing;
  missing.missing_devices = {"/dev/video0"};
  auto a = m.Apply(spec, missing, At(0));
  EXPECT_EQ(Count(a, Kind::kSpawn), 0);
  EXPECT_EQ(m.phase(), Phase::kWaiting);
  EXPECT_EQ(m.Status().state(), v1::WORKLOAD_STATE_WAITING);
  EXPECT_NE(m.Status().message().find("/dev/video0"), std::string::npos);
  EXPECT_TRUE(m.NeedsReadiness());
  // Still missing: nothing happens.
  EXPECT_TRUE(m.ReadinessChanged(missing, At(1000)).empty());

  auto b = m.ReadinessChanged(Ready(), At(2000));
  EXPECT_EQ(Count(b, Kind::kSpawn), 1);
  ASSERT_EQ(Events(b).size(), 1u);
  EXPECT_EQ(Events(b)[0], v1::EVENT_TYPE_DEVICE_APPEARED);
  EXPECT_EQ(Find(b, Kind::kEmit)->event.device_path, "/dev/video0");
  (void)m.Started(7, At(2000));

  // Vanishing while running: an event, the process keeps running.
  auto c = m.ReadinessChanged(missing, At(3000));
  ASSERT_EQ(Events(c).size(), 1u);
  EXPECT_EQ(Events(c)[0], v1::EVENT_TYPE_DEVICE_VANISHED);
  EXPECT_EQ(Count(c, Kind::kSignal), 0);
  EXPECT_EQ(m.phase(), Phase::kRunning);

  // When it exits, the restart waits for the device.
  auto d = m.Exited({true, 1}, At(4000));
  EXPECT_EQ(Count(d, Kind::kArmTimer), 1);
  ASSERT_TRUE(m.deadline().has_value());
  EXPECT_EQ(Count(m.TimerFired(At(5000)), Kind::kSpawn), 0);
  EXPECT_EQ(m.phase(), Phase::kWaiting);
  auto e = m.ReadinessChanged(Ready(), At(10000));
  EXPECT_EQ(Count(e, Kind::kSpawn), 1);
}

TEST(WorkloadMachine, GpuShortageWaits) {
  WorkloadMachine m("w", Config());
  v1::WorkloadSpec spec = Spec("h");
  spec.mutable_gpus()->set_count(2);
  Readiness r;
  r.other = "needs 2 GPUs, 1 found";
  auto a = m.Apply(spec, r, At(0));
  EXPECT_EQ(Count(a, Kind::kSpawn), 0);
  EXPECT_EQ(m.Status().state(), v1::WORKLOAD_STATE_WAITING);
  EXPECT_NE(m.Status().message().find("needs 2 GPUs"), std::string::npos);
}

TEST(WorkloadMachine, SameSpecAgainChangesNothing) {
  WorkloadMachine m = Running();
  auto a = m.Apply(Spec("h1"), Ready(), At(50));
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(m.phase(), Phase::kRunning);
  EXPECT_EQ(m.pid(), 100);
}

TEST(WorkloadMachine, ChangedSpecStopsGracefullyThenStartsNew) {
  WorkloadMachine m = Running();
  auto a = m.Apply(Spec("h2"), Ready(), At(100));
  ASSERT_NE(Find(a, Kind::kSignal), nullptr);
  EXPECT_EQ(Find(a, Kind::kSignal)->signal, SIGTERM);
  ASSERT_NE(Find(a, Kind::kArmTimer), nullptr);
  EXPECT_EQ(Find(a, Kind::kArmTimer)->deadline, At(100).mono + milliseconds(5000));
  EXPECT_EQ(m.phase(), Phase::kStopping);
  EXPECT_EQ(m.Status().state(), v1::WORKLOAD_STATE_STARTING);

  // Grace over: SIGKILL.
  auto k = m.TimerFired(At(5100));
  ASSERT_NE(Find(k, Kind::kSignal), nullptr);
  EXPECT_EQ(Find(k, Kind::kSignal)->signal, SIGKILL);

  auto e = m.Exited({true, -SIGKILL}, At(5110));
  EXPECT_EQ(Events(e), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_STOPPED});
  EXPECT_EQ(Count(e, Kind::kSpawn), 1);
  auto s = m.Started(200, At(5110));
  EXPECT_EQ(Events(s), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_STARTED});
  EXPECT_EQ(m.spec_hash(), "h2");
  EXPECT_EQ(m.restarts(), 0u);
}

TEST(WorkloadMachine, SpecStopGraceSecondsOverridesDefault) {
  WorkloadMachine m = Running();
  v1::WorkloadSpec s = Spec("h2");
  s.set_stop_grace_seconds(2);
  auto a = m.Apply(s, Ready(), At(0));
  EXPECT_EQ(Find(a, Kind::kArmTimer)->deadline, At(0).mono + milliseconds(2000));
}

TEST(WorkloadMachine, ChangedSpecWhileInBackoffStartsAtOnce) {
  WorkloadMachine m = Running();
  (void)m.Exited({true, 1}, At(10));
  ASSERT_EQ(m.phase(), Phase::kBackoff);
  auto a = m.Apply(Spec("h2"), Ready(), At(20));
  EXPECT_EQ(Count(a, Kind::kCancelTimer), 1);
  EXPECT_EQ(Count(a, Kind::kSpawn), 1);
}

TEST(WorkloadMachine, RemovalStopsThenIsDone) {
  WorkloadMachine m = Running();
  auto a = m.Stop(StopReason::kRemoved, At(10));
  EXPECT_EQ(Find(a, Kind::kSignal)->signal, SIGTERM);
  EXPECT_EQ(m.Status().state(), v1::WORKLOAD_STATE_STOPPED);
  EXPECT_EQ(m.Status().pid(), 100);
  auto e = m.Exited({true, -SIGTERM}, At(20));
  EXPECT_EQ(Events(e), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_STOPPED});
  EXPECT_EQ(Count(e, Kind::kDone), 1);
  EXPECT_EQ(Count(e, Kind::kSpawn), 0);
}

TEST(WorkloadMachine, RemovalOfIdleWorkloadIsImmediate) {
  WorkloadMachine m = Running(v1::RESTART_POLICY_NEVER);
  (void)m.Exited({true, 0}, At(10));
  auto a = m.Stop(StopReason::kRemoved, At(20));
  EXPECT_EQ(Count(a, Kind::kSignal), 0);
  EXPECT_EQ(Count(a, Kind::kDone), 1);
}

TEST(WorkloadMachine, SpawnFailureBacksOffOrFails) {
  WorkloadMachine m("w", Config());
  (void)m.Apply(Spec("h"), Ready(), At(0));
  auto a = m.SpawnFailed("exec /opt/x: No such file or directory", false, At(0));
  EXPECT_EQ(Events(a), std::vector<v1::EventType>{v1::EVENT_TYPE_WORKLOAD_FAILED});
  EXPECT_EQ(m.phase(), Phase::kBackoff);
  EXPECT_NE(m.Status().message().find("exec /opt/x: No such file or directory"), std::string::npos);

  WorkloadMachine never("w", Config());
  (void)never.Apply(Spec("h", v1::RESTART_POLICY_NEVER), Ready(), At(0));
  (void)never.SpawnFailed("exec /opt/x: No such file or directory", false, At(0));
  EXPECT_EQ(never.phase(), Phase::kFailed);

  WorkloadMachine perm("w", Config());
  (void)perm.Apply(Spec("h"), Ready(), At(0));
  auto p = perm.SpawnFailed("container workloads are not supported", true, At(0));
  EXPECT_EQ(perm.phase(), Phase::kFailed);
  EXPECT_EQ(Count(p, Kind::kArmTimer), 0);
}

TEST(WorkloadMachine, AdoptedKeepsRunningWithSameHashAndRestartsOnOther) {
  WorkloadMachine m("w", Config());
  m.Adopt("h1", 4242, 3, At(0).unix_ms - 60000, At(0));
  EXPECT_EQ(m.phase(), Phase::kRunning);
  EXPECT_EQ(m.Status().restarts(), 3u);
  auto a = m.Apply(Spec("h1"), Ready(), At(10));
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(m.pid(), 4242);

  // Dies with unknown status: reported as -1, restart policy applies, the
  // backoff was reset by the long (stable) run before the agent restarted.
  auto e = m.Exited({false, -1}, At(20));
  const Action* emit = Find(e, Kind::kEmit);
  ASSERT_NE(emit, nullptr);
  EXPECT_EQ(emit->event.exit_code, -1);
  EXPECT_NE(emit->event.message.find("unknown"), std::string::npos);
  EXPECT_EQ(Find(e, Kind::kArmTimer)->deadline, At(20).mono + milliseconds(1000));
  (void)m.TimerFired(At(1020));
  (void)m.Started(5000, At(1020));
  EXPECT_EQ(m.restarts(), 4u);

  WorkloadMachine other("w", Config());
  other.Adopt("h1", 4242, 0, At(0).unix_ms, At(0));
  auto b = other.Apply(Spec("h2"), Ready(), At(10));
  EXPECT_EQ(Find(b, Kind::kSignal)->signal, SIGTERM);
}

TEST(WorkloadMachine, AdoptedButRemovedIsStopped) {
  WorkloadMachine m("w", Config());
  m.Adopt("h1", 4242, 0, At(0).unix_ms, At(0));
  auto a = m.Stop(StopReason::kRemoved, At(1));
  EXPECT_EQ(Find(a, Kind::kSignal)->signal, SIGTERM);
}

TEST(WorkloadMachine, ReAddedWhileStoppingForRemovalStartsAgain) {
  WorkloadMachine m = Running();
  (void)m.Stop(StopReason::kRemoved, At(10));
  (void)m.Apply(Spec("h1"), Ready(), At(20));
  auto e = m.Exited({true, -SIGTERM}, At(30));
  EXPECT_EQ(Count(e, Kind::kSpawn), 1);
  EXPECT_EQ(Count(e, Kind::kDone), 0);
}

TEST(WorkloadMachine, StaleTimerIsIgnored) {
  WorkloadMachine m = Running();
  EXPECT_TRUE(m.TimerFired(At(100000)).empty());
}

TEST(DescribeExit, Words) {
  EXPECT_EQ(DescribeExit({true, 3}), "exit code 3");
  EXPECT_EQ(DescribeExit({false, -1}), "exit status unknown (adopted)");
  EXPECT_EQ(DescribeExit({true, -9}).rfind("signal 9", 0), 0u);
}

}  // namespace
}  // namespace outpost::agent
