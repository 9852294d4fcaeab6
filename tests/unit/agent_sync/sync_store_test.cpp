// Contract tests of SyncStore: the in-memory store and agent.db behave alike.
#include <gtest/gtest.h>

#include <memory>

#include "agent/state/agent_store.hpp"
#include "agent/sync/sync_store.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::agent::sync {
namespace {

TEST(RowsToDrop, NothingWhileThereIsRoom) {
  EXPECT_EQ(RowsToDrop(0, 100), 0u);
  EXPECT_EQ(RowsToDrop(99, 100), 0u);
}

TEST(RowsToDrop, MakesRoomForTheEventAndTheDropNotice) {
  // Full: at least two go (the new event and EVENTS_DROPPED), in chunks of 1/20.
  EXPECT_EQ(RowsToDrop(100, 100), 5u);
  EXPECT_EQ(RowsToDrop(10, 10), 2u);
  EXPECT_EQ(RowsToDrop(100000, 100000), 5000u);
  // Over the bound (the bound was lowered): back under it at once.
  EXPECT_EQ(RowsToDrop(500, 100), 402u);
  EXPECT_LE(RowsToDrop(3, 2), 3u);
}

struct MemoryFactory {
  static std::unique_ptr<SyncStore> Make(const std::string&, std::uint64_t max) {
    return std::make_unique<MemorySyncStore>(max);
  }
};
struct SqliteFactory {
  static std::unique_ptr<SyncStore> Make(const std::string& dir, std::uint64_t max) {
    state::OpenOptions o;
    o.outbox_max_events = max;
    auto s = state::AgentStore::Open(dir + "/agent.db", o);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().ToString());
    return std::move(s).value();
  }
};

template <typename F>
class SyncStoreContract : public ::testing::Test {
 protected:
  std::unique_ptr<SyncStore> Make(std::uint64_t max = 100000) { return F::Make(dir_.path(), max); }
  static outpost::v1::Event Ev(int n) {
    outpost::v1::Event e;
    e.set_type(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED);
    e.set_time_ms(n);
    e.set_message("event " + std::to_string(n));
    return e;
  }
  outpost::testing::TempDir dir_{"sync-store"};
};

using Factories = ::testing::Types<MemoryFactory, SqliteFactory>;
class FactoryNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, MemoryFactory> ? "Memory" : "Sqlite";
  }
};
TYPED_TEST_SUITE(SyncStoreContract, Factories, FactoryNames);

TYPED_TEST(SyncStoreContract, FreshStore) {
  auto s = this->Make();
  EXPECT_EQ(s->HeldGeneration(), 0u);
  EXPECT_EQ(s->AppliedGeneration(), 0u);
  auto m = s->Marks();
  EXPECT_EQ(m.depth, 0u);
  EXPECT_EQ(m.next_seq, 1u);
  EXPECT_EQ(m.floor_seq, 1u);
  EXPECT_EQ(m.acked_seq, 0u);
  auto held = s->LoadHeld();
  ASSERT_TRUE(held.ok());
  EXPECT_FALSE(held->has_value());
}

TYPED_TEST(SyncStoreContract, SeqsStartAtOneWithoutGaps) {
  auto s = this->Make();
  for (int i = 1; i <= 5; ++i) {
    auto seq = s->Append(this->Ev(i));
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, static_cast<std::uint64_t>(i));
  }
  auto rows = s->ReadOutbox(3, 10, 1u << 20);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].seq, 3u);
  outpost::v1::Event e;
  ASSERT_TRUE(e.ParseFromString((*rows)[0].bytes));
  EXPECT_EQ(e.seq(), 3u);
  EXPECT_EQ(e.message(), "event 3");
}

TYPED_TEST(SyncStoreContract, ReadOutboxHonoursCountAndBytes) {
  auto s = this->Make();
  for (int i = 1; i <= 10; ++i)
    ASSERT_TRUE(s->Append(this->Ev(i)).ok());
  auto rows = s->ReadOutbox(1, 4, 1u << 20);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 4u);
  // A byte budget smaller than one row still returns that row.
  rows = s->ReadOutbox(1, 10, 1);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 1u);
  std::size_t one = (*rows)[0].bytes.size();
  rows = s->ReadOutbox(1, 10, one * 3);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 3u);
}

TYPED_TEST(SyncStoreContract, AckDeletesUpToAndMovesTheFloor) {
  auto s = this->Make();
  for (int i = 1; i <= 10; ++i)
    ASSERT_TRUE(s->Append(this->Ev(i)).ok());
  ASSERT_TRUE(s->Ack(6).ok());
  auto m = s->Marks();
  EXPECT_EQ(m.depth, 4u);
  EXPECT_EQ(m.acked_seq, 6u);
  EXPECT_EQ(m.floor_seq, 7u);
  ASSERT_TRUE(s->Ack(3).ok());  // older: ignored
  EXPECT_EQ(s->Marks().acked_seq, 6u);
  ASSERT_TRUE(s->Ack(99).ok());  // clamped
  m = s->Marks();
  EXPECT_EQ(m.acked_seq, 10u);
  EXPECT_EQ(m.depth, 0u);
  EXPECT_EQ(m.floor_seq, 11u);
  EXPECT_EQ(*s->Append(this->Ev(11)), 11u);
}

TYPED_TEST(SyncStoreContract, BoundDropsOldestAndQueuesEventsDropped) {
  auto s = this->Make(10);
  for (int i = 1; i <= 10; ++i)
    ASSERT_TRUE(s->Append(this->Ev(i)).ok());
  EXPECT_EQ(s->Marks().depth, 10u);
  auto seq = s->Append(this->Ev(11));
  ASSERT_TRUE(seq.ok());
  auto m = s->Marks();
  EXPECT_LE(m.depth, 10u);
  EXPECT_EQ(m.dropped_total, 2u);
  EXPECT_EQ(m.floor_seq, 3u);  // seqs 1 and 2 were dropped
  EXPECT_EQ(*seq, 12u);        // 11 is the EVENTS_DROPPED notice
  auto rows = s->ReadOutbox(0, 100, 1u << 20);
  ASSERT_TRUE(rows.ok());
  outpost::v1::Event notice;
  ASSERT_TRUE(notice.ParseFromString(rows->at(rows->size() - 2).bytes));
  EXPECT_EQ(notice.type(), outpost::v1::EVENT_TYPE_EVENTS_DROPPED);
  EXPECT_EQ(notice.dropped(), 2u);
  EXPECT_EQ(notice.seq(), 11u);
}

TYPED_TEST(SyncStoreContract, DesiredGenerationsOnlyGrow) {
  auto s = this->Make();
  outpost::v1::WorkloadSpec w;
  w.set_name("a");
  ASSERT_TRUE(s->StoreDesired(2, "signed", "doc", {w}).ok());
  EXPECT_EQ(s->HeldGeneration(), 2u);
  EXPECT_FALSE(s->StoreDesired(2, "x", "y", {}).ok());
  EXPECT_FALSE(s->StoreDesired(1, "x", "y", {}).ok());
  auto held = s->LoadHeld();
  ASSERT_TRUE(held.ok() && held->has_value());
  EXPECT_EQ((*held)->generation, 2u);
  ASSERT_EQ((*held)->workloads.size(), 1u);
  EXPECT_EQ((*held)->workloads[0].name(), "a");
}

TYPED_TEST(SyncStoreContract, MarkAppliedQueuesItsEventAndNeverPassesHeld) {
  auto s = this->Make();
  ASSERT_TRUE(s->StoreDesired(4, "s", "d", {}).ok());
  EXPECT_FALSE(s->MarkApplied(5, this->Ev(0)).ok());
  outpost::v1::Event e;
  e.set_type(outpost::v1::EVENT_TYPE_DESIRED_APPLIED);
  e.set_generation(4);
  ASSERT_TRUE(s->MarkApplied(4, e).ok());
  EXPECT_EQ(s->AppliedGeneration(), 4u);
  EXPECT_EQ(s->Marks().depth, 1u);
}

TYPED_TEST(SyncStoreContract, CountersAndReportSeq) {
  auto s = this->Make();
  ASSERT_TRUE(s->CountIgnored(Ignored::kStale).ok());
  ASSERT_TRUE(s->CountIgnored(Ignored::kDuplicate).ok());
  ASSERT_TRUE(s->CountIgnored(Ignored::kDuplicate).ok());
  ASSERT_TRUE(s->RecordRejected(this->Ev(1)).ok());
  auto c = s->Counters();
  EXPECT_EQ(c.stale, 1u);
  EXPECT_EQ(c.duplicate, 2u);
  EXPECT_EQ(c.rejected, 1u);
  EXPECT_EQ(s->Marks().depth, 1u);
  std::uint64_t last = 0;
  for (int i = 0; i < 200; ++i) {
    auto seq = s->NextReportSeq();
    ASSERT_TRUE(seq.ok());
    EXPECT_GT(*seq, last);
    last = *seq;
  }
}

}  // namespace
}  // namespace outpost::agent::sync
