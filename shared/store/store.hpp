// outpost::store — the one SQLite layer of Outpost, shared by the hub (hub.db)
// and the agent (agent.db).
//
// Usage
//   store::OpenOptions options;
//   options.migrations = {{1, "CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB NOT NULL);"}};
//   OUTPOST_ASSIGN_OR_RETURN(auto db, store::Database::Open(dir + "/agent.db", options));
//   OUTPOST_ASSIGN_OR_RETURN(auto tx, db->Begin());
//   OUTPOST_ASSIGN_OR_RETURN(auto put, db->Prepare("INSERT INTO kv(k, v) VALUES(?, ?)"));
//   OUTPOST_TRY(put.Bind(1, key).Bind(2, store::Blob{bytes}).ExecDone());
//   OUTPOST_TRY(tx.Commit());  // leaving the scope without Commit() rolls back
//
// Threading
//   A Database (and every Statement and Transaction made from it) belongs to one
//   thread at a time; nothing in it is locked (the connection is opened with
//   SQLITE_OPEN_NOMUTEX). Threads that need the database concurrently open a
//   Database each: in WAL mode any number of readers run alongside one writer
//   and see the last committed snapshot; writers queue on the busy timeout.
//   Several processes may open the same file the same way.
//
// Durability
//   Every database runs in WAL mode: a commit appends to the -wal file, readers
//   are never blocked by the writer, and a crash at any point leaves either the
//   whole transaction or none of it. By default synchronous=FULL, which fsyncs
//   the WAL on every commit, so a transaction whose Commit() returned survives
//   a power cut, not only a process crash. Outpost needs that: the agent acks
//   desired state and the hub consumes enrollment tokens on the strength of a
//   commit. Synchronous::kNormal (fsync only at checkpoints; the newest commits
//   may be lost on power loss, the file never corrupts) is for caches that can
//   be rebuilt. The WAL is kept from growing past 64 MiB after checkpoints.
//   tests/unit/store/store_crash_test.cpp kills a committing process with
//   SIGKILL 200 times and checks integrity and every committed row each time.
//   New database files are created 0600 (-wal and -shm inherit the mode);
//   a symlink in place of the database is refused.
//
// Transactions
//   Begin() defaults to IMMEDIATE: the write lock is taken (waiting up to the
//   busy timeout) before anything is read, because in WAL mode a DEFERRED
//   transaction that reads and then writes fails at once with BUSY_SNAPSHOT
//   when another connection committed in between, without waiting.
//
// Migrations
//   Open() applies each Migration whose version is above PRAGMA user_version,
//   in order, each in its own IMMEDIATE transaction that also sets
//   user_version, so a failure (or a crash) leaves the previous version intact
//   and two processes opening at once cannot apply one twice. A database whose
//   user_version is newer than the newest migration given is refused with
//   kFailedPrecondition (a downgraded binary must not write a schema it does
//   not know). Migration SQL must be transactional (no VACUUM, no journal_mode).
//   With no migrations at all, Open() checks no version (for tools).
//
// Errors (SQLite result code -> Errc)
//   BUSY, LOCKED -> kUnavailable (retry later); CONSTRAINT_UNIQUE and
//   _PRIMARYKEY -> kAlreadyExists, other CONSTRAINT -> kConflict; FULL, NOMEM,
//   TOOBIG -> kResourceExhausted; CORRUPT, NOTADB -> kCorrupt; CANTOPEN, IOERR
//   -> kIo; READONLY, PERM, AUTH -> kPermissionDenied; ERROR (bad SQL), RANGE,
//   MISMATCH -> kInvalidArgument; anything else -> kInternal. Messages carry
//   sqlite3_errmsg, the result code and the first words of the SQL.
//
// Lifetimes: Statements and Transactions must not outlive their Database. The
// statement cache holds up to 128 distinct SQL texts per connection; SQL built
// at run time (not a literal) still works, uncached once the cache is full.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "shared/core/result.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace outpost::store {

// One step of the schema. Versions start at 1 and strictly increase.
struct Migration {
  int version = 0;
  std::string sql;  // one or more statements, run inside one transaction
};

enum class Synchronous {
  kFull,    // fsync the WAL on every commit: committed means durable (default)
  kNormal,  // fsync at checkpoints only: consistent, the newest commits may be lost
};

struct OpenOptions {
  // How long a statement waits for another connection's lock before it fails
  // with kUnavailable.
  std::chrono::milliseconds busy_timeout{5000};
  // Opens an existing database for reading; pending migrations are then an
  // error (kFailedPrecondition).
  bool read_only = false;
  Synchronous synchronous = Synchronous::kFull;
  std::vector<Migration> migrations;
};

enum class TxMode {
  kDeferred,   // takes the write lock at the first write (may then fail busy at once)
  kImmediate,  // takes the write lock at Begin(), waiting up to busy_timeout (default)
  kExclusive,  // as kImmediate; in WAL mode readers still proceed
};

// Marks bytes to be bound as a BLOB (a std::string_view alone binds TEXT).
struct Blob {
  std::string_view bytes;
};

// The storage class of a column value in the current row.
enum class ValueType { kInteger, kFloat, kText, kBlob, kNull };

namespace detail {
// A prepared statement kept by its Database for reuse.
struct CacheSlot {
  sqlite3_stmt* stmt = nullptr;
  bool in_use = false;
};
}  // namespace detail

class Database;

// A prepared statement. Database::Prepare hands out the connection's cached
// statement for that SQL when it is free, so preparing the same SQL again is
// cheap; when it is in use (two handles for one SQL at once) the second handle
// gets a statement of its own. The handle rewinds the statement and clears its
// bindings when it is destroyed, so a cached statement never stays busy.
//
// Parameters are 1-based (as in SQLite); columns are 0-based. Column getters
// read the current row, i.e. after Step() returned true.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Binds parameter `index`. Binding rewinds a statement stopped between rows.
  // A failed bind (bad index, an unsigned value above INT64_MAX) is kept and
  // returned by the next Step() or ExecDone().
  template <std::integral T>
  Statement& Bind(int index, T value) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (value > static_cast<T>(std::numeric_limits<std::int64_t>::max())) {
        return FailBind(index, "unsigned value does not fit in a 64-bit integer");
      }
    }
    return BindInt64(index, static_cast<std::int64_t>(value));
  }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);  // TEXT (copied)
  Statement& Bind(int index, const char* text);       // TEXT, or NULL for nullptr
  Statement& Bind(int index, Blob blob);              // BLOB (copied)
  Statement& Bind(int index, std::nullopt_t);         // NULL
  template <typename T>
  Statement& Bind(int index, const std::optional<T>& value) {
    if (!value.has_value()) return Bind(index, std::nullopt);
    return Bind(index, *value);
  }
  // Binds the arguments to parameters 1..N.
  template <typename... Args>
  Statement& BindAll(const Args&... args) {
    int index = 0;
    (Bind(++index, args), ...);
    return *this;
  }

  // Runs to the next row: true when a row is ready, false when done (the
  // statement is then rewound, keeping its bindings, ready to run again).
  Result<bool> Step();
  // Runs to completion, discarding any rows (INSERT ... RETURNING), rewinds,
  // and returns the number of rows changed.
  Result<int> ExecDone();
  // Rewinds and clears all bindings.
  Statement& Reset();

  int ColumnCount() const;
  ValueType ColumnType(int column) const;
  bool ColumnIsNull(int column) const;
  std::int64_t ColumnInt64(int column) const;  // NULL reads as 0
  int ColumnInt(int column) const;             // NULL reads as 0
  double ColumnDouble(int column) const;       // NULL reads as 0.0
  std::string ColumnText(int column) const;    // NULL reads as ""
  std::string ColumnBlob(int column) const;    // the bytes; NULL reads as ""
  std::optional<std::int64_t> ColumnOptInt64(int column) const;
  std::optional<double> ColumnOptDouble(int column) const;
  std::optional<std::string> ColumnOptText(int column) const;
  std::optional<std::string> ColumnOptBlob(int column) const;

  // The SQL as prepared.
  std::string_view sql() const;
  // Whether this handle uses its Database's cached statement.
  bool cached() const { return slot_ != nullptr; }

 private:
  friend class Database;
  Statement(sqlite3_stmt* stmt, detail::CacheSlot* slot) : stmt_(stmt), slot_(slot) {}
  Statement& BindInt64(int index, std::int64_t value);
  Statement& FailBind(int index, std::string_view why);
  Statement& CheckBind(int index, int rc);
  void PrepareToBind();
  void Release();

  sqlite3_stmt* stmt_ = nullptr;
  detail::CacheSlot* slot_ = nullptr;  // null: this handle owns stmt_
  std::optional<Error> bind_error_;
};

// An open transaction. Destroying it without Commit() rolls it back.
class [[nodiscard]] Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&& other) noexcept;  // rolls back the one it replaces
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // Commits. On failure the transaction stays open (if SQLite kept it) and is
  // rolled back by Rollback() or the destructor.
  Status Commit();
  Status Rollback();
  bool active() const { return db_ != nullptr; }

 private:
  friend class Database;
  Transaction(Database* db, std::uint64_t serial) : db_(db), serial_(serial) {}
  Status Finish(std::string_view sql);
  Database* db_ = nullptr;
  std::uint64_t serial_ = 0;  // which Begin() of db_ this is
};

// One connection to one database file. Not copyable or movable: Statements and
// Transactions point at it; hold it in the unique_ptr that Open() returns.
class Database {
 public:
  // Opens (creating with mode 0600 when missing and not read-only) the
  // database at `path`, sets WAL, synchronous, foreign_keys=ON and the busy
  // timeout, and applies pending migrations.
  static Result<std::unique_ptr<Database>> Open(const std::string& path,
                                                const OpenOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements that return no rows (DDL, PRAGMA writes).
  Status Exec(std::string_view sql);
  // Prepares exactly one statement (see Statement for the cache).
  Result<Statement> Prepare(std::string_view sql);
  // Starts a transaction. A transaction already open on this connection is an
  // error (kFailedPrecondition): there is no nesting.
  Result<Transaction> Begin(TxMode mode = TxMode::kImmediate);
  bool InTransaction() const;

  std::int64_t LastInsertRowId() const;
  // Rows changed by the most recent INSERT, UPDATE or DELETE.
  int Changes() const;
  // PRAGMA integrity_check: OK, or kCorrupt listing the first problems.
  Status IntegrityCheck();
  // PRAGMA user_version as of the end of Open() (after migrations).
  int SchemaVersion() const { return schema_version_; }
  const std::string& path() const { return path_; }

  std::size_t CachedStatementsForTest() const { return cache_.size(); }

 private:
  friend class Transaction;
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Status Configure(const OpenOptions& options);
  Status Migrate(const std::vector<Migration>& migrations, bool read_only);
  Result<int> ReadUserVersion();
  bool OwnsOpenTransaction(std::uint64_t serial) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  int schema_version_ = 0;
  std::uint64_t tx_serial_ = 0;  // counts Begin() calls
  std::unordered_map<std::string, std::unique_ptr<detail::CacheSlot>> cache_;
};

}  // namespace outpost::store
