// agent.db: schema, durability across reopen, atomic desired store, bounded
// outbox, process records, read-only snapshots.
#include "agent/state/agent_store.hpp"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/support/test_support.hpp"

namespace outpost::agent::state {
namespace {

class AgentStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<AgentStore> Open(OpenOptions options = {}) {
    auto s = AgentStore::Open(path_, options);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().ToString());
    return s.ok() ? std::move(s).value() : nullptr;
  }
  static outpost::v1::Event Ev(
      outpost::v1::EventType type = outpost::v1::EVENT_TYPE_WORKLOAD_STARTED) {
    outpost::v1::Event e;
    e.set_type(type);
    e.set_time_ms(5);
    e.set_workload("w");
    return e;
  }
  static outpost::v1::WorkloadSpec Spec(const std::string& name) {
    outpost::v1::WorkloadSpec s;
    s.set_name(name);
    s.add_command("/bin/true");
    s.set_spec_hash(std::string(64, 'a'));
    return s;
  }
  outpost::testing::TempDir dir_{"agent-state"};
  std::string path_ = dir_ / "agent.db";
};

TEST_F(AgentStoreTest, CreatesTheSchemaWithPrivateMode) {
  auto s = Open();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->db().SchemaVersion(), static_cast<int>(AgentStore::Migrations().size()));
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AgentStoreTest, IdentityRoundTrip) {
  auto s = Open();
  auto none = s->LoadIdentity();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  Identity id;
  id.device_id = "edge-7";
  id.hub_url = "https://hub:8443";
  id.broker_url = "ssl://hub:8883";
  id.name = "edge";
  id.labels = {{"role", "store"}, {"region", "south"}};
  id.enrolled_at_ms = 99;
  ASSERT_TRUE(s->SaveIdentity(id).ok());
  s.reset();
  s = Open();
  auto got = s->LoadIdentity();
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->device_id, "edge-7");
  EXPECT_EQ((*got)->hub_url, "https://hub:8443");
  EXPECT_EQ((*got)->broker_url, "ssl://hub:8883");
  EXPECT_EQ((*got)->labels, id.labels);
  EXPECT_EQ((*got)->enrolled_at_ms, 99);
}

TEST_F(AgentStoreTest, DesiredSurvivesReopen) {
  auto s = Open();
  ASSERT_TRUE(s->StoreDesired(3, "signed-bytes", "doc-bytes", {Spec("a"), Spec("b")}).ok());
  s.reset();
  s = Open();
  EXPECT_EQ(s->HeldGeneration(), 3u);
  auto held = s->LoadHeld();
  ASSERT_TRUE(held.ok() && held->has_value());
  ASSERT_EQ((*held)->workloads.size(), 2u);
  EXPECT_EQ((*held)->workloads[0].name(), "a");
  EXPECT_EQ((*held)->workloads[1].name(), "b");
  auto signed_bytes = s->LoadSignedDesired();
  ASSERT_TRUE(signed_bytes.ok() && signed_bytes->has_value());
  EXPECT_EQ(**signed_bytes, "signed-bytes");
}

TEST_F(AgentStoreTest, StoreDesiredIsOneTransaction) {
  auto s = Open();
  ASSERT_TRUE(s->StoreDesired(1, "s1", "d1", {Spec("a")}).ok());
  // Two workloads with one name violate the table's UNIQUE constraint half-way
  // through the transaction: nothing of generation 2 may remain.
  auto st = s->StoreDesired(2, "s2", "d2", {Spec("x"), Spec("x")});
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(s->HeldGeneration(), 1u);
  s.reset();
  s = Open();
  EXPECT_EQ(s->HeldGeneration(), 1u);
  auto held = s->LoadHeld();
  ASSERT_TRUE(held.ok() && held->has_value());
  ASSERT_EQ((*held)->workloads.size(), 1u);
  EXPECT_EQ((*held)->workloads[0].name(), "a");
  EXPECT_EQ(**s->LoadSignedDesired(), "s1");
}

TEST_F(AgentStoreTest, AppliedAndCountersSurviveReopen) {
  auto s = Open();
  ASSERT_TRUE(s->StoreDesired(2, "s", "d", {}).ok());
  ASSERT_TRUE(s->MarkApplied(2, Ev(outpost::v1::EVENT_TYPE_DESIRED_APPLIED)).ok());
  ASSERT_TRUE(s->CountIgnored(sync::Ignored::kStale).ok());
  ASSERT_TRUE(s->CountIgnored(sync::Ignored::kDuplicate).ok());
  ASSERT_TRUE(s->RecordRejected(Ev(outpost::v1::EVENT_TYPE_DESIRED_REJECTED)).ok());
  s.reset();
  s = Open();
  EXPECT_EQ(s->AppliedGeneration(), 2u);
  EXPECT_EQ(s->Counters().stale, 1u);
  EXPECT_EQ(s->Counters().duplicate, 1u);
  EXPECT_EQ(s->Counters().rejected, 1u);
  EXPECT_EQ(s->Marks().depth, 2u);
}

TEST_F(AgentStoreTest, OutboxMarksSurviveReopenAndSeqsAreNeverReused) {
  auto s = Open();
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(s->Append(Ev()).ok());
  ASSERT_TRUE(s->Ack(5).ok());
  EXPECT_EQ(s->Marks().depth, 0u);
  s.reset();
  s = Open();
  auto m = s->Marks();
  EXPECT_EQ(m.next_seq, 6u);
  EXPECT_EQ(m.acked_seq, 5u);
  EXPECT_EQ(m.floor_seq, 6u);
  auto seq = s->Append(Ev());
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 6u);
}

TEST_F(AgentStoreTest, OutboxBoundHoldsAcrossReopenAndALowerBound) {
  OpenOptions big;
  big.outbox_max_events = 100;
  auto s = Open(big);
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(s->Append(Ev()).ok());
  EXPECT_EQ(s->Marks().depth, 100u);
  s.reset();
  // The operator lowered outbox_max_events: the next insert brings it down.
  OpenOptions small;
  small.outbox_max_events = 10;
  s = Open(small);
  ASSERT_TRUE(s->Append(Ev()).ok());
  auto m = s->Marks();
  EXPECT_LE(m.depth, 10u);
  EXPECT_EQ(m.next_seq - 1, m.dropped_total + m.depth);
  s.reset();
  s = Open(small);
  EXPECT_EQ(s->Marks().depth, m.depth);
  EXPECT_EQ(s->Marks().dropped_total, m.dropped_total);
  EXPECT_EQ(s->Marks().floor_seq, m.floor_seq);
}

TEST_F(AgentStoreTest, ReportSeqGrowsAcrossReopen) {
  OpenOptions o;
  o.report_seq_block = 4;
  auto s = Open(o);
  std::uint64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 6; ++i) {
      auto seq = s->NextReportSeq();
      ASSERT_TRUE(seq.ok());
      EXPECT_GT(*seq, last);
      last = *seq;
    }
    s.reset();
    s = Open(o);
  }
}

TEST_F(AgentStoreTest, ASnapshotDoesNotDisturbTheWriter) {
  auto s = Open();
  auto a = s->NextReportSeq();
  ASSERT_TRUE(s->Append(Ev()).ok());
  ASSERT_TRUE(s->ReadSnapshot().ok());  // the daemon answers its status socket
  auto b = s->NextReportSeq();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*b, *a + 1);
  EXPECT_EQ(s->Marks().depth, 1u);
}

TEST_F(AgentStoreTest, ProcessRecords) {
  auto s = Open();
  ProcessRecord r;
  r.name = "cam";
  r.spec_hash = "h1";
  r.pid = 1234;
  r.start_time_ticks = 987654321;
  r.restarts = 2;
  r.started_at_ms = 1700000000000;
  ASSERT_TRUE(s->Save(r).ok());
  r.pid = 1300;
  r.restarts = 3;
  ASSERT_TRUE(s->Save(r).ok());  // replaces by name
  ProcessRecord g = r;
  g.name = "gpu";
  ASSERT_TRUE(s->Save(g).ok());
  s.reset();
  s = Open();
  auto all = s->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "cam");
  EXPECT_EQ((*all)[0].pid, 1300);
  EXPECT_EQ((*all)[0].restarts, 3u);
  EXPECT_EQ((*all)[0].start_time_ticks, 987654321u);
  EXPECT_EQ((*all)[0].started_at_ms, 1700000000000);
  ASSERT_TRUE(s->Remove("cam").ok());
  ASSERT_TRUE(s->Remove("absent").ok());
  EXPECT_EQ(s->LoadAll()->size(), 1u);
}

// Saving a process record (between fork and exec of every workload start)
// works inside and outside a transaction and leaves every commit FULL.
TEST_F(AgentStoreTest, ProcessRecordSaveLeavesTheDatabaseSynchronousFull) {
  auto s = Open();
  auto level = [&] {
    auto q = s->db().Prepare("PRAGMA synchronous");
    EXPECT_TRUE(q.ok());
    auto row = q->Step();
    EXPECT_TRUE(row.ok() && *row);
    return q->ColumnInt(0);
  };
  ASSERT_EQ(level(), 2);  // FULL
  ProcessRecord r;
  r.name = "cam";
  r.pid = 42;
  ASSERT_TRUE(s->Save(r).ok());
  EXPECT_EQ(level(), 2);
  {
    // Inside a transaction SQLite refuses the change: the save still works.
    auto tx = s->db().Begin();
    ASSERT_TRUE(tx.ok());
    r.pid = 43;
    ASSERT_TRUE(s->Save(r).ok());
    ASSERT_TRUE(tx->Commit().ok());
  }
  EXPECT_EQ(level(), 2);
  auto all = s->LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].pid, 43);
}

TEST_F(AgentStoreTest, ReadOnlySnapshotWhileTheDaemonWrites) {
  auto writer = Open();
  Identity id;
  id.device_id = "edge-1";
  id.hub_url = "https://h:1";
  id.broker_url = "ssl://h:2";
  ASSERT_TRUE(writer->SaveIdentity(id).ok());
  ASSERT_TRUE(writer->StoreDesired(4, "s", "d", {Spec("cam")}).ok());
  ASSERT_TRUE(writer->MarkApplied(4, Ev(outpost::v1::EVENT_TYPE_DESIRED_APPLIED)).ok());
  ConnectionState c;
  c.connected = false;
  c.since_ms = 1000;
  c.last_connected_ms = 900;
  c.detail = "connection refused";
  ASSERT_TRUE(writer->SetConnection(c).ok());
  ASSERT_TRUE(writer->SetDaemon(4242, 800).ok());
  outpost::v1::WorkloadStatus ws;
  ws.set_name("cam");
  ws.set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
  ws.set_pid(77);
  ASSERT_TRUE(writer->SaveWorkloadStatuses({ws}, 1100).ok());

  OpenOptions ro;
  ro.read_only = true;
  auto reader = Open(ro);
  ASSERT_NE(reader, nullptr);
  auto snap = reader->ReadSnapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().ToString();
  ASSERT_TRUE(snap->identity.has_value());
  EXPECT_EQ(snap->identity->device_id, "edge-1");
  EXPECT_EQ(snap->held_generation, 4u);
  EXPECT_EQ(snap->applied_generation, 4u);
  EXPECT_FALSE(snap->connection.connected);
  EXPECT_EQ(snap->connection.since_ms, 1000);
  EXPECT_EQ(snap->connection.detail, "connection refused");
  EXPECT_EQ(snap->daemon_pid, 4242);
  ASSERT_EQ(snap->workloads.size(), 1u);
  EXPECT_EQ(snap->workloads[0].pid(), 77);
  ASSERT_EQ(snap->desired_workloads.size(), 1u);
  EXPECT_EQ(snap->outbox.depth, 1u);
  EXPECT_EQ(snap->workloads_saved_ms, 1100);

  // The writer moves on; a new snapshot sees it.
  ASSERT_TRUE(writer->Append(Ev()).ok());
  auto again = reader->ReadSnapshot();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->outbox.depth, 2u);
  // The reader cannot write.
  EXPECT_FALSE(reader->Append(Ev()).ok());
}

TEST(Labels, EncodeDecode) {
  std::map<std::string, std::string> labels = {{"a", "1"}, {"role", "x=y"}};
  EXPECT_EQ(DecodeLabels(EncodeLabels(labels)), labels);
  EXPECT_TRUE(DecodeLabels("garbage\n=x\n").empty());
}

}  // namespace
}  // namespace outpost::agent::state
