// The child of the store crash test: opens the database given as argv[1] and
// commits transactions until it is killed. Each transaction inserts the rows
// of crash::Payload for the next transaction number; its number is written to
// stdout (one line, one write(2)) only after Commit() returned. "ready" is
// written once the database is open.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shared/store/store.hpp"
#include "tests/unit/store/crash_schema.hpp"

namespace {

using outpost::Status;
using namespace outpost::store;

bool WriteLine(const std::string& line) {
  std::string out = line + "\n";
  return ::write(STDOUT_FILENO, out.data(), out.size()) == static_cast<ssize_t>(out.size());
}

Status CommitOne(Database& db, std::int64_t txn) {
  OUTPOST_ASSIGN_OR_RETURN(Transaction tx, db.Begin());
  OUTPOST_ASSIGN_OR_RETURN(Statement insert,
                           db.Prepare("INSERT INTO rows(txn, seq, payload) VALUES(?, ?, ?)"));
  for (int seq = 0; seq < crash::RowsIn(txn); ++seq) {
    OUTPOST_TRY(insert.BindAll(txn, seq, crash::Payload(txn, seq)).ExecDone());
  }
  return tx.Commit();
}

outpost::Result<std::int64_t> LastCommitted(Database& db) {
  OUTPOST_ASSIGN_OR_RETURN(Statement query, db.Prepare("SELECT COALESCE(MAX(txn), 0) FROM rows"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) return outpost::Error(outpost::Errc::kInternal, "MAX() returned no row");
  return query.ColumnInt64(0);
}

int Fail(const outpost::Error& error) {
  std::fprintf(stderr, "store_crash_child: %s\n", error.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: store_crash_child DB\n");
    return 2;
  }
  OpenOptions options;
  options.migrations = crash::Migrations();
  auto db = Database::Open(argv[1], options);
  if (!db.ok()) return Fail(db.error());
  auto last = LastCommitted(**db);
  if (!last.ok()) return Fail(last.error());
  std::int64_t txn = *last;
  if (!WriteLine("ready")) return 1;
  while (true) {
    ++txn;
    if (Status s = CommitOne(**db, txn); !s.ok()) return Fail(s.error());
    if (!WriteLine(std::to_string(txn))) return 1;
    // Checkpoints now and then, so that kills also land in one.
    if (txn % 32 == 0) {
      if (Status s = (*db)->Exec("PRAGMA wal_checkpoint(TRUNCATE)"); !s.ok())
        return Fail(s.error());
    }
  }
}
