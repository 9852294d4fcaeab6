#include "hub/sim/startup_probe.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace outpost::hub::sim {

namespace {

std::string Exe(int pid) {
  char buf[4096];
  ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<std::size_t>(n));
}

// Every child of every thread of `pid`.
std::vector<int> Children(int pid) {
  std::vector<int> out;
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(task_dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(task_dir + "/" + e->d_name + "/children");
    int c = 0;
    while (f >> c)
      out.push_back(c);
  }
  ::closedir(d);
  return out;
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

void Figure(const std::string& results, const char* name, double value, const char* unit,
            const std::string& note) {
  char line[512];
  std::snprintf(line, sizeof line, "%-34s %12.3f %-10s  # %s", name, value, unit, note.c_str());
  std::printf("%s\n", line);
  std::fflush(stdout);
  if (!results.empty()) std::ofstream(results, std::ios::app) << line << "\n";
}

}  // namespace

int MeasureAgentStartup(const StartupOptions& o) {
  if (o.argv.empty()) {
    std::fprintf(stderr, "outpost-sim agent-startup: give the agent command after --\n");
    return 2;
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  ::signal(SIGPIPE, SIG_IGN);
  char real[4096];
  if (::realpath(o.argv[0].c_str(), real) == nullptr) {
    std::fprintf(stderr, "outpost-sim: %s not found\n", o.argv[0].c_str());
    return 2;
  }
  const std::string agent_exe = real;
  std::vector<double> samples;
  for (int run = 0; run < o.warmup + o.runs; ++run) {
    std::vector<char*> argv;
    for (const auto& a : o.argv)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const std::string log = o.log.empty() ? "/dev/null" : o.log;
    const auto t0 = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(real, argv.data());
      ::_exit(127);
    }
    if (pid < 0) {
      std::perror("fork");
      return 2;
    }
    std::set<int> launched;
    double took = -1;
    for (;;) {
      for (int c : Children(pid)) {
        if (launched.count(c)) continue;
        std::string exe = Exe(c);
        if (!exe.empty() && exe != agent_exe) launched.insert(c);
      }
      if (static_cast<int>(launched.size()) >= o.expect) {
        took = Ms(std::chrono::steady_clock::now() - t0);
        break;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        std::fprintf(stderr, "outpost-sim: the agent exited before launching its workloads\n");
        return 1;
      }
      if (Ms(std::chrono::steady_clock::now() - t0) > o.timeout_ms) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    // The workloads outlive the agent (KillMode=process); they are ours now.
    for (int c : launched)
      ::kill(c, SIGKILL);
    for (;;) {
      pid_t r = ::waitpid(-1, nullptr, 0);
      if (r <= 0) break;
    }
    if (took < 0) {
      std::fprintf(stderr, "outpost-sim: run %d: %zu of %d workloads after %d ms\n", run,
                   launched.size(), o.expect, o.timeout_ms);
      return 1;
    }
    if (run >= o.warmup) samples.push_back(took);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  std::ostringstream note;
  note << samples.size() << " runs, exec -> " << o.expect
       << " workloads exec'd, broker unreachable; min " << Quantile(samples, 0) << " max "
       << Quantile(samples, 1.0);
  Figure(o.results, "agent.startup_median_ms", Quantile(samples, 0.5), "ms", note.str());
  Figure(o.results, "agent.startup_p90_ms", Quantile(samples, 0.9), "ms", "");
  return 0;
}

}  // namespace outpost::hub::sim
