// The HTTPS transport on loopback with the shared HTTP client: body limits
// (413), client certificates passed through, a slow handler never blocking
// other requests, handler and handshake deadlines, the connection cap.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "hub/server/https_server.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/http/http_client.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::hub::server {
namespace {

using nlohmann::json;
using outpost::testing::WaitFor;

struct Certs {
  Certs() {
    auto ca = crypto::PrivateKey::Generate();
    ca_pem = *crypto::CreateSelfSignedCa(*ca, "Test CA", 30);
    auto server = crypto::PrivateKey::Generate();
    crypto::CertSpec spec;
    spec.common_name = "localhost";
    spec.dns_sans = {"localhost"};
    spec.ip_sans = {"127.0.0.1"};
    spec.usage = crypto::CertUsage::kServer;
    server_cert = *crypto::IssueCertificate(*server->PublicKeyPem(), spec, *ca, ca_pem);
    server_key = *server->ToPem();
    auto client = crypto::PrivateKey::Generate();
    crypto::CertSpec cspec;
    cspec.common_name = "cam-1";
    client_cert = *crypto::IssueCertificate(*client->PublicKeyPem(), cspec, *ca, ca_pem);
    client_key = *client->ToPem();
  }
  std::string ca_pem, server_cert, server_key, client_cert, client_key;
};

// Echoes what it got; /slow waits until released; /never never answers.
class TestHandler : public RequestHandler {
 public:
  void Handle(HttpRequest request, Respond respond) override {
    if (request.path == "/slow") {
      std::lock_guard lock(mu_);
      slow_.push_back(std::move(respond));
      cv_.notify_all();
      return;
    }
    if (request.path == "/never") {
      std::lock_guard lock(mu_);
      never_.push_back(std::move(respond));
      return;
    }
    json body = {{"method", request.method},      {"path", request.path},
                 {"bytes", request.body.size()},  {"contentType", request.content_type},
                 {"auth", request.authorization}, {"peerCert", request.peer_cert_pem}};
    respond(JsonResponse(200, body));
  }
  bool WaitSlow() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return !slow_.empty(); });
  }
  void ReleaseSlow() {
    std::vector<Respond> pending;
    {
      std::lock_guard lock(mu_);
      pending.swap(slow_);
    }
    // From another thread, as the state thread would.
    std::thread([pending] {
      for (const auto& r : pending)
        r(JsonResponse(200, {{"slow", true}}));
    }).join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Respond> slow_;
  std::vector<Respond> never_;
};

class HttpsTest : public ::testing::Test {
 protected:
  void Start(HttpsServerOptions options = {}) {
    options.listen_address = "127.0.0.1";
    options.port = 0;
    options.cert_pem = certs_.server_cert;
    options.key_pem = certs_.server_key;
    auto server = HttpsServer::Start(options, &handler_);
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    server_ = std::move(*server);
    base_ = "https://localhost:" + std::to_string(server_->port());
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  Result<http::Response> Send(const std::string& method, const std::string& target,
                              const std::string& body = "", bool client_cert = false) {
    http::Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.content_type = "application/x-protobuf";
    req.headers["Authorization"] = "Bearer abc";
    http::ClientOptions options;
    options.tls.ca_pem = certs_.ca_pem;
    if (client_cert) {
      options.tls.client_cert_pem = certs_.client_cert;
      options.tls.client_key_pem = certs_.client_key;
    }
    options.timeout = std::chrono::seconds(20);
    return http::Send(base_, req, options);
  }

  Certs certs_;
  TestHandler handler_;
  std::unique_ptr<HttpsServer> server_;
  std::string base_;
};

TEST_F(HttpsTest, PassesRequestsThrough) {
  Start();
  auto r = Send("POST", "/v1/enroll?x=1", "hello");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  json j = json::parse(r->body);
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["path"], "/v1/enroll");
  EXPECT_EQ(j["bytes"], 5);
  EXPECT_EQ(j["contentType"], "application/x-protobuf");
  EXPECT_EQ(j["auth"], "Bearer abc");
  EXPECT_EQ(j["peerCert"], "");
}

TEST_F(HttpsTest, HandsTheClientCertificateToTheHandler) {
  Start();
  auto r = Send("POST", "/v1/renew", "x", /*client_cert=*/true);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  std::string pem = json::parse(r->body)["peerCert"];
  ASSERT_FALSE(pem.empty());
  auto info = crypto::ParseCertificate(pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "cam-1");
}

TEST_F(HttpsTest, BodiesOverTheLimitGet413) {
  Start();
  auto big = Send("POST", "/v1/enroll", std::string(kMaxBodyBytes + 1, 'x'));
  ASSERT_TRUE(big.ok()) << big.error().ToString();
  EXPECT_EQ(big->status, 413);
  json j = json::parse(big->body);
  EXPECT_EQ(j["error"], "too_large");
  EXPECT_TRUE(j["message"].is_string());
  // Exactly at the limit is fine; manifests may be larger.
  auto at_limit = Send("POST", "/v1/enroll", std::string(kMaxBodyBytes, 'x'));
  ASSERT_TRUE(at_limit.ok()) << at_limit.error().ToString();
  EXPECT_EQ(at_limit->status, 200);
  auto manifest = Send("POST", "/v1/admin/apps", std::string(512 << 10, 'x'));
  ASSERT_TRUE(manifest.ok()) << manifest.error().ToString();
  EXPECT_EQ(manifest->status, 200);
  auto big_manifest = Send("POST", "/v1/admin/apps", std::string(kMaxManifestBodyBytes + 1, 'x'));
  ASSERT_TRUE(big_manifest.ok()) << big_manifest.error().ToString();
  EXPECT_EQ(big_manifest->status, 413);
}

TEST_F(HttpsTest, ASlowRequestDoesNotDelayOthers) {
  Start();
  std::optional<Result<http::Response>> slow;
  std::thread t([&] { slow.emplace(Send("GET", "/slow")); });
  ASSERT_TRUE(handler_.WaitSlow());
  // While /slow waits for its handler, other requests are answered.
  for (int i = 0; i < 5; ++i) {
    auto fast = Send("GET", "/fast");
    ASSERT_TRUE(fast.ok());
    EXPECT_EQ(fast->status, 200);
  }
  handler_.ReleaseSlow();
  t.join();
  ASSERT_TRUE(slow && slow->ok());
  EXPECT_EQ(json::parse((*slow)->body)["slow"], true);
}

TEST_F(HttpsTest, AHandlerThatNeverAnswersGets503) {
  HttpsServerOptions o;
  o.handler_timeout = std::chrono::milliseconds(300);
  Start(o);
  auto r = Send("GET", "/never");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["error"], "unavailable");
}

int ConnectRaw(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

TEST_F(HttpsTest, SilentClientsAreDisconnectedAtTheHandshakeDeadline) {
  HttpsServerOptions o;
  o.handshake_timeout = std::chrono::milliseconds(200);
  Start(o);
  int fd = ConnectRaw(server_->port());
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
  char buf[16];
  EXPECT_EQ(::recv(fd, buf, sizeof buf, 0), 0);  // closed by the server
  ::close(fd);
}

TEST_F(HttpsTest, ConnectionsBeyondTheCapAreRefused) {
  HttpsServerOptions o;
  o.max_connections = 1;
  Start(o);
  int fd = ConnectRaw(server_->port());
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 1; }));
  auto refused = Send("GET", "/fast");
  EXPECT_FALSE(refused.ok());
  ::close(fd);
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
  auto ok = Send("GET", "/fast");
  ASSERT_TRUE(ok.ok()) << ok.error().ToString();
  EXPECT_EQ(ok->status, 200);
}

TEST_F(HttpsTest, GarbageIsAnsweredOrDropped) {
  Start();
  // Not TLS at all.
  int fd = ConnectRaw(server_->port());
  const char junk[] = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_GT(::send(fd, junk, sizeof junk - 1, 0), 0);
  char buf[64];
  EXPECT_LE(::recv(fd, buf, sizeof buf, 0), static_cast<ssize_t>(sizeof buf));
  ::close(fd);
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
  auto ok = Send("GET", "/fast");
  ASSERT_TRUE(ok.ok());
}

TEST_F(HttpsTest, ManyConcurrentClients) {
  Start();
  constexpr int kClients = 24;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 4; ++j) {
        auto r = Send("POST", "/v1/enroll", std::string(1000, 'x'));
        if (r.ok() && r->status == 200) ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(ok.load(), kClients * 4);
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
}

TEST(HttpsServerStart, ReportsBadKeysAndBusyPorts) {
  HttpsServerOptions o;
  o.listen_address = "127.0.0.1";
  o.cert_pem = "not a cert";
  o.key_pem = "not a key";
  TestHandler h;
  EXPECT_EQ(HttpsServer::Start(o, &h).error().code(), Errc::kInvalidArgument);
  Certs certs;
  o.cert_pem = certs.server_cert;
  o.key_pem = certs.server_key;
  auto first = HttpsServer::Start(o, &h);
  ASSERT_TRUE(first.ok());
  o.port = (*first)->port();
  EXPECT_EQ(HttpsServer::Start(o, &h).error().code(), Errc::kUnavailable);
}

}  // namespace
}  // namespace outpost::hub::server
