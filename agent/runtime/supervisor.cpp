#include "agent/runtime/supervisor.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <random>

#include "agent/runtime/log_rotation.hpp"
#include "agent/runtime/workload_env.hpp"
#include "agent/runtime/workload_machine.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"

namespace outpost::agent {

namespace asio = boost::asio;
namespace v1 = outpost::v1;

std::string_view WorkloadStateName(v1::WorkloadState state) {
  switch (state) {
    case v1::WORKLOAD_STATE_RUNNING:
      return "running";
    case v1::WORKLOAD_STATE_STARTING:
      return "starting";
    case v1::WORKLOAD_STATE_BACKOFF:
      return "backoff";
    case v1::WORKLOAD_STATE_STOPPED:
      return "stopped";
    case v1::WORKLOAD_STATE_FAILED:
      return "failed";
    case v1::WORKLOAD_STATE_WAITING:
      return "waiting";
    default:
      return "unknown";
  }
}

namespace {

Instant Now() {
  Instant now;
  now.mono = std::chrono::steady_clock::now();
  now.unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  return now;
}

struct Entry {
  Entry(asio::io_context& io, std::string name, MachineConfig config, std::uint64_t inc)
      : machine(std::move(name), std::move(config)), timer(io), watch(io), incarnation(inc) {}

  WorkloadMachine machine;
  asio::steady_timer timer;
  asio::posix::stream_descriptor watch;  // the pidfd of the running process
  std::uint64_t incarnation;
  v1::ResourceMode mode = v1::RESOURCE_MODE_UNSPECIFIED;
  std::string resource_note;  // e.g. "cpu limit not enforced: no writable cgroup v2"
  bool has_cgroup = false;
  // The record of the running process when ProcessRecordStore::Save failed
  // (a full disk): saved again on every tick until it works, so that a
  // restarted agent adopts this process instead of starting a second one.
  std::optional<ProcessRecord> unsaved_record;
};

}  // namespace

class Supervisor::Impl {
 public:
  Impl(asio::io_context& io, RuntimeConfig config, ProcessRecordStore& store, ProcessOps& ops,
       EventFn on_event, ChangedFn on_changed)
      : io_(io),
        config_(std::move(config)),
        store_(store),
        ops_(ops),
        on_event_(std::move(on_event)),
        on_changed_(std::move(on_changed)),
        tick_(io),
        rng_(std::random_device{}()) {
    cgroup_root_ = config_.cgroup_root.empty() ? DetectCgroupRoot() : config_.cgroup_root;
    if (config_.log_dir.empty() && !config_.state_dir.empty()) {
      config_.log_dir = fs::Join(config_.state_dir, "logs");
    }
    if (const char* path = std::getenv("PATH")) agent_path_ = path;
  }

  // Like Detach(), but without calling back into the daemon (whose objects
  // may already be gone): events still pending are dropped.
  ~Impl() {
    on_event_ = nullptr;
    on_changed_ = nullptr;
    Detach();
  }

  Status Adopt() {
    if (inert_) return Error(Errc::kFailedPrecondition, "supervisor is detached or stopping");
    OUTPOST_ASSIGN_OR_RETURN(auto records, store_.LoadAll());
    Instant now = Now();
    for (const auto& rec : records) {
      if (rec.name.empty() || entries_.contains(rec.name)) continue;
      bool alive = false;
      if (rec.pid > 1) {
        auto start = ops_.StartTime(rec.pid);
        alive = start.ok() && *start == rec.start_time_ticks;
      }
      if (!alive) {
        log::Info("workload ", rec.name, ": pid ", rec.pid, " from the last run is gone");
        (void)store_.Remove(rec.name);
        continue;
      }
      auto fd = ops_.OpenExitFd(rec.pid);
      if (!fd.ok()) {
        log::Warn("workload ", rec.name, ": cannot watch pid ", rec.pid, ": ", fd.error().message(),
                  "; it will be replaced");
        (void)ops_.KillGroup(rec.pid, SIGKILL);
        (void)store_.Remove(rec.name);
        continue;
      }
      Entry& e = NewEntry(rec.name);
      e.machine.Adopt(rec.spec_hash, rec.pid, rec.restarts, rec.started_at_ms, now);
      Watch(e, *fd);
      log::Info("workload ", rec.name, ": adopted pid ", rec.pid, " (restarts ", rec.restarts, ")");
    }
    MarkChanged();
    EnsureTick();
    return OkStatus();
  }

  void Apply(const std::vector<v1::WorkloadSpec>& specs) {
    if (inert_ || stopping_all_) return;
    Instant now = Now();
    std::map<std::string, v1::WorkloadSpec> wanted;
    for (const auto& spec : specs) {
      if (spec.name().empty()) continue;
      v1::WorkloadSpec copy = spec;
      copy.set_spec_hash(EffectiveSpecHash(spec));
      wanted[spec.name()] = std::move(copy);
    }
    // Removed workloads first (frees names and resources).
    std::vector<std::string> removed;
    for (const auto& [name, e] : entries_) {
      if (!wanted.contains(name)) removed.push_back(name);
    }
    for (const auto& name : removed) {
      Drive(name, [&](WorkloadMachine& m) {
        if (m.phase() == Phase::kStopping && m.stopping_for() == StopReason::kRemoved) {
          return Actions{};
        }
        return m.Stop(StopReason::kRemoved, now);
      });
    }
    for (auto& [name, spec] : wanted) {
      auto it = entries_.find(name);
      if (it == entries_.end()) NewEntry(name);
      Entry& e = *entries_.at(name);
      if (e.machine.has_spec() == false && e.machine.pid() > 0) {
        // Adopted: report the resource mode it was started with, as far as visible.
        e.mode = PlanMode(spec, e.resource_note, /*adopted=*/true, name);
      }
      Readiness r = ReadinessFor(spec);
      Drive(name, [&](WorkloadMachine& m) { return m.Apply(spec, r, now); });
    }
    MarkChanged();
    EnsureTick();
  }

  std::vector<v1::WorkloadStatus> Statuses() const {
    std::vector<v1::WorkloadStatus> out;
    out.reserve(entries_.size());
    for (const auto& [name, e] : entries_) {
      v1::WorkloadStatus s = e->machine.Status();
      s.set_resource_mode(e->mode);
      if (!e->resource_note.empty()) {
        s.set_message(s.message().empty() ? e->resource_note
                                          : s.message() + "; " + e->resource_note);
      }
      out.push_back(std::move(s));
    }
    return out;
  }

  bool Settled() const {
    for (const auto& [name, e] : entries_) {
      Phase p = e->machine.phase();
      if (p == Phase::kStarting || p == Phase::kStopping) return false;
    }
    return true;
  }

  void SetGpus(std::vector<v1::Gpu> gpus) {
    config_.gpus = std::move(gpus);
    if (inert_) return;
    Poll();
  }

  void Detach() {
    if (inert_) return;
    inert_ = true;
    tick_.cancel();
    for (auto& [name, e] : entries_) {
      e->timer.cancel();
      boost::system::error_code ignored;
      e->watch.close(ignored);
    }
    entries_.clear();
    FlushNow();
  }

  void StopAll(std::function<void()> done) {
    if (inert_) {
      asio::post(io_, std::move(done));
      return;
    }
    stopping_all_ = true;
    stop_done_ = std::move(done);
    Instant now = Now();
    std::vector<std::string> names;
    for (const auto& [name, e] : entries_)
      names.push_back(name);
    for (const auto& name : names) {
      Drive(name, [&](WorkloadMachine& m) { return m.Stop(StopReason::kStopAll, now); });
    }
    MarkChanged();
    MaybeFinishStopAll();
  }

 private:
  Entry& NewEntry(const std::string& name) {
    MachineConfig mc;
    mc.stop_grace = config_.stop_grace;
    mc.backoff_initial = config_.backoff_initial;
    mc.backoff_max = config_.backoff_max;
    mc.stable_after = config_.stable_after;
    mc.jitter = 0.2;
    mc.unit_random = [this] { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); };
    auto e = std::make_unique<Entry>(io_, name, std::move(mc), next_incarnation_++);
    Entry& ref = *e;
    entries_[name] = std::move(e);
    return ref;
  }

  // Without any log dir configured, output is discarded.
  std::string LogPath(const std::string& name) const {
    return config_.log_dir.empty() ? "/dev/null" : fs::Join(config_.log_dir, name + ".log");
  }

  Readiness ReadinessFor(const v1::WorkloadSpec& spec) {
    Readiness r;
    for (const auto& dev : spec.devices()) {
      if (!ops_.Exists(DevicePathUnder(config_.dev_root, dev))) r.missing_devices.push_back(dev);
    }
    if (spec.gpus().all() || spec.gpus().count() > 0) {
      r.other = SelectGpus(spec.gpus(), config_.gpus).shortage;
    }
    return r;
  }

  // Decides how `spec.resources` is enforced; prepares the cgroup unless adopted.
  v1::ResourceMode PlanMode(const v1::WorkloadSpec& spec, std::string& note, bool adopted,
                            const std::string& name, std::string* cgroup_dir = nullptr,
                            std::uint64_t* rlimit_as = nullptr) {
    note.clear();
    const auto& res = spec.resources();
    if (res.memory_mib() == 0 && res.milli_cpus() == 0) {
      if (!adopted && !cgroup_root_.empty()) ops_.RemoveCgroup(cgroup_root_, name);
      return v1::RESOURCE_MODE_UNSPECIFIED;
    }
    std::uint64_t mem_bytes = std::uint64_t{res.memory_mib()} << 20;
    if (!cgroup_root_.empty()) {
      if (adopted) {
        if (ops_.Exists(fs::Join(cgroup_root_, name))) return v1::RESOURCE_MODE_CGROUP;
      } else {
        auto placed = ops_.PrepareCgroup(cgroup_root_, name, mem_bytes, res.milli_cpus());
        if (placed.ok()) {
          if (cgroup_dir) *cgroup_dir = placed->dir;
          return v1::RESOURCE_MODE_CGROUP;
        }
        log::Info("workload ", name, ": cgroup v2 not usable (", placed.error().message(),
                  "); falling back to rlimits");
      }
    }
    if (res.memory_mib() > 0) {
      if (rlimit_as) *rlimit_as = mem_bytes;
      if (res.milli_cpus() > 0) note = "cpu limit not enforced: no writable cgroup v2";
      return v1::RESOURCE_MODE_RLIMIT;
    }
    note = "cpu limit not enforced: no writable cgroup v2";
    return v1::RESOURCE_MODE_NONE;
  }

  // Runs `input` on the entry's machine and executes what it decides.
  template <typename F>
  void Drive(const std::string& name, F&& input) {
    auto it = entries_.find(name);
    if (it == entries_.end()) return;
    Entry& e = *it->second;
    std::uint64_t before = e.machine.revision();
    Actions actions = input(e.machine);
    bool done = Execute(e, std::move(actions));
    if (done) {
      Erase(name);
      MarkChanged();
      MaybeFinishStopAll();
    } else if (e.machine.revision() != before) {
      MarkChanged();
    }
  }

  // Executes actions in order (a Spawn feeds Started/SpawnFailed back in).
  // Returns true when the machine is done and the entry must go.
  bool Execute(Entry& e, Actions actions) {
    std::deque<Action> queue(std::make_move_iterator(actions.begin()),
                             std::make_move_iterator(actions.end()));
    bool done = false;
    while (!queue.empty()) {
      Action a = std::move(queue.front());
      queue.pop_front();
      Actions more;
      switch (a.kind) {
        case Action::Kind::kSpawn:
          more = DoSpawn(e);
          break;
        case Action::Kind::kSignal:
          if (e.machine.pid() > 1) {
            auto st = ops_.KillGroup(e.machine.pid(), a.signal);
            if (!st.ok()) log::Warn("workload ", e.machine.name(), ": ", st.error().message());
          }
          break;
        case Action::Kind::kArmTimer:
          ArmTimer(e, a.deadline);
          break;
        case Action::Kind::kCancelTimer:
          e.timer.cancel();
          break;
        case Action::Kind::kEmit:
          QueueEvent(std::move(a.event));
          break;
        case Action::Kind::kDone:
          done = true;
          break;
      }
      for (auto& m : more)
        queue.push_back(std::move(m));
    }
    return done;
  }

  Actions DoSpawn(Entry& e) {
    const v1::WorkloadSpec& spec = e.machine.spec();
    const std::string& name = e.machine.name();
    Instant now = Now();
    if (spec.kind() == v1::WORKLOAD_KIND_CONTAINER) {
      return e.machine.SpawnFailed("container workloads are not supported by this agent", true,
                                   now);
    }
    if (spec.command_size() == 0 || spec.command(0).empty()) {
      return e.machine.SpawnFailed("no command given", true, now);
    }

    SpawnRequest req;
    req.argv.assign(spec.command().begin(), spec.command().end());
    req.working_dir = spec.working_dir();
    req.log_path = LogPath(name);

    // The account: root agents drop to workload_user unless the spec names one.
    std::optional<UserIds> user;
    if (ops_.EffectiveUid() == 0) {
      std::string wanted = spec.user().empty() ? config_.workload_user : spec.user();
      if (!wanted.empty() && wanted != "root") {
        auto ids = ops_.LookupUser(wanted);
        if (!ids.ok()) return e.machine.SpawnFailed(ids.error().message(), false, now);
        user = std::move(*ids);
      }
    } else if (!spec.user().empty()) {
      auto ids = ops_.LookupUser(spec.user());
      if (!ids.ok()) return e.machine.SpawnFailed(ids.error().message(), false, now);
      if (ids->uid != ops_.EffectiveUid()) {
        return e.machine.SpawnFailed(
            "cannot run as user " + spec.user() + ": the agent does not run as root", false, now);
      }
    }
    req.user = user;
    req.env = BuildEnvironment(spec, SelectGpus(spec.gpus(), config_.gpus), user, agent_path_);

    e.mode = PlanMode(spec, e.resource_note, false, name, &req.cgroup_dir, &req.rlimit_as_bytes);
    e.has_cgroup = !req.cgroup_dir.empty();

    auto made = config_.log_dir.empty() ? OkStatus() : fs::MakeDirs(config_.log_dir, 0750);
    if (!made.ok()) {
      return e.machine.SpawnFailed("log dir: " + made.error().message(), false, now);
    }

    // The record is written between fork and exec (before_exec): an agent
    // killed at any moment leaves either no process or a recorded one.
    ProcessRecord rec;
    rec.name = name;
    rec.spec_hash = e.machine.spec_hash();
    rec.restarts = e.machine.restarts();
    rec.started_at_ms = now.unix_ms;
    Status saved = OkStatus();
    e.unsaved_record.reset();
    req.before_exec = [&](pid_t pid, std::uint64_t start_ticks) {
      rec.pid = pid;
      rec.start_time_ticks = start_ticks;
      saved = store_.Save(rec);
    };
    auto spawned = ops_.Spawn(req);
    if (!spawned.ok()) {
      log::Warn("workload ", name, ": ", spawned.error().message());
      return e.machine.SpawnFailed(spawned.error().message(), false, now);
    }
    auto fd = ops_.OpenExitFd(spawned->pid);
    if (!fd.ok()) {
      // Cannot supervise what we cannot watch (Linux < 5.3): do not leave it behind.
      (void)ops_.KillGroup(spawned->pid, SIGKILL);
      auto reaped = ops_.Reap(spawned->pid, -1);
      (void)reaped;
      return e.machine.SpawnFailed(fd.error().message() + " (Linux >= 5.3 is needed)", false, now);
    }
    Watch(e, *fd);

    if (!saved.ok()) {
      log::Warn("workload ", name, ": cannot record pid ", rec.pid, ": ", saved.error().message(),
                " (retrying)");
      e.unsaved_record = rec;
    }
    log::Info("workload ", name, ": started pid ", spawned->pid);
    return e.machine.Started(spawned->pid, now);
  }

  void Watch(Entry& e, int fd) {
    boost::system::error_code ignored;
    e.watch.close(ignored);
    e.watch.assign(fd);
    std::weak_ptr<int> alive = alive_;
    std::string name = e.machine.name();
    std::uint64_t inc = e.incarnation;
    e.watch.async_wait(asio::posix::stream_descriptor::wait_read,
                       [this, alive, name, inc](const boost::system::error_code& ec) {
                         if (ec == asio::error::operation_aborted || alive.expired()) return;
                         OnExitReadable(name, inc);
                       });
  }

  void OnExitReadable(const std::string& name, std::uint64_t inc) {
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second->incarnation != inc) return;
    Entry& e = *it->second;
    int pid = e.machine.pid();
    auto status = ops_.Reap(pid, e.watch.native_handle());
    if (!status.ok() && status.error().code() == Errc::kUnavailable) {
      // Not exited after all (spurious wake-up): wait again.
      int fd = e.watch.release();
      Watch(e, fd);
      return;
    }
    ExitStatus st = status.ok() ? *status : ExitStatus{false, -1};
    boost::system::error_code ignored;
    e.watch.close(ignored);
    e.unsaved_record.reset();
    auto removed = store_.Remove(name);
    if (!removed.ok()) log::Warn("workload ", name, ": ", removed.error().message());
    log::Info("workload ", name, ": pid ", pid, " ", DescribeExit(st));
    Instant now = Now();
    Drive(name, [&](WorkloadMachine& m) { return m.Exited(st, now); });
  }

  void ArmTimer(Entry& e, std::chrono::steady_clock::time_point deadline) {
    e.timer.expires_at(deadline);
    std::weak_ptr<int> alive = alive_;
    std::string name = e.machine.name();
    std::uint64_t inc = e.incarnation;
    e.timer.async_wait([this, alive, name, inc](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted || alive.expired()) return;
      auto it = entries_.find(name);
      if (it == entries_.end() || it->second->incarnation != inc) return;
      Instant now = Now();
      Drive(name, [&](WorkloadMachine& m) { return m.TimerFired(now); });
    });
  }

  void Erase(const std::string& name) {
    auto it = entries_.find(name);
    if (it == entries_.end()) return;
    Entry& e = *it->second;
    e.timer.cancel();
    boost::system::error_code ignored;
    e.watch.close(ignored);
    (void)store_.Remove(name);
    if (e.has_cgroup) ops_.RemoveCgroup(cgroup_root_, name);
    entries_.erase(it);
  }

  // The shared tick: device readiness and log rotation.
  void EnsureTick() {
    if (tick_armed_ || inert_ || entries_.empty()) return;
    tick_armed_ = true;
    tick_.expires_after(config_.poll_interval);
    std::weak_ptr<int> alive = alive_;
    tick_.async_wait([this, alive](const boost::system::error_code& ec) {
      if (alive.expired()) return;
      tick_armed_ = false;
      if (ec == asio::error::operation_aborted || inert_) return;
      Poll();
      EnsureTick();
    });
  }

  void Poll() {
    Instant now = Now();
    std::vector<std::string> names;
    for (const auto& [name, e] : entries_)
      names.push_back(name);
    for (const auto& name : names) {
      auto it = entries_.find(name);
      if (it == entries_.end()) continue;
      Entry& e = *it->second;
      if (e.unsaved_record.has_value() && store_.Save(*e.unsaved_record).ok()) {
        log::Info("workload ", name, ": recorded pid ", e.unsaved_record->pid);
        e.unsaved_record.reset();
      }
      if (e.machine.NeedsReadiness()) {
        Readiness r = ReadinessFor(e.machine.spec());
        Drive(name, [&](WorkloadMachine& m) { return m.ReadinessChanged(r, now); });
      }
      if (config_.log_max_bytes > 0 && !config_.log_dir.empty()) {
        auto rotated = RotateLogIfNeeded(LogPath(name), config_.log_max_bytes, config_.log_keep);
        if (!rotated.ok())
          log::Warn("workload ", name, ": log rotation: ", rotated.error().message());
      }
    }
  }

  void QueueEvent(RuntimeEvent event) {
    pending_events_.push_back(std::move(event));
    PostFlush();
  }

  void MarkChanged() {
    changed_pending_ = true;
    PostFlush();
  }

  void PostFlush() {
    if (flush_posted_) return;
    flush_posted_ = true;
    std::weak_ptr<int> alive = alive_;
    asio::post(io_, [this, alive] {
      if (alive.expired()) return;
      flush_posted_ = false;
      FlushNow();
    });
  }

  void FlushNow() {
    std::vector<RuntimeEvent> events;
    events.swap(pending_events_);
    bool changed = changed_pending_;
    changed_pending_ = false;
    for (const auto& ev : events) {
      if (on_event_) on_event_(ev);
    }
    if (changed && on_changed_) on_changed_();
  }

  void MaybeFinishStopAll() {
    if (!stopping_all_ || !entries_.empty() || !stop_done_) return;
    auto done = std::move(stop_done_);
    stop_done_ = nullptr;
    inert_ = true;
    tick_.cancel();
    std::weak_ptr<int> alive = alive_;
    // After the pending events: flush first, then `done`.
    asio::post(io_, [this, alive, done = std::move(done)] {
      if (!alive.expired()) FlushNow();
      done();
    });
  }

  asio::io_context& io_;
  RuntimeConfig config_;
  ProcessRecordStore& store_;
  ProcessOps& ops_;
  EventFn on_event_;
  ChangedFn on_changed_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  asio::steady_timer tick_;
  bool tick_armed_ = false;
  bool inert_ = false;
  bool stopping_all_ = false;
  std::function<void()> stop_done_;
  std::vector<RuntimeEvent> pending_events_;
  bool flush_posted_ = false;
  bool changed_pending_ = false;
  std::string cgroup_root_;
  std::string agent_path_;
  std::minstd_rand rng_;
  std::uint64_t next_incarnation_ = 1;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

Supervisor::Supervisor(asio::io_context& io, RuntimeConfig config, ProcessRecordStore& store,
                       ProcessOps& ops, EventFn on_event, ChangedFn on_status_changed)
    : impl_(std::make_unique<Impl>(io, std::move(config), store, ops, std::move(on_event),
                                   std::move(on_status_changed))) {}

Supervisor::~Supervisor() = default;

Status Supervisor::Adopt() {
  return impl_->Adopt();
}
void Supervisor::Apply(const std::vector<v1::WorkloadSpec>& specs) {
  impl_->Apply(specs);
}
std::vector<v1::WorkloadStatus> Supervisor::Statuses() const {
  return impl_->Statuses();
}
bool Supervisor::Settled() const {
  return impl_->Settled();
}
void Supervisor::SetGpus(std::vector<v1::Gpu> gpus) {
  impl_->SetGpus(std::move(gpus));
}
void Supervisor::Detach() {
  impl_->Detach();
}
void Supervisor::StopAll(std::function<void()> done) {
  impl_->StopAll(std::move(done));
}

}  // namespace outpost::agent
