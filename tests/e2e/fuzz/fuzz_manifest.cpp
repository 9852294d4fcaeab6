// Fuzz target: the hub's manifest parser (hub/apps ParseApplications), the
// untrusted YAML that `outpostctl apply` sends, and what the hub renders
// from it.
//
// Invariants, for every manifest the parser accepts:
//   - the canonical form round-trips (ApplicationFromCanonical gives the same
//     spec_json and content_hash: what the registry stores reloads equal);
//   - rendering is deterministic;
//   - every document the hub would render for a device (no labels, or the
//     labels every selector asks for) passes the AGENT's validation: the
//     hub never publishes a document its agents refuse.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/sync/validate.hpp"
#include "hub/apps/apps.hpp"
#include "outpost.pb.h"
#include "shared/core/log.hpp"
#include "tests/e2e/fuzz/fuzz_support.hpp"

namespace {

using namespace outpost;

void CheckRendered(const hub::apps::RenderedDevice& r, const std::string& labels_desc) {
  outpost::v1::DesiredState doc;
  doc.set_device_id("dev-1");
  doc.set_generation(1);
  for (const auto& w : r.workloads) {
    OUTPOST_FUZZ_CHECK(agent::sync::ValidWorkloadName(w.name()), "rendered name " + w.name());
    Status valid = agent::sync::ValidateWorkload(w);
    OUTPOST_FUZZ_CHECK(valid.ok(), "the agent refuses a rendered spec (" + labels_desc +
                                       "): " + (valid.ok() ? "" : valid.error().message()));
    *doc.add_workloads() = w;
  }
  Status whole = agent::sync::ValidateAndNormalize(doc);
  OUTPOST_FUZZ_CHECK(whole.ok(), "the agent refuses the rendered document: " +
                                     (whole.ok() ? "" : whole.error().message()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static bool quiet = [] {
    fuzz::QuietLogs();
    return true;
  }();
  (void)quiet;
  std::string_view yaml(reinterpret_cast<const char*>(data), size);
  hub::apps::ParseError where;
  auto parsed = hub::apps::ParseApplications(yaml, &where);
  if (!parsed.ok()) {
    OUTPOST_FUZZ_CHECK(!parsed.error().message().empty(), "an error without a message");
    return 0;
  }
  hub::apps::Labels all_labels;
  for (const auto& app : *parsed) {
    auto again = hub::apps::ApplicationFromCanonical(app.name, app.spec_json);
    OUTPOST_FUZZ_CHECK(again.ok(), "canonical form does not reload: " + app.name + ": " +
                                       (again.ok() ? "" : again.error().message()));
    OUTPOST_FUZZ_CHECK(again->spec_json == app.spec_json, "canonical form changed on reload");
    OUTPOST_FUZZ_CHECK(again->content_hash == app.content_hash, "content hash changed on reload");
    (void)hub::apps::ApplicationToJson(app).dump();
    for (const auto& [k, v] : app.selector.match_labels)
      all_labels[k] = v;
    for (const auto& o : app.overrides)
      for (const auto& [k, v] : o.selector.match_labels)
        all_labels[k] = v;
  }
  for (const auto& labels : {hub::apps::Labels{}, all_labels}) {
    auto a = hub::apps::RenderDevice(labels, *parsed);
    auto b = hub::apps::RenderDevice(labels, *parsed);
    OUTPOST_FUZZ_CHECK(a.hash == b.hash, "rendering is not deterministic");
    CheckRendered(a, labels.empty() ? "no labels" : "every selector's labels");
  }
  return 0;
}
