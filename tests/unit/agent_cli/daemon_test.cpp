// The daemon in-process with a fake MQTT client and the fake hub: what it
// publishes on connect, how it handles desired documents and acks, the
// status socket, renewal with reconnect, and the clean stop on SIGTERM.
#include "agent/daemon/daemon.hpp"

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <mutex>
#include <thread>

#include "agent/daemon/status_server.hpp"
#include "agent/state/agent_store.hpp"
#include "shared/core/fs.hpp"
#include "shared/mqtt/mqtt_client.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent_cli/fake_hub.hpp"

namespace outpost::agent::daemon {
namespace {

using outpost::testing::WaitFor;

const testpki::Pki& SharedPki() {
  static const testpki::Pki* pki = new testpki::Pki();
  return *pki;
}

// What the fake clients saw, shared by every client the daemon makes.
struct Broker {
  std::mutex mu;
  std::vector<mqtt::Message> published;  // guarded by mu
  std::vector<mqtt::ClientOptions> clients;
  std::vector<std::string> subscriptions;
  mqtt::Client::MessageHandler on_message;
  mqtt::Client::ConnectionHandler on_connection;
  std::atomic<int> started{0};
  std::atomic<int> stopped{0};

  std::vector<mqtt::Message> Published() {
    std::lock_guard lock(mu);
    return published;
  }
  std::vector<mqtt::Message> On(const std::string& topic) {
    std::vector<mqtt::Message> out;
    for (auto& m : Published())
      if (m.topic == topic) out.push_back(m);
    return out;
  }
  void Connect(bool session_present = false) {
    mqtt::Client::ConnectionHandler h;
    {
      std::lock_guard lock(mu);
      h = on_connection;
    }
    h({true, session_present, ""});
  }
  void Deliver(const std::string& topic, const std::string& payload) {
    mqtt::Client::MessageHandler h;
    {
      std::lock_guard lock(mu);
      h = on_message;
    }
    h({topic, payload, false, 1});
  }
};

class FakeClient : public mqtt::Client {
 public:
  explicit FakeClient(Broker& b) : b_(b) {}
  void SetMessageHandler(MessageHandler h) override {
    std::lock_guard lock(b_.mu);
    b_.on_message = std::move(h);
  }
  void SetConnectionHandler(ConnectionHandler h) override {
    std::lock_guard lock(b_.mu);
    b_.on_connection = std::move(h);
  }
  void AddSubscription(const std::string& filter, int) override {
    std::lock_guard lock(b_.mu);
    b_.subscriptions.push_back(filter);
  }
  Status Start() override {
    ++b_.started;
    return OkStatus();
  }
  void Stop() override { ++b_.stopped; }
  bool IsConnected() const override { return true; }
  Status Publish(const std::string& topic, std::string payload, int qos, bool retained,
                 PublishDone done) override {
    {
      std::lock_guard lock(b_.mu);
      b_.published.push_back({topic, std::move(payload), retained, qos});
    }
    if (done) done(OkStatus());
    return OkStatus();
  }

 private:
  Broker& b_;
};

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    enroll::JoinOptions o;
    o.state_dir = state_;
    o.hub_url = "https://hub.example:8443";
    o.token = "abc123.0123456789abcdef";
    o.ca_hash = *crypto::SpkiSha256(SharedPki().ca_pem);
    o.name = "edge-d";
    o.roots.nvidia_smi = "-";
    o.roots.dev_root = dir_ / "dev";
    o.roots.proc_root = dir_ / "proc";
    o.roots.etc_root = dir_ / "etc";
    ASSERT_TRUE(enroll::Join(o, hub_.Send()).ok());
  }

  void Start(config::AgentConfig cfg = {}) {
    cfg.nvidia_smi = "-";
    cfg.dev_root = dir_ / "dev";
    cfg.proc_root = dir_ / "proc";
    cfg.etc_root = dir_ / "etc";
    DaemonOptions options;
    options.state_dir = state_;
    options.config = cfg;
    options.make_client = [this](mqtt::ClientOptions mo) -> Result<mqtt::ClientPtr> {
      {
        std::lock_guard lock(broker_.mu);
        broker_.clients.push_back(mo);
      }
      return mqtt::ClientPtr(std::make_unique<FakeClient>(broker_));
    };
    options.http_send = hub_.Send();
    thread_ = std::thread([this, options = std::move(options)]() mutable {
      exit_code_ = daemon::Run(std::move(options));
      done_ = true;
    });
    ASSERT_TRUE(WaitFor([&] { return broker_.started.load() >= 1; })) << "the daemon did not start";
    ASSERT_TRUE(WaitFor([&] { return AgentListening(state_ + "/agent.sock"); }));
  }

  void Stop() {
    if (!thread_.joinable()) return;
    ::kill(::getpid(), SIGTERM);  // the daemon's signal_set takes it
    ASSERT_TRUE(WaitFor([&] { return done_.load(); }));
    thread_.join();
  }

  void TearDown() override { Stop(); }

  nlohmann::json Status() {
    auto s = QueryStatus(state_ + "/agent.sock");
    if (!s.ok()) return nlohmann::json();
    return nlohmann::json::parse(*s, nullptr, false);
  }

  outpost::testing::TempDir dir_{"agent-daemon"};
  std::string state_ = dir_ / "state";
  testhub::FakeHub hub_{SharedPki()};
  Broker broker_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  std::atomic<int> exit_code_{-1};
  const std::string id_ = "edge-d";
};

TEST_F(DaemonTest, ConnectsAsTheDeviceWithAWillAndAPersistentSession) {
  Start();
  std::lock_guard lock(broker_.mu);
  ASSERT_EQ(broker_.clients.size(), 1u);
  const auto& mo = broker_.clients[0];
  EXPECT_EQ(mo.client_id, id_);
  EXPECT_EQ(mo.server_uri, "ssl://127.0.0.1:8883");
  EXPECT_FALSE(mo.clean_session);
  EXPECT_EQ(mo.cert_file, state_ + "/device.crt");
  EXPECT_EQ(mo.key_file, state_ + "/device.key");
  EXPECT_EQ(mo.ca_file, state_ + "/ca.crt");
  ASSERT_TRUE(mo.will.has_value());
  EXPECT_EQ(mo.will->topic, mqtt::topics::Presence(id_));
  EXPECT_TRUE(mo.will->retained);
  outpost::v1::Presence will;
  ASSERT_TRUE(will.ParseFromString(mo.will->payload));
  EXPECT_FALSE(will.online());
  EXPECT_EQ(broker_.subscriptions,
            (std::vector<std::string>{mqtt::topics::Desired(id_), mqtt::topics::Ack(id_)}));
}

TEST_F(DaemonTest, ResyncsOnConnectAppliesDocumentsAndDeletesAckedEvents) {
  Start();
  EXPECT_EQ(Status().value("connection", ""), "disconnected");
  broker_.Connect();
  ASSERT_TRUE(WaitFor([&] { return !broker_.On(mqtt::topics::Events(id_)).empty(); }));
  auto all = broker_.Published();
  ASSERT_GE(all.size(), 3u);
  EXPECT_EQ(all[0].topic, mqtt::topics::Presence(id_));
  EXPECT_TRUE(all[0].retained);
  EXPECT_EQ(all[1].topic, mqtt::topics::Reported(id_));
  outpost::v1::ReportedState first;
  ASSERT_TRUE(first.ParseFromString(all[1].payload));
  EXPECT_EQ(first.desired_generation(), 0u);
  EXPECT_EQ(Status().value("connection", ""), "connected");

  // A signed document: stored, applied, reported.
  broker_.Deliver(mqtt::topics::Desired(id_), SharedPki().Sign(testpki::Doc(id_, 5, {})));
  ASSERT_TRUE(WaitFor([&] {
    auto s = Status();
    return s.value("desiredGeneration", 0) == 5 && s.value("appliedGeneration", 0) == 5;
  }));
  ASSERT_TRUE(WaitFor([&] {
    auto reports = broker_.On(mqtt::topics::Reported(id_));
    outpost::v1::ReportedState r;
    return !reports.empty() && r.ParseFromString(reports.back().payload) &&
           r.observed_generation() == 5;
  }));
  // The hub acks everything: the outbox empties.
  ASSERT_TRUE(WaitFor([&] { return Status().value("outboxDepth", 0) > 0; }));
  outpost::v1::Ack ack;
  ack.set_acked_seq(1000);
  broker_.Deliver(mqtt::topics::Ack(id_), ack.SerializeAsString());
  ASSERT_TRUE(WaitFor([&] { return Status().value("outboxDepth", -1) == 0; }));
}

TEST_F(DaemonTest, CleanStopPublishesPresenceOfflineAndRecordsIt) {
  Start();
  broker_.Connect();
  ASSERT_TRUE(WaitFor([&] { return !broker_.On(mqtt::topics::Reported(id_)).empty(); }));
  Stop();
  EXPECT_EQ(exit_code_.load(), 0);
  auto presence = broker_.On(mqtt::topics::Presence(id_));
  ASSERT_GE(presence.size(), 2u);
  outpost::v1::Presence last;
  ASSERT_TRUE(last.ParseFromString(presence.back().payload));
  EXPECT_FALSE(last.online());
  EXPECT_TRUE(presence.back().retained);
  EXPECT_GE(broker_.stopped.load(), 1);
  EXPECT_FALSE(AgentListening(state_ + "/agent.sock"));
  state::OpenOptions ro;
  ro.read_only = true;
  auto db = state::AgentStore::Open(state_ + "/agent.db", ro);
  ASSERT_TRUE(db.ok());
  auto snap = (*db)->ReadSnapshot();
  ASSERT_TRUE(snap.ok());
  EXPECT_FALSE(snap->connection.connected);
  EXPECT_EQ(snap->connection.detail, "agent stopped");
  EXPECT_EQ(snap->daemon_pid, 0);
}

TEST_F(DaemonTest, RenewsTheCertificateAndReconnectsWithIt) {
  const std::string old_cert = *fs::ReadFile(state_ + "/device.crt");
  config::AgentConfig cfg;
  cfg.renew_fraction_denominator = 1;  // renew at once
  Start(cfg);
  ASSERT_TRUE(WaitFor([&] { return hub_.renew_calls > 0; }));
  // A new client with the new files.
  ASSERT_TRUE(WaitFor([&] { return broker_.started.load() >= 2; }));
  EXPECT_GE(broker_.stopped.load(), 1);
  EXPECT_NE(*fs::ReadFile(state_ + "/device.crt"), old_cert);
  auto cert = crypto::ParseCertificate(*fs::ReadFile(state_ + "/device.crt"));
  auto key = crypto::PrivateKey::FromPem(*fs::ReadFile(state_ + "/device.key"));
  ASSERT_TRUE(cert.ok() && key.ok());
  EXPECT_EQ(cert->public_key_pem, *key->PublicKeyPem());
  EXPECT_EQ(cert->common_name, id_);
}

TEST_F(DaemonTest, RefusesASecondDaemonOnTheSameStateDir) {
  Start();
  DaemonOptions second;
  second.state_dir = state_;
  second.make_client = [](mqtt::ClientOptions) -> Result<mqtt::ClientPtr> {
    return Error(Errc::kInternal, "must not be called");
  };
  EXPECT_EQ(daemon::Run(std::move(second)), 1);
  EXPECT_TRUE(AgentListening(state_ + "/agent.sock"));  // the first is untouched
}

TEST(DaemonNotEnrolled, RefusesToStart) {
  outpost::testing::TempDir dir;
  DaemonOptions options;
  options.state_dir = dir.path();
  EXPECT_EQ(daemon::Run(std::move(options)), 1);
  EXPECT_FALSE(fs::Exists(dir / "agent.db"));  // nothing created
}

}  // namespace
}  // namespace outpost::agent::daemon
