// outpostctl without a hub: output formatting, durations, connection
// resolution, and the commands against a scripted fake API.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hub/ctl/config.hpp"
#include "hub/ctl/ctl.hpp"
#include "hub/ctl/output.hpp"
#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::hub::ctl {
namespace {

using nlohmann::json;
using outpost::testing::TempDir;

// ---------------------------------------------------------------------------
// Output helpers

TEST(Output, TableAlignsColumns) {
  Table t({"ID", "STATUS"});
  t.AddRow({"cam-1", "online"});
  t.AddRow({"a-much-longer-id", "offline"});
  EXPECT_EQ(t.Render(),
            "ID                 STATUS\n"
            "cam-1              online\n"
            "a-much-longer-id   offline\n");
}

TEST(Output, JsonAndYaml) {
  json v = {{"id", "cam-1"},          {"online", true}, {"count", 3},    {"labels", {{"a", "b"}}},
            {"empty", json::array()}, {"s", "true"},    {"num", "0123"}, {"none", nullptr}};
  EXPECT_EQ(json::parse(ToJsonText(v)), v);
  std::string y = ToYamlText(v);
  EXPECT_NE(y.find("id: cam-1\n"), std::string::npos) << y;
  EXPECT_NE(y.find("online: true\n"), std::string::npos) << y;
  EXPECT_NE(y.find("count: 3\n"), std::string::npos) << y;
  EXPECT_NE(y.find("s: \"true\"\n"), std::string::npos) << y;    // a string, not a bool
  EXPECT_NE(y.find("num: \"0123\"\n"), std::string::npos) << y;  // a string, not a number
  EXPECT_NE(y.find("empty: []\n"), std::string::npos) << y;
  EXPECT_NE(y.find("labels:\n  a: b\n"), std::string::npos) << y;
  EXPECT_EQ(ToYamlText(json::array()), "[]\n");
}

TEST(Output, Durations) {
  EXPECT_EQ(ParseDuration("24h")->count(), 24LL * 3600 * 1000);
  EXPECT_EQ(ParseDuration("90s")->count(), 90'000);
  EXPECT_EQ(ParseDuration("5m")->count(), 300'000);
  EXPECT_EQ(ParseDuration("7d")->count(), 7LL * 86400 * 1000);
  EXPECT_EQ(ParseDuration("1h30m")->count(), 5'400'000);
  EXPECT_EQ(ParseDuration("45")->count(), 45'000);
  EXPECT_EQ(ParseDuration("250ms")->count(), 250);
  for (const char* bad : {"", "h", "5x", "-5m", "0s", "5m3", "1.5h", "999999999999999999d"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(Output, TimesAndLabels) {
  auto t = ParseTime("2023-11-14T22:13:20Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, 1'700'000'000'000);
  EXPECT_FALSE(ParseTime("2023-11-14 22:13:20"));
  EXPECT_EQ(Age("2023-11-14T22:13:20Z", 1'700'000'005'000), "5s ago");
  EXPECT_EQ(Age("2023-11-14T22:13:20Z", 1'700'000'000'000 + 3 * 3600 * 1000), "3h ago");
  EXPECT_EQ(Age(nullptr, 0), "<never>");
  EXPECT_EQ(Until("2023-11-14T22:13:20Z", 1'700'000'000'000 - 600'000), "in 10m");
  EXPECT_EQ(Until("2023-11-14T22:13:20Z", 1'700'000'000'000 + 1), "expired");
  EXPECT_EQ(LabelsText(json{{"a", "1"}, {"b", "2"}}), "a=1,b=2");
  EXPECT_EQ(LabelsText(json::object()), "<none>");
  std::string k, v;
  EXPECT_TRUE(SplitLabel("role=store", &k, &v));
  EXPECT_EQ(k, "role");
  EXPECT_EQ(v, "store");
  EXPECT_TRUE(SplitLabel("empty=", &k, &v));
  EXPECT_FALSE(SplitLabel("=x", &k, &v));
  EXPECT_FALSE(SplitLabel("novalue", &k, &v));
}

// ---------------------------------------------------------------------------
// Connection

TEST(Connection, ParsesCtlYaml) {
  auto c = ParseCtlYaml("hub: \"https://h:8443\"\ntoken: \"t0k\"\nca: ca.crt\n", "/etc/hub");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hub_url, "https://h:8443");
  EXPECT_EQ(c->token, "t0k");
  EXPECT_EQ(c->ca_path, "/etc/hub/ca.crt");
  EXPECT_EQ(ParseCtlYaml("ca: /abs/ca.crt\n", "/x")->ca_path, "/abs/ca.crt");
  EXPECT_FALSE(ParseCtlYaml("hubb: x\n", "/").ok());
  EXPECT_FALSE(ParseCtlYaml("hub: [a]\n", "/").ok());
  EXPECT_FALSE(ParseCtlYaml(": :\n- x", "/").ok());
}

TEST(Connection, FlagsBeatEnvironmentBeatsFile) {
  TempDir tmp;
  ASSERT_TRUE(fs::WriteFileAtomic(tmp / "ctl.yaml",
                                  "hub: https://file:1\ntoken: file-token\nca: file-ca.crt\n")
                  .ok());
  std::map<std::string, std::string> env_values;
  GetEnv env = [&](const char* name) -> std::optional<std::string> {
    auto it = env_values.find(name);
    if (it == env_values.end()) return std::nullopt;
    return it->second;
  };
  ConnectionFlags flags;
  flags.config = tmp / "ctl.yaml";
  auto c = ResolveConnection(flags, env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hub_url, "https://file:1");
  EXPECT_EQ(c->ca_path, tmp / "file-ca.crt");
  env_values["OUTPOST_HUB"] = "https://env:2";
  env_values["OUTPOST_ADMIN_TOKEN"] = "env-token";
  c = ResolveConnection(flags, env);
  EXPECT_EQ(c->hub_url, "https://env:2");
  EXPECT_EQ(c->token, "env-token");
  flags.hub = "https://flag:3";
  flags.ca = "/flag/ca.crt";
  c = ResolveConnection(flags, env);
  EXPECT_EQ(c->hub_url, "https://flag:3");
  EXPECT_EQ(c->token, "env-token");
  EXPECT_EQ(c->ca_path, "/flag/ca.crt");
  // Nothing at all: a clear complaint.
  ConnectionFlags none;
  none.config = tmp / "missing.yaml";
  EXPECT_FALSE(ResolveConnection(none, env).ok());
  env_values.clear();
  ConnectionFlags partial;
  partial.hub = "https://h:1";
  partial.config = tmp / "empty.yaml";
  ASSERT_TRUE(fs::WriteFileAtomic(tmp / "empty.yaml", "").ok());
  auto missing_token = ResolveConnection(partial, env);
  ASSERT_FALSE(missing_token.ok());
  EXPECT_NE(missing_token.error().message().find("token"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Commands against a fake hub

struct Call {
  std::string method, target, body, content_type;
};

class FakeHub : public HubApi {
 public:
  Result<ApiResponse> Call(const std::string& method, const std::string& target,
                           const std::string& body, const std::string& content_type) override {
    calls->push_back({method, target, body, content_type});
    auto& q = (*responses)[method + " " + target];
    if (q.empty()) return ApiResponse{404, R"({"error":"not_found","message":"No route."})"};
    ApiResponse r = q.front();
    if (q.size() > 1) q.pop_front();
    return r;
  }
  std::vector<struct Call>* calls;
  std::map<std::string, std::deque<ApiResponse>>* responses;
};

class CtlTest : public ::testing::Test {
 protected:
  int Run(std::vector<std::string> args) {
    args.insert(args.begin(),
                {"outpostctl", "--hub", "https://hub:8443", "--token", "adm", "--ca", "/ca.crt"});
    CtlEnv env;
    env.getenv = [](const char*) { return std::nullopt; };
    env.now_ms = [this] { return now_; };
    env.sleep = [this](std::chrono::milliseconds d) {
      now_ += d.count();
      ++sleeps_;
    };
    env.stdout_is_tty = tty_;
    env.connect = [this](const Connection& c) -> Result<std::unique_ptr<HubApi>> {
      connection_ = c;
      auto hub = std::make_unique<FakeHub>();
      hub->calls = &calls_;
      hub->responses = &responses_;
      return std::unique_ptr<HubApi>(std::move(hub));
    };
    env.read_file = [this](const std::string& path) -> Result<std::string> {
      auto it = files_.find(path);
      if (it == files_.end()) return Error(Errc::kNotFound, "no such file");
      return it->second;
    };
    std::ostringstream out, err;
    int rc = Main(args, out, err, env);
    out_ = out.str();
    err_ = err.str();
    return rc;
  }
  void Respond(const std::string& route, int status, const json& body) {
    responses_[route].push_back({status, body.dump()});
  }

  std::int64_t now_ = 1'700'000'000'000;
  int sleeps_ = 0;
  bool tty_ = false;
  Connection connection_;
  std::vector<Call> calls_;
  std::map<std::string, std::deque<ApiResponse>> responses_;
  std::map<std::string, std::string> files_;
  std::string out_, err_;
};

json TokenAnswer() {
  return {{"id", "abc123"},
          {"token", "abc123.0123456789abcdef"},
          {"caHash", "sha256:ffff"},
          {"expiresAt", "2023-11-15T22:13:20Z"},
          {"usesTotal", 3},
          {"usesLeft", 3},
          {"labels", {{"role", "store"}}},
          {"joinCommand",
           "outpost-agent join --hub https://hub:8443 --token abc123.0123456789abcdef "
           "--ca-hash sha256:ffff"}};
}

TEST_F(CtlTest, TokenCreatePrintsTheJoinCommand) {
  Respond("POST /v1/admin/tokens", 201, TokenAnswer());
  ASSERT_EQ(Run({"token", "create", "--ttl", "2h", "--uses", "3", "--label", "role=store"}), 0)
      << err_;
  ASSERT_EQ(calls_.size(), 1u);
  json sent = json::parse(calls_[0].body);
  EXPECT_EQ(sent["ttlSeconds"], 7200);
  EXPECT_EQ(sent["uses"], 3);
  EXPECT_EQ(sent["labels"]["role"], "store");
  EXPECT_NE(out_.find("abc123.0123456789abcdef"), std::string::npos);
  EXPECT_NE(out_.find("outpost-agent join --hub https://hub:8443 --token "
                      "abc123.0123456789abcdef --ca-hash sha256:ffff"),
            std::string::npos)
      << out_;
  EXPECT_EQ(connection_.hub_url, "https://hub:8443");
  EXPECT_EQ(connection_.token, "adm");
}

TEST_F(CtlTest, TokenCreateJsonHasTheContractKeys) {
  Respond("POST /v1/admin/tokens", 201, TokenAnswer());
  ASSERT_EQ(Run({"token", "create", "-o", "json"}), 0) << err_;
  json j = json::parse(out_);
  EXPECT_EQ(j["token"], "abc123.0123456789abcdef");
  EXPECT_EQ(j["caHash"], "sha256:ffff");
  EXPECT_EQ(j["expiresAt"], "2023-11-15T22:13:20Z");
  EXPECT_EQ(j["joinCommand"].get<std::string>().rfind("outpost-agent join ", 0), 0u);
  ASSERT_EQ(Run({"-o=yaml", "token", "create"}), 0);
  EXPECT_NE(out_.find("token: abc123.0123456789abcdef"), std::string::npos) << out_;
}

TEST_F(CtlTest, UsageErrorsExit2WithOneLine) {
  EXPECT_EQ(Run({"token", "create", "--ttl", "soon"}), 2);
  EXPECT_EQ(std::count(err_.begin(), err_.end(), '\n'), 1) << err_;
  EXPECT_TRUE(calls_.empty());
  EXPECT_EQ(Run({"token", "create", "--uses", "0"}), 2);
  EXPECT_EQ(Run({"device", "label", "cam-1", "novalue"}), 2);
  EXPECT_EQ(Run({"device", "get"}), 2);
  EXPECT_EQ(Run({"frobnicate"}), 2);
  EXPECT_EQ(Run({"-o", "xml", "device", "list"}), 2);
  EXPECT_EQ(Run({"apply"}), 2);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(CtlTest, HubErrorsBecomeOneLineOnStderr) {
  Respond("GET /v1/admin/devices/nope", 404,
          {{"error", "not_found"}, {"message", "There is no device \"nope\"."}});
  EXPECT_EQ(Run({"device", "get", "nope"}), 1);
  EXPECT_EQ(err_, "outpostctl: There is no device \"nope\". (not_found)\n");
  EXPECT_TRUE(out_.empty());
}

TEST_F(CtlTest, DeviceListAndGet) {
  json device = {
      {"id", "cam-1"},
      {"labels", {{"role", "store"}}},
      {"online", true},
      {"revoked", false},
      {"lastSeen", "2023-11-14T22:13:15Z"},
      {"desiredGeneration", 3},
      {"observedGeneration", 2},
      {"workloads", {{{"name", "app.main"}, {"state", "running"}, {"pid", 42}, {"restarts", 0}}}}};
  Respond("GET /v1/admin/devices", 200, {{"devices", {device}}});
  ASSERT_EQ(Run({"device", "list"}), 0) << err_;
  EXPECT_NE(out_.find("cam-1"), std::string::npos);
  EXPECT_NE(out_.find("online"), std::string::npos);
  EXPECT_NE(out_.find("5s ago"), std::string::npos) << out_;
  EXPECT_NE(out_.find("2/3"), std::string::npos);
  EXPECT_NE(out_.find("1/1 running"), std::string::npos);
  EXPECT_NE(out_.find("role=store"), std::string::npos);

  Respond("GET /v1/admin/devices/cam-1", 200, device);
  ASSERT_EQ(Run({"device", "get", "cam-1", "-o", "json"}), 0);
  json j = json::parse(out_);
  for (const char* key : {"id", "labels", "online", "lastSeen", "desiredGeneration",
                          "observedGeneration", "workloads"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  ASSERT_EQ(Run({"device", "get", "cam-1"}), 0);
  EXPECT_NE(out_.find("app.main"), std::string::npos);
  EXPECT_NE(out_.find("running"), std::string::npos);
}

TEST_F(CtlTest, DeviceLabelRevokeDelete) {
  Respond("POST /v1/admin/devices/cam-1/labels", 200,
          {{"id", "cam-1"}, {"labels", {{"zone", "a"}}}, {"desiredChanged", true}});
  ASSERT_EQ(Run({"device", "label", "cam-1", "zone=a", "role-"}), 0) << err_;
  EXPECT_EQ(json::parse(calls_.back().body)["edits"], (json{"zone=a", "role-"}));
  EXPECT_NE(out_.find("zone=a"), std::string::npos);
  Respond("POST /v1/admin/devices/cam-1/revoke", 200,
          {{"id", "cam-1"}, {"revoked", true}, {"crl", {{"brokerReloaded", true}}}});
  ASSERT_EQ(Run({"device", "revoke", "cam-1"}), 0);
  EXPECT_EQ(out_, "device/cam-1 revoked\n");
  Respond("DELETE /v1/admin/devices/cam-1", 200, {{"id", "cam-1"}, {"deleted", true}});
  ASSERT_EQ(Run({"device", "delete", "cam-1"}), 0);
  EXPECT_EQ(out_, "device/cam-1 deleted\n");
}

TEST_F(CtlTest, ApplyPostsTheFilesAndReportsEachApp) {
  files_["/m.yaml"] = "kind: EdgeApplication\n";
  Respond("POST /v1/admin/apps", 200,
          {{"applications",
            {{{"name", "a"}, {"action", "created"}, {"devicesChanged", 3}},
             {{"name", "b"}, {"action", "unchanged"}, {"devicesChanged", 0}}}},
           {"devicesChanged", 3},
           {"warnings", json::array()}});
  ASSERT_EQ(Run({"apply", "-f", "/m.yaml"}), 0) << err_;
  EXPECT_EQ(calls_[0].body, "kind: EdgeApplication\n");
  EXPECT_EQ(calls_[0].content_type, "application/yaml");
  EXPECT_EQ(out_,
            "edgeapplication/a created (3 devices changed)\n"
            "edgeapplication/b unchanged (0 devices changed)\n");
  EXPECT_EQ(Run({"apply", "-f", "/missing.yaml"}), 1);
  EXPECT_NE(err_.find("/missing.yaml"), std::string::npos);
}

TEST_F(CtlTest, RolloutStatusWatchPrintsEachChangeUntilDone) {
  auto status = [](int updated, int matched) {
    return json{{"app", "a"},
                {"revision", 1},
                {"matched", matched},
                {"updated", updated},
                {"online", matched},
                {"pending", json::array()},
                {"done", updated == matched}};
  };
  Respond("GET /v1/admin/apps/a/rollout", 200, status(0, 3));
  Respond("GET /v1/admin/apps/a/rollout", 200, status(0, 3));
  Respond("GET /v1/admin/apps/a/rollout", 200, status(2, 3));
  Respond("GET /v1/admin/apps/a/rollout", 200, status(3, 3));
  ASSERT_EQ(Run({"rollout", "status", "a", "--watch"}), 0) << err_;
  EXPECT_EQ(out_,
            "rollout a: 0/3 devices updated, 3 online\n"
            "rollout a: 2/3 devices updated, 3 online\n"
            "rollout a: 3/3 devices updated, 3 online\n"
            "rollout a complete: 3/3 devices updated\n");
  EXPECT_EQ(sleeps_, 3);
}

TEST_F(CtlTest, RolloutStatusWatchTimesOut) {
  Respond("GET /v1/admin/apps/a/rollout", 200,
          {{"app", "a"},
           {"matched", 2},
           {"updated", 1},
           {"online", 1},
           {"pending", {"cam-2"}},
           {"done", false}});
  EXPECT_EQ(Run({"rollout", "status", "a", "--watch", "--timeout", "10s"}), 1);
  EXPECT_NE(err_.find("not complete after 10s"), std::string::npos) << err_;
  EXPECT_NE(err_.find("cam-2"), std::string::npos);
  EXPECT_EQ(std::count(err_.begin(), err_.end(), '\n'), 1);
  // Without --watch: the state now, exit 0.
  EXPECT_EQ(Run({"rollout", "status", "a"}), 0);
  EXPECT_EQ(out_, "rollout a: 1/2 devices updated, 1 online\n");
}

TEST_F(CtlTest, RolloutOnATerminalRewritesOneLine) {
  tty_ = true;
  Respond("GET /v1/admin/apps/a/rollout", 200,
          {{"matched", 1}, {"updated", 0}, {"online", 1}, {"done", false}});
  Respond("GET /v1/admin/apps/a/rollout", 200,
          {{"matched", 1}, {"updated", 1}, {"online", 1}, {"done", true}});
  ASSERT_EQ(Run({"rollout", "status", "a", "-w"}), 0);
  EXPECT_NE(out_.find("\r\033[K"), std::string::npos);
  EXPECT_NE(out_.find("complete"), std::string::npos);
}

TEST_F(CtlTest, GetAndDeleteApps) {
  Respond("GET /v1/admin/apps", 200,
          {{"applications",
            {{{"name", "det"},
              {"revision", 2},
              {"selector", {{"role", "store"}}},
              {"workloads", {"det.main"}},
              {"createdAt", "2023-11-14T22:03:20Z"},
              {"rollout", {{"matched", 4}, {"updated", 3}}}}}}});
  ASSERT_EQ(Run({"get", "apps"}), 0) << err_;
  EXPECT_NE(out_.find("det"), std::string::npos);
  EXPECT_NE(out_.find("3/4"), std::string::npos);
  EXPECT_NE(out_.find("role=store"), std::string::npos);
  EXPECT_NE(out_.find("10m"), std::string::npos) << out_;
  Respond("DELETE /v1/admin/apps/det", 200, {{"deleted", true}, {"devicesChanged", 4}});
  ASSERT_EQ(Run({"delete", "app", "det"}), 0);
  EXPECT_EQ(out_, "edgeapplication/det deleted (4 devices changed)\n");
}

TEST_F(CtlTest, Version) {
  ASSERT_EQ(Run({"version"}), 0);
  EXPECT_EQ(out_, std::string("outpostctl ") + OUTPOST_VERSION + "\n");
  EXPECT_TRUE(calls_.empty());
}

}  // namespace
}  // namespace outpost::hub::ctl
