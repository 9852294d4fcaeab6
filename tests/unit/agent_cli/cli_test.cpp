// The command line without a daemon: argument parsing, the config file,
// `status` and `doctor` read from a prepared state dir, JSON keys exactly as
// CONTRACT.md fixes them.
#include "agent/cli/cli.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sstream>

#include "agent/cli/commands.hpp"
#include "agent/config/config.hpp"
#include "agent/runtime/process_ops.hpp"
#include "agent/state/agent_store.hpp"
#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent_cli/fake_hub.hpp"

namespace outpost::agent::cli {
namespace {

const testpki::Pki& SharedPki() {
  static const testpki::Pki* pki = new testpki::Pki();
  return *pki;
}

struct Run {
  int code = 0;
  std::string out;
  std::string err;
};

Run Cli(std::vector<std::string> args, bool color = false, std::int64_t now_ms = 0) {
  std::ostringstream out, err;
  Run r;
  r.code = Main(args, Env{out, err, color, now_ms});
  r.out = out.str();
  r.err = err.str();
  return r;
}

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------
// Arguments and config

TEST(Invocation, GlobalOptionsBeforeAndAfterTheCommand) {
  auto a = ParseInvocation({"--state-dir", "/s", "--config=/c.yaml", "status", "--json"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->state_dir, "/s");
  EXPECT_EQ(a->config_file, "/c.yaml");
  EXPECT_TRUE(a->config_given);
  EXPECT_EQ(a->command, "status");
  EXPECT_EQ(a->args, std::vector<std::string>{"--json"});
  auto b = ParseInvocation({"doctor", "--state-dir=/x"});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->state_dir, "/x");
  EXPECT_EQ(b->config_file, config::kDefaultConfigFile);
  EXPECT_FALSE(b->config_given);
  EXPECT_FALSE(ParseInvocation({}).ok());
  EXPECT_FALSE(ParseInvocation({"--state-dir"}).ok());
  EXPECT_FALSE(ParseInvocation({"--bogus", "status"}).ok());
}

TEST(Cli, VersionAndUsage) {
  auto v = Cli({"version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, std::string(OUTPOST_VERSION) + "\n");
  auto u = Cli({"frobnicate"});
  EXPECT_EQ(u.code, 2);
  EXPECT_NE(u.err.find("usage:"), std::string::npos);
  EXPECT_EQ(Cli({"--help"}).code, 0);
}

TEST(Cli, JoinNeedsHubAndToken) {
  outpost::testing::TempDir dir;
  auto r = Cli({"--state-dir", dir / "s", "join", "--hub", "https://h:1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--token"), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
  auto bad_label = Cli({"--state-dir", dir / "s", "join", "--hub", "https://h:1", "--token", "a.b",
                        "--label", "novalue"});
  EXPECT_EQ(bad_label.code, 2);
}

TEST(Cli, JoinAgainstAnUnreachableHubIsOneLine) {
  outpost::testing::TempDir dir;
  int port = outpost::testing::FreePort();
  auto r = Cli({"--state-dir", dir / "s", "--config", "/dev/null", "join", "--hub",
                "https://127.0.0.1:" + std::to_string(port), "--token", "abc123.0123456789abcdef",
                "--ca-hash", "sha256:" + std::string(64, '0')});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(r.err.starts_with("outpost-agent join: cannot reach the hub at https://127.0.0.1:"))
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::Exists(dir / "s"));
}

TEST(Config, ParsesTheFlatSubset) {
  auto c = config::Parse(
      "# tuning\n"
      "log_level: debug\n"
      "outbox_max_events: 500   # small device\n"
      "workload_user: \"edge-apps\"\n"
      "cgroup_root: '/sys/fs/cgroup/outpost'\n"
      "dev_root: /tmp/dev\n"
      "future_key: 1\n"
      "\n");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->outbox_max_events, 500u);
  EXPECT_EQ(c->workload_user, "edge-apps");
  EXPECT_EQ(c->cgroup_root, "/sys/fs/cgroup/outpost");
  EXPECT_EQ(c->dev_root, "/tmp/dev");
  EXPECT_EQ(c->unknown_keys, std::vector<std::string>{"future_key"});
  EXPECT_TRUE(config::Parse("").ok());
}

TEST(Config, RefusesWhatItDoesNotUnderstandNamingTheLine) {
  auto nested = config::Parse("log_level: info\nmqtt:\n  host: x\n");
  ASSERT_FALSE(nested.ok());
  EXPECT_TRUE(nested.error().message().starts_with("line 3:")) << nested.error().message();
  EXPECT_FALSE(config::Parse("outbox_max_events: lots\n").ok());
  EXPECT_FALSE(config::Parse("outbox_max_events: 1\n").ok());  // below the minimum
  EXPECT_FALSE(config::Parse("log_level: loud\n").ok());
  EXPECT_FALSE(config::Parse("- a\n").ok());
  EXPECT_FALSE(config::Parse("key_without_value\n").ok());
  EXPECT_FALSE(config::Parse("labels: [a, b]\n").ok());
  EXPECT_FALSE(config::Parse("workload_user: \"open\n").ok());
}

TEST(Config, MissingDefaultFileIsFineMissingNamedFileIsNot) {
  outpost::testing::TempDir dir;
  EXPECT_TRUE(config::Load(dir / "absent.yaml", false).ok());
  EXPECT_FALSE(config::Load(dir / "absent.yaml", true).ok());
}

// ---------------------------------------------------------------------------
// A prepared state dir: enrolled, a cached document, one workload running
// (this test process stands in for it) and one whose process is gone.

class PreparedState : public ::testing::Test {
 protected:
  void SetUp() override {
    enroll::JoinOptions o;
    o.state_dir = state_;
    o.hub_url = "https://hub.example:8443";
    o.token = "abc123.0123456789abcdef";
    o.ca_hash = *crypto::SpkiSha256(SharedPki().ca_pem);
    o.name = "edge-7";
    o.roots.nvidia_smi = "-";
    o.roots.dev_root = dir_ / "dev";
    o.roots.proc_root = dir_ / "proc";
    o.roots.etc_root = dir_ / "etc";
    ASSERT_TRUE(enroll::Join(o, hub_.Send()).ok());
    ASSERT_TRUE(fs::MakeDirs(dir_ / "dev", 0755).ok());
    ASSERT_TRUE(fs::WriteFileAtomic(config_, "dev_root: " + (dir_ / "dev") + "\n").ok());

    auto store = state::AgentStore::Open(state_ + "/agent.db");
    ASSERT_TRUE(store.ok());
    auto& s = **store;
    auto cam = testpki::Spec("camera");
    cam.add_devices("/dev/video0");
    cam.set_spec_hash(std::string(64, 'c'));
    auto det = testpki::Spec("detector");
    det.set_spec_hash(std::string(64, 'd'));
    ASSERT_TRUE(s.StoreDesired(3, "signed", "doc", {cam, det}).ok());
    outpost::v1::Event applied;
    applied.set_type(outpost::v1::EVENT_TYPE_DESIRED_APPLIED);
    applied.set_time_ms(NowMs());
    ASSERT_TRUE(s.MarkApplied(3, applied).ok());

    auto ops = NewLinuxProcessOps();
    auto start = ops->StartTime(::getpid());
    ASSERT_TRUE(start.ok());
    ProcessRecord running{"detector", det.spec_hash(), ::getpid(), *start, 2, NowMs() - 60000};
    ASSERT_TRUE(s.Save(running).ok());
    ProcessRecord gone{"camera", cam.spec_hash(), 999999, 12345, 0, NowMs() - 60000};
    ASSERT_TRUE(s.Save(gone).ok());

    outpost::v1::WorkloadStatus w1;
    w1.set_name("detector");
    w1.set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
    w1.set_pid(::getpid());
    w1.set_restarts(2);
    w1.set_since_ms(NowMs() - 3600 * 1000);
    w1.set_resource_mode(outpost::v1::RESOURCE_MODE_RLIMIT);
    outpost::v1::WorkloadStatus w2;
    w2.set_name("camera");
    w2.set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
    w2.set_pid(999999);
    ASSERT_TRUE(s.SaveWorkloadStatuses({w1, w2}, NowMs()).ok());
    state::ConnectionState c;
    c.connected = false;
    c.since_ms = NowMs() - 3 * 3600 * 1000;
    c.last_connected_ms = c.since_ms;
    c.detail = "Connection refused";
    ASSERT_TRUE(s.SetConnection(c).ok());
    for (int i = 0; i < 7; ++i) {
      outpost::v1::Event e;
      e.set_type(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED);
      ASSERT_TRUE(s.Append(e).ok());
    }
  }

  outpost::testing::TempDir dir_{"agent-cli"};
  std::string state_ = dir_ / "state";
  std::string config_ = dir_ / "agent.yaml";
  testhub::FakeHub hub_{SharedPki()};
};

TEST_F(PreparedState, StatusJsonHasTheContractKeysWithTheDaemonDown) {
  auto r = Cli({"--state-dir", state_, "status", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"deviceId", "hub", "connection", "daemon", "desiredGeneration",
                          "appliedGeneration", "outboxDepth", "certNotAfter", "workloads"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["deviceId"], "edge-7");
  EXPECT_EQ(j["hub"], "https://hub.example:8443");
  EXPECT_EQ(j["connection"], "disconnected");
  EXPECT_EQ(j["daemon"], "not-running");
  EXPECT_EQ(j["desiredGeneration"], 3);
  EXPECT_EQ(j["appliedGeneration"], 3);
  EXPECT_EQ(j["outboxDepth"], 8);  // DESIRED_APPLIED + 7
  EXPECT_TRUE(j["certNotAfter"].is_string());
  ASSERT_TRUE(j["workloads"].is_array());
  ASSERT_EQ(j["workloads"].size(), 2u);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& w : j["workloads"]) {
    for (const char* key : {"name", "state", "pid", "restarts"})
      EXPECT_TRUE(w.contains(key));
    by_name[w["name"]] = w;
  }
  EXPECT_EQ(by_name["detector"]["state"], "running");
  EXPECT_EQ(by_name["detector"]["pid"], ::getpid());
  EXPECT_EQ(by_name["detector"]["restarts"], 2);
  EXPECT_GE(by_name["detector"]["uptime"].get<int>(), 3599);
  EXPECT_EQ(by_name["detector"]["resourceMode"], "rlimit");
  // Its process is gone: the saved "running" is not believed.
  EXPECT_EQ(by_name["camera"]["state"], "stopped");
  EXPECT_EQ(by_name["camera"]["pid"], 0);
  const std::set<std::string> states = {"running", "starting", "backoff",
                                        "stopped", "failed",   "waiting"};
  for (const auto& w : j["workloads"])
    EXPECT_EQ(states.count(w["state"]), 1u);
}

TEST_F(PreparedState, StatusTextLeadsWithTheHeadlineAndSaysTheDaemonIsDown) {
  auto r = Cli({"--state-dir", state_, "status"}, /*color=*/false);
  ASSERT_EQ(r.code, 0) << r.err;
  auto first = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(first, "daemon not running — last known state:");
  EXPECT_NE(r.out.find("offline since"), std::string::npos);
  EXPECT_NE(r.out.find("(3h ago)"), std::string::npos);
  EXPECT_NE(r.out.find("edge-7"), std::string::npos);
  EXPECT_NE(r.out.find("detector"), std::string::npos);
  EXPECT_EQ(r.out.find('\033'), std::string::npos);  // no colours without a TTY
  auto coloured = Cli({"--state-dir", state_, "status"}, /*color=*/true);
  EXPECT_NE(coloured.out.find('\033'), std::string::npos);
}

TEST(Headline, TheTechniciansFirstLine) {
  const std::int64_t now = 1763800000000;
  nlohmann::json j = {{"enrolled", true},
                      {"daemon", "running"},
                      {"connection", "connected"},
                      {"desiredGeneration", 4},
                      {"appliedGeneration", 4},
                      {"workloads",
                       {{{"name", "a"}, {"state", "running"}},
                        {{"name", "b"}, {"state", "running"}},
                        {{"name", "c"}, {"state", "running"}}}}};
  EXPECT_EQ(Headline(j, now), "connected, in sync, 3 workloads running");
  j["appliedGeneration"] = 3;
  EXPECT_EQ(Headline(j, now), "connected, applying generation 4 (applied 3), 3 workloads running");
  j["appliedGeneration"] = 4;
  j["connection"] = "disconnected";
  j["connectionSince"] = "2025-11-22T05:26:40Z";  // 3h before `now`
  j["lastConnected"] = "2025-11-22T05:26:40Z";
  std::string h = Headline(j, now);
  EXPECT_TRUE(h.starts_with("offline since ")) << h;
  EXPECT_TRUE(h.ends_with("(3h ago), running 3 cached workloads")) << h;
  j["workloads"][1]["state"] = "failed";
  EXPECT_TRUE(Headline(j, now).ends_with("running 2 cached workloads, 1 not running"));
  j["daemon"] = "not-running";
  EXPECT_EQ(Headline(j, now), "daemon not running — last known state:");
  j["enrolled"] = false;
  EXPECT_TRUE(Headline(j, now).starts_with("not enrolled"));
}

TEST(Cli, StatusOfAnEmptyStateDirSaysNotEnrolled) {
  outpost::testing::TempDir dir;
  auto r = Cli({"--state-dir", dir.path(), "status", "--json"});
  EXPECT_EQ(r.code, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["enrolled"], false);
  EXPECT_EQ(j["daemon"], "not-running");
  EXPECT_EQ(j["connection"], "disconnected");
}

// ---------------------------------------------------------------------------
// doctor

std::map<std::string, std::pair<bool, std::string>> DoctorJson(const Run& r) {
  std::map<std::string, std::pair<bool, std::string>> out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j.is_array());
  for (const auto& c : j) {
    EXPECT_EQ(c.size(), 3u);
    out[c["check"].get<std::string>()] = {c["ok"].get<bool>(), c["detail"].get<std::string>()};
  }
  return out;
}

TEST_F(PreparedState, DoctorListsItsChecksAndFailsOnProblems) {
  auto r = Cli({"--state-dir", state_, "--config", config_, "doctor", "--json"});
  EXPECT_EQ(r.code, 1);  // the broker is not there, the daemon is down, /dev/video0 is missing
  auto checks = DoctorJson(r);
  for (const char* name : {"config", "state-dir", "enrollment", "key", "certificate", "ca-chain",
                           "broker", "clock", "disk", "devices", "daemon"})
    EXPECT_EQ(checks.count(name), 1u) << name;
  EXPECT_TRUE(checks["config"].first);
  EXPECT_TRUE(checks["state-dir"].first) << checks["state-dir"].second;
  EXPECT_TRUE(checks["enrollment"].first);
  EXPECT_TRUE(checks["key"].first) << checks["key"].second;
  EXPECT_TRUE(checks["certificate"].first) << checks["certificate"].second;
  EXPECT_TRUE(checks["ca-chain"].first) << checks["ca-chain"].second;
  EXPECT_TRUE(checks["clock"].first);
  EXPECT_FALSE(checks["broker"].first);
  EXPECT_FALSE(checks["daemon"].first);
  EXPECT_FALSE(checks["devices"].first);
  EXPECT_NE(checks["devices"].second.find("camera needs /dev/video0"), std::string::npos);

  // The camera appears: that check passes.
  ASSERT_TRUE(fs::WriteFileAtomic(dir_ / "dev/video0", "").ok());
  checks = DoctorJson(Cli({"--state-dir", state_, "--config", config_, "doctor", "--json"}));
  EXPECT_TRUE(checks["devices"].first) << checks["devices"].second;
}

TEST_F(PreparedState, DoctorCatchesAKeyReadableByOthers) {
  ASSERT_EQ(::chmod((state_ + "/device.key").c_str(), 0644), 0);
  auto checks = DoctorJson(Cli({"--state-dir", state_, "doctor", "--json"}));
  EXPECT_FALSE(checks["key"].first);
  EXPECT_NE(checks["key"].second.find("0644"), std::string::npos);
}

TEST_F(PreparedState, DoctorCatchesAnExpiredCertificateAndABadClock) {
  // Two years from now the one-year certificate has expired.
  const std::int64_t later = NowMs() + 2LL * 365 * 86400 * 1000;
  auto checks = DoctorJson(Cli({"--state-dir", state_, "doctor", "--json"}, false, later));
  EXPECT_FALSE(checks["certificate"].first);
  EXPECT_NE(checks["certificate"].second.find("expired"), std::string::npos);
  auto early = DoctorJson(Cli({"--state-dir", state_, "doctor", "--json"}, false, 1000000));
  EXPECT_FALSE(early["clock"].first);
}

TEST_F(PreparedState, DoctorTextLeadsWithTheCount) {
  auto r = Cli({"--state-dir", state_, "doctor"});
  EXPECT_EQ(r.code, 1);
  auto first = r.out.substr(0, r.out.find('\n'));
  EXPECT_NE(first.find("checks failed"), std::string::npos) << first;
  EXPECT_NE(r.out.find("FAIL"), std::string::npos);
}

TEST(Cli, DoctorOnAnEmptyStateDirFails) {
  outpost::testing::TempDir dir;
  auto r = Cli({"--state-dir", dir / "nothing", "doctor", "--json"});
  EXPECT_EQ(r.code, 1);
  auto checks = DoctorJson(r);
  EXPECT_FALSE(checks["state-dir"].first);
  EXPECT_FALSE(checks["enrollment"].first);
}

}  // namespace
}  // namespace outpost::agent::cli
