#include "shared/store/store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <utility>

#include "shared/core/log.hpp"

namespace outpost::store {
namespace {

constexpr std::size_t kMaxCachedStatements = 128;
constexpr std::size_t kMaxSqlHead = 60;
constexpr std::int64_t kWalSizeLimit = 64 << 20;

Errc MapResultCode(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
      return Errc::kAlreadyExists;
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::kUnavailable;
    case SQLITE_CONSTRAINT:
      return Errc::kConflict;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
    case SQLITE_TOOBIG:
      return Errc::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Errc::kCorrupt;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
      return Errc::kIo;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Errc::kPermissionDenied;
    case SQLITE_ERROR:
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
      return Errc::kInvalidArgument;
    default:
      return Errc::kInternal;
  }
}

// The first words of `sql`, whitespace collapsed, for error messages.
std::string SqlHead(std::string_view sql) {
  std::string out;
  bool space = false;
  for (char c : sql) {
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    if (out.size() >= kMaxSqlHead) {
      out += "...";
      break;
    }
    out += c;
  }
  return out;
}

// An Error for result code `rc`, with the connection's message when it is
// about this code, and the statement it came from.
Error SqliteError(sqlite3* db, int rc, std::string_view sql) {
  std::string text;
  if (db != nullptr && sqlite3_extended_errcode(db) == rc) {
    text = sqlite3_errmsg(db);
  } else {
    text = sqlite3_errstr(rc);
  }
  text += " (sqlite code " + std::to_string(rc) + ")";
  if (!sql.empty()) text += " in \"" + SqlHead(sql) + "\"";
  return Error(MapResultCode(rc), std::move(text));
}

bool HasMoreThanWhitespace(const char* begin, const char* end) {
  return std::any_of(begin, end,
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)) == 0; });
}

Status ValidateMigrations(const std::vector<Migration>& migrations) {
  int previous = 0;
  for (const Migration& m : migrations) {
    if (m.version <= previous) {
      return Error(Errc::kInvalidArgument,
                   "migration versions must start at 1 and strictly increase; got " +
                       std::to_string(m.version) + " after " + std::to_string(previous));
    }
    previous = m.version;
  }
  return OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)),
      slot_(std::exchange(other.slot_, nullptr)),
      bind_error_(std::exchange(other.bind_error_, std::nullopt)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    Release();
    stmt_ = std::exchange(other.stmt_, nullptr);
    slot_ = std::exchange(other.slot_, nullptr);
    bind_error_ = std::exchange(other.bind_error_, std::nullopt);
  }
  return *this;
}

Statement::~Statement() {
  Release();
}

void Statement::Release() {
  if (stmt_ == nullptr) return;
  if (slot_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    slot_->in_use = false;
  } else {
    sqlite3_finalize(stmt_);
  }
  stmt_ = nullptr;
  slot_ = nullptr;
  bind_error_.reset();
}

void Statement::PrepareToBind() {
  if (stmt_ != nullptr && sqlite3_stmt_busy(stmt_) != 0) sqlite3_reset(stmt_);
}

Statement& Statement::FailBind(int index, std::string_view why) {
  if (!bind_error_) {
    bind_error_ =
        Error(Errc::kInvalidArgument, "binding parameter " + std::to_string(index) + ": " +
                                          std::string(why) + " in \"" + SqlHead(sql()) + "\"");
  }
  return *this;
}

Statement& Statement::CheckBind(int index, int rc) {
  if (rc != SQLITE_OK && !bind_error_) {
    bind_error_ = SqliteError(sqlite3_db_handle(stmt_), rc, sql())
                      .WithContext("binding parameter " + std::to_string(index));
  }
  return *this;
}

Statement& Statement::BindInt64(int index, std::int64_t value) {
  if (stmt_ == nullptr) return FailBind(index, "statement was moved from");
  PrepareToBind();
  return CheckBind(index, sqlite3_bind_int64(stmt_, index, value));
}

Statement& Statement::Bind(int index, double value) {
  if (stmt_ == nullptr) return FailBind(index, "statement was moved from");
  PrepareToBind();
  return CheckBind(index, sqlite3_bind_double(stmt_, index, value));
}

Statement& Statement::Bind(int index, std::string_view text) {
  if (stmt_ == nullptr) return FailBind(index, "statement was moved from");
  PrepareToBind();
  // A null pointer would bind NULL; an empty string_view means empty TEXT.
  const char* data = text.data() != nullptr ? text.data() : "";
  return CheckBind(
      index, sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Statement& Statement::Bind(int index, const char* text) {
  if (text == nullptr) return Bind(index, std::nullopt);
  return Bind(index, std::string_view(text));
}

Statement& Statement::Bind(int index, Blob blob) {
  if (stmt_ == nullptr) return FailBind(index, "statement was moved from");
  PrepareToBind();
  if (blob.bytes.empty()) return CheckBind(index, sqlite3_bind_zeroblob(stmt_, index, 0));
  return CheckBind(index, sqlite3_bind_blob64(stmt_, index, blob.bytes.data(), blob.bytes.size(),
                                              SQLITE_TRANSIENT));
}

Statement& Statement::Bind(int index, std::nullopt_t) {
  if (stmt_ == nullptr) return FailBind(index, "statement was moved from");
  PrepareToBind();
  return CheckBind(index, sqlite3_bind_null(stmt_, index));
}

Result<bool> Statement::Step() {
  if (stmt_ == nullptr) return Error(Errc::kFailedPrecondition, "step of a moved-from statement");
  if (bind_error_) {
    sqlite3_reset(stmt_);
    return *std::exchange(bind_error_, std::nullopt);
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) {
    sqlite3_reset(stmt_);
    return false;
  }
  Error error = SqliteError(sqlite3_db_handle(stmt_), rc, sql());
  sqlite3_reset(stmt_);
  return error;
}

Result<int> Statement::ExecDone() {
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) break;
  }
  return sqlite3_changes(sqlite3_db_handle(stmt_));
}

Statement& Statement::Reset() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  bind_error_.reset();
  return *this;
}

int Statement::ColumnCount() const {
  return stmt_ != nullptr ? sqlite3_column_count(stmt_) : 0;
}

ValueType Statement::ColumnType(int column) const {
  if (stmt_ == nullptr) return ValueType::kNull;
  switch (sqlite3_column_type(stmt_, column)) {
    case SQLITE_INTEGER:
      return ValueType::kInteger;
    case SQLITE_FLOAT:
      return ValueType::kFloat;
    case SQLITE_TEXT:
      return ValueType::kText;
    case SQLITE_BLOB:
      return ValueType::kBlob;
    default:
      return ValueType::kNull;
  }
}

bool Statement::ColumnIsNull(int column) const {
  return ColumnType(column) == ValueType::kNull;
}

std::int64_t Statement::ColumnInt64(int column) const {
  return stmt_ != nullptr ? static_cast<std::int64_t>(sqlite3_column_int64(stmt_, column)) : 0;
}

int Statement::ColumnInt(int column) const {
  return stmt_ != nullptr ? sqlite3_column_int(stmt_, column) : 0;
}

double Statement::ColumnDouble(int column) const {
  return stmt_ != nullptr ? sqlite3_column_double(stmt_, column) : 0.0;
}

std::string Statement::ColumnText(int column) const {
  if (stmt_ == nullptr) return {};
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  int size = sqlite3_column_bytes(stmt_, column);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(size));
}

std::string Statement::ColumnBlob(int column) const {
  if (stmt_ == nullptr) return {};
  const void* data = sqlite3_column_blob(stmt_, column);
  int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr) return {};
  return std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
}

std::optional<std::int64_t> Statement::ColumnOptInt64(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnInt64(column);
}

std::optional<double> Statement::ColumnOptDouble(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnDouble(column);
}

std::optional<std::string> Statement::ColumnOptText(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnText(column);
}

std::optional<std::string> Statement::ColumnOptBlob(int column) const {
  if (ColumnIsNull(column)) return std::nullopt;
  return ColumnBlob(column);
}

std::string_view Statement::sql() const {
  if (stmt_ == nullptr) return {};
  const char* text = sqlite3_sql(stmt_);
  return text != nullptr ? std::string_view(text) : std::string_view();
}

// ---------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Transaction&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), serial_(std::exchange(other.serial_, 0)) {}

Transaction& Transaction::operator=(Transaction&& other) noexcept {
  if (this != &other) {
    if (active()) {
      Status rolled_back = Rollback();
      if (!rolled_back.ok()) log::Warn("store: rollback failed: ", rolled_back.error().ToString());
    }
    db_ = std::exchange(other.db_, nullptr);
    serial_ = std::exchange(other.serial_, 0);
  }
  return *this;
}

Transaction::~Transaction() {
  if (!active()) return;
  Status rolled_back = Rollback();
  if (!rolled_back.ok()) log::Warn("store: rollback failed: ", rolled_back.error().ToString());
}

Status Transaction::Finish(std::string_view sql) {
  if (db_ == nullptr) {
    return Error(Errc::kFailedPrecondition,
                 std::string(sql) + " of a transaction that is not open (already ended)");
  }
  if (!db_->OwnsOpenTransaction(serial_)) {
    // Ended behind our back (a raw COMMIT, or SQLite rolled back after an
    // error such as SQLITE_FULL): nothing left to finish.
    Error error(Errc::kFailedPrecondition,
                std::string(sql) + ": the transaction was already ended on " + db_->path());
    db_ = nullptr;
    return error;
  }
  Status status = db_->Exec(sql);
  // A failed COMMIT (e.g. busy) may leave the transaction open; keep it so
  // that Rollback() or the destructor ends it.
  if (status.ok() || !db_->OwnsOpenTransaction(serial_)) db_ = nullptr;
  return status;
}

Status Transaction::Commit() {
  return Finish("COMMIT");
}

Status Transaction::Rollback() {
  return Finish("ROLLBACK");
}

// ---------------------------------------------------------------------------
// Database

Result<std::unique_ptr<Database>> Database::Open(const std::string& path,
                                                 const OpenOptions& options) {
  if (path.empty()) return Error(Errc::kInvalidArgument, "database path is empty");
  OUTPOST_TRY(ValidateMigrations(options.migrations));
  const bool memory = path == ":memory:";
  if (!options.read_only && !memory) {
    // SQLite would create the file 0644; ours hold keys' metadata and tokens.
    // The -wal and -shm files inherit the database file's mode.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
      ::close(fd);
    } else if (errno != EEXIST) {
      return ErrnoError("creating database " + path, errno);
    }
  }
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE;
  flags |= options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error error = SqliteError(raw, rc, {}).WithContext("opening database " + path);
    sqlite3_close_v2(raw);
    return error;
  }
  std::unique_ptr<Database> db(new Database(raw, path));
  if (Status s = db->Configure(options); !s.ok()) {
    return std::move(s).error().WithContext("opening database " + path);
  }
  if (Status s = db->Migrate(options.migrations, options.read_only); !s.ok()) {
    return std::move(s).error().WithContext("opening database " + path);
  }
  return db;
}

Database::~Database() {
  for (auto& [sql, slot] : cache_)
    sqlite3_finalize(slot->stmt);
  cache_.clear();
  // close_v2 waits for statements still held by handles (a bug) to be
  // finalized instead of failing; an open transaction is rolled back.
  sqlite3_close_v2(db_);
}

Status Database::Configure(const OpenOptions& options) {
  sqlite3_extended_result_codes(db_, 1);
  auto busy_ms = std::clamp<std::int64_t>(options.busy_timeout.count(), 0, INT_MAX);
  sqlite3_busy_timeout(db_, static_cast<int>(busy_ms));
  if (!options.read_only && path_ != ":memory:") {
    OUTPOST_ASSIGN_OR_RETURN(Statement wal, Prepare("PRAGMA journal_mode=WAL"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, wal.Step());
    std::string mode = row ? wal.ColumnText(0) : "";
    if (mode != "wal") {
      return Error(Errc::kFailedPrecondition,
                   "could not switch to WAL mode (journal_mode is \"" + mode + "\")");
    }
    OUTPOST_TRY(Exec("PRAGMA journal_size_limit=" + std::to_string(kWalSizeLimit)));
  }
  OUTPOST_TRY(Exec(options.synchronous == Synchronous::kFull ? "PRAGMA synchronous=FULL"
                                                             : "PRAGMA synchronous=NORMAL"));
  OUTPOST_TRY(Exec("PRAGMA foreign_keys=ON"));
  return OkStatus();
}

Result<int> Database::ReadUserVersion() {
  OUTPOST_ASSIGN_OR_RETURN(Statement query, Prepare("PRAGMA user_version"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) return Error(Errc::kInternal, "PRAGMA user_version returned no row");
  return query.ColumnInt(0);
}

Status Database::Migrate(const std::vector<Migration>& migrations, bool read_only) {
  OUTPOST_ASSIGN_OR_RETURN(int current, ReadUserVersion());
  schema_version_ = current;
  if (migrations.empty()) return OkStatus();  // a raw open: the caller knows no schema
  const int known = migrations.back().version;
  auto too_new = [&](int version) {
    return Error(Errc::kFailedPrecondition,
                 "schema version " + std::to_string(version) +
                     " is newer than this program knows (" + std::to_string(known) +
                     "); it was written by a newer release, refusing to use it");
  };
  if (current > known) return too_new(current);
  if (current == known) return OkStatus();
  if (read_only) {
    return Error(Errc::kFailedPrecondition, "schema version " + std::to_string(current) +
                                                " needs migrating to " + std::to_string(known) +
                                                ", which a read-only open cannot do");
  }
  for (const Migration& migration : migrations) {
    if (migration.version <= current) continue;
    OUTPOST_ASSIGN_OR_RETURN(Transaction tx, Begin(TxMode::kImmediate));
    // Another process may have migrated between our read and our lock.
    OUTPOST_ASSIGN_OR_RETURN(current, ReadUserVersion());
    if (current > known) return too_new(current);
    if (migration.version <= current) continue;
    const std::string context = "migration " + std::to_string(migration.version);
    if (Status s = Exec(migration.sql); !s.ok()) return std::move(s).error().WithContext(context);
    if (!OwnsOpenTransaction(tx.serial_)) {
      return Error(Errc::kInvalidArgument, context + " ended the transaction itself");
    }
    OUTPOST_TRY(Exec("PRAGMA user_version=" + std::to_string(migration.version)));
    if (Status s = tx.Commit(); !s.ok()) return std::move(s).error().WithContext(context);
    current = migration.version;
    log::Info("store: ", path_, " migrated to schema version ", current);
  }
  schema_version_ = current;
  return OkStatus();
}

Status Database::Exec(std::string_view sql) {
  if (sql.size() > INT_MAX) return Error(Errc::kResourceExhausted, "SQL text too long");
  const char* next = sql.data();
  const char* end = sql.data() + sql.size();
  while (next < end) {
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db_, next, static_cast<int>(end - next), &stmt, &tail);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, std::string_view(next, end));
    std::string_view one(next, static_cast<std::size_t>(tail - next));
    next = tail;
    if (stmt == nullptr) continue;  // whitespace or a comment
    do {
      rc = sqlite3_step(stmt);
    } while (rc == SQLITE_ROW);
    if (rc != SQLITE_DONE) {
      Error error = SqliteError(db_, rc, one);
      sqlite3_finalize(stmt);
      return error;
    }
    sqlite3_finalize(stmt);
  }
  return OkStatus();
}

Result<Statement> Database::Prepare(std::string_view sql) {
  if (sql.size() > INT_MAX) return Error(Errc::kResourceExhausted, "SQL text too long");
  std::string key(sql);
  auto it = cache_.find(key);
  if (it != cache_.end() && !it->second->in_use) {
    detail::CacheSlot* slot = it->second.get();
    sqlite3_reset(slot->stmt);
    sqlite3_clear_bindings(slot->stmt);
    slot->in_use = true;
    return Statement(slot->stmt, slot);
  }
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const bool cache_it = it == cache_.end() && cache_.size() < kMaxCachedStatements;
  int rc = sqlite3_prepare_v3(db_, key.data(), static_cast<int>(key.size()),
                              cache_it ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, key);
  if (stmt == nullptr) {
    return Error(Errc::kInvalidArgument, "no SQL statement in \"" + SqlHead(key) + "\"");
  }
  Statement handle(stmt, nullptr);  // finalizes on the error paths below
  const char* end = key.data() + key.size();
  if (HasMoreThanWhitespace(tail, end)) {
    sqlite3_stmt* second = nullptr;
    rc = sqlite3_prepare_v2(db_, tail, static_cast<int>(end - tail), &second, nullptr);
    sqlite3_finalize(second);
    if (rc != SQLITE_OK || second != nullptr) {
      return Error(Errc::kInvalidArgument,
                   "Prepare takes one statement (use Exec for several): \"" + SqlHead(key) + "\"");
    }
  }
  if (cache_it) {
    auto slot = std::make_unique<detail::CacheSlot>();
    slot->stmt = stmt;
    slot->in_use = true;
    handle.slot_ = slot.get();
    cache_.emplace(std::move(key), std::move(slot));
  }
  return handle;
}

Result<Transaction> Database::Begin(TxMode mode) {
  if (sqlite3_get_autocommit(db_) == 0) {
    return Error(Errc::kFailedPrecondition, "a transaction is already open on this connection to " +
                                                path_ + "; transactions do not nest");
  }
  const char* sql = mode == TxMode::kDeferred    ? "BEGIN DEFERRED"
                    : mode == TxMode::kImmediate ? "BEGIN IMMEDIATE"
                                                 : "BEGIN EXCLUSIVE";
  OUTPOST_TRY(Exec(sql));
  return Transaction(this, ++tx_serial_);
}

bool Database::OwnsOpenTransaction(std::uint64_t serial) const {
  return serial == tx_serial_ && sqlite3_get_autocommit(db_) == 0;
}

bool Database::InTransaction() const {
  return sqlite3_get_autocommit(db_) == 0;
}

std::int64_t Database::LastInsertRowId() const {
  return static_cast<std::int64_t>(sqlite3_last_insert_rowid(db_));
}

int Database::Changes() const {
  return sqlite3_changes(db_);
}

Status Database::IntegrityCheck() {
  OUTPOST_ASSIGN_OR_RETURN(Statement check, Prepare("PRAGMA integrity_check"));
  std::vector<std::string> problems;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, check.Step());
    if (!row) break;
    std::string line = check.ColumnText(0);
    if (line != "ok") problems.push_back(std::move(line));
  }
  if (problems.empty()) return OkStatus();
  std::string message = "integrity_check of " + path_ + " failed:";
  for (std::size_t i = 0; i < problems.size() && i < 5; ++i)
    message += " " + problems[i] + ";";
  if (problems.size() > 5) message += " and " + std::to_string(problems.size() - 5) + " more";
  return Error(Errc::kCorrupt, std::move(message));
}

}  // namespace outpost::store
