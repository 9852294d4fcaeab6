// The hub as an operator runs it: `outpost-hub init`, a real mosquitto
// started from the generated mosquitto.conf, `outpost-hub serve`, and
// `outpostctl`. Devices are played by the HTTP client (enrollment), the
// mosquitto command-line clients (ACL checks) and the Paho adapter (reports,
// events, acks). Ports come from FreePort; every wait polls with a deadline.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "outpost.pb.h"
#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/http/http_client.hpp"
#include "shared/mqtt/mqtt_client.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::testing {
namespace {

using nlohmann::json;

constexpr const char* kStoreApp = R"(apiVersion: outpost.dev/v1alpha1
kind: EdgeApplication
metadata:
  name: store-vision
spec:
  selector:
    matchLabels: {role: store}
  workloads:
    - name: detector
      command: ["/bin/sleep", "3600"]
      env: {LOG_LEVEL: info}
)";

bool PortAccepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

struct Device {
  std::string id;
  std::string key_file;
  std::string cert_file;
  std::string cert_pem;
  std::string key_pem;
};

class HubIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_port_ = FreePort();
    do {
      api_port_ = FreePort();
    } while (api_port_ == broker_port_);
    dir_ = tmp_ / "hub";
    std::string out;
    ASSERT_EQ(RunCommand({Bin("outpost-hub"), "init", "--data-dir", dir_, "--hostname", "localhost",
                          "--broker-port", std::to_string(broker_port_), "--api-port",
                          std::to_string(api_port_)},
                         &out),
              0)
        << out;
    ca_pem_ = *fs::ReadFile(dir_ + "/ca.crt");
    StartBroker();
    StartHub();
  }

  void TearDown() override {
    hub_.reset();
    broker_.reset();
    if (HasFailure()) {
      std::cerr << "--- hub log ---\n"
                << ReadFileOr(tmp_ / "hub.log") << "\n--- broker log ---\n"
                << ReadFileOr(tmp_ / "mosquitto.log") << "\n";
    }
  }

  static std::string Bin(const std::string& name) { return BinDir() + "/" + name; }

  void StartBroker() {
    broker_ = std::make_unique<Process>(
        std::vector<std::string>{"mosquitto", "-c", dir_ + "/mosquitto.conf"},
        tmp_ / "mosquitto.log");
    ASSERT_TRUE(WaitFor([&] { return PortAccepts(broker_port_); })) << broker_->Log();
  }

  void StartHub() {
    hub_ = std::make_unique<Process>(
        std::vector<std::string>{Bin("outpost-hub"), "serve", "--data-dir", dir_},
        tmp_ / "hub.log");
    ASSERT_TRUE(WaitFor(
        [&] {
          auto h = Api("GET", "/healthz");
          return h.ok() && h->status == 200 &&
                 json::parse(h->body, nullptr, false).value("broker", "") == "connected";
        },
        std::chrono::seconds(30)))
        << hub_->Log();
  }

  Result<http::Response> Api(const std::string& method, const std::string& target,
                             const std::string& body = "", bool admin = false,
                             const Device* client = nullptr) {
    http::Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.content_type = "application/x-protobuf";
    if (admin) req.headers["Authorization"] = "Bearer " + AdminToken();
    http::ClientOptions o;
    o.tls.ca_pem = ca_pem_;
    if (client != nullptr) {
      o.tls.client_cert_pem = client->cert_pem;
      o.tls.client_key_pem = client->key_pem;
    }
    o.timeout = std::chrono::seconds(30);
    return http::Send("https://localhost:" + std::to_string(api_port_), req, o);
  }

  std::string AdminToken() {
    std::string t = *fs::ReadFile(dir_ + "/admin.token");
    while (!t.empty() && t.back() == '\n')
      t.pop_back();
    return t;
  }

  // outpostctl with the generated ctl.yaml; returns the exit code.
  int Ctl(std::vector<std::string> args, std::string* out) {
    args.insert(args.begin(), {Bin("outpostctl"), "--config", dir_ + "/ctl.yaml"});
    return RunCommand(args, out);
  }

  json CtlJson(std::vector<std::string> args) {
    args.push_back("-o");
    args.push_back("json");
    std::string out;
    int rc = Ctl(args, &out);
    EXPECT_EQ(rc, 0) << out;
    json j = json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  }

  std::string CreateToken(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"token", "create"};
    args.insert(args.end(), extra.begin(), extra.end());
    return CtlJson(args).value("token", "");
  }

  http::Response EnrollRaw(const std::string& token, const std::string& name,
                           crypto::PrivateKey* key_out = nullptr) {
    auto key = crypto::PrivateKey::Generate();
    outpost::v1::EnrollRequest req;
    req.set_token(token);
    req.set_name(name);
    req.set_csr_pem(*crypto::CreateCsr(*key, name));
    req.mutable_facts()->set_hostname(name + ".local");
    req.mutable_facts()->set_arch("amd64");
    auto resp = Api("POST", "/v1/enroll", req.SerializeAsString());
    EXPECT_TRUE(resp.ok()) << resp.error().ToString();
    if (key_out != nullptr) *key_out = std::move(*key);
    return resp.ok() ? *resp : http::Response{};
  }

  Device Enroll(const std::string& token, const std::string& name) {
    auto key = crypto::PrivateKey::Generate();
    http::Response resp = EnrollRaw(token, name, &*key);
    EXPECT_EQ(resp.status, 200) << resp.body;
    outpost::v1::EnrollResponse er;
    EXPECT_TRUE(er.ParseFromString(resp.body));
    Device d;
    d.id = er.device_id();
    d.cert_pem = er.certificate_pem();
    d.key_pem = *key->ToPem();
    d.key_file = tmp_ / (d.id + ".key");
    d.cert_file = tmp_ / (d.id + ".crt");
    EXPECT_TRUE(fs::WriteFileAtomic(d.key_file, d.key_pem, 0600).ok());
    EXPECT_TRUE(fs::WriteFileAtomic(d.cert_file, d.cert_pem).ok());
    EXPECT_EQ(er.broker_url(), "ssl://localhost:" + std::to_string(broker_port_));
    return d;
  }

  std::vector<std::string> MqttArgs(const char* tool, const std::string& cert,
                                    const std::string& key) {
    return {tool,
            "-h",
            "localhost",
            "-p",
            std::to_string(broker_port_),
            "--cafile",
            dir_ + "/ca.crt",
            "--cert",
            cert,
            "--key",
            key};
  }

  // One message (topic and hex payload) from the topics, or "" on timeout.
  std::string SubscribeOnce(const Device& d, const std::vector<std::string>& topics,
                            int wait_s = 5) {
    auto args = MqttArgs("mosquitto_sub", d.cert_file, d.key_file);
    for (const auto& t : topics) {
      args.push_back("-t");
      args.push_back(t);
    }
    for (const char* a : {"-C", "1", "-F", "%t %x"})
      args.push_back(a);
    args.push_back("-W");
    args.push_back(std::to_string(wait_s));
    std::string out;
    RunCommand(args, &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
      out.pop_back();
    return out.find("outpost/v1/devices/") == 0 ? out : "";
  }

  // The retained desired document of `d`, verified, with at least `min_gen`.
  std::optional<outpost::v1::DesiredState> ReadDesired(const Device& d, std::uint64_t min_gen) {
    std::optional<outpost::v1::DesiredState> found;
    WaitFor(
        [&] {
          std::string line = SubscribeOnce(d, {"outpost/v1/devices/" + d.id + "/desired"}, 3);
          auto space = line.find(' ');
          if (space == std::string::npos) return false;
          outpost::v1::SignedDesiredState s;
          if (!s.ParseFromString(Unhex(line.substr(space + 1)))) return false;
          EXPECT_TRUE(crypto::VerifyChain(
                          s.signer_certificate(), ca_pem_,
                          {.expected_cn = "outpost-signer", .usage = crypto::CertUsage::kSigning})
                          .ok());
          EXPECT_TRUE(
              crypto::VerifySignature(s.signer_certificate(), s.document(), s.signature()).ok());
          outpost::v1::DesiredState doc;
          if (!doc.ParseFromString(s.document()) || doc.generation() < min_gen) return false;
          found = doc;
          return true;
        },
        std::chrono::seconds(30), std::chrono::milliseconds(100));
    return found;
  }

  int Publish(const Device& d, const std::string& topic, const std::string& payload) {
    auto args = MqttArgs("mosquitto_pub", d.cert_file, d.key_file);
    for (const std::string& a : {std::string("-t"), topic, std::string("-q"), std::string("1")}) {
      args.push_back(a);
    }
    if (payload.empty()) {
      args.push_back("-n");
    } else {
      std::string file = tmp_ / ("payload-" + std::to_string(++payloads_));
      EXPECT_TRUE(fs::WriteFileAtomic(file, payload).ok());
      args.push_back("-f");
      args.push_back(file);
    }
    std::string out;
    return RunCommand(args, &out, {}, std::chrono::seconds(30));
  }

  static std::string Report(const std::string& id, std::uint64_t seq, std::uint64_t observed) {
    outpost::v1::ReportedState r;
    r.set_device_id(id);
    r.set_report_seq(seq);
    r.set_observed_generation(observed);
    r.set_desired_generation(observed);
    auto* w = r.add_workloads();
    w->set_name("store-vision.detector");
    w->set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
    w->set_pid(4242);
    return r.SerializeAsString();
  }

  json DeviceJson(const std::string& id) { return CtlJson({"device", "get", id}); }

  json Health() {
    auto h = Api("GET", "/healthz");
    if (!h.ok()) return json();
    return json::parse(h->body, nullptr, false);
  }

  TempDir tmp_;
  std::string dir_;
  std::string ca_pem_;
  int broker_port_ = 0;
  int api_port_ = 0;
  int payloads_ = 0;
  std::unique_ptr<Process> broker_;
  std::unique_ptr<Process> hub_;
};

TEST_F(HubIntegration, InitRefusesToOverwriteAndHealthzReportsState) {
  std::string out;
  EXPECT_NE(
      RunCommand({Bin("outpost-hub"), "init", "--data-dir", dir_, "--hostname", "localhost"}, &out),
      0);
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  json h = Health();
  EXPECT_EQ(h["db"], "ok");
  EXPECT_EQ(h["broker"], "connected");
  auto ca = Api("GET", "/v1/ca");
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ(ca->body, ca_pem_);
  // The admin API without the token.
  auto denied = Api("GET", "/v1/admin/devices");
  ASSERT_TRUE(denied.ok());
  EXPECT_EQ(denied->status, 401);
  EXPECT_EQ(json::parse(denied->body)["error"], "unauthenticated");
  ASSERT_EQ(
      RunCommand({Bin("outpostctl"), "--hub", "https://localhost:" + std::to_string(api_port_),
                  "--token", "wrong-token", "--ca", dir_ + "/ca.crt", "device", "list"},
                 &out),
      1);
  EXPECT_NE(out.find("admin token"), std::string::npos) << out;
}

TEST_F(HubIntegration, EnrolledDeviceGetsASignedRetainedDesiredDocument) {
  std::string token = CreateToken({"--label", "role=store"});
  ASSERT_FALSE(token.empty());
  Device d = Enroll(token, "front-door");
  EXPECT_EQ(d.id, "front-door");

  json list = CtlJson({"device", "list"});
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], "front-door");
  EXPECT_EQ(list[0]["labels"]["role"], "store");

  // Generation 1 (no workloads) right after enrollment.
  auto first = ReadDesired(d, 1);
  ASSERT_TRUE(first) << "no desired document for " << d.id;
  EXPECT_EQ(first->device_id(), d.id);
  EXPECT_EQ(first->workloads_size(), 0);

  ASSERT_TRUE(fs::WriteFileAtomic(tmp_ / "app.yaml", kStoreApp).ok());
  std::string out;
  ASSERT_EQ(Ctl({"apply", "-f", tmp_ / "app.yaml"}, &out), 0) << out;
  EXPECT_NE(out.find("edgeapplication/store-vision created (1 device changed)"), std::string::npos)
      << out;
  auto second = ReadDesired(d, first->generation() + 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->device_id(), d.id);
  ASSERT_EQ(second->workloads_size(), 1);
  EXPECT_EQ(second->workloads(0).name(), "store-vision.detector");

  // Re-applying the same manifest changes nothing.
  ASSERT_EQ(Ctl({"apply", "-f", tmp_ / "app.yaml"}, &out), 0) << out;
  EXPECT_NE(out.find("unchanged (0 devices changed)"), std::string::npos) << out;
  EXPECT_EQ(DeviceJson(d.id)["desiredGeneration"], second->generation());

  // The broker acknowledged the document: the hub records it as published,
  // and the rollout completes once the device reports that generation.
  ASSERT_TRUE(WaitFor([&] { return Health()["publisher"]["acked"].get<int>() >= 2; }));
  ASSERT_EQ(Publish(d, "outpost/v1/devices/" + d.id + "/reported", Report(d.id, 1, 2)), 0);
  ASSERT_EQ(Ctl({"rollout", "status", "store-vision", "--watch", "--timeout", "60s"}, &out), 0)
      << out;
  EXPECT_NE(out.find("rollout store-vision complete: 1/1 devices updated"), std::string::npos)
      << out;
  json got = DeviceJson(d.id);
  EXPECT_EQ(got["observedGeneration"], 2);
  ASSERT_EQ(got["workloads"].size(), 1u);
  EXPECT_EQ(got["workloads"][0]["state"], "running");
  EXPECT_EQ(got["workloads"][0]["pid"], 4242);
}

TEST_F(HubIntegration, ADeviceCanNeitherReadNorWriteAnotherDevicesTopics) {
  Device a = Enroll(CreateToken(), "cam-a");
  Device b = Enroll(CreateToken(), "cam-b");
  ASSERT_TRUE(ReadDesired(a, 1));
  ASSERT_TRUE(ReadDesired(b, 1));
  // One SUBSCRIBE for b's desired, then a's own: retained messages come in
  // that order, so the first message is b's if the broker let a read it.
  std::string first =
      SubscribeOnce(a, {"outpost/v1/devices/cam-b/desired", "outpost/v1/devices/cam-a/desired"});
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.rfind("outpost/v1/devices/cam-a/desired ", 0), 0u) << first;
  // A wildcard gets only its own.
  std::string wild = SubscribeOnce(a, {"outpost/v1/devices/+/desired"});
  EXPECT_EQ(wild.rfind("outpost/v1/devices/cam-a/desired ", 0), 0u) << wild;
  // Nor b's acks.
  std::string acks =
      SubscribeOnce(a, {"outpost/v1/devices/cam-b/ack", "outpost/v1/devices/cam-a/desired"});
  EXPECT_EQ(acks.rfind("outpost/v1/devices/cam-a/desired ", 0), 0u) << acks;

  // a publishes a report as b, then a report of its own. The broker drops
  // the first; by the time the hub has a's, it would have had b's.
  EXPECT_EQ(Publish(a, "outpost/v1/devices/cam-b/reported", Report("cam-b", 1, 1)), 0);
  EXPECT_EQ(Publish(a, "outpost/v1/devices/cam-a/reported", Report("cam-a", 1, 1)), 0);
  ASSERT_TRUE(WaitFor([&] { return DeviceJson("cam-a")["observedGeneration"] == 1; }));
  json bj = DeviceJson("cam-b");
  EXPECT_EQ(bj["observedGeneration"], 0);
  EXPECT_TRUE(bj["workloads"].empty());
  EXPECT_TRUE(bj["lastSeen"].is_null());
  // A payload naming b on a's own topic is dropped by the hub.
  EXPECT_EQ(Publish(a, "outpost/v1/devices/cam-a/reported", Report("cam-b", 2, 1)), 0);
  ASSERT_TRUE(WaitFor([&] { return Health()["ingest"]["dropped"]["idMismatch"] == 1; }));
  EXPECT_EQ(DeviceJson("cam-b")["observedGeneration"], 0);
}

TEST_F(HubIntegration, CertificatesNotFromTheHubCaCannotConnect) {
  Device a = Enroll(CreateToken(), "cam-a");
  // The real device can.
  ASSERT_EQ(Publish(a, "outpost/v1/devices/cam-a/presence", ""), 0);
  // A look-alike certificate (same CN) from another CA cannot.
  auto foreign_ca_key = crypto::PrivateKey::Generate();
  std::string foreign_ca = *crypto::CreateSelfSignedCa(*foreign_ca_key, "Outpost Hub CA", 30);
  auto key = crypto::PrivateKey::Generate();
  crypto::CertSpec spec;
  spec.common_name = "cam-a";
  Device fake;
  fake.id = "cam-a";
  fake.cert_file = tmp_ / "fake.crt";
  fake.key_file = tmp_ / "fake.key";
  ASSERT_TRUE(
      fs::WriteFileAtomic(fake.cert_file, *crypto::IssueCertificate(*key->PublicKeyPem(), spec,
                                                                    *foreign_ca_key, foreign_ca))
          .ok());
  ASSERT_TRUE(fs::WriteFileAtomic(fake.key_file, *key->ToPem(), 0600).ok());
  EXPECT_NE(Publish(fake, "outpost/v1/devices/cam-a/presence", ""), 0);
  // No certificate at all.
  std::string out;
  EXPECT_NE(RunCommand(
                {"mosquitto_pub", "-h", "localhost", "-p", std::to_string(broker_port_), "--cafile",
                 dir_ + "/ca.crt", "-t", "outpost/v1/devices/cam-a/presence", "-m", "x"},
                &out),
            0);
}

TEST_F(HubIntegration, ARevokedDeviceIsCutOffAfterTheCrlReload) {
  Device a = Enroll(CreateToken(), "cam-a");
  ASSERT_EQ(Publish(a, "outpost/v1/devices/cam-a/reported", Report("cam-a", 1, 1)), 0);

  // A connection made before the revocation stays up at the broker; the hub
  // ignores what it sends.
  mqtt::ClientOptions mo;
  mo.server_uri = "ssl://localhost:" + std::to_string(broker_port_);
  mo.client_id = "cam-a";
  mo.ca_file = dir_ + "/ca.crt";
  mo.cert_file = a.cert_file;
  mo.key_file = a.key_file;
  mo.clean_session = true;
  auto client = mqtt::NewPahoClient(mo);
  ASSERT_TRUE(client.ok());
  std::atomic<bool> connected{false};
  (*client)->SetConnectionHandler(
      [&](const mqtt::Client::ConnectionEvent& e) { connected = e.connected; });
  ASSERT_TRUE((*client)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return connected.load(); }));

  json revoked = CtlJson({"device", "revoke", "cam-a"});
  EXPECT_EQ(revoked["revoked"], true);
  EXPECT_EQ(revoked["crl"]["brokerReloaded"], true) << revoked.dump();
  // New connections with the revoked certificate fail once mosquitto has
  // reloaded the CRL.
  EXPECT_TRUE(WaitFor([&] { return Publish(a, "outpost/v1/devices/cam-a/presence", "") != 0; },
                      std::chrono::seconds(30), std::chrono::milliseconds(200)));
  // Its renewal is refused.
  auto key = crypto::PrivateKey::Generate();
  outpost::v1::RenewRequest renew;
  renew.set_csr_pem(*crypto::CreateCsr(*key, "cam-a"));
  auto resp = Api("POST", "/v1/renew", renew.SerializeAsString(), false, &a);
  ASSERT_TRUE(resp.ok()) << resp.error().ToString();
  EXPECT_EQ(resp->status, 403);
  EXPECT_EQ(json::parse(resp->body)["error"], "device_revoked");
  // The still-connected client's report is dropped by the hub.
  ASSERT_TRUE((*client)
                  ->Publish("outpost/v1/devices/cam-a/reported", Report("cam-a", 2, 5), 1, false)
                  .ok());
  EXPECT_TRUE(WaitFor([&] { return Health()["ingest"]["dropped"]["revoked"].get<int>() >= 1; }));
  EXPECT_EQ(DeviceJson("cam-a")["observedGeneration"], 1);
  (*client)->Stop();
}

TEST_F(HubIntegration, RenewalOverMutualTls) {
  Device a = Enroll(CreateToken(), "cam-a");
  auto key = crypto::PrivateKey::Generate();
  outpost::v1::RenewRequest renew;
  renew.set_csr_pem(*crypto::CreateCsr(*key, "cam-a"));
  auto without = Api("POST", "/v1/renew", renew.SerializeAsString());
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without->status, 401);
  auto resp = Api("POST", "/v1/renew", renew.SerializeAsString(), false, &a);
  ASSERT_TRUE(resp.ok()) << resp.error().ToString();
  ASSERT_EQ(resp->status, 200) << resp->body;
  outpost::v1::RenewResponse rr;
  ASSERT_TRUE(rr.ParseFromString(resp->body));
  EXPECT_TRUE(crypto::VerifyChain(rr.certificate_pem(), ca_pem_, {.expected_cn = "cam-a"}).ok());
  EXPECT_EQ(crypto::ParseCertificate(rr.certificate_pem())->public_key_pem, *key->PublicKeyPem());
}

json ErrorOf(const http::Response& r) {
  return json::parse(r.body, nullptr, false);
}

TEST_F(HubIntegration, TokenProblemsAreClear4xxJson) {
  http::Response bad = EnrollRaw("abcdef.0123456789abcdef", "x1");
  EXPECT_EQ(bad.status, 401);
  EXPECT_EQ(ErrorOf(bad)["error"], "invalid_token");
  EXPECT_TRUE(ErrorOf(bad)["message"].is_string());

  std::string once = CreateToken({"--uses", "1"});
  EXPECT_EQ(EnrollRaw(once, "x2").status, 200);
  http::Response used = EnrollRaw(once, "x3");
  EXPECT_EQ(used.status, 403);
  EXPECT_EQ(ErrorOf(used)["error"], "token_used_up");

  std::string revoked = CreateToken();
  std::string out;
  ASSERT_EQ(Ctl({"token", "revoke", revoked.substr(0, 6)}, &out), 0) << out;
  http::Response rv = EnrollRaw(revoked, "x4");
  EXPECT_EQ(rv.status, 401);
  EXPECT_EQ(ErrorOf(rv)["error"], "token_revoked");

  // Wait (without using it) until the hub lists the short-lived token as
  // expired, then try it.
  std::string short_lived = CreateToken({"--ttl", "1s"});
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& t : CtlJson({"token", "list"})) {
          if (t["id"] == short_lived.substr(0, 6)) return t["state"] == "expired";
        }
        return false;
      },
      std::chrono::seconds(20), std::chrono::milliseconds(250)));
  http::Response expired = EnrollRaw(short_lived, "x5");
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(ErrorOf(expired)["error"], "token_expired");

  json tokens = CtlJson({"token", "list"});
  ASSERT_EQ(tokens.size(), 3u);
  std::set<std::string> states;
  for (const auto& t : tokens)
    states.insert(t["state"].get<std::string>());
  EXPECT_EQ(states, (std::set<std::string>{"used-up", "revoked", "expired"}));
}

TEST_F(HubIntegration, TwoDevicesRacingForTheLastUseOneWins) {
  std::string token = CreateToken({"--uses", "1"});
  std::vector<int> statuses(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back(
        [&, i] { statuses[i] = EnrollRaw(token, "racer-" + std::to_string(i)).status; });
  }
  for (auto& t : threads)
    t.join();
  std::sort(statuses.begin(), statuses.end());
  EXPECT_EQ(statuses, (std::vector<int>{200, 403}));
  EXPECT_EQ(CtlJson({"device", "list"}).size(), 1u);
}

TEST_F(HubIntegration, OversizedBodiesGet413) {
  auto big = Api("POST", "/v1/enroll", std::string(100 << 10, 'x'));
  ASSERT_TRUE(big.ok()) << big.error().ToString();
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(ErrorOf(*big)["error"], "too_large");
  auto manifest = Api("POST", "/v1/admin/apps", std::string((1 << 20) + 10, 'x'), true);
  ASSERT_TRUE(manifest.ok()) << manifest.error().ToString();
  EXPECT_EQ(manifest->status, 413);
  // The hub is fine afterwards.
  EXPECT_EQ(Health()["db"], "ok");
}

TEST_F(HubIntegration, ReportsEventsAndPresenceFlowAndAreAcknowledged) {
  Device d = Enroll(CreateToken({"--label", "role=store"}), "cam-1");
  mqtt::ClientOptions mo;
  mo.server_uri = "ssl://localhost:" + std::to_string(broker_port_);
  mo.client_id = d.id;
  mo.ca_file = dir_ + "/ca.crt";
  mo.cert_file = d.cert_file;
  mo.key_file = d.key_file;
  mo.clean_session = true;
  outpost::v1::Presence offline;
  mo.will = mqtt::Will{"outpost/v1/devices/cam-1/presence", offline.SerializeAsString(), true, 1};
  auto client = mqtt::NewPahoClient(mo);
  ASSERT_TRUE(client.ok());
  std::mutex mu;
  std::vector<mqtt::Message> got;
  std::atomic<bool> connected{false};
  (*client)->SetMessageHandler([&](const mqtt::Message& m) {
    std::lock_guard lock(mu);
    got.push_back(m);
  });
  (*client)->SetConnectionHandler(
      [&](const mqtt::Client::ConnectionEvent& e) { connected = e.connected; });
  (*client)->AddSubscription("outpost/v1/devices/cam-1/desired", 1);
  (*client)->AddSubscription("outpost/v1/devices/cam-1/ack", 1);
  ASSERT_TRUE((*client)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return connected.load(); }));

  outpost::v1::Presence online;
  online.set_online(true);
  online.set_session(7);
  ASSERT_TRUE(
      (*client)
          ->Publish("outpost/v1/devices/cam-1/presence", online.SerializeAsString(), 1, true)
          .ok());
  ASSERT_TRUE(WaitFor([&] { return DeviceJson("cam-1")["online"] == true; }));

  outpost::v1::EventBatch batch;
  batch.set_device_id("cam-1");
  for (std::uint64_t seq : {1, 2, 3}) {
    auto* e = batch.add_events();
    e->set_seq(seq);
    e->set_type(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED);
  }
  ASSERT_TRUE((*client)
                  ->Publish("outpost/v1/devices/cam-1/events", batch.SerializeAsString(), 1, false)
                  .ok());
  std::uint64_t acked = 0;
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard lock(mu);
    for (const auto& m : got) {
      if (m.topic != "outpost/v1/devices/cam-1/ack") continue;
      outpost::v1::Ack ack;
      if (ack.ParseFromString(m.payload)) acked = ack.acked_seq();
    }
    return acked == 3;
  }));
  // The device's own desired document came too (retained).
  {
    std::lock_guard lock(mu);
    EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](const mqtt::Message& m) {
      return m.topic == "outpost/v1/devices/cam-1/desired";
    }));
  }
  // Garbage on its own topics changes nothing and does not hurt the hub.
  ASSERT_TRUE(
      (*client)->Publish("outpost/v1/devices/cam-1/events", "\xff\xfe garbage", 1, false).ok());
  ASSERT_TRUE((*client)
                  ->Publish("outpost/v1/devices/cam-1/reported", std::string(70000, 'x'), 1, false)
                  .ok());
  ASSERT_TRUE(WaitFor([&] {
    json h = Health();
    return h["ingest"]["dropped"]["unparseable"].get<int>() >= 1;
  }));
  // The report over 64 KiB may not even pass the broker; either way it is
  // not stored.
  EXPECT_EQ(DeviceJson("cam-1")["observedGeneration"], 0);

  // A clean stop publishes nothing; the will (offline) comes on a broken
  // connection: simulate the agent's clean-shutdown presence instead.
  ASSERT_TRUE(
      (*client)
          ->Publish("outpost/v1/devices/cam-1/presence", offline.SerializeAsString(), 1, true)
          .ok());
  ASSERT_TRUE(WaitFor([&] { return DeviceJson("cam-1")["online"] == false; }));
  (*client)->Stop();
}

TEST_F(HubIntegration, LabelsRetargetAndDeleteRemovesWorkloads) {
  Device d = Enroll(CreateToken(), "cam-1");
  ASSERT_TRUE(fs::WriteFileAtomic(tmp_ / "app.yaml", kStoreApp).ok());
  std::string out;
  ASSERT_EQ(Ctl({"apply", "-f", tmp_ / "app.yaml"}, &out), 0) << out;
  EXPECT_NE(out.find("(0 devices changed)"), std::string::npos) << out;
  ASSERT_EQ(Ctl({"device", "label", "cam-1", "role=store"}, &out), 0) << out;
  auto with_app = ReadDesired(d, 2);
  ASSERT_TRUE(with_app);
  EXPECT_EQ(with_app->workloads_size(), 1);
  ASSERT_EQ(Ctl({"get", "apps"}, &out), 0);
  EXPECT_NE(out.find("store-vision"), std::string::npos) << out;
  ASSERT_EQ(Ctl({"delete", "app", "store-vision"}, &out), 0) << out;
  EXPECT_NE(out.find("deleted (1 device changed)"), std::string::npos) << out;
  auto without = ReadDesired(d, 3);
  ASSERT_TRUE(without);
  EXPECT_EQ(without->workloads_size(), 0);
  ASSERT_EQ(Ctl({"device", "delete", "cam-1"}, &out), 0) << out;
  ASSERT_NE(Ctl({"device", "get", "cam-1"}, &out), 0);
  EXPECT_NE(out.find("cam-1"), std::string::npos);
}

TEST_F(HubIntegration, TheBrokerLosingEverythingGetsTheDocumentsBack) {
  Device d = Enroll(CreateToken(), "cam-1");
  auto doc = ReadDesired(d, 1);
  ASSERT_TRUE(doc);
  // A broker restarted without its persistence file: no retained messages,
  // no session for the hub. The hub reconnects and republishes.
  broker_.reset();
  ::unlink((dir_ + "/mosquitto.db").c_str());
  ASSERT_TRUE(WaitFor([&] { return Health()["broker"] == "disconnected"; }));
  StartBroker();
  ASSERT_TRUE(WaitFor([&] { return Health()["broker"] == "connected"; }, std::chrono::seconds(60)));
  auto again = ReadDesired(d, 1);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->generation(), doc->generation());
}

// Root initialising a data directory owned by another account (the
// production layout): the files become that account's, mosquitto started as
// root drops to it and still reads its key, and the hub can signal it.
TEST(HubDataDirOwner, MosquittoStartedAsRootRunsAsTheDataDirOwner) {
  struct passwd* pw = ::getpwnam("mosquitto");
  if (::geteuid() != 0 || pw == nullptr) {
    GTEST_SKIP() << "needs root and the mosquitto account (Debian's mosquitto package)";
  }
  TempDir tmp;
  ASSERT_EQ(::chmod(tmp.path().c_str(), 0755), 0);
  const std::string dir = tmp / "hub";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(dir.c_str(), pw->pw_uid, pw->pw_gid), 0);
  const int broker_port = FreePort();
  int api_port = FreePort();
  while (api_port == broker_port)
    api_port = FreePort();
  std::string out;
  ASSERT_EQ(RunCommand({BinDir() + "/outpost-hub", "init", "--data-dir", dir, "--hostname",
                        "localhost", "--broker-port", std::to_string(broker_port), "--api-port",
                        std::to_string(api_port)},
                       &out),
            0)
      << out;
  for (const char* f : {"broker.key", "ca.key", "crl.pem", "mosquitto.conf", "ctl.yaml"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_uid, pw->pw_uid) << f;
  }
  EXPECT_NE(ReadFileOr(dir + "/mosquitto.conf").find("\nuser mosquitto\n"), std::string::npos);

  Process broker({"mosquitto", "-c", dir + "/mosquitto.conf"}, tmp / "mosquitto.log");
  ASSERT_TRUE(WaitFor([&] { return PortAccepts(broker_port); })) << broker.Log();
  // It runs as the data directory's owner.
  std::string status = ReadFileOr("/proc/" + std::to_string(broker.pid()) + "/status");
  EXPECT_NE(status.find("Uid:\t" + std::to_string(pw->pw_uid) + "\t"), std::string::npos) << status;

  Process hub({BinDir() + "/outpost-hub", "serve", "--data-dir", dir}, tmp / "hub.log");
  const std::string ca = ReadFileOr(dir + "/ca.crt");
  auto api = [&](const std::string& method, const std::string& target, const std::string& body) {
    http::Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    std::string token = ReadFileOr(dir + "/admin.token");
    token.erase(token.find_last_not_of("\n") + 1);
    req.headers["Authorization"] = "Bearer " + token;
    http::ClientOptions o;
    o.tls.ca_pem = ca;
    return http::Send("https://localhost:" + std::to_string(api_port), req, o);
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        auto h = api("GET", "/healthz", "");
        return h.ok() && json::parse(h->body, nullptr, false).value("broker", "") == "connected";
      },
      std::chrono::seconds(30)))
      << hub.Log() << broker.Log();
  // Revocation reaches this broker too: the hub finds and signals it.
  auto token = api("POST", "/v1/admin/tokens", "{}");
  ASSERT_TRUE(token.ok());
  auto key = crypto::PrivateKey::Generate();
  outpost::v1::EnrollRequest req;
  req.set_token(json::parse(token->body)["token"].get<std::string>());
  req.set_name("cam-1");
  req.set_csr_pem(*crypto::CreateCsr(*key, "cam-1"));
  auto enrolled = api("POST", "/v1/enroll", req.SerializeAsString());
  ASSERT_TRUE(enrolled.ok());
  ASSERT_EQ(enrolled->status, 200) << enrolled->body;
  auto revoked = api("POST", "/v1/admin/devices/cam-1/revoke", "");
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(json::parse(revoked->body)["crl"]["brokerReloaded"], true) << revoked->body;
  EXPECT_TRUE(broker.Running());
}

}  // namespace
}  // namespace outpost::testing
