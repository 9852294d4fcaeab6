#include "agent/daemon/daemon.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <csignal>
#include <optional>
#include <random>

#include "agent/daemon/sd_notify.hpp"
#include "agent/daemon/status_json.hpp"
#include "agent/daemon/status_server.hpp"
#include "agent/daemon/worker.hpp"
#include "agent/discovery/discovery.hpp"
#include "agent/runtime/supervisor.hpp"
#include "agent/state/agent_store.hpp"
#include "agent/sync/engine.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::agent::daemon {
namespace {

namespace asio = boost::asio;
namespace v1 = outpost::v1;

constexpr std::chrono::seconds kHousekeeping{30};
constexpr std::chrono::seconds kShutdownPublishWait{2};
constexpr std::chrono::minutes kRenewRetryMin{1};
constexpr std::chrono::hours kRenewRetryMax{1};

std::int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

sync::Now NowPair() {
  return sync::Now{std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count(),
                   UnixMs()};
}

// Paho speaks ssl://; hubs may write mqtts://.
std::string PahoUri(const std::string& url) {
  if (url.starts_with("mqtts://")) return "ssl://" + url.substr(8);
  return url;
}

class Daemon {
 public:
  explicit Daemon(DaemonOptions options)
      : options_(std::move(options)),
        paths_(options_.state_dir),
        signals_(io_, SIGTERM, SIGINT),
        engine_timer_(io_),
        housekeeping_timer_(io_),
        watchdog_timer_(io_),
        shutdown_timer_(io_),
        status_(io_, paths_.socket, [this] { return StatusDocument(); }),
        rng_(std::random_device{}()) {}

  int Run();

 private:
  Status Init();
  void StartClient();
  void StopClient();
  void OnConnection(const mqtt::Client::ConnectionEvent& event);
  void Flush();
  void ArmEngineTimer();
  void Housekeeping();
  void CheckDisk();
  void MaybeRenew();
  void OnRenewed(const Result<enroll::RenewResult>& result);
  void StartDiscovery();
  void OnFacts(v1::DeviceFacts facts);
  void ArmWatchdog(std::chrono::microseconds interval);
  void OnRuntimeEvent(const RuntimeEvent& event);
  void OnStatusChanged();
  void PersistConnection();
  void Shutdown(const std::string& why);
  void FinishShutdown();
  std::string StatusDocument();
  Status LoadCertificate();

  DaemonOptions options_;
  config::StatePaths paths_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer engine_timer_;
  asio::steady_timer housekeeping_timer_;
  asio::steady_timer watchdog_timer_;
  asio::steady_timer shutdown_timer_;
  StatusServer status_;
  std::mt19937_64 rng_;

  std::unique_ptr<state::AgentStore> store_;
  state::Identity identity_;
  std::string ca_pem_;
  std::int64_t cert_not_before_ms_ = 0;
  std::int64_t cert_not_after_ms_ = 0;
  std::unique_ptr<ProcessOps> ops_;
  std::unique_ptr<Supervisor> sup_;
  std::unique_ptr<sync::Engine> engine_;
  mqtt::ClientPtr client_;

  std::int64_t started_ms_ = 0;
  bool connected_ = false;
  std::int64_t connection_since_ms_ = 0;
  std::int64_t last_connected_ms_ = 0;
  std::string connection_detail_;

  bool disk_low_ = false;
  bool renewing_ = false;
  std::int64_t next_renew_attempt_ms_ = 0;
  std::chrono::milliseconds renew_retry_ = kRenewRetryMin;
  bool discovering_ = false;
  std::vector<v1::Gpu> gpus_;
  bool stopping_ = false;
  bool finished_ = false;
  int exit_code_ = 0;

  Worker worker_;  // last: joined first, before anything its jobs post to
};

Status Daemon::LoadCertificate() {
  OUTPOST_ASSIGN_OR_RETURN(std::string pem, fs::ReadFile(paths_.cert, 1u << 20));
  OUTPOST_ASSIGN_OR_RETURN(auto info, crypto::ParseCertificate(pem));
  if (info.common_name != identity_.device_id)
    return Error(Errc::kFailedPrecondition, paths_.cert + " is for \"" + info.common_name +
                                                "\", but this agent is enrolled as \"" +
                                                identity_.device_id + "\"");
  cert_not_before_ms_ = info.not_before_unix * 1000;
  cert_not_after_ms_ = info.not_after_unix * 1000;
  return OkStatus();
}

Status Daemon::Init() {
  const auto& cfg = options_.config;
  // Before touching anything: another daemon may be mid-renewal on these files.
  if (AgentListening(paths_.socket))
    return Error(Errc::kAlreadyExists, "another agent is already running on " + paths_.dir);
  if (!fs::Exists(paths_.db))
    return Error(Errc::kFailedPrecondition,
                 "not enrolled: " + paths_.db + " does not exist (run outpost-agent join first)");
  OUTPOST_TRY(enroll::RecoverIdentityFiles(paths_));
  state::OpenOptions so;
  so.outbox_max_events = cfg.outbox_max_events;
  auto store = state::AgentStore::Open(paths_.db, so);
  if (!store.ok()) return store.error().WithContext("opening " + paths_.db);
  store_ = std::move(store).value();
  OUTPOST_ASSIGN_OR_RETURN(auto identity, store_->LoadIdentity());
  if (!identity.has_value())
    return Error(Errc::kFailedPrecondition, "not enrolled (run outpost-agent join first)");
  identity_ = *identity;
  auto ca = fs::ReadFile(paths_.ca, 1u << 20);
  if (!ca.ok()) return ca.error().WithContext("reading the hub CA");
  ca_pem_ = *ca;
  OUTPOST_TRY(LoadCertificate());

  started_ms_ = UnixMs();
  OUTPOST_TRY(store_->SetDaemon(::getpid(), started_ms_));
  {
    OUTPOST_ASSIGN_OR_RETURN(auto snap, store_->ReadSnapshot());
    last_connected_ms_ = snap.connection.last_connected_ms;
    connection_since_ms_ = snap.connection.since_ms;
    connection_detail_ = snap.connection.detail;
    if (snap.connection.connected || connection_since_ms_ == 0) {
      connection_since_ms_ = started_ms_;
      connection_detail_ = "agent started";
    }
    PersistConnection();
  }

  // The runtime, and the cached desired state applied before any network.
  ops_ = options_.ops ? std::move(options_.ops) : NewLinuxProcessOps();
  RuntimeConfig rc;
  rc.state_dir = paths_.dir;
  rc.log_dir = paths_.logs;
  rc.log_max_bytes = cfg.workload_log_max_bytes;
  if (!cfg.workload_user.empty()) rc.workload_user = cfg.workload_user;
  rc.cgroup_root = cfg.cgroup_root;
  rc.dev_root = cfg.dev_root;
  DiscoveryRoots quick;  // GPUs without nvidia-smi: fast, so cold start is not delayed
  quick.proc_root = cfg.proc_root;
  quick.dev_root = cfg.dev_root;
  quick.etc_root = cfg.etc_root;
  quick.nvidia_smi = "-";
  gpus_ = DiscoverGpus(quick);
  rc.gpus = gpus_;
  sup_ = std::make_unique<Supervisor>(
      io_, rc, *store_, *ops_, [this](const RuntimeEvent& e) { OnRuntimeEvent(e); },
      [this] { OnStatusChanged(); });
  if (Status s = sup_->Adopt(); !s.ok()) return s.error().WithContext("re-adopting workloads");

  sync::EngineConfig ec;
  ec.device_id = identity_.device_id;
  ec.ca_pem = ca_pem_;
  ec.cert_not_after_ms = cert_not_after_ms_;
  engine_ = std::make_unique<sync::Engine>(ec, *store_);
  OUTPOST_TRY(engine_->Start(NowPair()));
  if (auto apply = engine_->TakeApply(); apply.has_value()) {
    log::Info("applying cached desired generation ", apply->generation, " (",
              apply->workloads.size(), " workloads)");
    sup_->Apply(apply->workloads);
    engine_->OnApplied(apply->generation, NowPair());
  } else {
    sup_->Apply({});  // nothing held: anything adopted is not wanted
  }
  v1::Event started;
  started.set_type(v1::EVENT_TYPE_AGENT_STARTED);
  started.set_message("agent " OUTPOST_VERSION " started");
  engine_->QueueEvent(started, NowPair());
  return OkStatus();
}

int Daemon::Run() {
  if (Status s = Init(); !s.ok()) {
    log::Error(s.error().message());
    return 1;
  }
  if (Status s = status_.Start(); !s.ok()) {
    log::Error(s.error().message());
    if (sup_) sup_->Detach();
    return 1;
  }
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (!ec) Shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  StartClient();
  Housekeeping();
  StartDiscovery();
  if (auto interval = WatchdogInterval(); interval.has_value()) ArmWatchdog(*interval);
  if (Status s = Notify("READY=1"); !s.ok()) log::Warn("sd_notify: ", s.error().message());
  log::Info("agent ", OUTPOST_VERSION, " running as device ", identity_.device_id, " (broker ",
            identity_.broker_url, ")");
  Flush();
  io_.run();
  return exit_code_;
}

// ---------------------------------------------------------------------------
// MQTT

void Daemon::StartClient() {
  mqtt::ClientOptions mo;
  mo.server_uri = PahoUri(identity_.broker_url);
  mo.client_id = identity_.device_id;
  mo.ca_file = paths_.ca;
  mo.cert_file = paths_.cert;
  mo.key_file = paths_.key;
  mo.clean_session = false;
  mo.keep_alive = std::chrono::seconds(options_.config.keepalive_seconds);
  mo.min_retry = std::chrono::milliseconds(options_.config.reconnect_min_ms);
  mo.max_retry = std::chrono::milliseconds(options_.config.reconnect_max_ms);
  mo.will = mqtt::Will{mqtt::topics::Presence(identity_.device_id),
                       sync::Engine::PresencePayload(false, 0, OUTPOST_VERSION, 0), true, 1};
  auto make = options_.make_client ? options_.make_client : mqtt::NewPahoClient;
  auto client = make(mo);
  if (!client.ok()) {
    log::Error("mqtt: ", client.error().message());
    connection_detail_ = client.error().message();
    PersistConnection();
    return;
  }
  client_ = std::move(client).value();
  client_->SetMessageHandler([this](const mqtt::Message& m) {
    asio::post(io_, [this, m] {
      if (stopping_) return;
      engine_->OnMessage(m.topic, m.payload, NowPair());
      Flush();
    });
  });
  client_->SetConnectionHandler([this](const mqtt::Client::ConnectionEvent& e) {
    asio::post(io_, [this, e] { OnConnection(e); });
  });
  client_->AddSubscription(mqtt::topics::Desired(identity_.device_id), 1);
  client_->AddSubscription(mqtt::topics::Ack(identity_.device_id), 1);
  if (Status s = client_->Start(); !s.ok()) log::Error("mqtt: ", s.error().message());
}

void Daemon::StopClient() {
  if (!client_) return;
  client_->Stop();
  client_.reset();
  if (connected_) {
    connected_ = false;
    connection_since_ms_ = UnixMs();
  }
  engine_->OnDisconnected(NowPair());
}

void Daemon::OnConnection(const mqtt::Client::ConnectionEvent& e) {
  if (stopping_) return;
  const std::int64_t now = UnixMs();
  if (e.connected) {
    connected_ = true;
    connection_since_ms_ = now;
    last_connected_ms_ = now;
    connection_detail_.clear();
    log::Info("connected to ", identity_.broker_url,
              e.session_present ? " (session resumed)" : " (new session)");
    PersistConnection();
    engine_->OnConnected(e.session_present, rng_(), NowPair());
  } else {
    if (connected_) {
      connected_ = false;
      connection_since_ms_ = now;
      log::Warn("lost the connection to ", identity_.broker_url, ": ", e.cause);
      connection_detail_ = e.cause;
      PersistConnection();
    } else if (connection_detail_ != e.cause) {
      log::Warn("cannot connect to ", identity_.broker_url, ": ", e.cause);
      connection_detail_ = e.cause;
      PersistConnection();
    }
    engine_->OnDisconnected(NowPair());
  }
  Flush();
}

void Daemon::PersistConnection() {
  state::ConnectionState c;
  c.connected = connected_;
  c.since_ms = connection_since_ms_;
  c.last_connected_ms = last_connected_ms_;
  c.detail = connection_detail_;
  if (Status s = store_->SetConnection(c); !s.ok())
    log::Warn("saving the connection state: ", s.error().message());
}

// ---------------------------------------------------------------------------
// The engine's outputs

void Daemon::Flush() {
  if (finished_) return;
  for (;;) {
    auto apply = engine_->TakeApply();
    if (!apply.has_value()) break;
    if (stopping_) break;
    log::Info("reconciling desired generation ", apply->generation, " (", apply->workloads.size(),
              " workloads)");
    sup_->Apply(apply->workloads);
    engine_->OnApplied(apply->generation, NowPair());
  }
  for (auto& p : engine_->TakePublishes()) {
    if (!client_) continue;
    if (Status s = client_->Publish(p.topic, std::move(p.payload), p.qos, p.retained); !s.ok())
      log::Debug("publish to ", p.topic, ": ", s.error().message());
  }
  ArmEngineTimer();
}

void Daemon::ArmEngineTimer() {
  auto wake = engine_->NextWakeup();
  if (!wake.has_value()) {
    engine_timer_.cancel();
    return;
  }
  auto delay = std::chrono::milliseconds(std::max<std::int64_t>(*wake - NowPair().steady_ms, 0));
  engine_timer_.expires_after(delay);
  engine_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    engine_->OnTick(NowPair());
    Flush();
  });
}

// ---------------------------------------------------------------------------
// Runtime callbacks

void Daemon::OnRuntimeEvent(const RuntimeEvent& e) {
  if (finished_) return;
  v1::Event event;
  event.set_type(e.type);
  event.set_workload(e.workload);
  event.set_exit_code(e.exit_code);
  event.set_message(e.message);
  event.set_device_path(e.device_path);
  engine_->QueueEvent(std::move(event), NowPair());
  if (e.type == v1::EVENT_TYPE_DEVICE_APPEARED || e.type == v1::EVENT_TYPE_DEVICE_VANISHED)
    StartDiscovery();
  Flush();
}

void Daemon::OnStatusChanged() {
  if (finished_) return;
  auto statuses = sup_->Statuses();
  if (Status s = store_->SaveWorkloadStatuses(statuses, UnixMs()); !s.ok())
    log::Warn("saving workload statuses: ", s.error().message());
  engine_->OnWorkloadStatuses(std::move(statuses), NowPair());
  Flush();
}

// ---------------------------------------------------------------------------
// Housekeeping: disk, renewal, discovery

void Daemon::Housekeeping() {
  if (stopping_) return;
  CheckDisk();
  MaybeRenew();
  StartDiscovery();
  Flush();
  housekeeping_timer_.expires_after(kHousekeeping);
  housekeeping_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) Housekeeping();
  });
}

void Daemon::CheckDisk() {
  struct statvfs st {};
  if (::statvfs(paths_.dir.c_str(), &st) != 0 || st.f_blocks == 0) return;
  const double free_ratio = static_cast<double>(st.f_bavail) / static_cast<double>(st.f_blocks);
  const std::uint64_t free_mib =
      static_cast<std::uint64_t>(st.f_bavail) * static_cast<std::uint64_t>(st.f_frsize) >> 20;
  const bool low = free_ratio * 100.0 < options_.config.disk_low_percent ||
                   free_mib < options_.config.disk_low_mib;
  if (low && !disk_low_) {
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_DISK_LOW);
    e.set_message("the state dir's filesystem has " + std::to_string(free_mib) + " MiB (" +
                  std::to_string(static_cast<int>(free_ratio * 100.0)) + "%) free");
    log::Warn(e.message());
    engine_->QueueEvent(std::move(e), NowPair());
  }
  disk_low_ = low;
}

void Daemon::MaybeRenew() {
  if (renewing_ || cert_not_after_ms_ == 0) return;
  const std::int64_t now = UnixMs();
  const std::int64_t validity = cert_not_after_ms_ - cert_not_before_ms_;
  const std::int64_t left = cert_not_after_ms_ - now;
  if (validity <= 0 || left * options_.config.renew_fraction_denominator >= validity) return;
  if (now < next_renew_attempt_ms_) return;
  renewing_ = true;
  log::Info("certificate expires ", IsoTime(cert_not_after_ms_), "; renewing");
  enroll::RenewOptions ro;
  ro.hub_url = identity_.hub_url;
  auto send = options_.http_send ? options_.http_send : enroll::HttpSend(http::Send);
  worker_.Post([this, ro, send, paths = paths_, id = identity_.device_id] {
    auto result = enroll::Renew(paths, id, ro, send);
    asio::post(io_, [this, result] { OnRenewed(result); });
  });
}

void Daemon::OnRenewed(const Result<enroll::RenewResult>& result) {
  renewing_ = false;
  if (stopping_) return;
  if (!result.ok()) {
    next_renew_attempt_ms_ = UnixMs() + renew_retry_.count();
    log::Warn("certificate renewal failed (retrying in ",
              std::chrono::duration_cast<std::chrono::seconds>(renew_retry_).count(),
              " s): ", result.error().message());
    renew_retry_ = std::min<std::chrono::milliseconds>(renew_retry_ * 2, kRenewRetryMax);
    return;
  }
  renew_retry_ = kRenewRetryMin;
  if (Status s = LoadCertificate(); !s.ok()) {
    log::Error("after renewal: ", s.error().message());
    return;
  }
  engine_->SetCertNotAfter(cert_not_after_ms_);
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_CERT_RENEWED);
  e.set_message("certificate renewed, valid until " + IsoTime(cert_not_after_ms_));
  log::Info(e.message(), "; reconnecting with it");
  engine_->QueueEvent(std::move(e), NowPair());
  StopClient();
  StartClient();
  Flush();
}

void Daemon::StartDiscovery() {
  if (discovering_ || stopping_) return;
  discovering_ = true;
  DiscoveryRoots roots;
  roots.proc_root = options_.config.proc_root;
  roots.dev_root = options_.config.dev_root;
  roots.etc_root = options_.config.etc_root;
  roots.nvidia_smi = options_.config.nvidia_smi;
  worker_.Post([this, roots] {
    auto facts = CollectFacts(roots);
    asio::post(io_, [this, facts = std::move(facts)]() mutable { OnFacts(std::move(facts)); });
  });
}

void Daemon::OnFacts(v1::DeviceFacts facts) {
  discovering_ = false;
  if (stopping_) return;
  std::vector<v1::Gpu> gpus(facts.gpus().begin(), facts.gpus().end());
  bool changed = gpus.size() != gpus_.size();
  for (std::size_t i = 0; !changed && i < gpus.size(); ++i)
    changed = gpus[i].SerializeAsString() != gpus_[i].SerializeAsString();
  if (changed) {
    gpus_ = gpus;
    sup_->SetGpus(gpus);
  }
  engine_->OnFacts(facts, NowPair());
  Flush();
}

void Daemon::ArmWatchdog(std::chrono::microseconds interval) {
  (void)Notify("WATCHDOG=1");
  watchdog_timer_.expires_after(interval);
  watchdog_timer_.async_wait([this, interval](const boost::system::error_code& ec) {
    if (!ec) ArmWatchdog(interval);
  });
}

// ---------------------------------------------------------------------------
// Status

std::string Daemon::StatusDocument() {
  auto snap = store_->ReadSnapshot();
  if (!snap.ok()) {
    nlohmann::json j = {{"error", snap.error().message()}, {"daemon", "running"}};
    return j.dump();
  }
  LiveStatus live;
  live.connected = connected_;
  live.connection_since_ms = connection_since_ms_;
  live.last_connected_ms = last_connected_ms_;
  live.connection_detail = connection_detail_;
  live.workloads = sup_->Statuses();
  live.hub_generation = engine_->hub_generation();
  live.daemon_pid = ::getpid();
  live.daemon_started_ms = started_ms_;
  CertSummary cert;
  cert.present = cert_not_after_ms_ > 0;
  cert.not_before_unix = cert_not_before_ms_ / 1000;
  cert.not_after_unix = cert_not_after_ms_ / 1000;
  return BuildStatus(*snap, &live, cert, UnixMs(), nullptr)
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------
// Shutdown

void Daemon::Shutdown(const std::string& why) {
  if (stopping_) return;
  log::Info(why, ": stopping (workloads keep running)");
  (void)Notify("STOPPING=1");
  const bool was_connected = connected_ && client_ != nullptr;
  engine_->Shutdown(NowPair());
  stopping_ = true;
  bool waiting = false;
  for (auto& p : engine_->TakePublishes()) {
    if (!client_ || !was_connected) continue;
    Status s =
        client_->Publish(p.topic, std::move(p.payload), p.qos, p.retained,
                         [this](const Status&) { asio::post(io_, [this] { FinishShutdown(); }); });
    if (s.ok()) waiting = true;
  }
  if (!waiting) {
    FinishShutdown();
    return;
  }
  shutdown_timer_.expires_after(kShutdownPublishWait);
  shutdown_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) FinishShutdown();
  });
}

void Daemon::FinishShutdown() {
  if (finished_) return;
  finished_ = true;
  if (sup_) {
    auto statuses = sup_->Statuses();
    (void)store_->SaveWorkloadStatuses(statuses, UnixMs());
    sup_->Detach();
  }
  if (client_) {
    client_->Stop();
    client_.reset();
  }
  connected_ = false;
  connection_since_ms_ = UnixMs();
  connection_detail_ = "agent stopped";
  PersistConnection();
  (void)store_->SetDaemon(0, started_ms_);
  status_.Stop();
  signals_.cancel();
  engine_timer_.cancel();
  housekeeping_timer_.cancel();
  watchdog_timer_.cancel();
  shutdown_timer_.cancel();
  log::Info("stopped");
  io_.stop();
}

}  // namespace

int Run(DaemonOptions options) {
  std::signal(SIGPIPE, SIG_IGN);
  Daemon daemon(std::move(options));
  return daemon.Run();
}

}  // namespace outpost::agent::daemon
