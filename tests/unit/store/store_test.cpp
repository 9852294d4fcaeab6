#include "shared/store/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::store {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<Database> MustOpen(const std::string& path, const OpenOptions& options = {}) {
  auto db = Database::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.error().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

// The first column of the first row of `sql`, as an integer or as text.
std::int64_t QueryInt(Database& db, std::string_view sql) {
  auto query = db.Prepare(sql);
  EXPECT_TRUE(query.ok()) << query.error().ToString();
  if (!query.ok()) return -1;
  auto row = query->Step();
  EXPECT_TRUE(row.ok() && *row) << sql;
  return row.ok() && *row ? query->ColumnInt64(0) : -1;
}

std::string QueryText(Database& db, std::string_view sql) {
  auto query = db.Prepare(sql);
  EXPECT_TRUE(query.ok()) << query.error().ToString();
  if (!query.ok()) return "<error>";
  auto row = query->Step();
  EXPECT_TRUE(row.ok() && *row) << sql;
  return row.ok() && *row ? query->ColumnText(0) : "<no row>";
}

bool Contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

OpenOptions WithMigrations(std::vector<Migration> migrations) {
  OpenOptions options;
  options.migrations = std::move(migrations);
  return options;
}

std::vector<Migration> ThreeMigrations() {
  return {{1, "CREATE TABLE a(x INTEGER NOT NULL);"},
          {2, "CREATE TABLE b(y TEXT);\n INSERT INTO a(x) VALUES (42);"},
          {3, "ALTER TABLE b ADD COLUMN z BLOB;"}};
}

std::vector<Migration> FirstMigrations(std::size_t n) {
  auto all = ThreeMigrations();
  all.resize(n);
  return all;
}

// ---------------------------------------------------------------------------
// Migrations

TEST(StoreMigrations, FreshDatabaseGetsEveryMigration) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "m.db", WithMigrations(ThreeMigrations()));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->SchemaVersion(), 3);
  EXPECT_EQ(QueryInt(*db, "PRAGMA user_version"), 3);
  EXPECT_EQ(QueryInt(*db, "SELECT x FROM a"), 42);
  EXPECT_TRUE(db->Exec("INSERT INTO b(y, z) VALUES ('y', x'00')").ok());
}

TEST(StoreMigrations, IncrementalOpenAppliesOnlyTheNewOnes) {
  testing::TempDir dir;
  {
    auto db = MustOpen(dir / "m.db", WithMigrations(FirstMigrations(1)));
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(db->SchemaVersion(), 1);
    ASSERT_TRUE(db->Exec("INSERT INTO a(x) VALUES (7)").ok());
  }
  // Migration 1 ran again would fail: table a already exists.
  auto db = MustOpen(dir / "m.db", WithMigrations(ThreeMigrations()));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->SchemaVersion(), 3);
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM a"), 2);
  EXPECT_EQ(QueryInt(*db, "SELECT SUM(x) FROM a"), 49);
}

TEST(StoreMigrations, NewerSchemaThanKnownIsRefused) {
  testing::TempDir dir;
  ASSERT_NE(MustOpen(dir / "m.db", WithMigrations(ThreeMigrations())), nullptr);
  auto old_binary = Database::Open(dir / "m.db", WithMigrations(FirstMigrations(2)));
  ASSERT_FALSE(old_binary.ok());
  EXPECT_EQ(old_binary.error().code(), Errc::kFailedPrecondition);
  EXPECT_TRUE(Contains(old_binary.error().message(), "schema version 3 is newer"))
      << old_binary.error().message();
  EXPECT_TRUE(Contains(old_binary.error().message(), "m.db")) << old_binary.error().message();
  // The database itself is untouched.
  auto db = MustOpen(dir / "m.db", WithMigrations(ThreeMigrations()));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->SchemaVersion(), 3);
}

TEST(StoreMigrations, FailingMigrationLeavesTheVersionUnchanged) {
  testing::TempDir dir;
  std::vector<Migration> broken = {
      {1, "CREATE TABLE a(x INTEGER);"},
      {2, "CREATE TABLE c(x INTEGER);\nINSERT INTO no_such_table VALUES (1);"},
  };
  auto failed = Database::Open(dir / "m.db", WithMigrations(broken));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(failed.error().message(), "migration 2")) << failed.error().message();
  EXPECT_TRUE(Contains(failed.error().message(), "no such table")) << failed.error().message();
  EXPECT_TRUE(Contains(failed.error().message(), "INSERT INTO no_such_table"))
      << failed.error().message();
  {
    auto raw = MustOpen(dir / "m.db");
    ASSERT_NE(raw, nullptr);
    EXPECT_EQ(raw->SchemaVersion(), 1);
    EXPECT_EQ(QueryInt(*raw, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'c'"), 0);
  }
  broken[1].sql = "CREATE TABLE c(x INTEGER);";
  auto fixed = MustOpen(dir / "m.db", WithMigrations(broken));
  ASSERT_NE(fixed, nullptr);
  EXPECT_EQ(fixed->SchemaVersion(), 2);
}

TEST(StoreMigrations, MigrationThatEndsItsTransactionIsRefused) {
  testing::TempDir dir;
  auto failed = Database::Open(dir / "m.db", WithMigrations({{1, "CREATE TABLE a(x); COMMIT;"}}));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(failed.error().message(), "ended the transaction"))
      << failed.error().message();
  auto raw = MustOpen(dir / "m.db");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->SchemaVersion(), 0);
}

TEST(StoreMigrations, MisorderedListIsRefused) {
  testing::TempDir dir;
  for (const auto& migrations :
       std::vector<std::vector<Migration>>{{{2, "CREATE TABLE a(x);"}, {1, "CREATE TABLE b(x);"}},
                                           {{1, "CREATE TABLE a(x);"}, {1, "CREATE TABLE b(x);"}},
                                           {{0, "CREATE TABLE a(x);"}}}) {
    auto db = Database::Open(dir / "m.db", WithMigrations(migrations));
    ASSERT_FALSE(db.ok());
    EXPECT_EQ(db.error().code(), Errc::kInvalidArgument);
  }
}

TEST(StoreMigrations, ReadOnlyOpenReadsButNeitherMigratesNorWrites) {
  testing::TempDir dir;
  ASSERT_NE(MustOpen(dir / "m.db", WithMigrations(FirstMigrations(2))), nullptr);
  OpenOptions read_only = WithMigrations(ThreeMigrations());
  read_only.read_only = true;
  auto pending = Database::Open(dir / "m.db", read_only);
  ASSERT_FALSE(pending.ok());
  EXPECT_EQ(pending.error().code(), Errc::kFailedPrecondition);
  EXPECT_TRUE(Contains(pending.error().message(), "read-only")) << pending.error().message();

  read_only.migrations = FirstMigrations(2);
  auto db = MustOpen(dir / "m.db", read_only);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryInt(*db, "SELECT x FROM a"), 42);
  Status write = db->Exec("INSERT INTO a(x) VALUES (1)");
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.error().code(), Errc::kPermissionDenied) << write.error().ToString();
}

// ---------------------------------------------------------------------------
// Open

TEST(StoreOpen, UsesWalFullSyncForeignKeysAndBusyTimeout) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "o.db");
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryText(*db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(QueryInt(*db, "PRAGMA synchronous"), 2);  // FULL
  EXPECT_EQ(QueryInt(*db, "PRAGMA foreign_keys"), 1);
  EXPECT_EQ(QueryInt(*db, "PRAGMA busy_timeout"), 5000);
  EXPECT_EQ(db->path(), dir / "o.db");

  OpenOptions options;
  options.synchronous = Synchronous::kNormal;
  options.busy_timeout = milliseconds(1234);
  auto normal = MustOpen(dir / "o.db", options);
  ASSERT_NE(normal, nullptr);
  EXPECT_EQ(QueryInt(*normal, "PRAGMA synchronous"), 1);  // NORMAL
  EXPECT_EQ(QueryInt(*normal, "PRAGMA busy_timeout"), 1234);
}

TEST(StoreOpen, NewDatabaseFilesAreOwnerOnly) {
  testing::TempDir dir;
  const mode_t old_umask = ::umask(022);
  auto db = MustOpen(dir / "private.db");
  ::umask(old_umask);
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1);").ok());
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir / "private.db" + suffix).c_str(), &st), 0) << suffix;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "private.db" << suffix;
  }
}

TEST(StoreOpen, FileThatIsNoDatabaseIsCorrupt) {
  testing::TempDir dir;
  ASSERT_TRUE(fs::WriteFileAtomic(dir / "junk.db", std::string(4096, 'j'), 0600).ok());
  auto db = Database::Open(dir / "junk.db");
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), Errc::kCorrupt) << db.error().ToString();
  EXPECT_TRUE(Contains(db.error().message(), "junk.db")) << db.error().message();
}

TEST(StoreOpen, MissingFilesAndDirectoriesAreErrors) {
  testing::TempDir dir;
  auto no_dir = Database::Open(dir / "no/such/dir/x.db");
  ASSERT_FALSE(no_dir.ok());
  EXPECT_EQ(no_dir.error().code(), Errc::kNotFound) << no_dir.error().ToString();

  OpenOptions read_only;
  read_only.read_only = true;
  auto no_file = Database::Open(dir / "missing.db", read_only);
  ASSERT_FALSE(no_file.ok());
  EXPECT_EQ(no_file.error().code(), Errc::kIo) << no_file.error().ToString();
  EXPECT_FALSE(fs::Exists(dir / "missing.db"));

  auto empty = Database::Open("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);
}

TEST(StoreOpen, InMemoryDatabaseForTools) {
  auto db = MustOpen(":memory:", WithMigrations(ThreeMigrations()));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->SchemaVersion(), 3);
  EXPECT_TRUE(db->IntegrityCheck().ok());
}

// ---------------------------------------------------------------------------
// Statements

TEST(StoreStatement, BindsAndReadsEveryType) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE v(i INTEGER, r REAL, t TEXT, b BLOB, n)").ok());
  auto insert = db->Prepare("INSERT INTO v(i, r, t, b, n) VALUES (?, ?, ?, ?, ?)");
  ASSERT_TRUE(insert.ok()) << insert.error().ToString();
  const std::string bytes("\0\1\2\xff", 4);
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  const std::int64_t min = std::numeric_limits<std::int64_t>::min();
  // Row 1: BindAll.
  auto changed = insert->BindAll(max, 2.5, "text \xc3\xbc", Blob{bytes}, std::nullopt).ExecDone();
  ASSERT_TRUE(changed.ok()) << changed.error().ToString();
  EXPECT_EQ(*changed, 1);
  // Row 2: empty text and blob are values, not NULL; a present optional.
  changed = insert->Bind(1, min)
                .Bind(2, -0.125)
                .Bind(3, std::string_view())
                .Bind(4, Blob{})
                .Bind(5, std::optional<int>(7))
                .ExecDone();
  ASSERT_TRUE(changed.ok()) << changed.error().ToString();
  // Row 3: other integral types, float, std::string, absent optionals.
  const std::string text = "from std::string";
  changed = insert->Bind(1, true)
                .Bind(2, 1.5f)
                .Bind(3, text)
                .Bind(4, std::optional<std::string>())
                .Bind(5, std::uint32_t{4000000000u})
                .ExecDone();
  ASSERT_TRUE(changed.ok()) << changed.error().ToString();
  // Row 4: NULLs from a null C string and an empty optional.
  changed = insert->Bind(1, std::optional<std::int64_t>())
                .Bind(2, std::optional<double>())
                .Bind(3, static_cast<const char*>(nullptr))
                .Bind(4, std::nullopt)
                .Bind(5, std::nullopt)
                .ExecDone();
  ASSERT_TRUE(changed.ok()) << changed.error().ToString();

  auto rows = db->Prepare("SELECT i, r, t, b, n FROM v ORDER BY rowid");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->ColumnCount(), 5);

  ASSERT_TRUE(*rows->Step());
  EXPECT_EQ(rows->ColumnType(0), ValueType::kInteger);
  EXPECT_EQ(rows->ColumnInt64(0), max);
  EXPECT_EQ(rows->ColumnType(1), ValueType::kFloat);
  EXPECT_EQ(rows->ColumnDouble(1), 2.5);
  EXPECT_EQ(rows->ColumnType(2), ValueType::kText);
  EXPECT_EQ(rows->ColumnText(2), "text \xc3\xbc");
  EXPECT_EQ(rows->ColumnType(3), ValueType::kBlob);
  EXPECT_EQ(rows->ColumnBlob(3), bytes);
  EXPECT_EQ(rows->ColumnType(4), ValueType::kNull);
  EXPECT_TRUE(rows->ColumnIsNull(4));
  EXPECT_EQ(rows->ColumnOptInt64(4), std::nullopt);

  ASSERT_TRUE(*rows->Step());
  EXPECT_EQ(rows->ColumnOptInt64(0), min);
  EXPECT_EQ(rows->ColumnOptDouble(1), -0.125);
  EXPECT_EQ(rows->ColumnType(2), ValueType::kText);
  EXPECT_EQ(rows->ColumnOptText(2), "");
  EXPECT_EQ(rows->ColumnType(3), ValueType::kBlob);
  EXPECT_EQ(rows->ColumnOptBlob(3), "");
  EXPECT_EQ(rows->ColumnInt(4), 7);

  ASSERT_TRUE(*rows->Step());
  EXPECT_EQ(rows->ColumnInt(0), 1);
  EXPECT_EQ(rows->ColumnDouble(1), 1.5);
  EXPECT_EQ(rows->ColumnText(2), text);
  EXPECT_TRUE(rows->ColumnIsNull(3));
  EXPECT_EQ(rows->ColumnInt64(4), 4000000000);

  ASSERT_TRUE(*rows->Step());
  for (int column = 0; column < 5; ++column)
    EXPECT_TRUE(rows->ColumnIsNull(column)) << column;
  EXPECT_EQ(rows->ColumnOptInt64(0), std::nullopt);
  EXPECT_EQ(rows->ColumnOptDouble(1), std::nullopt);
  EXPECT_EQ(rows->ColumnOptText(2), std::nullopt);
  EXPECT_EQ(rows->ColumnOptBlob(3), std::nullopt);
  EXPECT_EQ(rows->ColumnInt64(0), 0);
  EXPECT_EQ(rows->ColumnDouble(1), 0.0);
  EXPECT_EQ(rows->ColumnText(2), "");
  EXPECT_EQ(rows->ColumnBlob(3), "");

  EXPECT_FALSE(*rows->Step());
}

TEST(StoreStatement, CachedStatementIsReusedAndRewound) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);").ok());
  const std::size_t before = db->CachedStatementsForTest();
  const std::string_view sql = "SELECT x FROM t ORDER BY x";
  {
    auto first = db->Prepare(sql);
    ASSERT_TRUE(first.ok());
    EXPECT_TRUE(first->cached());
    EXPECT_EQ(first->sql(), sql);
    ASSERT_TRUE(*first->Step());
    EXPECT_EQ(first->ColumnInt(0), 1);
    // A second handle while the first is in use gets its own statement.
    auto second = db->Prepare(sql);
    ASSERT_TRUE(second.ok());
    EXPECT_FALSE(second->cached());
    ASSERT_TRUE(*second->Step());
    EXPECT_EQ(second->ColumnInt(0), 1);
    ASSERT_TRUE(*first->Step());
    EXPECT_EQ(first->ColumnInt(0), 2);
    // Left in the middle of its rows.
  }
  EXPECT_EQ(db->CachedStatementsForTest(), before + 1);
  auto again = db->Prepare(sql);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->cached());
  ASSERT_TRUE(*again->Step());
  EXPECT_EQ(again->ColumnInt(0), 1) << "the cached statement was not rewound";
  EXPECT_EQ(db->CachedStatementsForTest(), before + 1);
  // A moved handle keeps the statement; the moved-from one is inert.
  Statement moved = std::move(*again);
  EXPECT_TRUE(moved.cached());
  ASSERT_TRUE(*moved.Step());
  EXPECT_EQ(moved.ColumnInt(0), 2);
  auto stale = again->Step();
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), Errc::kFailedPrecondition);
  // No statement stays busy: a write transaction commits and a checkpoint
  // can truncate the WAL.
  moved = std::move(*db->Prepare("SELECT 1"));
  auto tx = db->Begin();
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (4)").ok());
  EXPECT_TRUE(tx->Commit().ok());
  EXPECT_EQ(QueryInt(*db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);  // 0: not busy
}

TEST(StoreStatement, BindingStartsANewRunAndResetClearsBindings) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);").ok());
  auto query = db->Prepare("SELECT x FROM t WHERE x >= ? ORDER BY x");
  ASSERT_TRUE(query.ok());
  ASSERT_TRUE(*query->Bind(1, 1).Step());
  EXPECT_EQ(query->ColumnInt(0), 1);
  ASSERT_TRUE(*query->Bind(1, 3).Step());  // rebinding in the middle of the rows
  EXPECT_EQ(query->ColumnInt(0), 3);
  EXPECT_FALSE(*query->Step());
  ASSERT_TRUE(*query->Step());  // done rewinds, keeping the binding
  EXPECT_EQ(query->ColumnInt(0), 3);
  query->Reset();  // x >= NULL matches nothing
  EXPECT_FALSE(*query->Step());
}

TEST(StoreStatement, ExecDoneReportsChangesAndRowIds) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)").ok());
  auto insert = db->Prepare("INSERT INTO t(x) VALUES (?)");
  ASSERT_TRUE(insert.ok());
  for (int i = 1; i <= 3; ++i) {
    auto changed = insert->Bind(1, i * 10).ExecDone();
    ASSERT_TRUE(changed.ok()) << changed.error().ToString();
    EXPECT_EQ(*changed, 1);
    EXPECT_EQ(db->LastInsertRowId(), i);
  }
  auto update = db->Prepare("UPDATE t SET x = x + 1 WHERE x > ?");
  ASSERT_TRUE(update.ok());
  auto changed = update->Bind(1, 10).ExecDone();
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(*changed, 2);
  EXPECT_EQ(db->Changes(), 2);
  auto returning = db->Prepare("INSERT INTO t(x) VALUES (5) RETURNING id");
  ASSERT_TRUE(returning.ok());
  changed = returning->ExecDone();
  ASSERT_TRUE(changed.ok()) << changed.error().ToString();
  EXPECT_EQ(*changed, 1);
  EXPECT_EQ(db->LastInsertRowId(), 4);
}

TEST(StoreStatement, BadBindsAreReportedByTheNextStep) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x)").ok());
  auto insert = db->Prepare("INSERT INTO t(x) VALUES (?)");
  ASSERT_TRUE(insert.ok());
  auto range = insert->Bind(1, 1).Bind(5, 2).ExecDone();
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(range.error().message(), "binding parameter 5")) << range.error().message();
  EXPECT_TRUE(Contains(range.error().message(), "INSERT INTO t")) << range.error().message();

  auto too_big = insert->Bind(1, std::numeric_limits<std::uint64_t>::max()).ExecDone();
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(too_big.error().message(), "does not fit")) << too_big.error().message();

  // The error was reported once; the statement is usable again.
  auto good = insert->Bind(1, std::uint64_t{9}).ExecDone();
  ASSERT_TRUE(good.ok()) << good.error().ToString();
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 1);
}

TEST(StoreStatement, PrepareAndExecRejectBadSql) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "s.db");
  ASSERT_NE(db, nullptr);
  auto syntax = db->Prepare("SELEC 1");
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(syntax.error().message(), "syntax error")) << syntax.error().message();
  EXPECT_TRUE(Contains(syntax.error().message(), "\"SELEC 1\"")) << syntax.error().message();

  auto two = db->Prepare("SELECT 1; SELECT 2");
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(two.error().message(), "one statement")) << two.error().message();

  auto empty = db->Prepare("  -- nothing\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);

  EXPECT_TRUE(db->Prepare("SELECT 1; -- trailing comment\n").ok());

  ASSERT_TRUE(db->Exec("CREATE TABLE t(x); -- a comment\n INSERT INTO t VALUES (1);").ok());
  Status second_fails = db->Exec("INSERT INTO t VALUES (2);\n\n  UPDATE   nope SET x = 1;");
  ASSERT_FALSE(second_fails.ok());
  EXPECT_EQ(second_fails.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(Contains(second_fails.error().message(), "\"UPDATE nope SET x = 1;\""))
      << second_fails.error().message();
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 2);  // Exec is not a transaction
}

// ---------------------------------------------------------------------------
// Transactions

TEST(StoreTransaction, CommitIsVisibleToOtherConnections) {
  testing::TempDir dir;
  auto writer = MustOpen(dir / "t.db");
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Exec("CREATE TABLE t(x)").ok());
  auto reader = MustOpen(dir / "t.db");
  ASSERT_NE(reader, nullptr);

  auto tx = writer->Begin();
  ASSERT_TRUE(tx.ok()) << tx.error().ToString();
  EXPECT_TRUE(tx->active());
  EXPECT_TRUE(writer->InTransaction());
  ASSERT_TRUE(writer->Exec("INSERT INTO t VALUES (1), (2)").ok());
  EXPECT_EQ(QueryInt(*reader, "SELECT COUNT(*) FROM t"), 0);
  ASSERT_TRUE(tx->Commit().ok());
  EXPECT_FALSE(tx->active());
  EXPECT_FALSE(writer->InTransaction());
  EXPECT_EQ(QueryInt(*reader, "SELECT COUNT(*) FROM t"), 2);

  Status twice = tx->Commit();
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code(), Errc::kFailedPrecondition);
}

TEST(StoreTransaction, DestructionWithoutCommitRollsBack) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "t.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x)").ok());
  {
    auto tx = db->Begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (1)").ok());
    EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 1);
  }
  EXPECT_FALSE(db->InTransaction());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 0);
}

Status InsertPair(Database& db, int a, int b) {
  OUTPOST_ASSIGN_OR_RETURN(Transaction tx, db.Begin());
  OUTPOST_ASSIGN_OR_RETURN(Statement insert, db.Prepare("INSERT INTO t(x) VALUES (?)"));
  OUTPOST_TRY(insert.Bind(1, a).ExecDone());
  OUTPOST_TRY(insert.Bind(1, b).ExecDone());
  return tx.Commit();
}

TEST(StoreTransaction, ErrorReturnRollsBack) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "t.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x INTEGER UNIQUE)").ok());
  Status failed = InsertPair(*db, 1, 1);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), Errc::kAlreadyExists);
  EXPECT_FALSE(db->InTransaction());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 0) << "the first insert was not rolled back";
  ASSERT_TRUE(InsertPair(*db, 1, 2).ok());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 2);
}

TEST(StoreTransaction, TransactionsDoNotNest) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "t.db");
  ASSERT_NE(db, nullptr);
  auto outer = db->Begin();
  ASSERT_TRUE(outer.ok());
  auto inner = db->Begin(TxMode::kDeferred);
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(inner.error().code(), Errc::kFailedPrecondition);
  EXPECT_TRUE(Contains(inner.error().message(), "do not nest")) << inner.error().message();
  EXPECT_TRUE(outer->active());
  ASSERT_TRUE(outer->Commit().ok());
  auto next = db->Begin();
  EXPECT_TRUE(next.ok());
}

TEST(StoreTransaction, ModesExplicitRollbackAndMoves) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "t.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x)").ok());
  for (TxMode mode : {TxMode::kDeferred, TxMode::kImmediate, TxMode::kExclusive}) {
    auto tx = db->Begin(mode);
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (1)").ok());
    ASSERT_TRUE(tx->Commit().ok());
  }
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 3);

  auto first = db->Begin();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (2)").ok());
  Transaction moved = std::move(*first);
  EXPECT_FALSE(first->active());
  EXPECT_TRUE(moved.active());
  ASSERT_TRUE(moved.Rollback().ok());
  EXPECT_FALSE(moved.active());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 3);
  Status again = moved.Rollback();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kFailedPrecondition);

  // Move-assigning over an open transaction rolls that one back.
  auto open = db->Begin();
  ASSERT_TRUE(open.ok());
  ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (3)").ok());
  moved = std::move(*open);
  EXPECT_TRUE(moved.active());
  ASSERT_TRUE(moved.Commit().ok());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 4);
}

TEST(StoreTransaction, TransactionEndedBehindItsBackLeavesTheNextOneAlone) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "t.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x)").ok());
  auto stale = db->Begin();
  ASSERT_TRUE(stale.ok());
  ASSERT_TRUE(db->Exec("COMMIT").ok());
  auto current = db->Begin();
  ASSERT_TRUE(current.ok());
  ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (1)").ok());
  Status rollback = stale->Rollback();
  ASSERT_FALSE(rollback.ok());
  EXPECT_EQ(rollback.error().code(), Errc::kFailedPrecondition);
  EXPECT_TRUE(current->active());
  EXPECT_TRUE(db->InTransaction());
  ASSERT_TRUE(current->Commit().ok());
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM t"), 1);
}

// ---------------------------------------------------------------------------
// Error mapping

TEST(StoreErrors, UniqueViolationIsAlreadyExists) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "e.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(name TEXT PRIMARY KEY, v TEXT UNIQUE)").ok());
  ASSERT_TRUE(db->Exec("INSERT INTO t VALUES ('a', 'x')").ok());
  Status key = db->Exec("INSERT INTO t VALUES ('a', 'y')");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.error().code(), Errc::kAlreadyExists);
  EXPECT_TRUE(Contains(key.error().message(), "UNIQUE constraint failed: t.name"))
      << key.error().message();
  EXPECT_TRUE(Contains(key.error().message(), "INSERT INTO t VALUES ('a', 'y')"))
      << key.error().message();
  auto unique = db->Prepare("INSERT INTO t VALUES (?, ?)");
  ASSERT_TRUE(unique.ok());
  auto dup = unique->BindAll("b", "x").ExecDone();
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kAlreadyExists);
}

TEST(StoreErrors, OtherConstraintsAreConflicts) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "e.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE parent(id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child(p INTEGER NOT NULL REFERENCES parent(id));")
                  .ok());
  Status foreign = db->Exec("INSERT INTO child VALUES (99)");  // foreign_keys is on
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.error().code(), Errc::kConflict);
  EXPECT_TRUE(Contains(foreign.error().message(), "FOREIGN KEY")) << foreign.error().message();
  Status not_null = db->Exec("INSERT INTO child VALUES (NULL)");
  ASSERT_FALSE(not_null.ok());
  EXPECT_EQ(not_null.error().code(), Errc::kConflict);
}

TEST(StoreErrors, WriteLockHeldElsewhereIsUnavailable) {
  testing::TempDir dir;
  auto holder = MustOpen(dir / "e.db");
  ASSERT_NE(holder, nullptr);
  ASSERT_TRUE(holder->Exec("CREATE TABLE t(x)").ok());
  OpenOptions impatient;
  impatient.busy_timeout = milliseconds(50);
  auto waiter = MustOpen(dir / "e.db", impatient);
  ASSERT_NE(waiter, nullptr);

  auto held = holder->Begin(TxMode::kImmediate);
  ASSERT_TRUE(held.ok());
  const auto start = std::chrono::steady_clock::now();
  auto blocked = waiter->Begin(TxMode::kImmediate);
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().code(), Errc::kUnavailable);
  EXPECT_TRUE(Contains(blocked.error().message(), "locked")) << blocked.error().message();
  EXPECT_GE(waited, milliseconds(40)) << "the busy timeout was not applied";
  Status insert = waiter->Exec("INSERT INTO t VALUES (1)");
  ASSERT_FALSE(insert.ok());
  EXPECT_EQ(insert.error().code(), Errc::kUnavailable);

  ASSERT_TRUE(held->Commit().ok());
  auto free = waiter->Begin(TxMode::kImmediate);
  ASSERT_TRUE(free.ok()) << free.error().ToString();
  EXPECT_TRUE(free->Commit().ok());
}

TEST(StoreErrors, FullDatabaseIsResourceExhausted) {
  testing::TempDir dir;
  auto db = MustOpen(dir / "e.db");
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(b BLOB)").ok());
  const std::int64_t pages = QueryInt(*db, "PRAGMA page_count");
  ASSERT_TRUE(db->Exec("PRAGMA max_page_count=" + std::to_string(pages + 4)).ok());
  auto insert = db->Prepare("INSERT INTO t VALUES (?)");
  ASSERT_TRUE(insert.ok());
  const std::string big(64 * 1024, 'b');
  auto full = insert->Bind(1, Blob{big}).ExecDone();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code(), Errc::kResourceExhausted) << full.error().ToString();
  EXPECT_TRUE(Contains(full.error().message(), "full")) << full.error().message();
}

TEST(StoreErrors, DamagedPagesFailTheIntegrityCheck) {
  testing::TempDir dir;
  const std::string path = dir / "e.db";
  std::int64_t page_size = 0;
  {
    auto db = MustOpen(path);
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                         "CREATE INDEX t_v ON t(v);"
                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                         " WHERE i < 2000) INSERT INTO t SELECT i, printf('value %d', i) FROM n;")
                    .ok());
    EXPECT_TRUE(db->IntegrityCheck().ok());
    page_size = QueryInt(*db, "PRAGMA page_size");
  }  // the last close checkpoints everything into the main file
  {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string junk(static_cast<std::size_t>(page_size) * 4, '\xa5');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(page_size * 3)),
              static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  auto db = Database::Open(path);
  if (!db.ok()) {
    EXPECT_EQ(db.error().code(), Errc::kCorrupt) << db.error().ToString();
    return;
  }
  Status check = (*db)->IntegrityCheck();
  ASSERT_FALSE(check.ok());
  EXPECT_EQ(check.error().code(), Errc::kCorrupt) << check.error().ToString();
}

// ---------------------------------------------------------------------------
// Concurrency

TEST(StoreConcurrency, ReadersProceedWhileAWriterHoldsTheLock) {
  testing::TempDir dir;
  const std::string path = dir / "c.db";
  auto writer = MustOpen(path);
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (0);").ok());
  auto tx = writer->Begin(TxMode::kExclusive);
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(writer->Exec("INSERT INTO t VALUES (1), (2), (3)").ok());

  // The writer keeps its lock until every reader is done, so a reader that
  // needed it would wait out its busy timeout and fail.
  OpenOptions readers_options;
  readers_options.busy_timeout = milliseconds(2000);
  std::vector<std::thread> readers;
  std::vector<std::string> seen(4);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    readers.emplace_back([&, i] {
      auto db = Database::Open(path, readers_options);
      if (!db.ok()) {
        seen[i] = db.error().ToString();
        return;
      }
      auto count = (*db)->Prepare("SELECT COUNT(*) FROM t");
      auto row = count.ok() ? count->Step() : Result<bool>(count.error());
      if (!row.ok()) {
        seen[i] = row.error().ToString();
      } else {
        seen[i] = *row ? std::to_string(count->ColumnInt(0)) : "no row";
      }
    });
  }
  for (auto& reader : readers)
    reader.join();
  for (const std::string& count : seen)
    EXPECT_EQ(count, "1");  // the committed snapshot
  ASSERT_TRUE(tx->Commit().ok());
  auto after = MustOpen(path);
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(QueryInt(*after, "SELECT COUNT(*) FROM t"), 4);
}

TEST(StoreConcurrency, ThreadsWithTheirOwnConnectionsSeeWholeTransactions) {
  testing::TempDir dir;
  const std::string path = dir / "c.db";
  {
    auto db = MustOpen(path);
    ASSERT_NE(db, nullptr);
    ASSERT_TRUE(db->Exec("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER)").ok());
  }
  constexpr int kTransfers = 300;
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};
  std::atomic<int> reads{0};
  std::thread writer([&] {
    auto db = Database::Open(path);
    if (!db.ok()) {
      ++errors;
      done = true;
      return;
    }
    for (int i = 1; i <= kTransfers; ++i) {
      Status s = [&]() -> Status {
        OUTPOST_ASSIGN_OR_RETURN(Transaction tx, (*db)->Begin());
        OUTPOST_ASSIGN_OR_RETURN(Statement insert,
                                 (*db)->Prepare("INSERT INTO ledger(amount) VALUES (?)"));
        OUTPOST_TRY(insert.Bind(1, i).ExecDone());
        OUTPOST_TRY(insert.Bind(1, -i).ExecDone());
        return tx.Commit();
      }();
      if (!s.ok()) ++errors;
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      auto db = Database::Open(path);
      if (!db.ok()) {
        ++errors;
        return;
      }
      while (!done) {
        auto sum = (*db)->Prepare("SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM ledger");
        auto row = sum.ok() ? sum->Step() : Result<bool>(sum.error());
        if (!row.ok() || !*row || sum->ColumnInt64(0) != 0 || sum->ColumnInt64(1) % 2 != 0) {
          ++errors;
        }
        ++reads;
      }
    });
  }
  writer.join();
  for (auto& reader : readers)
    reader.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(reads.load(), 0);
  auto db = MustOpen(path);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(QueryInt(*db, "SELECT COUNT(*) FROM ledger"), 2 * kTransfers);
}

}  // namespace
}  // namespace outpost::store
