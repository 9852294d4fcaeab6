#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hub/apps/apps.hpp"
#include "hub/registry/registry.hpp"
#include "shared/core/result.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::hub::registry {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;

constexpr UnixMs kNow = 1'700'000'000'000;

std::string App(const std::string& name, const std::string& selector,
                const std::string& command = "[/bin/sleep, 100]",
                const std::string& overrides = "") {
  return "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata:\n  name: " + name +
         "\nspec:\n  selector:\n    matchLabels: " + selector +
         "\n  workloads:\n    - name: main\n      command: " + command + "\n      env: {A: '1'}\n" +
         overrides;
}

std::vector<apps::Application> Parse(const std::string& yaml) {
  auto parsed = apps::ParseApplications(yaml);
  EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().message());
  if (!parsed.ok()) return {};
  return std::move(parsed).value();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::set<std::string> Ids(const Mutation& m) {
  std::set<std::string> ids;
  for (const DesiredChange& c : m.desired)
    ids.insert(c.device_id);
  return ids;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "hub.db";
    Reopen();
  }

  void Reopen() {
    registry_.reset();
    auto opened = Registry::Open(path_, Options{.hub_instance = "test-hub"});
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    registry_ = std::move(opened).value();
  }

  std::string NewToken(int uses = 1, Labels labels = {}, milliseconds ttl = hours(1)) {
    auto token = registry_->CreateToken(ttl, uses, labels, kNow);
    EXPECT_TRUE(token.ok()) << token.error().message();
    return token.ok() ? token->token : "";
  }

  // Enrolls a device named `name` with `labels`; returns its id.
  std::string Enroll(const std::string& name, const Labels& labels) {
    EnrollRequest request;
    request.token = NewToken();
    request.requested_name = name;
    request.labels = labels;
    auto enrolled = registry_->EnrollDevice(request, kNow);
    EXPECT_TRUE(enrolled.ok()) << enrolled.error().message();
    return enrolled.ok() ? enrolled->device_id : "";
  }

  std::uint64_t Generation(const std::string& id) {
    auto d = registry_->GetDesired(id);
    EXPECT_TRUE(d.ok());
    return d.ok() ? d->generation : 0;
  }

  v1::DesiredState Document(const std::string& id) {
    v1::DesiredState doc;
    auto d = registry_->GetDesired(id);
    EXPECT_TRUE(d.ok());
    if (d.ok()) {
      EXPECT_TRUE(doc.ParseFromString(d->document));
    }
    return doc;
  }

  std::vector<std::string> WorkloadNames(const std::string& id) {
    std::vector<std::string> names;
    v1::DesiredState doc = Document(id);
    for (const auto& w : doc.workloads())
      names.push_back(w.name());
    return names;
  }

  Mutation Apply(const std::string& yaml, UnixMs now = kNow) {
    auto result = registry_->ApplyApplications(Parse(yaml), now);
    EXPECT_TRUE(result.ok()) << result.error().message();
    return result.ok() ? result->mutation : Mutation{};
  }

  void Report(const std::string& id, std::uint64_t seq, std::uint64_t observed,
              std::uint64_t held) {
    v1::ReportedState report;
    report.set_device_id(id);
    report.set_report_seq(seq);
    report.set_observed_generation(observed);
    report.set_desired_generation(held);
    auto outcome = registry_->RecordReport(id, report, kNow);
    ASSERT_TRUE(outcome.ok()) << outcome.error().message();
  }

  testing::TempDir dir_;
  std::string path_;
  std::unique_ptr<Registry> registry_;
};

// ---------------------------------------------------------------------------
// Tokens

TEST_F(RegistryTest, TokenFormatAndConsumption) {
  auto created = registry_->CreateToken(hours(24), 2, {{"role", "store"}}, kNow);
  ASSERT_TRUE(created.ok()) << created.error().message();
  const std::string& token = created->token;
  ASSERT_EQ(token.size(), 6u + 1 + 16);
  EXPECT_EQ(token[6], '.');
  EXPECT_EQ(token.substr(0, 6), created->info.id);
  EXPECT_EQ(token.substr(7), created->secret);
  for (char c : token) {
    EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.') << token;
  }
  EXPECT_EQ(created->info.expires_ms, kNow + 24 * 3600 * 1000);

  auto labels = registry_->ConsumeToken(token, kNow + 1);
  ASSERT_TRUE(labels.ok()) << labels.error().message();
  EXPECT_EQ(*labels, (Labels{{"role", "store"}}));
  ASSERT_TRUE(registry_->ConsumeToken(token, kNow + 2).ok());
  auto used_up = registry_->ConsumeToken(token, kNow + 3);
  ASSERT_FALSE(used_up.ok());
  EXPECT_EQ(used_up.error().code(), Errc::kConflict);
  EXPECT_EQ(TokenErrorId(used_up.error()), kTokenUsedUp);

  auto list = registry_->ListTokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].uses_total, 2);
  EXPECT_EQ((*list)[0].uses_left, 0);
  EXPECT_EQ((*list)[0].State(kNow), "used-up");
}

TEST_F(RegistryTest, TokenRefusals) {
  std::string token = NewToken(5, {}, milliseconds(1000));
  std::string id = token.substr(0, 6);

  struct Case {
    std::string token;
    Errc code;
    std::string_view error_id;
  };
  std::string wrong_secret = token.substr(0, 7) + std::string(16, 'a');
  if (wrong_secret == token) wrong_secret = token.substr(0, 7) + std::string(16, 'b');
  std::vector<Case> cases = {
      {"", Errc::kUnauthenticated, kInvalidToken},
      {"nodot", Errc::kUnauthenticated, kInvalidToken},
      {id + "." + "short", Errc::kUnauthenticated, kInvalidToken},
      {id + "x." + token.substr(7), Errc::kUnauthenticated, kInvalidToken},
      {"ABCDEF." + token.substr(7), Errc::kUnauthenticated, kInvalidToken},
      {"zzzzzz." + token.substr(7), Errc::kUnauthenticated, kInvalidToken},
      {wrong_secret, Errc::kUnauthenticated, kInvalidToken},
      {token + "a", Errc::kUnauthenticated, kInvalidToken},
  };
  for (const Case& c : cases) {
    auto r = registry_->ConsumeToken(c.token, kNow);
    ASSERT_FALSE(r.ok()) << c.token;
    EXPECT_EQ(r.error().code(), c.code) << c.token;
    EXPECT_EQ(TokenErrorId(r.error()), c.error_id) << c.token;
  }
  // None of those used it up.
  auto list = registry_->ListTokens();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ((*list)[0].uses_left, 5);

  // Expiry: valid until expires_ms, refused from then on.
  ASSERT_TRUE(registry_->ConsumeToken(token, kNow + 999).ok());
  auto expired = registry_->ConsumeToken(token, kNow + 1000);
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code(), Errc::kExpired);
  EXPECT_EQ(TokenErrorId(expired.error()), kTokenExpired);

  // Revocation wins over everything else.
  std::string other = NewToken(1);
  ASSERT_TRUE(registry_->RevokeToken(other.substr(0, 6)).ok());
  auto revoked = registry_->ConsumeToken(other, kNow);
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.error().code(), Errc::kPermissionDenied);
  EXPECT_EQ(TokenErrorId(revoked.error()), kTokenRevoked);
  EXPECT_EQ(registry_->RevokeToken("nosuch").error().code(), Errc::kNotFound);

  // Non-token errors have no token id.
  EXPECT_EQ(TokenErrorId(Error(Errc::kConflict, "database is busy")), "");

  EXPECT_FALSE(registry_->CreateToken(milliseconds(0), 1, {}, kNow).ok());
  EXPECT_FALSE(registry_->CreateToken(hours(1), 0, {}, kNow).ok());
  EXPECT_FALSE(registry_->CreateToken(hours(1), 1, {{"bad key!", "x"}}, kNow).ok());
}

TEST_F(RegistryTest, OnlyTheSecretHashIsStored) {
  auto created = registry_->CreateToken(hours(1), 1, {}, kNow);
  ASSERT_TRUE(created.ok());
  std::string secret = created->secret;
  registry_.reset();  // closes the connection: the WAL is checkpointed into the file
  std::string bytes = ReadAll(path_) + ReadAll(path_ + "-wal");
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.find(secret), std::string::npos);
  EXPECT_NE(bytes.find(created->info.id), std::string::npos);
  Reopen();
  EXPECT_TRUE(registry_->ConsumeToken(created->token, kNow).ok());
}

TEST_F(RegistryTest, TwoConnectionsRaceForTheLastUse) {
  auto second_open = Registry::Open(path_, Options{});
  ASSERT_TRUE(second_open.ok()) << second_open.error().message();
  std::unique_ptr<Registry> second = std::move(second_open).value();
  Registry* racers[2] = {registry_.get(), second.get()};
  constexpr int kRounds = 40;
  for (int round = 0; round < kRounds; ++round) {
    std::string token = NewToken(1);
    std::atomic<int> ready{0};
    Result<Labels> results[2] = {Error(Errc::kInternal, "not run"),
                                 Error(Errc::kInternal, "not run")};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        results[i] = racers[i]->ConsumeToken(token, kNow);
      });
    }
    for (auto& t : threads)
      t.join();
    int wins = (results[0].ok() ? 1 : 0) + (results[1].ok() ? 1 : 0);
    ASSERT_EQ(wins, 1) << "round " << round;
    const Result<Labels>& loser = results[0].ok() ? results[1] : results[0];
    EXPECT_EQ(loser.error().code(), Errc::kConflict) << loser.error().message();
  }
}

TEST_F(RegistryTest, TwoConnectionsRaceToEnrollWithTheLastUse) {
  auto second_open = Registry::Open(path_, Options{});
  ASSERT_TRUE(second_open.ok());
  std::unique_ptr<Registry> second = std::move(second_open).value();
  Registry* racers[2] = {registry_.get(), second.get()};
  for (int round = 0; round < 20; ++round) {
    std::string token = NewToken(1);
    std::atomic<int> ready{0};
    bool ok[2] = {false, false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        EnrollRequest request;
        request.token = token;
        request.requested_name = "racer";
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        ok[i] = racers[i]->EnrollDevice(request, kNow).ok();
      });
    }
    for (auto& t : threads)
      t.join();
    ASSERT_EQ((ok[0] ? 1 : 0) + (ok[1] ? 1 : 0), 1) << "round " << round;
  }
  auto devices = registry_->ListDevices();
  ASSERT_TRUE(devices.ok());
  EXPECT_EQ(devices->size(), 20u);
}

// ---------------------------------------------------------------------------
// Devices

TEST_F(RegistryTest, EnrollmentNamesLabelsAndFirstDocument) {
  EnrollRequest request;
  request.token = NewToken(10, {{"role", "store"}, {"site", "a"}});
  request.requested_name = "My Camera_01";
  request.labels = {{"role", "lab"}, {"rack", "3"}};
  request.facts.set_hostname("cam01");
  request.facts.set_arch("arm64");
  auto enrolled = registry_->EnrollDevice(request, kNow);
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message();
  EXPECT_EQ(enrolled->device_id, "my-camera-01");
  // The token's labels win over the requested ones.
  EXPECT_EQ(enrolled->labels, (Labels{{"role", "store"}, {"site", "a"}, {"rack", "3"}}));
  ASSERT_EQ(enrolled->mutation.desired.size(), 1u);
  const DesiredChange& first = enrolled->mutation.desired[0];
  EXPECT_EQ(first.generation, 1u);
  EXPECT_EQ(first.document.device_id(), "my-camera-01");
  EXPECT_EQ(first.document.workloads_size(), 0);
  EXPECT_EQ(first.document.hub_instance(), "test-hub");
  v1::DesiredState parsed;
  ASSERT_TRUE(parsed.ParseFromString(first.document_bytes));
  EXPECT_EQ(parsed.generation(), 1u);

  auto device = registry_->GetDevice("my-camera-01");
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->facts.hostname(), "cam01");
  EXPECT_EQ(device->desired_generation, 1u);
  EXPECT_FALSE(device->online);

  // Taken: suffixed. Reserved prefix: dropped. Nothing usable: "device".
  auto again = registry_->EnrollDevice(request, kNow);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->device_id.starts_with("my-camera-01-")) << again->device_id;
  EXPECT_EQ(again->device_id.size(), std::string("my-camera-01-").size() + 5);
  EXPECT_TRUE(apps::IsDnsLabel(again->device_id));
  request.requested_name = "outpost-hub";
  auto reserved = registry_->EnrollDevice(request, kNow);
  ASSERT_TRUE(reserved.ok());
  EXPECT_FALSE(reserved->device_id.starts_with("outpost")) << reserved->device_id;
  request.requested_name = "";
  auto unnamed = registry_->EnrollDevice(request, kNow);
  ASSERT_TRUE(unnamed.ok());
  EXPECT_EQ(unnamed->device_id, "device");
  request.requested_name = "../../etc/passwd" + std::string(100, 'x');
  auto long_name = registry_->EnrollDevice(request, kNow);
  ASSERT_TRUE(long_name.ok());
  EXPECT_TRUE(apps::IsDnsLabel(long_name->device_id)) << long_name->device_id;
}

TEST_F(RegistryTest, FailedEnrollmentLeavesNothingBehind) {
  EnrollRequest request;
  request.token = NewToken(1);
  request.requested_name = "x";
  request.labels = {{"bad key!", "v"}};
  auto bad_labels = registry_->EnrollDevice(request, kNow);
  ASSERT_FALSE(bad_labels.ok());
  EXPECT_EQ(bad_labels.error().code(), Errc::kInvalidArgument);
  // The token's use was not consumed, and no device exists.
  request.labels = {};
  ASSERT_TRUE(registry_->EnrollDevice(request, kNow).ok());
  auto used = registry_->EnrollDevice(request, kNow);
  ASSERT_FALSE(used.ok());
  EXPECT_EQ(TokenErrorId(used.error()), kTokenUsedUp);
  request.token = "aaaaaa.bbbbbbbbbbbbbbbbbbbb";
  auto invalid = registry_->EnrollDevice(request, kNow);
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(TokenErrorId(invalid.error()), kInvalidToken);
  auto devices = registry_->ListDevices();
  ASSERT_TRUE(devices.ok());
  EXPECT_EQ(devices->size(), 1u);
}

TEST_F(RegistryTest, RevokeAndDeleteKeepSerialsForTheCrl) {
  std::string a = Enroll("a", {});
  std::string b = Enroll("b", {});
  ASSERT_TRUE(registry_->SetDeviceCertificate(a, "0a1b", kNow + 1000, kNow).ok());
  ASSERT_TRUE(registry_->SetDeviceCertificate(a, "0a1c", kNow + 2000, kNow).ok());  // renewed
  ASSERT_TRUE(registry_->SetDeviceCertificate(b, "0b00", kNow + 1000, kNow).ok());
  EXPECT_EQ(registry_->SetDeviceCertificate("nosuch", "01", 0, kNow).error().code(),
            Errc::kNotFound);
  auto device = registry_->GetDevice(a);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->cert_serial, "0a1c");
  EXPECT_EQ(device->cert_not_after_ms, kNow + 2000);

  auto serials = registry_->RevokeDevice(a, kNow);
  ASSERT_TRUE(serials.ok());
  EXPECT_EQ(*serials, (std::vector<std::string>{"0a1b", "0a1c"}));
  auto revoked = registry_->RevokedSerials();
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(*revoked, (std::vector<std::string>{"0a1b", "0a1c"}));

  // A revoked device's messages are refused.
  v1::ReportedState report;
  report.set_report_seq(1);
  EXPECT_EQ(registry_->RecordReport(a, report, kNow).error().code(), Errc::kPermissionDenied);
  EXPECT_EQ(registry_->RecordEvents(a, v1::EventBatch{}, kNow).error().code(),
            Errc::kPermissionDenied);
  EXPECT_EQ(registry_->SetPresence(a, true, kNow).error().code(), Errc::kPermissionDenied);
  EXPECT_EQ(registry_->Touch(a, kNow).error().code(), Errc::kPermissionDenied);
  EXPECT_EQ(registry_->SetLabels(a, {{"x", "y"}}, kNow).error().code(), Errc::kPermissionDenied);
  ASSERT_TRUE(registry_->GetDevice(a)->revoked);

  auto deleted = registry_->DeleteDevice(b);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, (std::vector<std::string>{"0b00"}));
  EXPECT_EQ(registry_->GetDevice(b).error().code(), Errc::kNotFound);
  EXPECT_EQ(registry_->GetDesired(b).error().code(), Errc::kNotFound);
  revoked = registry_->RevokedSerials();
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(*revoked, (std::vector<std::string>{"0a1b", "0a1c", "0b00"}));
  EXPECT_EQ(registry_->DeleteDevice(b).error().code(), Errc::kNotFound);
  EXPECT_EQ(registry_->RevokeDevice("nosuch", kNow).error().code(), Errc::kNotFound);
}

// ---------------------------------------------------------------------------
// Applications and generations

TEST_F(RegistryTest, GenerationsBumpOnlyForChangedDevices) {
  std::string south = Enroll("south", {{"role", "store"}, {"region", "south"}});
  std::string north = Enroll("north", {{"role", "store"}, {"region", "north"}});
  std::string lab = Enroll("lab", {{"role", "lab"}});
  ASSERT_EQ(Generation(south), 1u);

  // A store app: both store devices, not the lab.
  std::string store_app = App("store-app", "{role: store}");
  Mutation m = Apply(store_app);
  EXPECT_EQ(Ids(m), (std::set<std::string>{north, south}));
  for (const DesiredChange& c : m.desired) {
    EXPECT_EQ(c.generation, 2u);
    ASSERT_EQ(c.document.workloads_size(), 1);
    EXPECT_EQ(c.document.workloads(0).name(), "store-app.main");
    EXPECT_EQ(c.document.workloads(0).app(), "store-app");
  }
  EXPECT_EQ(Generation(lab), 1u);

  // Identical re-apply: nothing.
  auto again = registry_->ApplyApplications(Parse(store_app), kNow);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->applications.size(), 1u);
  EXPECT_EQ(again->applications[0].second, ApplyAction::kUnchanged);
  EXPECT_TRUE(again->mutation.desired.empty());
  EXPECT_EQ(Generation(south), 2u);

  // A lab app touches only the lab device.
  m = Apply(App("lab-app", "{role: lab}"));
  EXPECT_EQ(Ids(m), (std::set<std::string>{lab}));
  EXPECT_EQ(Generation(lab), 2u);

  // Changing app A bumps only A's devices, by exactly one.
  m = Apply(App("store-app", "{role: store}", "[/bin/sleep, 200]"));
  EXPECT_EQ(Ids(m), (std::set<std::string>{north, south}));
  EXPECT_EQ(Generation(south), 3u);
  EXPECT_EQ(Generation(north), 3u);
  EXPECT_EQ(Generation(lab), 2u);
  EXPECT_EQ(Document(south).workloads(0).command(1), "200");

  // An override for the south region: only the south device.
  m = Apply(App("store-app", "{role: store}", "[/bin/sleep, 200]",
                "  overrides:\n    - selector: {matchLabels: {region: south}}\n      patches:\n"
                "        - {op: replace, path: /workloads/0/env/A, value: south}\n"));
  EXPECT_EQ(Ids(m), (std::set<std::string>{south}));
  EXPECT_EQ(Generation(south), 4u);
  EXPECT_EQ(Generation(north), 3u);
  EXPECT_EQ(Document(south).workloads(0).env().at("A"), "south");
  EXPECT_EQ(Document(north).workloads(0).env().at("A"), "1");

  // Several apps in one apply, mixed with unchanged ones.
  auto mixed = registry_->ApplyApplications(
      Parse(App("lab-app", "{role: lab}") + "---\n" + App("all", "{}")), kNow);
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->applications[0].second, ApplyAction::kUnchanged);
  EXPECT_EQ(mixed->applications[1].second, ApplyAction::kCreated);
  EXPECT_EQ(Ids(mixed->mutation), (std::set<std::string>{lab, north, south}));
  EXPECT_EQ(WorkloadNames(lab), (std::vector<std::string>{"all.main", "lab-app.main"}));
  EXPECT_EQ(Generation(lab), 3u);

  // Moving a selector re-renders devices of the old and the new selector.
  m = Apply(App("lab-app", "{region: north}"));
  EXPECT_EQ(Ids(m), (std::set<std::string>{lab, north}));
  EXPECT_EQ(WorkloadNames(lab), (std::vector<std::string>{"all.main"}));
  EXPECT_EQ(WorkloadNames(north),
            (std::vector<std::string>{"all.main", "lab-app.main", "store-app.main"}));

  // The document carries exactly the generation stored.
  for (const std::string& id : {south, north, lab}) {
    auto desired = registry_->GetDesired(id);
    ASSERT_TRUE(desired.ok());
    v1::DesiredState doc;
    ASSERT_TRUE(doc.ParseFromString(desired->document));
    EXPECT_EQ(doc.generation(), desired->generation);
    EXPECT_EQ(doc.device_id(), id);
  }
}

TEST_F(RegistryTest, LabelChangesRetargetOneDevice) {
  std::string a = Enroll("a", {{"role", "store"}});
  std::string b = Enroll("b", {{"role", "lab"}});
  std::string c = Enroll("c", {{"role", "lab"}});
  Apply(App("store-app", "{role: store}") + "---\n" + App("lab-app", "{role: lab}"));
  ASSERT_EQ(Generation(b), 2u);

  auto moved = registry_->SetLabels(b, {{"role", "store"}}, kNow);
  ASSERT_TRUE(moved.ok()) << moved.error().message();
  EXPECT_EQ(Ids(*moved), (std::set<std::string>{b}));
  EXPECT_EQ(WorkloadNames(b), (std::vector<std::string>{"store-app.main"}));
  EXPECT_EQ(Generation(b), 3u);
  EXPECT_EQ(Generation(a), 2u);
  EXPECT_EQ(Generation(c), 2u);

  // A label that no selector cares about changes no document.
  auto cosmetic = registry_->EditLabels(b, std::vector<std::string>{"color=blue"}, kNow);
  ASSERT_TRUE(cosmetic.ok());
  EXPECT_TRUE(cosmetic->desired.empty());
  EXPECT_EQ(registry_->GetDevice(b)->labels, (Labels{{"role", "store"}, {"color", "blue"}}));

  // kubectl-style edits: set and remove.
  auto edited = registry_->EditLabels(b, std::vector<std::string>{"role-", "color=red"}, kNow);
  ASSERT_TRUE(edited.ok());
  EXPECT_EQ(Ids(*edited), (std::set<std::string>{b}));
  EXPECT_EQ(registry_->GetDevice(b)->labels, (Labels{{"color", "red"}}));
  EXPECT_TRUE(WorkloadNames(b).empty());
  EXPECT_EQ(Generation(b), 4u);

  // Bad edits change nothing.
  EXPECT_EQ(registry_->EditLabels(b, std::vector<std::string>{"novalue"}, kNow).error().code(),
            Errc::kInvalidArgument);
  EXPECT_EQ(
      registry_->EditLabels(b, std::vector<std::string>{"a=b", "x=has space"}, kNow).error().code(),
      Errc::kInvalidArgument);
  EXPECT_EQ(registry_->GetDevice(b)->labels, (Labels{{"color", "red"}}));
  EXPECT_EQ(registry_->SetLabels("nosuch", {}, kNow).error().code(), Errc::kNotFound);

  // The new labels are what later applies select on.
  Mutation m = Apply(App("red", "{color: red}"));
  EXPECT_EQ(Ids(m), (std::set<std::string>{b}));
}

TEST_F(RegistryTest, DeleteRemovesWorkloadsWithABump) {
  std::string a = Enroll("a", {{"role", "store"}});
  std::string b = Enroll("b", {{"role", "lab"}});
  Apply(App("store-app", "{role: store}") + "---\n" + App("all", "{}"));
  ASSERT_EQ(Generation(a), 2u);
  ASSERT_EQ(Generation(b), 2u);
  auto deleted = registry_->DeleteApplication("store-app", kNow);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(Ids(*deleted), (std::set<std::string>{a}));
  EXPECT_EQ(WorkloadNames(a), (std::vector<std::string>{"all.main"}));
  EXPECT_EQ(Generation(a), 3u);
  EXPECT_EQ(Generation(b), 2u);

  deleted = registry_->DeleteApplication("all", kNow);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(Ids(*deleted), (std::set<std::string>{a, b}));
  for (const DesiredChange& c : deleted->desired)
    EXPECT_EQ(c.document.workloads_size(), 0);
  EXPECT_EQ(Generation(a), 4u);
  EXPECT_EQ(registry_->DeleteApplication("all", kNow).error().code(), Errc::kNotFound);
  auto list = registry_->ListApplications();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(RegistryTest, ApplicationsPersistAcrossReopen) {
  std::string a = Enroll("a", {{"role", "store"}});
  Apply(App("store-app", "{role: store}"), kNow);
  Apply(App("store-app", "{role: store}", "[/bin/sleep, 5]"), kNow + 10);
  Reopen();
  auto stored = registry_->GetApplication("store-app");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->revision, 2u);
  EXPECT_EQ(stored->created_ms, kNow);
  EXPECT_EQ(stored->updated_ms, kNow + 10);
  EXPECT_EQ(stored->app.base_workloads[0].command(1), "5");
  auto again = registry_->ApplyApplications(
      Parse(App("store-app", "{role: store}", "[/bin/sleep, 5]")), kNow + 20);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->applications[0].second, ApplyAction::kUnchanged);
  EXPECT_EQ(Generation(a), 3u);
  EXPECT_EQ(registry_->GetApplication("nosuch").error().code(), Errc::kNotFound);
  // A device enrolled later gets the stored apps in its first document.
  std::string late = Enroll("late", {{"role", "store"}});
  EXPECT_EQ(Generation(late), 1u);
  EXPECT_EQ(WorkloadNames(late), (std::vector<std::string>{"store-app.main"}));
}

TEST_F(RegistryTest, EnsureGenerationAbove) {
  std::string a = Enroll("a", {{"role", "store"}});
  Apply(App("store-app", "{role: store}"));
  ASSERT_EQ(Generation(a), 2u);
  auto none = registry_->EnsureGenerationAbove(a, 1, kNow);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->desired.empty());
  // The device holds 7 (the hub was restored from an older backup).
  auto bumped = registry_->EnsureGenerationAbove(a, 7, kNow);
  ASSERT_TRUE(bumped.ok());
  ASSERT_EQ(bumped->desired.size(), 1u);
  EXPECT_EQ(bumped->desired[0].generation, 8u);
  EXPECT_EQ(Generation(a), 8u);
  EXPECT_EQ(WorkloadNames(a), (std::vector<std::string>{"store-app.main"}));
  EXPECT_EQ(Document(a).generation(), 8u);
  // Equal to the hub's: also moved past (the device holds a document the hub never signed).
  bumped = registry_->EnsureGenerationAbove(a, 8, kNow);
  ASSERT_TRUE(bumped.ok());
  EXPECT_EQ(Generation(a), 9u);
  // Later changes continue from there.
  Mutation m = Apply(App("store-app", "{role: store}", "[/bin/true]"));
  ASSERT_EQ(m.desired.size(), 1u);
  EXPECT_EQ(m.desired[0].generation, 10u);
}

TEST_F(RegistryTest, SignedAndPublishedBookkeeping) {
  std::string a = Enroll("a", {{"role", "store"}});
  std::string b = Enroll("b", {});
  auto unpublished = registry_->UnpublishedDesired();
  ASSERT_TRUE(unpublished.ok());
  EXPECT_EQ(unpublished->size(), 2u);

  ASSERT_TRUE(registry_->StoreSigned(a, 1, "signed-1").ok());
  ASSERT_TRUE(registry_->MarkPublished(a, 1).ok());
  ASSERT_TRUE(registry_->MarkPublished(b, 1).ok());
  unpublished = registry_->UnpublishedDesired();
  ASSERT_TRUE(unpublished.ok());
  EXPECT_TRUE(unpublished->empty());
  auto desired = registry_->GetDesired(a);
  ASSERT_TRUE(desired.ok());
  EXPECT_EQ(desired->signed_document, "signed-1");
  EXPECT_EQ(desired->signed_generation, 1u);
  EXPECT_EQ(desired->published_generation, 1u);

  Apply(App("store-app", "{role: store}"));
  unpublished = registry_->UnpublishedDesired();
  ASSERT_TRUE(unpublished.ok());
  ASSERT_EQ(unpublished->size(), 1u);
  EXPECT_EQ((*unpublished)[0].device_id, a);
  EXPECT_EQ((*unpublished)[0].generation, 2u);
  EXPECT_EQ((*unpublished)[0].signed_document, "");  // the old signature is not for gen 2

  // A signature for a generation the device moved past is ignored.
  ASSERT_TRUE(registry_->StoreSigned(a, 1, "late").ok());
  EXPECT_EQ(registry_->GetDesired(a)->signed_document, "");
  ASSERT_TRUE(registry_->StoreSigned(a, 2, "signed-2").ok());
  // Publishing never goes backwards nor past the current generation.
  ASSERT_TRUE(registry_->MarkPublished(a, 5).ok());
  EXPECT_EQ(registry_->GetDesired(a)->published_generation, 1u);
  ASSERT_TRUE(registry_->MarkPublished(a, 2).ok());
  ASSERT_TRUE(registry_->MarkPublished(a, 1).ok());
  EXPECT_EQ(registry_->GetDesired(a)->published_generation, 2u);
  EXPECT_EQ(registry_->StoreSigned("nosuch", 1, "x").error().code(), Errc::kNotFound);

  auto all = registry_->AllDesired();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].device_id, a);
  EXPECT_EQ((*all)[0].signed_document, "signed-2");
}

// ---------------------------------------------------------------------------
// Reports, presence, events

TEST_F(RegistryTest, ReportsAreOrderedBySeq) {
  std::string a = Enroll("a", {});
  v1::ReportedState report;
  report.set_device_id(a);
  report.set_report_seq(5);
  report.set_observed_generation(1);
  report.set_desired_generation(1);
  report.set_outbox_depth(3);
  auto* w = report.add_workloads();
  w->set_name("x.y");
  w->set_state(v1::WORKLOAD_STATE_RUNNING);
  report.mutable_facts()->set_hostname("box");
  auto stored = registry_->RecordReport(a, report, kNow + 5);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->stored);
  EXPECT_FALSE(stored->device_behind);
  EXPECT_FALSE(stored->device_ahead);
  EXPECT_EQ(stored->hub_generation, 1u);

  // A late, older report does not overwrite the newer one.
  v1::ReportedState late = report;
  late.set_report_seq(4);
  late.set_observed_generation(0);
  late.clear_workloads();
  auto ignored = registry_->RecordReport(a, late, kNow + 6);
  ASSERT_TRUE(ignored.ok());
  EXPECT_FALSE(ignored->stored);
  late.set_report_seq(5);
  EXPECT_FALSE(registry_->RecordReport(a, late, kNow + 6)->stored);

  auto device = registry_->GetDevice(a);
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->report_seq, 5u);
  EXPECT_EQ(device->observed_generation, 1u);
  ASSERT_EQ(device->report.workloads_size(), 1);
  EXPECT_EQ(device->report.workloads(0).state(), v1::WORKLOAD_STATE_RUNNING);
  EXPECT_EQ(device->report.outbox_depth(), 3u);
  EXPECT_EQ(device->facts.hostname(), "box");
  EXPECT_EQ(device->last_seen_ms, kNow + 6);
  EXPECT_EQ(device->reported_ms, kNow + 5);

  // Behind / ahead of the hub's generation.
  report.set_report_seq(6);
  report.set_desired_generation(0);
  report.clear_facts();
  auto behind = registry_->RecordReport(a, report, kNow + 7);
  ASSERT_TRUE(behind.ok());
  EXPECT_TRUE(behind->device_behind);
  report.set_report_seq(7);
  report.set_desired_generation(9);
  auto ahead = registry_->RecordReport(a, report, kNow + 8);
  ASSERT_TRUE(ahead.ok());
  EXPECT_TRUE(ahead->device_ahead);
  // Facts are kept when a report has none.
  EXPECT_EQ(registry_->GetDevice(a)->facts.hostname(), "box");
  EXPECT_EQ(registry_->RecordReport("nosuch", report, kNow).error().code(), Errc::kNotFound);
}

TEST_F(RegistryTest, PresenceAndLastSeen) {
  std::string a = Enroll("a", {});
  ASSERT_TRUE(registry_->SetPresence(a, true, kNow + 100).ok());
  auto device = registry_->GetDevice(a);
  ASSERT_TRUE(device.ok());
  EXPECT_TRUE(device->online);
  EXPECT_EQ(device->presence_ms, kNow + 100);
  EXPECT_EQ(device->last_seen_ms, kNow + 100);
  ASSERT_TRUE(registry_->SetPresence(a, true, kNow + 200).ok());
  EXPECT_EQ(registry_->GetDevice(a)->presence_ms, kNow + 100);  // unchanged state keeps "since"
  ASSERT_TRUE(registry_->Touch(a, kNow + 5000).ok());
  EXPECT_EQ(registry_->GetDevice(a)->last_seen_ms, kNow + 5000);
  ASSERT_TRUE(registry_->Touch(a, kNow + 5100).ok());  // within a second: not written
  EXPECT_EQ(registry_->GetDevice(a)->last_seen_ms, kNow + 5000);
  ASSERT_TRUE(registry_->SetPresence(a, false, kNow + 6000).ok());
  device = registry_->GetDevice(a);
  EXPECT_FALSE(device->online);
  EXPECT_EQ(device->presence_ms, kNow + 6000);
  EXPECT_EQ(registry_->SetPresence("nosuch", true, kNow).error().code(), Errc::kNotFound);
  EXPECT_EQ(registry_->Touch("nosuch", kNow).error().code(), Errc::kNotFound);
}

v1::EventBatch Batch(std::initializer_list<std::uint64_t> seqs, std::uint64_t floor = 0) {
  v1::EventBatch batch;
  for (std::uint64_t seq : seqs) {
    v1::Event* e = batch.add_events();
    e->set_seq(seq);
    e->set_type(v1::EVENT_TYPE_WORKLOAD_STARTED);
    e->set_message("event " + std::to_string(seq));
  }
  batch.set_floor_seq(floor);
  return batch;
}

TEST_F(RegistryTest, EventsDuplicatesGapsAndFloor) {
  std::string a = Enroll("a", {});
  auto r = registry_->RecordEvents(a, Batch({1, 2, 3}), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->contiguous_mark, 3u);
  EXPECT_EQ(r->stored, 3u);
  EXPECT_EQ(r->hub_generation, 1u);

  // Duplicates are ignored (and still acknowledged).
  r = registry_->RecordEvents(a, Batch({2, 3}), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->contiguous_mark, 3u);
  EXPECT_EQ(r->stored, 0u);
  EXPECT_EQ(r->duplicates, 2u);
  EXPECT_EQ(*registry_->EventCount(a), 3u);

  // After a gap: stored, the mark waits.
  r = registry_->RecordEvents(a, Batch({6, 7}), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->contiguous_mark, 3u);
  EXPECT_EQ(r->stored, 2u);
  r = registry_->RecordEvents(a, Batch({6}), kNow);  // a duplicate above the mark
  EXPECT_EQ(r->duplicates, 1u);
  r = registry_->RecordEvents(a, Batch({5}), kNow);
  EXPECT_EQ(r->contiguous_mark, 3u);
  // The gap fills: the mark jumps over everything stored.
  r = registry_->RecordEvents(a, Batch({4}), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->contiguous_mark, 7u);
  EXPECT_EQ(*registry_->ContiguousMark(a), 7u);
  EXPECT_EQ(*registry_->EventCount(a), 7u);

  // floor_seq: the agent dropped 8..11; the mark jumps to floor - 1.
  r = registry_->RecordEvents(a, Batch({12, 13}, 12), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->contiguous_mark, 13u);
  // A floor below the mark changes nothing.
  r = registry_->RecordEvents(a, Batch({}, 3), kNow);
  EXPECT_EQ(r->contiguous_mark, 13u);
  // A floor with a gap after it.
  r = registry_->RecordEvents(a, Batch({22}, 20), kNow);
  EXPECT_EQ(r->contiguous_mark, 19u);
  r = registry_->RecordEvents(a, Batch({20, 21}), kNow);
  EXPECT_EQ(r->contiguous_mark, 22u);

  // Invalid seqs are counted and ignored.
  r = registry_->RecordEvents(a, Batch({0, ~std::uint64_t{0}}), kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->invalid, 2u);
  EXPECT_EQ(r->contiguous_mark, 22u);

  auto listed = registry_->ListEvents(a, 3, 3);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].event.seq(), 4u);
  EXPECT_EQ((*listed)[2].event.seq(), 6u);
  EXPECT_EQ((*listed)[0].event.message(), "event 4");
  EXPECT_EQ((*listed)[0].received_ms, kNow);

  // A long run of out-of-order events is walked past in one go.
  v1::EventBatch many;
  for (std::uint64_t seq = 24; seq < 24 + 400; ++seq)
    many.add_events()->set_seq(seq);
  r = registry_->RecordEvents(a, many, kNow);
  EXPECT_EQ(r->contiguous_mark, 22u);
  r = registry_->RecordEvents(a, Batch({23}), kNow);
  EXPECT_EQ(r->contiguous_mark, 423u);

  // Too many events in one batch.
  v1::EventBatch huge;
  for (int i = 0; i < 501; ++i)
    huge.add_events()->set_seq(1000 + static_cast<std::uint64_t>(i));
  EXPECT_EQ(registry_->RecordEvents(a, huge, kNow).error().code(), Errc::kResourceExhausted);
  EXPECT_EQ(registry_->RecordEvents("nosuch", Batch({1}), kNow).error().code(), Errc::kNotFound);

  // Events leave with their device.
  ASSERT_TRUE(registry_->DeleteDevice(a).ok());
  EXPECT_EQ(*registry_->EventCount(a), 0u);
}

TEST_F(RegistryTest, BatchCommitsTogetherAndIsolatesFailedCalls) {
  std::string a = Enroll("a", {});
  std::string b = Enroll("b", {});
  Status batch = registry_->Batch([&]() -> Status {
    v1::ReportedState report;
    report.set_report_seq(1);
    report.set_observed_generation(1);
    OUTPOST_TRY(registry_->RecordReport(a, report, kNow));
    OUTPOST_TRY(registry_->RecordEvents(a, Batch({1, 2}), kNow));
    OUTPOST_TRY(registry_->SetPresence(b, true, kNow));
    // A failing call inside the batch fails alone.
    EXPECT_EQ(registry_->RecordEvents("nosuch", Batch({1}), kNow).error().code(), Errc::kNotFound);
    EXPECT_FALSE(registry_->EditLabels(b, std::vector<std::string>{"bad"}, kNow).ok());
    EXPECT_EQ(registry_->ApplyApplications(Parse(App("x", "{}")), kNow).error().code(),
              Errc::kFailedPrecondition);
    EXPECT_EQ(registry_->Batch([] { return OkStatus(); }).error().code(),
              Errc::kFailedPrecondition);
    return OkStatus();
  });
  ASSERT_TRUE(batch.ok()) << batch.error().message();
  EXPECT_EQ(registry_->GetDevice(a)->report_seq, 1u);
  EXPECT_EQ(*registry_->ContiguousMark(a), 2u);
  EXPECT_TRUE(registry_->GetDevice(b)->online);

  // A batch whose body fails leaves nothing behind.
  Status failed = registry_->Batch([&]() -> Status {
    OUTPOST_TRY(registry_->RecordEvents(a, Batch({3}), kNow));
    OUTPOST_TRY(registry_->SetPresence(b, false, kNow));
    return Error(Errc::kInternal, "stop");
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(*registry_->ContiguousMark(a), 2u);
  EXPECT_TRUE(registry_->GetDevice(b)->online);
  // And the connection is usable again afterwards.
  EXPECT_EQ(registry_->RecordEvents(a, Batch({3}), kNow)->contiguous_mark, 3u);
}

// ---------------------------------------------------------------------------
// Rollout

TEST_F(RegistryTest, RolloutStatusFollowsObservedGenerations) {
  std::string south = Enroll("south", {{"role", "store"}, {"region", "south"}});
  std::string north = Enroll("north", {{"role", "store"}, {"region", "north"}});
  std::string lab = Enroll("lab", {{"role", "lab"}});
  Apply(App("store-app", "{role: store}"));  // gen 2 for both store devices

  auto status = registry_->GetRolloutStatus("store-app");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->matched, 2u);
  EXPECT_EQ(status->updated, 0u);
  EXPECT_EQ(status->pending, (std::vector<std::string>{north, south}));
  EXPECT_FALSE(status->done());

  Report(south, 1, 2, 2);
  Report(north, 1, 1, 2);  // holds 2, still applies 1
  status = registry_->GetRolloutStatus("store-app");
  EXPECT_EQ(status->updated, 1u);
  EXPECT_EQ(status->pending, (std::vector<std::string>{north}));
  Report(north, 2, 2, 2);
  status = registry_->GetRolloutStatus("store-app");
  EXPECT_EQ(status->updated, 2u);
  EXPECT_TRUE(status->done());

  // A lab-only app does not move the store app's rollout.
  Apply(App("lab-app", "{role: lab}"));
  EXPECT_TRUE(registry_->GetRolloutStatus("store-app")->done());

  // An override for south only: north's content of the app is unchanged, so
  // north stays updated; south must observe its new generation.
  Apply(App("store-app", "{role: store}", "[/bin/sleep, 100]",
            "  overrides:\n    - selector: {matchLabels: {region: south}}\n      patches:\n"
            "        - {op: replace, path: /workloads/0/env/A, value: south}\n"));
  status = registry_->GetRolloutStatus("store-app");
  EXPECT_EQ(status->revision, 2u);
  EXPECT_EQ(status->updated, 1u);
  EXPECT_EQ(status->pending, (std::vector<std::string>{south}));
  Report(south, 2, 3, 3);
  EXPECT_TRUE(registry_->GetRolloutStatus("store-app")->done());

  // Another app on the same device bumps its generation but not this app's
  // content: the store app stays done.
  Apply(App("all", "{}"));
  EXPECT_TRUE(registry_->GetRolloutStatus("store-app")->done());
  auto all = registry_->GetRolloutStatus("all");
  EXPECT_EQ(all->matched, 3u);
  EXPECT_EQ(all->updated, 0u);

  // A device leaving the selector leaves the rollout; a revoked one too.
  ASSERT_TRUE(registry_->SetLabels(north, {{"role", "lab"}}, kNow).ok());
  EXPECT_EQ(registry_->GetRolloutStatus("store-app")->matched, 1u);
  ASSERT_TRUE(registry_->RevokeDevice(south, kNow).ok());
  EXPECT_EQ(registry_->GetRolloutStatus("store-app")->matched, 0u);
  EXPECT_EQ(registry_->GetRolloutStatus("nosuch").error().code(), Errc::kNotFound);
  (void)lab;
}

// Rendering work follows the selector, not the fleet: an app for a handful of
// devices among many re-renders only those.
TEST_F(RegistryTest, ApplyTouchesOnlySelectedDevices) {
  std::string token = NewToken(300);
  for (int i = 0; i < 200; ++i) {
    EnrollRequest request;
    request.token = token;
    request.requested_name = "d" + std::to_string(i);
    request.labels = {{"shard", std::to_string(i % 50)}};
    ASSERT_TRUE(registry_->EnrollDevice(request, kNow).ok());
  }
  Mutation m = Apply(App("shard-7", "{shard: \"7\"}"));
  EXPECT_EQ(m.desired.size(), 4u);
  for (const DesiredChange& c : m.desired)
    EXPECT_EQ(c.generation, 2u);
  m = Apply(App("shard-7", "{shard: \"8\"}"));
  EXPECT_EQ(m.desired.size(), 8u);  // old selector's 4 lose it, new selector's 4 gain it
}

}  // namespace
}  // namespace outpost::hub::registry
