// The operating-system layer of the workload runtime: everything the
// supervisor does to processes, files and cgroups goes through ProcessOps, so
// the supervisor runs against the real Linux implementation in production and
// against fakes (or the real one, on real child processes) in tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::agent {

// A resolved account a workload runs as (looked up in the parent, because
// getpwnam is not async-signal-safe and must not run between fork and exec).
struct UserIds {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
  std::string home;
};

// Everything needed to start one workload process. The child gets its own
// session (and so its own process group, pgid == pid), stdin /dev/null, and
// stdout+stderr appended to `log_path`.
struct SpawnRequest {
  std::vector<std::string> argv;      // argv[0]: an absolute path (resolved by the caller)
  std::vector<std::string> env;       // "KEY=VALUE", the complete environment
  std::string working_dir;            // empty: "/"
  std::string log_path;               // opened O_APPEND|O_CREAT by the parent, mode 0640
  std::optional<UserIds> user;        // switch to this account (needs root); none: stay
  std::string cgroup_dir;             // non-empty: the child joins this cgroup v2 before exec
  std::uint64_t rlimit_as_bytes = 0;  // non-zero: RLIMIT_AS for the child
  // Called in the parent after fork, while the child waits before doing
  // anything: the caller records the pid (and the child's start time) where
  // a restarted agent will find it. Only then does the child go on to exec.
  // A child whose parent dies before that (the agent SIGKILLed between fork
  // and the record) exits without running the workload, so no process is
  // ever left running unrecorded to be started a second time. Every
  // ProcessOps calls it exactly once when it created a process (fakes too).
  std::function<void(pid_t pid, std::uint64_t start_time_ticks)> before_exec;
};

struct SpawnedProcess {
  pid_t pid = 0;
  std::uint64_t start_time_ticks = 0;  // field 22 of /proc/<pid>/stat
};

// How a watched process ended.
struct ExitStatus {
  bool known = false;  // false: not our child (adopted), the status is lost
  int code = 0;        // exit status >= 0, or -signal
};

// Where a workload's cgroup is and what it enforces.
struct CgroupPlacement {
  std::string dir;  // the workload's cgroup directory (empty: none)
};

class ProcessOps {
 public:
  virtual ~ProcessOps() = default;

  // fork + exec. Returns only after the child has exec'd or failed to:
  // a failing exec (or chdir, setuid, ...) is reported through a CLOEXEC
  // pipe as an error like "exec /opt/x: No such file or directory", and the
  // failed child has been reaped.
  virtual Result<SpawnedProcess> Spawn(const SpawnRequest& request) = 0;

  // kill(-pgid, sig); ESRCH is success (already gone).
  virtual Status KillGroup(pid_t pgid, int sig) = 0;

  // A file descriptor that becomes readable when `pid` exits (pidfd_open),
  // owned by the caller. Fakes may return any pollable fd (e.g. a pipe).
  virtual Result<int> OpenExitFd(pid_t pid) = 0;

  // Reaps an exited process. For our own children the status is known; for
  // an adopted process (not our child, ECHILD) `known` is false.
  // kUnavailable when the process has not exited yet.
  virtual Result<ExitStatus> Reap(pid_t pid, int exit_fd) = 0;

  // Start time of a live process (/proc/<pid>/stat field 22, clock ticks
  // since boot); kNotFound when no such process (or a zombie).
  virtual Result<std::uint64_t> StartTime(pid_t pid) = 0;

  // Whether a path exists (device nodes for `devices`).
  virtual bool Exists(const std::string& path) = 0;

  // The agent's effective uid (0: root, then workloads switch user).
  virtual uid_t EffectiveUid() = 0;
  virtual Result<UserIds> LookupUser(const std::string& name) = 0;

  // Creates (or reuses) `<root>/<name>` as a cgroup v2 with memory.max
  // (memory_bytes, 0 = "max") and cpu.max (milli_cpus, 0 = "max"), enabling
  // the controllers in `root`'s subtree_control. An error when cgroup v2 is
  // not available or not writable there: the caller falls back to rlimits.
  virtual Result<CgroupPlacement> PrepareCgroup(const std::string& root, const std::string& name,
                                                std::uint64_t memory_bytes,
                                                std::uint32_t milli_cpus) = 0;
  // Removes `<root>/<name>` (after its processes exited); best effort.
  virtual void RemoveCgroup(const std::string& root, const std::string& name) = 0;
};

// The real Linux implementation (fork/exec, pidfd_open, waitid, /proc, cgroupfs).
std::unique_ptr<ProcessOps> NewLinuxProcessOps();

// The cgroup root to use when RuntimeConfig::cgroup_root is empty: a writable
// cgroup v2 hierarchy's "outpost" directory (/sys/fs/cgroup/outpost on a
// unified hierarchy), or "" when there is none.
std::string DetectCgroupRoot();

}  // namespace outpost::agent
