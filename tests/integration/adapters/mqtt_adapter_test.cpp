// The Paho adapter against a real TLS mosquitto.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "shared/mqtt/mqtt_client.hpp"
#include "tests/integration/adapters/pki_fixture.hpp"

namespace outpost::mqtt {
namespace {

using testing::TempDir;
using testing::WaitFor;

// Collects what a client sees, thread-safely (handlers run on Paho's threads).
struct Recorder {
  std::mutex mu;
  std::vector<Message> messages;
  std::vector<Client::ConnectionEvent> events;
  std::atomic<int> connects{0};
  std::atomic<int> losses{0};

  void Attach(Client& c) {
    c.SetMessageHandler([this](const Message& m) {
      std::lock_guard lock(mu);
      messages.push_back(m);
    });
    c.SetConnectionHandler([this](const Client::ConnectionEvent& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
      (e.connected ? connects : losses)++;
    });
  }
  bool Has(const std::string& topic, const std::string& payload) {
    std::lock_guard lock(mu);
    for (const auto& m : messages)
      if (m.topic == topic && m.payload == payload) return true;
    return false;
  }
};

class MqttAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki_ = testing::MakeTestPki(dir_.path());
    pki_.MakeClient("dev-a");
    pki_.MakeClient("dev-b");
    broker_ = std::make_unique<testing::TestBroker>(pki_, dir_.path());
    broker_->Start();
  }

  ClientOptions Options(const std::string& cn) {
    ClientOptions o;
    o.server_uri = broker_->uri();
    o.client_id = cn;
    o.ca_file = pki_.ca_crt;
    o.cert_file = pki_.Crt(cn);
    o.key_file = pki_.Key(cn);
    o.min_retry = std::chrono::milliseconds(50);
    o.max_retry = std::chrono::milliseconds(500);
    o.connect_timeout = std::chrono::milliseconds(3000);
    return o;
  }

  TempDir dir_;
  testing::TestPki pki_;
  std::unique_ptr<testing::TestBroker> broker_;
};

TEST_F(MqttAdapterTest, PublishesAndReceivesOverMutualTls) {
  auto a = NewPahoClient(Options("dev-a"));
  auto b = NewPahoClient(Options("dev-b"));
  ASSERT_TRUE(a.ok() && b.ok());
  Recorder ra, rb;
  ra.Attach(**a);
  rb.Attach(**b);
  (*b)->AddSubscription(topics::Desired("dev-b"), 1);
  ASSERT_TRUE((*a)->Start().ok());
  ASSERT_TRUE((*b)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*a)->IsConnected() && (*b)->IsConnected(); }));

  std::atomic<bool> acked{false};
  ASSERT_TRUE((*a)->Publish(topics::Desired("dev-b"), "hello", 1, false,
                            [&](const Status& st) { acked = st.ok(); })
                  .ok());
  EXPECT_TRUE(WaitFor([&] { return acked.load(); }));
  EXPECT_TRUE(WaitFor([&] { return rb.Has(topics::Desired("dev-b"), "hello"); }));
  (*a)->Stop();
  (*b)->Stop();
}

TEST_F(MqttAdapterTest, RetainedMessageArrivesOnSubscribe) {
  auto a = NewPahoClient(Options("dev-a"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*a)->IsConnected(); }));
  std::atomic<bool> acked{false};
  ASSERT_TRUE((*a)->Publish(topics::Desired("dev-b"), "gen-7", 1, true,
                            [&](const Status& st) { acked = st.ok(); })
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return acked.load(); }));

  auto b = NewPahoClient(Options("dev-b"));
  ASSERT_TRUE(b.ok());
  Recorder rb;
  rb.Attach(**b);
  (*b)->AddSubscription(topics::Desired("dev-b"), 1);
  ASSERT_TRUE((*b)->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return rb.Has(topics::Desired("dev-b"), "gen-7"); }));
  std::lock_guard lock(rb.mu);
  ASSERT_FALSE(rb.messages.empty());
  EXPECT_TRUE(rb.messages.front().retained);
}

TEST_F(MqttAdapterTest, LastWillIsPublishedWhenTheClientVanishes) {
  auto watcher = NewPahoClient(Options("dev-b"));
  ASSERT_TRUE(watcher.ok());
  Recorder rw;
  rw.Attach(**watcher);
  (*watcher)->AddSubscription(topics::Presence("dev-a"), 1);
  ASSERT_TRUE((*watcher)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*watcher)->IsConnected(); }));

  // The client that dies: a mosquitto_sub with the same identity and a will,
  // killed with SIGKILL so the broker publishes the will.
  testing::Process sub({"mosquitto_sub",
                        "-h",
                        "localhost",
                        "-p",
                        std::to_string(broker_->port()),
                        "--cafile",
                        pki_.ca_crt,
                        "--cert",
                        pki_.Crt("dev-a"),
                        "--key",
                        pki_.Key("dev-a"),
                        "-t",
                        "x",
                        "-k",
                        "5",
                        "--will-topic",
                        topics::Presence("dev-a"),
                        "--will-payload",
                        "offline",
                        "--will-qos",
                        "1"},
                       dir_ / "sub.log");
  ASSERT_TRUE(WaitFor([&] { return broker_->log().find("u'dev-a'") != std::string::npos; }));
  sub.Kill();
  EXPECT_TRUE(WaitFor([&] { return rw.Has(topics::Presence("dev-a"), "offline"); },
                      std::chrono::seconds(20)));
}

TEST_F(MqttAdapterTest, ReconnectsAfterBrokerRestartAndResubscribes) {
  auto b = NewPahoClient(Options("dev-b"));
  ASSERT_TRUE(b.ok());
  Recorder rb;
  rb.Attach(**b);
  (*b)->AddSubscription(topics::Ack("dev-b"), 1);
  ASSERT_TRUE((*b)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return rb.connects.load() == 1; }));

  int port = broker_->port();
  broker_->Kill();
  ASSERT_TRUE(WaitFor([&] { return rb.losses.load() >= 1; }));
  EXPECT_FALSE((*b)->IsConnected());
  auto st = (*b)->Publish(topics::Events("dev-b"), "x", 1, false);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kUnavailable);

  broker_ = std::make_unique<testing::TestBroker>(pki_, dir_.path(), port);
  broker_->Start();
  ASSERT_TRUE(WaitFor([&] { return rb.connects.load() >= 2; }, std::chrono::seconds(20)));
  {
    std::lock_guard lock(rb.mu);
    // A broker without persistence lost our session.
    EXPECT_FALSE(rb.events.back().session_present);
  }
  // The subscription was re-established.
  auto a = NewPahoClient(Options("dev-a"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*a)->IsConnected(); }));
  ASSERT_TRUE((*a)->Publish(topics::Ack("dev-b"), "42", 1, false).ok());
  EXPECT_TRUE(WaitFor([&] { return rb.Has(topics::Ack("dev-b"), "42"); }));
}

TEST_F(MqttAdapterTest, ClientWithoutTrustedCertificateNeverConnects) {
  // A certificate from another CA.
  TempDir other;
  auto other_pki = testing::MakeTestPki(other.path());
  other_pki.MakeClient("dev-a");
  ClientOptions o = Options("dev-a");
  o.cert_file = other_pki.Crt("dev-a");
  o.key_file = other_pki.Key("dev-a");
  auto c = NewPahoClient(o);
  ASSERT_TRUE(c.ok());
  Recorder r;
  r.Attach(**c);
  ASSERT_TRUE((*c)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return r.losses.load() >= 2; }));  // failed twice, still trying
  EXPECT_EQ(r.connects.load(), 0);
  EXPECT_FALSE((*c)->IsConnected());
  (*c)->Stop();
}

TEST(Topics, BuildAndParse) {
  EXPECT_EQ(topics::Desired("store-1"), "outpost/v1/devices/store-1/desired");
  std::string id, leaf;
  ASSERT_TRUE(topics::Parse("outpost/v1/devices/store-1/events", &id, &leaf));
  EXPECT_EQ(id, "store-1");
  EXPECT_EQ(leaf, "events");
  EXPECT_FALSE(topics::Parse("outpost/v1/devices/store-1/events/x", &id, &leaf));
  EXPECT_FALSE(topics::Parse("outpost/v1/devices/Store_1/events", &id, &leaf));
  EXPECT_FALSE(topics::Parse("other/v1/devices/a/events", &id, &leaf));
  EXPECT_FALSE(topics::Parse("outpost/v1/devices//events", &id, &leaf));
  EXPECT_TRUE(topics::ValidDeviceId("a"));
  EXPECT_FALSE(topics::ValidDeviceId("-a"));
  EXPECT_FALSE(topics::ValidDeviceId("a+"));
  EXPECT_FALSE(topics::ValidDeviceId(std::string(64, 'a')));
}

}  // namespace
}  // namespace outpost::mqtt
