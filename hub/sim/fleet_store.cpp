#include "hub/sim/fleet_store.hpp"

#include <sys/stat.h>

#include "shared/core/fs.hpp"
#include "shared/store/store.hpp"

namespace outpost::hub::sim {

namespace {

const std::vector<store::Migration>& Migrations() {
  static const std::vector<store::Migration> kMigrations = {
      {1, R"sql(
CREATE TABLE meta(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL);
CREATE TABLE devices(
  idx INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  key_pem TEXT NOT NULL,
  cert_pem TEXT NOT NULL,
  report_seq INTEGER NOT NULL DEFAULT 0,
  next_seq INTEGER NOT NULL DEFAULT 1,
  acked_seq INTEGER NOT NULL DEFAULT 0,
  held_generation INTEGER NOT NULL DEFAULT 0,
  applied_generation INTEGER NOT NULL DEFAULT 0);
)sql"},
  };
  return kMigrations;
}

Result<std::string> GetMeta(store::Database& db, const char* key) {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db.Prepare("SELECT value FROM meta WHERE key = ?"));
  st.Bind(1, key);
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::string();
  return st.ColumnText(0);
}

}  // namespace

FleetStore::FleetStore(std::unique_ptr<store::Database> db) : db_(std::move(db)) {}
FleetStore::~FleetStore() = default;

Result<std::unique_ptr<FleetStore>> FleetStore::Open(const std::string& state_dir) {
  OUTPOST_TRY(fs::MakeDirs(state_dir, 0700));
  store::OpenOptions options;
  options.migrations = Migrations();
  // The simulator's own bookkeeping: a crash may lose the newest counters,
  // which the report_seq reservation and floor_seq cover.
  options.synchronous = store::Synchronous::kNormal;
  auto db = store::Database::Open(fs::Join(state_dir, kFileName), options);
  if (!db.ok()) return db.error().WithContext("opening " + fs::Join(state_dir, kFileName));
  return std::unique_ptr<FleetStore>(new FleetStore(std::move(*db)));
}

Result<FleetMeta> FleetStore::Meta() {
  FleetMeta meta;
  OUTPOST_ASSIGN_OR_RETURN(meta.hub_url, GetMeta(*db_, "hub_url"));
  OUTPOST_ASSIGN_OR_RETURN(meta.broker_url, GetMeta(*db_, "broker_url"));
  OUTPOST_ASSIGN_OR_RETURN(meta.ca_pem, GetMeta(*db_, "ca_pem"));
  return meta;
}

Status FleetStore::SetMeta(const FleetMeta& meta) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare("INSERT INTO meta(key, value) VALUES(?, ?) "
                                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
  for (const auto& [k, v] : {std::pair<const char*, const std::string*>{"hub_url", &meta.hub_url},
                             {"broker_url", &meta.broker_url},
                             {"ca_pem", &meta.ca_pem}}) {
    st.BindAll(k, std::string_view(*v));
    OUTPOST_TRY(st.ExecDone());
  }
  return tx.Commit();
}

Result<std::size_t> FleetStore::Count() {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT count(*) FROM devices"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? static_cast<std::size_t>(st.ColumnInt64(0)) : 0;
}

Result<std::vector<DeviceRecord>> FleetStore::Load(std::size_t limit) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT id, key_pem, cert_pem, report_seq, next_seq, acked_seq, "
                            "held_generation, applied_generation FROM devices ORDER BY idx "
                            "LIMIT ?"));
  st.Bind(1, limit == 0 ? std::int64_t{-1} : static_cast<std::int64_t>(limit));
  std::vector<DeviceRecord> out;
  for (;;) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    DeviceRecord d;
    d.id = st.ColumnText(0);
    d.key_pem = st.ColumnText(1);
    d.cert_pem = st.ColumnText(2);
    d.counters.report_seq = static_cast<std::uint64_t>(st.ColumnInt64(3));
    d.counters.next_seq = static_cast<std::uint64_t>(st.ColumnInt64(4));
    d.counters.acked_seq = static_cast<std::uint64_t>(st.ColumnInt64(5));
    d.counters.held_generation = static_cast<std::uint64_t>(st.ColumnInt64(6));
    d.counters.applied_generation = static_cast<std::uint64_t>(st.ColumnInt64(7));
    out.push_back(std::move(d));
  }
  return out;
}

Status FleetStore::Insert(const std::vector<DeviceRecord>& devices) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("INSERT INTO devices(id, key_pem, cert_pem) VALUES(?, ?, ?)"));
  for (const auto& d : devices) {
    st.BindAll(std::string_view(d.id), std::string_view(d.key_pem), std::string_view(d.cert_pem));
    OUTPOST_TRY(st.ExecDone());
  }
  return tx.Commit();
}

Status FleetStore::ReserveReportSeqs() {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare("UPDATE devices SET report_seq = report_seq + ?"));
  st.Bind(1, static_cast<std::int64_t>(kReportSeqReserve));
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_TRY(st.ExecDone());
  return tx.Commit();
}

Status FleetStore::SaveCounters(
    const std::vector<std::pair<std::string, DeviceCounters>>& counters) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, db_->Begin());
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("UPDATE devices SET report_seq = ?, next_seq = ?, acked_seq = ?, "
                            "held_generation = ?, applied_generation = ? WHERE id = ?"));
  for (const auto& [id, c] : counters) {
    st.BindAll(c.report_seq, c.next_seq, c.acked_seq, c.held_generation, c.applied_generation,
               std::string_view(id));
    OUTPOST_TRY(st.ExecDone());
  }
  return tx.Commit();
}

}  // namespace outpost::hub::sim
