#include "hub/sim/hub_probe.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "hub/ctl/config.hpp"
#include "shared/core/fs.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::hub::sim {

ProcSample SampleProcess(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return s;
  // Fields after the command (which may hold spaces) start after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream in(line.substr(close + 2));
  std::string field;
  double utime = 0;
  double stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  s.cpu_seconds = (utime + stime) / hz;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  while (std::getline(status, line)) {
    std::istringstream l(line);
    std::string key;
    std::int64_t value = 0;
    l >> key >> value;
    if (key == "VmRSS:") s.rss_kib = value;
    if (key == "VmHWM:") s.peak_rss_kib = value;
    if (key == "Threads:") s.threads = static_cast<int>(value);
  }
  s.ok = true;
  return s;
}

std::int64_t FileBytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<std::int64_t>(st.st_size);
}

int ReadPidFile(const std::string& path) {
  auto text = fs::ReadFile(path, 64);
  if (!text.ok()) return 0;
  try {
    return std::stoi(*text);
  } catch (const std::exception&) {
    return 0;
  }
}

Result<HubApi> HubApi::FromDataDir(const std::string& data_dir) {
  const std::string path = fs::Join(data_dir, "ctl.yaml");
  OUTPOST_ASSIGN_OR_RETURN(std::string text, fs::ReadFile(path, 64 << 10));
  OUTPOST_ASSIGN_OR_RETURN(auto conn, ctl::ParseCtlYaml(text, data_dir));
  HubApi api;
  api.url_ = conn.hub_url;
  api.token_ = conn.token;
  OUTPOST_ASSIGN_OR_RETURN(api.ca_pem_, fs::ReadFile(conn.ca_path, 64 << 10));
  return api;
}

namespace {

Result<nlohmann::json> Exchange(const std::string& url, const std::string& token,
                                const std::string& ca_pem, http::Request req) {
  req.headers["Authorization"] = "Bearer " + token;
  http::ClientOptions o;
  o.tls.ca_pem = ca_pem;
  o.timeout = std::chrono::seconds(300);
  OUTPOST_ASSIGN_OR_RETURN(auto resp, http::Send(url, req, o));
  auto j = nlohmann::json::parse(resp.body, nullptr, false);
  if (resp.status < 200 || resp.status > 299) {
    return Error(Errc::kUnavailable, req.method + " " + req.target + ": HTTP " +
                                         std::to_string(resp.status) + " " +
                                         resp.body.substr(0, 300));
  }
  if (j.is_discarded()) return Error(Errc::kInvalidArgument, req.target + ": answer is not JSON");
  return j;
}

}  // namespace

Result<nlohmann::json> HubApi::Get(const std::string& target) const {
  http::Request req;
  req.target = target;
  return Exchange(url_, token_, ca_pem_, std::move(req));
}

Result<nlohmann::json> HubApi::Post(const std::string& target, const std::string& body,
                                    const std::string& content_type) const {
  http::Request req;
  req.method = "POST";
  req.target = target;
  req.body = body;
  req.content_type = content_type;
  return Exchange(url_, token_, ca_pem_, std::move(req));
}

}  // namespace outpost::hub::sim
