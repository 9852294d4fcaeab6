// The systemd units of packaging/systemd/: `systemd-analyze verify` accepts
// each of them without a single warning, and they carry the settings the
// packages rely on (docs/packaging.md).
//
// systemd is not PID 1 here; verify still loads unit files offline. It refuses
// an ExecStart= binary that does not exist, so each unit is verified as a copy
// in a TempDir whose /usr/bin/outpost-* paths point at the binaries of the
// build under test; nothing else in the unit text is changed.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace outpost::packaging {
namespace {

using outpost::testing::BinDir;
using outpost::testing::ReadFileOr;
using outpost::testing::RunCommand;
using outpost::testing::SourceDir;
using outpost::testing::TempDir;

const std::vector<std::string> kUnits = {"outpost-agent.service", "outpost-hub.service",
                                         "outpost-hub-mosquitto.service"};

std::string UnitText(const std::string& name) {
  return ReadFileOr(SourceDir() + "/packaging/systemd/" + name);
}

void ReplaceAll(std::string* text, const std::string& from, const std::string& to) {
  for (std::size_t at = text->find(from); at != std::string::npos;
       at = text->find(from, at + to.size())) {
    text->replace(at, from.size(), to);
  }
}

// Key=value pairs of one section, in order (a key may repeat).
std::vector<std::pair<std::string, std::string>> Settings(const std::string& text,
                                                          const std::string& section) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(text);
  std::string line;
  std::string current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      current = line.substr(1, line.size() - 2);
      continue;
    }
    auto eq = line.find('=');
    if (current == section && eq != std::string::npos)
      out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::string Get(const std::string& text, const std::string& section, const std::string& key) {
  std::string value;
  bool found = false;
  for (const auto& [k, v] : Settings(text, section))
    if (k == key) {
      value = v;  // the last one wins, as in systemd
      found = true;
    }
  return found ? value : "<unset>";
}

// Runs `systemd-analyze verify` on `files` (in `dir`); returns rc, fills output.
int Verify(const TempDir& dir, const std::vector<std::string>& files, std::string* output) {
  std::vector<std::string> argv = {"systemd-analyze", "verify", "--man=no"};
  for (const auto& f : files)
    argv.push_back(dir / f);
  return RunCommand(argv, output, {{"SYSTEMD_LOG_COLOR", "0"}}, std::chrono::seconds(60));
}

TEST(Units, EveryUnitPassesSystemdAnalyzeVerifyWithoutWarnings) {
  for (const char* bin : {"outpost-agent", "outpost-hub"}) {
    std::ifstream probe(BinDir() + "/" + bin);
    ASSERT_TRUE(probe.good()) << BinDir() << "/" << bin << " is missing: build it first";
  }
  TempDir dir("units");
  for (const auto& name : kUnits) {
    std::string text = UnitText(name);
    ASSERT_FALSE(text.empty()) << "packaging/systemd/" << name << " is missing";
    ReplaceAll(&text, "/usr/bin/outpost-agent", BinDir() + "/outpost-agent");
    ReplaceAll(&text, "/usr/bin/outpost-hub", BinDir() + "/outpost-hub");
    std::ofstream(dir / name) << text;
  }
  // All three together, so the hub's Wants=/After= on the broker unit resolve.
  std::string output;
  int rc = Verify(dir, kUnits, &output);
  EXPECT_EQ(rc, 0) << output;
  // verify exits 0 on unknown keys and unparsable values: any line is a defect.
  EXPECT_EQ(output, "") << "systemd-analyze verify complained:\n" << output;
}

TEST(Units, VerifyReportsWhatTheTestRejects) {
  // The check above relies on verify printing a line for a bad setting.
  TempDir dir("units-bad");
  std::ofstream(dir / "bad.service") << "[Service]\nExecStart=/bin/true\nKillMode=bogus\n";
  std::string output;
  Verify(dir, {"bad.service"}, &output);
  EXPECT_NE(output.find("bogus"), std::string::npos) << output;
}

TEST(Units, AgentRestartsAloneAndKeepsWorkloadsAndDevices) {
  const std::string unit = UnitText("outpost-agent.service");
  ASSERT_FALSE(unit.empty());
  const std::map<std::string, std::string> want = {
      {"Type", "notify"},
      {"ExecStart", "/usr/bin/outpost-agent run"},
      {"Restart", "always"},
      {"KillMode", "process"},
      {"StateDirectory", "outpost-agent"},
      {"StateDirectoryMode", "0700"},
      {"ConfigurationDirectory", "outpost"},
      {"Delegate", "yes"},
      {"NoNewPrivileges", "yes"},
  };
  for (const auto& [key, value] : want)
    EXPECT_EQ(Get(unit, "Service", key), value) << key;
  EXPECT_NE(Get(unit, "Service", "WatchdogSec"), "<unset>");
  EXPECT_EQ(Get(unit, "Install", "WantedBy"), "multi-user.target");
  EXPECT_EQ(Get(unit, "Unit", "ConditionPathExists"), "/var/lib/outpost-agent/device.crt");
  // Workloads inherit the sandbox: nothing that hides or denies /dev/video*,
  // /dev/nvidia* or makes the delegated cgroup read-only.
  for (const char* key :
       {"PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock", "ProtectKernelTunables",
        "ProtectControlGroups", "MemoryDenyWriteExecute", "PrivateTmp"}) {
    EXPECT_EQ(Get(unit, "Service", key), "<unset>") << key << " would break workloads";
  }
}

TEST(Units, HubAndItsBrokerRunUnprivilegedOnTheDataDirectory) {
  const std::string hub = UnitText("outpost-hub.service");
  const std::string broker = UnitText("outpost-hub-mosquitto.service");
  ASSERT_FALSE(hub.empty());
  ASSERT_FALSE(broker.empty());
  EXPECT_EQ(Get(hub, "Service", "ExecStart"),
            "/usr/bin/outpost-hub serve --data-dir /var/lib/outpost-hub");
  EXPECT_EQ(Get(broker, "Service", "ExecStart"),
            "/usr/sbin/mosquitto -c /var/lib/outpost-hub/mosquitto.conf");
  for (const auto* unit : {&hub, &broker}) {
    EXPECT_EQ(Get(*unit, "Service", "User"), "outpost-hub");
    EXPECT_EQ(Get(*unit, "Service", "StateDirectory"), "outpost-hub");
    EXPECT_EQ(Get(*unit, "Service", "CapabilityBoundingSet"), "");
    EXPECT_EQ(Get(*unit, "Service", "ProtectSystem"), "strict");
    EXPECT_EQ(Get(*unit, "Service", "ReadWritePaths"), "/var/lib/outpost-hub");
  }
  // The hub signals the broker (CRL reload): same user, and no PID isolation.
  EXPECT_EQ(Get(hub, "Service", "ProtectProc"), "<unset>");
  EXPECT_NE(Get(hub, "Unit", "Wants").find("outpost-hub-mosquitto.service"), std::string::npos);
  EXPECT_EQ(Get(broker, "Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
}

}  // namespace
}  // namespace outpost::packaging
