// Helpers for tests that use real files, ports and processes. Everything they
// create is removed by their destructors, also when an assertion fails.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace outpost::testing {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction
// unless OUTPOST_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "outpost-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void RemoveTree(const std::string& path);

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it
// back, close). Use for programs that cannot report the port they bound.
int FreePort();

// Polls `condition` every `interval` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition,
             std::chrono::milliseconds timeout = std::chrono::seconds(20),
             std::chrono::milliseconds interval = std::chrono::milliseconds(20));

// A child process in its own process group, stdout+stderr to `log_path`.
// The destructor kills the whole group (SIGTERM, then SIGKILL) and reaps it.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log_path,
          const std::map<std::string, std::string>& extra_env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();        // reaps if it exited
  void Signal(int sig);  // to the process group
  void Kill();           // SIGKILL to the group, reap
  // Sends SIGTERM and waits; returns the exit status (waitpid's) or -1.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Waits for it to exit on its own; -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  std::string Log() const;  // what it printed so far
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  bool reaped_ = false;
  std::string log_path_;
};

// Runs a command to completion; returns its exit code (or 128+signal) and
// fills `output` with stdout+stderr.
int RunCommand(const std::vector<std::string>& argv, std::string* output = nullptr,
               const std::map<std::string, std::string>& extra_env = {},
               std::chrono::milliseconds timeout = std::chrono::seconds(120));

// Directory of the built binaries (OUTPOST_BIN_DIR, set by ctest).
std::string BinDir();
// The source tree (OUTPOST_SOURCE_DIR, set by ctest).
std::string SourceDir();

std::string ReadFileOr(const std::string& path, const std::string& fallback = "");

}  // namespace outpost::testing
