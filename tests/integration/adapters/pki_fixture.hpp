// Test PKI made with the openssl command (a third party, independent of
// shared/crypto) and a real TLS mosquitto, for the adapter tests.
#pragma once

#include <memory>
#include <string>

#include "tests/support/test_support.hpp"

namespace outpost::testing {

struct TestPki {
  std::string dir;
  std::string ca_crt, ca_key;
  std::string server_crt, server_key;  // SANs: localhost, 127.0.0.1
  // Client certificate with the given CN, signed by the CA; files <cn>.crt/.key.
  void MakeClient(const std::string& cn) const;
  std::string Crt(const std::string& cn) const { return dir + "/" + cn + ".crt"; }
  std::string Key(const std::string& cn) const { return dir + "/" + cn + ".key"; }
};

// Builds the CA and server certificate in `dir`; throws on failure.
TestPki MakeTestPki(const std::string& dir);

// A mosquitto with one TLS listener requiring client certificates.
class TestBroker {
 public:
  TestBroker(const TestPki& pki, const std::string& dir, int port = 0);
  ~TestBroker();
  void Start();
  void Kill();
  int port() const { return port_; }
  std::string uri() const { return "ssl://localhost:" + std::to_string(port_); }
  std::string log() const;

 private:
  std::string dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

}  // namespace outpost::testing
