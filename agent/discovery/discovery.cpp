#include "agent/discovery/discovery.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"

namespace outpost::agent {

namespace v1 = outpost::v1;

namespace {

constexpr std::size_t kSmallFile = 64 * 1024;
constexpr std::size_t kSmiMaxOutput = 64 * 1024;

std::string Trim(std::string_view s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])))
    ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])))
    --e;
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// "<prefix><digits>" -> digits as a number; -1 otherwise.
long NumberAfter(const std::string& name, std::string_view prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  long n = 0;
  for (std::size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
    n = n * 10 + (name[i] - '0');
    if (n > 1000000) return -1;
  }
  return n;
}

std::string ReadSmall(const std::string& path) {
  auto r = fs::ReadFile(path, kSmallFile);
  return r.ok() ? *r : std::string();
}

bool ParseUint(const std::string& s, std::uint64_t* out) {
  std::string t = Trim(s);
  if (t.empty() || t.size() > 19) return false;
  std::uint64_t v = 0;
  for (char c : t) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

struct ProcGpu {
  std::uint64_t minor = 0;
  bool has_minor = false;
  std::string model;
  std::string uuid;
};

std::vector<ProcGpu> ReadProcGpus(const std::string& proc_root) {
  std::vector<ProcGpu> out;
  std::string dir = fs::Join(proc_root, "driver/nvidia/gpus");
  for (const auto& bus : ListDir(dir)) {
    std::string text = ReadSmall(fs::Join(fs::Join(dir, bus), "information"));
    if (text.empty()) continue;
    ProcGpu g;
    for (const auto& line : Lines(text)) {
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string key = Trim(std::string_view(line).substr(0, colon));
      std::string value = Trim(std::string_view(line).substr(colon + 1));
      if (key == "Model") {
        g.model = value;
      } else if (key == "GPU UUID") {
        g.uuid = value;
      } else if (key == "Device Minor") {
        g.has_minor = ParseUint(value, &g.minor);
      }
    }
    if (g.has_minor || !g.uuid.empty()) out.push_back(g);
  }
  return out;
}

std::string FindOnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty()) {
      std::string candidate = dir + "/" + program;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    start = end + 1;
  }
  return "";
}

// Runs argv with stdout captured (at most max_bytes) for at most `timeout`;
// false on a failure to start, a timeout (the child is killed) or a non-zero exit.
bool RunCaptured(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                 std::size_t max_bytes, std::string* out) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 2);
    }
    ::dup2(fds[1], 1);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (devnull >= 0) ::close(devnull);
  if (pid < 0) {
    ::close(fds[0]);
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      timed_out = true;
      break;
    }
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::size_t room = max_bytes > out->size() ? max_bytes - out->size() : 0;
    out->append(buf, std::min(room, static_cast<std::size_t>(n)));
  }
  ::close(fds[0]);
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    log::Warn("discovery: ", argv[0], " did not finish within ", timeout.count(), " ms");
    return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<v1::Gpu> RunNvidiaSmi(const DiscoveryRoots& roots) {
  if (roots.nvidia_smi == "-") return {};
  std::string smi = roots.nvidia_smi.empty() ? FindOnPath("nvidia-smi") : roots.nvidia_smi;
  if (smi.empty() || ::access(smi.c_str(), X_OK) != 0) return {};
  std::string out;
  if (!RunCaptured(
          {smi, "--query-gpu=index,name,uuid,memory.total", "--format=csv,noheader,nounits"},
          roots.nvidia_smi_timeout, kSmiMaxOutput, &out)) {
    log::Debug("discovery: nvidia-smi failed");
    return {};
  }
  return ParseNvidiaSmiCsv(out);
}

std::string FixedString(const __u8* data, std::size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  return Trim(std::string_view(p, ::strnlen(p, size)));
}

std::string ArchName() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__arm__) && defined(__ARM_PCS_VFP)
  return "armhf";
#elif defined(__arm__)
  return "armel";
#elif defined(__i386__)
  return "i386";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
  return "unknown";
#endif
}

}  // namespace

std::vector<v1::Gpu> ParseNvidiaSmiCsv(const std::string& csv) {
  std::vector<v1::Gpu> out;
  for (const auto& line : Lines(csv)) {
    std::vector<std::string> cols;
    std::size_t start = 0;
    for (;;) {
      std::size_t comma = line.find(',', start);
      cols.push_back(Trim(std::string_view(line).substr(
          start, comma == std::string::npos ? std::string::npos : comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (cols.size() < 4) continue;
    std::uint64_t index = 0;
    if (!ParseUint(cols[0], &index) || index > 1024) continue;
    v1::Gpu g;
    g.set_index(static_cast<std::uint32_t>(index));
    g.set_name(cols[1].substr(0, 256));
    g.set_uuid(cols[2].substr(0, 128));
    std::uint64_t mem = 0;
    if (ParseUint(cols[3], &mem)) g.set_memory_mib(mem);
    out.push_back(std::move(g));
    if (out.size() >= 64) break;
  }
  return out;
}

std::string ParseNvidiaDriverVersion(const std::string& text) {
  auto lines = Lines(text);
  std::string first = lines.empty() ? "" : lines[0];
  std::size_t i = 0;
  while (i < first.size()) {
    while (i < first.size() && std::isspace(static_cast<unsigned char>(first[i])))
      ++i;
    std::size_t j = i;
    while (j < first.size() && !std::isspace(static_cast<unsigned char>(first[j])))
      ++j;
    std::string tok = first.substr(i, j - i);
    bool digits_and_dots = !tok.empty() && std::isdigit(static_cast<unsigned char>(tok[0])) &&
                           tok.find('.') != std::string::npos &&
                           std::all_of(tok.begin(), tok.end(), [](char c) {
                             return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
                           });
    if (digits_and_dots) return tok;
    i = j;
  }
  return "";
}

std::string ParseOsReleasePrettyName(const std::string& text) {
  for (const auto& line : Lines(text)) {
    if (line.rfind("PRETTY_NAME=", 0) != 0) continue;
    std::string v = Trim(std::string_view(line).substr(12));
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    std::string out;
    for (std::size_t k = 0; k < v.size(); ++k) {
      if (v[k] == '\\' && k + 1 < v.size()) ++k;
      out += v[k];
    }
    return out;
  }
  return "";
}

std::vector<v1::Gpu> DiscoverGpus(const DiscoveryRoots& roots) {
  std::vector<ProcGpu> proc = ReadProcGpus(roots.proc_root);
  std::vector<v1::Gpu> smi = RunNvidiaSmi(roots);
  std::set<std::uint64_t> dev_minors;
  for (const auto& name : ListDir(roots.dev_root)) {
    long n = NumberAfter(name, "nvidia");
    if (n >= 0) dev_minors.insert(static_cast<std::uint64_t>(n));
  }

  std::vector<v1::Gpu> out;
  std::set<std::uint32_t> used_index;
  std::set<std::uint64_t> used_minor;
  std::vector<bool> proc_used(proc.size(), false);
  auto path_for = [](std::uint64_t minor) { return "/dev/nvidia" + std::to_string(minor); };

  for (auto& g : smi) {
    for (std::size_t i = 0; i < proc.size(); ++i) {
      if (!proc_used[i] && !g.uuid().empty() && proc[i].uuid == g.uuid()) {
        proc_used[i] = true;
        if (proc[i].has_minor) {
          g.set_device_path(path_for(proc[i].minor));
          used_minor.insert(proc[i].minor);
        }
        if (g.name().empty()) g.set_name(proc[i].model);
      }
    }
    if (g.device_path().empty() && dev_minors.contains(g.index())) {
      g.set_device_path(path_for(g.index()));
      used_minor.insert(g.index());
    }
    used_index.insert(g.index());
    out.push_back(g);
  }
  for (std::size_t i = 0; i < proc.size(); ++i) {
    if (proc_used[i] || !proc[i].has_minor || used_minor.contains(proc[i].minor)) continue;
    auto index = static_cast<std::uint32_t>(proc[i].minor);
    if (used_index.contains(index)) continue;
    v1::Gpu g;
    g.set_index(index);
    g.set_name(proc[i].model);
    g.set_uuid(proc[i].uuid);
    g.set_device_path(path_for(proc[i].minor));
    used_index.insert(index);
    used_minor.insert(proc[i].minor);
    out.push_back(g);
  }
  for (auto minor : dev_minors) {
    auto index = static_cast<std::uint32_t>(minor);
    if (used_minor.contains(minor) || used_index.contains(index)) continue;
    v1::Gpu g;
    g.set_index(index);
    g.set_device_path(path_for(minor));
    used_index.insert(index);
    out.push_back(g);
  }
  std::sort(out.begin(), out.end(),
            [](const v1::Gpu& a, const v1::Gpu& b) { return a.index() < b.index(); });
  return out;
}

std::optional<v1::Camera> CameraFromCaps(const std::string& path, const V4l2Caps& caps) {
  std::uint32_t node_caps =
      (caps.capabilities & V4L2_CAP_DEVICE_CAPS) ? caps.device_caps : caps.capabilities;
  if (!(node_caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE))) {
    return std::nullopt;
  }
  v1::Camera cam;
  cam.set_path(path);
  cam.set_name(caps.card);
  cam.set_driver(caps.driver);
  cam.set_bus(caps.bus_info);
  return cam;
}

std::vector<v1::Camera> DiscoverCameras(const DiscoveryRoots& roots) {
  std::vector<std::pair<long, std::string>> nodes;
  for (const auto& name : ListDir(roots.dev_root)) {
    long n = NumberAfter(name, "video");
    if (n >= 0) nodes.emplace_back(n, name);
  }
  std::sort(nodes.begin(), nodes.end());
  std::vector<v1::Camera> out;
  for (const auto& [n, name] : nodes) {
    std::string path = fs::Join(roots.dev_root, name);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
    v1::Camera only_path;
    only_path.set_path(path);
    if (!S_ISCHR(st.st_mode)) {  // not a device node (a test fixture): path only
      out.push_back(only_path);
      continue;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      log::Debug("discovery: open ", path, ": ", std::strerror(errno));
      out.push_back(only_path);
      continue;
    }
    v4l2_capability cap{};
    int rc;
    do {
      rc = ::ioctl(fd, VIDIOC_QUERYCAP, &cap);
    } while (rc < 0 && errno == EINTR);
    int err = errno;
    ::close(fd);
    if (rc < 0) {
      log::Debug("discovery: VIDIOC_QUERYCAP ", path, ": ", std::strerror(err));
      out.push_back(only_path);
      continue;
    }
    V4l2Caps caps;
    caps.card = FixedString(cap.card, sizeof cap.card);
    caps.driver = FixedString(cap.driver, sizeof cap.driver);
    caps.bus_info = FixedString(cap.bus_info, sizeof cap.bus_info);
    caps.capabilities = cap.capabilities;
    caps.device_caps = cap.device_caps;
    if (auto cam = CameraFromCaps(path, caps)) out.push_back(*cam);
  }
  return out;
}

v1::DeviceFacts CollectFacts(const DiscoveryRoots& roots) {
  v1::DeviceFacts facts;
  struct utsname uts {};
  bool have_uts = ::uname(&uts) == 0;
  std::string host = Trim(ReadSmall(fs::Join(roots.proc_root, "sys/kernel/hostname")));
  if (host.empty() && have_uts) host = uts.nodename;
  facts.set_hostname(host);
  facts.set_arch(ArchName());
  std::string os_release = ReadSmall(fs::Join(roots.etc_root, "os-release"));
  if (os_release.empty() && roots.etc_root == "/etc") {
    os_release = ReadSmall("/usr/lib/os-release");
  }
  facts.set_os(ParseOsReleasePrettyName(os_release));
  std::string kernel = Trim(ReadSmall(fs::Join(roots.proc_root, "sys/kernel/osrelease")));
  if (kernel.empty() && have_uts) kernel = uts.release;
  facts.set_kernel(kernel);
  facts.set_agent_version(OUTPOST_VERSION);
  facts.set_gpu_driver_version(
      ParseNvidiaDriverVersion(ReadSmall(fs::Join(roots.proc_root, "driver/nvidia/version"))));
  for (auto& g : DiscoverGpus(roots))
    *facts.add_gpus() = std::move(g);
  for (auto& c : DiscoverCameras(roots))
    *facts.add_cameras() = std::move(c);
  return facts;
}

}  // namespace outpost::agent
