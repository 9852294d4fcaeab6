// The Supervisor with the real Linux ProcessOps on real child processes
// (/bin/sh, sleep, true, false), driven by a real io_context. Nothing sleeps a
// fixed time: RunUntil runs the loop until a condition holds or a deadline.
#include "agent/runtime/supervisor.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <fstream>
#include <optional>
#include <sstream>

#include "agent/runtime/process_ops.hpp"
#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::agent {
namespace {

namespace v1 = outpost::v1;
namespace asio = boost::asio;
using outpost::testing::ReadFileOr;
using outpost::testing::TempDir;
using std::chrono::milliseconds;

// A ProcessRecordStore in a file, so that it survives a forked "agent".
class FileRecordStore : public ProcessRecordStore {
 public:
  explicit FileRecordStore(std::string path) : path_(std::move(path)) {}
  Status Save(const ProcessRecord& r) override {
    auto all = *LoadAll();
    std::erase_if(all, [&](const ProcessRecord& x) { return x.name == r.name; });
    all.push_back(r);
    return Write(all);
  }
  Status Remove(const std::string& name) override {
    auto all = *LoadAll();
    std::erase_if(all, [&](const ProcessRecord& x) { return x.name == name; });
    return Write(all);
  }
  Result<std::vector<ProcessRecord>> LoadAll() override {
    std::vector<ProcessRecord> out;
    std::istringstream in(ReadFileOr(path_));
    ProcessRecord r;
    while (in >> r.name >> r.spec_hash >> r.pid >> r.start_time_ticks >> r.restarts >>
           r.started_at_ms) {
      out.push_back(r);
    }
    return out;
  }

 private:
  Status Write(const std::vector<ProcessRecord>& all) {
    std::ostringstream out;
    for (const auto& r : all) {
      out << r.name << ' ' << r.spec_hash << ' ' << r.pid << ' ' << r.start_time_ticks << ' '
          << r.restarts << ' ' << r.started_at_ms << '\n';
    }
    return fs::WriteFileAtomic(path_, out.str());
  }
  std::string path_;
};

v1::WorkloadSpec Spec(const std::string& name, std::vector<std::string> command,
                      v1::RestartPolicy policy = v1::RESTART_POLICY_ALWAYS,
                      const std::string& hash = "h1") {
  v1::WorkloadSpec s;
  s.set_name(name);
  s.set_kind(v1::WORKLOAD_KIND_PROCESS);
  for (auto& c : command)
    s.add_command(c);
  s.set_restart_policy(policy);
  s.set_spec_hash(hash);
  return s;
}

v1::WorkloadSpec Shell(const std::string& name, const std::string& script,
                       v1::RestartPolicy policy = v1::RESTART_POLICY_ALWAYS,
                       const std::string& hash = "h1") {
  return Spec(name, {"/bin/sh", "-c", script}, policy, hash);
}

bool ProcessAlive(int pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0) return false;
  // A zombie is not alive.
  std::string stat = ReadFileOr("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest() {
    EXPECT_TRUE(fs::MakeDirs(dir_ / "dev").ok());
    EXPECT_TRUE(fs::MakeDirs(dir_ / "out").ok());
    ::chmod((dir_ / "out").c_str(), 0777);
    ::chmod(dir_.path().c_str(), 0755);
  }

  RuntimeConfig Config() {
    RuntimeConfig c;
    c.state_dir = dir_.path();
    c.log_dir = dir_ / "logs";
    c.workload_user = "root";  // files in the test dir stay writable
    c.cgroup_root = dir_ / "not-a-cgroup";
    c.dev_root = dir_ / "dev";
    c.stop_grace = milliseconds(5000);
    c.backoff_initial = milliseconds(50);
    c.backoff_max = milliseconds(400);
    c.stable_after = milliseconds(10000);
    c.poll_interval = milliseconds(50);
    return c;
  }

  // Supervisors are owned by the fixture: whatever a test leaves running
  // (also after a failed assertion) is stopped in TearDown.
  Supervisor* Make(RuntimeConfig c, ProcessRecordStore* store = nullptr) {
    sups_.push_back(std::make_unique<Supervisor>(
        io_, std::move(c), store ? *store : store_, *ops_,
        [this](const RuntimeEvent& e) { events_.push_back(e); }, [this] { ++changes_; }));
    return sups_.back().get();
  }

  // Detaches and destroys one (its workloads keep running).
  void Drop(Supervisor* s) {
    s->Detach();
    std::erase_if(sups_, [&](const auto& p) { return p.get() == s; });
  }

  void TearDown() override {
    int pending = 0;
    for (auto& s : sups_) {
      ++pending;
      s->StopAll([&] { --pending; });
    }
    RunUntil([&] { return pending == 0; }, milliseconds(15000));
    sups_.clear();
  }

  bool RunUntil(const std::function<bool()>& cond, milliseconds timeout = milliseconds(20000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!cond()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.restart();
      io_.run_for(milliseconds(10));
    }
    return true;
  }

  static std::optional<v1::WorkloadStatus> Get(const Supervisor& s, const std::string& name) {
    for (auto& st : s.Statuses()) {
      if (st.name() == name) return st;
    }
    return std::nullopt;
  }

  static bool IsState(const Supervisor& s, const std::string& name, v1::WorkloadState state) {
    auto st = Get(s, name);
    return st && st->state() == state;
  }

  int CountEvents(v1::EventType type, const std::string& workload) const {
    int n = 0;
    for (const auto& e : events_)
      n += e.type == type && e.workload == workload;
    return n;
  }

  const RuntimeEvent* LastEvent(v1::EventType type, const std::string& workload) const {
    const RuntimeEvent* found = nullptr;
    for (const auto& e : events_) {
      if (e.type == type && e.workload == workload) found = &e;
    }
    return found;
  }

  TempDir dir_{"outpost-runtime"};
  asio::io_context io_;
  MemoryProcessRecordStore store_;
  std::unique_ptr<ProcessOps> ops_ = NewLinuxProcessOps();
  std::vector<RuntimeEvent> events_;
  int changes_ = 0;
  std::vector<std::unique_ptr<Supervisor>> sups_;
};

TEST_F(SupervisorTest, StartsProcessAndReportsItRunning) {
  Supervisor* sup = Make(Config());
  ASSERT_TRUE(sup->Adopt().ok());
  sup->Apply({Spec("sleeper", {"sleep", "1000"})});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "sleeper", v1::WORKLOAD_STATE_RUNNING); }));
  auto st = *Get(*sup, "sleeper");
  EXPECT_GT(st.pid(), 0);
  EXPECT_TRUE(ProcessAlive(st.pid()));
  EXPECT_EQ(st.spec_hash(), "h1");
  EXPECT_EQ(st.resource_mode(), v1::RESOURCE_MODE_UNSPECIFIED);
  EXPECT_GT(st.since_ms(), 0);
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_WORKLOAD_STARTED, "sleeper"); }));
  EXPECT_GT(changes_, 0);
  // The record for re-adoption was written.
  auto records = *store_.LoadAll();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].pid, st.pid());
  EXPECT_GT(records[0].start_time_ticks, 0u);

  bool done = false;
  sup->StopAll([&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
  EXPECT_FALSE(ProcessAlive(st.pid()));
  EXPECT_TRUE(sup->Statuses().empty());
  EXPECT_TRUE(store_.LoadAll()->empty());
}

TEST_F(SupervisorTest, RestartAlwaysWithExitCodeAndBackoff) {
  Supervisor* sup = Make(Config());
  sup->Apply({Shell("crasher", "exit 3")});
  ASSERT_TRUE(RunUntil([&] {
    auto st = Get(*sup, "crasher");
    return st && st->restarts() >= 3;
  }));
  auto st = *Get(*sup, "crasher");
  EXPECT_TRUE(st.has_exited());
  EXPECT_EQ(st.last_exit_code(), 3);
  ASSERT_TRUE(RunUntil([&] {
    return CountEvents(v1::EVENT_TYPE_WORKLOAD_RESTARTED, "crasher") >= 2 &&
           LastEvent(v1::EVENT_TYPE_WORKLOAD_EXITED, "crasher");
  }));
  const RuntimeEvent* exited = LastEvent(v1::EVENT_TYPE_WORKLOAD_EXITED, "crasher");
  EXPECT_EQ(exited->exit_code, 3);
  EXPECT_GE(CountEvents(v1::EVENT_TYPE_WORKLOAD_RESTARTED, "crasher"), 2);
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_STARTED, "crasher"), 1);
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, OnFailureRestartsFailuresOnly) {
  Supervisor* sup = Make(Config());
  sup->Apply({Spec("ok", {"true"}, v1::RESTART_POLICY_ON_FAILURE),
              Spec("bad", {"false"}, v1::RESTART_POLICY_ON_FAILURE)});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "ok", v1::WORKLOAD_STATE_STOPPED); }));
  ASSERT_TRUE(RunUntil([&] {
    auto st = Get(*sup, "bad");
    return st && st->restarts() >= 2;
  }));
  auto ok = *Get(*sup, "ok");
  EXPECT_EQ(ok.restarts(), 0u);
  EXPECT_EQ(ok.last_exit_code(), 0);
  EXPECT_EQ(ok.pid(), 0);
  EXPECT_EQ(Get(*sup, "bad")->last_exit_code(), 1);
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, NeverDoesNotRestart) {
  Supervisor* sup = Make(Config());
  sup->Apply({Spec("once", {"true"}, v1::RESTART_POLICY_NEVER),
              Spec("oncebad", {"false"}, v1::RESTART_POLICY_NEVER)});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "once", v1::WORKLOAD_STATE_STOPPED); }));
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "oncebad", v1::WORKLOAD_STATE_FAILED); }));
  EXPECT_EQ(Get(*sup, "once")->restarts(), 0u);
  EXPECT_EQ(Get(*sup, "oncebad")->restarts(), 0u);
  EXPECT_EQ(Get(*sup, "oncebad")->last_exit_code(), 1);
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_WORKLOAD_FAILED, "oncebad"); }));
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_FAILED, "once"), 0);
  EXPECT_TRUE(sup->Settled());
}

TEST_F(SupervisorTest, ExecFailureIsReportedClearly) {
  Supervisor* sup = Make(Config());
  sup->Apply({Spec("missing", {"/nonexistent/bin/x"})});
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_WORKLOAD_FAILED, "missing"); }));
  auto st = *Get(*sup, "missing");
  EXPECT_TRUE(st.state() == v1::WORKLOAD_STATE_BACKOFF || st.state() == v1::WORKLOAD_STATE_STARTING)
      << st.state();
  const RuntimeEvent* failed = LastEvent(v1::EVENT_TYPE_WORKLOAD_FAILED, "missing");
  EXPECT_EQ(failed->message, "exec /nonexistent/bin/x: No such file or directory");

  Supervisor* never = Make(Config());
  never->Apply({Spec("nope", {"/nonexistent/bin/x"}, v1::RESTART_POLICY_NEVER)});
  ASSERT_TRUE(RunUntil([&] { return IsState(*never, "nope", v1::WORKLOAD_STATE_FAILED); }));
  EXPECT_NE(Get(*never, "nope")->message().find("No such file or directory"), std::string::npos);

  Supervisor* path = Make(Config());
  path->Apply({Spec("nopath", {"no-such-program-anywhere"}, v1::RESTART_POLICY_NEVER)});
  ASSERT_TRUE(RunUntil([&] { return IsState(*path, "nopath", v1::WORKLOAD_STATE_FAILED); }));
  EXPECT_NE(Get(*path, "nopath")->message().find("not found on PATH"), std::string::npos);

  Supervisor* wd = Make(Config());
  auto spec = Spec("badwd", {"true"}, v1::RESTART_POLICY_NEVER);
  spec.set_working_dir(dir_ / "no-such-dir");
  wd->Apply({spec});
  ASSERT_TRUE(RunUntil([&] { return IsState(*wd, "badwd", v1::WORKLOAD_STATE_FAILED); }));
  EXPECT_NE(Get(*wd, "badwd")->message().find("chdir"), std::string::npos);
}

TEST_F(SupervisorTest, GracefulStopTermThenKillAfterGrace) {
  RuntimeConfig c = Config();
  c.stop_grace = milliseconds(300);
  Supervisor* sup = Make(c);
  std::string ready = dir_ / "out/ready";
  sup->Apply(
      {Shell("stubborn", "trap '' TERM; echo ready > " + ready + "; while :; do sleep 1; done"),
       Spec("polite", {"sleep", "1000"})});
  ASSERT_TRUE(RunUntil(
      [&] { return fs::Exists(ready) && IsState(*sup, "polite", v1::WORKLOAD_STATE_RUNNING); }));
  int stubborn = Get(*sup, "stubborn")->pid();
  int polite = Get(*sup, "polite")->pid();
  auto start = std::chrono::steady_clock::now();
  sup->Apply({});
  // Still listed (stopping) right after the removal.
  EXPECT_EQ(Get(*sup, "stubborn")->state(), v1::WORKLOAD_STATE_STOPPED);
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, milliseconds(300));
  EXPECT_FALSE(ProcessAlive(stubborn));
  EXPECT_FALSE(ProcessAlive(polite));
  // Events are delivered from the loop, after the status changed.
  ASSERT_TRUE(RunUntil([&] {
    return LastEvent(v1::EVENT_TYPE_WORKLOAD_STOPPED, "stubborn") &&
           LastEvent(v1::EVENT_TYPE_WORKLOAD_STOPPED, "polite");
  }));
  EXPECT_EQ(LastEvent(v1::EVENT_TYPE_WORKLOAD_STOPPED, "stubborn")->exit_code, -SIGKILL);
  EXPECT_EQ(LastEvent(v1::EVENT_TYPE_WORKLOAD_STOPPED, "polite")->exit_code, -SIGTERM);
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_EXITED, "polite"), 0);
}

TEST_F(SupervisorTest, EnvironmentAndGpuVariablesReachTheChild) {
  RuntimeConfig c = Config();
  for (std::uint32_t i : {1u, 0u}) {
    v1::Gpu g;
    g.set_index(i);
    c.gpus.push_back(g);
  }
  Supervisor* sup = Make(c);
  auto one = Shell("one", "env > " + dir_ / "out/one.env", v1::RESTART_POLICY_NEVER);
  (*one.mutable_env())["FOO"] = "bar baz";
  one.mutable_gpus()->set_count(1);
  auto all = Shell("all", "env > " + dir_ / "out/all.env", v1::RESTART_POLICY_NEVER);
  all.mutable_gpus()->set_all(true);
  auto none = Shell("none", "env > " + dir_ / "out/none.env", v1::RESTART_POLICY_NEVER);
  ::setenv("OUTPOST_TEST_SECRET", "x", 1);
  sup->Apply({one, all, none});
  ::unsetenv("OUTPOST_TEST_SECRET");
  ASSERT_TRUE(RunUntil([&] {
    return IsState(*sup, "one", v1::WORKLOAD_STATE_STOPPED) &&
           IsState(*sup, "all", v1::WORKLOAD_STATE_STOPPED) &&
           IsState(*sup, "none", v1::WORKLOAD_STATE_STOPPED);
  }));
  std::string e1 = ReadFileOr(dir_ / "out/one.env");
  EXPECT_NE(e1.find("FOO=bar baz\n"), std::string::npos) << e1;
  EXPECT_NE(e1.find("NVIDIA_VISIBLE_DEVICES=0\n"), std::string::npos) << e1;
  EXPECT_NE(e1.find("CUDA_VISIBLE_DEVICES=0\n"), std::string::npos) << e1;
  EXPECT_NE(e1.find("OUTPOST_WORKLOAD=one\n"), std::string::npos) << e1;
  std::string ea = ReadFileOr(dir_ / "out/all.env");
  EXPECT_NE(ea.find("NVIDIA_VISIBLE_DEVICES=all\n"), std::string::npos) << ea;
  EXPECT_NE(ea.find("CUDA_VISIBLE_DEVICES=0,1\n"), std::string::npos) << ea;
  std::string en = ReadFileOr(dir_ / "out/none.env");
  EXPECT_NE(en.find("NVIDIA_VISIBLE_DEVICES=void\n"), std::string::npos) << en;
  // The agent's own environment does not leak in.
  EXPECT_EQ(en.find("OUTPOST_TEST_SECRET"), std::string::npos);
}

TEST_F(SupervisorTest, GpuShortageWaits) {
  Supervisor* sup = Make(Config());
  auto spec = Spec("gpu", {"true"});
  spec.mutable_gpus()->set_count(1);
  sup->Apply({spec});
  EXPECT_TRUE(IsState(*sup, "gpu", v1::WORKLOAD_STATE_WAITING));
  EXPECT_NE(Get(*sup, "gpu")->message().find("needs 1 GPU"), std::string::npos);
  v1::Gpu g;
  g.set_index(0);
  sup->SetGpus({g});
  ASSERT_TRUE(RunUntil([&] { return !IsState(*sup, "gpu", v1::WORKLOAD_STATE_WAITING); }));
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, WorkingDirectory) {
  ASSERT_TRUE(fs::MakeDirs(dir_ / "work/sub").ok());
  Supervisor* sup = Make(Config());
  auto spec = Shell("wd", "pwd > " + dir_ / "out/pwd", v1::RESTART_POLICY_NEVER);
  spec.set_working_dir(dir_ / "work/sub");
  sup->Apply({spec});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "wd", v1::WORKLOAD_STATE_STOPPED); }));
  EXPECT_EQ(ReadFileOr(dir_ / "out/pwd"), dir_ / "work/sub\n");
}

TEST_F(SupervisorTest, StdoutAndStderrGoToTheLog) {
  Supervisor* sup = Make(Config());
  sup->Apply({Shell("talker", "echo to-stdout; echo to-stderr >&2; read x || echo stdin-empty",
                    v1::RESTART_POLICY_NEVER)});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "talker", v1::WORKLOAD_STATE_STOPPED); }));
  std::string log = ReadFileOr(dir_ / "logs/talker.log");
  EXPECT_NE(log.find("to-stdout\n"), std::string::npos) << log;
  EXPECT_NE(log.find("to-stderr\n"), std::string::npos) << log;
  EXPECT_NE(log.find("stdin-empty\n"), std::string::npos) << log;
}

TEST_F(SupervisorTest, LogIsRotatedBySize) {
  RuntimeConfig c = Config();
  c.log_max_bytes = 4096;
  c.log_keep = 2;
  Supervisor* sup = Make(c);
  sup->Apply({Shell("chatty", "while :; do echo 0123456789abcdef0123456789abcdef; done")});
  std::string log = dir_ / "logs/chatty.log";
  ASSERT_TRUE(RunUntil([&] { return fs::Exists(log + ".2"); }));
  EXPECT_GT(ReadFileOr(log + ".1").size(), 4096u);
  EXPECT_FALSE(fs::Exists(log + ".3"));
  // The process kept running across rotations (one pid, no restart).
  EXPECT_EQ(Get(*sup, "chatty")->restarts(), 0u);
  EXPECT_EQ(Get(*sup, "chatty")->state(), v1::WORKLOAD_STATE_RUNNING);
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, WaitsForDeviceThenRuns) {
  Supervisor* sup = Make(Config());
  auto spec = Spec("camera", {"sleep", "1000"});
  spec.add_devices("/dev/video0");
  sup->Apply({spec});
  EXPECT_TRUE(IsState(*sup, "camera", v1::WORKLOAD_STATE_WAITING));
  EXPECT_EQ(Get(*sup, "camera")->message(), "waiting for /dev/video0");
  // Some ticks pass and it keeps waiting.
  int ticks = 0;
  RunUntil([&] { return ++ticks > 10; });
  EXPECT_TRUE(IsState(*sup, "camera", v1::WORKLOAD_STATE_WAITING));

  std::ofstream(dir_ / "dev/video0") << "";
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "camera", v1::WORKLOAD_STATE_RUNNING); }));
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_DEVICE_APPEARED, "camera"); }));
  EXPECT_EQ(LastEvent(v1::EVENT_TYPE_DEVICE_APPEARED, "camera")->device_path, "/dev/video0");

  ::unlink((dir_ / "dev/video0").c_str());
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_DEVICE_VANISHED, "camera"); }));
  EXPECT_TRUE(IsState(*sup, "camera", v1::WORKLOAD_STATE_RUNNING));
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, ChangedSpecRestartsOnlyThatWorkload) {
  Supervisor* sup = Make(Config());
  sup->Apply({Spec("a", {"sleep", "1000"}), Spec("b", {"sleep", "1000"})});
  ASSERT_TRUE(RunUntil([&] {
    return IsState(*sup, "a", v1::WORKLOAD_STATE_RUNNING) &&
           IsState(*sup, "b", v1::WORKLOAD_STATE_RUNNING);
  }));
  int a = Get(*sup, "a")->pid();
  int b = Get(*sup, "b")->pid();
  // Same document again: nothing restarts.
  sup->Apply({Spec("a", {"sleep", "1000"}), Spec("b", {"sleep", "1000"})});
  EXPECT_EQ(Get(*sup, "a")->pid(), a);
  EXPECT_EQ(Get(*sup, "b")->pid(), b);

  sup->Apply({Spec("a", {"sleep", "1000"}), Spec("b", {"sleep", "2000"}, {}, "h2")});
  ASSERT_TRUE(RunUntil([&] {
    auto st = Get(*sup, "b");
    return st && st->state() == v1::WORKLOAD_STATE_RUNNING && st->pid() != b;
  }));
  EXPECT_EQ(Get(*sup, "b")->spec_hash(), "h2");
  EXPECT_EQ(Get(*sup, "a")->pid(), a);
  EXPECT_TRUE(ProcessAlive(a));
  EXPECT_FALSE(ProcessAlive(b));
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_STOPPED, "a"), 0);
  ASSERT_TRUE(RunUntil([&] { return CountEvents(v1::EVENT_TYPE_WORKLOAD_STOPPED, "b") == 1; }));
  bool done = false;
  sup->StopAll([&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
}

TEST_F(SupervisorTest, DetachLeavesRunningAndAdoptKeepsPidInSameProcess) {
  Supervisor* first = Make(Config());
  ASSERT_TRUE(first->Adopt().ok());
  first->Apply({Spec("keep", {"sleep", "1000"})});
  ASSERT_TRUE(RunUntil([&] { return IsState(*first, "keep", v1::WORKLOAD_STATE_RUNNING); }));
  int pid = Get(*first, "keep")->pid();
  Drop(first);
  EXPECT_TRUE(ProcessAlive(pid));

  Supervisor* second = Make(Config());
  ASSERT_TRUE(second->Adopt().ok());
  EXPECT_EQ(Get(*second, "keep")->pid(), pid);
  second->Apply({Spec("keep", {"sleep", "1000"})});
  EXPECT_EQ(Get(*second, "keep")->pid(), pid);
  EXPECT_EQ(Get(*second, "keep")->state(), v1::WORKLOAD_STATE_RUNNING);
  second->Apply({});
  ASSERT_TRUE(RunUntil([&] { return second->Statuses().empty(); }));
  EXPECT_FALSE(ProcessAlive(pid));
}

TEST_F(SupervisorTest, AdoptDropsRecordsOfGoneOrReusedPids) {
  ProcessRecord gone{"gone", "h1", 0, 0, 5, 0};
  // A live pid (this test) with a wrong start time: a reused pid, not ours.
  ProcessRecord reused{"reused", "h1", static_cast<int>(::getpid()), 1, 2, 0};
  {
    pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    gone.pid = child;  // exited and reaped: gone
  }
  ASSERT_TRUE(store_.Save(gone).ok());
  ASSERT_TRUE(store_.Save(reused).ok());
  Supervisor* sup = Make(Config());
  ASSERT_TRUE(sup->Adopt().ok());
  EXPECT_TRUE(sup->Statuses().empty());
  EXPECT_TRUE(store_.LoadAll()->empty());
  // Applied afterwards they start fresh.
  sup->Apply({Spec("reused", {"sleep", "1000"})});
  ASSERT_TRUE(RunUntil([&] { return IsState(*sup, "reused", v1::WORKLOAD_STATE_RUNNING); }));
  EXPECT_NE(Get(*sup, "reused")->pid(), ::getpid());
  EXPECT_EQ(Get(*sup, "reused")->restarts(), 0u);
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

// The agent's restart, for real: a forked "agent" starts the workload and
// exits after Detach (the workload is re-parented away from us); a fresh
// supervisor adopts it with the same pid and restart count, watches it
// through a pidfd, and restarts it by policy when it dies.
TEST_F(SupervisorTest, AgentRestartReadoptsWorkloadWithoutRestartingIt) {
  FileRecordStore store(dir_ / "records");
  ASSERT_TRUE(store.Save({"seed", "x", 0, 0, 0, 0}).ok());
  ASSERT_TRUE(store.Remove("seed").ok());
  std::string pid_file = dir_ / "out/pid";
  pid_t agent = ::fork();
  if (agent == 0) {
    int rc = 1;
    {
      asio::io_context io;
      auto ops = NewLinuxProcessOps();
      Supervisor sup(io, Config(), store, *ops, nullptr, nullptr);
      if (sup.Adopt().ok()) {
        auto spec = Spec("survivor", {"sleep", "1000"});
        sup.Apply({spec});
        for (int i = 0; i < 2000; ++i) {
          auto st = sup.Statuses();
          if (!st.empty() && st[0].state() == v1::WORKLOAD_STATE_RUNNING) {
            std::ofstream(pid_file) << st[0].pid();
            rc = 0;
            break;
          }
          io.restart();
          io.run_for(milliseconds(5));
        }
        sup.Detach();
      }
    }
    ::_exit(rc);
  }
  ASSERT_GT(agent, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(agent, &status, 0), agent);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  int pid = std::stoi(ReadFileOr(pid_file, "0"));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(ProcessAlive(pid));
  // Pretend it had been restarted twice before.
  auto records = *store.LoadAll();
  ASSERT_EQ(records.size(), 1u);
  records[0].restarts = 2;
  ASSERT_TRUE(store.Save(records[0]).ok());

  Supervisor* sup = Make(Config(), &store);
  ASSERT_TRUE(sup->Adopt().ok());
  sup->Apply({Spec("survivor", {"sleep", "1000"})});
  auto st = *Get(*sup, "survivor");
  EXPECT_EQ(st.pid(), pid);
  EXPECT_EQ(st.restarts(), 2u);
  EXPECT_EQ(st.state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_STARTED, "survivor"), 0);

  // It dies: not our child, so the exit status is unknown; the policy restarts it.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(RunUntil([&] {
    auto s = Get(*sup, "survivor");
    return s && s->state() == v1::WORKLOAD_STATE_RUNNING && s->pid() != pid;
  }));
  EXPECT_EQ(Get(*sup, "survivor")->restarts(), 3u);
  ASSERT_TRUE(RunUntil([&] { return LastEvent(v1::EVENT_TYPE_WORKLOAD_EXITED, "survivor"); }));
  const RuntimeEvent* exited = LastEvent(v1::EVENT_TYPE_WORKLOAD_EXITED, "survivor");
  EXPECT_EQ(exited->exit_code, -1);
  EXPECT_NE(exited->message.find("unknown"), std::string::npos);
  EXPECT_EQ(store.LoadAll()->at(0).pid, Get(*sup, "survivor")->pid());
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, ResourcesUseCgroupWhereWritableElseRlimit) {
  RuntimeConfig c = Config();
  c.cgroup_root = DetectCgroupRoot();
  // What this machine allows decides what we expect.
  bool cgroup_ok = false;
  if (!c.cgroup_root.empty()) {
    std::string probe = "probe-" + std::to_string(::getpid());
    cgroup_ok = ops_->PrepareCgroup(c.cgroup_root, probe, 256u << 20, 500).ok();
    ops_->RemoveCgroup(c.cgroup_root, probe);
  }
  std::string name = "limited-" + std::to_string(::getpid());
  Supervisor* sup = Make(c);
  auto spec = Shell(
      name, "ulimit -v > " + dir_ / "out/ulimit; cat /proc/self/cgroup > " + dir_ / "out/cgroup",
      v1::RESTART_POLICY_NEVER);
  spec.mutable_resources()->set_memory_mib(256);
  spec.mutable_resources()->set_milli_cpus(500);
  auto cpu_only = Spec("cpuonly", {"true"}, v1::RESTART_POLICY_NEVER);
  cpu_only.mutable_resources()->set_milli_cpus(500);
  sup->Apply({spec, cpu_only});
  ASSERT_TRUE(RunUntil([&] {
    return IsState(*sup, name, v1::WORKLOAD_STATE_STOPPED) &&
           IsState(*sup, "cpuonly", v1::WORKLOAD_STATE_STOPPED);
  }));
  if (cgroup_ok) {
    EXPECT_EQ(Get(*sup, name)->resource_mode(), v1::RESOURCE_MODE_CGROUP);
    EXPECT_NE(ReadFileOr(dir_ / "out/cgroup").find("/" + name), std::string::npos);
    EXPECT_EQ(Get(*sup, "cpuonly")->resource_mode(), v1::RESOURCE_MODE_CGROUP);
  } else {
    EXPECT_EQ(Get(*sup, name)->resource_mode(), v1::RESOURCE_MODE_RLIMIT);
    EXPECT_EQ(ReadFileOr(dir_ / "out/ulimit"), "262144\n");  // KiB
    EXPECT_EQ(Get(*sup, "cpuonly")->resource_mode(), v1::RESOURCE_MODE_NONE);
    EXPECT_NE(Get(*sup, "cpuonly")->message().find("cpu limit not enforced"), std::string::npos);
  }
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
}

TEST_F(SupervisorTest, RunsAsConfiguredUserWhenRoot) {
  RuntimeConfig c = Config();
  c.workload_user = "nobody";
  Supervisor* sup = Make(c);
  sup->Apply({Shell("who", "id -u > " + dir_ / "out/uid", v1::RESTART_POLICY_NEVER), [&] {
                auto s =
                    Shell("asroot", "id -u > " + dir_ / "out/rootuid", v1::RESTART_POLICY_NEVER);
                s.set_user("root");
                return s;
              }()});
  ASSERT_TRUE(RunUntil([&] {
    auto a = Get(*sup, "who");
    auto b = Get(*sup, "asroot");
    return a && b &&
           (a->state() == v1::WORKLOAD_STATE_STOPPED || a->state() == v1::WORKLOAD_STATE_FAILED) &&
           (b->state() == v1::WORKLOAD_STATE_STOPPED || b->state() == v1::WORKLOAD_STATE_FAILED);
  }));
  if (::geteuid() == 0) {
    auto nobody = ops_->LookupUser("nobody");
    ASSERT_TRUE(nobody.ok());
    EXPECT_EQ(ReadFileOr(dir_ / "out/uid"), std::to_string(nobody->uid) + "\n");
    EXPECT_EQ(ReadFileOr(dir_ / "out/rootuid"), "0\n");
  } else {
    // Not root: no switch for the default; an explicit other user fails clearly.
    EXPECT_EQ(ReadFileOr(dir_ / "out/uid"), std::to_string(::geteuid()) + "\n");
    EXPECT_EQ(Get(*sup, "asroot")->state(), v1::WORKLOAD_STATE_FAILED);
    EXPECT_NE(Get(*sup, "asroot")->message().find("not run as root"), std::string::npos);
  }
}

TEST_F(SupervisorTest, StopAllStopsEverythingAndCallsDone) {
  Supervisor* sup = Make(Config());
  sup->Apply(
      {Spec("x", {"sleep", "1000"}), Spec("y", {"sleep", "1000"}), Spec("z", {"/nonexistent"})});
  ASSERT_TRUE(RunUntil([&] {
    return IsState(*sup, "x", v1::WORKLOAD_STATE_RUNNING) &&
           IsState(*sup, "y", v1::WORKLOAD_STATE_RUNNING);
  }));
  int x = Get(*sup, "x")->pid();
  bool done = false;
  sup->StopAll([&] { done = true; });
  ASSERT_TRUE(RunUntil([&] { return done; }));
  EXPECT_FALSE(ProcessAlive(x));
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_STOPPED, "x"), 1);
  EXPECT_EQ(CountEvents(v1::EVENT_TYPE_WORKLOAD_STOPPED, "z"), 1);
  // Inert afterwards.
  sup->Apply({Spec("x", {"sleep", "1000"})});
  EXPECT_TRUE(sup->Statuses().empty());
}

// The spawn gate (ProcessOps::Spawn, before_exec): the pid is handed to the
// caller before the child runs anything, and a child whose agent dies before
// it was recorded never runs the workload. The "agent" here is a forked
// process that dies inside before_exec; this test is its subreaper, so the
// orphaned child is reparented to it and its exit status can be read.
TEST(SpawnGate, ChildOfAnAgentKilledBeforeTheRecordNeverRuns) {
  outpost::testing::TempDir dir;
  const std::string marker = dir / "ran";
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    ::close(report[0]);
    auto ops = NewLinuxProcessOps();
    SpawnRequest req;
    req.argv = {"/bin/sh", "-c", "touch " + marker};
    req.log_path = dir / "log";
    req.env = {"PATH=/usr/bin:/bin"};
    req.before_exec = [&](pid_t pid, std::uint64_t) {
      (void)!::write(report[1], &pid, sizeof pid);
      ::_exit(0);  // SIGKILLed between fork and the record
    };
    (void)ops->Spawn(req);
    ::_exit(1);
  }
  ::close(report[1]);
  pid_t child = 0;
  ASSERT_EQ(::read(report[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(agent, &status, 0), agent);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The orphan is ours now (subreaper): it exits at the closed gate.
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 127);
  EXPECT_FALSE(outpost::fs::Exists(marker)) << "the workload ran although never recorded";
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST(SpawnGate, BeforeExecSeesThePidBeforeTheWorkloadRuns) {
  outpost::testing::TempDir dir;
  const std::string marker = dir / "ran";
  auto ops = NewLinuxProcessOps();
  SpawnRequest req;
  req.argv = {"/bin/sh", "-c", "touch " + marker};
  req.log_path = dir / "log";
  req.env = {"PATH=/usr/bin:/bin"};
  pid_t seen = 0;
  std::uint64_t seen_ticks = 0;
  bool ran_before = true;
  req.before_exec = [&](pid_t pid, std::uint64_t ticks) {
    seen = pid;
    seen_ticks = ticks;
    ran_before = outpost::fs::Exists(marker);
  };
  auto spawned = ops->Spawn(req);
  ASSERT_TRUE(spawned.ok()) << spawned.error().ToString();
  EXPECT_EQ(seen, spawned->pid);
  EXPECT_EQ(seen_ticks, spawned->start_time_ticks);
  EXPECT_FALSE(ran_before);
  int status = 0;
  ASSERT_EQ(::waitpid(spawned->pid, &status, 0), spawned->pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(outpost::fs::Exists(marker));
}

}  // namespace
}  // namespace outpost::agent
