#include "tests/integration/adapters/pki_fixture.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

namespace outpost::testing {
namespace {

void Run(const std::vector<std::string>& argv) {
  std::string out;
  if (RunCommand(argv, &out) != 0) throw std::runtime_error(argv[0] + " failed: " + out);
}

bool PortAccepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

TestPki MakeTestPki(const std::string& dir) {
  TestPki p;
  p.dir = dir;
  p.ca_key = dir + "/ca.key";
  p.ca_crt = dir + "/ca.crt";
  p.server_key = dir + "/server.key";
  p.server_crt = dir + "/server.crt";
  Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", p.ca_key, "-out", p.ca_crt, "-days", "2", "-subj", "/CN=test-ca"});
  std::ofstream(dir + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  Run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", p.server_key, "-out", dir + "/server.csr", "-subj", "/CN=localhost"});
  Run({"openssl", "x509", "-req", "-in", dir + "/server.csr", "-CA", p.ca_crt, "-CAkey", p.ca_key,
       "-CAcreateserial", "-out", p.server_crt, "-days", "2", "-extfile", dir + "/san.ext"});
  return p;
}

void TestPki::MakeClient(const std::string& cn) const {
  Run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", Key(cn), "-out", dir + "/" + cn + ".csr", "-subj", "/CN=" + cn});
  Run({"openssl", "x509", "-req", "-in", dir + "/" + cn + ".csr", "-CA", ca_crt, "-CAkey", ca_key,
       "-CAcreateserial", "-out", Crt(cn), "-days", "2"});
}

TestBroker::TestBroker(const TestPki& pki, const std::string& dir, int port)
    : dir_(dir), port_(port ? port : FreePort()) {
  std::ofstream conf(dir + "/mosquitto.conf");
  conf << "per_listener_settings false\n"
       << "allow_anonymous false\n"
       << "persistence false\n"
       << "log_dest stderr\n"
       << "user root\n"
       << "listener " << port_ << " 127.0.0.1\n"
       << "cafile " << pki.ca_crt << "\n"
       << "certfile " << pki.server_crt << "\n"
       << "keyfile " << pki.server_key << "\n"
       << "require_certificate true\n"
       << "use_identity_as_username true\n";
}

TestBroker::~TestBroker() = default;

void TestBroker::Start() {
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"mosquitto", "-c", dir_ + "/mosquitto.conf"},
      dir_ + "/mosquitto.log");
  if (!WaitFor([&] { return PortAccepts(port_); }, std::chrono::seconds(20)))
    throw std::runtime_error("mosquitto did not start: " + log());
}

void TestBroker::Kill() {
  if (process_) process_->Kill();
  process_.reset();
}

std::string TestBroker::log() const {
  return ReadFileOr(dir_ + "/mosquitto.log");
}

}  // namespace outpost::testing
