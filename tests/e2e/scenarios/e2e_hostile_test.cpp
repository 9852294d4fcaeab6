// End-to-end: hostile inputs (issue 5, item 9). A well-behaved agent runs
// beside an enrolled "hostile" device whose own certificate is used, with
// mosquitto_pub, to publish garbage on its own topics (and to try other
// devices' topics); tokens are expired, reused and forged; CSRs ask for
// identities they may not have; manifests try path traversal, unknown fields
// and bad patch paths; bodies are oversized. Every input is refused with a
// clear answer, nothing crashes, and the well-behaved device never notices.
#include <signal.h>

#include <gtest/gtest.h>

#include <random>

#include "outpost.pb.h"
#include "shared/crypto/crypto.hpp"
#include "tests/e2e/fixture/e2e_fixture.hpp"

namespace outpost::e2e {
namespace {

using outpost::testing::RunCommand;

constexpr const char* kMain = "shop.main";
constexpr const char* kVictim = "shop.victim";

std::string RandomBytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng() & 0xff);
  return s;
}

class E2eHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fleet_.hub().Start());
    AgentNode& good = fleet_.AddAgent("good", AgentOptions(Labels{{"role", "shop"}}));
    ASSERT_TRUE(good.Join());
    good.Start();
    // The hostile device is enrolled like any other; its daemon never runs:
    // the test speaks for it with its key and certificate.
    AgentNode& bad = fleet_.AddAgent("hostile", AgentOptions(Labels{{"role", "shop"}}));
    ASSERT_TRUE(bad.Join());
    ASSERT_TRUE(fleet_.hub().Apply(Manifest("shop", {{"role", "shop"}},
                                            {fleet_.Workload("main"), fleet_.Workload("victim")})));
    gen_ = fleet_.hub().DesiredGeneration("good");
    ASSERT_TRUE(WaitFor(
        [&] {
          return good.Converged(gen_, {kMain, kVictim});
        },
        seconds(60), milliseconds(100)))
        << fleet_.Logs();
    main_pid_ = good.WorkloadPid(kMain);
    ASSERT_TRUE(WaitFor([&] { return good.Status().value("outboxDepth", -1) == 0; }));
    good_before_ = fleet_.hub().Device("good");
    good_events_before_ = fleet_.hub().Events("good").count;
  }

  AgentNode& good() { return fleet_.agent(0); }
  AgentNode& bad() { return fleet_.agent(1); }

  // mosquitto_pub as the hostile device; the exit code.
  int Publish(const std::string& topic, const std::string& payload) {
    std::string file = fleet_.root() + "/payload-" + std::to_string(++payloads_);
    WriteText(file, payload);
    std::vector<std::string> argv = {"mosquitto_pub",
                                     "-h",
                                     "localhost",
                                     "-p",
                                     std::to_string(fleet_.hub().broker_port()),
                                     "--cafile",
                                     fleet_.hub().ca_file(),
                                     "--cert",
                                     bad().state_dir() + "/device.crt",
                                     "--key",
                                     bad().state_dir() + "/device.key",
                                     "-q",
                                     "1",
                                     "-t",
                                     topic};
    if (payload.empty()) {
      argv.push_back("-n");
    } else {
      argv.push_back("-f");
      argv.push_back(file);
    }
    std::string out;
    return RunCommand(argv, &out, {}, seconds(30));
  }

  std::uint64_t Dropped(const std::string& reason) {
    json h = fleet_.hub().Health();
    if (!h.is_object()) return 0;
    return h["ingest"]["dropped"].value(reason, std::uint64_t{0});
  }

  // The well-behaved device is exactly as it was: same generation, same
  // workload processes, its hub record unchanged but for its own traffic.
  void ExpectGoodUnaffected() {
    EXPECT_TRUE(fleet_.hub().ServeRunning()) << fleet_.hub().Logs();
    EXPECT_TRUE(fleet_.hub().BrokerRunning());
    EXPECT_TRUE(good().Converged(gen_, {kMain, kVictim})) << good().Logs();
    EXPECT_EQ(good().WorkloadPid(kMain), main_pid_);
    json now = fleet_.hub().Device("good");
    for (const char* key : {"desiredGeneration", "observedGeneration", "labels", "online"})
      EXPECT_EQ(now[key], good_before_[key]) << key;
    json s = good().Status();
    EXPECT_EQ(s.value("rejectedDocuments", -1), 0);
  }

  Fleet fleet_{"e2e-hostile"};
  std::uint64_t gen_ = 0;
  pid_t main_pid_ = 0;
  json good_before_;
  std::uint64_t good_events_before_ = 0;
  int payloads_ = 0;
};

// Garbage on a device's own topics, and attempts on another device's topics.
TEST_F(E2eHostile, GarbageOnADevicesOwnTopicsIsDroppedAndNobodyElseNotices) {
  std::mt19937_64 rng(std::random_device{}());
  const std::string base = "outpost/v1/devices/hostile/";
  const auto unparseable0 = Dropped("unparseable");
  const auto too_large0 = Dropped("tooLarge");
  const auto mismatch0 = Dropped("idMismatch");
  const auto many0 = Dropped("tooManyEvents");

  // Random bytes. (Byte strings that happen to parse as a protobuf are
  // possible but are then refused for their device_id.)
  for (int i = 0; i < 20; ++i) {
    for (const char* leaf : {"reported", "events"})
      ASSERT_EQ(Publish(base + leaf, "\xff\xff" + RandomBytes(rng, 1 + rng() % 2000)), 0);
  }
  // Truncated protobufs: a real report and a real batch cut mid-field.
  outpost::v1::ReportedState report;
  report.set_device_id("hostile");
  report.set_report_seq(1);
  report.set_observed_generation(1);
  auto* w = report.add_workloads();
  w->set_name("shop.main");
  w->set_message(std::string(300, 'm'));
  std::string rbytes = report.SerializeAsString();
  outpost::v1::EventBatch batch;
  batch.set_device_id("hostile");
  for (int i = 1; i <= 5; ++i) {
    auto* e = batch.add_events();
    e->set_seq(static_cast<std::uint64_t>(i));
    e->set_type(outpost::v1::EVENT_TYPE_WORKLOAD_STARTED);
    e->set_message(std::string(100, 'e'));
  }
  std::string bbytes = batch.SerializeAsString();
  ASSERT_EQ(Publish(base + "reported", rbytes.substr(0, rbytes.size() - 7)), 0);
  ASSERT_EQ(Publish(base + "events", bbytes.substr(0, bbytes.size() / 2 + 1)), 0);
  // Oversized: over the protocol's limits, and over the broker's packet limit.
  ASSERT_EQ(Publish(base + "reported", std::string(70 * 1024, '\x0a')), 0);
  ASSERT_EQ(Publish(base + "events", std::string(300 * 1024, '\x0a')), 0);
  ASSERT_EQ(Publish(base + "presence", std::string(2048, '\x08')), 0);
  EXPECT_NE(Publish(base + "events", std::string(2 << 20, 'x')), 0);  // the broker refuses it
  // Well-formed but lying: another device's id, too many events.
  outpost::v1::EventBatch lie;
  lie.set_device_id("good");
  lie.add_events()->set_seq(1000);
  ASSERT_EQ(Publish(base + "events", lie.SerializeAsString()), 0);
  outpost::v1::EventBatch flood;
  flood.set_device_id("hostile");
  for (int i = 1; i <= 501; ++i)
    flood.add_events()->set_seq(static_cast<std::uint64_t>(i));
  ASSERT_EQ(Publish(base + "events", flood.SerializeAsString()), 0);
  // Another device's topics, and the hub's: the broker's ACL drops these.
  outpost::v1::ReportedState fake_good;
  fake_good.set_device_id("good");
  fake_good.set_report_seq(1u << 30);
  fake_good.set_observed_generation(999);
  Publish("outpost/v1/devices/good/reported", fake_good.SerializeAsString());
  outpost::v1::SignedDesiredState forged;
  forged.set_document("not a document");
  forged.set_signature("not a signature");
  Publish("outpost/v1/devices/good/desired", forged.SerializeAsString());
  Publish(base + "desired", forged.SerializeAsString());
  Publish("outpost/v1/devices/good/ack", "\x08\x01");

  // The hub counted each refusal by reason.
  EXPECT_TRUE(WaitFor([&] { return Dropped("unparseable") >= unparseable0 + 20; }, seconds(30),
                      milliseconds(200)))
      << fleet_.hub().Health().dump();
  EXPECT_TRUE(WaitFor([&] { return Dropped("tooLarge") >= too_large0 + 3; }, seconds(30),
                      milliseconds(200)));
  EXPECT_TRUE(WaitFor([&] { return Dropped("idMismatch") >= mismatch0 + 1; }, seconds(30),
                      milliseconds(200)));
  EXPECT_TRUE(WaitFor([&] { return Dropped("tooManyEvents") >= many0 + 1; }, seconds(30),
                      milliseconds(200)));

  // The hostile device can still speak properly afterwards: nothing stuck.
  outpost::v1::ReportedState honest;
  honest.set_device_id("hostile");
  honest.set_report_seq(7);
  honest.set_observed_generation(1);
  honest.set_desired_generation(1);
  ASSERT_EQ(Publish(base + "reported", honest.SerializeAsString()), 0);
  EXPECT_TRUE(WaitFor([&] { return fleet_.hub().Device("hostile")["observedGeneration"] == 1; },
                      seconds(30), milliseconds(200)));

  // Nobody else noticed; the good device's own traffic still flows.
  ExpectGoodUnaffected();
  EXPECT_EQ(fleet_.hub().Events("good").count, good_events_before_);
  EXPECT_NE(fleet_.hub().Device("good")["observedGeneration"], 999);
  const pid_t victim = good().WorkloadPid(kVictim);
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  EXPECT_TRUE(WaitFor(
      [&] {
        HubEvents ev = fleet_.hub().Events("good");
        return ev.count > good_events_before_ && ev.Contiguous() &&
               good().Status().value("outboxDepth", -1) == 0;
      },
      seconds(30), milliseconds(200)))
      << good().Logs();
}

// Tokens, CSRs, manifests and bodies that the HTTPS API must refuse.
TEST_F(E2eHostile, BadTokensCsrsManifestsAndBodiesAreRefusedClearly) {
  auto join_fails_with = [&](const std::string& state, const std::string& token,
                             const std::string& code) {
    AgentNode probe(fleet_.root(), state, &fleet_.hub(), AgentOptions());
    std::string out;
    json t = fleet_.hub().CreateToken(1);  // for the CA hash
    EXPECT_FALSE(probe.JoinWith(token, t.value("caHash", ""), &out));
    EXPECT_NE(out.find("(" + code + ")"), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line: " << out;
    struct stat st {};
    EXPECT_NE(::stat((fleet_.root() + "/" + state + "/state/agent.db").c_str(), &st), 0)
        << "a failed join left agent.db";
  };
  // Expired: wait (polling the hub's view) until the token is past its TTL.
  json expiring = fleet_.hub().CreateToken(1, {}, "1s");
  const std::string expiring_id = expiring.value("token", "").substr(0, 6);
  ASSERT_TRUE(WaitFor(
      [&] {
        json list = fleet_.hub().CtlJson({"token", "list"});
        if (!list.is_array()) return false;
        for (const auto& t : list)
          if (t.value("id", "") == expiring_id) return t.value("state", "") == "expired";
        return false;
      },
      seconds(30), milliseconds(200)));
  join_fails_with("t-expired", expiring["token"], "token_expired");
  // Reused: a one-use token works once.
  json once = fleet_.hub().CreateToken(1);
  AgentNode first(fleet_.root(), "t-first", &fleet_.hub(), AgentOptions());
  ASSERT_TRUE(first.JoinWith(once["token"], once["caHash"]));
  join_fails_with("t-reused", once["token"], "token_used_up");
  // Forged: a real id with a made-up secret; a made-up token.
  json real = fleet_.hub().CreateToken(5);
  const std::string real_token = real["token"];
  join_fails_with("t-forged", real_token.substr(0, 7) + std::string(16, 'a'), "invalid_token");
  join_fails_with("t-garbage", "zzzzzz.0123456789abcdef", "invalid_token");

  // CSRs asking for identities they may not have; the token is not touched.
  auto enroll = [&](const std::string& cn, const std::string& name) {
    auto key = crypto::PrivateKey::Generate();
    EXPECT_TRUE(key.ok());
    outpost::v1::EnrollRequest req;
    req.set_token(real_token);
    req.set_name(name);
    req.set_csr_pem(*crypto::CreateCsr(*key, cn));
    return fleet_.hub().Http("POST", "/v1/enroll", req.SerializeAsString(),
                             "application/x-protobuf", false);
  };
  for (const auto& [cn, name] : std::vector<std::pair<std::string, std::string>>{
           {"good", "good"},                // another device's identity
           {"good", "newcomer"},            // CN and name disagree
           {"outpost-hub", "outpost-hub"},  // the hub's identity
           {"outpost-signer", ""}}) {       // the signer's
    auto r = enroll(cn, name);
    EXPECT_EQ(r.status, 403) << cn << ": " << r.body << r.error;
    EXPECT_EQ(json::parse(r.body, nullptr, false).value("error", ""), "identity_refused") << r.body;
  }
  json tokens = fleet_.hub().CtlJson({"token", "list"});
  int uses_left = -1;
  for (const auto& t : tokens) {
    if (t.value("id", "") == real_token.substr(0, 6)) uses_left = t.value("usesLeft", -1);
  }
  EXPECT_EQ(uses_left, 5) << "a refused CSR consumed a use of the token";
  // Not an EnrollRequest, the wrong media type.
  auto garbage = fleet_.hub().Http("POST", "/v1/enroll", "\xff\xff\xff garbage",
                                   "application/x-protobuf", false);
  EXPECT_EQ(garbage.status, 400) << garbage.body;
  EXPECT_EQ(json::parse(garbage.body, nullptr, false).value("error", ""), "bad_request");
  auto media = fleet_.hub().Http("POST", "/v1/enroll", "{}", "application/json", false);
  EXPECT_EQ(media.status, 415) << media.body;

  // Manifests: each refused with one clear line; nothing changes.
  const std::string head =
      "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata:\n  name: ";
  const std::string spec =
      "\nspec:\n  selector:\n    matchLabels: {role: shop}\n  workloads:\n"
      "    - name: w\n      command: [\"/bin/true\"]\n";
  const std::vector<std::pair<std::string, std::string>> manifests = {
      // yaml-cpp 0.7 loops forever on these (found by fuzz_manifest).
      {"a lone comma", ","},
      {"an anchored comma", "&a ,"},
      {"traversal in the app name", head + "../../etc" + spec},
      {"traversal in a workload name",
       head + "evil\nspec:\n  workloads:\n    - name: ../../x\n      command: [\"/bin/true\"]\n"},
      {"traversal in a device path",
       head + "evil\nspec:\n  workloads:\n    - name: w\n      command: [\"/bin/true\"]\n"
              "      devices: [\"/dev/../etc/shadow\"]\n"},
      {"unknown field", head + "evil" + spec + "      imagePullPolicy: Always\n"},
      {"unknown top-level field", head + "evil" + spec + "  replicas: 3\n"},
      {"patch path out of range",
       head + "evil" + spec +
           "  overrides:\n    - selector: {matchLabels: {role: shop}}\n      patches:\n"
           "        - {op: replace, path: /workloads/7/env/X, value: y}\n"},
      {"patch path outside workloads",
       head + "evil" + spec +
           "  overrides:\n    - selector: {matchLabels: {role: shop}}\n      patches:\n"
           "        - {op: replace, path: /selector/matchLabels/role, value: all}\n"},
      {"patch path with ..",
       head + "evil" + spec +
           "  overrides:\n    - selector: {matchLabels: {role: shop}}\n      patches:\n"
           "        - {op: add, path: /workloads/0/../../x, value: y}\n"},
  };
  for (const auto& [what, text] : manifests) {
    std::string file = fleet_.root() + "/bad-manifest.yaml";
    WriteText(file, text);
    std::string out;
    EXPECT_EQ(fleet_.hub().Ctl({"apply", "-f", file}, &out), 1) << what << ": " << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << what << ": " << out;
    EXPECT_NE(out.find("(invalid_manifest)"), std::string::npos) << what << ": " << out;
  }
  json apps = fleet_.hub().CtlJson({"get", "apps"});
  ASSERT_TRUE(apps.is_array());
  EXPECT_EQ(apps.size(), 1u) << apps.dump();

  // Oversized bodies: 413 before the body is read, and the client still
  // gets the answer.
  auto big_enroll = fleet_.hub().Http("POST", "/v1/enroll", std::string(100 * 1024, 'x'),
                                      "application/x-protobuf", false);
  EXPECT_EQ(big_enroll.status, 413) << big_enroll.error;
  auto big_manifest = fleet_.hub().Http("POST", "/v1/admin/apps", std::string(2 << 20, '#'),
                                        "application/yaml", true);
  EXPECT_EQ(big_manifest.status, 413) << big_manifest.error;
  auto big_token = fleet_.hub().Http(
      "POST", "/v1/admin/tokens", "{\"labels\":{\"a\":\"" + std::string(100 * 1024, 'b') + "\"}}",
      "application/json", true);
  EXPECT_EQ(big_token.status, 413) << big_token.error;
  for (const auto* r : {&big_enroll, &big_manifest, &big_token})
    EXPECT_EQ(json::parse(r->body, nullptr, false).value("error", ""), "too_large");

  ExpectGoodUnaffected();
  EXPECT_EQ(fleet_.hub().Health().value("db", ""), "ok");
}

}  // namespace
}  // namespace outpost::e2e
