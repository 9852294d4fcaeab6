// The sync engine without broker, clock or processes: feed it messages and
// time, read what it wants published and applied. Every test runs against
// the in-memory SyncStore and the SQLite AgentStore.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "agent/state/agent_store.hpp"
#include "agent/sync/engine.hpp"
#include "agent/sync/validate.hpp"
#include "shared/mqtt/mqtt_client.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent_sync/test_pki.hpp"

namespace outpost::agent::sync {
namespace {

using testpki::Doc;
using testpki::Pki;
using testpki::Spec;

constexpr const char* kDevice = "dev-1";

// One process-wide PKI (key generation is the slow part).
const Pki& SharedPki() {
  static const Pki* pki = new Pki();
  return *pki;
}

struct MemoryStoreFactory {
  static std::unique_ptr<SyncStore> Make(outpost::testing::TempDir&, std::uint64_t max_events) {
    return std::make_unique<MemorySyncStore>(max_events);
  }
};

struct SqliteStoreFactory {
  static std::unique_ptr<SyncStore> Make(outpost::testing::TempDir& dir, std::uint64_t max_events) {
    state::OpenOptions options;
    options.outbox_max_events = max_events;
    auto s = state::AgentStore::Open(dir / "agent.db", options);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().ToString());
    return std::move(s).value();
  }
};

template <typename Factory>
class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reset(100000); }

  void Reset(std::uint64_t max_events) {
    engine_.reset();
    store_.reset();
    store_ = Factory::Make(dir_, max_events);
    EngineConfig config;
    config.device_id = kDevice;
    config.ca_pem = SharedPki().ca_pem;
    config.agent_version = "test-version";
    config.cert_not_after_ms = 1234;
    engine_ = std::make_unique<Engine>(config, *store_);
    ASSERT_TRUE(engine_->Start(now_).ok());
  }

  Now At(std::int64_t steady_offset_ms) {
    return Now{1000 + steady_offset_ms, base_unix_ms_ + steady_offset_ms};
  }

  std::vector<Publish> Take() { return engine_->TakePublishes(); }

  static std::vector<Publish> OnTopic(const std::vector<Publish>& all, const std::string& topic) {
    std::vector<Publish> out;
    for (const auto& p : all)
      if (p.topic == topic) out.push_back(p);
    return out;
  }

  static outpost::v1::ReportedState Report(const Publish& p) {
    outpost::v1::ReportedState r;
    EXPECT_TRUE(r.ParseFromString(p.payload));
    return r;
  }
  static outpost::v1::EventBatch Batch(const Publish& p) {
    outpost::v1::EventBatch b;
    EXPECT_TRUE(b.ParseFromString(p.payload));
    return b;
  }

  std::vector<outpost::v1::Event> OutboxEvents() {
    auto rows = store_->ReadOutbox(0, 1000000, 1u << 30);
    EXPECT_TRUE(rows.ok());
    std::vector<outpost::v1::Event> out;
    for (const auto& r : *rows) {
      outpost::v1::Event e;
      EXPECT_TRUE(e.ParseFromString(r.bytes));
      EXPECT_EQ(e.seq(), r.seq);
      out.push_back(e);
    }
    return out;
  }

  outpost::v1::Event Ev(outpost::v1::EventType type, const std::string& workload = "w",
                        std::string message = "") {
    outpost::v1::Event e;
    e.set_type(type);
    e.set_workload(workload);
    e.set_message(std::move(message));
    return e;
  }

  std::string Ack(std::uint64_t seq) {
    outpost::v1::Ack a;
    a.set_acked_seq(seq);
    return a.SerializeAsString();
  }

  void Connect(std::int64_t at = 0) { engine_->OnConnected(false, 42, At(at)); }

  void ExpectRejected(const std::string& payload, std::uint64_t generation_in_event) {
    const auto before_held = store_->HeldGeneration();
    const auto before_rejected = store_->Counters().rejected;
    EXPECT_EQ(engine_->OnDesired(payload, At(0)), DesiredOutcome::kRejected);
    EXPECT_EQ(store_->HeldGeneration(), before_held);
    EXPECT_EQ(store_->Counters().rejected, before_rejected + 1);
    EXPECT_FALSE(engine_->TakeApply().has_value());
    auto events = OutboxEvents();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().type(), outpost::v1::EVENT_TYPE_DESIRED_REJECTED);
    EXPECT_EQ(events.back().generation(), generation_in_event);
    EXPECT_FALSE(events.back().message().empty());
  }

  outpost::testing::TempDir dir_{"agent-sync"};
  std::int64_t base_unix_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  Now now_{1000, base_unix_ms_};
  std::unique_ptr<SyncStore> store_;
  std::unique_ptr<Engine> engine_;
  const std::string desired_topic_ = mqtt::topics::Desired(kDevice);
  const std::string ack_topic_ = mqtt::topics::Ack(kDevice);
  const std::string reported_topic_ = mqtt::topics::Reported(kDevice);
  const std::string events_topic_ = mqtt::topics::Events(kDevice);
  const std::string presence_topic_ = mqtt::topics::Presence(kDevice);
};

using Stores = ::testing::Types<MemoryStoreFactory, SqliteStoreFactory>;
class StoreNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, MemoryStoreFactory> ? "Memory" : "Sqlite";
  }
};
TYPED_TEST_SUITE(EngineTest, Stores, StoreNames);

// ---------------------------------------------------------------------------
// Generations

TYPED_TEST(EngineTest, NothingHeldNothingToApplyAtStart) {
  EXPECT_FALSE(this->engine_->TakeApply().has_value());
  EXPECT_EQ(this->store_->HeldGeneration(), 0u);
}

TYPED_TEST(EngineTest, NewerGenerationIsStoredThenApplied) {
  auto payload = SharedPki().Sign(Doc(kDevice, 3, {Spec("a"), Spec("b")}));
  EXPECT_EQ(this->engine_->OnDesired(payload, this->At(0)), DesiredOutcome::kAccepted);
  EXPECT_EQ(this->store_->HeldGeneration(), 3u);
  EXPECT_EQ(this->store_->AppliedGeneration(), 0u);  // not before reconciliation
  auto apply = this->engine_->TakeApply();
  ASSERT_TRUE(apply.has_value());
  EXPECT_EQ(apply->generation, 3u);
  ASSERT_EQ(apply->workloads.size(), 2u);
  EXPECT_EQ(apply->workloads[0].name(), "a");
  // The hub left spec_hash empty: the agent fills in a stable one.
  EXPECT_EQ(apply->workloads[0].spec_hash(), ComputeSpecHash(Spec("a")));
  EXPECT_FALSE(this->engine_->TakeApply().has_value());

  auto held = this->store_->LoadHeld();
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(held->has_value());
  EXPECT_EQ((*held)->generation, 3u);
  EXPECT_EQ((*held)->workloads.size(), 2u);
}

TYPED_TEST(EngineTest, AppliedIsRecordedOncePerGeneration) {
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 1, {Spec("a")})), this->At(0));
  ASSERT_TRUE(this->engine_->TakeApply().has_value());
  this->engine_->OnApplied(1, this->At(1));
  this->engine_->OnApplied(1, this->At(2));
  EXPECT_EQ(this->store_->AppliedGeneration(), 1u);
  int applied_events = 0;
  for (const auto& e : this->OutboxEvents()) {
    if (e.type() == outpost::v1::EVENT_TYPE_DESIRED_APPLIED) {
      ++applied_events;
      EXPECT_EQ(e.generation(), 1u);
    }
  }
  EXPECT_EQ(applied_events, 1);
  // Never above what is held.
  this->engine_->OnApplied(7, this->At(3));
  EXPECT_EQ(this->store_->AppliedGeneration(), 1u);
}

TYPED_TEST(EngineTest, EqualGenerationIsDuplicateCountedAndNotApplied) {
  auto payload = SharedPki().Sign(Doc(kDevice, 2, {Spec("a")}));
  ASSERT_EQ(this->engine_->OnDesired(payload, this->At(0)), DesiredOutcome::kAccepted);
  ASSERT_TRUE(this->engine_->TakeApply().has_value());
  EXPECT_EQ(this->engine_->OnDesired(payload, this->At(1)), DesiredOutcome::kDuplicate);
  EXPECT_EQ(this->engine_->OnDesired(payload, this->At(2)), DesiredOutcome::kDuplicate);
  EXPECT_FALSE(this->engine_->TakeApply().has_value());
  EXPECT_EQ(this->store_->Counters().duplicate, 2u);
  EXPECT_EQ(this->store_->Counters().stale, 0u);
  EXPECT_EQ(this->store_->HeldGeneration(), 2u);
}

TYPED_TEST(EngineTest, OlderGenerationIsStaleCountedNeverApplied) {
  ASSERT_EQ(this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 5, {Spec("new")})), this->At(0)),
            DesiredOutcome::kAccepted);
  ASSERT_TRUE(this->engine_->TakeApply().has_value());
  EXPECT_EQ(this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 4, {Spec("old")})), this->At(1)),
            DesiredOutcome::kStale);
  EXPECT_FALSE(this->engine_->TakeApply().has_value());
  EXPECT_EQ(this->store_->Counters().stale, 1u);
  EXPECT_EQ(this->store_->HeldGeneration(), 5u);
  auto held = this->store_->LoadHeld();
  ASSERT_TRUE(held.ok() && held->has_value());
  EXPECT_EQ((*held)->workloads[0].name(), "new");
}

TYPED_TEST(EngineTest, StaleDocumentMakesTheAgentReportItsGeneration) {
  this->Connect(0);
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 9)), this->At(1000));
  this->Take();
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 3)), this->At(5000));
  auto reports = this->OnTopic(this->Take(), this->reported_topic_);
  ASSERT_EQ(reports.size(), 1u);
  auto r = this->Report(reports[0]);
  EXPECT_EQ(r.desired_generation(), 9u);
  EXPECT_EQ(r.stale_documents(), 1u);
}

TYPED_TEST(EngineTest, NewestPendingApplyWins) {
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 1, {Spec("a")})), this->At(0));
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 2, {Spec("b")})), this->At(1));
  auto apply = this->engine_->TakeApply();
  ASSERT_TRUE(apply.has_value());
  EXPECT_EQ(apply->generation, 2u);
  EXPECT_EQ(apply->workloads[0].name(), "b");
}

// ---------------------------------------------------------------------------
// Rejections: never change state, counted, DESIRED_REJECTED queued

TYPED_TEST(EngineTest, TamperedDocumentIsRejected) {
  outpost::v1::SignedDesiredState s;
  ASSERT_TRUE(s.ParseFromString(SharedPki().Sign(Doc(kDevice, 4, {Spec("a")}))));
  // Change the document after signing: a different command.
  outpost::v1::DesiredState d;
  ASSERT_TRUE(d.ParseFromString(s.document()));
  d.mutable_workloads(0)->set_command(0, "/bin/evil");
  s.set_document(d.SerializeAsString());
  this->ExpectRejected(s.SerializeAsString(), 4);
}

TYPED_TEST(EngineTest, FlippedSignatureByteIsRejected) {
  outpost::v1::SignedDesiredState s;
  ASSERT_TRUE(s.ParseFromString(SharedPki().Sign(Doc(kDevice, 4))));
  std::string sig = s.signature();
  sig[sig.size() / 2] = static_cast<char>(sig[sig.size() / 2] ^ 0x01);
  s.set_signature(sig);
  this->ExpectRejected(s.SerializeAsString(), 4);
}

TYPED_TEST(EngineTest, SignerWithWrongCommonNameIsRejected) {
  const Pki& pki = SharedPki();
  auto key = testpki::MustKey();
  auto cert =
      testpki::MustIssue(key, "outpost-hub", crypto::CertUsage::kSigning, pki.ca_key, pki.ca_pem);
  this->ExpectRejected(Pki::SignWith(Doc(kDevice, 4), key, cert), 4);
}

TYPED_TEST(EngineTest, DeviceCertificateCannotSign) {
  // A client certificate of the same CA, even named outpost-signer, lacks the signing usage.
  const Pki& pki = SharedPki();
  auto key = testpki::MustKey();
  auto cert =
      testpki::MustIssue(key, "outpost-signer", crypto::CertUsage::kClient, pki.ca_key, pki.ca_pem);
  this->ExpectRejected(Pki::SignWith(Doc(kDevice, 4), key, cert), 4);
}

TYPED_TEST(EngineTest, SignerFromAnotherCaIsRejected) {
  Pki other;
  this->ExpectRejected(other.Sign(Doc(kDevice, 4)), 4);
}

TYPED_TEST(EngineTest, UnsignedDocumentIsRejected) {
  outpost::v1::SignedDesiredState s;
  s.set_document(Doc(kDevice, 4).SerializeAsString());
  this->ExpectRejected(s.SerializeAsString(), 4);
}

TYPED_TEST(EngineTest, DocumentForAnotherDeviceIsRejected) {
  this->ExpectRejected(SharedPki().Sign(Doc("dev-2", 4)), 4);
}

TYPED_TEST(EngineTest, OversizeDocumentIsRejectedBeforeParsing) {
  std::string payload(kMaxDesiredBytes + 1, 'x');
  this->ExpectRejected(payload, 0);
}

TYPED_TEST(EngineTest, GarbageIsRejected) {
  this->ExpectRejected(std::string("\xff\xff\xff\xff garbage", 13), 0);
}

TYPED_TEST(EngineTest, GenerationZeroIsRejected) {
  this->ExpectRejected(SharedPki().Sign(Doc(kDevice, 0)), 0);
}

TYPED_TEST(EngineTest, InvalidWorkloadSpecIsRejected) {
  auto container = Spec("c");
  container.set_kind(outpost::v1::WORKLOAD_KIND_CONTAINER);
  this->ExpectRejected(SharedPki().Sign(Doc(kDevice, 4, {container})), 4);
  this->ExpectRejected(SharedPki().Sign(Doc(kDevice, 5, {Spec("x"), Spec("x")})), 5);
  this->ExpectRejected(SharedPki().Sign(Doc(kDevice, 6, {Spec("Bad_Name")})), 6);
}

TYPED_TEST(EngineTest, ExpiredSignerIsRejected) {
  // Ten years from now the one-year signer certificate has expired.
  std::int64_t ten_years_ms = std::int64_t{10} * 365 * 24 * 3600 * 1000;
  auto payload = SharedPki().Sign(Doc(kDevice, 4));
  EXPECT_EQ(this->engine_->OnDesired(payload, this->At(ten_years_ms)), DesiredOutcome::kRejected);
  EXPECT_EQ(this->store_->HeldGeneration(), 0u);
}

TYPED_TEST(EngineTest, RejectedDocumentDoesNotDisturbTheHeldOne) {
  ASSERT_EQ(this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 2, {Spec("a")})), this->At(0)),
            DesiredOutcome::kAccepted);
  this->engine_->TakeApply();
  Pki other;
  EXPECT_EQ(this->engine_->OnDesired(other.Sign(Doc(kDevice, 3, {Spec("evil")})), this->At(1)),
            DesiredOutcome::kRejected);
  auto held = this->store_->LoadHeld();
  ASSERT_TRUE(held.ok() && held->has_value());
  EXPECT_EQ((*held)->generation, 2u);
  EXPECT_EQ((*held)->workloads[0].name(), "a");
}

// ---------------------------------------------------------------------------
// Connect, presence, reports

TYPED_TEST(EngineTest, ConnectPublishesPresenceThenReportThenOutbox) {
  this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(0));
  EXPECT_TRUE(this->Take().empty());  // offline: nothing is published
  this->engine_->OnConnected(true, 77, this->At(10));
  auto out = this->Take();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].topic, this->presence_topic_);
  EXPECT_TRUE(out[0].retained);
  EXPECT_EQ(out[0].qos, 1);
  outpost::v1::Presence p;
  ASSERT_TRUE(p.ParseFromString(out[0].payload));
  EXPECT_TRUE(p.online());
  EXPECT_EQ(p.session(), 77u);
  EXPECT_EQ(p.agent_version(), "test-version");
  EXPECT_EQ(out[1].topic, this->reported_topic_);
  EXPECT_FALSE(out[1].retained);
  EXPECT_EQ(out[2].topic, this->events_topic_);
  auto batch = this->Batch(out[2]);
  ASSERT_EQ(batch.events_size(), 1);
  EXPECT_EQ(batch.events(0).seq(), 1u);
  EXPECT_EQ(batch.device_id(), kDevice);
  EXPECT_EQ(batch.floor_seq(), 1u);
}

TYPED_TEST(EngineTest, ReportOnEveryConnectCarriesHeldGeneration) {
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 6, {Spec("a")})), this->At(0));
  this->engine_->TakeApply();
  this->engine_->OnApplied(6, this->At(1));
  std::uint64_t last_seq = 0;
  for (int i = 0; i < 3; ++i) {
    this->Connect(i * 100000);
    auto reports = this->OnTopic(this->Take(), this->reported_topic_);
    ASSERT_EQ(reports.size(), 1u);
    auto r = this->Report(reports[0]);
    EXPECT_EQ(r.device_id(), kDevice);
    EXPECT_EQ(r.desired_generation(), 6u);
    EXPECT_EQ(r.observed_generation(), 6u);
    EXPECT_EQ(r.agent_version(), "test-version");
    EXPECT_EQ(r.cert_not_after_ms(), 1234);
    EXPECT_GT(r.report_seq(), last_seq);
    last_seq = r.report_seq();
    this->engine_->OnDisconnected(this->At(i * 100000 + 1));
  }
}

TYPED_TEST(EngineTest, ReportsAreCoalescedToOnePer250ms) {
  this->Connect(0);
  this->Take();
  auto status = [](const std::string& name, outpost::v1::WorkloadState st) {
    outpost::v1::WorkloadStatus s;
    s.set_name(name);
    s.set_state(st);
    return std::vector<outpost::v1::WorkloadStatus>{s};
  };
  // The connect report was at 0: changes within 250 ms wait.
  this->engine_->OnWorkloadStatuses(status("a", outpost::v1::WORKLOAD_STATE_STARTING),
                                    this->At(10));
  this->engine_->OnWorkloadStatuses(status("a", outpost::v1::WORKLOAD_STATE_RUNNING),
                                    this->At(100));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->reported_topic_).empty());
  ASSERT_TRUE(this->engine_->NextWakeup().has_value());
  EXPECT_EQ(*this->engine_->NextWakeup(), this->At(250).steady_ms);
  this->engine_->OnTick(this->At(249));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->reported_topic_).empty());
  this->engine_->OnTick(this->At(250));
  auto reports = this->OnTopic(this->Take(), this->reported_topic_);
  ASSERT_EQ(reports.size(), 1u);
  auto r = this->Report(reports[0]);
  ASSERT_EQ(r.workloads_size(), 1);
  EXPECT_EQ(r.workloads(0).state(), outpost::v1::WORKLOAD_STATE_RUNNING);
  EXPECT_FALSE(this->engine_->NextWakeup().has_value());
  // Unchanged statuses do not report again.
  this->engine_->OnWorkloadStatuses(status("a", outpost::v1::WORKLOAD_STATE_RUNNING),
                                    this->At(1000));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->reported_topic_).empty());
  // A change long after the last report goes out at once.
  this->engine_->OnWorkloadStatuses(status("a", outpost::v1::WORKLOAD_STATE_BACKOFF),
                                    this->At(2000));
  EXPECT_EQ(this->OnTopic(this->Take(), this->reported_topic_).size(), 1u);
}

TYPED_TEST(EngineTest, ManyChangesInOneSecondGiveAtMostFiveReports) {
  this->Connect(0);
  this->Take();
  int reports = 0;
  for (int t = 1; t <= 1000; ++t) {
    outpost::v1::WorkloadStatus s;
    s.set_name("a");
    s.set_restarts(static_cast<std::uint32_t>(t));
    this->engine_->OnWorkloadStatuses({s}, this->At(t));
    if (auto w = this->engine_->NextWakeup(); w && *w <= this->At(t).steady_ms)
      this->engine_->OnTick(this->At(t));
    reports += static_cast<int>(this->OnTopic(this->Take(), this->reported_topic_).size());
  }
  EXPECT_LE(reports, 4);  // t = 250, 500, 750, 1000
  EXPECT_GE(reports, 3);
}

TYPED_TEST(EngineTest, NoReportsWhileDisconnectedOneFullReportOnConnect) {
  outpost::v1::WorkloadStatus s;
  s.set_name("a");
  this->engine_->OnWorkloadStatuses({s}, this->At(0));
  outpost::v1::DeviceFacts facts;
  facts.set_hostname("edge-1");
  this->engine_->OnFacts(facts, this->At(1));
  EXPECT_TRUE(this->Take().empty());
  EXPECT_FALSE(this->engine_->NextWakeup().has_value());
  this->Connect(1000);
  auto reports = this->OnTopic(this->Take(), this->reported_topic_);
  ASSERT_EQ(reports.size(), 1u);
  auto r = this->Report(reports[0]);
  EXPECT_EQ(r.workloads_size(), 1);
  EXPECT_EQ(r.facts().hostname(), "edge-1");
}

TYPED_TEST(EngineTest, FactsGoOutOnConnectAndWhenChangedOnly) {
  outpost::v1::DeviceFacts facts;
  facts.set_hostname("edge-1");
  this->engine_->OnFacts(facts, this->At(0));
  this->Connect(0);
  auto r1 = this->Report(this->OnTopic(this->Take(), this->reported_topic_).at(0));
  EXPECT_TRUE(r1.has_facts());
  // A report for another reason carries no facts.
  outpost::v1::WorkloadStatus s;
  s.set_name("a");
  this->engine_->OnWorkloadStatuses({s}, this->At(1000));
  auto r2 = this->Report(this->OnTopic(this->Take(), this->reported_topic_).at(0));
  EXPECT_FALSE(r2.has_facts());
  // Same facts again: nothing.
  this->engine_->OnFacts(facts, this->At(2000));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->reported_topic_).empty());
  // Changed facts: a report with them.
  facts.add_cameras()->set_path("/dev/video0");
  this->engine_->OnFacts(facts, this->At(3000));
  auto r3 = this->Report(this->OnTopic(this->Take(), this->reported_topic_).at(0));
  ASSERT_TRUE(r3.has_facts());
  EXPECT_EQ(r3.facts().cameras_size(), 1);
}

TYPED_TEST(EngineTest, ReportStaysWithin64KiB) {
  std::vector<outpost::v1::WorkloadStatus> statuses;
  for (int i = 0; i < 256; ++i) {
    outpost::v1::WorkloadStatus s;
    s.set_name("workload-" + std::to_string(i));
    s.set_message(std::string(1000, 'm'));
    s.set_spec_hash(std::string(64, 'a'));
    statuses.push_back(s);
  }
  this->engine_->OnWorkloadStatuses(statuses, this->At(0));
  this->Connect(0);
  auto reports = this->OnTopic(this->Take(), this->reported_topic_);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_LE(reports[0].payload.size(), kMaxReportedBytes);
  EXPECT_GT(this->Report(reports[0]).workloads_size(), 100);
}

TYPED_TEST(EngineTest, ShutdownPublishesPresenceOffline) {
  this->Connect(0);
  this->Take();
  this->engine_->Shutdown(this->At(5));
  auto out = this->Take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, this->presence_topic_);
  EXPECT_TRUE(out[0].retained);
  outpost::v1::Presence p;
  ASSERT_TRUE(p.ParseFromString(out[0].payload));
  EXPECT_FALSE(p.online());
  EXPECT_EQ(p.session(), 42u);
}

// ---------------------------------------------------------------------------
// Outbox, batches, acks

TYPED_TEST(EngineTest, OutboxGoesInBatchesOfAtMost100AndFourInFlight) {
  for (int i = 0; i < 1000; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED), this->At(0));
  this->Connect(0);
  auto batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_EQ(batches.size(), 4u);
  std::uint64_t expect = 1;
  for (const auto& p : batches) {
    auto b = this->Batch(p);
    ASSERT_EQ(b.events_size(), 100);
    for (const auto& e : b.events())
      EXPECT_EQ(e.seq(), expect++);
  }
  EXPECT_EQ(this->engine_->in_flight_batches(), 4u);
  // More events while four are in flight: not sent yet.
  this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED), this->At(1));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->events_topic_).empty());
  // An ack of the first batch frees one slot.
  this->engine_->OnMessage(this->ack_topic_, this->Ack(100), this->At(2));
  batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(this->Batch(batches[0]).events(0).seq(), 401u);
  EXPECT_EQ(this->Batch(batches[0]).floor_seq(), 101u);
  EXPECT_EQ(this->store_->Marks().depth, 901u);
  EXPECT_EQ(this->store_->Marks().acked_seq, 100u);
}

TYPED_TEST(EngineTest, BatchesStayWithin64KiB) {
  for (int i = 0; i < 100; ++i)
    this->engine_->QueueEvent(
        this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED, "w", std::string(5000, 'x')),
        this->At(0));
  this->Connect(0);
  auto batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_FALSE(batches.empty());
  for (const auto& p : batches) {
    EXPECT_LE(p.payload.size(), 64u * 1024);
    // Messages are bounded when queued.
    auto batch = this->Batch(p);
    for (const auto& e : batch.events())
      EXPECT_LE(e.message().size(), 1024u);
  }
}

TYPED_TEST(EngineTest, AckDeletesCoveredRowsOnly) {
  for (int i = 0; i < 10; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(0));
  this->Connect(0);
  this->Take();
  this->engine_->OnAck(this->Ack(4), this->At(1));
  auto events = this->OutboxEvents();
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events.front().seq(), 5u);
  // An older ack changes nothing.
  this->engine_->OnAck(this->Ack(2), this->At(2));
  EXPECT_EQ(this->store_->Marks().acked_seq, 4u);
  EXPECT_EQ(this->OutboxEvents().size(), 6u);
  // An ack beyond what exists is clamped to the last seq.
  this->engine_->OnAck(this->Ack(1000), this->At(3));
  EXPECT_EQ(this->store_->Marks().acked_seq, 10u);
  EXPECT_EQ(this->store_->Marks().depth, 0u);
  EXPECT_EQ(this->store_->Marks().floor_seq, 11u);
  EXPECT_EQ(this->engine_->in_flight_batches(), 0u);
  // Seqs continue; no reuse after the outbox emptied.
  this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(4));
  EXPECT_EQ(this->OutboxEvents().at(0).seq(), 11u);
}

TYPED_TEST(EngineTest, BadAcksAreDroppedAndCounted) {
  this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(0));
  this->Connect(0);
  this->engine_->OnMessage(this->ack_topic_, std::string(2000, '\x08'), this->At(1));
  this->engine_->OnMessage(this->ack_topic_, std::string("\xff\xff\xff", 3), this->At(2));
  this->engine_->OnMessage("outpost/v1/devices/dev-1/other", this->Ack(1), this->At(3));
  EXPECT_EQ(this->engine_->dropped_messages(), 3u);
  EXPECT_EQ(this->store_->Marks().depth, 1u);
}

TYPED_TEST(EngineTest, ResendsFromFirstUnackedAfterTenSecondsWithoutAck) {
  for (int i = 0; i < 150; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(0));
  this->Connect(0);
  EXPECT_EQ(this->OnTopic(this->Take(), this->events_topic_).size(), 2u);
  this->engine_->OnAck(this->Ack(100), this->At(4000));
  ASSERT_TRUE(this->engine_->NextWakeup().has_value());
  EXPECT_EQ(*this->engine_->NextWakeup(), this->At(14000).steady_ms);
  this->engine_->OnTick(this->At(13999));
  EXPECT_TRUE(this->OnTopic(this->Take(), this->events_topic_).empty());
  this->engine_->OnTick(this->At(14000));
  auto resent = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_EQ(resent.size(), 1u);
  auto b = this->Batch(resent[0]);
  EXPECT_EQ(b.events(0).seq(), 101u);
  EXPECT_EQ(b.events_size(), 50);
}

TYPED_TEST(EngineTest, ReconnectRestartsFromFirstUnacked) {
  for (int i = 0; i < 30; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED), this->At(0));
  this->Connect(0);
  this->Take();
  this->engine_->OnAck(this->Ack(12), this->At(1));
  this->engine_->OnDisconnected(this->At(2));
  EXPECT_EQ(this->engine_->in_flight_batches(), 0u);
  EXPECT_FALSE(this->engine_->NextWakeup().has_value());
  this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED), this->At(3));
  EXPECT_TRUE(this->Take().empty());
  this->Connect(100);
  auto batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_EQ(batches.size(), 1u);
  auto b = this->Batch(batches[0]);
  EXPECT_EQ(b.events(0).seq(), 13u);
  EXPECT_EQ(b.events(b.events_size() - 1).seq(), 31u);
  EXPECT_EQ(b.floor_seq(), 13u);
}

TYPED_TEST(EngineTest, BoundedOutboxDropsOldestAndSaysHowMany) {
  this->Reset(20);
  for (int i = 0; i < 100; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED), this->At(i));
  auto marks = this->store_->Marks();
  EXPECT_LE(marks.depth, 20u);
  auto events = this->OutboxEvents();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.size(), marks.depth);
  EXPECT_EQ(marks.floor_seq, events.front().seq());
  // Seqs were handed out without gaps: every seq ever assigned is either
  // still here or was dropped.
  EXPECT_EQ(marks.next_seq - 1, marks.dropped_total + marks.depth);
  // The newest event is the last one queued.
  EXPECT_EQ(events.back().type(), outpost::v1::EVENT_TYPE_WORKLOAD_EXITED);
  // Every drop queued an EVENTS_DROPPED saying how many; the kept ones sum up
  // to at most the total.
  std::uint64_t said = 0;
  int dropped_events = 0;
  for (const auto& e : events) {
    if (e.type() == outpost::v1::EVENT_TYPE_EVENTS_DROPPED) {
      EXPECT_GT(e.dropped(), 0u);
      said += e.dropped();
      ++dropped_events;
    }
  }
  EXPECT_GT(dropped_events, 0);
  EXPECT_LE(said, marks.dropped_total);
  // A batch says where the floor is, so the hub's mark can jump the gap.
  this->Connect(1000);
  auto batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_FALSE(batches.empty());
  auto b = this->Batch(batches[0]);
  EXPECT_EQ(b.floor_seq(), marks.floor_seq);
  EXPECT_EQ(b.events(0).seq(), marks.floor_seq);
  // The hub acks up to the newest seq: everything goes.
  this->engine_->OnAck(this->Ack(marks.next_seq - 1), this->At(1001));
  EXPECT_EQ(this->store_->Marks().depth, 0u);
}

TYPED_TEST(EngineTest, DropsWhileConnectedKeepSendingFromTheFloor) {
  this->Reset(20);
  this->Connect(0);
  this->Take();
  // The hub never acks: four batches go out, the outbox fills and drops.
  for (int i = 0; i < 60; ++i)
    this->engine_->QueueEvent(this->Ev(outpost::v1::EVENT_TYPE_WORKLOAD_EXITED), this->At(i));
  this->Take();
  this->engine_->OnTick(this->At(20000));  // resend
  auto batches = this->OnTopic(this->Take(), this->events_topic_);
  ASSERT_FALSE(batches.empty());
  EXPECT_EQ(this->Batch(batches[0]).events(0).seq(), this->store_->Marks().floor_seq);
}

// ---------------------------------------------------------------------------
// Restarts

TYPED_TEST(EngineTest, StoredButNotAppliedIsReconciledAfterRestartOnce) {
  this->engine_->OnDesired(SharedPki().Sign(Doc(kDevice, 3, {Spec("a")})), this->At(0));
  // Crash before reconciliation: a new engine on the same store.
  this->engine_ = std::make_unique<Engine>(
      EngineConfig{.device_id = kDevice, .ca_pem = SharedPki().ca_pem}, *this->store_);
  ASSERT_TRUE(this->engine_->Start(this->At(10)).ok());
  auto apply = this->engine_->TakeApply();
  ASSERT_TRUE(apply.has_value());
  EXPECT_EQ(apply->generation, 3u);
  EXPECT_EQ(apply->workloads.size(), 1u);
  this->engine_->OnApplied(3, this->At(11));
  // Another restart: the cached document is applied again (idempotent) but
  // DESIRED_APPLIED is not queued twice.
  this->engine_ = std::make_unique<Engine>(
      EngineConfig{.device_id = kDevice, .ca_pem = SharedPki().ca_pem}, *this->store_);
  ASSERT_TRUE(this->engine_->Start(this->At(20)).ok());
  ASSERT_TRUE(this->engine_->TakeApply().has_value());
  this->engine_->OnApplied(3, this->At(21));
  int applied = 0;
  for (const auto& e : this->OutboxEvents())
    if (e.type() == outpost::v1::EVENT_TYPE_DESIRED_APPLIED) ++applied;
  EXPECT_EQ(applied, 1);
}

}  // namespace
}  // namespace outpost::agent::sync
