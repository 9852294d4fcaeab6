// What the sync engine needs to remember, as an interface: agent/state
// implements it on agent.db (SQLite); MemorySyncStore implements it in memory
// for tests. Both pass the same contract tests (tests/unit/agent_sync).
//
// Every mutating call is one transaction: when it returns OK the change is
// durable; when it fails nothing changed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace outpost::agent::sync {

// Desired documents the agent ignored or refused (reported, shown by status).
struct DocumentCounters {
  std::uint64_t stale = 0;      // generation below the held one
  std::uint64_t duplicate = 0;  // generation equal to the held one
  std::uint64_t rejected = 0;   // too large, unparsable, bad signature, wrong device, invalid
};

// The outbox's sequence marks.
struct OutboxMarks {
  std::uint64_t depth = 0;      // rows in the outbox
  std::uint64_t next_seq = 1;   // the seq the next event gets (seqs start at 1, no gaps)
  std::uint64_t acked_seq = 0;  // highest seq the hub acknowledged
  // Every seq below floor_seq was acked or dropped: the first row's seq, or
  // next_seq when the outbox is empty.
  std::uint64_t floor_seq = 1;
  std::uint64_t dropped_total = 0;  // rows dropped by the bound, ever
};

struct OutboxRow {
  std::uint64_t seq = 0;
  std::string bytes;  // a serialized outpost.v1.Event whose seq field is `seq`
};

// The held desired document's workloads.
struct HeldDesired {
  std::uint64_t generation = 0;
  std::vector<outpost::v1::WorkloadSpec> workloads;
};

enum class Ignored { kStale, kDuplicate };

// How many of the oldest rows the bound drops before an insert into an outbox
// holding `depth` rows with room for `max_events`: 0 while there is room for
// the new event; otherwise enough to make room for the new event plus the
// EVENTS_DROPPED event, at least 1/20 of the bound so that a long outage drops
// in chunks (one EVENTS_DROPPED per chunk, not one per event).
std::uint64_t RowsToDrop(std::uint64_t depth, std::uint64_t max_events);

class SyncStore {
 public:
  virtual ~SyncStore() = default;

  // Served from memory (loaded at open, kept current by the writers).
  virtual std::uint64_t HeldGeneration() const = 0;
  virtual std::uint64_t AppliedGeneration() const = 0;
  virtual DocumentCounters Counters() const = 0;
  virtual OutboxMarks Marks() const = 0;

  // The held document's workloads; nullopt when none was ever stored.
  virtual Result<std::optional<HeldDesired>> LoadHeld() = 0;

  // Stores an accepted document: the signed bytes as received, the document,
  // its parsed workloads and the new held generation, in one transaction.
  // Refuses (kFailedPrecondition) a generation not above the held one.
  virtual Status StoreDesired(std::uint64_t generation, std::string_view signed_bytes,
                              std::string_view document_bytes,
                              const std::vector<outpost::v1::WorkloadSpec>& workloads) = 0;

  // Sets the applied generation and queues `applied_event` (its seq is
  // assigned), in one transaction. Refuses a generation above the held one.
  virtual Status MarkApplied(std::uint64_t generation, outpost::v1::Event applied_event) = 0;

  virtual Status CountIgnored(Ignored kind) = 0;
  // Counts a rejected document and queues `rejected_event`, in one transaction.
  virtual Status RecordRejected(outpost::v1::Event rejected_event) = 0;

  // The next report_seq: strictly greater than every one handed out before,
  // also across restarts (implementations may reserve blocks).
  virtual Result<std::uint64_t> NextReportSeq() = 0;

  // Queues an event: assigns the next seq (returned), applying the bound
  // first (RowsToDrop; the dropped rows are replaced by one EVENTS_DROPPED
  // event with `dropped` = their number, queued before `event`).
  virtual Result<std::uint64_t> Append(outpost::v1::Event event) = 0;

  // Rows with seq >= from_seq in seq order: at most `max_events`, and at most
  // `max_bytes` of event bytes (but always at least one row when there is one).
  virtual Result<std::vector<OutboxRow>> ReadOutbox(std::uint64_t from_seq, std::size_t max_events,
                                                    std::size_t max_bytes) = 0;

  // Deletes the rows with seq <= acked_seq and remembers it. A value below the
  // one held is ignored; one at or above next_seq is clamped to next_seq - 1.
  virtual Status Ack(std::uint64_t acked_seq) = 0;
};

// An in-memory SyncStore for tests. Not durable.
class MemorySyncStore : public SyncStore {
 public:
  explicit MemorySyncStore(std::uint64_t outbox_max_events = 100000)
      : max_events_(outbox_max_events) {}

  std::uint64_t HeldGeneration() const override { return held_.generation; }
  std::uint64_t AppliedGeneration() const override { return applied_; }
  DocumentCounters Counters() const override { return counters_; }
  OutboxMarks Marks() const override;
  Result<std::optional<HeldDesired>> LoadHeld() override;
  Status StoreDesired(std::uint64_t generation, std::string_view signed_bytes,
                      std::string_view document_bytes,
                      const std::vector<outpost::v1::WorkloadSpec>& workloads) override;
  Status MarkApplied(std::uint64_t generation, outpost::v1::Event applied_event) override;
  Status CountIgnored(Ignored kind) override;
  Status RecordRejected(outpost::v1::Event rejected_event) override;
  Result<std::uint64_t> NextReportSeq() override;
  Result<std::uint64_t> Append(outpost::v1::Event event) override;
  Result<std::vector<OutboxRow>> ReadOutbox(std::uint64_t from_seq, std::size_t max_events,
                                            std::size_t max_bytes) override;
  Status Ack(std::uint64_t acked_seq) override;

  const std::string& signed_bytes() const { return signed_; }

 private:
  std::uint64_t AppendOne(outpost::v1::Event event);

  std::uint64_t max_events_;
  HeldDesired held_;
  bool has_held_ = false;
  std::string signed_;
  std::uint64_t applied_ = 0;
  DocumentCounters counters_;
  std::uint64_t report_seq_ = 0;
  std::vector<OutboxRow> rows_;  // ascending seq
  std::uint64_t next_seq_ = 1;
  std::uint64_t acked_seq_ = 0;
  std::uint64_t dropped_total_ = 0;
};

}  // namespace outpost::agent::sync
