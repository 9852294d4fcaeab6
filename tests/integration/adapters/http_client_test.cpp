// The Beast client against `openssl s_server -WWW` (a third-party TLS server).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "shared/http/http_client.hpp"
#include "tests/integration/adapters/pki_fixture.hpp"

namespace outpost::http {
namespace {

using testing::TempDir;

Request Req(const std::string& target) {
  Request r;
  r.target = target;
  return r;
}

TEST(ParseUrl, SplitsAndDefaults) {
  auto u = ParseUrl("https://hub.example:8443/api/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "hub.example");
  EXPECT_EQ(u->port, "8443");
  EXPECT_EQ(u->path, "/api");
  auto d = ParseUrl("http://[::1]");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->host, "::1");
  EXPECT_EQ(d->port, "80");
  EXPECT_FALSE(ParseUrl("hub:8443").ok());
  EXPECT_FALSE(ParseUrl("ftp://hub").ok());
  EXPECT_FALSE(ParseUrl("https://hub:84x3").ok());
}

class HttpsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki_ = testing::MakeTestPki(dir_.path());
    std::ofstream(dir_ / "hello.txt") << "hello from s_server";
    std::ofstream(dir_ / "big.txt") << std::string(100000, 'x');
    port_ = testing::FreePort();
    server_ = std::make_unique<testing::Process>(
        std::vector<std::string>{"sh", "-c",
                                 "cd " + dir_.path() +
                                     " && exec openssl s_server -quiet -WWW "
                                     "-accept " +
                                     std::to_string(port_) + " -cert " + pki_.server_crt +
                                     " -key " + pki_.server_key},
        dir_ / "server.log");
    ASSERT_TRUE(testing::WaitFor([&] {
      ClientOptions o;
      o.tls.insecure_skip_verify = true;
      o.timeout = std::chrono::milliseconds(500);
      return Send(Base(), Req("/hello.txt"), o).ok();
    }));
  }
  std::string Base() const { return "https://localhost:" + std::to_string(port_); }
  std::string CaPem() const { return testing::ReadFileOr(pki_.ca_crt); }

  TempDir dir_;
  testing::TestPki pki_;
  int port_ = 0;
  std::unique_ptr<testing::Process> server_;
};

TEST_F(HttpsClientTest, VerifiesServerAgainstGivenCa) {
  ClientOptions o;
  o.tls.ca_pem = CaPem();
  auto r = Send(Base(), Req("/hello.txt"), o);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("hello from s_server"), std::string::npos);
  EXPECT_NE(r->peer_chain_pem.find("BEGIN CERTIFICATE"), std::string::npos);
}

TEST_F(HttpsClientTest, RefusesServerFromAnotherCa) {
  TempDir other;
  auto other_pki = testing::MakeTestPki(other.path());
  ClientOptions o;
  o.tls.ca_pem = testing::ReadFileOr(other_pki.ca_crt);
  auto r = Send(Base(), Req("/hello.txt"), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthenticated);
}

TEST_F(HttpsClientTest, RefusesWrongHostName) {
  ClientOptions o;
  o.tls.ca_pem = CaPem();
  // 127.0.0.2 is loopback too, but not in the certificate's SANs.
  auto r = Send("https://127.0.0.2:" + std::to_string(port_), Req("/hello.txt"), o);
  ASSERT_FALSE(r.ok());
}

TEST_F(HttpsClientTest, BoundsTheResponse) {
  ClientOptions o;
  o.tls.ca_pem = CaPem();
  o.max_response_bytes = 1000;
  auto r = Send(Base(), Req("/big.txt"), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kResourceExhausted);
}

TEST(HttpClient, RefusedConnectionIsUnavailable) {
  int port = testing::FreePort();
  ClientOptions o;
  o.tls.insecure_skip_verify = true;
  auto r = Send("https://127.0.0.1:" + std::to_string(port), Request{}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnavailable);
}

TEST(HttpClient, SilentServerTimesOut) {
  // A listening socket that never answers.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ClientOptions o;
  o.tls.insecure_skip_verify = true;
  o.timeout = std::chrono::milliseconds(300);
  auto r = Send("https://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), Request{}, o);
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kTimeout);
}

}  // namespace
}  // namespace outpost::http
