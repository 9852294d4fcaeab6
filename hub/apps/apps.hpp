// outpost::hub::apps — the EdgeApplication model: parsing and validating
// manifests, selector matching, JSON-patch overrides, and rendering the
// workload list of one device. Pure logic: no database, no clock, no I/O.
//
// Manifest (see shared/CONTRACT.md):
//   apiVersion: outpost.dev/v1alpha1
//   kind: EdgeApplication
//   metadata: {name: <DNS label>}
//   spec:
//     selector: {matchLabels: {k: v}}          # optional; empty matches every device
//     workloads:                                # non-empty
//       - name: <DNS label, unique in the app>
//         kind: process                         # default process; container: not supported yet
//         command: [<string>, ...]              # non-empty
//         env: {NAME: value}                    # names [A-Za-z_][A-Za-z0-9_]*
//         restartPolicy: Always|OnFailure|Never # default Always
//         devices: [/dev/...]                   # absolute, under /dev, no ".."; <= 64
//         gpus: 0 | N | all                     # N <= 64
//         resources: {memoryMiB: int>0, cpus: number>0}  # cpus <= 1024
//         workingDir: <absolute path>
//         user: <name or uid>
//         stopGraceSeconds: 0..3600             # Outpost extension (WorkloadSpec field 13)
//     overrides:
//       - selector: {matchLabels: {k: v}}
//         patches: [{op: add|replace|remove, path: /workloads/0/env/X, value: ...}]
//
// Errors: every validation error is kInvalidArgument with one line
//   document <N> (<name>): <field path>: <problem>
// e.g. `document 2 (face-detection): spec.workloads[0].restartPolicy: "Sometimes"
// is not one of Always, OnFailure, Never`. Documents count from 1; the name is
// "?" when the document has none yet. ParseError gives the same pieces apart.
//
// Canonical form: a validated application keeps its spec as JSON with the
// defaults filled in (kind, restartPolicy), keys sorted (nlohmann's std::map);
// `spec_json` is that text and `content_hash` the SHA-256 hex of name + spec,
// so re-applying an identical manifest (even formatted differently) is
// detected as unchanged.
//
// Overrides: patch paths are relative to `spec` and must point into
// `/workloads`. ParseApplications checks, for every override, that its patches
// apply to the base spec and that the result is still valid (each override on
// its own: overrides with disjoint selectors may legitimately conflict, as no
// device gets both). When several overrides match a device
// their patches are applied in manifest order; if that combination does not
// apply, the failing override is skipped for that device and a warning is
// returned in RenderedDevice::warnings (the device still gets the app).
//
// Thread safety: all functions are pure; Application values are immutable
// after parsing and may be shared between threads (const).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace outpost::hub::apps {

inline constexpr std::string_view kApiVersion = "outpost.dev/v1alpha1";
inline constexpr std::string_view kKind = "EdgeApplication";
// Bounds on untrusted manifests (docs/protocol.md: manifests up to 1 MiB).
inline constexpr std::size_t kMaxManifestBytes = 1 << 20;
inline constexpr int kMaxNestingDepth = 32;        // YAML/JSON nesting levels
inline constexpr std::size_t kMaxDocuments = 256;  // EdgeApplications per manifest
inline constexpr std::size_t kMaxWorkloads = 64;   // per application
// Per device document (the agent refuses more). RenderDevice skips, with a
// warning, the applications (in name order) that would go past it.
inline constexpr std::size_t kMaxDeviceWorkloads = 256;

using Labels = std::map<std::string, std::string>;

// matchLabels: every pair must be present with an equal value. An empty
// selector matches every device.
struct Selector {
  Labels match_labels;

  bool Matches(const Labels& labels) const;
  bool empty() const { return match_labels.empty(); }
  bool operator==(const Selector&) const = default;
};

// One RFC 6902 operation (the add/replace/remove subset).
struct Patch {
  enum class Op { kAdd, kReplace, kRemove };
  Op op = Op::kReplace;
  std::string path;      // JSON Pointer relative to spec, e.g. /workloads/0/env/LOG_LEVEL
  nlohmann::json value;  // for add and replace
};

struct Override {
  Selector selector;
  std::vector<Patch> patches;
};

// A validated EdgeApplication.
struct Application {
  std::string name;
  Selector selector;
  std::vector<Override> overrides;
  // The spec in canonical JSON form: {"selector":..., "workloads":[...],
  // "overrides":[...]} with defaults filled in.
  nlohmann::json spec;
  std::string spec_json;     // spec.dump(): the stored and compared form
  std::string content_hash;  // SHA-256 hex over name and spec_json
  // The workloads without any override, converted (names "<app>.<workload>",
  // app and spec_hash set). Rendering uses these directly for devices that no
  // override selects.
  std::vector<outpost::v1::WorkloadSpec> base_workloads;
};

// Where a validation error is; also rendered into Error::message().
struct ParseError {
  int document = 0;     // 1-based; 0 when the error is about the whole input
  std::string name;     // metadata.name, "?" when unknown
  std::string field;    // "spec.workloads[0].restartPolicy"; "" for the document itself
  std::string problem;  // "\"Sometimes\" is not one of Always, OnFailure, Never"
};

// Parses one or more YAML documents (separated by `---`; empty documents are
// skipped) into validated applications, in input order. Fails on the first
// problem (kInvalidArgument; kResourceExhausted when the input is over
// kMaxManifestBytes, nests deeper than kMaxNestingDepth or has too many
// documents); `error`, when given, receives the pieces. Two documents with the
// same name are an error.
Result<std::vector<Application>> ParseApplications(std::string_view yaml,
                                                   ParseError* error = nullptr);

// Rebuilds an application from its stored canonical form (name + spec_json)
// and validates it again. Errors name document 1.
Result<Application> ApplicationFromCanonical(std::string_view name, std::string_view spec_json);

// The whole manifest as JSON: {apiVersion, kind, metadata: {name}, spec}.
// For `get apps -o json|yaml`.
nlohmann::json ApplicationToJson(const Application& app);

// Applies patches in order to `doc` (RFC 6902 add/replace/remove; JSON Pointer
// with ~0 = '~' and ~1 = '/'; "-" as the last array index for add). Fails with
// kInvalidArgument naming the path that does not resolve. On failure `doc` is
// left unchanged.
Status ApplyPatches(nlohmann::json& doc, std::span<const Patch> patches);

// Validates and converts one workload of spec JSON (the canonical or a patched
// form) to a WorkloadSpec for app `app_name`: name "<app>.<workload>", app
// set, spec_hash set. `field` is the path used in errors
// ("spec.workloads[0]"). Errors are kInvalidArgument "<field>.<sub>: <problem>".
Result<outpost::v1::WorkloadSpec> WorkloadFromJson(const nlohmann::json& workload,
                                                   std::string_view app_name,
                                                   std::string_view field);

// Hex SHA-256 of the spec deterministically serialized with spec_hash empty.
std::string SpecHash(const outpost::v1::WorkloadSpec& spec);

// What one device should run.
struct RenderedDevice {
  // Every matching application's workloads, applications sorted by name,
  // workloads in manifest order.
  std::vector<outpost::v1::WorkloadSpec> workloads;
  // SHA-256 hex over the list (names and spec hashes, in order): equal hash,
  // equal document content.
  std::string hash;
  // For each matching application: SHA-256 hex of its workloads on this
  // device (after overrides). The registry remembers the generation at which
  // each app's content first reached the device (rollout status).
  std::map<std::string, std::string> app_hashes;
  // Overrides that matched but could not be applied on this device.
  std::vector<std::string> warnings;
};

// Renders one device: applications whose selector matches `labels`, each with
// its matching overrides applied in order. `applications` need not be sorted.
RenderedDevice RenderDevice(const Labels& labels, std::span<const Application> applications);
// The same over pointers (the registry keeps its applications in a map).
RenderedDevice RenderDevice(const Labels& labels, std::span<const Application* const> applications);

// Label syntax (Kubernetes): key = [prefix/]name, prefix a DNS subdomain of at
// most 253 characters, name 1-63 of [A-Za-z0-9-_.] starting and ending
// alphanumeric; value 0-63 of the same, starting and ending alphanumeric when
// not empty. Return "" when valid, else the problem.
std::string LabelKeyProblem(std::string_view key);
std::string LabelValueProblem(std::string_view value);
// Validates a whole label map; errors are kInvalidArgument "labels: ...".
Status ValidateLabels(const Labels& labels);
// DNS label: 1-63 of [a-z0-9-], not starting or ending with '-'.
bool IsDnsLabel(std::string_view name);

}  // namespace outpost::hub::apps
