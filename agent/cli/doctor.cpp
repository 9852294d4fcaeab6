// `outpost-agent doctor [--json]`: local checks for a technician.
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <iomanip>
#include <set>
#include <sstream>

#include "agent/cli/commands.hpp"
#include "agent/cli/tls_probe.hpp"
#include "agent/daemon/status_json.hpp"
#include "agent/daemon/status_server.hpp"
#include "agent/discovery/discovery.hpp"
#include "agent/state/agent_store.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::agent::cli {
namespace {

constexpr std::int64_t kYear2024Ms = 1704067200000;  // 2024-01-01T00:00:00Z

std::string Mode(mode_t m) {
  std::ostringstream o;
  o << std::oct << std::setw(4) << std::setfill('0') << (m & 07777);
  return o.str();
}

std::string DevPath(const std::string& dev_root, const std::string& path) {
  // "/dev/x" is looked up as <dev_root>/x, like the runtime does.
  if (path.starts_with("/dev/")) return fs::Join(dev_root, path.substr(5));
  return path;
}

}  // namespace

std::vector<Check> RunDoctor(const DoctorOptions& o) {
  std::vector<Check> checks;
  auto add = [&](std::string name, bool ok, std::string detail) {
    checks.push_back(Check{std::move(name), ok, std::move(detail)});
  };
  const std::int64_t now_ms = o.now_ms;
  config::StatePaths paths(o.state_dir);

  // config
  config::AgentConfig cfg;
  {
    auto loaded = config::Load(o.config_file, o.config_given);
    if (!loaded.ok()) {
      add("config", false, loaded.error().message());
    } else {
      cfg = *loaded;
      std::string detail = fs::Exists(o.config_file) ? o.config_file + " is valid"
                                                     : "no " + o.config_file + "; defaults apply";
      if (!cfg.unknown_keys.empty()) {
        detail += "; unknown keys ignored:";
        for (const auto& k : cfg.unknown_keys)
          detail += " " + k;
      }
      add("config", true, detail);
    }
  }

  // state dir
  struct stat st {};
  if (::stat(paths.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    add("state-dir", false, paths.dir + " does not exist (run outpost-agent join)");
  } else if ((st.st_mode & 0022) != 0) {
    add("state-dir", false,
        paths.dir + " is writable by others (mode " + Mode(st.st_mode) + "; want 0700)");
  } else if (st.st_uid != ::geteuid()) {
    add("state-dir", false,
        paths.dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by this user (" +
            std::to_string(::geteuid()) + ")");
  } else {
    add("state-dir", true, paths.dir + " (mode " + Mode(st.st_mode) + ")");
  }

  // enrollment
  std::optional<state::Snapshot> snap;
  if (!fs::Exists(paths.db)) {
    add("enrollment", false, "not enrolled (no agent.db); run outpost-agent join");
  } else {
    state::OpenOptions ro;
    ro.read_only = true;
    auto store = state::AgentStore::Open(paths.db, ro);
    auto s = store.ok() ? (*store)->ReadSnapshot() : Result<state::Snapshot>(store.error());
    if (!s.ok()) {
      add("enrollment", false, "agent.db: " + s.error().message());
    } else if (!s->identity) {
      add("enrollment", false, "agent.db holds no identity; run outpost-agent join");
    } else {
      snap = *s;
      add("enrollment", true, "device " + s->identity->device_id + ", hub " + s->identity->hub_url);
    }
  }

  // key
  std::string key_pem, cert_pem, ca_pem;
  std::optional<crypto::CertInfo> cert;
  {
    struct stat ks {};
    if (::stat(paths.key.c_str(), &ks) != 0) {
      add("key", false, paths.key + " is missing");
    } else if ((ks.st_mode & 0077) != 0) {
      add("key", false, paths.key + " has mode " + Mode(ks.st_mode) + "; it must be 0600");
    } else if (auto pem = fs::ReadFile(paths.key, 64 * 1024); !pem.ok()) {
      add("key", false, pem.error().message());
    } else if (auto key = crypto::PrivateKey::FromPem(*pem); !key.ok()) {
      add("key", false, "device.key does not parse: " + key.error().message());
    } else {
      key_pem = *pem;
      add("key", true, paths.key + " (mode " + Mode(ks.st_mode) + ")");
    }
  }

  // certificate
  {
    auto pem = fs::ReadFile(paths.cert, 1u << 20);
    if (!pem.ok()) {
      add("certificate", false, pem.error().message());
    } else if (auto info = crypto::ParseCertificate(*pem); !info.ok()) {
      add("certificate", false, "device.crt does not parse: " + info.error().message());
    } else {
      cert_pem = *pem;
      cert = *info;
      const std::int64_t left_days = (info->not_after_unix * 1000 - now_ms) / 86400000;
      bool key_matches = true;
      if (!key_pem.empty()) {
        auto key = crypto::PrivateKey::FromPem(key_pem);
        auto pub = key.ok() ? key->PublicKeyPem() : Result<std::string>(key.error());
        key_matches = pub.ok() && *pub == info->public_key_pem;
      }
      if (info->not_after_unix * 1000 <= now_ms) {
        add("certificate", false,
            "expired " + daemon::IsoTime(info->not_after_unix * 1000) + "; enroll again");
      } else if (info->not_before_unix * 1000 > now_ms) {
        add("certificate", false,
            "not valid before " + daemon::IsoTime(info->not_before_unix * 1000) +
                " (check the clock)");
      } else if (!key_matches) {
        add("certificate", false, "device.crt is not for device.key");
      } else if (snap && snap->identity && info->common_name != snap->identity->device_id) {
        add("certificate", false,
            "device.crt is for \"" + info->common_name + "\", not \"" + snap->identity->device_id +
                "\"");
      } else {
        add("certificate", true,
            "CN " + info->common_name + ", valid until " +
                daemon::IsoTime(info->not_after_unix * 1000) + " (" + std::to_string(left_days) +
                " days)");
      }
    }
  }

  // CA chain
  {
    auto pem = fs::ReadFile(paths.ca, 1u << 20);
    if (!pem.ok()) {
      add("ca-chain", false, pem.error().message());
    } else if (cert_pem.empty()) {
      ca_pem = *pem;
      add("ca-chain", false, "no usable device certificate to check");
    } else {
      ca_pem = *pem;
      crypto::VerifyOptions v;
      v.now_unix = now_ms / 1000;
      v.usage = crypto::CertUsage::kClient;
      if (Status s = crypto::VerifyChain(cert_pem, ca_pem, v); !s.ok()) {
        add("ca-chain", false, s.error().message());
      } else {
        auto hash = crypto::SpkiSha256(ca_pem);
        add("ca-chain", true,
            "device.crt chains to ca.crt (" + (hash.ok() ? *hash : std::string("?")) + ")");
      }
    }
  }

  // broker reachable over TLS
  if (!snap || !snap->identity) {
    add("broker", false, "not enrolled: no broker address");
  } else if (key_pem.empty() || cert_pem.empty() || ca_pem.empty()) {
    add("broker", false, "no usable key, certificate and CA to connect with");
  } else {
    std::string url = snap->identity->broker_url;
    std::string rest = url.substr(url.find("://") == std::string::npos ? 0 : url.find("://") + 3);
    auto parsed = http::ParseUrl("https://" + rest);
    if (!parsed.ok()) {
      add("broker", false, "broker address " + url + " is not valid");
    } else {
      Status s = ProbeTls(parsed->host, parsed->port.empty() ? "8883" : parsed->port, ca_pem,
                          cert_pem, key_pem, std::chrono::milliseconds(o.broker_timeout_ms));
      if (s.ok()) {
        add("broker", true, url + " accepts this device over TLS");
      } else {
        add("broker", false, url + ": " + s.error().message());
      }
    }
  }

  // clock
  {
    if (now_ms < kYear2024Ms) {
      add("clock", false,
          "the system clock says " + daemon::IsoTime(now_ms) +
              "; set the time (NTP) — certificates cannot be checked");
    } else if (cert && cert->not_before_unix * 1000 > now_ms) {
      add("clock", false,
          "the system clock (" + daemon::IsoTime(now_ms) + ") is before the certificate's start " +
              daemon::IsoTime(cert->not_before_unix * 1000));
    } else {
      add("clock", true, daemon::IsoTime(now_ms));
    }
  }

  // disk
  {
    struct statvfs vfs {};
    if (::statvfs(paths.dir.c_str(), &vfs) != 0 || vfs.f_blocks == 0) {
      add("disk", false, "cannot read the free space of " + paths.dir);
    } else {
      const double ratio = static_cast<double>(vfs.f_bavail) / static_cast<double>(vfs.f_blocks);
      const std::uint64_t mib =
          static_cast<std::uint64_t>(vfs.f_bavail) * static_cast<std::uint64_t>(vfs.f_frsize) >> 20;
      std::string detail = std::to_string(mib) + " MiB (" +
                           std::to_string(static_cast<int>(ratio * 100)) + "%) free on " +
                           paths.dir;
      const bool low = ratio * 100 < cfg.disk_low_percent || mib < cfg.disk_low_mib;
      add("disk", !low, low ? "low: " + detail : detail);
    }
  }

  // devices the cached workloads need
  {
    std::vector<std::string> missing;
    std::size_t needed = 0;
    std::uint32_t gpus_wanted = 0;
    bool gpus_all = false;
    if (snap) {
      for (const auto& w : snap->desired_workloads) {
        for (const auto& d : w.devices()) {
          ++needed;
          if (!fs::Exists(DevPath(cfg.dev_root, d))) missing.push_back(w.name() + " needs " + d);
        }
        if (w.gpus().all()) gpus_all = true;
        gpus_wanted = std::max(gpus_wanted, w.gpus().count());
      }
    }
    if (gpus_all || gpus_wanted > 0) {
      DiscoveryRoots roots;
      roots.proc_root = cfg.proc_root;
      roots.dev_root = cfg.dev_root;
      roots.etc_root = cfg.etc_root;
      roots.nvidia_smi = cfg.nvidia_smi;
      auto gpus = DiscoverGpus(roots);
      std::uint32_t want = gpus_all ? 1 : gpus_wanted;
      if (gpus.size() < want)
        missing.push_back("workloads need " + std::to_string(want) + " GPU(s), found " +
                          std::to_string(gpus.size()));
      needed += want;
    }
    if (!missing.empty()) {
      std::string detail;
      for (const auto& m : missing)
        detail += (detail.empty() ? "" : "; ") + m;
      add("devices", false, detail);
    } else if (needed == 0) {
      add("devices", true, "no cached workload needs a device or GPU");
    } else {
      add("devices", true, "every device and GPU the cached workloads need is present");
    }
  }

  // workload user (only matters when the agent runs as root)
  if (::geteuid() == 0) {
    std::string user = cfg.workload_user.empty() ? "nobody" : cfg.workload_user;
    struct passwd pw {};
    struct passwd* found = nullptr;
    char buf[4096];
    if (::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
      add("workload-user", false, "user \"" + user + "\" does not exist");
    } else {
      add("workload-user", true,
          "workloads run as " + user + " (uid " + std::to_string(pw.pw_uid) +
              ") unless their spec says otherwise");
    }
  }

  // daemon
  if (daemon::AgentListening(paths.socket)) {
    add("daemon", true, "running (status socket " + paths.socket + ")");
  } else {
    add("daemon", false, "not running (systemctl start outpost-agent)");
  }
  return checks;
}

int DoctorCommand(const Invocation& inv, const Env& env) {
  bool json = false;
  for (const auto& a : inv.args) {
    if (a == "--json") {
      json = true;
    } else {
      env.err << "outpost-agent doctor: unknown option " << a << "\n";
      return 2;
    }
  }
  log::SetLevel(log::Level::kError);
  DoctorOptions o;
  o.state_dir = inv.state_dir;
  o.config_file = inv.config_file;
  o.config_given = inv.config_given;
  o.now_ms = env.now_ms != 0 ? env.now_ms
                             : std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  auto checks = RunDoctor(o);
  int failed = 0;
  for (const auto& c : checks)
    failed += c.ok ? 0 : 1;
  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : checks)
      list.push_back({{"check", c.check}, {"ok", c.ok}, {"detail", c.detail}});
    env.out << list.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::string headline = failed == 0 ? "all " + std::to_string(checks.size()) + " checks passed"
                                       : std::to_string(failed) + " of " +
                                             std::to_string(checks.size()) + " checks failed";
    const char* colour = failed == 0 ? "\033[32m" : "\033[31m";
    env.out << (env.color ? colour : "") << headline << (env.color ? "\033[0m" : "") << "\n\n";
    for (const auto& c : checks) {
      std::string mark = c.ok ? "ok  " : "FAIL";
      if (env.color) mark = std::string(c.ok ? "\033[32m" : "\033[31m") + mark + "\033[0m";
      env.out << mark << "  " << std::left << std::setw(14) << c.check << c.detail << "\n";
    }
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace outpost::agent::cli
