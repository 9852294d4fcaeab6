// The outpost-agent package on this machine, the way a store device lives
// with it: install, join a real hub, run a workload, upgrade to a rebuilt
// package with a higher version while the workload runs, restart the agent
// from the new binary, remove, reinstall, purge.
//
// It changes the machine (dpkg database, /usr/bin, /etc/outpost, users), so it
// runs as root only, refuses to start when any trace of the package is already
// there, and puts everything back even when an assertion fails (Machine's
// destructor): afterwards /etc/passwd and /etc/group are byte for byte what
// they were.
//
// The packages are built by packaging/deb/build-debs.sh from the binaries of
// the build under test (no second compile). systemd is not PID 1 here, so the
// maintainer scripts' deb-systemd-invoke calls are no-ops; what systemd would
// do on upgrade (SIGTERM to the main process only, KillMode=process, then a
// start of the new binary) the test does itself.
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace outpost::packaging {
namespace {

using outpost::testing::BinDir;
using outpost::testing::FreePort;
using outpost::testing::Process;
using outpost::testing::ReadFileOr;
using outpost::testing::RemoveTree;
using outpost::testing::RunCommand;
using outpost::testing::SourceDir;
using outpost::testing::TempDir;
using outpost::testing::WaitFor;

constexpr const char* kPackage = "outpost-agent";
constexpr const char* kAgent = "/usr/bin/outpost-agent";
constexpr const char* kStateDir = "/var/lib/outpost-agent";
constexpr const char* kWorkloadHome = "/var/lib/outpost";
constexpr const char* kConfig = "/etc/outpost/agent.yaml";
constexpr const char* kUnit = "/lib/systemd/system/outpost-agent.service";
constexpr const char* kWantsLink =
    "/etc/systemd/system/multi-user.target.wants/outpost-agent.service";
constexpr const char* kUser = "outpost";
// The hub names workloads "<application>.<workload>".
constexpr const char* kWorkload = "pkg-app.sleeper";

// Every path the package or its scripts create; none may exist before.
const std::vector<std::string> kTraces = {
    kAgent,
    kStateDir,
    kWorkloadHome,
    "/etc/outpost",
    kUnit,
    kWantsLink,
    "/etc/systemd/system/outpost-agent.service",  // a mask, between remove and purge
    "/var/lib/systemd/deb-systemd-helper-enabled/outpost-agent.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/outpost-agent.service",
    "/var/lib/systemd/deb-systemd-helper-masked/outpost-agent.service",
    "/usr/share/doc/outpost-agent",
    "/usr/share/man/man1/outpost-agent.1.gz"};

const std::map<std::string, std::string> kDpkgEnv = {{"DEBIAN_FRONTEND", "noninteractive"}};

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// "ii", "rc", ... or "" when dpkg does not know the package at all.
std::string PackageStatus() {
  std::string out;
  if (RunCommand({"dpkg-query", "-W", "-f=${db:Status-Abbrev}", kPackage}, &out) != 0) return "";
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out == "un" ? "" : out;
}

std::string PackageField(const std::string& field) {
  std::string out;
  RunCommand({"dpkg-query", "-W", "-f=${" + field + "}", kPackage}, &out);
  return out;
}

bool UserExists(const char* name) {
  return ::getpwnam(name) != nullptr;
}
bool GroupExists(const char* name) {
  return ::getgrnam(name) != nullptr;
}

std::string Sha256(const std::string& path) {
  std::string out;
  if (RunCommand({"sha256sum", path}, &out) != 0) return "error: " + out;
  return out.substr(0, 64);
}

// The .deb that build-debs.sh left in `dir`.
std::string FindDeb(const std::string& dir) {
  std::string found;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.starts_with(std::string(kPackage) + "_") && name.ends_with(".deb")) found = name;
    }
    ::closedir(d);
  }
  return found.empty() ? "" : dir + "/" + found;
}

std::string ProjectVersion() {
  std::smatch m;
  std::string cmake = ReadFileOr(SourceDir() + "/CMakeLists.txt");
  if (!std::regex_search(cmake, m, std::regex(R"(project\(outpost VERSION ([0-9.]+))"))) return "";
  return m[1];
}

std::string DpkgArch() {
  std::string out;
  RunCommand({"dpkg", "--print-architecture"}, &out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

struct FileInfo {
  bool exists = false;
  mode_t type = 0;
  mode_t perm = 0;
  std::string owner, group;
};

FileInfo Info(const std::string& path) {
  FileInfo i;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return i;
  i.exists = true;
  i.type = st.st_mode & S_IFMT;
  i.perm = st.st_mode & 07777;
  if (passwd* pw = ::getpwuid(st.st_uid)) i.owner = pw->pw_name;
  if (group* gr = ::getgrgid(st.st_gid)) i.group = gr->gr_name;
  return i;
}

::testing::AssertionResult HasMode(const std::string& path, mode_t type, mode_t perm,
                                   const std::string& owner, const std::string& group) {
  FileInfo i = Info(path);
  if (!i.exists) return ::testing::AssertionFailure() << path << " does not exist";
  if (i.type != type || i.perm != perm || i.owner != owner || i.group != group) {
    return ::testing::AssertionFailure()
           << path << ": type " << std::oct << i.type << " mode " << i.perm << std::dec << " "
           << i.owner << ":" << i.group << ", want type " << std::oct << type << " mode " << perm
           << std::dec << " " << owner << ":" << group;
  }
  return ::testing::AssertionSuccess();
}

// What this test does to the machine, and how it undoes it.
class Machine {
 public:
  // Empty when the machine is clean; otherwise why the test must not run.
  static std::string WhyNotClean() {
    if (::geteuid() != 0) return "the package test installs with dpkg and must run as root";
    if (std::string s = PackageStatus(); !s.empty())
      return std::string(kPackage) + " is already known to dpkg (status '" + s +
             "'); this test installs and purges it, so it refuses to touch an existing "
             "installation. Purge it first: dpkg --purge " +
             kPackage;
    for (const auto& p : kTraces)
      if (Exists(p)) return p + " already exists; the test would delete it at the end";
    if (UserExists(kUser) || GroupExists(kUser))
      return std::string("user or group '") + kUser + "' already exists";
    return "";
  }

  Machine()
      : passwd_(ReadFileOr("/etc/passwd")),
        group_(ReadFileOr("/etc/group")),
        shadow_(ReadFileOr("/etc/shadow")),
        gshadow_(ReadFileOr("/etc/gshadow")) {}

  ~Machine() { Restore(); }

  // Processes of workloads the agent started (own process groups; the agent
  // leaves them running on purpose).
  void AddWorkload(int pid) { workloads_.push_back(pid); }

  void KillWorkloads() {
    for (int pid : workloads_) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
    for (int pid : workloads_)
      WaitFor([&] { return ::kill(pid, 0) != 0; });
    workloads_.clear();
  }

  void Restore() {
    KillWorkloads();
    if (!PackageStatus().empty()) {
      if (RunCommand({"dpkg", "--purge", kPackage}, nullptr, kDpkgEnv) != 0)
        RunCommand({"dpkg", "--purge", "--force-all", kPackage}, nullptr, kDpkgEnv);
    }
    // Whatever a failed purge left behind (none of it existed before).
    for (const auto& p : kTraces)
      if (Exists(p)) RemoveTree(p);
    if (UserExists(kUser)) RunCommand({"userdel", kUser});
    if (GroupExists(kUser)) RunCommand({"groupdel", kUser});
  }

  bool UsersAsFound() const {
    return ReadFileOr("/etc/passwd") == passwd_ && ReadFileOr("/etc/group") == group_ &&
           ReadFileOr("/etc/shadow") == shadow_ && ReadFileOr("/etc/gshadow") == gshadow_;
  }

 private:
  std::string passwd_, group_, shadow_, gshadow_;
  std::vector<int> workloads_;
};

class DebLifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = Machine::WhyNotClean();
    if (!why.empty()) GTEST_FAIL() << why;
    machine_ = std::make_unique<Machine>();
    for (const char* b : {"outpost-agent", "outpost-hub", "outpostctl"})
      ASSERT_TRUE(Exists(BinDir() + "/" + b)) << BinDir() << "/" << b << " is missing";
    version_ = ProjectVersion();
    ASSERT_FALSE(version_.empty()) << "no project version in CMakeLists.txt";
    arch_ = DpkgArch();
    ASSERT_FALSE(arch_.empty());
    ASSERT_EQ(::chmod(root_.path().c_str(), 0755), 0);
  }

  void TearDown() override {
    agent_.reset();
    hub_.reset();
    broker_.reset();
    machine_.reset();  // purge, users back, nothing left
  }

  // Builds the agent package with Debian version `deb_version` from the
  // binaries under test; returns the .deb's path.
  std::string BuildPackage(const std::string& deb_version) {
    std::string work = root_ / ("pkg-" + deb_version);
    std::string out;
    int rc = RunCommand({SourceDir() + "/packaging/deb/build-debs.sh", "--prebuilt-bin", BinDir(),
                         "--agent-only", "--no-lintian", "--version", deb_version, "--work",
                         work + "/work", "--out", work + "/out", arch_},
                        &out, {}, std::chrono::seconds(300));
    EXPECT_EQ(rc, 0) << out;
    std::string deb = FindDeb(work + "/out");
    EXPECT_EQ(deb, work + "/out/" + kPackage + "_" + deb_version + "_" + arch_ + ".deb") << out;
    return deb;
  }

  int Dpkg(std::vector<std::string> args, std::string* out) {
    args.insert(args.begin(), "dpkg");
    return RunCommand(args, out, kDpkgEnv, std::chrono::seconds(120));
  }

  void StartHub() {
    int broker_port = FreePort();
    api_port_ = FreePort();
    std::string out;
    ASSERT_EQ(RunCommand({BinDir() + "/outpost-hub", "init", "--data-dir", hub_dir_, "--hostname",
                          "localhost", "--broker-port", std::to_string(broker_port), "--api-port",
                          std::to_string(api_port_)},
                         &out),
              0)
        << out;
    broker_ = std::make_unique<Process>(
        std::vector<std::string>{"mosquitto", "-c", hub_dir_ + "/mosquitto.conf"},
        root_ / "mosquitto.log");
    hub_ = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/outpost-hub", "serve", "--data-dir", hub_dir_},
        root_ / "hub.log");
    ASSERT_TRUE(WaitFor(
        [&] {
          return Ctl({"device", "list"}) == 0;
        },
        std::chrono::seconds(30)))
        << hub_->Log();
  }

  int Ctl(std::vector<std::string> args, std::string* out = nullptr) {
    std::vector<std::string> argv = {BinDir() + "/outpostctl", "--config", hub_dir_ + "/ctl.yaml"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, out, {}, std::chrono::seconds(30));
  }

  // The installed agent with its defaults: /var/lib/outpost-agent and
  // /etc/outpost/agent.yaml, as in the field.
  void StartAgent() {
    agent_ = std::make_unique<Process>(std::vector<std::string>{kAgent, "run"},
                                       root_ / ("agent-" + std::to_string(++agent_runs_) + ".log"));
  }

  nlohmann::json Status() {
    std::string out;
    if (RunCommand({kAgent, "status", "--json"}, &out) != 0) return nlohmann::json();
    auto j = nlohmann::json::parse(out, nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }

  static nlohmann::json Workload(const nlohmann::json& status) {
    if (!status.is_object() || !status.contains("workloads")) return nlohmann::json();
    for (const auto& w : status["workloads"])
      if (w.value("name", "") == kWorkload) return w;
    return nlohmann::json();
  }

  bool Converged() {
    auto s = Status();
    return s.is_object() && s.value("daemon", "") == "running" &&
           s.value("connection", "") == "connected" && s.value("desiredGeneration", 0) > 0 &&
           s.value("appliedGeneration", 0) == s.value("desiredGeneration", 0) &&
           Workload(s).value("state", "") == "running";
  }

  std::string Logs() {
    return "--- agent\n" + (agent_ ? agent_->Log() : std::string()) + "\n--- hub\n" +
           (hub_ ? hub_->Log() : std::string());
  }

  TempDir root_{"deb-lifecycle"};
  std::string hub_dir_ = root_ / "hub";
  std::string version_;
  std::string arch_;
  int api_port_ = 0;
  int agent_runs_ = 0;
  std::unique_ptr<Machine> machine_;
  std::unique_ptr<Process> broker_;
  std::unique_ptr<Process> hub_;
  std::unique_ptr<Process> agent_;
};

TEST_F(DebLifecycle, InstallJoinUpgradeRemovePurge) {
  // Two packages of the same build; the second one has a higher version.
  const std::string v2 = version_ + "+pkgtest1";
  std::string deb1 = BuildPackage(version_);
  std::string deb2 = BuildPackage(v2);
  ASSERT_FALSE(deb1.empty());
  ASSERT_FALSE(deb2.empty());
  std::string out;
  ASSERT_EQ(RunCommand({"dpkg", "--compare-versions", v2, "gt", version_}), 0);

  // ---- install ----------------------------------------------------------
  ASSERT_EQ(Dpkg({"-i", deb1}, &out), 0) << out;
  EXPECT_EQ(PackageStatus(), "ii");
  EXPECT_EQ(PackageField("Version"), version_);
  // Depends computed from the linked libraries (dpkg-shlibdeps).
  const std::string depends = PackageField("Depends");
  for (const char* lib : {"adduser", "libc6", "libsqlite3-0", "libssl3", "libpaho-mqttpp3-1"})
    EXPECT_NE(depends.find(lib), std::string::npos) << lib << " not in Depends: " << depends;
  EXPECT_NE(PackageField("Conffiles").find(kConfig), std::string::npos);

  EXPECT_TRUE(HasMode(kAgent, S_IFREG, 0755, "root", "root"));
  EXPECT_TRUE(HasMode(kConfig, S_IFREG, 0644, "root", "root"));
  EXPECT_TRUE(HasMode(kUnit, S_IFREG, 0644, "root", "root"));
  EXPECT_EQ(ReadFileOr(kUnit),
            ReadFileOr(SourceDir() + "/packaging/systemd/outpost-agent.service"));
  EXPECT_TRUE(HasMode("/usr/share/man/man1/outpost-agent.1.gz", S_IFREG, 0644, "root", "root"));
  EXPECT_TRUE(HasMode("/usr/share/doc/outpost-agent/copyright", S_IFREG, 0644, "root", "root"));
  // Enabled for boot by deb-systemd-helper (works without systemd running).
  EXPECT_TRUE(Exists(kWantsLink));
  // The workload user: a system account without login, in its own group,
  // with a private home for workload caches; the state dir is root's.
  passwd* pw = ::getpwnam(kUser);
  ASSERT_NE(pw, nullptr) << "postinst did not create the user " << kUser;
  const uid_t workload_uid = pw->pw_uid;
  EXPECT_LT(pw->pw_uid, 1000u);
  EXPECT_STREQ(pw->pw_shell, "/usr/sbin/nologin");
  EXPECT_STREQ(pw->pw_dir, kWorkloadHome);
  group* gr = ::getgrnam(kUser);
  ASSERT_NE(gr, nullptr);
  EXPECT_EQ(gr->gr_gid, pw->pw_gid);
  if (group* video = ::getgrnam("video")) {
    bool member = false;
    for (char** m = video->gr_mem; m && *m; ++m)
      member = member || std::string(*m) == kUser;
    EXPECT_TRUE(member) << kUser << " is not in the group video (cameras)";
  }
  EXPECT_TRUE(HasMode(kStateDir, S_IFDIR, 0700, "root", "root"));
  EXPECT_TRUE(HasMode(kWorkloadHome, S_IFDIR, 0750, kUser, kUser));

  ASSERT_EQ(RunCommand({kAgent, "version"}, &out), 0) << out;
  EXPECT_NE(out.find(version_), std::string::npos) << out;

  // ---- enroll with a real hub and run a workload ------------------------
  ASSERT_NO_FATAL_FAILURE(StartHub());
  ASSERT_EQ(
      Ctl({"token", "create", "--ttl", "1h", "--uses", "1", "--label", "role=pkg", "-o", "json"},
          &out),
      0)
      << out;
  ASSERT_NE(out.find('{'), std::string::npos) << out;
  auto token = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
  ASSERT_TRUE(token.is_object()) << out;
  ASSERT_EQ(RunCommand({kAgent, "join", "--hub", "https://localhost:" + std::to_string(api_port_),
                        "--token", token.value("token", ""), "--ca-hash", token.value("caHash", ""),
                        "--name", "pkg-test"},
                       &out),
            0)
      << out;
  EXPECT_TRUE(HasMode(std::string(kStateDir) + "/device.key", S_IFREG, 0600, "root", "root"));
  StartAgent();
  const std::string manifest = root_ / "app.yaml";
  std::ofstream(manifest) << "apiVersion: outpost.dev/v1alpha1\n"
                             "kind: EdgeApplication\n"
                             "metadata: {name: pkg-app}\n"
                             "spec:\n"
                             "  selector: {matchLabels: {role: pkg}}\n"
                             "  workloads:\n"
                             "    - name: sleeper\n"
                             "      kind: process\n"
                             "      command: [\"/bin/sleep\", \"100000\"]\n"
                             "      restartPolicy: Always\n";
  ASSERT_EQ(Ctl({"apply", "-f", manifest}, &out), 0) << out;
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(60))) << Logs();
  auto before = Status();
  const int workload_pid = Workload(before)["pid"].get<int>();
  ASSERT_GT(workload_pid, 1);
  machine_->AddWorkload(workload_pid);
  // The conffile's workload_user: the workload runs as the package's user.
  struct stat proc {};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(workload_pid)).c_str(), &proc), 0);
  EXPECT_EQ(proc.st_uid, workload_uid);

  std::map<std::string, std::string> identity;
  for (const char* f : {"device.key", "device.crt", "ca.crt", "agent.db"})
    identity[f] = Sha256(std::string(kStateDir) + "/" + f);
  identity["agent.db"] = "";  // changes while the agent runs; must only exist
  // A local edit of the conffile must survive the upgrade without a prompt.
  { std::ofstream(kConfig, std::ios::app) << "# local edit (packaging test)\n"; }
  const std::string edited_config = ReadFileOr(kConfig);

  // ---- upgrade while the agent and its workload run ----------------------
  ASSERT_EQ(Dpkg({"-i", deb2}, &out), 0) << out;
  EXPECT_EQ(PackageStatus(), "ii");
  EXPECT_EQ(PackageField("Version"), v2);
  EXPECT_EQ(ReadFileOr(kConfig), edited_config);
  for (const auto& [f, sum] : identity) {
    std::string path = std::string(kStateDir) + "/" + f;
    EXPECT_TRUE(Exists(path)) << path << " lost in the upgrade";
    if (!sum.empty()) {
      EXPECT_EQ(Sha256(path), sum) << path << " changed in the upgrade";
    }
  }
  EXPECT_TRUE(HasMode(kStateDir, S_IFDIR, 0700, "root", "root"));
  EXPECT_TRUE(HasMode(std::string(kStateDir) + "/device.key", S_IFREG, 0600, "root", "root"));
  EXPECT_EQ(::kill(workload_pid, 0), 0) << "the upgrade stopped the workload";
  // What systemd does after the upgrade (postinst: restart, KillMode=process):
  // SIGTERM to the agent alone, then the new binary starts and re-adopts.
  ASSERT_EQ(agent_->Stop(), 0) << Logs();
  EXPECT_EQ(::kill(workload_pid, 0), 0) << "stopping the agent stopped the workload";
  StartAgent();
  ASSERT_TRUE(WaitFor([&] { return Converged(); }, std::chrono::seconds(60))) << Logs();
  auto after = Status();
  EXPECT_EQ(after["deviceId"], before["deviceId"]);
  EXPECT_EQ(after["appliedGeneration"], before["appliedGeneration"]);
  EXPECT_EQ(Workload(after)["pid"], workload_pid) << "the workload was restarted, not adopted";
  EXPECT_EQ(Workload(after)["restarts"], 0);

  // ---- remove: the program goes, enrollment and the conffile stay --------
  ASSERT_EQ(agent_->Stop(), 0) << Logs();
  agent_.reset();
  // Under systemd the prerm stops the unit and SIGTERMs what is left in its
  // cgroup (the workloads); without systemd the test does that part.
  machine_->KillWorkloads();
  ASSERT_EQ(Dpkg({"-r", kPackage}, &out), 0) << out;
  EXPECT_EQ(PackageStatus(), "rc");
  EXPECT_FALSE(Exists(kAgent));
  EXPECT_FALSE(Exists(kUnit));
  EXPECT_EQ(ReadFileOr(kConfig), edited_config);
  EXPECT_TRUE(Exists(std::string(kStateDir) + "/device.key"));
  EXPECT_TRUE(UserExists(kUser));

  // A reinstall finds its enrollment again.
  ASSERT_EQ(Dpkg({"-i", deb2}, &out), 0) << out;
  auto reinstalled = Status();
  EXPECT_EQ(reinstalled["deviceId"], before["deviceId"]) << reinstalled.dump();
  EXPECT_EQ(reinstalled["daemon"], "not-running");

  // ---- purge: nothing is left --------------------------------------------
  ASSERT_EQ(Dpkg({"--purge", kPackage}, &out), 0) << out;
  EXPECT_EQ(PackageStatus(), "");
  for (const auto& p : kTraces)
    EXPECT_FALSE(Exists(p)) << p << " left behind by purge";
  EXPECT_FALSE(UserExists(kUser));
  EXPECT_FALSE(GroupExists(kUser));
  EXPECT_TRUE(machine_->UsersAsFound()) << "/etc/passwd, group, shadow or gshadow differ";
}

}  // namespace
}  // namespace outpost::packaging
