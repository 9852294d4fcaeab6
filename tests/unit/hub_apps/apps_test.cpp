#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "hub/apps/apps.hpp"
#include "shared/core/result.hpp"

namespace outpost::hub::apps {
namespace {

using nlohmann::json;

// The example of shared/CONTRACT.md.
const char* const kFaceDetection = R"(apiVersion: outpost.dev/v1alpha1
kind: EdgeApplication
metadata:
  name: face-detection
spec:
  selector:
    matchLabels: {role: store}
  workloads:
    - name: detector
      kind: process                 # container comes later
      command: ["/opt/detector/bin/detector", "--model", "/data/models/face.onnx"]
      env: {LOG_LEVEL: info}
      restartPolicy: Always         # Always | OnFailure | Never
      devices: ["/dev/video0"]      # must exist on the device, else the workload is `waiting`
      gpus: 1                       # 0, N, or all
      resources: {memoryMiB: 512, cpus: 1.5}
  overrides:
    - selector: {matchLabels: {region: south}}
      patches:
        - {op: replace, path: /workloads/0/env/LOG_LEVEL, value: debug}
)";

std::string App(const std::string& name, const std::string& workloads,
                const std::string& extra_spec = "", const std::string& selector = "{}") {
  return "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata:\n  name: " + name +
         "\nspec:\n  selector:\n    matchLabels: " + selector + "\n  workloads:\n" + workloads +
         extra_spec;
}

const char* const kSleeper = "    - name: sleeper\n      command: [/bin/sleep, 100]\n";

std::vector<Application> ParseOk(const std::string& yaml) {
  ParseError detail;
  auto parsed = ParseApplications(yaml, &detail);
  EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().message());
  if (!parsed.ok()) return {};
  return std::move(parsed).value();
}

// Parses, expecting a validation error at `field` of document `document`.
void ExpectFieldError(const std::string& yaml, int document, const std::string& field,
                      Errc code = Errc::kInvalidArgument) {
  ParseError detail;
  auto parsed = ParseApplications(yaml, &detail);
  ASSERT_FALSE(parsed.ok()) << "expected an error at " << field;
  EXPECT_EQ(parsed.error().code(), code) << parsed.error().message();
  EXPECT_EQ(detail.document, document) << parsed.error().message();
  EXPECT_EQ(detail.field, field) << parsed.error().message();
  // The one-line message carries the document and the field.
  EXPECT_EQ(parsed.error().message().find('\n'), std::string::npos);
  if (document > 0) {
    EXPECT_TRUE(parsed.error().message().starts_with("document " + std::to_string(document) + " ("))
        << parsed.error().message();
  }
  if (!field.empty()) {
    EXPECT_NE(parsed.error().message().find(field + ": "), std::string::npos)
        << parsed.error().message();
  }
}

TEST(ParseApplications, ContractExample) {
  auto apps = ParseOk(kFaceDetection);
  ASSERT_EQ(apps.size(), 1u);
  const Application& app = apps[0];
  EXPECT_EQ(app.name, "face-detection");
  EXPECT_EQ(app.selector.match_labels, (Labels{{"role", "store"}}));
  ASSERT_EQ(app.overrides.size(), 1u);
  EXPECT_EQ(app.overrides[0].selector.match_labels, (Labels{{"region", "south"}}));
  ASSERT_EQ(app.overrides[0].patches.size(), 1u);
  EXPECT_EQ(app.overrides[0].patches[0].op, Patch::Op::kReplace);
  EXPECT_EQ(app.overrides[0].patches[0].path, "/workloads/0/env/LOG_LEVEL");
  EXPECT_EQ(app.overrides[0].patches[0].value, json("debug"));

  ASSERT_EQ(app.base_workloads.size(), 1u);
  const v1::WorkloadSpec& w = app.base_workloads[0];
  EXPECT_EQ(w.name(), "face-detection.detector");
  EXPECT_EQ(w.app(), "face-detection");
  EXPECT_EQ(w.kind(), v1::WORKLOAD_KIND_PROCESS);
  ASSERT_EQ(w.command_size(), 3);
  EXPECT_EQ(w.command(0), "/opt/detector/bin/detector");
  EXPECT_EQ(w.command(2), "/data/models/face.onnx");
  EXPECT_EQ(w.env().at("LOG_LEVEL"), "info");
  EXPECT_EQ(w.restart_policy(), v1::RESTART_POLICY_ALWAYS);
  ASSERT_EQ(w.devices_size(), 1);
  EXPECT_EQ(w.devices(0), "/dev/video0");
  EXPECT_EQ(w.gpus().count(), 1u);
  EXPECT_FALSE(w.gpus().all());
  EXPECT_EQ(w.resources().memory_mib(), 512u);
  EXPECT_EQ(w.resources().milli_cpus(), 1500u);
  EXPECT_EQ(w.spec_hash().size(), 64u);
  EXPECT_EQ(w.spec_hash(), SpecHash(w));
  EXPECT_EQ(app.content_hash.size(), 64u);
  EXPECT_EQ(app.spec_json, app.spec.dump());
}

TEST(ParseApplications, DefaultsOptionalFieldsAndScalarStrings) {
  auto apps = ParseOk(App("web",
                          "    - name: server\n      command: [/usr/bin/python3, -m, http.server, "
                          "8080]\n      env: {PORT: 8080, DEBUG: true}\n      gpus: all\n"
                          "      restartPolicy: OnFailure\n      workingDir: /srv\n      user: "
                          "www-data\n      stopGraceSeconds: 30\n"));
  ASSERT_EQ(apps.size(), 1u);
  const v1::WorkloadSpec& w = apps[0].base_workloads[0];
  EXPECT_EQ(w.command(3), "8080");
  EXPECT_EQ(w.env().at("PORT"), "8080");
  EXPECT_EQ(w.env().at("DEBUG"), "true");
  EXPECT_TRUE(w.gpus().all());
  EXPECT_EQ(w.restart_policy(), v1::RESTART_POLICY_ON_FAILURE);
  EXPECT_EQ(w.working_dir(), "/srv");
  EXPECT_EQ(w.user(), "www-data");
  EXPECT_EQ(w.stop_grace_seconds(), 30u);
  EXPECT_TRUE(apps[0].selector.empty());
  // Defaults are filled into the canonical form.
  EXPECT_EQ(apps[0].spec["workloads"][0]["kind"], "process");
  EXPECT_EQ(apps[0].spec["workloads"][0]["restartPolicy"], "OnFailure");

  auto defaults = ParseOk(App("web", kSleeper));
  EXPECT_EQ(defaults[0].base_workloads[0].restart_policy(), v1::RESTART_POLICY_ALWAYS);
  EXPECT_EQ(defaults[0].spec["workloads"][0]["restartPolicy"], "Always");
}

TEST(ParseApplications, MultipleDocuments) {
  std::string yaml = "---\n" + App("one", kSleeper) + "---\n" + App("two", kSleeper) + "---\n";
  auto apps = ParseOk(yaml);
  ASSERT_EQ(apps.size(), 2u);
  EXPECT_EQ(apps[0].name, "one");
  EXPECT_EQ(apps[1].name, "two");
}

TEST(ParseApplications, CanonicalFormIgnoresFormatting) {
  auto a = ParseOk(App("web", kSleeper));
  auto b = ParseOk(
      "kind: EdgeApplication\napiVersion: \"outpost.dev/v1alpha1\"\nmetadata: {name: web}\n"
      "spec:\n  workloads: [{command: [\"/bin/sleep\", \"100\"], name: sleeper, kind: process, "
      "restartPolicy: Always}]\n  selector: {matchLabels: {}}\n");
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].content_hash, b[0].content_hash);
  EXPECT_EQ(a[0].spec_json, b[0].spec_json);
  auto c = ParseOk(App("web", "    - name: sleeper\n      command: [/bin/sleep, 101]\n"));
  EXPECT_NE(a[0].content_hash, c[0].content_hash);
  // Same spec under another name is other content.
  auto d = ParseOk(App("web2", kSleeper));
  EXPECT_NE(a[0].content_hash, d[0].content_hash);
}

TEST(ParseApplications, CanonicalRoundTrip) {
  auto apps = ParseOk(kFaceDetection);
  ASSERT_EQ(apps.size(), 1u);
  auto again = ApplicationFromCanonical(apps[0].name, apps[0].spec_json);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->content_hash, apps[0].content_hash);
  ASSERT_EQ(again->base_workloads.size(), 1u);
  EXPECT_EQ(again->base_workloads[0].spec_hash(), apps[0].base_workloads[0].spec_hash());
  EXPECT_EQ(again->overrides.size(), 1u);

  json manifest = ApplicationToJson(apps[0]);
  EXPECT_EQ(manifest["apiVersion"], "outpost.dev/v1alpha1");
  EXPECT_EQ(manifest["kind"], "EdgeApplication");
  EXPECT_EQ(manifest["metadata"]["name"], "face-detection");
  EXPECT_EQ(manifest["spec"], apps[0].spec);

  auto corrupt = ApplicationFromCanonical("x", "{not json");
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(corrupt.error().code(), Errc::kCorrupt);
}

TEST(ParseApplications, ErrorMessageNamesDocumentAndField) {
  std::string yaml = App("first", kSleeper) + "---\n" +
                     App("face-detection",
                         "    - name: detector\n      command: [/bin/true]\n      restartPolicy: "
                         "Sometimes\n");
  ParseError detail;
  auto parsed = ParseApplications(yaml, &detail);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(detail.document, 2);
  EXPECT_EQ(detail.name, "face-detection");
  EXPECT_EQ(detail.field, "spec.workloads[0].restartPolicy");
  EXPECT_TRUE(parsed.error().message().starts_with(
      "document 2 (face-detection): spec.workloads[0].restartPolicy: \"Sometimes\""))
      << parsed.error().message();
}

TEST(ParseApplications, DocumentLevelErrors) {
  const std::string ok_spec = "spec:\n  workloads:\n" + std::string(kSleeper);
  ExpectFieldError("apiVersion: v2\nkind: EdgeApplication\nmetadata: {name: a}\n" + ok_spec, 1,
                   "apiVersion");
  ExpectFieldError("kind: EdgeApplication\nmetadata: {name: a}\n" + ok_spec, 1, "apiVersion");
  ExpectFieldError(
      "apiVersion: outpost.dev/v1alpha1\nkind: Deployment\nmetadata: {name: a}\n" + ok_spec, 1,
      "kind");
  ExpectFieldError("apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\n" + ok_spec, 1,
                   "metadata");
  ExpectFieldError(
      "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata: {labels: {}}\n" + ok_spec,
      1, "metadata.labels");
  ExpectFieldError(
      "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata: {}\n" + ok_spec, 1,
      "metadata.name");
  for (const char* bad : {"Bad_Name", "\"../etc\"", "-lead", "trail-", "\"\"", "a.b",
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    ExpectFieldError(App(bad, kSleeper), 1, "metadata.name");
  }
  ExpectFieldError(App("a", kSleeper) + "  replicas: 3\n", 1, "spec.replicas");
  ExpectFieldError(App("a", kSleeper) + "status: {}\n", 1, "status");
  ExpectFieldError("- just\n- a list\n", 1, "");
  // The same name twice in one manifest.
  ExpectFieldError(App("a", kSleeper) + "---\n" + App("a", kSleeper), 2, "metadata.name");
}

TEST(ParseApplications, WorkloadFieldErrors) {
  auto w = [](const std::string& fields) { return App("app", "    - name: w\n" + fields); };
  const std::string cmd = "      command: [/bin/true]\n";
  ExpectFieldError(App("app", "    - name: w\n      command: [/bin/true]\n      image: nginx\n"), 1,
                   "spec.workloads[0].image");
  ExpectFieldError(w(cmd + "      kind: container\n"), 1, "spec.workloads[0].kind");
  ExpectFieldError(w(cmd + "      kind: vm\n"), 1, "spec.workloads[0].kind");
  ExpectFieldError(w(""), 1, "spec.workloads[0].command");
  ExpectFieldError(w("      command: []\n"), 1, "spec.workloads[0].command");
  ExpectFieldError(w("      command: /bin/true\n"), 1, "spec.workloads[0].command");
  ExpectFieldError(w("      command: [/bin/x, {a: b}]\n"), 1, "spec.workloads[0].command[1]");
  ExpectFieldError(w("      command: [\"\"]\n"), 1, "spec.workloads[0].command[0]");
  ExpectFieldError(w(cmd + "      env: {1BAD: x}\n"), 1, "spec.workloads[0].env.1BAD");
  ExpectFieldError(w(cmd + "      env: {GOOD: [x]}\n"), 1, "spec.workloads[0].env.GOOD");
  ExpectFieldError(w(cmd + "      env: [A=b]\n"), 1, "spec.workloads[0].env");
  ExpectFieldError(w(cmd + "      restartPolicy: always\n"), 1, "spec.workloads[0].restartPolicy");
  ExpectFieldError(w(cmd + "      devices: [/etc/passwd]\n"), 1, "spec.workloads[0].devices[0]");
  ExpectFieldError(w(cmd + "      devices: [/dev/video0, /dev/../etc/shadow]\n"), 1,
                   "spec.workloads[0].devices[1]");
  ExpectFieldError(w(cmd + "      devices: [dev/video0]\n"), 1, "spec.workloads[0].devices[0]");
  ExpectFieldError(w(cmd + "      gpus: -1\n"), 1, "spec.workloads[0].gpus");
  ExpectFieldError(w(cmd + "      gpus: some\n"), 1, "spec.workloads[0].gpus");
  ExpectFieldError(w(cmd + "      gpus: 1.5\n"), 1, "spec.workloads[0].gpus");
  ExpectFieldError(w(cmd + "      gpus: 65\n"), 1, "spec.workloads[0].gpus");
  ExpectFieldError(w(cmd + "      resources: {cpus: 1025}\n"), 1,
                   "spec.workloads[0].resources.cpus");
  ExpectFieldError(w("      command: [/bin/echo, " + std::string(70000, 'x') + "]\n"), 1,
                   "spec.workloads[0].command[1]");
  ExpectFieldError(w(cmd + "      resources: {memoryMiB: 0}\n"), 1,
                   "spec.workloads[0].resources.memoryMiB");
  ExpectFieldError(w(cmd + "      resources: {memoryMiB: 1.5}\n"), 1,
                   "spec.workloads[0].resources.memoryMiB");
  ExpectFieldError(w(cmd + "      resources: {cpus: 0}\n"), 1, "spec.workloads[0].resources.cpus");
  ExpectFieldError(w(cmd + "      resources: {cpus: lots}\n"), 1,
                   "spec.workloads[0].resources.cpus");
  ExpectFieldError(w(cmd + "      resources: {disk: 1}\n"), 1, "spec.workloads[0].resources.disk");
  ExpectFieldError(w(cmd + "      workingDir: relative/dir\n"), 1, "spec.workloads[0].workingDir");
  ExpectFieldError(w(cmd + "      user: \"bad user\"\n"), 1, "spec.workloads[0].user");
  ExpectFieldError(w(cmd + "      stopGraceSeconds: 99999\n"), 1,
                   "spec.workloads[0].stopGraceSeconds");
  ExpectFieldError(App("app", "    - name: Bad\n" + cmd), 1, "spec.workloads[0].name");
  ExpectFieldError(App("app", "    - command: [/bin/true]\n"), 1, "spec.workloads[0].name");
  ExpectFieldError(App("app", "    - name: w\n" + cmd + "    - name: w\n" + cmd), 1,
                   "spec.workloads[1].name");
  ExpectFieldError(App("app", "    []\n"), 1, "spec.workloads");
  ExpectFieldError(
      "apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata: {name: "
      "a}\nspec: {}\n",
      1, "spec.workloads");
}

TEST(ParseApplications, SelectorAndOverrideErrors) {
  ExpectFieldError(App("a", kSleeper, "", "{\"-bad\": x}"), 1, "spec.selector.matchLabels.-bad");
  ExpectFieldError(App("a", kSleeper, "", "{role: \"has space\"}"), 1,
                   "spec.selector.matchLabels.role");
  ExpectFieldError(App("a", kSleeper, "", "[role]"), 1, "spec.selector.matchLabels");
  auto with_override = [](const std::string& patch) {
    return App("a", kSleeper,
               "  overrides:\n    - selector: {matchLabels: {region: south}}\n      patches:\n"
               "        - " +
                   patch + "\n");
  };
  ExpectFieldError(with_override("{op: move, path: /workloads/0/command, from: /x}"), 1,
                   "spec.overrides[0].patches[0].from");
  ExpectFieldError(with_override("{op: move, path: /workloads/0/command}"), 1,
                   "spec.overrides[0].patches[0].op");
  ExpectFieldError(with_override("{op: replace, path: /workloads/3/env/X, value: y}"), 1,
                   "spec.overrides[0].patches[0].path");
  ExpectFieldError(with_override("{op: replace, path: /workloads/0/env/MISSING, value: y}"), 1,
                   "spec.overrides[0].patches[0].path");
  ExpectFieldError(with_override("{op: replace, path: /selector/matchLabels, value: {}}"), 1,
                   "spec.overrides[0].patches[0].path");
  ExpectFieldError(with_override("{op: replace, path: /workloads/0/env/X~2, value: y}"), 1,
                   "spec.overrides[0].patches[0].path");
  ExpectFieldError(with_override("{op: replace, path: /workloads/0/restartPolicy}"), 1,
                   "spec.overrides[0].patches[0].value");
  ExpectFieldError(with_override("{op: remove, path: /workloads/0/env, value: 1}"), 1,
                   "spec.overrides[0].patches[0].value");
  // Patches that apply but leave an invalid workload name the override.
  ExpectFieldError(with_override("{op: replace, path: /workloads/0/restartPolicy, value: Maybe}"),
                   1, "spec.overrides[0]");
  ExpectFieldError(with_override("{op: remove, path: /workloads/0}"), 1, "spec.overrides[0]");
  ExpectFieldError(App("a", kSleeper, "  overrides:\n    - selector: {}\n      patches: []\n"), 1,
                   "spec.overrides[0].patches");
  ExpectFieldError(App("a", kSleeper, "  overrides:\n    - selector: {}\n"), 1,
                   "spec.overrides[0].patches");
  // A good override: add to env (defaults make env present), append a device.
  ParseOk(with_override("{op: add, path: /workloads/0/env/EXTRA, value: \"1\"}"));
  ParseOk(with_override("{op: add, path: /workloads/0/devices/-, value: /dev/video1}"));
}

TEST(ParseApplications, InputBounds) {
  ParseError detail;
  std::string huge(kMaxManifestBytes + 1, ' ');
  auto too_big = ParseApplications(huge, &detail);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code(), Errc::kResourceExhausted);

  // Deep flow nesting must be refused before the recursive parser sees it.
  std::string deep_flow =
      App("a", kSleeper) + "  x: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  auto flow = ParseApplications(deep_flow, &detail);
  ASSERT_FALSE(flow.ok());
  EXPECT_EQ(flow.error().code(), Errc::kResourceExhausted);

  std::string deep_block = "a:\n";
  for (int i = 1; i < 200; ++i)
    deep_block += std::string(static_cast<std::size_t>(i), ' ') + "b:\n";
  auto block = ParseApplications(deep_block, &detail);
  ASSERT_FALSE(block.ok());
  EXPECT_EQ(block.error().code(), Errc::kResourceExhausted);

  std::string dashes = "x: \n";
  for (int i = 0; i < 200; ++i)
    dashes += "- ";
  dashes += "1\n";
  auto seq = ParseApplications(dashes, &detail);
  ASSERT_FALSE(seq.ok());
  EXPECT_EQ(seq.error().code(), Errc::kResourceExhausted);

  // Billion laughs: aliases expand past the node bound.
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'j'; ++c) {
    laughs += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i)
      laughs += std::string(i ? ", *" : "*") + prev;
    laughs += "]\n";
    prev = c;
  }
  auto bomb = ParseApplications(laughs, &detail);
  ASSERT_FALSE(bomb.ok());
  EXPECT_EQ(bomb.error().code(), Errc::kResourceExhausted);

  // Brackets inside quotes, comments and block scalars are not nesting.
  std::string quoted = App(
      "a", "    - name: w\n      command: [/bin/sh, -c, \"" + std::string(100, '[') + "\"]  # " +
               std::string(100, '{') + "\n      env:\n        SCRIPT: |\n" + [] {
                 std::string s;
                 for (int i = 0; i < 60; ++i) {
                   s += std::string(static_cast<std::size_t>(10 + i), ' ') + "x\n";
                 }
                 return s;
               }());
  ParseOk(quoted);

  auto syntax = ParseApplications("a: [unclosed\n", &detail);
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(detail.document, 0);

  // Bytes that are not UTF-8 are refused, not carried into JSON or protobuf.
  auto binary =
      ParseApplications(App("a", "    - name: w\n      command: [\"/bin/\xff\xfe\"]\n"), &detail);
  ASSERT_FALSE(binary.ok());
  EXPECT_EQ(binary.error().code(), Errc::kInvalidArgument);
  ParseOk(App("a", "    - name: w\n      command: [/bin/echo, \"caf\xc3\xa9 \\u2603\"]\n"));

  auto empty = ParseApplications("---\n", &detail);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);

  auto dup = ParseApplications(App("a", kSleeper) + "metadata: {name: b}\n", &detail);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kInvalidArgument);
}

TEST(Selector, Matching) {
  Selector empty;
  EXPECT_TRUE(empty.Matches({}));
  EXPECT_TRUE(empty.Matches({{"role", "store"}}));
  Selector store{{{"role", "store"}}};
  EXPECT_TRUE(store.Matches({{"role", "store"}}));
  EXPECT_TRUE(store.Matches({{"role", "store"}, {"region", "south"}}));
  EXPECT_FALSE(store.Matches({{"role", "lab"}}));
  EXPECT_FALSE(store.Matches({}));
  Selector both{{{"role", "store"}, {"region", "south"}}};
  EXPECT_TRUE(both.Matches({{"role", "store"}, {"region", "south"}, {"x", "y"}}));
  EXPECT_FALSE(both.Matches({{"role", "store"}, {"region", "north"}}));
  EXPECT_FALSE(both.Matches({{"region", "south"}}));
  // An empty value is a value: it must be present and empty.
  Selector empty_value{{{"flag", ""}}};
  EXPECT_TRUE(empty_value.Matches({{"flag", ""}}));
  EXPECT_FALSE(empty_value.Matches({}));
}

TEST(Labels, Syntax) {
  EXPECT_EQ(LabelKeyProblem("role"), "");
  EXPECT_EQ(LabelKeyProblem("example.com/role"), "");
  EXPECT_EQ(LabelKeyProblem("a_b.c-d"), "");
  EXPECT_NE(LabelKeyProblem(""), "");
  EXPECT_NE(LabelKeyProblem("-role"), "");
  EXPECT_NE(LabelKeyProblem("Example.com/role"), "");
  EXPECT_NE(LabelKeyProblem("example.com/"), "");
  EXPECT_NE(LabelKeyProblem(std::string(64, 'a')), "");
  EXPECT_EQ(LabelValueProblem(""), "");
  EXPECT_EQ(LabelValueProblem("South_1.a"), "");
  EXPECT_NE(LabelValueProblem("a b"), "");
  EXPECT_NE(LabelValueProblem(std::string(64, 'a')), "");
  EXPECT_TRUE(ValidateLabels({{"role", "store"}}).ok());
  auto bad = ValidateLabels({{"role", "bad value"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(IsDnsLabel("a-1"));
  EXPECT_FALSE(IsDnsLabel("A"));
  EXPECT_FALSE(IsDnsLabel("a_b"));
  EXPECT_FALSE(IsDnsLabel(""));
}

TEST(Patches, AddReplaceRemove) {
  json doc = json::parse(R"({"workloads":[{"env":{"A":"1"},"devices":["/dev/a"]}]})");
  std::vector<Patch> patches = {
      {Patch::Op::kAdd, "/workloads/0/env/B", "2"},
      {Patch::Op::kReplace, "/workloads/0/env/A", "one"},
      {Patch::Op::kAdd, "/workloads/0/devices/0", "/dev/first"},
      {Patch::Op::kAdd, "/workloads/0/devices/-", "/dev/last"},
      {Patch::Op::kRemove, "/workloads/0/devices/1", nullptr},
  };
  ASSERT_TRUE(ApplyPatches(doc, patches).ok());
  EXPECT_EQ(doc, json::parse(R"({"workloads":[{"env":{"A":"one","B":"2"},
                                 "devices":["/dev/first","/dev/last"]}]})"));
  // add on an existing member replaces it.
  std::vector<Patch> add_existing = {{Patch::Op::kAdd, "/workloads/0/env/A", "again"}};
  ASSERT_TRUE(ApplyPatches(doc, add_existing).ok());
  EXPECT_EQ(doc["workloads"][0]["env"]["A"], "again");
  std::vector<Patch> remove = {{Patch::Op::kRemove, "/workloads/0/env", nullptr}};
  ASSERT_TRUE(ApplyPatches(doc, remove).ok());
  EXPECT_FALSE(doc["workloads"][0].contains("env"));
}

TEST(Patches, EscapesInPointers) {
  json doc = json::parse(R"({"workloads":{"a/b":1,"m~n":2,"~1":3}})");
  std::vector<Patch> patches = {
      {Patch::Op::kReplace, "/workloads/a~1b", 10},
      {Patch::Op::kReplace, "/workloads/m~0n", 20},
      {Patch::Op::kRemove, "/workloads/~01", nullptr},
  };
  ASSERT_TRUE(ApplyPatches(doc, patches).ok());
  EXPECT_EQ(doc, json::parse(R"({"workloads":{"a/b":10,"m~n":20}})"));
}

TEST(Patches, BadPathsNameThePathAndChangeNothing) {
  const json original = json::parse(R"({"workloads":[{"env":{"A":"1"}}]})");
  std::vector<Patch> bad = {
      {Patch::Op::kReplace, "/workloads/1/env/A", "x"},
      {Patch::Op::kReplace, "/workloads/0/env/B", "x"},
      {Patch::Op::kRemove, "/workloads/0/env/B", nullptr},
      {Patch::Op::kAdd, "/workloads/0/nothere/X", "x"},
      {Patch::Op::kAdd, "/workloads/2", json::object()},
      {Patch::Op::kReplace, "/workloads/01", "x"},
      {Patch::Op::kReplace, "/workloads/-", "x"},
      {Patch::Op::kAdd, "/workloads/0/env/A/deeper", "x"},
      {Patch::Op::kReplace, "workloads", "x"},
      {Patch::Op::kReplace, "/workloads/0/env/~x", "x"},
  };
  for (const Patch& p : bad) {
    json doc = original;
    // A good patch first: the whole list must be all or nothing.
    std::vector<Patch> patches = {{Patch::Op::kAdd, "/workloads/0/env/C", "3"}, p};
    Status s = ApplyPatches(doc, patches);
    ASSERT_FALSE(s.ok()) << p.path;
    EXPECT_EQ(s.error().code(), Errc::kInvalidArgument);
    EXPECT_NE(s.error().message().find(p.path), std::string::npos) << s.error().message();
    EXPECT_EQ(doc, original) << p.path;
  }
}

TEST(SpecHash, DeterministicAndSensitive) {
  v1::WorkloadSpec a;
  a.set_name("x.y");
  a.add_command("/bin/true");
  (*a.mutable_env())["B"] = "2";
  (*a.mutable_env())["A"] = "1";
  v1::WorkloadSpec b;
  b.set_name("x.y");
  b.add_command("/bin/true");
  (*b.mutable_env())["A"] = "1";
  (*b.mutable_env())["B"] = "2";
  EXPECT_EQ(SpecHash(a), SpecHash(b));
  b.set_spec_hash("ignored");
  EXPECT_EQ(SpecHash(a), SpecHash(b));
  b.add_command("--flag");
  EXPECT_NE(SpecHash(a), SpecHash(b));
}

TEST(RenderDevice, SelectsSortsAndOverrides) {
  auto apps = ParseOk(std::string(kFaceDetection) + "---\n" +
                      App("analytics", kSleeper, "", "{role: store}") + "---\n" +
                      App("lab-only", kSleeper, "", "{role: lab}"));
  ASSERT_EQ(apps.size(), 3u);

  RenderedDevice north = RenderDevice({{"role", "store"}, {"region", "north"}}, apps);
  ASSERT_EQ(north.workloads.size(), 2u);
  EXPECT_EQ(north.workloads[0].name(), "analytics.sleeper");
  EXPECT_EQ(north.workloads[1].name(), "face-detection.detector");
  EXPECT_EQ(north.workloads[1].env().at("LOG_LEVEL"), "info");
  EXPECT_EQ(north.app_hashes.size(), 2u);
  EXPECT_TRUE(north.warnings.empty());

  RenderedDevice south = RenderDevice({{"role", "store"}, {"region", "south"}}, apps);
  ASSERT_EQ(south.workloads.size(), 2u);
  EXPECT_EQ(south.workloads[1].env().at("LOG_LEVEL"), "debug");
  EXPECT_EQ(south.workloads[1].spec_hash(), SpecHash(south.workloads[1]));
  EXPECT_NE(south.workloads[1].spec_hash(), north.workloads[1].spec_hash());
  EXPECT_NE(south.hash, north.hash);
  EXPECT_EQ(south.app_hashes.at("analytics"), north.app_hashes.at("analytics"));
  EXPECT_NE(south.app_hashes.at("face-detection"), north.app_hashes.at("face-detection"));

  // Stable: the same inputs in another order render the same hash.
  std::vector<Application> reversed(apps.rbegin(), apps.rend());
  EXPECT_EQ(RenderDevice({{"role", "store"}, {"region", "north"}}, reversed).hash, north.hash);

  RenderedDevice nothing = RenderDevice({{"role", "warehouse"}}, apps);
  EXPECT_TRUE(nothing.workloads.empty());
  EXPECT_TRUE(nothing.app_hashes.empty());
  EXPECT_EQ(nothing.hash, RenderDevice({}, std::span<const Application>()).hash);
}

TEST(RenderDevice, ConflictingOverridesAreSkippedWithAWarning) {
  // Each override applies on its own; together the second no longer resolves.
  auto apps =
      ParseOk(App("two",
                  "    - name: a\n      command: [/bin/a]\n"
                  "    - name: b\n      command: [/bin/b]\n",
                  "  overrides:\n"
                  "    - selector: {matchLabels: {drop: b}}\n"
                  "      patches: [{op: remove, path: /workloads/1}]\n"
                  "    - selector: {matchLabels: {debug: b}}\n"
                  "      patches: [{op: add, path: /workloads/1/env/DEBUG, value: '1'}]\n"));
  ASSERT_EQ(apps.size(), 1u);
  RenderedDevice both = RenderDevice({{"drop", "b"}, {"debug", "b"}}, apps);
  ASSERT_EQ(both.workloads.size(), 1u);
  EXPECT_EQ(both.workloads[0].name(), "two.a");
  ASSERT_EQ(both.warnings.size(), 1u);
  RenderedDevice debug = RenderDevice({{"debug", "b"}}, apps);
  ASSERT_EQ(debug.workloads.size(), 2u);
  EXPECT_EQ(debug.workloads[1].env().at("DEBUG"), "1");
}

TEST(RenderDevice, CapsTheWorkloadsOfOneDevice) {
  std::string yaml;
  for (char app = 'a'; app <= 'e'; ++app) {
    std::string workloads;
    for (std::size_t i = 0; i < kMaxWorkloads; ++i) {
      workloads += "    - name: w" + std::to_string(i) + "\n      command: [/bin/true]\n";
    }
    yaml += App(std::string(1, app), workloads) + "---\n";
  }
  auto apps = ParseOk(yaml);
  ASSERT_EQ(apps.size(), 5u);
  RenderedDevice out = RenderDevice({}, apps);
  EXPECT_EQ(out.workloads.size(), kMaxDeviceWorkloads);
  EXPECT_EQ(out.workloads.back().app(), "d");
  EXPECT_FALSE(out.app_hashes.contains("e"));
  ASSERT_EQ(out.warnings.size(), 1u);
  EXPECT_TRUE(out.warnings[0].starts_with("e: ")) << out.warnings[0];
}

TEST(WorkloadFromJson, ValidatesPatchedForms) {
  auto ok = WorkloadFromJson(json::parse(R"({"name":"w","command":["/bin/true"]})"), "app",
                             "spec.workloads[0]");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->name(), "app.w");
  auto bad = WorkloadFromJson(json::parse(R"({"name":"w","command":["/bin/true"],"gpus":"x"})"),
                              "app", "spec.workloads[0]");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.error().message().starts_with("spec.workloads[0].gpus: "));
}

}  // namespace
}  // namespace outpost::hub::apps
