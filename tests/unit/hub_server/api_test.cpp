// The API logic over a real Registry, without sockets: routing, JSON error
// shapes, admin auth, enrollment (token rules, CSR identity rules), renewal,
// revocation, applications.
#include <gtest/gtest.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "hub/server/api.hpp"
#include "hub/server/http_types.hpp"
#include "outpost.pb.h"
#include "shared/crypto/crypto.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::hub::server {
namespace {

using nlohmann::json;
using outpost::testing::TempDir;

class RecordingSink : public broker::DesiredSink {
 public:
  void Publish(const std::vector<registry::DesiredChange>& changes) override {
    for (const auto& c : changes)
      published.push_back(c);
  }
  void Republish(const std::vector<registry::DesiredRecord>& records) override {
    republished += records.size();
  }
  void Clear(const std::string& id) override { cleared.push_back(id); }
  std::vector<registry::DesiredChange> published;
  std::size_t republished = 0;
  std::vector<std::string> cleared;
};

class RecordingCrl : public broker::CrlPublisher {
 public:
  Result<Outcome> Update(const std::vector<std::string>& serials) override {
    last = serials;
    ++updates;
    return Outcome{true, true, ""};
  }
  std::vector<std::string> last;
  int updates = 0;
};

constexpr const char* kManifest = R"(apiVersion: outpost.dev/v1alpha1
kind: EdgeApplication
metadata:
  name: detector
spec:
  selector:
    matchLabels: {role: store}
  workloads:
    - name: main
      command: ["/bin/sleep", "1000"]
)";

constexpr const char* kSecondApp = R"(apiVersion: outpost.dev/v1alpha1
kind: EdgeApplication
metadata:
  name: counter
spec:
  selector:
    matchLabels: {region: south}
  workloads:
    - name: main
      command: ["/bin/true"]
)";

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = registry::Registry::Open(tmp_ / "hub.db");
    ASSERT_TRUE(reg.ok()) << reg.error().ToString();
    registry_ = std::move(*reg);
    ca_key_.emplace(std::move(*crypto::PrivateKey::Generate()));
    ca_pem_ = *crypto::CreateSelfSignedCa(*ca_key_, "Test CA", 30);
    ApiContext ctx;
    ctx.registry = registry_.get();
    ctx.desired = &sink_;
    ctx.crl = &crl_;
    ctx.ca_key = &*ca_key_;
    ctx.ca_pem = ca_pem_;
    ctx.ca_hash = *crypto::SpkiSha256(ca_pem_);
    ctx.public_hub_url = "https://hub.test:8443";
    ctx.public_broker_url = "ssl://hub.test:8883";
    ctx.now_ms = [this] { return now_; };
    ctx.health = [] { return json{{"broker", "connected"}}; };
    api_ = std::make_unique<Api>(std::move(ctx));
  }

  HttpResponse Call(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& peer_cert = "") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    EXPECT_TRUE(ParseTarget(target, &r.path, &r.query));
    r.body = body;
    r.peer_cert_pem = peer_cert;
    return api_->Handle(r);
  }

  json CallJson(const std::string& method, const std::string& target, const std::string& body,
                int expect_status) {
    HttpResponse resp = Call(method, target, body);
    EXPECT_EQ(resp.status, expect_status) << resp.body;
    EXPECT_EQ(resp.content_type, "application/json");
    json j = json::parse(resp.body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << resp.body;
    return j;
  }

  // Checks the error JSON shape and returns the error code.
  std::string ErrorCode(const HttpResponse& resp, int status) {
    EXPECT_EQ(resp.status, status) << resp.body;
    EXPECT_EQ(resp.content_type, "application/json");
    json j = json::parse(resp.body, nullptr, false);
    EXPECT_TRUE(j.is_object());
    EXPECT_TRUE(j["error"].is_string());
    EXPECT_TRUE(j["message"].is_string());
    EXPECT_FALSE(j["message"].get<std::string>().empty());
    return j.value("error", "");
  }

  std::string CreateToken(int uses = 1, std::int64_t ttl_seconds = 3600,
                          json labels = json::object()) {
    json body = {{"uses", uses}, {"ttlSeconds", ttl_seconds}, {"labels", labels}};
    json t = CallJson("POST", "/v1/admin/tokens", body.dump(), 201);
    return t.value("token", "");
  }

  struct Enrolled {
    HttpResponse response;
    std::string key_pem;
    outpost::v1::EnrollResponse body;
  };
  // The CSR's CN is `csr_cn`, by default the requested name, or a fresh one
  // (the crypto adapter, like the agent, always puts a CN in a CSR).
  Enrolled Enroll(const std::string& token, const std::string& name = "",
                  std::optional<std::string> csr_cn = std::nullopt) {
    Enrolled e;
    auto key = crypto::PrivateKey::Generate();
    e.key_pem = *key->ToPem();
    outpost::v1::EnrollRequest req;
    req.set_token(token);
    std::string cn = csr_cn ? *csr_cn : (name.empty() ? "dev-" + crypto::RandomToken(6) : name);
    req.set_csr_pem(*crypto::CreateCsr(*key, cn));
    req.set_name(name);
    req.mutable_facts()->set_hostname("edge-box");
    req.mutable_facts()->set_arch("arm64");
    e.response = Call("POST", "/v1/enroll", req.SerializeAsString());
    if (e.response.status == 200) {
      EXPECT_EQ(e.response.content_type, "application/x-protobuf");
      EXPECT_TRUE(e.body.ParseFromString(e.response.body));
    }
    return e;
  }

  TempDir tmp_;
  // Certificates are issued against the real clock, so the API's clock starts
  // there too (tests move it forward).
  std::int64_t now_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::unique_ptr<registry::Registry> registry_;
  std::optional<crypto::PrivateKey> ca_key_;
  std::string ca_pem_;
  RecordingSink sink_;
  RecordingCrl crl_;
  std::unique_ptr<Api> api_;
};

TEST_F(ApiTest, HealthAndCa) {
  json h = CallJson("GET", "/healthz", "", 200);
  EXPECT_EQ(h["db"], "ok");
  EXPECT_EQ(h["broker"], "connected");
  HttpResponse ca = Call("GET", "/v1/ca");
  EXPECT_EQ(ca.status, 200);
  EXPECT_EQ(ca.body, ca_pem_);
}

TEST_F(ApiTest, RoutingErrorsAreJson) {
  EXPECT_EQ(ErrorCode(Call("GET", "/nope"), 404), "not_found");
  EXPECT_EQ(ErrorCode(Call("DELETE", "/v1/enroll"), 405), "method_not_allowed");
  EXPECT_EQ(ErrorCode(Call("PUT", "/v1/admin/tokens"), 405), "method_not_allowed");
  EXPECT_EQ(ErrorCode(Call("GET", "/v1/admin/nothing"), 404), "not_found");
  EXPECT_EQ(ErrorCode(Call("GET", "/v1/admin/devices/x/y/z"), 404), "not_found");
}

TEST(AdminAuth, NeedsTheBearerTokenExactly) {
  HttpRequest r;
  r.path = "/v1/admin/tokens";
  EXPECT_TRUE(IsAdminPath(r.path));
  EXPECT_FALSE(IsAdminPath("/v1/administrator"));
  EXPECT_FALSE(IsAdminPath("/v1/enroll"));
  auto missing = CheckAdminAuth(r, "s3cret-token-of-enough-length");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(json::parse(missing->body)["error"], "unauthenticated");
  r.authorization = "Bearer wrong";
  EXPECT_TRUE(CheckAdminAuth(r, "s3cret-token-of-enough-length"));
  r.authorization = "Basic s3cret-token-of-enough-length";
  EXPECT_TRUE(CheckAdminAuth(r, "s3cret-token-of-enough-length"));
  r.authorization = "Bearer s3cret-token-of-enough-length";
  EXPECT_FALSE(CheckAdminAuth(r, "s3cret-token-of-enough-length"));
  EXPECT_TRUE(CheckAdminAuth(r, ""));  // no token configured: nobody gets in
}

TEST_F(ApiTest, TokenCreateGivesTheJoinCommand) {
  json t = CallJson("POST", "/v1/admin/tokens",
                    R"({"ttlSeconds": 600, "uses": 2, "labels": {"role": "store"}})", 201);
  const std::string token = t["token"];
  EXPECT_EQ(token.size(), 6u + 1 + 16);
  EXPECT_EQ(token[6], '.');
  EXPECT_EQ(t["caHash"], *crypto::SpkiSha256(ca_pem_));
  EXPECT_EQ(t["joinCommand"], "outpost-agent join --hub https://hub.test:8443 --token " + token +
                                  " --ca-hash " + t["caHash"].get<std::string>());
  EXPECT_EQ(t["expiresAt"], FormatTime(now_ + 600'000));
  EXPECT_EQ(t["usesLeft"], 2);
  json list = CallJson("GET", "/v1/admin/tokens", "", 200);
  ASSERT_EQ(list["tokens"].size(), 1u);
  EXPECT_EQ(list["tokens"][0]["labels"]["role"], "store");
  EXPECT_EQ(list["tokens"][0]["state"], "active");
  EXPECT_FALSE(list["tokens"][0].contains("token"));  // the secret is shown once
}

TEST_F(ApiTest, TokenCreateValidatesItsBody) {
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/tokens", "{not json"), 400), "bad_request");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/tokens", R"({"uses": 0})"), 400), "invalid_argument");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/tokens", R"({"ttlSeconds": -5})"), 400),
            "invalid_argument");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/tokens", R"({"usage": 3})"), 400),
            "invalid_argument");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/tokens", R"({"labels": {"bad key!": "x"}})"), 400),
            "invalid_argument");
  EXPECT_EQ(ErrorCode(Call("DELETE", "/v1/admin/tokens/zzzzzz"), 404), "not_found");
}

TEST_F(ApiTest, EnrollIssuesACertificateNamedByTheHub) {
  std::string token = CreateToken(1, 3600, {{"role", "store"}});
  Enrolled e = Enroll(token, "front-door");
  ASSERT_EQ(e.response.status, 200) << e.response.body;
  EXPECT_EQ(e.body.device_id(), "front-door");
  EXPECT_EQ(e.body.ca_pem(), ca_pem_);
  EXPECT_EQ(e.body.broker_url(), "ssl://hub.test:8883");
  EXPECT_EQ(e.body.hub_url(), "https://hub.test:8443");
  EXPECT_EQ(e.body.labels().at("role"), "store");
  EXPECT_TRUE(
      crypto::VerifyChain(e.body.certificate_pem(), ca_pem_,
                          {.expected_cn = "front-door", .usage = crypto::CertUsage::kClient})
          .ok());
  auto info = crypto::ParseCertificate(e.body.certificate_pem());
  ASSERT_TRUE(info.ok());
  auto key = crypto::PrivateKey::FromPem(e.key_pem);
  EXPECT_EQ(info->public_key_pem, *key->PublicKeyPem());
  // The device exists, with its certificate recorded and its first document
  // handed to the publisher.
  auto d = registry_->GetDevice("front-door");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->cert_serial, info->serial_hex);
  EXPECT_EQ(d->facts.arch(), "arm64");
  ASSERT_EQ(sink_.published.size(), 1u);
  EXPECT_EQ(sink_.published[0].device_id, "front-door");
  EXPECT_EQ(sink_.published[0].generation, 1u);
  // Listed by the admin API with the contract's keys.
  json got = CallJson("GET", "/v1/admin/devices/front-door", "", 200);
  for (const char* key_name : {"id", "labels", "online", "lastSeen", "desiredGeneration",
                               "observedGeneration", "workloads"}) {
    EXPECT_TRUE(got.contains(key_name)) << key_name;
  }
  EXPECT_EQ(got["labels"]["role"], "store");
  json list = CallJson("GET", "/v1/admin/devices", "", 200);
  ASSERT_EQ(list["devices"].size(), 1u);
}

TEST_F(ApiTest, EnrollTokenErrors) {
  EXPECT_EQ(ErrorCode(Enroll("abcdef.0123456789abcdef").response, 401), "invalid_token");
  EXPECT_EQ(ErrorCode(Enroll("garbage").response, 401), "invalid_token");
  EXPECT_EQ(ErrorCode(Enroll("").response, 401), "invalid_token");

  std::string once = CreateToken(1);
  ASSERT_EQ(Enroll(once).response.status, 200);
  EXPECT_EQ(ErrorCode(Enroll(once).response, 403), "token_used_up");

  std::string short_lived = CreateToken(5, 1);
  now_ += 2000;
  EXPECT_EQ(ErrorCode(Enroll(short_lived).response, 401), "token_expired");

  std::string revoked = CreateToken(5);
  ASSERT_EQ(Call("DELETE", "/v1/admin/tokens/" + revoked.substr(0, 6)).status, 200);
  EXPECT_EQ(ErrorCode(Enroll(revoked).response, 401), "token_revoked");
}

TEST_F(ApiTest, EnrollRefusesBadRequestsWithoutConsumingTheToken) {
  std::string token = CreateToken(1);
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/enroll", "\xff\xff\xff"), 400), "bad_request");
  outpost::v1::EnrollRequest req;
  req.set_token(token);
  req.set_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/enroll", req.SerializeAsString()), 400), "bad_csr");
  req.clear_csr_pem();
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/enroll", req.SerializeAsString()), 400), "bad_csr");
  // Reserved identities and names that disagree with the CSR.
  EXPECT_EQ(ErrorCode(Enroll(token, "", "outpost-hub").response, 403), "identity_refused");
  EXPECT_EQ(ErrorCode(Enroll(token, "", "outpost-signer").response, 403), "identity_refused");
  EXPECT_EQ(ErrorCode(Enroll(token, "cam-1", "cam-2").response, 403), "identity_refused");
  EXPECT_EQ(ErrorCode(Enroll(token, "", "Not_A_Valid_Id").response, 403), "identity_refused");
  // The token still has its one use.
  Enrolled ok = Enroll(token, "", "cam-1");
  ASSERT_EQ(ok.response.status, 200) << ok.response.body;
  EXPECT_EQ(ok.body.device_id(), "cam-1");
}

TEST_F(ApiTest, ACsrCannotClaimAnExistingDevice) {
  ASSERT_EQ(Enroll(CreateToken(), "cam-1").response.status, 200);
  std::string token = CreateToken();
  EXPECT_EQ(ErrorCode(Enroll(token, "", "cam-1").response, 403), "identity_refused");
  EXPECT_EQ(ErrorCode(Enroll(token, "cam-1", "cam-1").response, 403), "identity_refused");
  // The refused attempts consumed nothing: a fresh name gets in.
  Enrolled e = Enroll(token, "cam-2");
  ASSERT_EQ(e.response.status, 200);
  EXPECT_EQ(e.body.device_id(), "cam-2");
}

TEST_F(ApiTest, RenewNeedsAValidUnrevokedDeviceCertificate) {
  Enrolled e = Enroll(CreateToken(), "cam-1");
  ASSERT_EQ(e.response.status, 200);
  auto key = crypto::PrivateKey::Generate();
  outpost::v1::RenewRequest req;
  req.set_csr_pem(*crypto::CreateCsr(*key, "cam-1"));
  const std::string body = req.SerializeAsString();

  EXPECT_EQ(ErrorCode(Call("POST", "/v1/renew", body), 401), "certificate_required");
  HttpResponse renewed = Call("POST", "/v1/renew", body, e.body.certificate_pem());
  ASSERT_EQ(renewed.status, 200) << renewed.body;
  outpost::v1::RenewResponse resp;
  ASSERT_TRUE(resp.ParseFromString(renewed.body));
  EXPECT_TRUE(crypto::VerifyChain(resp.certificate_pem(), ca_pem_, {.expected_cn = "cam-1"}).ok());
  EXPECT_EQ(crypto::ParseCertificate(resp.certificate_pem())->public_key_pem, *key->PublicKeyPem());

  // A CSR for another name is refused.
  outpost::v1::RenewRequest other;
  other.set_csr_pem(*crypto::CreateCsr(*key, "cam-2"));
  EXPECT_EQ(
      ErrorCode(Call("POST", "/v1/renew", other.SerializeAsString(), e.body.certificate_pem()),
                403),
      "identity_refused");

  // A certificate from another CA is refused.
  auto foreign_key = crypto::PrivateKey::Generate();
  std::string foreign_ca = *crypto::CreateSelfSignedCa(*foreign_key, "Other CA", 30);
  crypto::CertSpec spec;
  spec.common_name = "cam-1";
  std::string foreign =
      *crypto::IssueCertificate(*key->PublicKeyPem(), spec, *foreign_key, foreign_ca);
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/renew", body, foreign), 401), "invalid_certificate");

  // Expired.
  now_ += 200LL * 24 * 3600 * 1000;
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/renew", body, e.body.certificate_pem()), 401),
            "certificate_expired");
  now_ -= 200LL * 24 * 3600 * 1000;

  // Revoked.
  json revoked = CallJson("POST", "/v1/admin/devices/cam-1/revoke", "", 200);
  EXPECT_EQ(revoked["revoked"], true);
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/renew", body, e.body.certificate_pem()), 403),
            "device_revoked");
}

TEST_F(ApiTest, RevokeWritesTheCrlAndClearsTheDevice) {
  Enrolled e = Enroll(CreateToken(), "cam-1");
  ASSERT_EQ(e.response.status, 200);
  std::string serial = crypto::ParseCertificate(e.body.certificate_pem())->serial_hex;
  json r = CallJson("POST", "/v1/admin/devices/cam-1/revoke", "", 200);
  EXPECT_EQ(r["crl"]["brokerReloaded"], true);
  EXPECT_EQ(crl_.last, std::vector<std::string>{serial});
  EXPECT_EQ(sink_.cleared, std::vector<std::string>{"cam-1"});
  EXPECT_EQ(CallJson("GET", "/v1/admin/devices/cam-1", "", 200)["revoked"], true);
  // Labels of a revoked device do not change.
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/devices/cam-1/labels", R"({"edits": ["a=b"]})"), 409),
            "device_revoked");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/devices/nope/revoke"), 404), "not_found");

  // Deleting keeps its serials in the CRL.
  json d = CallJson("DELETE", "/v1/admin/devices/cam-1", "", 200);
  EXPECT_EQ(d["deleted"], true);
  EXPECT_EQ(crl_.last, std::vector<std::string>{serial});
  EXPECT_EQ(ErrorCode(Call("GET", "/v1/admin/devices/cam-1"), 404), "not_found");
}

TEST_F(ApiTest, ApplyLabelsAndRollout) {
  ASSERT_EQ(Enroll(CreateToken(1, 3600, {{"role", "store"}}), "a").response.status, 200);
  ASSERT_EQ(Enroll(CreateToken(1, 3600, {{"role", "store"}}), "b").response.status, 200);
  ASSERT_EQ(Enroll(CreateToken(1, 3600, {{"role", "lab"}}), "c").response.status, 200);
  sink_.published.clear();

  json applied = CallJson("POST", "/v1/admin/apps", kManifest, 200);
  ASSERT_EQ(applied["applications"].size(), 1u);
  EXPECT_EQ(applied["applications"][0]["name"], "detector");
  EXPECT_EQ(applied["applications"][0]["action"], "created");
  EXPECT_EQ(applied["applications"][0]["devicesChanged"], 2);
  EXPECT_EQ(sink_.published.size(), 2u);

  json again = CallJson("POST", "/v1/admin/apps", kManifest, 200);
  EXPECT_EQ(again["applications"][0]["action"], "unchanged");
  EXPECT_EQ(again["applications"][0]["devicesChanged"], 0);
  EXPECT_EQ(sink_.published.size(), 2u);

  // Two changed apps in one manifest: counted per application.
  std::string both = std::string(kManifest) + "---\n" + kSecondApp;
  size_t pos = both.find("/bin/sleep");
  both.replace(pos, 10, "/bin/sleepy");
  ASSERT_TRUE(CallJson("POST", "/v1/admin/devices/c/labels", R"({"edits": ["region=south"]})", 200)
                  .is_object());
  json two = CallJson("POST", "/v1/admin/apps", both, 200);
  ASSERT_EQ(two["applications"].size(), 2u);
  EXPECT_EQ(two["applications"][0]["action"], "configured");
  EXPECT_EQ(two["applications"][0]["devicesChanged"], 2);  // a, b
  EXPECT_EQ(two["applications"][1]["action"], "created");
  EXPECT_EQ(two["applications"][1]["devicesChanged"], 1);  // c
  EXPECT_EQ(two["devicesChanged"], 3);

  // Labels re-target a device.
  json labeled =
      CallJson("POST", "/v1/admin/devices/c/labels", R"({"edits": ["role=store"]})", 200);
  EXPECT_EQ(labeled["desiredChanged"], true);
  EXPECT_EQ(labeled["labels"]["role"], "store");
  EXPECT_EQ(
      ErrorCode(Call("POST", "/v1/admin/devices/c/labels", R"({"edits": ["bad key!=x"]})"), 400),
      "invalid_argument");
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/devices/c/labels", R"({})"), 400),
            "invalid_argument");

  json rollout = CallJson("GET", "/v1/admin/apps/detector/rollout", "", 200);
  EXPECT_EQ(rollout["matched"], 3);
  EXPECT_EQ(rollout["updated"], 0);
  EXPECT_EQ(rollout["done"], false);
  EXPECT_EQ(rollout["pending"].size(), 3u);

  json apps = CallJson("GET", "/v1/admin/apps", "", 200);
  ASSERT_EQ(apps["applications"].size(), 2u);
  json app = CallJson("GET", "/v1/admin/apps/detector", "", 200);
  EXPECT_EQ(app["manifest"]["kind"], "EdgeApplication");
  EXPECT_EQ(app["revision"], 2);

  json deleted = CallJson("DELETE", "/v1/admin/apps/counter", "", 200);
  EXPECT_EQ(deleted["devicesChanged"], 1);
  EXPECT_EQ(ErrorCode(Call("DELETE", "/v1/admin/apps/counter"), 404), "not_found");
  EXPECT_EQ(ErrorCode(Call("GET", "/v1/admin/apps/counter/rollout"), 404), "not_found");
}

TEST_F(ApiTest, BadManifestsNameTheProblem) {
  HttpResponse r = Call("POST", "/v1/admin/apps", "apiVersion: outpost.dev/v1alpha1\nkind: Nope\n");
  EXPECT_EQ(ErrorCode(r, 400), "invalid_manifest");
  EXPECT_NE(json::parse(r.body)["message"].get<std::string>().find("document 1"),
            std::string::npos);
  EXPECT_EQ(ErrorCode(Call("POST", "/v1/admin/apps", ""), 400), "invalid_manifest");
}

TEST(HttpTypes, TargetsLimitsAndErrors) {
  std::string path;
  std::map<std::string, std::string> query;
  ASSERT_TRUE(ParseTarget("/v1/admin/devices/a%2Db?x=1&y=two+words&z", &path, &query));
  EXPECT_EQ(path, "/v1/admin/devices/a-b");
  EXPECT_EQ(query["x"], "1");
  EXPECT_EQ(query["y"], "two words");
  EXPECT_TRUE(query.contains("z"));
  EXPECT_FALSE(ParseTarget("no-slash", &path, &query));
  EXPECT_FALSE(ParseTarget("/bad%zz", &path, &query));
  EXPECT_FALSE(ParseTarget("/nul%00", &path, &query));
  EXPECT_FALSE(ParseTarget("/trunc%4", &path, &query));

  EXPECT_EQ(BodyLimitFor("POST", "/v1/admin/apps"), kMaxManifestBodyBytes);
  EXPECT_EQ(BodyLimitFor("POST", "/v1/enroll"), kMaxBodyBytes);
  EXPECT_EQ(BodyLimitFor("POST", "/v1/admin/tokens"), kMaxBodyBytes);

  HttpResponse e = JsonError(413, "too_large", "The body is too large.");
  EXPECT_EQ(e.status, 413);
  json j = json::parse(e.body);
  EXPECT_EQ(j, (json{{"error", "too_large"}, {"message", "The body is too large."}}));

  EXPECT_EQ(ErrorResponse(Error(Errc::kNotFound, "x")).status, 404);
  EXPECT_EQ(ErrorResponse(Error(Errc::kInvalidArgument, "x")).status, 400);
  EXPECT_EQ(ErrorResponse(Error(Errc::kConflict, "x")).status, 409);
  EXPECT_EQ(ErrorResponse(Error(Errc::kUnavailable, "x")).status, 503);
  EXPECT_EQ(FormatTime(0), "");
  EXPECT_EQ(FormatTime(1'700'000'000'123), "2023-11-14T22:13:20Z");
}

}  // namespace
}  // namespace outpost::hub::server
