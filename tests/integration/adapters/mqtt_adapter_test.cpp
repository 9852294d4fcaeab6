// The Paho adapter against a real TLS mosquitto.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <thread>
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

// A TCP proxy on 127.0.0.1 that spoils its first `stall` connections and
// forwards later ones to `target_port`. kStall holds them open without
// answering a byte (a broker busy with a reconnect storm); kClose closes them
// at once (a broker going down).
class StallingProxy {
 public:
  enum Mode { kStall, kClose };
  StallingProxy(int target_port, int stall, Mode mode)
      : target_port_(target_port), stall_(stall), mode_(mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "proxy: cannot listen";
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~StallingProxy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int fd : fds_)
      ::close(fd);
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }
  // Stalled connections the client has closed.
  int stalled_closed() const { return stalled_closed_.load(); }

 private:
  struct Pair {
    int a = -1, b = -1;  // b < 0: stalled
  };
  void Loop() {
    std::vector<Pair> pairs;
    while (!stop_) {
      std::vector<pollfd> pfds{{listen_fd_, POLLIN, 0}};
      for (auto& p : pairs) {
        pfds.push_back({p.a, POLLIN, 0});
        pfds.push_back({p.b, POLLIN, 0});  // fd -1 is ignored by poll
      }
      if (::poll(pfds.data(), pfds.size(), 50) <= 0) continue;
      const std::size_t polled = pairs.size();  // an accept below adds one
      if (pfds[0].revents & POLLIN) {
        int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          fds_.push_back(c);
          Pair p{c, -1};
          if (mode_ == kClose && accepted_.load() < stall_) {
            accepted_.fetch_add(1);
            ::shutdown(c, SHUT_RDWR);  // closed at once, as by a broker going down
            continue;
          }
          if (accepted_.fetch_add(1) >= stall_) {
            p.b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in t{};
            t.sin_family = AF_INET;
            t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            t.sin_port = htons(static_cast<std::uint16_t>(target_port_));
            if (::connect(p.b, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
              ::close(p.b);
              p.b = -1;
            } else {
              fds_.push_back(p.b);
            }
          }
          pairs.push_back(p);
        }
      }
      for (std::size_t i = 0; i < polled; ++i) {
        Pair& p = pairs[i];
        const short ra = pfds[1 + 2 * i].revents, rb = pfds[2 + 2 * i].revents;
        if (p.a < 0) continue;
        if (p.b < 0) {
          // Stalled: answer nothing (what arrives is dropped); notice when
          // the client gives up.
          if (ra & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t n = ::recv(p.a, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
              stalled_closed_.fetch_add(1);
              p.a = -1;
            }
          }
          continue;
        }
        if ((ra & (POLLIN | POLLHUP | POLLERR) && !Pump(p.a, p.b)) ||
            (rb & (POLLIN | POLLHUP | POLLERR) && !Pump(p.b, p.a))) {
          ::shutdown(p.a, SHUT_RDWR);
          ::shutdown(p.b, SHUT_RDWR);
          p.a = p.b = -1;
        }
      }
    }
  }
  static bool Pump(int from, int to) {
    char buf[16384];
    ssize_t n = ::recv(from, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return false;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += w;
    }
    return true;
  }

  int target_port_, stall_;
  Mode mode_;
  int listen_fd_ = -1, port_ = 0;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0}, stalled_closed_{0};
  std::thread thread_;
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

  // dev-a through `proxy` (its first connection spoiled), subscribed to its
  // ack topic; returns once connected after at least one failed attempt.
  void ConnectViaProxy(const StallingProxy& proxy, ClientOptions o, ClientPtr* out, Recorder* r) {
    o.server_uri = "ssl://localhost:" + std::to_string(proxy.port());
    auto c = NewPahoClient(o);
    ASSERT_TRUE(c.ok());
    *out = std::move(*c);
    r->Attach(**out);
    (*out)->AddSubscription(topics::Ack("dev-a"), 1);
    ASSERT_TRUE((*out)->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return (*out)->IsConnected(); }, std::chrono::seconds(20)))
        << broker_->log();
    EXPECT_GE(r->losses.load(), 1);
  }
  // What the client publishes to itself comes back; then it stops.
  static void ExpectNotWedged(Client& c, Recorder& r) {
    ASSERT_TRUE(c.Publish(topics::Ack("dev-a"), "7", 1, false).ok());
    EXPECT_TRUE(WaitFor([&] { return r.Has(topics::Ack("dev-a"), "7"); }));
    c.Stop();
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

// After a failed attempt the next one still speaks MQTT 3.1.1. Paho's
// default falls back to MQTT 3.1 after a failed attempt; in the reconnect
// storm benchmark such a fallback attempt outlived the adapter's wait, left
// Paho connected behind the adapter's back, and the hub never reconnected
// (docs/benchmarks.md).
TEST_F(MqttAdapterTest, AfterAFailedAttemptTheNextOneIsMqtt311) {
  StallingProxy proxy(broker_->port(), /*stall=*/1, StallingProxy::kClose);
  Recorder ra;
  ClientPtr a;
  ASSERT_NO_FATAL_FAILURE(ConnectViaProxy(proxy, Options("dev-a"), &a, &ra));
  const std::string log = broker_->log();
  EXPECT_NE(log.find("(p2, c0, k30, u'dev-a')"), std::string::npos) << log;
  EXPECT_EQ(log.find("(p1,"), std::string::npos) << "fell back to MQTT 3.1:\n" << log;
  ExpectNotWedged(*a, ra);
}

// A connect attempt that times out (the broker accepted the TCP connection
// and says nothing) is abandoned: the client closes that connection and its
// next attempt connects.
TEST_F(MqttAdapterTest, TimedOutConnectIsAbandonedAndTheNextOneConnects) {
  StallingProxy proxy(broker_->port(), /*stall=*/1, StallingProxy::kStall);
  ClientOptions o = Options("dev-a");
  o.connect_timeout = std::chrono::milliseconds(1000);
  Recorder ra;
  ClientPtr a;
  ASSERT_NO_FATAL_FAILURE(ConnectViaProxy(proxy, o, &a, &ra));
  EXPECT_TRUE(WaitFor([&] { return proxy.stalled_closed() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(proxy.accepted(), 2);  // one stalled attempt, one that connected
  ExpectNotWedged(*a, ra);
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
