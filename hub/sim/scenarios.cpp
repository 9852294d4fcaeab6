#include "hub/sim/scenarios.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "hub/sim/device.hpp"
#include "hub/sim/fleet.hpp"
#include "hub/sim/fleet_store.hpp"
#include "hub/sim/floor.hpp"
#include "hub/sim/hub_probe.hpp"
#include "hub/sim/tls.hpp"
#include "hub/sim/verifier.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/store/store.hpp"

namespace outpost::hub::sim {

namespace {

std::atomic<bool> g_interrupted{false};

struct BrokerAddress {
  std::string host;
  int port = 8883;
};

Result<BrokerAddress> ParseBrokerUrl(const std::string& url) {
  std::string rest = url;
  for (const char* scheme : {"ssl://", "mqtts://", "tls://"}) {
    if (rest.rfind(scheme, 0) == 0) {
      rest = rest.substr(std::string(scheme).size());
      break;
    }
  }
  BrokerAddress a;
  std::size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon + 1 >= rest.size()) {
    return Error(Errc::kInvalidArgument, "broker URL " + url + " has no port");
  }
  a.host = rest.substr(0, colon);
  if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']') {
    a.host = a.host.substr(1, a.host.size() - 2);
  }
  try {
    a.port = std::stoi(rest.substr(colon + 1));
  } catch (const std::exception&) {
    return Error(Errc::kInvalidArgument, "broker URL " + url + " has a bad port");
  }
  return a;
}

double Seconds(std::int64_t ms) {
  return static_cast<double>(ms) / 1000.0;
}

// The q-quantile (0..1) of `v` by the nearest-rank method; sorts `v`.
double Quantile(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return Seconds(v[rank - 1]);
}

class Report {
 public:
  explicit Report(std::string path) : path_(std::move(path)) {}
  // One figure per line: "<name> <value> <unit>  # <note>".
  void Figure(const std::string& name, double value, const std::string& unit,
              const std::string& note = "") {
    char line[512];
    std::snprintf(line, sizeof line, "%-34s %12.3f %-10s%s%s", name.c_str(), value, unit.c_str(),
                  note.empty() ? "" : "  # ", note.c_str());
    std::printf("%s\n", line);
    std::fflush(stdout);
    if (!path_.empty()) {
      std::ofstream(path_, std::ios::app) << line << "\n";
    }
  }

 private:
  std::string path_;
};

void Progress(const char* fmt, auto... args) {
  std::fprintf(stderr, "outpost-sim: ");
  std::fprintf(stderr, fmt, args...);
  std::fprintf(stderr, "\n");
}

std::int64_t SteadyMs() {
  return ClockNow().steady_ms;
}

void SleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Counts rows of the hub's events table (read-only; WAL readers never block
// the hub).
Result<std::int64_t> HubEventCount(const std::string& hub_db) {
  store::OpenOptions o;
  o.read_only = true;
  OUTPOST_ASSIGN_OR_RETURN(auto db, store::Database::Open(hub_db, o));
  OUTPOST_ASSIGN_OR_RETURN(auto st, db->Prepare("SELECT count(*) FROM events"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt64(0) : 0;
}

struct Loaded {
  FleetMeta meta;
  std::vector<DeviceRecord> records;
  std::vector<std::unique_ptr<TlsIdentity>> identities;
  std::unique_ptr<DesiredVerifier> verifier;
  std::vector<std::unique_ptr<SimDevice>> devices;
};

class Runner {
 public:
  Runner(const RunOptions& o, Loaded* l, FleetStore* store)
      : o_(o), l_(*l), store_(store), report_(o.results) {}

  int Run();

 private:
  SimDevice& Dev(Endpoint& e) { return static_cast<SimDevice&>(e); }
  std::size_t N() const { return l_.devices.size(); }
  bool Interrupted() const { return g_interrupted.load(); }
  bool TimedOut(std::int64_t start_ms) const {
    return SteadyMs() - start_ms > static_cast<std::int64_t>(o_.timeout_seconds) * 1000;
  }
  ProcSample Hub() const { return SampleProcess(o_.hub_pid); }
  int BrokerPid() const {
    return o_.hub_data_dir.empty() ? 0 : ReadPidFile(fs::Join(o_.hub_data_dir, "mosquitto.pid"));
  }

  bool Connect();
  bool Settle(const char* what);
  bool Idle();
  bool Reports();
  bool Rollout(int round);
  bool Storm();
  bool Floor();
  void Hold();
  void SaveCounters();

  const RunOptions& o_;
  Loaded& l_;
  FleetStore* store_;
  Report report_;
  BrokerAddress broker_;
  std::unique_ptr<TlsClientContext> tls_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<HubApi> api_;
  double rollout_e2e_s_ = 0;
  double rollout_p50_s_ = 0;
  double rollout_p99_s_ = 0;
};

bool Runner::Connect() {
  auto t0 = SteadyMs();
  if (Status s = fleet_->Start(); !s.ok()) {
    Progress("%s", s.error().ToString().c_str());
    return false;
  }
  std::int64_t last_print = t0;
  for (;;) {
    FleetStats st = fleet_->Stats();
    if (st.up == N()) break;
    if (Interrupted() || TimedOut(t0)) {
      Progress("only %zu of %zu devices connected", st.up, N());
      return false;
    }
    if (SteadyMs() - last_print >= 5000) {
      last_print = SteadyMs();
      Progress("%zu/%zu connected (%llu failed attempts)", st.up, N(),
               static_cast<unsigned long long>(st.failures));
    }
    SleepMs(50);
  }
  const auto up_ms = SteadyMs() - t0;
  report_.Figure("connect.all_up_s", Seconds(up_ms), "s",
                 std::to_string(N()) + " devices, TLS + CONNECT + SUBSCRIBE, paced " +
                     std::to_string(o_.threads) + " threads");
  if (!Settle("connect")) return false;
  report_.Figure("connect.settled_s", Seconds(SteadyMs() - t0), "s",
                 "retained documents checked, reports and outboxes acked");
  // From now on, reconnects are the fleet's own (backoff with jitter only).
  fleet_->SetMaxConnectingPerThread(0);
  return true;
}

// Waits until every device is connected, its outbox acked, and no document
// arrived for 1.5 s.
bool Runner::Settle(const char* what) {
  auto t0 = SteadyMs();
  for (;;) {
    std::atomic<std::size_t> busy{0};
    std::atomic<std::int64_t> newest{0};
    fleet_->ForEach([&](Endpoint& e, Now) {
      SimDevice& d = Dev(e);
      if (!d.connected() || !d.outbox_empty()) busy.fetch_add(1);
      std::int64_t at = d.desired_at_ms();
      std::int64_t cur = newest.load();
      while (at > cur && !newest.compare_exchange_weak(cur, at)) {
      }
    });
    auto now = SteadyMs();
    if (busy.load() == 0 && now - newest.load() > 1500 && now - t0 > 1000) return true;
    if (Interrupted() || TimedOut(t0)) {
      Progress("%s: %zu devices still busy", what, busy.load());
      return false;
    }
    SleepMs(200);
  }
}

bool Runner::Idle() {
  const int secs = o_.idle_seconds;
  Progress("idle window of %d s", secs);
  TcpTraffic a = fleet_->Traffic();
  ProcSample h0 = Hub();
  ProcSample b0 = SampleProcess(BrokerPid());
  FleetStats s0 = fleet_->Stats();
  auto t0 = SteadyMs();
  while (SteadyMs() - t0 < static_cast<std::int64_t>(secs) * 1000) {
    if (Interrupted()) return false;
    SleepMs(100);
  }
  const double elapsed = Seconds(SteadyMs() - t0);
  TcpTraffic b = fleet_->Traffic();
  ProcSample h1 = Hub();
  ProcSample b1 = SampleProcess(BrokerPid());
  FleetStats s1 = fleet_->Stats();
  const double bytes =
      static_cast<double>((b.bytes_sent - a.bytes_sent) + (b.bytes_received - a.bytes_received));
  const double segments =
      static_cast<double>((b.segments_out - a.segments_out) + (b.segments_in - a.segments_in));
  const double n = static_cast<double>(N());
  // Per segment on the wire: IPv4 (20) + TCP with timestamps (32) + Ethernet
  // (14 + 4 FCS + 8 preamble + 12 gap).
  const double wire = bytes + segments * (20 + 32 + 38);
  report_.Figure("idle.device_kbit_s", bytes * 8 / elapsed / n / 1000, "kbit/s",
                 "TLS bytes both ways per device, keepalive " + std::to_string(30) + " s");
  report_.Figure("idle.device_kbit_s_wire", wire * 8 / elapsed / n / 1000, "kbit/s",
                 "with TCP/IP/Ethernet framing per segment");
  if (h0.ok && h1.ok) {
    report_.Figure("idle.hub_cpu_pct", (h1.cpu_seconds - h0.cpu_seconds) / elapsed * 100, "%",
                   "of one core");
  }
  if (b0.ok && b1.ok) {
    report_.Figure("idle.broker_cpu_pct", (b1.cpu_seconds - b0.cpu_seconds) / elapsed * 100, "%",
                   "of one core");
  }
  report_.Figure("idle.connection_losses", static_cast<double>(s1.losses - s0.losses), "");
  return true;
}

bool Runner::Reports() {
  if (!api_) return false;
  auto health0 = api_->Get("/healthz");
  if (!health0.ok()) {
    Progress("healthz: %s", health0.error().ToString().c_str());
    return false;
  }
  const auto p0 = (*health0)["ingest"].value("processed", std::uint64_t{0});
  ProcSample h0 = Hub();
  auto t0 = SteadyMs();
  fleet_->ForEach([&](Endpoint& e, Now now) { Dev(e).RequestReport(now); });
  std::uint64_t processed = 0;
  for (;;) {
    auto h = api_->Get("/healthz");
    if (h.ok()) processed = (*h)["ingest"].value("processed", std::uint64_t{0}) - p0;
    if (processed >= N()) break;
    if (Interrupted() || TimedOut(t0)) {
      Progress("reports: the hub processed %llu of %zu", static_cast<unsigned long long>(processed),
               N());
      return false;
    }
    SleepMs(100);
  }
  const auto elapsed = SteadyMs() - t0;
  ProcSample h1 = Hub();
  if (h0.ok && h1.ok) {
    report_.Figure("reports.hub_cpu_ms_per_report",
                   (h1.cpu_seconds - h0.cpu_seconds) * 1000 / static_cast<double>(N()), "ms",
                   "one report from each device, hub user+system CPU / reports");
  }
  report_.Figure("reports.hub_rate_per_s", static_cast<double>(N()) / Seconds(elapsed), "1/s",
                 "reports stored per second (healthz polled every 100 ms)");
  return true;
}

bool Runner::Rollout(int round) {
  if (!api_ || o_.manifest.empty() || o_.app.empty()) {
    Progress("rollout needs --hub-data-dir, --manifest and --app");
    return false;
  }
  auto manifest = fs::ReadFile(o_.manifest, 1 << 20);
  if (!manifest.ok()) {
    Progress("%s", manifest.error().ToString().c_str());
    return false;
  }
  // A value never used before, so every device's document changes.
  const std::string stamp = std::to_string(ClockNow().unix_ms) + "-" + std::to_string(round);
  for (auto at = manifest->find("@ROLLOUT@"); at != std::string::npos;
       at = manifest->find("@ROLLOUT@")) {
    manifest->replace(at, 9, stamp);
  }
  if (!Settle("rollout")) return false;
  std::vector<std::uint64_t> base(N(), 0);
  fleet_->ForEach([&](Endpoint& e, Now) {
    SimDevice& d = Dev(e);
    base[d.index] = d.applied_generation();
  });
  ProcSample h0 = Hub();
  ProcSample b0 = SampleProcess(BrokerPid());
  const auto t0 = SteadyMs();
  auto applied = api_->Post("/v1/admin/apps", *manifest, "application/yaml");
  const auto post_ms = SteadyMs() - t0;
  if (!applied.ok()) {
    Progress("apply: %s", applied.error().ToString().c_str());
    return false;
  }
  std::vector<std::int64_t> acked(N(), 0);
  std::vector<std::int64_t> desired(N(), 0);
  std::int64_t last_print = t0;
  for (;;) {
    std::atomic<std::size_t> done{0};
    fleet_->ForEach([&](Endpoint& e, Now) {
      SimDevice& d = Dev(e);
      if (d.applied_generation() > base[d.index] && d.applied_acked_at_ms() != 0) {
        acked[d.index] = d.applied_acked_at_ms() - t0;
        desired[d.index] = d.desired_at_ms() - t0;
        done.fetch_add(1);
      }
    });
    if (done.load() == N()) break;
    if (Interrupted() || TimedOut(t0)) {
      Progress("rollout: %zu of %zu devices done", done.load(), N());
      return false;
    }
    if (SteadyMs() - last_print >= 5000) {
      last_print = SteadyMs();
      Progress("rollout: %zu/%zu devices acked", done.load(), N());
    }
    SleepMs(50);
  }
  ProcSample h1 = Hub();
  ProcSample b1 = SampleProcess(BrokerPid());
  std::vector<std::int64_t> a = acked;
  std::vector<std::int64_t> d = desired;
  const double e2e = Quantile(a, 1.0);
  rollout_e2e_s_ = e2e;
  rollout_p50_s_ = Quantile(a, 0.5);
  rollout_p99_s_ = Quantile(a, 0.99);
  // The hub's own view must agree: every matched device updated.
  std::string hub_view = "unknown";
  double hub_done_s = 0;
  for (;;) {
    auto rs = api_->Get("/v1/admin/apps/" + o_.app + "/rollout");
    if (rs.ok() && rs->value("done", false)) {
      hub_done_s = Seconds(SteadyMs() - t0);
      hub_view = std::to_string(rs->value("updated", 0)) + "/" +
                 std::to_string(rs->value("matched", 0)) + " updated";
      break;
    }
    if (Interrupted() || TimedOut(t0)) {
      hub_view = rs.ok() ? rs->dump() : rs.error().ToString();
      Progress("rollout: the hub does not see it done: %s", hub_view.c_str());
      return false;
    }
    SleepMs(200);
  }
  report_.Figure("rollout.e2e_s", e2e, "s",
                 std::to_string(N()) +
                     " devices; apply -> hub holds every report of the new "
                     "generation");
  report_.Figure("rollout.device_p50_s", rollout_p50_s_, "s");
  report_.Figure("rollout.device_p99_s", rollout_p99_s_, "s");
  report_.Figure("rollout.apply_call_s", Seconds(post_ms), "s",
                 "POST /v1/admin/apps answered (render + store every document)");
  report_.Figure("rollout.desired_p50_s", Quantile(d, 0.5), "s",
                 "apply -> signed document verified on the device");
  report_.Figure("rollout.desired_p99_s", Quantile(d, 0.99), "s");
  report_.Figure("rollout.hub_view_done_s", hub_done_s, "s",
                 "rollout status says done (" + hub_view + ", polled)");
  if (h0.ok && h1.ok) {
    report_.Figure("rollout.hub_cpu_s", h1.cpu_seconds - h0.cpu_seconds, "s");
    report_.Figure("rollout.hub_cpu_ms_per_device",
                   (h1.cpu_seconds - h0.cpu_seconds) * 1000 / static_cast<double>(N()), "ms",
                   "render, sign, publish, report, event, ack");
    report_.Figure("hub.rss_mib", static_cast<double>(h1.rss_kib) / 1024, "MiB",
                   std::to_string(N()) + " devices connected, after the rollout");
    report_.Figure("hub.peak_rss_mib", static_cast<double>(h1.peak_rss_kib) / 1024, "MiB");
    report_.Figure("hub.threads", h1.threads, "");
  }
  if (b0.ok && b1.ok) {
    report_.Figure("rollout.broker_cpu_s", b1.cpu_seconds - b0.cpu_seconds, "s");
  }
  if (!o_.hub_data_dir.empty()) {
    const std::string db = fs::Join(o_.hub_data_dir, "hub.db");
    report_.Figure("hub.db_mib",
                   static_cast<double>(FileBytes(db) + FileBytes(db + "-wal")) / (1 << 20), "MiB",
                   "hub.db + WAL");
  }
  return true;
}

bool Runner::Storm() {
  if (o_.restart_cmd.empty()) {
    Progress("storm needs --restart-cmd");
    return false;
  }
  if (!Settle("storm")) return false;
  const std::string hub_db = o_.hub_data_dir.empty() ? "" : fs::Join(o_.hub_data_dir, "hub.db");
  std::int64_t hub_events0 = -1;
  if (!hub_db.empty()) {
    if (auto c = HubEventCount(hub_db); c.ok()) hub_events0 = *c;
  }
  std::vector<std::uint64_t> connects0(N(), 0);
  std::vector<std::uint64_t> seq0(N(), 0);
  FleetStats s0 = fleet_->Stats();
  const auto t0 = SteadyMs();
  // One event in flight on every device as the broker goes away, one more
  // queued by every device while it is offline.
  fleet_->ForEach([&](Endpoint& e, Now now) {
    SimDevice& d = Dev(e);
    connects0[d.index] = d.connects();
    seq0[d.index] = d.last_seq();
    d.set_event_on_loss(true);
    d.QueueEvent(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED, "sim.workload", "exited", now);
  });
  std::atomic<int> restart_rc{-1};
  std::thread restarter([&] { restart_rc = std::system(o_.restart_cmd.c_str()); });
  std::vector<std::int64_t> resynced(N(), 0);
  std::vector<std::int64_t> reconnected(N(), 0);
  std::int64_t last_print = t0;
  std::size_t done_count = 0;
  for (;;) {
    std::atomic<std::size_t> done{0};
    fleet_->ForEach([&](Endpoint& e, Now) {
      SimDevice& d = Dev(e);
      if (d.connects() > connects0[d.index] && d.connected() && d.outbox_empty() &&
          d.synced_at_ms() > t0) {
        resynced[d.index] = d.synced_at_ms() - t0;
        reconnected[d.index] = d.connected_at_ms() - t0;
        done.fetch_add(1);
      }
    });
    done_count = done.load();
    if (done_count == N()) break;
    if (Interrupted() || TimedOut(t0)) break;
    if (SteadyMs() - last_print >= 5000) {
      last_print = SteadyMs();
      Progress("storm: %zu/%zu devices resynced, %zu connected", done_count, N(),
               fleet_->Stats().up);
    }
    SleepMs(100);
  }
  restarter.join();
  fleet_->ForEach([&](Endpoint& e, Now) { Dev(e).set_event_on_loss(false); });
  if (done_count != N()) {
    Progress("storm: only %zu of %zu devices resynced (restart command rc %d)", done_count, N(),
             restart_rc.load());
    return false;
  }
  std::atomic<std::uint64_t> queued{0};
  std::atomic<std::uint64_t> unacked{0};
  fleet_->ForEach([&](Endpoint& e, Now) {
    SimDevice& d = Dev(e);
    queued.fetch_add(d.last_seq() - seq0[d.index]);
    unacked.fetch_add(d.last_seq() - d.acked_seq());
  });
  FleetStats s1 = fleet_->Stats();
  std::vector<std::int64_t> r = resynced;
  report_.Figure("storm.resync_s", Quantile(r, 1.0), "s",
                 "broker restart -> every device reconnected, reported, outbox acked");
  report_.Figure("storm.device_p50_s", Quantile(r, 0.5), "s");
  report_.Figure("storm.device_p99_s", Quantile(r, 0.99), "s");
  std::vector<std::int64_t> rc = reconnected;
  report_.Figure("storm.reconnected_s", Quantile(rc, 1.0), "s",
                 "restart -> every device connected and subscribed again (p50 " +
                     std::to_string(Quantile(rc, 0.5)).substr(0, 5) + " s)");
  report_.Figure("storm.events_queued", static_cast<double>(queued.load()), "",
                 "one in flight at the restart + one queued offline, per device");
  report_.Figure("storm.events_lost", static_cast<double>(unacked.load()), "",
                 "queued by devices and not acknowledged by the hub");
  if (hub_events0 >= 0) {
    if (auto c = HubEventCount(hub_db); c.ok()) {
      report_.Figure("storm.hub_events_stored", static_cast<double>(*c - hub_events0), "",
                     "new rows in hub.db events (must equal events_queued)");
    }
  }
  report_.Figure("storm.reconnects", static_cast<double>(s1.connects - s0.connects), "");
  report_.Figure("storm.failed_attempts", static_cast<double>(s1.failures - s0.failures), "",
                 "connect attempts refused or timed out while the broker restarted");
  return true;
}

bool Runner::Floor() {
  if (o_.floor_broker.empty() || o_.hub_data_dir.empty()) {
    Progress("floor needs --floor-broker and --hub-data-dir");
    return false;
  }
  auto addr = ParseBrokerUrl(o_.floor_broker);
  if (!addr.ok()) {
    Progress("%s", addr.error().ToString().c_str());
    return false;
  }
  // The same sizes as the rollout's messages.
  std::atomic<std::uint64_t> desired_bytes{0};
  std::atomic<std::uint64_t> report_bytes{0};
  fleet_->ForEach([&](Endpoint& e, Now) {
    SimDevice& d = Dev(e);
    desired_bytes.fetch_add(d.last_desired_bytes());
    report_bytes.fetch_add(d.last_report_bytes());
  });
  std::size_t dsize = static_cast<std::size_t>(desired_bytes.load() / N());
  std::size_t rsize = static_cast<std::size_t>(report_bytes.load() / N());
  if (dsize == 0) dsize = 1500;
  if (rsize == 0) rsize = 300;
  // The fleet leaves the hub's broker (cleanly) so the floor has the machine
  // as the rollout had it.
  fleet_->DisconnectAll([&](Endpoint& e, Now now) { Dev(e).Shutdown(now); },
                        std::chrono::seconds(30));
  fleet_->Stop();
  SaveCounters();

  auto tls = TlsClientContext::Create(l_.meta.ca_pem, addr->host);
  auto hub_crt = fs::ReadFile(fs::Join(o_.hub_data_dir, "hub.crt"));
  auto hub_key = fs::ReadFile(fs::Join(o_.hub_data_dir, "hub.key"));
  if (!tls.ok() || !hub_crt.ok() || !hub_key.ok()) {
    Progress("floor: the CA or the hub's client certificate is not readable");
    return false;
  }
  auto hub_id = TlsIdentity::FromPem(*hub_crt, *hub_key);
  if (!hub_id.ok()) {
    Progress("floor: %s", hub_id.error().ToString().c_str());
    return false;
  }
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<FloorDevice>> devices;
  FleetOptions fo;
  fo.host = addr->host;
  fo.port = addr->port;
  fo.threads = o_.threads;
  Fleet floor(fo, tls->get());
  for (std::size_t i = 0; i < N(); ++i) {
    ids.push_back(l_.records[i].id);
    devices.push_back(std::make_unique<FloorDevice>(l_.records[i].id, l_.records[i].id, rsize));
    floor.Add(devices.back().get(), l_.identities[i].get());
  }
  FleetOptions po = fo;
  po.threads = 1;
  Fleet pub_fleet(po, tls->get());
  FloorPublisher publisher("outpost-hub-floor", ids);
  pub_fleet.Add(&publisher, hub_id->get());
  auto t_connect = SteadyMs();
  if (!floor.Start().ok() || !pub_fleet.Start().ok()) return false;
  while (floor.Stats().up < N() || pub_fleet.Stats().up < 1) {
    if (Interrupted() || TimedOut(t_connect)) {
      Progress("floor: %zu of %zu connected", floor.Stats().up, N());
      return false;
    }
    SleepMs(50);
  }
  SleepMs(1500);
  const auto t0 = SteadyMs();
  pub_fleet.ForEach([&](Endpoint&, Now) { publisher.FanOut(dsize); });
  std::vector<std::int64_t> answered;
  for (;;) {
    std::size_t answers = 0;
    pub_fleet.ForEach([&](Endpoint&, Now) {
      answers = publisher.answers();
      if (answers == N()) answered = publisher.answered_at_ms();
    });
    if (answers == N()) break;
    if (Interrupted() || TimedOut(t0)) {
      Progress("floor: %zu of %zu answered", answers, N());
      return false;
    }
    SleepMs(20);
  }
  for (auto& a : answered)
    a -= t0;
  std::vector<std::int64_t> v = answered;
  const double e2e = Quantile(v, 1.0);
  report_.Figure("floor.e2e_s", e2e, "s",
                 std::to_string(N()) + " x " + std::to_string(dsize) +
                     " B retained QoS 1 out, one " + std::to_string(rsize) +
                     " B answer each, broker alone");
  report_.Figure("floor.device_p50_s", Quantile(v, 0.5), "s");
  report_.Figure("floor.device_p99_s", Quantile(v, 0.99), "s");
  if (rollout_e2e_s_ > 0 && e2e > 0) {
    report_.Figure("rollout.vs_floor", rollout_e2e_s_ / e2e, "x", "target <= 2");
  }
  pub_fleet.DisconnectAll(nullptr, std::chrono::seconds(5));
  floor.DisconnectAll(nullptr, std::chrono::seconds(30));
  pub_fleet.Stop();
  floor.Stop();
  return true;
}

void Runner::Hold() {
  Progress("%zu devices connected; Ctrl-C stops", N());
  while (!Interrupted())
    SleepMs(200);
}

void Runner::SaveCounters() {
  // Only read after the fleet's threads stopped.
  std::vector<std::pair<std::string, DeviceCounters>> counters;
  counters.reserve(N());
  for (const auto& d : l_.devices)
    counters.emplace_back(d->client_id(), d->counters());
  if (Status s = store_->SaveCounters(counters); !s.ok()) {
    Progress("saving counters: %s", s.error().ToString().c_str());
  }
}

int Runner::Run() {
  std::string url = o_.broker_url.empty() ? l_.meta.broker_url : o_.broker_url;
  auto addr = ParseBrokerUrl(url);
  if (!addr.ok()) {
    Progress("%s", addr.error().ToString().c_str());
    return 2;
  }
  broker_ = *addr;
  auto tls = TlsClientContext::Create(l_.meta.ca_pem, broker_.host);
  if (!tls.ok()) {
    Progress("%s", tls.error().ToString().c_str());
    return 2;
  }
  tls_ = std::move(*tls);
  if (!o_.hub_data_dir.empty()) {
    auto api = HubApi::FromDataDir(o_.hub_data_dir);
    if (!api.ok()) {
      Progress("%s", api.error().ToString().c_str());
      return 2;
    }
    api_ = std::make_unique<HubApi>(std::move(*api));
  }
  FleetOptions fo;
  fo.host = broker_.host;
  fo.port = broker_.port;
  fo.threads = o_.threads;
  fo.connect_timeout = std::chrono::seconds(o_.connect_timeout_seconds);
  fleet_ = std::make_unique<Fleet>(fo, tls_.get());
  for (std::size_t i = 0; i < N(); ++i)
    fleet_->Add(l_.devices[i].get(), l_.identities[i].get());

  bool ok = Connect();
  bool fleet_stopped = false;
  if (ok && o_.phases.empty()) Hold();
  for (const auto& phase : o_.phases) {
    if (!ok || Interrupted()) break;
    Progress("phase %s", phase.c_str());
    if (phase == "connect") {
      continue;
    } else if (phase == "idle") {
      ok = Idle();
    } else if (phase == "reports") {
      ok = Reports();
    } else if (phase == "rollout") {
      std::vector<std::int64_t> e2e_ms;
      for (int r = 1; ok && r <= std::max(1, o_.rollouts); ++r) {
        ok = Rollout(r);
        e2e_ms.push_back(static_cast<std::int64_t>(rollout_e2e_s_ * 1000));
      }
      if (ok && e2e_ms.size() > 1) {
        std::vector<std::int64_t> v = e2e_ms;
        report_.Figure("rollout.e2e_median_s", Quantile(v, 0.5), "s",
                       "median of " + std::to_string(e2e_ms.size()) + " rollouts");
      }
    } else if (phase == "storm") {
      ok = Storm();
    } else if (phase == "floor") {
      ok = Floor();
      fleet_stopped = true;
    } else {
      Progress("unknown phase %s", phase.c_str());
      ok = false;
    }
  }
  if (!fleet_stopped) {
    fleet_->DisconnectAll([&](Endpoint& e, Now now) { Dev(e).Shutdown(now); },
                          std::chrono::seconds(30));
    fleet_->Stop();
    SaveCounters();
  }
  return ok && !Interrupted() ? 0 : 1;
}

}  // namespace

int RunFleet(const RunOptions& o) {
  // SIGINT/SIGTERM stop the phases; blocked here so that no fleet thread
  // takes them, and waited for by one thread of their own.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    g_interrupted.store(true);
  }).detach();

  auto store = FleetStore::Open(o.state_dir);
  if (!store.ok()) {
    Progress("%s", store.error().ToString().c_str());
    return 2;
  }
  Loaded l;
  auto meta = (*store)->Meta();
  if (!meta.ok() || meta->ca_pem.empty()) {
    Progress("%s holds no enrolled fleet; run `outpost-sim enroll` first", o.state_dir.c_str());
    return 2;
  }
  l.meta = *meta;
  auto records = (*store)->Load(o.count);
  if (!records.ok()) {
    Progress("%s", records.error().ToString().c_str());
    return 2;
  }
  if (records->empty() || (o.count > 0 && records->size() < o.count)) {
    Progress("%s holds %zu devices, %zu asked for", o.state_dir.c_str(), records->size(), o.count);
    return 2;
  }
  if (Status s = (*store)->ReserveReportSeqs(); !s.ok()) {
    Progress("%s", s.error().ToString().c_str());
    return 2;
  }
  l.records = std::move(*records);
  l.verifier = std::make_unique<DesiredVerifier>(l.meta.ca_pem);
  for (std::size_t i = 0; i < l.records.size(); ++i) {
    auto id = TlsIdentity::FromPem(l.records[i].cert_pem, l.records[i].key_pem);
    if (!id.ok()) {
      Progress("%s: %s", l.records[i].id.c_str(), id.error().ToString().c_str());
      return 2;
    }
    l.devices.push_back(std::make_unique<SimDevice>(l.records[i].id, l.records[i].counters,
                                                    l.verifier.get(), (*id)->not_after_ms()));
    l.devices.back()->index = i;
    l.identities.push_back(std::move(*id));
    // Keys stay in the identities only.
    l.records[i].key_pem.clear();
    l.records[i].cert_pem.clear();
  }
  Runner runner(o, &l, store->get());
  return runner.Run();
}

}  // namespace outpost::hub::sim
