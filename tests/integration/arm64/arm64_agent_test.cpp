// The cross-built arm64 agent, run under qemu-user, against a native hub and
// a real mosquitto on loopback: it enrolls, converges, survives a broker
// restart (reconnects and applies a generation published after it).
//
// The binary is <source>/build-arm64/bin/outpost-agent (or
// $OUTPOST_ARM64_AGENT); `make check` builds it before running ctest, so a
// missing or non-arm64 binary fails the test instead of skipping it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace outpost::packaging {
namespace {

using outpost::testing::BinDir;
using outpost::testing::FreePort;
using outpost::testing::Process;
using outpost::testing::ReadFileOr;
using outpost::testing::RunCommand;
using outpost::testing::SourceDir;
using outpost::testing::TempDir;
using outpost::testing::WaitFor;

constexpr const char* kWorkload = "arm-app.greeter";
// qemu's library prefix. Not /usr/aarch64-linux-gnu: that holds the cross
// toolchain's ld-linux-aarch64.so.1 (libc6-arm64-cross), while the agent's
// libraries (Paho, protobuf, mbedTLS, ...) and, through /etc/ld.so.cache, libc
// itself come from the multiarch libc6:arm64 in /lib/aarch64-linux-gnu. A
// loader and a libc of two different builds share private state: the agent
// then spins in pthread_create (seen with 2.36-8cross1 vs 2.36-9+deb12u14).
// With "/" loader and libraries are all multiarch arm64 packages.
constexpr const char* kSysroot = "/";

std::string Arm64AgentPath() {
  const char* env = std::getenv("OUTPOST_ARM64_AGENT");
  return env && *env ? env : SourceDir() + "/build-arm64/bin/outpost-agent";
}

// e_machine of an ELF file (183 = EM_AARCH64), or -1.
int ElfMachine(const std::string& path) {
  std::string head = ReadFileOr(path).substr(0, 20);
  if (head.size() < 20 || head.compare(0, 4,
                                       "\x7f"
                                       "ELF") != 0)
    return -1;
  return static_cast<unsigned char>(head[18]) | (static_cast<unsigned char>(head[19]) << 8);
}

bool PortOpen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

class Arm64Agent : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_bin_ = Arm64AgentPath();
    struct stat st {};
    ASSERT_EQ(::stat(agent_bin_.c_str(), &st), 0)
        << agent_bin_ << " is missing: `make build-arm64` builds it (make check does)";
    // arm64 in make check; the armhf agent runs the same test by hand with
    // OUTPOST_ARM64_AGENT=build-armhf/bin/outpost-agent (docs/packaging.md).
    const int machine = ElfMachine(agent_bin_);
    ASSERT_TRUE(machine == 183 || machine == 40)
        << agent_bin_ << " is not an arm64 (aarch64) or armhf (arm) ELF";
    qemu_ = machine == 183 ? "qemu-aarch64" : "qemu-arm";
    ASSERT_EQ(RunCommand({"sh", "-c", "command -v " + qemu_}), 0)
        << qemu_ << " is missing (packaging/install-deps.sh arm64|armhf)";
    for (const char* b : {"outpost-hub", "outpostctl"})
      ASSERT_EQ(::stat((BinDir() + "/" + b).c_str(), &st), 0) << BinDir() << "/" << b;

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
    ASSERT_NO_FATAL_FAILURE(StartBroker());
    hub_ = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/outpost-hub", "serve", "--data-dir", hub_dir_},
        root_ / "hub.log");
    ASSERT_TRUE(WaitFor(
        [&] {
          return Ctl({"device", "list"}) == 0;
        },
        std::chrono::seconds(30)))
        << hub_->Log();

    out_dir_ = root_ / "out";
    ASSERT_EQ(::mkdir(out_dir_.c_str(), 0777), 0);
    std::ofstream(config_) << "log_level: debug\n"
                              "workload_user: root\n"
                              "nvidia_smi: \"-\"\n"
                              "reconnect_min_ms: 200\n"
                              "reconnect_max_ms: 2000\n";
  }

  void TearDown() override {
    agent_.reset();
    // The agent leaves its workload running on purpose; the test ends it.
    std::string pid = ReadFileOr(out_dir_ + "/greeter.pid");
    if (!pid.empty() && std::atoi(pid.c_str()) > 1) ::kill(std::atoi(pid.c_str()), SIGKILL);
  }

  void StartBroker() {
    broker_ = std::make_unique<Process>(
        std::vector<std::string>{"mosquitto", "-c", hub_dir_ + "/mosquitto.conf"},
        root_ / ("mosquitto-" + std::to_string(++broker_starts_) + ".log"));
    ASSERT_TRUE(WaitFor([&] { return PortOpen(broker_port_); }, std::chrono::seconds(20)))
        << broker_->Log();
  }

  int Ctl(std::vector<std::string> args, std::string* out = nullptr) {
    std::vector<std::string> argv = {BinDir() + "/outpostctl", "--config", hub_dir_ + "/ctl.yaml"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, out, {}, std::chrono::seconds(30));
  }

  // The arm64 agent under qemu-user with Debian's arm64 multiarch libraries.
  std::vector<std::string> Agent(std::vector<std::string> args) {
    std::vector<std::string> argv = {qemu_,         "-L",   kSysroot,   agent_bin_,
                                     "--state-dir", state_, "--config", config_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  nlohmann::json Status() {
    std::string out;
    if (RunCommand(Agent({"status", "--json"}), &out, {}, std::chrono::seconds(60)) != 0)
      return nlohmann::json();
    auto j = nlohmann::json::parse(out, nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }

  static nlohmann::json Workload(const nlohmann::json& status) {
    if (!status.is_object() || !status.contains("workloads")) return nlohmann::json();
    for (const auto& w : status["workloads"])
      if (w.value("name", "") == kWorkload) return w;
    return nlohmann::json();
  }

  // Converged on at least generation `min_generation`.
  bool Converged(int min_generation) {
    auto s = Status();
    return s.is_object() && s.value("connection", "") == "connected" &&
           s.value("desiredGeneration", 0) >= min_generation &&
           s.value("appliedGeneration", 0) == s.value("desiredGeneration", 0) &&
           Workload(s).value("state", "") == "running";
  }

  void Apply(const std::string& greeting) {
    std::string manifest = root_ / "app.yaml";
    std::ofstream(manifest) << "apiVersion: outpost.dev/v1alpha1\n"
                               "kind: EdgeApplication\n"
                               "metadata: {name: arm-app}\n"
                               "spec:\n"
                               "  selector: {matchLabels: {board: arm64}}\n"
                               "  workloads:\n"
                               "    - name: greeter\n"
                               "      kind: process\n"
                               "      command: [\"/bin/sh\", \"-c\", \"echo $$ > "
                            << out_dir_ << "/greeter.pid; echo $GREETING > " << out_dir_
                            << "/greeting.txt; exec sleep 100000\"]\n"
                               "      env: {GREETING: "
                            << greeting
                            << "}\n"
                               "      restartPolicy: Always\n";
    std::string out;
    ASSERT_EQ(Ctl({"apply", "-f", manifest}, &out), 0) << out;
  }

  int HubObservedGeneration() {
    std::string out;
    if (Ctl({"device", "get", "arm-board", "-o", "json"}, &out) != 0) return -1;
    if (out.find('{') == std::string::npos) return -1;
    auto d = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
    return d.is_discarded() ? -1 : d.value("observedGeneration", -1);
  }

  std::string Logs() {
    return "--- agent (arm64, qemu)\n" + (agent_ ? agent_->Log() : std::string()) + "\n--- hub\n" +
           (hub_ ? hub_->Log() : std::string());
  }

  TempDir root_{"arm64-agent"};
  std::string hub_dir_ = root_ / "hub";
  std::string state_ = root_ / "agent";
  std::string config_ = root_ / "agent.yaml";
  std::string out_dir_;
  std::string agent_bin_;
  std::string qemu_;
  int broker_port_ = 0;
  int api_port_ = 0;
  int broker_starts_ = 0;
  std::unique_ptr<Process> broker_;
  std::unique_ptr<Process> hub_;
  std::unique_ptr<Process> agent_;
};

TEST_F(Arm64Agent, EnrollsConvergesAndSurvivesABrokerRestart) {
  std::string out;
  ASSERT_EQ(RunCommand(Agent({"version"}), &out), 0) << out;

  // Enrollment: token from the native hub, join by the arm64 agent.
  ASSERT_EQ(
      Ctl({"token", "create", "--ttl", "1h", "--uses", "1", "--label", "board=arm64", "-o", "json"},
          &out),
      0)
      << out;
  ASSERT_NE(out.find('{'), std::string::npos) << out;
  auto token = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
  ASSERT_TRUE(token.is_object()) << out;
  ASSERT_EQ(RunCommand(Agent({"join", "--hub", "https://localhost:" + std::to_string(api_port_),
                              "--token", token.value("token", ""), "--ca-hash",
                              token.value("caHash", ""), "--name", "arm-board"}),
                       &out, {}, std::chrono::seconds(120)),
            0)
      << out;
  struct stat st {};
  ASSERT_EQ(::stat((state_ + "/device.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Converges on the first generation.
  agent_ = std::make_unique<Process>(Agent({"run"}), root_ / "agent.log");
  ASSERT_NO_FATAL_FAILURE(Apply("one"));
  ASSERT_TRUE(WaitFor([&] { return Converged(1); }, std::chrono::seconds(120))) << Logs();
  EXPECT_TRUE(WaitFor([&] { return ReadFileOr(out_dir_ + "/greeting.txt") == "one\n"; })) << Logs();
  const int first = Status().value("appliedGeneration", 0);
  ASSERT_GE(first, 1);
  ASSERT_TRUE(WaitFor([&] { return HubObservedGeneration() == first; }, std::chrono::seconds(60)))
      << Logs();
  auto s = Status();
  EXPECT_EQ(s["deviceId"], "arm-board");
  EXPECT_EQ(s["daemon"], "running");

  // The broker goes away: the agent notices, its workload keeps running.
  const int pid = Workload(s).value("pid", 0);
  ASSERT_GT(pid, 1);
  broker_->Stop();
  broker_.reset();
  ASSERT_TRUE(WaitFor([&] { return Status().value("connection", "") == "disconnected"; },
                      std::chrono::seconds(90)))
      << Logs();
  EXPECT_EQ(::kill(pid, 0), 0);

  // It comes back: the agent reconnects, and a generation published after the
  // restart is applied and reported to the hub.
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  ASSERT_TRUE(WaitFor([&] { return Converged(first); }, std::chrono::seconds(120))) << Logs();
  ASSERT_NO_FATAL_FAILURE(Apply("two"));
  ASSERT_TRUE(WaitFor([&] { return Converged(first + 1); }, std::chrono::seconds(120))) << Logs();
  EXPECT_TRUE(WaitFor([&] { return ReadFileOr(out_dir_ + "/greeting.txt") == "two\n"; })) << Logs();
  const int second = Status().value("appliedGeneration", 0);
  EXPECT_GT(second, first);
  EXPECT_TRUE(WaitFor([&] { return HubObservedGeneration() == second; }, std::chrono::seconds(60)))
      << Logs();
}

}  // namespace
}  // namespace outpost::packaging
