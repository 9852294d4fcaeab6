// The crash test: a child (store_crash_child) commits transactions in a loop
// and is killed with SIGKILL at random points, at least 200 times, on one
// database. After each kill the database must open, pass integrity_check, and
// hold exactly the committed transactions: each one whole or absent, every
// one the child reported present, and at most one more than it reported (the
// one whose report the kill cut off).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shared/store/store.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/store/crash_schema.hpp"

extern char** environ;

namespace outpost::store {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;

constexpr int kKills = 200;

// One run of the child with its stdout on a pipe.
class Child {
 public:
  explicit Child(const std::string& db_path) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    std::string program = STORE_CRASH_CHILD;
    std::vector<char*> argv = {program.data(), const_cast<char*>(db_path.c_str()), nullptr};
    if (::posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0 && out_ >= 0; }

  // Reads what the child wrote, waiting up to `timeout` for more; false at
  // end of file (the child is gone) or on timeout.
  bool ReadSome(std::chrono::milliseconds timeout) {
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    pending_.append(buf, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (line == "ready") {
        ready_ = true;
      } else {
        reported_.push_back(std::stoll(line));
      }
    }
    return true;
  }

  // SIGKILL, reap, then read everything written before the kill. Returns the
  // wait status.
  int KillAndDrain() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    while (ReadSome(std::chrono::milliseconds(5000))) {
    }
    return status;
  }

  bool ready() const { return ready_; }
  bool eof() const { return eof_; }
  const std::vector<std::int64_t>& reported() const { return reported_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string pending_;
  bool ready_ = false;
  bool eof_ = false;
  std::vector<std::int64_t> reported_;
};

// Checks the database after a kill; returns the number of whole transactions
// (1..n, contiguous) or fails the test.
std::int64_t VerifyDatabase(const std::string& path) {
  OpenOptions options;
  options.migrations = crash::Migrations();
  auto db = Database::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.error().ToString();
  if (!db.ok()) return -1;
  Status integrity = (*db)->IntegrityCheck();
  EXPECT_TRUE(integrity.ok()) << integrity.error().ToString();
  auto rows = (*db)->Prepare("SELECT txn, seq, payload FROM rows ORDER BY txn, seq");
  EXPECT_TRUE(rows.ok());
  if (!rows.ok()) return -1;
  std::int64_t txn = 0;  // the transaction being read
  int seq = 0;           // the next row expected in it
  while (true) {
    auto row = rows->Step();
    EXPECT_TRUE(row.ok()) << row.error().ToString();
    if (!row.ok() || !*row) break;
    std::int64_t t = rows->ColumnInt64(0);
    int s = rows->ColumnInt(1);
    if (t != txn) {
      EXPECT_EQ(seq, txn == 0 ? 0 : crash::RowsIn(txn)) << "transaction " << txn << " is partial";
      EXPECT_EQ(t, txn + 1) << "transactions missing before " << t;
      txn = t;
      seq = 0;
    }
    EXPECT_EQ(s, seq) << "transaction " << t;
    EXPECT_EQ(rows->ColumnText(2), crash::Payload(t, s)) << "transaction " << t << " row " << s;
    if (::testing::Test::HasFailure()) return -1;
    ++seq;
  }
  EXPECT_EQ(seq, txn == 0 ? 0 : crash::RowsIn(txn)) << "transaction " << txn << " is partial";
  return txn;
}

TEST(StoreCrash, SigkillAtRandomPointsLosesNoCommittedTransaction) {
  testing::TempDir dir("store-crash");
  const std::string path = dir / "crash.db";
  const char* seed_env = std::getenv("OUTPOST_CRASH_SEED");
  const unsigned seed =
      seed_env != nullptr ? static_cast<unsigned>(std::stoul(seed_env)) : std::random_device{}();
  SCOPED_TRACE("OUTPOST_CRASH_SEED=" + std::to_string(seed));
  std::mt19937 rng(seed);

  const auto start = Clock::now();
  std::int64_t committed = 0;   // whole transactions in the database
  int lost_reports = 0;         // kills between a commit and its report
  int early_kills = 0;          // kills before the child had opened the database
  microseconds startup(20000);  // how long the child takes to open (measured)
  for (int kill = 0; kill < kKills; ++kill) {
    Child child(path);
    ASSERT_TRUE(child.started());
    const auto spawned = Clock::now();
    const int mode = std::uniform_int_distribution<int>(0, 9)(rng);
    if (mode < 2) {
      // Somewhere in start-up: exec, open, WAL recovery, migrations.
      auto delay = std::uniform_int_distribution<std::int64_t>(0, startup.count())(rng);
      std::this_thread::sleep_for(microseconds(delay));
    } else {
      // After the child committed 0..3 transactions, plus 0..3 ms.
      const std::size_t commits = std::uniform_int_distribution<std::size_t>(0, 3)(rng);
      const auto deadline = Clock::now() + std::chrono::seconds(20);
      while (!(child.ready() && child.reported().size() >= commits)) {
        ASSERT_LT(Clock::now(), deadline) << "the child made no progress";
        child.ReadSome(std::chrono::milliseconds(1000));
        ASSERT_FALSE(child.eof()) << "the child exited before it was killed, in round " << kill;
      }
      startup = std::chrono::duration_cast<microseconds>(Clock::now() - spawned);
      auto delay = std::uniform_int_distribution<std::int64_t>(0, 3000)(rng);
      std::this_thread::sleep_for(microseconds(delay));
    }
    const int status = child.KillAndDrain();
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the child ended on its own (status " << status << ") in round " << kill;
    if (!child.ready()) ++early_kills;

    std::int64_t reported = committed;
    for (std::int64_t txn : child.reported()) {
      ASSERT_EQ(txn, reported + 1) << "the child skipped a transaction";
      reported = txn;
    }
    const std::int64_t found = VerifyDatabase(path);
    ASSERT_FALSE(::testing::Test::HasFailure()) << "after kill " << kill;
    ASSERT_GE(found, reported) << "a reported commit is missing after kill " << kill;
    ASSERT_LE(found, reported + 1) << "more than one unreported transaction after kill " << kill;
    if (found > reported) ++lost_reports;
    committed = found;
  }
  const auto seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::cout << "store crash test: " << kKills << " kills in " << seconds << " s, " << committed
            << " transactions committed, " << lost_reports << " committed but unreported, "
            << early_kills << " during start-up, seed " << seed << "\n";
  RecordProperty("kills", kKills);
  RecordProperty("transactions", static_cast<int>(committed));
  EXPECT_GT(committed, kKills) << "too few commits for the kills to mean much";
}

}  // namespace
}  // namespace outpost::store
