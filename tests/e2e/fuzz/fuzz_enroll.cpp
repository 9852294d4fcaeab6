// Fuzz target: the hub's enrollment request handling (hub/server/api:
// POST /v1/enroll): the protobuf body, the token, the CSR (mbedTLS parses
// it), the identity rules, labels, facts, then the registry and the issued
// certificate; plus request-target parsing (ParseTarget) and routing of the
// unauthenticated endpoints.
//
// Modes (first byte):
//   raw        the body is the input, as a client would send it;
//   built      an EnrollRequest parsed from the input (or empty), completed
//              with a valid token (sometimes), and a real CSR whose CN is
//              fuzzed (or the fuzzed name), so the fuzzer reaches identity
//              and label rules and the registry;
//   target     a request line's target and method for Handle().
//
// Invariants: every answer is 2xx-5xx; every error is JSON with "error" and
// "message"; a 200 carries an EnrollResponse whose certificate has CN equal
// to the assigned device id, a valid device id that is not reserved; 5xx
// never happens for client input (that would be the hub blaming itself).
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "hub/apps/apps.hpp"
#include "hub/broker/desired_sink.hpp"
#include "hub/registry/registry.hpp"
#include "hub/server/api.hpp"
#include "hub/server/http_types.hpp"
#include "outpost.pb.h"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "tests/e2e/fuzz/fuzz_support.hpp"

namespace {

using namespace outpost;
using outpost::fuzz::Reader;

class NullSink : public hub::broker::DesiredSink {
 public:
  void Publish(const std::vector<hub::registry::DesiredChange>&) override {}
  void Republish(const std::vector<hub::registry::DesiredRecord>&) override {}
  void Clear(const std::string&) override {}
};

constexpr int kResetEvery = 2000;

struct World {
  std::string dir;
  std::unique_ptr<crypto::PrivateKey> ca_key;
  std::string ca_pem;
  std::unique_ptr<crypto::PrivateKey> device_key;
  std::unique_ptr<hub::registry::Registry> registry;
  NullSink sink;
  std::unique_ptr<hub::server::Api> api;
  std::string token;
  std::int64_t now = 0;
  int inputs = 0;

  void Open() {
    api.reset();
    registry.reset();
    for (const char* suffix : {"", "-wal", "-shm"})
      ::unlink((dir + "/hub.db" + suffix).c_str());
    auto r = hub::registry::Registry::Open(dir + "/hub.db");
    if (!r.ok()) fuzz::Broken("Registry::Open", r.error().ToString());
    registry = std::move(r).value();
    auto t = registry->CreateToken(std::chrono::hours(24 * 365), 1000000, {{"role", "fuzz"}}, now);
    if (!t.ok()) fuzz::Broken("CreateToken", t.error().ToString());
    token = t->token;
    // An existing device, for "the CSR asks for another device's CN".
    hub::registry::EnrollRequest existing;
    existing.token = token;
    existing.requested_name = "taken";
    if (!registry->EnrollDevice(existing, now).ok()) fuzz::Broken("EnrollDevice", "taken");
    hub::server::ApiContext ctx;
    ctx.registry = registry.get();
    ctx.desired = &sink;
    ctx.crl = nullptr;  // only revocation uses it; refused below
    ctx.ca_key = ca_key.get();
    ctx.ca_pem = ca_pem;
    ctx.ca_hash = "sha256:" + std::string(64, '0');
    ctx.public_hub_url = "https://hub.fuzz:8443";
    ctx.public_broker_url = "ssl://hub.fuzz:8883";
    ctx.now_ms = [this] { return now; };
    ctx.health = [] { return nlohmann::json::object(); };
    api = std::make_unique<hub::server::Api>(ctx);
  }
};

World& TheWorld() {
  static World* w = [] {
    fuzz::QuietLogs();
    auto* world = new World;
    world->dir = fuzz::ScratchDir("enroll");
    world->now = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    auto ca_key = crypto::PrivateKey::Generate();
    auto device_key = crypto::PrivateKey::Generate();
    if (!ca_key.ok() || !device_key.ok()) fuzz::Broken("key generation", "");
    auto ca = crypto::CreateSelfSignedCa(*ca_key, "Fuzz Hub CA", 3650);
    if (!ca.ok()) fuzz::Broken("CA", ca.error().ToString());
    world->ca_key = std::make_unique<crypto::PrivateKey>(std::move(*ca_key));
    world->device_key = std::make_unique<crypto::PrivateKey>(std::move(*device_key));
    world->ca_pem = *ca;
    world->Open();
    return world;
  }();
  return *w;
}

void CheckAnswer(const hub::server::HttpRequest& req, const hub::server::HttpResponse& resp) {
  OUTPOST_FUZZ_CHECK(resp.status >= 200 && resp.status < 600, std::to_string(resp.status));
  OUTPOST_FUZZ_CHECK(resp.status < 500 || resp.status == 503,
                     "a 5xx for client input: " + std::to_string(resp.status) + " " + resp.body);
  if (resp.status >= 400) {
    auto j = nlohmann::json::parse(resp.body, nullptr, false);
    OUTPOST_FUZZ_CHECK(j.is_object() && j.contains("error") && j.contains("message"),
                       "error body is not {error, message}: " + resp.body);
    return;
  }
  if (req.path == "/v1/enroll" && resp.status == 200) {
    outpost::v1::EnrollResponse er;
    OUTPOST_FUZZ_CHECK(er.ParseFromString(resp.body), "EnrollResponse does not parse");
    OUTPOST_FUZZ_CHECK(hub::apps::IsDnsLabel(er.device_id()), "device id " + er.device_id());
    OUTPOST_FUZZ_CHECK(er.device_id().rfind("outpost-", 0) != 0, "reserved id " + er.device_id());
    auto cert = crypto::ParseCertificate(er.certificate_pem());
    OUTPOST_FUZZ_CHECK(cert.ok(), "issued certificate does not parse");
    OUTPOST_FUZZ_CHECK(cert->common_name == er.device_id(), "certificate CN != device id");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = TheWorld();
  if (++w.inputs % kResetEvery == 0) w.Open();
  Reader in(data, size);
  hub::server::HttpRequest req;
  req.method = "POST";
  req.path = "/v1/enroll";
  req.target = req.path;
  req.content_type = "application/x-protobuf";
  req.remote = "192.0.2.1:1234";
  const std::uint8_t mode = in.Byte();
  if (mode < 96) {
    req.body = in.Rest();
  } else if (mode < 224) {
    const std::uint8_t flags = in.Byte();
    std::string cn = in.Chunk(200);
    outpost::v1::EnrollRequest er;
    (void)er.ParseFromString(in.Rest());  // whatever parses; the rest stays default
    if (flags & 1) er.set_token(w.token);
    if (flags & 2) cn = er.name();
    if (flags & 4) {
      auto csr = crypto::CreateCsr(*w.device_key, cn);
      if (csr.ok()) er.set_csr_pem(*csr);  // mbedTLS refuses some CNs: then none
    }
    req.body = er.SerializeAsString();
    if (flags & 8) w.now += 3'600'000;  // tokens expire eventually, too
  } else {
    // Any target and method, without admin rights.
    static const char* kMethods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", ""};
    req.method = kMethods[in.Pick(6)];
    req.target = in.Chunk(2048);
    req.body = in.Rest();
    req.query.clear();
    if (!hub::server::ParseTarget(req.target, &req.path, &req.query)) return 0;
    if (hub::server::IsAdminPath(req.path)) {
      // The transport checks the admin token before Handle(); so do we.
      auto denied = hub::server::CheckAdminAuth(req, "the-admin-token");
      OUTPOST_FUZZ_CHECK(denied.has_value(), "admin path without a token was let in");
      CheckAnswer(req, *denied);
      return 0;
    }
    if (req.path == "/v1/renew") return 0;  // needs the TLS peer; not this target
  }
  // The transport answers 413 before a body over the limit is read.
  if (req.body.size() > hub::server::BodyLimitFor(req.method, req.path)) return 0;
  CheckAnswer(req, w.api->Handle(req));
  return 0;
}
