// outpost::agent::state::AgentStore — agent.db, the agent's memory and the
// source of truth for what runs on the device.
//
// Tables (schema in agent_store.cpp, applied by shared/store migrations):
//   identity         one row: device id, hub and broker URLs (written by join)
//   desired          one row: the held generation, the signed bytes as
//                    received, the DesiredState bytes
//   desired_workload the held document's workload specs, one row each
//   agent_state      one row: applied generation, document counters,
//                    report_seq reservation, outbox marks (next_seq,
//                    acked_seq, dropped), connection state and since, the
//                    daemon's pid and start time
//   outbox           seq INTEGER PRIMARY KEY, event type, time, Event bytes
//   process_records  the runtime's ProcessRecords (re-adoption after restart)
//   workload_status  the last workload statuses (for `status` with the daemon down)
//
// One AgentStore per process and thread (the daemon's io thread); the CLI
// opens its own read-only one. It implements the sync engine's SyncStore and
// the runtime's ProcessRecordStore.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/runtime/supervisor.hpp"
#include "agent/sync/sync_store.hpp"
#include "outpost.pb.h"
#include "shared/core/result.hpp"
#include "shared/store/store.hpp"

namespace outpost::agent::state {

struct Identity {
  std::string device_id;
  std::string hub_url;     // https://host:port
  std::string broker_url;  // ssl://host:port
  std::string name;        // as requested at join
  std::map<std::string, std::string> labels;
  std::int64_t enrolled_at_ms = 0;
};

struct ConnectionState {
  bool connected = false;
  std::int64_t since_ms = 0;           // when it last changed (Unix ms); 0: never
  std::int64_t last_connected_ms = 0;  // the last time a connection came up
  std::string detail;                  // why the last connect failed / link dropped
};

// Everything `status` shows, read in one go.
struct Snapshot {
  std::optional<Identity> identity;
  std::uint64_t held_generation = 0;
  std::uint64_t applied_generation = 0;
  std::int64_t desired_stored_at_ms = 0;
  std::int64_t applied_at_ms = 0;
  sync::DocumentCounters counters;
  sync::OutboxMarks outbox;
  ConnectionState connection;
  std::int64_t daemon_pid = 0;
  std::int64_t daemon_started_ms = 0;
  std::vector<outpost::v1::WorkloadSpec> desired_workloads;
  std::vector<outpost::v1::WorkloadStatus> workloads;  // last snapshot the daemon saved
  std::int64_t workloads_saved_ms = 0;
  std::vector<ProcessRecord> processes;
};

struct OpenOptions {
  bool read_only = false;
  std::uint64_t outbox_max_events = 100000;
  // How many report_seq values one write reserves (a restart skips the rest).
  std::uint64_t report_seq_block = 64;
};

class AgentStore : public sync::SyncStore, public ProcessRecordStore {
 public:
  static Result<std::unique_ptr<AgentStore>> Open(const std::string& path,
                                                  const OpenOptions& options = {});
  static std::vector<store::Migration> Migrations();

  // --- identity (join) -------------------------------------------------------
  Result<std::optional<Identity>> LoadIdentity();
  Status SaveIdentity(const Identity& identity);

  // --- connection and daemon (written by the daemon, read by status) --------
  Status SetConnection(const ConnectionState& state);
  Status SetDaemon(std::int64_t pid, std::int64_t started_ms);
  Status SaveWorkloadStatuses(const std::vector<outpost::v1::WorkloadStatus>& statuses,
                              std::int64_t now_ms);

  Result<Snapshot> ReadSnapshot();

  // --- SyncStore ------------------------------------------------------------
  std::uint64_t HeldGeneration() const override { return held_generation_; }
  std::uint64_t AppliedGeneration() const override { return applied_generation_; }
  sync::DocumentCounters Counters() const override { return counters_; }
  sync::OutboxMarks Marks() const override { return marks_; }
  Result<std::optional<sync::HeldDesired>> LoadHeld() override;
  Status StoreDesired(std::uint64_t generation, std::string_view signed_bytes,
                      std::string_view document_bytes,
                      const std::vector<outpost::v1::WorkloadSpec>& workloads) override;
  Status MarkApplied(std::uint64_t generation, outpost::v1::Event applied_event) override;
  Status CountIgnored(sync::Ignored kind) override;
  Status RecordRejected(outpost::v1::Event rejected_event) override;
  Result<std::uint64_t> NextReportSeq() override;
  Result<std::uint64_t> Append(outpost::v1::Event event) override;
  Result<std::vector<sync::OutboxRow>> ReadOutbox(std::uint64_t from_seq, std::size_t max_events,
                                                  std::size_t max_bytes) override;
  Status Ack(std::uint64_t acked_seq) override;

  // The signed bytes of the held document, as received (nullopt: none).
  Result<std::optional<std::string>> LoadSignedDesired();

  // --- ProcessRecordStore ---------------------------------------------------
  Status Save(const ProcessRecord& record) override;
  Status Remove(const std::string& name) override;
  Result<std::vector<ProcessRecord>> LoadAll() override;

  store::Database& db() { return *db_; }

 private:
  AgentStore(std::unique_ptr<store::Database> db, const OpenOptions& options)
      : db_(std::move(db)), options_(options) {}
  struct Cached {
    std::uint64_t held_generation = 0;
    std::uint64_t applied_generation = 0;
    sync::DocumentCounters counters;
    sync::OutboxMarks marks;
    std::uint64_t report_seq_reserved = 0;
  };
  Result<Cached> ReadCached();
  Status LoadCache();
  // Inside an open transaction: the bound, then the event. Updates marks_
  // only through `marks` (committed by the caller).
  Result<std::uint64_t> AppendInTx(outpost::v1::Event event, sync::OutboxMarks& marks);
  Result<std::uint64_t> FirstSeq();

  std::unique_ptr<store::Database> db_;
  OpenOptions options_;
  std::uint64_t held_generation_ = 0;
  std::uint64_t applied_generation_ = 0;
  sync::DocumentCounters counters_;
  sync::OutboxMarks marks_;
  std::uint64_t report_seq_next_ = 0;      // the next value to hand out
  std::uint64_t report_seq_reserved_ = 0;  // persisted: every value <= is spent
};

// Labels as stored ("k=v" lines) and back.
std::string EncodeLabels(const std::map<std::string, std::string>& labels);
std::map<std::string, std::string> DecodeLabels(const std::string& text);

}  // namespace outpost::agent::state
