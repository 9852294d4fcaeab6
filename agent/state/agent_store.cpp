#include "agent/state/agent_store.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

namespace outpost::agent::state {
namespace {

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE identity(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  device_id TEXT NOT NULL,
  hub_url TEXT NOT NULL,
  broker_url TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '',
  enrolled_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE desired(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  generation INTEGER NOT NULL,
  signed BLOB NOT NULL,
  document BLOB NOT NULL,
  stored_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE desired_workload(
  position INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  spec_hash TEXT NOT NULL,
  spec BLOB NOT NULL
);
CREATE TABLE agent_state(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  applied_generation INTEGER NOT NULL DEFAULT 0,
  applied_at_ms INTEGER NOT NULL DEFAULT 0,
  stale_documents INTEGER NOT NULL DEFAULT 0,
  duplicate_documents INTEGER NOT NULL DEFAULT 0,
  rejected_documents INTEGER NOT NULL DEFAULT 0,
  report_seq_reserved INTEGER NOT NULL DEFAULT 0,
  next_seq INTEGER NOT NULL DEFAULT 1,
  acked_seq INTEGER NOT NULL DEFAULT 0,
  dropped_events INTEGER NOT NULL DEFAULT 0,
  connected INTEGER NOT NULL DEFAULT 0,
  connection_since_ms INTEGER NOT NULL DEFAULT 0,
  last_connected_ms INTEGER NOT NULL DEFAULT 0,
  connection_detail TEXT NOT NULL DEFAULT '',
  daemon_pid INTEGER NOT NULL DEFAULT 0,
  daemon_started_ms INTEGER NOT NULL DEFAULT 0,
  workloads_saved_ms INTEGER NOT NULL DEFAULT 0
);
INSERT INTO agent_state(id) VALUES (1);
CREATE TABLE outbox(
  seq INTEGER PRIMARY KEY,
  type INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  bytes BLOB NOT NULL
);
CREATE TABLE process_records(
  name TEXT PRIMARY KEY,
  spec_hash TEXT NOT NULL,
  pid INTEGER NOT NULL,
  start_time_ticks INTEGER NOT NULL,
  restarts INTEGER NOT NULL DEFAULT 0,
  started_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE workload_status(
  name TEXT PRIMARY KEY,
  status BLOB NOT NULL
);
)sql";

std::uint64_t U64(std::int64_t v) {
  return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

}  // namespace

std::string EncodeLabels(const std::map<std::string, std::string>& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    out += k;
    out += '=';
    out += v;
    out += '\n';
  }
  return out;
}

std::map<std::string, std::string> DecodeLabels(const std::string& text) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::vector<store::Migration> AgentStore::Migrations() {
  return {{1, kSchemaV1}};
}

Result<std::unique_ptr<AgentStore>> AgentStore::Open(const std::string& path,
                                                     const OpenOptions& options) {
  store::OpenOptions db_options;
  db_options.read_only = options.read_only;
  db_options.migrations = Migrations();
  OUTPOST_ASSIGN_OR_RETURN(auto db, store::Database::Open(path, db_options));
  std::unique_ptr<AgentStore> s(new AgentStore(std::move(db), options));
  OUTPOST_TRY(s->LoadCache());
  return s;
}

Result<std::uint64_t> AgentStore::FirstSeq() {
  OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT seq FROM outbox ORDER BY seq LIMIT 1"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::uint64_t{0};
  return U64(q.ColumnInt64(0));
}

Result<AgentStore::Cached> AgentStore::ReadCached() {
  Cached c;
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT generation FROM desired WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    c.held_generation = row ? U64(q.ColumnInt64(0)) : 0;
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(
        auto q, db_->Prepare("SELECT applied_generation, stale_documents, duplicate_documents, "
                             "rejected_documents, report_seq_reserved, next_seq, acked_seq, "
                             "dropped_events FROM agent_state WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Error(Errc::kCorrupt, "agent.db has no agent_state row");
    c.applied_generation = U64(q.ColumnInt64(0));
    c.counters.stale = U64(q.ColumnInt64(1));
    c.counters.duplicate = U64(q.ColumnInt64(2));
    c.counters.rejected = U64(q.ColumnInt64(3));
    c.report_seq_reserved = U64(q.ColumnInt64(4));
    c.marks.next_seq = U64(q.ColumnInt64(5));
    if (c.marks.next_seq == 0) c.marks.next_seq = 1;
    c.marks.acked_seq = U64(q.ColumnInt64(6));
    c.marks.dropped_total = U64(q.ColumnInt64(7));
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT COUNT(*) FROM outbox"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    c.marks.depth = row ? U64(q.ColumnInt64(0)) : 0;
  }
  OUTPOST_ASSIGN_OR_RETURN(std::uint64_t first, FirstSeq());
  c.marks.floor_seq = first == 0 ? c.marks.next_seq : first;
  return c;
}

Status AgentStore::LoadCache() {
  OUTPOST_ASSIGN_OR_RETURN(Cached c, ReadCached());
  held_generation_ = c.held_generation;
  applied_generation_ = c.applied_generation;
  counters_ = c.counters;
  marks_ = c.marks;
  report_seq_reserved_ = c.report_seq_reserved;
  report_seq_next_ = report_seq_reserved_ + 1;
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Identity, connection, daemon

Result<std::optional<Identity>> AgentStore::LoadIdentity() {
  OUTPOST_ASSIGN_OR_RETURN(auto q,
                           db_->Prepare("SELECT device_id, hub_url, broker_url, name, labels, "
                                        "enrolled_at_ms FROM identity WHERE id = 1"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<Identity>();
  Identity id;
  id.device_id = q.ColumnText(0);
  id.hub_url = q.ColumnText(1);
  id.broker_url = q.ColumnText(2);
  id.name = q.ColumnText(3);
  id.labels = DecodeLabels(q.ColumnText(4));
  id.enrolled_at_ms = q.ColumnInt64(5);
  return std::optional<Identity>(std::move(id));
}

Status AgentStore::SaveIdentity(const Identity& identity) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto q, db_->Prepare("INSERT OR REPLACE INTO identity(id, device_id, hub_url, broker_url, "
                           "name, labels, enrolled_at_ms) VALUES (1, ?, ?, ?, ?, ?, ?)"));
  q.BindAll(std::string_view(identity.device_id), std::string_view(identity.hub_url),
            std::string_view(identity.broker_url), std::string_view(identity.name),
            std::string_view(EncodeLabels(identity.labels)), identity.enrolled_at_ms);
  OUTPOST_TRY(q.ExecDone());
  return OkStatus();
}

Status AgentStore::SetConnection(const ConnectionState& state) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto q, db_->Prepare("UPDATE agent_state SET connected = ?, connection_since_ms = ?, "
                           "last_connected_ms = ?, connection_detail = ? WHERE id = 1"));
  std::string detail = state.detail.substr(0, 512);
  q.BindAll(state.connected ? 1 : 0, state.since_ms, state.last_connected_ms,
            std::string_view(detail));
  OUTPOST_TRY(q.ExecDone());
  return OkStatus();
}

Status AgentStore::SetDaemon(std::int64_t pid, std::int64_t started_ms) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto q,
      db_->Prepare("UPDATE agent_state SET daemon_pid = ?, daemon_started_ms = ? WHERE id = 1"));
  q.BindAll(pid, started_ms);
  OUTPOST_TRY(q.ExecDone());
  return OkStatus();
}

Status AgentStore::SaveWorkloadStatuses(const std::vector<outpost::v1::WorkloadStatus>& statuses,
                                        std::int64_t now_ms) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_TRY(db_->Exec("DELETE FROM workload_status"));
  OUTPOST_ASSIGN_OR_RETURN(auto ins,
                           db_->Prepare("INSERT INTO workload_status(name, status) VALUES (?, ?)"));
  for (const auto& s : statuses) {
    std::string bytes = s.SerializeAsString();
    ins.BindAll(std::string_view(s.name()), store::Blob{bytes});
    OUTPOST_TRY(ins.ExecDone());
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto upd, db_->Prepare("UPDATE agent_state SET workloads_saved_ms = ? WHERE id = 1"));
  upd.Bind(1, now_ms);
  OUTPOST_TRY(upd.ExecDone());
  return tx.Commit();
}

Result<Snapshot> AgentStore::ReadSnapshot() {
  Snapshot snap;
  // One read transaction: a consistent view while the daemon writes.
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin(store::TxMode::kDeferred));
  OUTPOST_ASSIGN_OR_RETURN(snap.identity, LoadIdentity());
  // Read, not cached: a snapshot must not disturb the writer's state (the
  // report_seq reservation in particular).
  OUTPOST_ASSIGN_OR_RETURN(Cached cached, ReadCached());
  snap.held_generation = cached.held_generation;
  snap.applied_generation = cached.applied_generation;
  snap.counters = cached.counters;
  snap.outbox = cached.marks;
  {
    OUTPOST_ASSIGN_OR_RETURN(
        auto q,
        db_->Prepare("SELECT applied_at_ms, connected, connection_since_ms, "
                     "last_connected_ms, connection_detail, daemon_pid, "
                     "daemon_started_ms, workloads_saved_ms FROM agent_state WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      snap.applied_at_ms = q.ColumnInt64(0);
      snap.connection.connected = q.ColumnInt64(1) != 0;
      snap.connection.since_ms = q.ColumnInt64(2);
      snap.connection.last_connected_ms = q.ColumnInt64(3);
      snap.connection.detail = q.ColumnText(4);
      snap.daemon_pid = q.ColumnInt64(5);
      snap.daemon_started_ms = q.ColumnInt64(6);
      snap.workloads_saved_ms = q.ColumnInt64(7);
    }
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT stored_at_ms FROM desired WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) snap.desired_stored_at_ms = q.ColumnInt64(0);
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto held, LoadHeld());
    if (held.has_value()) snap.desired_workloads = std::move(held->workloads);
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q,
                             db_->Prepare("SELECT status FROM workload_status ORDER BY name"));
    for (;;) {
      OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      outpost::v1::WorkloadStatus s;
      if (s.ParseFromString(q.ColumnBlob(0))) snap.workloads.push_back(std::move(s));
    }
  }
  OUTPOST_ASSIGN_OR_RETURN(snap.processes, LoadAll());
  OUTPOST_TRY(tx.Rollback());
  return snap;
}

// ---------------------------------------------------------------------------
// Desired state

Result<std::optional<sync::HeldDesired>> AgentStore::LoadHeld() {
  sync::HeldDesired held;
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT generation FROM desired WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<sync::HeldDesired>();
    held.generation = U64(q.ColumnInt64(0));
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto q, db_->Prepare("SELECT name, spec FROM desired_workload ORDER BY position"));
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    outpost::v1::WorkloadSpec spec;
    if (!spec.ParseFromString(q.ColumnBlob(1)))
      return Error(Errc::kCorrupt, "agent.db: the stored spec of workload \"" + q.ColumnText(0) +
                                       "\" does not parse");
    held.workloads.push_back(std::move(spec));
  }
  return std::optional<sync::HeldDesired>(std::move(held));
}

Result<std::optional<std::string>> AgentStore::LoadSignedDesired() {
  OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT signed FROM desired WHERE id = 1"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<std::string>();
  return std::optional<std::string>(q.ColumnBlob(0));
}

Status AgentStore::StoreDesired(std::uint64_t generation, std::string_view signed_bytes,
                                std::string_view document_bytes,
                                const std::vector<outpost::v1::WorkloadSpec>& workloads) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  // Re-read inside the write lock: another writer must not have moved past us.
  std::uint64_t held = 0;
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT generation FROM desired WHERE id = 1"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    held = row ? U64(q.ColumnInt64(0)) : 0;
  }
  if (generation <= held)
    return Error(Errc::kFailedPrecondition, "generation " + std::to_string(generation) +
                                                " is not above the held " + std::to_string(held));
  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q,
                             db_->Prepare("INSERT OR REPLACE INTO desired(id, generation, signed, "
                                          "document, stored_at_ms) VALUES (1, ?, ?, ?, ?)"));
    q.BindAll(generation, store::Blob{signed_bytes}, store::Blob{document_bytes}, now_ms);
    OUTPOST_TRY(q.ExecDone());
  }
  OUTPOST_TRY(db_->Exec("DELETE FROM desired_workload"));
  {
    OUTPOST_ASSIGN_OR_RETURN(
        auto q, db_->Prepare("INSERT INTO desired_workload(position, name, spec_hash, spec) "
                             "VALUES (?, ?, ?, ?)"));
    int position = 0;
    for (const auto& spec : workloads) {
      std::string bytes = spec.SerializeAsString();
      q.BindAll(position++, std::string_view(spec.name()), std::string_view(spec.spec_hash()),
                store::Blob{bytes});
      OUTPOST_TRY(q.ExecDone());
    }
  }
  OUTPOST_TRY(tx.Commit());
  held_generation_ = generation;
  return OkStatus();
}

Status AgentStore::MarkApplied(std::uint64_t generation, outpost::v1::Event applied_event) {
  if (generation > held_generation_)
    return Error(Errc::kFailedPrecondition, "cannot apply generation " +
                                                std::to_string(generation) + " above the held " +
                                                std::to_string(held_generation_));
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  const std::int64_t now_ms = applied_event.time_ms();
  {
    OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("UPDATE agent_state SET applied_generation = ?, "
                                                  "applied_at_ms = ? WHERE id = 1"));
    q.BindAll(generation, now_ms);
    OUTPOST_TRY(q.ExecDone());
  }
  sync::OutboxMarks marks = marks_;
  OUTPOST_TRY(AppendInTx(std::move(applied_event), marks));
  OUTPOST_TRY(tx.Commit());
  applied_generation_ = generation;
  marks_ = marks;
  return OkStatus();
}

Status AgentStore::CountIgnored(sync::Ignored kind) {
  const char* sql =
      kind == sync::Ignored::kStale
          ? "UPDATE agent_state SET stale_documents = stale_documents + 1 WHERE id = 1"
          : "UPDATE agent_state SET duplicate_documents = duplicate_documents + 1 "
            "WHERE id = 1";
  OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare(sql));
  OUTPOST_TRY(q.ExecDone());
  if (kind == sync::Ignored::kStale)
    ++counters_.stale;
  else
    ++counters_.duplicate;
  return OkStatus();
}

Status AgentStore::RecordRejected(outpost::v1::Event rejected_event) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_TRY(
      db_->Exec("UPDATE agent_state SET rejected_documents = rejected_documents + 1 WHERE id = 1"));
  sync::OutboxMarks marks = marks_;
  OUTPOST_TRY(AppendInTx(std::move(rejected_event), marks));
  OUTPOST_TRY(tx.Commit());
  ++counters_.rejected;
  marks_ = marks;
  return OkStatus();
}

Result<std::uint64_t> AgentStore::NextReportSeq() {
  if (report_seq_next_ > report_seq_reserved_) {
    std::uint64_t reserve =
        report_seq_reserved_ + std::max<std::uint64_t>(options_.report_seq_block, 1);
    OUTPOST_ASSIGN_OR_RETURN(
        auto q, db_->Prepare("UPDATE agent_state SET report_seq_reserved = ? WHERE id = 1"));
    q.Bind(1, reserve);
    OUTPOST_TRY(q.ExecDone());
    report_seq_reserved_ = reserve;
  }
  return report_seq_next_++;
}

// ---------------------------------------------------------------------------
// Outbox

Result<std::uint64_t> AgentStore::AppendInTx(outpost::v1::Event event, sync::OutboxMarks& marks) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto ins, db_->Prepare("INSERT INTO outbox(seq, type, time_ms, bytes) VALUES (?, ?, ?, ?)"));
  auto insert = [&](outpost::v1::Event& e) -> Result<std::uint64_t> {
    std::uint64_t seq = marks.next_seq++;
    e.set_seq(seq);
    std::string bytes = e.SerializeAsString();
    ins.BindAll(seq, static_cast<int>(e.type()), e.time_ms(), store::Blob{bytes});
    OUTPOST_TRY(ins.ExecDone());
    ++marks.depth;
    return seq;
  };
  std::uint64_t drop = sync::RowsToDrop(marks.depth, options_.outbox_max_events);
  if (drop > 0) {
    OUTPOST_ASSIGN_OR_RETURN(auto del,
                             db_->Prepare("DELETE FROM outbox WHERE seq IN "
                                          "(SELECT seq FROM outbox ORDER BY seq LIMIT ?)"));
    del.Bind(1, drop);
    OUTPOST_ASSIGN_OR_RETURN(int deleted, del.ExecDone());
    marks.depth -= std::min<std::uint64_t>(marks.depth, static_cast<std::uint64_t>(deleted));
    marks.dropped_total += static_cast<std::uint64_t>(deleted);
    outpost::v1::Event dropped;
    dropped.set_type(outpost::v1::EVENT_TYPE_EVENTS_DROPPED);
    dropped.set_time_ms(event.time_ms());
    dropped.set_dropped(static_cast<std::uint64_t>(deleted));
    dropped.set_message("outbox full: dropped the " + std::to_string(deleted) + " oldest events");
    OUTPOST_TRY(insert(dropped));
  }
  OUTPOST_ASSIGN_OR_RETURN(std::uint64_t seq, insert(event));
  {
    OUTPOST_ASSIGN_OR_RETURN(
        auto upd,
        db_->Prepare("UPDATE agent_state SET next_seq = ?, dropped_events = ? WHERE id = 1"));
    upd.BindAll(marks.next_seq, marks.dropped_total);
    OUTPOST_TRY(upd.ExecDone());
  }
  OUTPOST_ASSIGN_OR_RETURN(std::uint64_t first, FirstSeq());
  marks.floor_seq = first == 0 ? marks.next_seq : first;
  return seq;
}

Result<std::uint64_t> AgentStore::Append(outpost::v1::Event event) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  sync::OutboxMarks marks = marks_;
  OUTPOST_ASSIGN_OR_RETURN(std::uint64_t seq, AppendInTx(std::move(event), marks));
  OUTPOST_TRY(tx.Commit());
  marks_ = marks;
  return seq;
}

Result<std::vector<sync::OutboxRow>> AgentStore::ReadOutbox(std::uint64_t from_seq,
                                                            std::size_t max_events,
                                                            std::size_t max_bytes) {
  std::vector<sync::OutboxRow> out;
  if (max_events == 0) return out;
  OUTPOST_ASSIGN_OR_RETURN(
      auto q, db_->Prepare("SELECT seq, bytes FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?"));
  q.BindAll(from_seq, max_events);
  std::size_t bytes = 0;
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    sync::OutboxRow r;
    r.seq = U64(q.ColumnInt64(0));
    r.bytes = q.ColumnBlob(1);
    if (!out.empty() && bytes + r.bytes.size() > max_bytes) break;
    bytes += r.bytes.size();
    out.push_back(std::move(r));
  }
  return out;
}

Status AgentStore::Ack(std::uint64_t acked_seq) {
  if (marks_.next_seq > 0 && acked_seq >= marks_.next_seq) acked_seq = marks_.next_seq - 1;
  if (acked_seq <= marks_.acked_seq) return OkStatus();
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  sync::OutboxMarks marks = marks_;
  {
    OUTPOST_ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM outbox WHERE seq <= ?"));
    del.Bind(1, acked_seq);
    OUTPOST_ASSIGN_OR_RETURN(int deleted, del.ExecDone());
    marks.depth -= std::min<std::uint64_t>(marks.depth, static_cast<std::uint64_t>(deleted));
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto upd,
                             db_->Prepare("UPDATE agent_state SET acked_seq = ? WHERE id = 1"));
    upd.Bind(1, acked_seq);
    OUTPOST_TRY(upd.ExecDone());
  }
  marks.acked_seq = acked_seq;
  OUTPOST_ASSIGN_OR_RETURN(std::uint64_t first, FirstSeq());
  marks.floor_seq = first == 0 ? marks.next_seq : first;
  OUTPOST_TRY(tx.Commit());
  marks_ = marks;
  return OkStatus();
}

// ---------------------------------------------------------------------------
// ProcessRecordStore

Status AgentStore::Save(const ProcessRecord& record) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto q, db_->Prepare("INSERT OR REPLACE INTO process_records(name, spec_hash, pid, "
                           "start_time_ticks, restarts, started_at_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  q.BindAll(std::string_view(record.name), std::string_view(record.spec_hash), record.pid,
            record.start_time_ticks, record.restarts, record.started_at_ms);
  OUTPOST_TRY(q.ExecDone());
  return OkStatus();
}

Status AgentStore::Remove(const std::string& name) {
  OUTPOST_ASSIGN_OR_RETURN(auto q, db_->Prepare("DELETE FROM process_records WHERE name = ?"));
  q.Bind(1, std::string_view(name));
  OUTPOST_TRY(q.ExecDone());
  return OkStatus();
}

Result<std::vector<ProcessRecord>> AgentStore::LoadAll() {
  OUTPOST_ASSIGN_OR_RETURN(auto q,
                           db_->Prepare("SELECT name, spec_hash, pid, start_time_ticks, restarts, "
                                        "started_at_ms FROM process_records ORDER BY name"));
  std::vector<ProcessRecord> out;
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ProcessRecord r;
    r.name = q.ColumnText(0);
    r.spec_hash = q.ColumnText(1);
    r.pid = q.ColumnInt(2);
    r.start_time_ticks = U64(q.ColumnInt64(3));
    r.restarts = static_cast<std::uint32_t>(U64(q.ColumnInt64(4)));
    r.started_at_ms = q.ColumnInt64(5);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace outpost::agent::state
