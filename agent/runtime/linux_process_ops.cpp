// The Linux ProcessOps: fork/exec with only async-signal-safe calls in the
// child, pidfd_open/waitid for exit, /proc for start times, cgroupfs.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "agent/runtime/process_ops.hpp"
#include "shared/core/fs.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace outpost::agent {

namespace {

// What the child reports through the error pipe before it exits.
struct ChildError {
  int step;
  int err;
};

enum Step : int { kSetsid = 1, kCgroup, kRlimit, kStdio, kChdir, kGroups, kGid, kUid, kExec };

const char* StepName(int step) {
  switch (step) {
    case kSetsid:
      return "setsid";
    case kCgroup:
      return "join cgroup";
    case kRlimit:
      return "setrlimit";
    case kStdio:
      return "redirect stdio";
    case kChdir:
      return "chdir";
    case kGroups:
      return "setgroups";
    case kGid:
      return "setgid";
    case kUid:
      return "setuid";
    case kExec:
      return "exec";
  }
  return "spawn";
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// argv[0] without a '/' is looked up on the workload's PATH (in the parent:
// execvpe is not async-signal-safe).
std::string ResolveProgram(const std::string& program, const std::vector<std::string>& env) {
  if (program.find('/') != std::string::npos) return program;
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& kv : env) {
    if (kv.rfind("PATH=", 0) == 0) path = kv.substr(5);
  }
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (!dir.empty()) {
      std::string candidate = dir + "/" + program;
      if (IsExecutableFile(candidate)) return candidate;
    }
    start = end + 1;
  }
  return "";
}

[[noreturn]] void ChildFail(int fd, int step) {
  ChildError e{step, errno};
  ssize_t n = ::write(fd, &e, sizeof e);
  (void)n;
  ::_exit(127);
}

Status WriteSmallFile(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + path, errno);
  ssize_t n = ::write(fd, data.data(), data.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(data.size())) return ErrnoError("write " + path, err);
  return OkStatus();
}

bool IsCgroup2(const std::string& path) {
  struct statfs sfs {};
  if (::statfs(path.c_str(), &sfs) != 0) return false;
  return static_cast<unsigned long>(sfs.f_type) == static_cast<unsigned long>(CGROUP2_SUPER_MAGIC);
}

class LinuxProcessOps final : public ProcessOps {
 public:
  Result<SpawnedProcess> Spawn(const SpawnRequest& req) override {
    if (req.argv.empty() || req.argv[0].empty()) {
      return Error(Errc::kInvalidArgument, "empty command");
    }
    std::string program = ResolveProgram(req.argv[0], req.env);
    if (program.empty()) {
      return Error(Errc::kNotFound, "exec " + req.argv[0] + ": not found on PATH");
    }

    // Everything the child needs is prepared here, before fork.
    Fd log(::open(req.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (log.get() < 0) return ErrnoError("open log " + req.log_path, errno);
    Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (devnull.get() < 0) return ErrnoError("open /dev/null", errno);
    Fd cgroup_procs;
    if (!req.cgroup_dir.empty()) {
      std::string procs = req.cgroup_dir + "/cgroup.procs";
      cgroup_procs.Reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
      if (cgroup_procs.get() < 0) return ErrnoError("open " + procs, errno);
    }
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return ErrnoError("pipe2", errno);
    Fd err_read(pipefd[0]);
    Fd err_write(pipefd[1]);
    // The gate: the child waits for one byte before it does anything, sent
    // once before_exec has recorded it; EOF (the agent died first) ends it.
    int gatefd[2];
    if (::pipe2(gatefd, O_CLOEXEC) != 0) return ErrnoError("pipe2", errno);
    Fd gate_read(gatefd[0]);
    Fd gate_write(gatefd[1]);

    std::vector<char*> argv;
    argv.reserve(req.argv.size() + 1);
    for (const auto& a : req.argv)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    envp.reserve(req.env.size() + 1);
    for (const auto& e : req.env)
      envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const char* workdir = req.working_dir.empty() ? "/" : req.working_dir.c_str();
    const char* prog = program.c_str();
    const bool switch_user = req.user.has_value();
    const uid_t uid = switch_user ? req.user->uid : 0;
    const gid_t gid = switch_user ? req.user->gid : 0;
    const std::vector<gid_t> groups = switch_user ? req.user->groups : std::vector<gid_t>{};
    const rlim_t as_bytes = static_cast<rlim_t>(req.rlimit_as_bytes);
    sigset_t all;
    sigfillset(&all);
    sigset_t old;
    // Block signals across fork so no agent handler runs in the child.
    pthread_sigmask(SIG_SETMASK, &all, &old);

    pid_t pid = ::fork();
    if (pid == 0) {
      // Child: async-signal-safe calls only.
      const int efd = err_write.get();
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int s = 1; s < NSIG; ++s)
        ::sigaction(s, &dfl, nullptr);  // EINVAL for some: fine
      ::close(gate_write.get());        // or EOF never comes when the agent dies
      char go = 0;
      ssize_t got;
      do {
        got = ::read(gate_read.get(), &go, 1);
      } while (got < 0 && errno == EINTR);
      if (got != 1) ::_exit(127);  // the agent died before recording us
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (::setsid() < 0) ChildFail(efd, kSetsid);
      if (cgroup_procs.get() >= 0 && ::write(cgroup_procs.get(), "0", 1) != 1) {
        ChildFail(efd, kCgroup);
      }
      if (as_bytes > 0) {
        struct rlimit rl {
          as_bytes, as_bytes
        };
        if (::setrlimit(RLIMIT_AS, &rl) != 0) ChildFail(efd, kRlimit);
      }
      if (::dup2(devnull.get(), 0) < 0 || ::dup2(log.get(), 1) < 0 || ::dup2(log.get(), 2) < 0) {
        ChildFail(efd, kStdio);
      }
      // Every other descriptor the agent holds closes at exec.
      ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
      if (::chdir(workdir) != 0) ChildFail(efd, kChdir);
      if (switch_user) {
        if (::setgroups(groups.size(), groups.data()) != 0) ChildFail(efd, kGroups);
        if (::setgid(gid) != 0) ChildFail(efd, kGid);
        if (::setuid(uid) != 0) ChildFail(efd, kUid);
      }
      ::execve(prog, argv.data(), envp.data());
      ChildFail(efd, kExec);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return ErrnoError("fork", fork_errno);
    err_write.Reset();
    gate_read.Reset();
    // Read once, before exec (a process keeps its start time across exec).
    const auto start = StartTime(pid);
    const std::uint64_t start_ticks = start.ok() ? *start : 0;
    if (req.before_exec) req.before_exec(pid, start_ticks);
    const char go = 1;
    ssize_t w;
    do {
      w = ::write(gate_write.get(), &go, 1);
    } while (w < 0 && errno == EINTR);
    gate_write.Reset();
    // w != 1: the child is gone already; its exit is reported as usual.

    ChildError ce{};
    ssize_t n;
    do {
      n = ::read(err_read.get(), &ce, sizeof ce);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof ce)) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      std::string what = StepName(ce.step);
      if (ce.step == kExec) what += " " + program;
      if (ce.step == kChdir) what += " " + std::string(workdir);
      if (ce.step == kUid || ce.step == kGid) {
        what += " " + (req.user ? req.user->name : std::string("?"));
      }
      Errc code = ce.err == ENOENT                        ? Errc::kNotFound
                  : (ce.err == EACCES || ce.err == EPERM) ? Errc::kPermissionDenied
                                                          : Errc::kIo;
      return Error(code, what + ": " + std::strerror(ce.err));
    }
    SpawnedProcess out;
    out.pid = pid;
    out.start_time_ticks = start_ticks;
    return out;
  }

  Status KillGroup(pid_t pgid, int sig) override {
    if (pgid <= 1) return Error(Errc::kInvalidArgument, "refusing to signal pgid <= 1");
    if (::kill(-pgid, sig) != 0 && errno != ESRCH) {
      return ErrnoError("kill -" + std::to_string(pgid), errno);
    }
    return OkStatus();
  }

  Result<int> OpenExitFd(pid_t pid) override {
    long fd = ::syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return ErrnoError("pidfd_open " + std::to_string(pid), errno);
    int ifd = static_cast<int>(fd);
    ::fcntl(ifd, F_SETFD, FD_CLOEXEC);
    return ifd;
  }

  Result<ExitStatus> Reap(pid_t pid, int exit_fd) override {
    siginfo_t info{};
    int rc;
    do {
      rc = exit_fd >= 0 ? ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(exit_fd),
                                   &info, WEXITED | WNOHANG)
                        : ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno == EINVAL && exit_fd >= 0) {  // kernel without P_PIDFD (< 5.4)
      do {
        rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG);
      } while (rc < 0 && errno == EINTR);
    }
    if (rc < 0) {
      if (errno == ECHILD) return ExitStatus{false, -1};  // not our child (adopted)
      return ErrnoError("waitid " + std::to_string(pid), errno);
    }
    if (info.si_pid == 0) return Error(Errc::kUnavailable, "process still running");
    ExitStatus st;
    st.known = true;
    st.code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return st;
  }

  Result<std::uint64_t> StartTime(pid_t pid) override {
    auto text = fs::ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096);
    if (!text.ok()) return Error(Errc::kNotFound, "no process " + std::to_string(pid));
    // The comm field may contain spaces and ')': parse after the last ')'.
    auto close = text->rfind(')');
    if (close == std::string::npos) return Error(Errc::kCorrupt, "bad /proc stat");
    std::string rest = text->substr(close + 1);
    // rest: " S ppid ..." -> field 3 is the state; starttime is field 22.
    std::vector<std::string> fields;
    std::size_t i = 0;
    while (i < rest.size() && fields.size() < 20) {
      while (i < rest.size() && rest[i] == ' ')
        ++i;
      std::size_t j = i;
      while (j < rest.size() && rest[j] != ' ')
        ++j;
      if (j > i) fields.push_back(rest.substr(i, j - i));
      i = j;
    }
    if (fields.size() < 20) return Error(Errc::kCorrupt, "short /proc stat");
    if (fields[0] == "Z" || fields[0] == "X") {
      return Error(Errc::kNotFound, "process " + std::to_string(pid) + " has exited");
    }
    try {
      return static_cast<std::uint64_t>(std::stoull(fields[19]));
    } catch (...) {
      return Error(Errc::kCorrupt, "bad start time in /proc stat");
    }
  }

  bool Exists(const std::string& path) override {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
  }

  uid_t EffectiveUid() override { return ::geteuid(); }

  Result<UserIds> LookupUser(const std::string& name) override {
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != 0) return ErrnoError("looking up user " + name, rc);
    if (!found) return Error(Errc::kNotFound, "no such user: " + name);
    UserIds ids;
    ids.name = name;
    ids.uid = pw.pw_uid;
    ids.gid = pw.pw_gid;
    ids.home = pw.pw_dir ? pw.pw_dir : "/";
    int ngroups = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(ngroups));
    if (::getgrouplist(name.c_str(), pw.pw_gid, groups.data(), &ngroups) < 0) {
      groups.resize(static_cast<std::size_t>(ngroups));
      if (::getgrouplist(name.c_str(), pw.pw_gid, groups.data(), &ngroups) < 0) ngroups = 0;
    }
    groups.resize(static_cast<std::size_t>(std::max(ngroups, 0)));
    ids.groups = std::move(groups);
    return ids;
  }

  Result<CgroupPlacement> PrepareCgroup(const std::string& root, const std::string& name,
                                        std::uint64_t memory_bytes,
                                        std::uint32_t milli_cpus) override {
    if (root.empty()) return Error(Errc::kFailedPrecondition, "no cgroup root");
    std::string parent = fs::DirName(root);
    if (!IsCgroup2(fs::Exists(root) ? root : parent)) {
      return Error(Errc::kFailedPrecondition, root + " is not on a cgroup v2 hierarchy");
    }
    if (::mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir " + root, errno);
    }
    std::string controllers;
    if (memory_bytes > 0) controllers += "+memory";
    if (milli_cpus > 0) controllers += std::string(controllers.empty() ? "" : " ") + "+cpu";
    if (!controllers.empty()) {
      OUTPOST_TRY(WriteSmallFile(root + "/cgroup.subtree_control", controllers));
    }
    std::string dir = root + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir " + dir, errno);
    }
    if (memory_bytes > 0) {
      OUTPOST_TRY(WriteSmallFile(dir + "/memory.max", std::to_string(memory_bytes)));
    } else if (fs::Exists(dir + "/memory.max")) {
      OUTPOST_TRY(WriteSmallFile(dir + "/memory.max", "max"));
    }
    if (milli_cpus > 0) {
      // quota per 100 ms period: 1500 milli-CPUs -> "150000 100000".
      OUTPOST_TRY(WriteSmallFile(dir + "/cpu.max",
                                 std::to_string(std::uint64_t{milli_cpus} * 100) + " 100000"));
    } else if (fs::Exists(dir + "/cpu.max")) {
      OUTPOST_TRY(WriteSmallFile(dir + "/cpu.max", "max 100000"));
    }
    return CgroupPlacement{dir};
  }

  void RemoveCgroup(const std::string& root, const std::string& name) override {
    if (root.empty()) return;
    std::string dir = root + "/" + name;
    ::rmdir(dir.c_str());  // fails while processes remain: fine (best effort)
  }
};

}  // namespace

std::unique_ptr<ProcessOps> NewLinuxProcessOps() {
  return std::make_unique<LinuxProcessOps>();
}

std::string DetectCgroupRoot() {
  const std::string base = "/sys/fs/cgroup";
  if (!IsCgroup2(base) || !fs::Exists(base + "/cgroup.controllers")) return "";
  if (::access(base.c_str(), W_OK) != 0) return "";
  auto controllers = fs::ReadFile(base + "/cgroup.controllers", 4096);
  if (!controllers.ok()) return "";
  if (controllers->find("memory") == std::string::npos &&
      controllers->find("cpu") == std::string::npos) {
    return "";
  }
  return base + "/outpost";
}

}  // namespace outpost::agent
