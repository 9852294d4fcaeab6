// The Supervisor against a fake ProcessOps: no process is started. "Exit
// fds" are pipes the test makes readable, so exits, signals, cgroup placement
// and user switching are checked exactly, also where this machine could not
// do them for real (cgroup v2, running as root).
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <csignal>
#include <map>
#include <set>

#include "agent/runtime/process_ops.hpp"
#include "agent/runtime/supervisor.hpp"

namespace outpost::agent {
namespace {

namespace v1 = outpost::v1;
namespace asio = boost::asio;
using std::chrono::milliseconds;

class FakeOps : public ProcessOps {
 public:
  ~FakeOps() override {
    for (auto& [pid, p] : procs_) {
      if (p.write_fd >= 0) ::close(p.write_fd);
    }
  }

  struct Proc {
    int write_fd = -1;
    ExitStatus status;
    bool exited = false;
    std::uint64_t start = 0;
  };

  Result<SpawnedProcess> Spawn(const SpawnRequest& req) override {
    requests.push_back(req);
    if (fail_spawn) return Error(Errc::kNotFound, "exec " + req.argv[0] + ": fake failure");
    int pid = next_pid_++;
    procs_[pid].start = 1000 + static_cast<std::uint64_t>(pid);
    if (req.before_exec) req.before_exec(pid, procs_[pid].start);
    return SpawnedProcess{pid, procs_[pid].start};
  }
  Status KillGroup(pid_t pgid, int sig) override {
    signals.emplace_back(pgid, sig);
    if (sig == SIGKILL || (sig == SIGTERM && !ignore_term)) Exit(pgid, {true, -sig});
    return OkStatus();
  }
  Result<int> OpenExitFd(pid_t pid) override {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Error(Errc::kIo, "pipe");
    procs_[pid].write_fd = fds[1];
    return fds[0];
  }
  Result<ExitStatus> Reap(pid_t pid, int) override {
    auto it = procs_.find(pid);
    if (it == procs_.end() || !it->second.exited) return Error(Errc::kUnavailable, "running");
    return it->second.status;
  }
  Result<std::uint64_t> StartTime(pid_t pid) override {
    auto it = procs_.find(pid);
    if (it == procs_.end() || it->second.exited) return Error(Errc::kNotFound, "gone");
    return it->second.start;
  }
  bool Exists(const std::string& path) override { return existing.contains(path); }
  uid_t EffectiveUid() override { return euid; }
  Result<UserIds> LookupUser(const std::string& name) override {
    if (name == "root") return UserIds{"root", 0, 0, {}, "/root"};
    if (name == "edge") return UserIds{"edge", 990, 990, {990, 44}, "/var/lib/edge"};
    return Error(Errc::kNotFound, "no such user: " + name);
  }
  Result<CgroupPlacement> PrepareCgroup(const std::string& root, const std::string& name,
                                        std::uint64_t memory_bytes,
                                        std::uint32_t milli_cpus) override {
    if (!cgroup_ok) return Error(Errc::kFailedPrecondition, "not cgroup2");
    cgroup_limits[name] = {memory_bytes, milli_cpus};
    return CgroupPlacement{root + "/" + name};
  }
  void RemoveCgroup(const std::string&, const std::string& name) override {
    removed_cgroups.push_back(name);
  }

  // Makes `pid` exit with `status` (its exit fd becomes readable).
  void Exit(int pid, ExitStatus status) {
    auto& p = procs_[pid];
    if (p.exited) return;
    p.exited = true;
    p.status = status;
    if (p.write_fd >= 0) {
      ::close(p.write_fd);
      p.write_fd = -1;
    }
  }
  // A live process the fake knows (for adoption).
  void AddLive(int pid, std::uint64_t start) { procs_[pid].start = start; }

  std::vector<SpawnRequest> requests;
  std::vector<std::pair<int, int>> signals;
  std::set<std::string> existing;
  std::map<std::string, std::pair<std::uint64_t, std::uint32_t>> cgroup_limits;
  std::vector<std::string> removed_cgroups;
  bool fail_spawn = false;
  bool ignore_term = false;
  bool cgroup_ok = false;
  uid_t euid = 1000;

 private:
  std::map<int, Proc> procs_;
  int next_pid_ = 500;
};

v1::WorkloadSpec Spec(const std::string& name, const std::string& hash = "h1") {
  v1::WorkloadSpec s;
  s.set_name(name);
  s.add_command("/opt/app/bin/run");
  s.set_spec_hash(hash);
  return s;
}

class SupervisorFakeTest : public ::testing::Test {
 protected:
  RuntimeConfig Config() {
    RuntimeConfig c;
    c.log_dir = "";  // discarded: nothing touches the disk
    c.cgroup_root = "/sys/fs/cgroup/outpost-test";
    c.stop_grace = milliseconds(100);
    c.backoff_initial = milliseconds(20);
    c.backoff_max = milliseconds(40);
    c.poll_interval = milliseconds(20);
    return c;
  }
  std::unique_ptr<Supervisor> Make(RuntimeConfig c) {
    return std::make_unique<Supervisor>(
        io_, std::move(c), store_, ops_, [this](const RuntimeEvent& e) { events_.push_back(e); },
        nullptr);
  }
  bool RunUntil(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!cond()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io_.restart();
      io_.run_for(milliseconds(5));
    }
    return true;
  }
  static v1::WorkloadStatus Get(const Supervisor& s, const std::string& name) {
    for (auto& st : s.Statuses()) {
      if (st.name() == name) return st;
    }
    return {};
  }

  asio::io_context io_;
  MemoryProcessRecordStore store_;
  FakeOps ops_;
  std::vector<RuntimeEvent> events_;
};

TEST_F(SupervisorFakeTest, CgroupModeWhenWritable) {
  ops_.cgroup_ok = true;
  auto sup = Make(Config());
  auto spec = Spec("det");
  spec.mutable_resources()->set_memory_mib(512);
  spec.mutable_resources()->set_milli_cpus(1500);
  sup->Apply({spec});
  ASSERT_EQ(ops_.requests.size(), 1u);
  EXPECT_EQ(ops_.requests[0].cgroup_dir, "/sys/fs/cgroup/outpost-test/det");
  EXPECT_EQ(ops_.requests[0].rlimit_as_bytes, 0u);
  EXPECT_EQ(ops_.cgroup_limits["det"].first, 512ull << 20);
  EXPECT_EQ(ops_.cgroup_limits["det"].second, 1500u);
  EXPECT_EQ(Get(*sup, "det").resource_mode(), v1::RESOURCE_MODE_CGROUP);
  // Removal stops it and removes its cgroup.
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
  EXPECT_NE(std::find(ops_.removed_cgroups.begin(), ops_.removed_cgroups.end(), "det"),
            ops_.removed_cgroups.end());
}

TEST_F(SupervisorFakeTest, RlimitWhenCgroupNotWritable) {
  auto sup = Make(Config());
  auto spec = Spec("det");
  spec.mutable_resources()->set_memory_mib(64);
  sup->Apply({spec});
  ASSERT_EQ(ops_.requests.size(), 1u);
  EXPECT_TRUE(ops_.requests[0].cgroup_dir.empty());
  EXPECT_EQ(ops_.requests[0].rlimit_as_bytes, 64ull << 20);
  EXPECT_EQ(Get(*sup, "det").resource_mode(), v1::RESOURCE_MODE_RLIMIT);
  sup->Detach();
}

TEST_F(SupervisorFakeTest, RootAgentSwitchesToWorkloadUserUnlessSpecSaysOtherwise) {
  ops_.euid = 0;
  RuntimeConfig c = Config();
  c.workload_user = "edge";
  auto sup = Make(c);
  auto as_root = Spec("b");
  as_root.set_user("root");
  auto unknown = Spec("c");
  unknown.set_user("ghost");
  sup->Apply({Spec("a"), as_root, unknown});
  ASSERT_EQ(ops_.requests.size(), 2u);  // "c" failed before spawning
  ASSERT_TRUE(ops_.requests[0].user.has_value());
  EXPECT_EQ(ops_.requests[0].user->uid, 990u);
  EXPECT_EQ(ops_.requests[0].user->groups, (std::vector<gid_t>{990, 44}));
  EXPECT_FALSE(ops_.requests[1].user.has_value());  // root: no switch
  auto c_status = Get(*sup, "c");
  EXPECT_EQ(c_status.state(), v1::WORKLOAD_STATE_BACKOFF);
  EXPECT_NE(c_status.message().find("no such user: ghost"), std::string::npos);
  // HOME follows the account.
  auto& env = ops_.requests[0].env;
  EXPECT_NE(std::find(env.begin(), env.end(), "HOME=/var/lib/edge"), env.end());
  sup->Detach();
}

TEST_F(SupervisorFakeTest, NonRootAgentRefusesOtherUser) {
  auto sup = Make(Config());
  auto spec = Spec("a");
  spec.set_user("edge");
  spec.set_restart_policy(v1::RESTART_POLICY_NEVER);
  sup->Apply({spec});
  EXPECT_TRUE(ops_.requests.empty());
  EXPECT_EQ(Get(*sup, "a").state(), v1::WORKLOAD_STATE_FAILED);
  EXPECT_EQ(Get(*sup, "a").message(), "cannot run as user edge: the agent does not run as root");
}

TEST_F(SupervisorFakeTest, TermIgnoredThenKillAfterGrace) {
  ops_.ignore_term = true;
  auto sup = Make(Config());
  sup->Apply({Spec("a")});
  int pid = Get(*sup, "a").pid();
  sup->Apply({});
  ASSERT_TRUE(RunUntil([&] { return sup->Statuses().empty(); }));
  ASSERT_EQ(ops_.signals.size(), 2u);
  EXPECT_EQ(ops_.signals[0], std::make_pair(pid, static_cast<int>(SIGTERM)));
  EXPECT_EQ(ops_.signals[1], std::make_pair(pid, static_cast<int>(SIGKILL)));
}

TEST_F(SupervisorFakeTest, ExitCodesAndSignalsAreReported) {
  auto sup = Make(Config());
  sup->Apply({Spec("a")});
  int pid = Get(*sup, "a").pid();
  ops_.Exit(pid, {true, -SIGSEGV});
  ASSERT_TRUE(RunUntil([&] { return Get(*sup, "a").has_exited(); }));
  EXPECT_EQ(Get(*sup, "a").last_exit_code(), -SIGSEGV);
  ASSERT_TRUE(RunUntil([&] { return !events_.empty(); }));
  EXPECT_EQ(events_.back().exit_code, -SIGSEGV);
  ASSERT_TRUE(RunUntil([&] { return Get(*sup, "a").pid() > pid; }));
  EXPECT_EQ(Get(*sup, "a").restarts(), 1u);
  // The record follows the new pid.
  auto records = *store_.LoadAll();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].pid, Get(*sup, "a").pid());
  EXPECT_EQ(records[0].restarts, 1u);
  sup->Detach();
}

TEST_F(SupervisorFakeTest, AdoptionMatchesPidAndStartTime) {
  ops_.AddLive(77, 5000);
  ops_.AddLive(78, 6000);
  ASSERT_TRUE(store_.Save({"a", "h1", 77, 5000, 4, 1}).ok());
  ASSERT_TRUE(store_.Save({"b", "h1", 78, 1234, 0, 1}).ok());  // pid reused by another process
  auto sup = Make(Config());
  ASSERT_TRUE(sup->Adopt().ok());
  sup->Apply({Spec("a"), Spec("b")});
  EXPECT_EQ(Get(*sup, "a").pid(), 77);
  EXPECT_EQ(Get(*sup, "a").restarts(), 4u);
  EXPECT_NE(Get(*sup, "b").pid(), 78);  // started fresh instead
  EXPECT_EQ(ops_.requests.size(), 1u);
  EXPECT_TRUE(ops_.signals.empty());  // the stranger with pid 78 is left alone
  sup->Detach();
}

TEST_F(SupervisorFakeTest, DevicesUnderDevRoot) {
  RuntimeConfig c = Config();
  c.dev_root = "/fake/dev";
  auto sup = Make(c);
  auto spec = Spec("cam");
  spec.add_devices("/dev/video0");
  sup->Apply({spec});
  EXPECT_EQ(Get(*sup, "cam").state(), v1::WORKLOAD_STATE_WAITING);
  ops_.existing.insert("/fake/dev/video0");
  ASSERT_TRUE(RunUntil([&] { return Get(*sup, "cam").state() == v1::WORKLOAD_STATE_RUNNING; }));
  sup->Detach();
}

}  // namespace
}  // namespace outpost::agent
