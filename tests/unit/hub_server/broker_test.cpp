// The hub's broker side without a broker: the fair ingest queue, message
// classification, DeviceIngest over a real Registry, the desired-document
// publisher and signer, and the CRL writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <functional>
#include <mutex>

#include "hub/broker/crl.hpp"
#include "hub/broker/fair_queue.hpp"
#include "hub/broker/ingest.hpp"
#include "hub/broker/link.hpp"
#include "hub/broker/publisher.hpp"
#include "hub/broker/signer.hpp"
#include "hub/registry/registry.hpp"
#include "outpost.pb.h"
#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/hub_server/fake_mqtt.hpp"

namespace outpost::hub::broker {
namespace {

using outpost::testing::FakeMqttClient;
using outpost::testing::TempDir;
using outpost::testing::WaitFor;

// ---------------------------------------------------------------------------
// FairQueue

TEST(FairQueue, BoundsEachKeyAndTheWhole) {
  FairQueue<int> q(/*per_key=*/2, /*total=*/3, /*total_bytes=*/1000);
  EXPECT_TRUE(q.Push("a", 1, 10));
  EXPECT_TRUE(q.Push("a", 2, 10));
  EXPECT_FALSE(q.Push("a", 3, 10));  // a's FIFO is full
  EXPECT_TRUE(q.Push("b", 4, 10));
  EXPECT_FALSE(q.Push("c", 5, 10));  // the queue is full
  EXPECT_EQ(q.size(), 3u);
  FairQueue<int> bytes(10, 10, 100);
  EXPECT_TRUE(bytes.Push("a", 1, 60));
  EXPECT_FALSE(bytes.Push("b", 2, 60));
  EXPECT_EQ(*bytes.Pop(), 1);
  EXPECT_TRUE(bytes.Push("b", 2, 60));
  EXPECT_EQ(bytes.bytes(), 60u);
}

TEST(FairQueue, ServesKeysInTurnSoAFloodDelaysNoOne) {
  FairQueue<std::string> q(100, 1000, 1 << 20);
  for (int i = 0; i < 50; ++i)
    q.Push("flood", "f" + std::to_string(i), 1);
  q.Push("quiet", "q0", 1);
  // The quiet device's message comes second, not 51st.
  EXPECT_EQ(*q.Pop(), "f0");
  EXPECT_EQ(*q.Pop(), "q0");
  EXPECT_EQ(*q.Pop(), "f1");
  std::size_t left = 0;
  while (q.Pop())
    ++left;
  EXPECT_EQ(left, 48u);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.keys(), 0u);
}

// ---------------------------------------------------------------------------
// Classify

TEST(Classify, AcceptsDeviceTopicsWithinLimits) {
  Drop why{};
  auto m = Classify({"outpost/v1/devices/dev-1/reported", "x", false, 1}, &why);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->device_id, "dev-1");
  EXPECT_EQ(m->leaf, Leaf::kReported);
  EXPECT_EQ(Classify({"outpost/v1/devices/dev-1/events", "x", false, 1}, &why)->leaf,
            Leaf::kEvents);
  EXPECT_EQ(Classify({"outpost/v1/devices/dev-1/presence", "x", true, 1}, &why)->leaf,
            Leaf::kPresence);
}

TEST(Classify, DropsBadTopicsAndOversizedPayloads) {
  Drop why{};
  EXPECT_FALSE(Classify({"outpost/v1/devices/dev-1/desired", "x", false, 1}, &why));
  EXPECT_EQ(why, Drop::kBadTopic);
  EXPECT_FALSE(Classify({"outpost/v1/devices/Bad_Id/reported", "x", false, 1}, &why));
  EXPECT_EQ(why, Drop::kBadTopic);
  EXPECT_FALSE(Classify({"outpost/v1/devices/outpost-hub/reported", "x", false, 1}, &why));
  EXPECT_EQ(why, Drop::kBadTopic);
  EXPECT_FALSE(Classify({"elsewhere", "x", false, 1}, &why));
  EXPECT_EQ(why, Drop::kBadTopic);
  EXPECT_FALSE(Classify(
      {"outpost/v1/devices/d/reported", std::string(kMaxReportBytes + 1, 'x'), false, 1}, &why));
  EXPECT_EQ(why, Drop::kTooLarge);
  EXPECT_TRUE(Classify(
      {"outpost/v1/devices/d/reported", std::string(kMaxReportBytes, 'x'), false, 1}, &why));
  EXPECT_FALSE(Classify(
      {"outpost/v1/devices/d/events", std::string(kMaxEventBatchBytes + 1, 'x'), false, 1}, &why));
  EXPECT_FALSE(Classify(
      {"outpost/v1/devices/d/presence", std::string(kMaxPresenceBytes + 1, 'x'), true, 1}, &why));
  EXPECT_EQ(why, Drop::kTooLarge);
}

// ---------------------------------------------------------------------------
// DeviceIngest over a real registry

class RecordingSink : public DesiredSink {
 public:
  void Publish(const std::vector<registry::DesiredChange>& changes) override {
    for (const auto& c : changes)
      published.push_back(c);
  }
  void Republish(const std::vector<registry::DesiredRecord>& records) override {
    for (const auto& r : records)
      republished.push_back(r);
  }
  void Clear(const std::string& device_id) override { cleared.push_back(device_id); }
  std::vector<registry::DesiredChange> published;
  std::vector<registry::DesiredRecord> republished;
  std::vector<std::string> cleared;
};

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = registry::Registry::Open(tmp_ / "hub.db");
    ASSERT_TRUE(reg.ok()) << reg.error().ToString();
    registry_ = std::move(*reg);
    device_ = Enroll("cam-1");
    other_ = Enroll("cam-2");
    ingest_ = std::make_unique<DeviceIngest>(registry_.get(), &sink_, &client_, &stats_,
                                             [this] { return now_; });
  }

  std::string Enroll(const std::string& name) {
    auto token = registry_->CreateToken(std::chrono::hours(1), 1, {}, now_);
    EXPECT_TRUE(token.ok());
    registry::EnrollRequest req;
    req.token = token->token;
    req.requested_name = name;
    auto e = registry_->EnrollDevice(req, now_);
    EXPECT_TRUE(e.ok()) << e.error().ToString();
    return e->device_id;
  }

  void Feed(const std::string& topic, const std::string& payload) {
    Drop why{};
    auto m = Classify({topic, payload, false, 1}, &why);
    if (!m) {
      stats_.Count(why);
      return;
    }
    ingest_->Handle(*m);
  }

  static std::string Report(const std::string& id, std::uint64_t seq, std::uint64_t held,
                            std::uint64_t observed) {
    outpost::v1::ReportedState r;
    r.set_device_id(id);
    r.set_report_seq(seq);
    r.set_desired_generation(held);
    r.set_observed_generation(observed);
    auto* w = r.add_workloads();
    w->set_name("app.worker");
    w->set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
    return r.SerializeAsString();
  }

  static std::string Events(const std::string& id, std::vector<std::uint64_t> seqs) {
    outpost::v1::EventBatch b;
    b.set_device_id(id);
    for (auto s : seqs) {
      auto* e = b.add_events();
      e->set_seq(s);
      e->set_type(outpost::v1::EVENT_TYPE_AGENT_STARTED);
    }
    return b.SerializeAsString();
  }

  TempDir tmp_;
  std::int64_t now_ = 1'700'000'000'000;
  std::unique_ptr<registry::Registry> registry_;
  RecordingSink sink_;
  FakeMqttClient client_;
  IngestStats stats_;
  std::unique_ptr<DeviceIngest> ingest_;
  std::string device_;
  std::string other_;
};

TEST_F(IngestTest, StoresReportsOfTheDeviceNamedByTheTopic) {
  Feed(mqtt::topics::Reported(device_), Report(device_, 1, 1, 1));
  auto d = registry_->GetDevice(device_);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->observed_generation, 1u);
  EXPECT_EQ(d->report.workloads_size(), 1);
  EXPECT_EQ(stats_.processed.load(), 1u);
}

TEST_F(IngestTest, AReportClaimingAnotherDeviceIsDropped) {
  // cam-1's topic carrying cam-2's id: dropped, cam-2 unchanged.
  Feed(mqtt::topics::Reported(device_), Report(other_, 1, 1, 1));
  EXPECT_EQ(stats_.Dropped(Drop::kIdMismatch), 1u);
  EXPECT_EQ(registry_->GetDevice(other_)->report_seq, 0u);
  EXPECT_EQ(registry_->GetDevice(device_)->report_seq, 0u);
}

TEST_F(IngestTest, GarbageIsCountedNeverStored) {
  Feed(mqtt::topics::Reported(device_), "\xff\xff\xff not protobuf");
  Feed(mqtt::topics::Events(device_), "\x0a\xff");
  Feed(mqtt::topics::Presence(device_), "\x08\x01\x10");
  Feed(mqtt::topics::Reported(device_), std::string(kMaxReportBytes + 1, 'x'));
  Feed(mqtt::topics::Reported("nobody"), Report("nobody", 1, 1, 1));
  EXPECT_EQ(stats_.Dropped(Drop::kUnparseable), 3u);
  EXPECT_EQ(stats_.Dropped(Drop::kTooLarge), 1u);
  EXPECT_EQ(stats_.Dropped(Drop::kUnknownDevice), 1u);
  EXPECT_EQ(stats_.processed.load(), 0u);
  EXPECT_EQ(registry_->GetDevice(device_)->report_seq, 0u);
  EXPECT_EQ(client_.Count(), 0u);
}

TEST_F(IngestTest, EventsAreStoredAndAcknowledgedWithTheContiguousMark) {
  Feed(mqtt::topics::Events(device_), Events(device_, {1, 2, 4}));
  auto sent = client_.Take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].topic, mqtt::topics::Ack(device_));
  EXPECT_EQ(sent[0].qos, 1);
  EXPECT_FALSE(sent[0].retained);
  outpost::v1::Ack ack;
  ASSERT_TRUE(ack.ParseFromString(sent[0].payload));
  EXPECT_EQ(ack.acked_seq(), 2u);
  EXPECT_EQ(ack.hub_generation(), 1u);
  // A duplicate batch is acknowledged again; filling the gap moves the mark.
  Feed(mqtt::topics::Events(device_), Events(device_, {3}));
  sent = client_.Take();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_TRUE(ack.ParseFromString(sent[0].payload));
  EXPECT_EQ(ack.acked_seq(), 4u);
  EXPECT_EQ(*registry_->EventCount(device_), 4u);
}

TEST_F(IngestTest, OversizedBatchesAreDropped) {
  std::vector<std::uint64_t> seqs;
  for (std::uint64_t i = 1; i <= kMaxEventsPerBatch + 1; ++i)
    seqs.push_back(i);
  Feed(mqtt::topics::Events(device_), Events(device_, seqs));
  EXPECT_EQ(stats_.Dropped(Drop::kTooManyEvents), 1u);
  EXPECT_EQ(*registry_->EventCount(device_), 0u);
  EXPECT_EQ(client_.Count(), 0u);
}

TEST_F(IngestTest, PresenceMarksOnlineAndOffline) {
  outpost::v1::Presence p;
  p.set_online(true);
  Feed(mqtt::topics::Presence(device_), p.SerializeAsString());
  EXPECT_TRUE(registry_->GetDevice(device_)->online);
  p.set_online(false);
  Feed(mqtt::topics::Presence(device_), p.SerializeAsString());
  EXPECT_FALSE(registry_->GetDevice(device_)->online);
  // Zero bytes are Presence{online=false} too (all fields default).
  p.set_online(true);
  Feed(mqtt::topics::Presence(device_), p.SerializeAsString());
  ASSERT_TRUE(registry_->GetDevice(device_)->online);
  Feed(mqtt::topics::Presence(device_), "");
  EXPECT_FALSE(registry_->GetDevice(device_)->online);
  EXPECT_EQ(stats_.Dropped(Drop::kUnparseable), 0u);
}

TEST_F(IngestTest, RevokedDevicesAreIgnored) {
  ASSERT_TRUE(registry_->RevokeDevice(device_, now_).ok());
  Feed(mqtt::topics::Reported(device_), Report(device_, 1, 1, 1));
  Feed(mqtt::topics::Events(device_), Events(device_, {1}));
  EXPECT_EQ(stats_.Dropped(Drop::kRevoked), 2u);
  EXPECT_EQ(client_.Count(), 0u);  // no ack for a revoked device
  EXPECT_EQ(*registry_->EventCount(device_), 0u);
}

TEST_F(IngestTest, ADeviceBehindGetsItsDocumentAgainAtMostEveryFiveSeconds) {
  // The hub holds generation 1; the device reports holding 0.
  Feed(mqtt::topics::Reported(device_), Report(device_, 1, 0, 0));
  ASSERT_EQ(sink_.republished.size(), 1u);
  EXPECT_EQ(sink_.republished[0].device_id, device_);
  EXPECT_EQ(sink_.republished[0].generation, 1u);
  now_ += 1000;
  Feed(mqtt::topics::Reported(device_), Report(device_, 2, 0, 0));
  EXPECT_EQ(sink_.republished.size(), 1u);  // throttled
  now_ += kRepublishIntervalMs;
  Feed(mqtt::topics::Reported(device_), Report(device_, 3, 0, 0));
  EXPECT_EQ(sink_.republished.size(), 2u);
  // Another device is throttled on its own.
  Feed(mqtt::topics::Reported(other_), Report(other_, 1, 0, 0));
  EXPECT_EQ(sink_.republished.size(), 3u);
}

TEST_F(IngestTest, ADeviceAheadOfTheHubGetsANewerGeneration) {
  Feed(mqtt::topics::Reported(device_), Report(device_, 1, 7, 7));
  ASSERT_EQ(sink_.published.size(), 1u);
  EXPECT_EQ(sink_.published[0].device_id, device_);
  EXPECT_EQ(sink_.published[0].generation, 8u);
  EXPECT_EQ(registry_->GetDevice(device_)->desired_generation, 8u);
}

// ---------------------------------------------------------------------------
// BrokerLink: subscriptions, queueing, drain on the "state thread"

TEST(BrokerLink, SubscribesQueuesPerDeviceAndRepublishesOnConnect) {
  TempDir tmp;
  auto reg = registry::Registry::Open(tmp / "hub.db");
  ASSERT_TRUE(reg.ok());
  FakeMqttClient client;
  std::deque<std::function<void(registry::Registry&)>> tasks;
  auto post = [&](std::function<void(registry::Registry&)> t) { tasks.push_back(std::move(t)); };
  auto run_tasks = [&] {
    while (!tasks.empty()) {
      auto t = std::move(tasks.front());
      tasks.pop_front();
      t(**reg);
    }
  };
  auto key = crypto::PrivateKey::Generate();
  ASSERT_TRUE(key.ok());
  IngestStats stats;
  RecordingSink sink;
  DeviceIngest ingest(reg->get(), &sink, &client, &stats, [] { return std::int64_t{1}; });
  // A publisher without a thread: only its Republish/SetConnected matter here.
  DesiredPublisher publisher(&client, nullptr, post);
  BrokerLink::Options options;
  options.per_device_queue = 4;
  BrokerLink link(&client, &publisher, &ingest, &stats, post, options);
  ASSERT_TRUE(link.Start().ok());
  EXPECT_TRUE(client.started);
  std::vector<std::string> filters;
  for (auto& [f, q] : client.subscriptions) {
    filters.push_back(f);
    EXPECT_EQ(q, 1);
  }
  EXPECT_EQ(filters, (std::vector<std::string>{"outpost/v1/devices/+/reported",
                                               "outpost/v1/devices/+/events",
                                               "outpost/v1/devices/+/presence"}));
  // Ten messages from one device: four queued, six dropped, one drain task.
  for (int i = 0; i < 10; ++i) {
    client.message_handler({"outpost/v1/devices/flood/events", "junk", false, 1});
  }
  EXPECT_EQ(stats.Dropped(Drop::kQueueFull), 6u);
  EXPECT_EQ(tasks.size(), 1u);
  run_tasks();
  EXPECT_EQ(stats.Dropped(Drop::kUnparseable), 4u);
  EXPECT_EQ(link.HealthJson()["ingestQueue"], 0);

  client.connection_handler({true, false, ""});
  EXPECT_TRUE(link.connected());
  EXPECT_EQ(link.HealthJson()["broker"], "connected");
  ASSERT_EQ(tasks.size(), 1u);  // read AllDesired on the state thread
  run_tasks();
  client.connection_handler({false, false, "broker went away"});
  EXPECT_FALSE(link.connected());
  EXPECT_EQ(link.HealthJson()["brokerError"], "broker went away");
}

// ---------------------------------------------------------------------------
// Signer and publisher

struct Pki {
  Pki() {
    ca_key.emplace(std::move(*crypto::PrivateKey::Generate()));
    ca_pem = *crypto::CreateSelfSignedCa(*ca_key, "Test CA", 30);
    auto signing = crypto::PrivateKey::Generate();
    crypto::CertSpec spec;
    spec.common_name = "outpost-signer";
    spec.usage = crypto::CertUsage::kSigning;
    signer_cert = *crypto::IssueCertificate(*signing->PublicKeyPem(), spec, *ca_key, ca_pem);
    signer_key = *signing->ToPem();
  }
  std::optional<crypto::PrivateKey> ca_key;
  std::string ca_pem;
  std::string signer_cert;
  std::string signer_key;
};

TEST(DesiredSigner, SignsTheExactDocumentBytes) {
  Pki pki;
  auto signer = DesiredSigner::Load(pki.signer_key, pki.signer_cert);
  ASSERT_TRUE(signer.ok()) << signer.error().ToString();
  outpost::v1::DesiredState doc;
  doc.set_device_id("cam-1");
  doc.set_generation(3);
  std::string bytes = doc.SerializeAsString();
  auto signed_bytes = (*signer)->Sign(bytes);
  ASSERT_TRUE(signed_bytes.ok());
  outpost::v1::SignedDesiredState s;
  ASSERT_TRUE(s.ParseFromString(*signed_bytes));
  EXPECT_EQ(s.document(), bytes);
  EXPECT_TRUE(
      crypto::VerifyChain(s.signer_certificate(), pki.ca_pem,
                          {.expected_cn = "outpost-signer", .usage = crypto::CertUsage::kSigning})
          .ok());
  EXPECT_TRUE(crypto::VerifySignature(s.signer_certificate(), s.document(), s.signature()).ok());
  EXPECT_FALSE(
      crypto::VerifySignature(s.signer_certificate(), s.document() + "x", s.signature()).ok());
}

TEST(DesiredSigner, RefusesAKeyThatDoesNotMatchTheCertificate) {
  Pki pki;
  auto other = crypto::PrivateKey::Generate();
  EXPECT_FALSE(DesiredSigner::Load(*other->ToPem(), pki.signer_cert).ok());
}

class PublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = registry::Registry::Open(tmp_ / "hub.db");
    ASSERT_TRUE(reg.ok());
    registry_ = std::move(*reg);
    signer_ = std::move(*DesiredSigner::Load(pki_.signer_key, pki_.signer_cert));
    DesiredPublisher::Options options;
    options.max_in_flight = 2;
    publisher_ = std::make_unique<DesiredPublisher>(
        &client_, signer_.get(),
        [this](std::function<void(registry::Registry&)> t) {
          std::lock_guard lock(mu_);
          tasks_.push_back(std::move(t));
        },
        options);
  }
  void TearDown() override { publisher_->Stop(); }

  void RunTasks() {
    for (;;) {
      std::function<void(registry::Registry&)> t;
      {
        std::lock_guard lock(mu_);
        if (tasks_.empty()) return;
        t = std::move(tasks_.front());
        tasks_.pop_front();
      }
      t(*registry_);
    }
  }

  std::string Enroll(const std::string& name) {
    auto token = registry_->CreateToken(std::chrono::hours(1), 1, {{"role", "cam"}}, 1000);
    registry::EnrollRequest req;
    req.token = token->token;
    req.requested_name = name;
    auto e = registry_->EnrollDevice(req, 1000);
    EXPECT_TRUE(e.ok());
    return e->device_id;
  }

  TempDir tmp_;
  Pki pki_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<DesiredSigner> signer_;
  FakeMqttClient client_;
  std::mutex mu_;
  std::deque<std::function<void(registry::Registry&)>> tasks_;
  std::unique_ptr<DesiredPublisher> publisher_;
};

TEST_F(PublisherTest, WaitsForTheLinkThenPublishesSignedRetainedDocuments) {
  std::string id = Enroll("cam-1");
  auto unpublished = registry_->UnpublishedDesired();
  ASSERT_TRUE(unpublished.ok());
  ASSERT_EQ(unpublished->size(), 1u);
  publisher_->Start();
  publisher_->Republish(*unpublished);
  // Not connected: nothing goes out.
  EXPECT_FALSE(WaitFor([&] { return client_.Count() > 0; }, std::chrono::milliseconds(200)));
  publisher_->SetConnected(true);
  ASSERT_TRUE(WaitFor([&] { return client_.Count() == 1; }));
  auto sent = client_.Take();
  EXPECT_EQ(sent[0].topic, mqtt::topics::Desired(id));
  EXPECT_TRUE(sent[0].retained);
  EXPECT_EQ(sent[0].qos, 1);
  outpost::v1::SignedDesiredState s;
  ASSERT_TRUE(s.ParseFromString(sent[0].payload));
  EXPECT_TRUE(crypto::VerifySignature(s.signer_certificate(), s.document(), s.signature()).ok());
  outpost::v1::DesiredState doc;
  ASSERT_TRUE(doc.ParseFromString(s.document()));
  EXPECT_EQ(doc.device_id(), id);
  EXPECT_EQ(doc.generation(), 1u);

  // The broker acknowledges: MarkPublished runs on the state thread.
  sent[0].done(OkStatus());
  ASSERT_TRUE(WaitFor([&] { return publisher_->Idle(); }));
  RunTasks();
  EXPECT_TRUE(registry_->UnpublishedDesired()->empty());
  auto record = registry_->GetDesired(id);
  EXPECT_EQ(record->published_generation, 1u);
  EXPECT_EQ(record->signed_generation, 1u);  // StoreSigned ran too
}

TEST_F(PublisherTest, CoalescesPerDeviceAndBoundsInFlight) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(Enroll("cam-" + std::to_string(i)));
  // Two generations of one device queued before the link is up: only the
  // newest goes out.
  auto doc_for = [](const std::string& id, std::uint64_t gen) {
    registry::DesiredChange c;
    c.device_id = id;
    c.generation = gen;
    c.document.set_device_id(id);
    c.document.set_generation(gen);
    c.document_bytes = c.document.SerializeAsString();
    return c;
  };
  publisher_->Publish({doc_for(ids[0], 5), doc_for(ids[1], 1), doc_for(ids[2], 1)});
  publisher_->Publish({doc_for(ids[0], 6), doc_for(ids[0], 4)});
  publisher_->Start();
  publisher_->SetConnected(true);
  // max_in_flight is 2: two go out, the third waits for an ack.
  ASSERT_TRUE(WaitFor([&] { return client_.Count() == 2; }));
  EXPECT_FALSE(WaitFor([&] { return client_.Count() > 2; }, std::chrono::milliseconds(200)));
  auto first = client_.Take();
  EXPECT_EQ(first[0].topic, mqtt::topics::Desired(ids[0]));
  outpost::v1::SignedDesiredState s;
  outpost::v1::DesiredState doc;
  ASSERT_TRUE(s.ParseFromString(first[0].payload));
  ASSERT_TRUE(doc.ParseFromString(s.document()));
  EXPECT_EQ(doc.generation(), 6u);
  first[0].done(OkStatus());
  ASSERT_TRUE(WaitFor([&] { return client_.Count() == 1; }));
  auto second = client_.Take();
  EXPECT_EQ(second[0].topic, mqtt::topics::Desired(ids[2]));
  first[1].done(Error(Errc::kUnavailable, "lost"));
  second[0].done(OkStatus());
  ASSERT_TRUE(WaitFor([&] { return publisher_->Idle(); }));
  auto stats = publisher_->StatsJson();
  EXPECT_EQ(stats["acked"], 2);
  EXPECT_EQ(stats["failed"], 1);
}

TEST_F(PublisherTest, ClearRemovesRetainedDesiredAndPresence) {
  publisher_->Start();
  publisher_->SetConnected(true);
  publisher_->Clear("cam-9");
  ASSERT_TRUE(WaitFor([&] { return client_.Count() == 2; }));
  auto sent = client_.Take();
  EXPECT_EQ(sent[0].topic, mqtt::topics::Desired("cam-9"));
  EXPECT_EQ(sent[1].topic, mqtt::topics::Presence("cam-9"));
  for (const auto& p : sent) {
    EXPECT_TRUE(p.payload.empty());
    EXPECT_TRUE(p.retained);
  }
}

TEST_F(PublisherTest, RetriesWhenTheClientRefuses) {
  std::string id = Enroll("cam-1");
  client_.fail_publish = true;
  publisher_->Start();
  publisher_->SetConnected(true);
  publisher_->Republish(*registry_->UnpublishedDesired());
  ASSERT_TRUE(WaitFor([&] { return publisher_->StatsJson()["failed"].get<int>() >= 1; }));
  {
    std::lock_guard lock(client_.mu);
    client_.fail_publish = false;
  }
  ASSERT_TRUE(WaitFor([&] { return client_.Count() == 1; }));
  EXPECT_EQ(client_.Take()[0].topic, mqtt::topics::Desired(id));
}

// ---------------------------------------------------------------------------
// CRL

TEST(Crl, WritesACrlNamingTheRevokedSerials) {
  TempDir tmp;
  Pki pki;
  std::string ca_key_pem = *pki.ca_key->ToPem();
  FileCrlPublisher crl(ca_key_pem, pki.ca_pem, tmp / "crl.pem", tmp / "mosquitto.pid");
  auto outcome = crl.Update({"1a2b3c", "ff01"});
  ASSERT_TRUE(outcome.ok()) << outcome.error().ToString();
  EXPECT_TRUE(outcome->written);
  EXPECT_FALSE(outcome->broker_signalled);  // no pid file
  EXPECT_FALSE(outcome->note.empty());
  ASSERT_TRUE(fs::WriteFileAtomic(tmp / "ca.crt", pki.ca_pem).ok());
  std::string out;
  ASSERT_EQ(outpost::testing::RunCommand({"openssl", "crl", "-in", tmp / "crl.pem", "-noout",
                                          "-text", "-CAfile", tmp / "ca.crt"},
                                         &out),
            0)
      << out;
  EXPECT_NE(out.find("1A2B3C"), std::string::npos) << out;
  EXPECT_NE(out.find("FF01"), std::string::npos) << out;
  EXPECT_NE(out.find("verify OK"), std::string::npos) << out;
}

TEST(Crl, SignalsOnlyAMosquittoProcess) {
  TempDir tmp;
  EXPECT_EQ(SignalBroker(tmp / "none.pid").error().code(), Errc::kNotFound);
  // Our own pid is not mosquitto: never signalled.
  ASSERT_TRUE(fs::WriteFileAtomic(tmp / "m.pid", std::to_string(::getpid()) + "\n").ok());
  EXPECT_EQ(SignalBroker(tmp / "m.pid").error().code(), Errc::kFailedPrecondition);
  ASSERT_TRUE(fs::WriteFileAtomic(tmp / "bad.pid", "garbage").ok());
  EXPECT_EQ(SignalBroker(tmp / "bad.pid").error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace outpost::hub::broker
