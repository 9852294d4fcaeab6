// The agent against the real hub and a real mosquitto (from `outpost-hub
// init`): join, apply a manifest, the workload runs and status says so; a
// cold start with the broker down brings the cached workload up; an agent
// restart re-adopts the running workload (same pid).
//
// Everything runs on loopback with ports picked at run time, in TempDirs,
// and is stopped by RAII also when an assertion fails.
#include <signal.h>
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace outpost::agent {
namespace {

using outpost::testing::BinDir;
using outpost::testing::FreePort;
using outpost::testing::Process;
using outpost::testing::ReadFileOr;
using outpost::testing::RunCommand;
using outpost::testing::TempDir;
using outpost::testing::WaitFor;

// The hub names workloads "<application>.<workload>".
constexpr const char* kWriter = "it-app.writer";

bool HaveHubBinaries() {
  struct stat st {};
  return ::stat((BinDir() + "/outpost-hub").c_str(), &st) == 0 &&
         ::stat((BinDir() + "/outpostctl").c_str(), &st) == 0 &&
         ::stat((BinDir() + "/outpost-agent").c_str(), &st) == 0;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

class AgentWithHub : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveHubBinaries())
      GTEST_FAIL() << "outpost-hub/outpostctl/outpost-agent missing in " << BinDir();
    ASSERT_EQ(::chmod(root_.path().c_str(), 0755), 0);
    broker_port_ = FreePort();
    api_port_ = FreePort();
    std::string out;
    ASSERT_EQ(RunCommand({BinDir() + "/outpost-hub", "init", "--data-dir", hub_dir_, "--hostname",
                          "localhost", "--broker-port", std::to_string(broker_port_), "--api-port",
                          std::to_string(api_port_)},
                         &out),
              0)
        << out;
    StartBroker();
    hub_ = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/outpost-hub", "serve", "--data-dir", hub_dir_},
        root_ / "hub.log");
    ASSERT_TRUE(WaitFor(
        [&] {
          return Ctl({"device", "list"}) == 0;
        },
        std::chrono::seconds(30)))
        << hub_->Log();

    // The workload's output and the agent's tuning.
    out_dir_ = root_ / "out";
    ASSERT_EQ(::mkdir(out_dir_.c_str(), 0777), 0);
    ASSERT_EQ(::chmod(out_dir_.c_str(), 0777), 0);
    WriteFile(config_, "log_level: debug\nworkload_user: root\nnvidia_smi: \"-\"\n");
  }

  void TearDown() override {
    agent_.reset();
    // The agent leaves its workloads running on purpose (KillMode=process);
    // the test ends them.
    for (const char* file : {"/writer.pid", "/second.pid"}) {
      std::string pid = ReadFileOr(out_dir_ + file);
      if (!pid.empty()) ::kill(std::stoi(pid), SIGKILL);
    }
  }

  void StartBroker() {
    broker_ = std::make_unique<Process>(
        std::vector<std::string>{"mosquitto", "-c", hub_dir_ + "/mosquitto.conf"},
        root_ / ("mosquitto-" + std::to_string(++broker_starts_) + ".log"));
    ASSERT_TRUE(WaitFor([&] { return broker_->Log().find("running") != std::string::npos; },
                        std::chrono::seconds(20)))
        << broker_->Log();
  }

  int Ctl(std::vector<std::string> args, std::string* out = nullptr) {
    std::vector<std::string> argv = {BinDir() + "/outpostctl", "--config", hub_dir_ + "/ctl.yaml"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, out, {}, std::chrono::seconds(30));
  }

  std::vector<std::string> Agent(std::vector<std::string> args) {
    std::vector<std::string> argv = {BinDir() + "/outpost-agent", "--state-dir", state_, "--config",
                                     config_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  nlohmann::json CreateToken(int uses = 1) {
    std::string out;
    EXPECT_EQ(Ctl({"token", "create", "--ttl", "1h", "--uses", std::to_string(uses), "--label",
                   "role=it", "-o", "json"},
                  &out),
              0)
        << out;
    if (out.find('{') == std::string::npos) return nlohmann::json::object();
    return nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
  }

  // `join` with the given token and CA hash into `state`; its exit code and
  // output (stdout+stderr).
  int JoinWith(const std::string& state, const std::string& token, const std::string& ca_hash,
               std::string* out, const std::string& name = "edge-x") {
    return RunCommand({BinDir() + "/outpost-agent", "--state-dir", state, "--config", config_,
                       "join", "--hub", "https://localhost:" + std::to_string(api_port_), "--token",
                       token, "--ca-hash", ca_hash, "--name", name},
                      out);
  }

  void Join() {
    std::string out;
    ASSERT_EQ(
        Ctl({"token", "create", "--ttl", "1h", "--uses", "1", "--label", "role=it", "-o", "json"},
            &out),
        0)
        << out;
    ASSERT_NE(out.find('{'), std::string::npos) << out;
    auto token = nlohmann::json::parse(out.substr(out.find('{')));
    std::string join_out;
    ASSERT_EQ(RunCommand(Agent({"join", "--hub", "https://localhost:" + std::to_string(api_port_),
                                "--token", token["token"], "--ca-hash", token["caHash"], "--name",
                                "edge-it"}),
                         &join_out),
              0)
        << join_out;
  }

  void StartAgent() {
    agent_ = std::make_unique<Process>(
        Agent({"run"}), root_ / ("agent-" + std::to_string(++agent_starts_) + ".log"));
  }

  nlohmann::json Status() {
    std::string out;
    if (RunCommand(Agent({"status", "--json"}), &out) != 0) return nlohmann::json();
    auto j = nlohmann::json::parse(out, nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }

  static nlohmann::json Workload(const nlohmann::json& status, const std::string& name) {
    if (!status.is_object() || !status.contains("workloads")) return nlohmann::json();
    for (const auto& w : status["workloads"])
      if (w.value("name", "") == name) return w;
    return nlohmann::json();
  }

  // The application: `writer` (writes its pid and hello.txt, then sleeps),
  // and with `second` also a second workload writing second.txt.
  void ApplyWriter(bool second = false) {
    std::string manifest = root_ / "app.yaml";
    std::string text =
        "apiVersion: outpost.dev/v1alpha1\n"
        "kind: EdgeApplication\n"
        "metadata:\n"
        "  name: it-app\n"
        "spec:\n"
        "  selector:\n"
        "    matchLabels: {role: it}\n"
        "  workloads:\n"
        "    - name: writer\n"
        "      kind: process\n"
        "      command: [\"/bin/sh\", \"-c\", \"echo $$ > " +
        out_dir_ + "/writer.pid; echo hello > " + out_dir_ +
        "/hello.txt; exec sleep 100000\"]\n"
        "      restartPolicy: Always\n";
    if (second) {
      text +=
          "    - name: second\n"
          "      kind: process\n"
          "      command: [\"/bin/sh\", \"-c\", \"echo $$ > " +
          out_dir_ + "/second.pid; echo again > " + out_dir_ +
          "/second.txt; exec sleep 100000\"]\n"
          "      restartPolicy: Always\n";
    }
    WriteFile(manifest, text);
    std::string out;
    ASSERT_EQ(Ctl({"apply", "-f", manifest}, &out), 0) << out;
  }

  bool Converged() {
    auto s = Status();
    auto w = Workload(s, kWriter);
    return s.is_object() && s.value("connection", "") == "connected" &&
           s.value("desiredGeneration", 0) > 0 &&
           s.value("appliedGeneration", 0) == s.value("desiredGeneration", 0) && w.is_object() &&
           w.value("state", "") == "running";
  }

  std::string Logs() {
    return "--- agent\n" + (agent_ ? agent_->Log() : std::string()) + "\n--- hub\n" +
           (hub_ ? hub_->Log() : std::string());
  }

  TempDir root_{"agent-it"};
  std::string hub_dir_ = root_ / "hub";
  std::string state_ = root_ / "agent";
  std::string config_ = root_ / "agent.yaml";
  std::string out_dir_;
  int broker_port_ = 0;
  int api_port_ = 0;
  int broker_starts_ = 0;
  int agent_starts_ = 0;
  std::unique_ptr<Process> broker_;
  std::unique_ptr<Process> hub_;
  std::unique_ptr<Process> agent_;
};

TEST_F(AgentWithHub, JoinApplyRunAndReport) {
  ASSERT_NO_FATAL_FAILURE(Join());
  struct stat st {};
  ASSERT_EQ(::stat((state_ + "/device.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  StartAgent();
  ASSERT_TRUE(WaitFor([&] { return Status().value("connection", "") == "connected"; },
                      std::chrono::seconds(30)))
      << Logs();
  ApplyWriter();
  ASSERT_TRUE(WaitFor([&] { return ReadFileOr(out_dir_ + "/hello.txt") == "hello\n"; },
                      std::chrono::seconds(30)))
      << Logs();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(30))) << Logs();
  auto s = Status();
  EXPECT_EQ(s["daemon"], "running");
  EXPECT_EQ(s["deviceId"], "edge-it");
  auto w = Workload(s, kWriter);
  EXPECT_EQ(std::to_string(w["pid"].get<int>()) + "\n", ReadFileOr(out_dir_ + "/writer.pid"));
  // The hub saw the report: the device's observed generation caught up.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string out;
        if (Ctl({"device", "get", "edge-it", "-o", "json"}, &out) != 0) return false;
        if (out.find('{') == std::string::npos) return false;
        auto d = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
        return !d.is_discarded() &&
               d.value("observedGeneration", 0) == s["desiredGeneration"].get<int>();
      },
      std::chrono::seconds(30)))
      << Logs();
  // The events (agent started, desired applied, workload started) reached the
  // hub: its acks emptied the outbox.
  ASSERT_TRUE(
      WaitFor([&] { return Status().value("outboxDepth", -1) == 0; }, std::chrono::seconds(30)))
      << Logs();
  // doctor: everything passes with the daemon up and the broker reachable.
  std::string doctor;
  EXPECT_EQ(RunCommand(Agent({"doctor"}), &doctor), 0) << doctor;
}

TEST_F(AgentWithHub, ColdStartWithTheBrokerDownBringsCachedWorkloadsUp) {
  ASSERT_NO_FATAL_FAILURE(Join());
  StartAgent();
  ApplyWriter();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(40))) << Logs();
  // Power cut: the agent and its workload die, the broker is gone.
  agent_->Kill();
  agent_.reset();
  int pid = std::stoi(ReadFileOr(out_dir_ + "/writer.pid", "0"));
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }));
  broker_.reset();
  ::unlink((out_dir_ + "/hello.txt").c_str());

  StartAgent();
  ASSERT_TRUE(WaitFor([&] { return ReadFileOr(out_dir_ + "/hello.txt") == "hello\n"; },
                      std::chrono::seconds(30)))
      << Logs();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = Status();
        return s.value("daemon", "") == "running" && s.value("connection", "") == "disconnected" &&
               Workload(s, kWriter).value("state", "") == "running";
      },
      std::chrono::seconds(30)))
      << Logs();
  std::string text;
  RunCommand(Agent({"status"}), &text);
  EXPECT_TRUE(text.starts_with("offline")) << text;
  // The broker returns: the agent reconnects and is in sync again.
  StartBroker();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(60))) << Logs();
}

TEST_F(AgentWithHub, AgentRestartReadoptsTheRunningWorkload) {
  ASSERT_NO_FATAL_FAILURE(Join());
  StartAgent();
  ApplyWriter();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(40))) << Logs();
  int pid = Workload(Status(), kWriter)["pid"].get<int>();
  ASSERT_GT(pid, 0);
  // A clean stop (SIGTERM): the workload keeps running.
  EXPECT_EQ(agent_->Stop(), 0) << Logs();
  agent_.reset();
  EXPECT_EQ(::kill(pid, 0), 0);
  auto down = Status();
  EXPECT_EQ(down["daemon"], "not-running");
  EXPECT_EQ(Workload(down, kWriter)["state"], "running");
  EXPECT_EQ(Workload(down, kWriter)["pid"], pid);

  StartAgent();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(40))) << Logs();
  auto w = Workload(Status(), kWriter);
  EXPECT_EQ(w["pid"], pid);  // adopted, not restarted
  EXPECT_EQ(w["restarts"], 0);
}

TEST_F(AgentWithHub, ChangesMadeWhileOfflineArriveAfterReconnect) {
  ASSERT_NO_FATAL_FAILURE(Join());
  StartAgent();
  ApplyWriter();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(40))) << Logs();
  const int before = Status()["desiredGeneration"].get<int>();
  // The link goes down; the operator changes the application meanwhile.
  broker_.reset();
  ASSERT_TRUE(WaitFor([&] { return Status().value("connection", "") == "disconnected"; },
                      std::chrono::seconds(60)))
      << Logs();
  ApplyWriter(/*second=*/true);
  // The device keeps running what it has.
  EXPECT_EQ(Workload(Status(), kWriter).value("state", ""), "running");
  StartBroker();
  ASSERT_TRUE(WaitFor([&] { return ReadFileOr(out_dir_ + "/second.txt") == "again\n"; },
                      std::chrono::seconds(60)))
      << Logs();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = Status();
        return Converged() && s.value("desiredGeneration", 0) > before &&
               Workload(s, "it-app.second").value("state", "") == "running";
      },
      std::chrono::seconds(30)))
      << Logs();
}

TEST_F(AgentWithHub, JoinFailuresAreOneLineNamingTheCauseAndLeaveNothing) {
  auto lines = [](const std::string& s) { return std::count(s.begin(), s.end(), '\n'); };
  auto token = CreateToken(1);
  const std::string hash = token["caHash"];
  std::string out;
  // A CA hash that does not match.
  EXPECT_NE(JoinWith(root_ / "s1", token["token"], "sha256:" + std::string(64, 'f'), &out), 0);
  EXPECT_TRUE(out.starts_with("outpost-agent join: CA hash mismatch: hub presented " + hash +
                              ", expected sha256:"))
      << out;
  EXPECT_EQ(lines(out), 1) << out;
  // A wrong token.
  EXPECT_NE(JoinWith(root_ / "s2", "zzzzzz.0123456789abcdef", hash, &out), 0);
  EXPECT_EQ(out,
            "outpost-agent join: join token rejected: the token is not valid (invalid_token)\n");
  // The token works once, then it is used up.
  EXPECT_EQ(JoinWith(root_ / "s3", token["token"], hash, &out, "edge-once"), 0) << out;
  EXPECT_NE(JoinWith(root_ / "s4", token["token"], hash, &out, "edge-twice"), 0);
  EXPECT_EQ(out,
            "outpost-agent join: join token rejected: the token has no uses left "
            "(token_used_up)\n");
  // A revoked token.
  auto revoked = CreateToken(5);
  const std::string id = revoked["token"].get<std::string>().substr(0, 6);
  ASSERT_EQ(Ctl({"token", "revoke", id}, &out), 0) << out;
  EXPECT_NE(JoinWith(root_ / "s5", revoked["token"], hash, &out), 0);
  EXPECT_EQ(out,
            "outpost-agent join: join token rejected: the token was revoked (token_revoked)\n");
  // Already enrolled.
  auto another = CreateToken(1);
  EXPECT_NE(JoinWith(root_ / "s3", another["token"], hash, &out, "edge-again"), 0);
  EXPECT_TRUE(out.starts_with("outpost-agent join: already enrolled as device edge-once")) << out;
  EXPECT_EQ(lines(out), 1);
  // The hub is down.
  hub_.reset();
  EXPECT_NE(JoinWith(root_ / "s6", another["token"], hash, &out), 0);
  EXPECT_TRUE(out.starts_with("outpost-agent join: cannot reach the hub at https://localhost:"))
      << out;
  EXPECT_EQ(lines(out), 1) << out;
  // No failed join left a state dir behind.
  for (const char* dir : {"s1", "s2", "s4", "s5", "s6"}) {
    struct stat st {};
    EXPECT_NE(::stat((root_ / dir).c_str(), &st), 0) << dir;
  }
}

}  // namespace
}  // namespace outpost::agent
