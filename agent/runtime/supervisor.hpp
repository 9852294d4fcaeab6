// outpost::agent::Supervisor — keeps the workloads of the desired document
// running on this device (issue 4, items 4 and 5).
//
// Threading and footprint
//   The supervisor lives on the daemon's boost::asio::io_context and must only
//   be called from the thread running it. It starts no thread: each workload is
//   watched through a pidfd (readable when the process exits) wrapped in an
//   asio stream_descriptor, and backoff / stop-grace deadlines are asio
//   steady_timers. One shared 1 s tick polls missing device nodes and rotates
//   logs while there are workloads.
//
// Usage (daemon)
//   agent::Supervisor sup(io, config, record_store, *ops, on_event, on_changed);
//   OUTPOST_TRY(sup.Adopt());          // once, before the first Apply
//   sup.Apply(cached_document_workloads);
//   ... on every new desired document: sup.Apply(doc.workloads());
//   ... for reports: sup.Statuses();
//   shutdown/upgrade: sup.Detach();   (workloads keep running; next start adopts)
//   uninstall/stop:   sup.StopAll([&] { io.stop(); });
//
// Decisions (restart policy, backoff, waiting for devices, graceful stop) are
// made by the pure WorkloadMachine (workload_machine.hpp); the supervisor only
// executes its actions through ProcessOps and asio.
//
// Logs
//   stdout and stderr of a workload go straight into <log_dir>/<name>.log
//   (O_APPEND), not through a pipe: a pipe would tie the workload's life to the
//   agent's (EPIPE/SIGPIPE when the agent restarts), which item 5 forbids.
//   Rotation is therefore copytruncate-style: on the 1 s tick, a log over
//   log_max_bytes is shifted to .1 .. .log_keep (copied in-kernel), then
//   truncated to 0; O_APPEND writers continue at the new end. Lines written in
//   the instant between copy and truncate can be lost (documented trade-off).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/runtime/process_ops.hpp"
#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace outpost::agent {

struct RuntimeConfig {
  std::string state_dir;  // the agent's state dir (records live in ProcessRecordStore)
  // <log_dir>/<workload>.log, created if missing; empty: <state_dir>/logs
  // (both empty: output is discarded).
  std::string log_dir;
  std::uint64_t log_max_bytes = 10u << 20;  // rotate when a log grows past this
  int log_keep = 3;                         // keep <name>.log.1 .. .log_keep
  // Used when the agent runs as root and a spec has no `user`
  // ("root" in a spec is honoured explicitly).
  std::string workload_user = "nobody";
  // Parent of the per-workload cgroups; empty: DetectCgroupRoot(). A root that
  // is not a writable cgroup v2 means rlimits instead (see ResourceMode).
  std::string cgroup_root;
  std::string dev_root = "/dev";                // device paths "/dev/x" are checked as <dev_root>/x
  std::chrono::milliseconds stop_grace{10000};  // default when spec.stop_grace_seconds == 0
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{60000};
  std::chrono::milliseconds stable_after{30000};  // a run this long resets the backoff
  std::chrono::milliseconds poll_interval{1000};  // device polling and log rotation
  std::vector<outpost::v1::Gpu> gpus;             // from discovery, for `gpus` requests
};

// What the agent remembers about a process it launched, so that a restarted
// agent re-adopts it instead of starting it again. Saved on every start and
// restart, removed when the workload is stopped or the process is gone.
struct ProcessRecord {
  std::string name;
  std::string spec_hash;
  int pid = 0;
  std::uint64_t start_time_ticks = 0;  // /proc/<pid>/stat field 22: pid reuse guard
  std::uint32_t restarts = 0;
  std::int64_t started_at_ms = 0;  // Unix ms
};

// Persistence of ProcessRecords (agent-core implements it on agent.db).
class ProcessRecordStore {
 public:
  virtual ~ProcessRecordStore() = default;
  virtual Status Save(const ProcessRecord& record) = 0;  // insert or replace by name
  virtual Status Remove(const std::string& name) = 0;    // absent is fine
  virtual Result<std::vector<ProcessRecord>> LoadAll() = 0;
};

// An in-memory ProcessRecordStore (tests; it survives a Supervisor, not a process).
class MemoryProcessRecordStore : public ProcessRecordStore {
 public:
  Status Save(const ProcessRecord& record) override;
  Status Remove(const std::string& name) override;
  Result<std::vector<ProcessRecord>> LoadAll() override;

 private:
  std::vector<ProcessRecord> records_;
};

// Something the runtime wants recorded in the outbox. `exit_code` is set for
// WORKLOAD_EXITED (>= 0 exit status, < 0 -signal, -1 with message "exit
// status unknown (adopted)" when an adopted process died); `device_path` for
// DEVICE_APPEARED / DEVICE_VANISHED (the path as written in the spec).
//
// Emitted types: WORKLOAD_STARTED (first start of a spec), WORKLOAD_RESTARTED
// (a start by the restart policy after an exit or a failed spawn, instead of
// STARTED), WORKLOAD_EXITED (every exit the agent did not ask for; a clean
// exit with no restart due leaves the workload `stopped`), WORKLOAD_STOPPED
// (stopped by the agent: removed, changed spec, StopAll), WORKLOAD_FAILED (a
// spawn/exec failure, and, after EXITED, a non-zero exit with no restart due),
// DEVICE_APPEARED / DEVICE_VANISHED (per workload and required device; a
// vanished device does not stop a running workload, the next start waits).
struct RuntimeEvent {
  outpost::v1::EventType type = outpost::v1::EVENT_TYPE_UNSPECIFIED;
  std::string workload;
  int exit_code = 0;
  std::string message;
  std::string device_path;
};

// "running", "starting", "backoff", "stopped", "failed", "waiting" (the
// contract's `status --json` names); "unknown" otherwise.
std::string_view WorkloadStateName(outpost::v1::WorkloadState state);

class Supervisor {
 public:
  using EventFn = std::function<void(const RuntimeEvent&)>;
  using ChangedFn = std::function<void()>;

  // `store` and `ops` must outlive the supervisor. `on_event` is called for
  // every RuntimeEvent, `on_status_changed` whenever Statuses() changed (the
  // daemon coalesces reports). Both are called on the io_context thread,
  // never from inside Apply/Adopt/StopAll (they are posted); Detach (and the
  // destructor) delivers what is still pending synchronously.
  Supervisor(boost::asio::io_context& io, RuntimeConfig config, ProcessRecordStore& store,
             ProcessOps& ops, EventFn on_event, ChangedFn on_status_changed);
  // Like Detach() (running workloads are left running), except that nothing
  // is called back: events still pending are dropped. Call Detach() or
  // StopAll() first to have them delivered.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Once, at start, before the first Apply: re-adopts the processes in the
  // store that are still alive (same pid AND same /proc start time), watching
  // them through a pidfd and keeping their restart counts. Records of dead
  // processes are removed. Adopted workloads that the next Apply does not
  // contain, or contains with another spec_hash, are stopped (and restarted).
  // An error only when the store cannot be read.
  Status Adopt();

  // Reconciles to `specs` (already validated; names unique): starts new
  // workloads, restarts only those whose spec_hash changed (graceful stop
  // first), stops removed ones gracefully. Idempotent.
  void Apply(const std::vector<outpost::v1::WorkloadSpec>& specs);

  // The status of every workload (in name order), including ones still
  // stopping after removal.
  std::vector<outpost::v1::WorkloadStatus> Statuses() const;

  // True when no workload is in transition: each is running, waiting, in
  // backoff, stopped or failed, and no removed workload is still stopping.
  bool Settled() const;

  // Replaces the GPU list (after discovery noticed a change); workloads
  // waiting for GPUs are re-evaluated, running ones are not restarted.
  void SetGpus(std::vector<outpost::v1::Gpu> gpus);

  // Agent shutdown or upgrade: stop watching (close pidfds, cancel timers),
  // leave every workload running, keep the records for the next Adopt().
  // The supervisor is inert afterwards.
  void Detach();

  // Stops every workload gracefully (SIGTERM, SIGKILL after its grace),
  // removes their records, then calls `done` on the io_context. The
  // supervisor is inert afterwards (Apply ignored).
  void StopAll(std::function<void()> done);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::agent
