#include "hub/apps/apps.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "shared/crypto/crypto.hpp"

namespace outpost::hub::apps {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxYamlNodes = 200000;  // after alias expansion
constexpr std::size_t kMaxCommandArgs = 1024;
constexpr std::size_t kMaxEnvVars = 1024;
constexpr std::size_t kMaxDevices = 64;  // the agent's limits (agent/sync/validate.cpp)
constexpr std::size_t kMaxArgBytes = 64 * 1024;
constexpr std::size_t kMaxPathLength = 4096;
constexpr std::size_t kMaxOverrides = 256;
constexpr std::size_t kMaxPatches = 256;
constexpr std::int64_t kMaxGpus = 64;
constexpr std::int64_t kMaxMemoryMiB = 1 << 24;  // 16 TiB
constexpr double kMaxCpus = 1024;
constexpr std::int64_t kMaxStopGraceSeconds = 3600;

// A validation problem: where and what.
struct FieldError {
  std::string field;
  std::string problem;
};
using Check = std::optional<FieldError>;

std::string Join(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  return std::string(a) + "." + std::string(b);
}

std::string Index(std::string_view field, std::size_t i) {
  return std::string(field) + "[" + std::to_string(i) + "]";
}

// A short printable rendering of a value for error messages.
std::string Describe(const json& value) {
  std::string text = value.dump(-1, ' ', true, json::error_handler_t::replace);
  if (text.size() > 64) text = text.substr(0, 61) + "...";
  return text;
}

// A field name for an error path: plain when it is a simple identifier.
std::string FieldName(std::string_view key) {
  bool plain = !key.empty() && key.size() <= 64 && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
           c == '/';
  });
  if (plain) return std::string(key);
  return Describe(json(std::string(key)));
}

Check UnknownFields(const json& object, std::string_view field,
                    std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : object.items()) {
    (void)value;
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return FieldError{Join(field, FieldName(key)), "unknown field"};
    }
  }
  return std::nullopt;
}

bool IsInteger(const json& v) {
  return v.is_number_integer() || v.is_number_unsigned();
}

// The scalar as a string: strings as they are, numbers and booleans as their
// text (so `env: {PORT: 8080}` works). nullopt for null, lists, mappings.
std::optional<std::string> ScalarText(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return std::nullopt;
}

bool HasNul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

bool IsEnvName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  if (std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool IsUserName(std::string_view name) {
  if (name.empty() || name.size() > 32 || name[0] == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// "/a/b/../c" has a ".." component.
bool HasDotComponent(std::string_view path) {
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    if (part == ".." || part == ".") return true;
    pos = slash + 1;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Labels and selectors

bool IsLabelNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

std::string LabelNameProblem(std::string_view name, std::string_view what) {
  if (name.size() > 63) return std::string(what) + " must be at most 63 characters";
  if (!std::all_of(name.begin(), name.end(), IsLabelNameChar) ||
      !std::isalnum(static_cast<unsigned char>(name.front())) ||
      !std::isalnum(static_cast<unsigned char>(name.back()))) {
    return std::string(what) +
           " must consist of letters, digits, '-', '_' or '.', and start and end with a letter "
           "or digit";
  }
  return "";
}

Check ConvertLabelMap(const json& value, std::string_view field, Labels* out, json* canon) {
  if (value.is_null()) {
    *canon = json::object();
    return std::nullopt;
  }
  if (!value.is_object()) return FieldError{std::string(field), "must be a mapping of labels"};
  *canon = json::object();
  for (const auto& [key, v] : value.items()) {
    std::string sub = Join(field, FieldName(key));
    if (std::string problem = LabelKeyProblem(key); !problem.empty()) {
      return FieldError{sub, problem};
    }
    std::optional<std::string> text = ScalarText(v);
    if (!text) return FieldError{sub, "must be a string"};
    if (std::string problem = LabelValueProblem(*text); !problem.empty()) {
      return FieldError{sub, Describe(json(*text)) + ": " + problem};
    }
    (*out)[key] = *text;
    (*canon)[key] = *text;
  }
  return std::nullopt;
}

// selector: {matchLabels: {...}}; absent or null is the empty selector.
Check ConvertSelector(const json& value, std::string_view field, Selector* out, json* canon) {
  *canon = json{{"matchLabels", json::object()}};
  if (value.is_null()) return std::nullopt;
  if (!value.is_object()) return FieldError{std::string(field), "must be a mapping"};
  if (Check e = UnknownFields(value, field, {"matchLabels"})) return e;
  if (value.contains("matchLabels")) {
    return ConvertLabelMap(value["matchLabels"], Join(field, "matchLabels"), &out->match_labels,
                           &(*canon)["matchLabels"]);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Workloads

Check ConvertWorkload(const json& w, std::string_view app, const std::string& f,
                      v1::WorkloadSpec* spec, json* canon) {
  if (!w.is_object()) return FieldError{f, "must be a mapping"};
  if (Check e = UnknownFields(w, f,
                              {"name", "kind", "command", "env", "restartPolicy", "devices", "gpus",
                               "resources", "workingDir", "user", "stopGraceSeconds"})) {
    return e;
  }
  *canon = json::object();
  spec->Clear();

  // name
  if (!w.contains("name")) return FieldError{Join(f, "name"), "is required"};
  const json& name = w["name"];
  if (!name.is_string()) return FieldError{Join(f, "name"), "must be a string"};
  std::string wname = name.get<std::string>();
  if (!IsDnsLabel(wname)) {
    return FieldError{Join(f, "name"),
                      Describe(name) +
                          " is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending "
                          "with '-')"};
  }
  if (app.size() + 1 + wname.size() > 127) {
    return FieldError{Join(f, "name"),
                      "application and workload name together exceed 126 characters"};
  }
  (*canon)["name"] = wname;
  spec->set_name(std::string(app) + "." + wname);
  spec->set_app(std::string(app));

  // kind
  if (w.contains("kind")) {
    const json& kind = w["kind"];
    if (!kind.is_string()) return FieldError{Join(f, "kind"), "must be a string"};
    if (kind == "container") {
      return FieldError{Join(f, "kind"), "container workloads are not supported yet"};
    }
    if (kind != "process") {
      return FieldError{Join(f, "kind"), Describe(kind) + " is not one of process, container"};
    }
  }
  (*canon)["kind"] = "process";
  spec->set_kind(v1::WORKLOAD_KIND_PROCESS);

  // command
  if (!w.contains("command")) return FieldError{Join(f, "command"), "is required"};
  const json& command = w["command"];
  if (!command.is_array()) {
    return FieldError{Join(f, "command"), "must be a list of strings (the argv)"};
  }
  if (command.empty()) return FieldError{Join(f, "command"), "must not be empty"};
  if (command.size() > kMaxCommandArgs) {
    return FieldError{Join(f, "command"),
                      "has more than " + std::to_string(kMaxCommandArgs) + " arguments"};
  }
  (*canon)["command"] = json::array();
  for (std::size_t i = 0; i < command.size(); ++i) {
    std::optional<std::string> arg = ScalarText(command[i]);
    if (!arg) return FieldError{Index(Join(f, "command"), i), "must be a string"};
    if (HasNul(*arg)) return FieldError{Index(Join(f, "command"), i), "contains a NUL character"};
    if (arg->size() > kMaxArgBytes) {
      return FieldError{Index(Join(f, "command"), i),
                        "is longer than " + std::to_string(kMaxArgBytes) + " bytes"};
    }
    if (i == 0 && arg->empty()) {
      return FieldError{Index(Join(f, "command"), i), "must not be empty (the program)"};
    }
    (*canon)["command"].push_back(*arg);
    spec->add_command(*arg);
  }

  // env
  (*canon)["env"] = json::object();
  if (w.contains("env") && !w["env"].is_null()) {
    const json& env = w["env"];
    if (!env.is_object()) return FieldError{Join(f, "env"), "must be a mapping of NAME: value"};
    if (env.size() > kMaxEnvVars) {
      return FieldError{Join(f, "env"),
                        "has more than " + std::to_string(kMaxEnvVars) + " entries"};
    }
    for (const auto& [key, value] : env.items()) {
      std::string sub = Join(Join(f, "env"), FieldName(key));
      if (!IsEnvName(key)) {
        return FieldError{sub,
                          Describe(json(key)) +
                              " is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"};
      }
      std::optional<std::string> text = ScalarText(value);
      if (!text) return FieldError{sub, "must be a string"};
      if (HasNul(*text)) return FieldError{sub, "contains a NUL character"};
      (*canon)["env"][key] = *text;
      (*spec->mutable_env())[key] = *text;
    }
  }

  // restartPolicy
  std::string policy = "Always";
  if (w.contains("restartPolicy")) {
    const json& p = w["restartPolicy"];
    if (!p.is_string() || (p != "Always" && p != "OnFailure" && p != "Never")) {
      return FieldError{Join(f, "restartPolicy"),
                        Describe(p) + " is not one of Always, OnFailure, Never"};
    }
    policy = p.get<std::string>();
  }
  (*canon)["restartPolicy"] = policy;
  spec->set_restart_policy(policy == "Always"      ? v1::RESTART_POLICY_ALWAYS
                           : policy == "OnFailure" ? v1::RESTART_POLICY_ON_FAILURE
                                                   : v1::RESTART_POLICY_NEVER);

  // devices
  (*canon)["devices"] = json::array();
  if (w.contains("devices") && !w["devices"].is_null()) {
    const json& devices = w["devices"];
    if (!devices.is_array()) return FieldError{Join(f, "devices"), "must be a list of paths"};
    if (devices.size() > kMaxDevices) {
      return FieldError{Join(f, "devices"),
                        "has more than " + std::to_string(kMaxDevices) + " entries"};
    }
    for (std::size_t i = 0; i < devices.size(); ++i) {
      std::string sub = Index(Join(f, "devices"), i);
      if (!devices[i].is_string()) return FieldError{sub, "must be a string"};
      std::string path = devices[i].get<std::string>();
      if (path.size() > kMaxPathLength || HasNul(path) || !path.starts_with("/dev/") ||
          path.size() == 5 || HasDotComponent(path)) {
        return FieldError{
            sub, Describe(devices[i]) + " is not an absolute path under /dev (without . or ..)"};
      }
      (*canon)["devices"].push_back(path);
      spec->add_devices(path);
    }
  }

  // gpus
  if (w.contains("gpus") && !w["gpus"].is_null()) {
    const json& g = w["gpus"];
    if (g.is_string() && g == "all") {
      spec->mutable_gpus()->set_all(true);
    } else if (IsInteger(g) && g.get<std::int64_t>() >= 0 && g.get<std::int64_t>() <= kMaxGpus &&
               !(g.is_number_unsigned() && g.get<std::uint64_t>() > kMaxGpus)) {
      spec->mutable_gpus()->set_count(static_cast<std::uint32_t>(g.get<std::int64_t>()));
    } else {
      return FieldError{Join(f, "gpus"), Describe(g) + " is not 0, a number of GPUs, or \"all\""};
    }
    (*canon)["gpus"] = g;
  }

  // resources
  if (w.contains("resources") && !w["resources"].is_null()) {
    const json& r = w["resources"];
    std::string rf = Join(f, "resources");
    if (!r.is_object()) return FieldError{rf, "must be a mapping"};
    if (Check e = UnknownFields(r, rf, {"memoryMiB", "cpus"})) return e;
    json rc = json::object();
    if (r.contains("memoryMiB")) {
      const json& m = r["memoryMiB"];
      bool ok = IsInteger(m) && !(m.is_number_unsigned() && m.get<std::uint64_t>() > kMaxMemoryMiB);
      if (ok) ok = m.get<std::int64_t>() > 0 && m.get<std::int64_t>() <= kMaxMemoryMiB;
      if (!ok) {
        return FieldError{Join(rf, "memoryMiB"),
                          Describe(m) + " is not a whole number of MiB greater than 0"};
      }
      rc["memoryMiB"] = m;
      spec->mutable_resources()->set_memory_mib(static_cast<std::uint32_t>(m.get<std::int64_t>()));
    }
    if (r.contains("cpus")) {
      const json& c = r["cpus"];
      double cpus = c.is_number() ? c.get<double>() : 0.0;
      auto milli = std::llround(cpus * 1000.0);
      if (!c.is_number() || !std::isfinite(cpus) || cpus <= 0 || cpus > kMaxCpus || milli < 1) {
        return FieldError{Join(rf, "cpus"),
                          Describe(c) + " is not a number of CPUs greater than 0 (e.g. 1.5)"};
      }
      rc["cpus"] = c;
      spec->mutable_resources()->set_milli_cpus(static_cast<std::uint32_t>(milli));
    }
    (*canon)["resources"] = rc;
  }

  // workingDir
  if (w.contains("workingDir") && !w["workingDir"].is_null()) {
    const json& d = w["workingDir"];
    if (!d.is_string()) return FieldError{Join(f, "workingDir"), "must be a string"};
    std::string dir = d.get<std::string>();
    if (dir.empty() || dir[0] != '/' || dir.size() > kMaxPathLength || HasNul(dir)) {
      return FieldError{Join(f, "workingDir"), Describe(d) + " is not an absolute path"};
    }
    (*canon)["workingDir"] = dir;
    spec->set_working_dir(dir);
  }

  // user
  if (w.contains("user") && !w["user"].is_null()) {
    std::optional<std::string> user = ScalarText(w["user"]);
    if (!user || !IsUserName(*user)) {
      return FieldError{
          Join(f, "user"),
          Describe(w["user"]) + " is not a user name or uid (1-32 of A-Z a-z 0-9 _ . -)"};
    }
    (*canon)["user"] = *user;
    spec->set_user(*user);
  }

  // stopGraceSeconds
  if (w.contains("stopGraceSeconds") && !w["stopGraceSeconds"].is_null()) {
    const json& s = w["stopGraceSeconds"];
    bool ok = IsInteger(s) && !(s.is_number_unsigned() && s.get<std::uint64_t>() > 3600);
    if (ok) ok = s.get<std::int64_t>() >= 0 && s.get<std::int64_t>() <= kMaxStopGraceSeconds;
    if (!ok) return FieldError{Join(f, "stopGraceSeconds"), Describe(s) + " is not 0..3600"};
    (*canon)["stopGraceSeconds"] = s;
    spec->set_stop_grace_seconds(static_cast<std::uint32_t>(s.get<std::int64_t>()));
  }

  spec->set_spec_hash(SpecHash(*spec));
  return std::nullopt;
}

// The workload list of a spec; `field` is "spec.workloads".
Check ConvertWorkloads(const json& workloads, std::string_view app, const std::string& field,
                       std::vector<v1::WorkloadSpec>* specs, json* canon) {
  if (workloads.is_null()) return FieldError{field, "is required"};
  if (!workloads.is_array()) return FieldError{field, "must be a list of workloads"};
  if (workloads.empty()) return FieldError{field, "must not be empty"};
  if (workloads.size() > kMaxWorkloads) {
    return FieldError{field, "has more than " + std::to_string(kMaxWorkloads) + " workloads"};
  }
  *canon = json::array();
  specs->clear();
  std::set<std::string> names;
  for (std::size_t i = 0; i < workloads.size(); ++i) {
    v1::WorkloadSpec spec;
    json wc;
    std::string f = Index(field, i);
    if (Check e = ConvertWorkload(workloads[i], app, f, &spec, &wc)) return e;
    if (!names.insert(wc["name"].get<std::string>()).second) {
      return FieldError{Join(f, "name"),
                        Describe(wc["name"]) + " is used by another workload of this application"};
    }
    canon->push_back(std::move(wc));
    specs->push_back(std::move(spec));
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// JSON Pointer and patches

Result<std::vector<std::string>> ParsePointer(std::string_view path) {
  std::vector<std::string> tokens;
  if (path.empty()) return tokens;
  if (path[0] != '/') {
    return Error(Errc::kInvalidArgument,
                 Describe(json(std::string(path))) + " is not a JSON Pointer (must start with /)");
  }
  std::size_t pos = 1;
  while (true) {
    std::size_t slash = path.find('/', pos);
    std::string_view raw =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    std::string token;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '~') {
        token.push_back(raw[i]);
        continue;
      }
      if (i + 1 < raw.size() && raw[i + 1] == '0') {
        token.push_back('~');
      } else if (i + 1 < raw.size() && raw[i + 1] == '1') {
        token.push_back('/');
      } else {
        return Error(Errc::kInvalidArgument,
                     Describe(json(std::string(path))) + " has a '~' not followed by 0 or 1");
      }
      ++i;
    }
    tokens.push_back(std::move(token));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return tokens;
}

std::optional<std::size_t> ArrayIndex(std::string_view token) {
  if (token.empty() || token.size() > 9) return std::nullopt;
  if (token.size() > 1 && token[0] == '0') return std::nullopt;
  std::size_t value = 0;
  auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || ptr != token.data() + token.size()) return std::nullopt;
  return value;
}

std::string OpName(Patch::Op op) {
  switch (op) {
    case Patch::Op::kAdd:
      return "add";
    case Patch::Op::kReplace:
      return "replace";
    case Patch::Op::kRemove:
      return "remove";
  }
  return "?";
}

Status ApplyOne(json& doc, const Patch& patch) {
  OUTPOST_ASSIGN_OR_RETURN(std::vector<std::string> tokens, ParsePointer(patch.path));
  auto unresolved = [&](std::string why) {
    return Error(Errc::kInvalidArgument, OpName(patch.op) + " " + Describe(json(patch.path)) +
                                             ": path does not resolve (" + why + ")");
  };
  if (tokens.empty()) {
    if (patch.op == Patch::Op::kRemove) return unresolved("cannot remove the whole document");
    doc = patch.value;
    return OkStatus();
  }
  json* parent = &doc;
  std::string walked;
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (parent->is_object()) {
      auto it = parent->find(t);
      if (it == parent->end()) return unresolved("no " + Describe(json(walked + "/" + t)));
      parent = &*it;
    } else if (parent->is_array()) {
      std::optional<std::size_t> index = ArrayIndex(t);
      if (!index || *index >= parent->size()) {
        return unresolved("no element " + Describe(json(t)) + " in " +
                          Describe(json(walked.empty() ? "/" : walked)) + " of " +
                          std::to_string(parent->size()));
      }
      parent = &(*parent)[*index];
    } else {
      return unresolved(Describe(json(walked)) + " is not a mapping or list");
    }
    walked += "/" + t;
  }
  const std::string& last = tokens.back();
  if (parent->is_object()) {
    bool exists = parent->contains(last);
    switch (patch.op) {
      case Patch::Op::kAdd:
        (*parent)[last] = patch.value;
        return OkStatus();
      case Patch::Op::kReplace:
        if (!exists) return unresolved("no " + Describe(json(walked + "/" + last)) + " to replace");
        (*parent)[last] = patch.value;
        return OkStatus();
      case Patch::Op::kRemove:
        if (!exists) return unresolved("no " + Describe(json(walked + "/" + last)) + " to remove");
        parent->erase(last);
        return OkStatus();
    }
  } else if (parent->is_array()) {
    if (patch.op == Patch::Op::kAdd && last == "-") {
      parent->push_back(patch.value);
      return OkStatus();
    }
    std::optional<std::size_t> index = ArrayIndex(last);
    std::size_t limit = patch.op == Patch::Op::kAdd ? parent->size() + 1 : parent->size();
    if (!index || *index >= limit) {
      return unresolved("no element " + Describe(json(last)) + " in " +
                        Describe(json(walked.empty() ? "/" : walked)) + " of " +
                        std::to_string(parent->size()));
    }
    auto at = parent->begin() + static_cast<std::ptrdiff_t>(*index);
    switch (patch.op) {
      case Patch::Op::kAdd:
        parent->insert(at, patch.value);
        return OkStatus();
      case Patch::Op::kReplace:
        *at = patch.value;
        return OkStatus();
      case Patch::Op::kRemove:
        parent->erase(at);
        return OkStatus();
    }
  }
  return unresolved(Describe(json(walked.empty() ? "/" : walked)) + " is not a mapping or list");
}

Check ConvertPatch(const json& p, const std::string& f, Patch* out, json* canon) {
  if (!p.is_object()) return FieldError{f, "must be a mapping {op, path, value}"};
  if (Check e = UnknownFields(p, f, {"op", "path", "value"})) return e;
  if (!p.contains("op")) return FieldError{Join(f, "op"), "is required"};
  const json& op = p["op"];
  if (op == "add") {
    out->op = Patch::Op::kAdd;
  } else if (op == "replace") {
    out->op = Patch::Op::kReplace;
  } else if (op == "remove") {
    out->op = Patch::Op::kRemove;
  } else {
    return FieldError{Join(f, "op"), Describe(op) + " is not one of add, replace, remove"};
  }
  if (!p.contains("path")) return FieldError{Join(f, "path"), "is required"};
  if (!p["path"].is_string()) return FieldError{Join(f, "path"), "must be a string"};
  out->path = p["path"].get<std::string>();
  if (out->path != "/workloads" && !out->path.starts_with("/workloads/")) {
    return FieldError{
        Join(f, "path"),
        Describe(p["path"]) + " must point into /workloads (paths are relative to spec)"};
  }
  if (auto tokens = ParsePointer(out->path); !tokens.ok()) {
    return FieldError{Join(f, "path"), tokens.error().message()};
  }
  if (out->op == Patch::Op::kRemove) {
    if (p.contains("value")) return FieldError{Join(f, "value"), "is not used by remove"};
  } else {
    if (!p.contains("value"))
      return FieldError{Join(f, "value"), "is required for " + op.get<std::string>()};
    out->value = p["value"];
  }
  *canon = json{{"op", op}, {"path", out->path}};
  if (out->op != Patch::Op::kRemove) (*canon)["value"] = out->value;
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// The whole document

Check ConvertDocument(const json& doc, Application* app) {
  if (!doc.is_object()) return FieldError{"", "must be a mapping (an EdgeApplication)"};
  if (Check e = UnknownFields(doc, "", {"apiVersion", "kind", "metadata", "spec"})) return e;
  if (!doc.contains("apiVersion")) return FieldError{"apiVersion", "is required"};
  if (doc["apiVersion"] != kApiVersion) {
    return FieldError{"apiVersion",
                      Describe(doc["apiVersion"]) + " is not " + std::string(kApiVersion)};
  }
  if (!doc.contains("kind")) return FieldError{"kind", "is required"};
  if (doc["kind"] != kKind) {
    return FieldError{"kind", Describe(doc["kind"]) + " is not " + std::string(kKind)};
  }
  if (!doc.contains("metadata")) return FieldError{"metadata", "is required"};
  const json& metadata = doc["metadata"];
  if (!metadata.is_object()) return FieldError{"metadata", "must be a mapping"};
  if (Check e = UnknownFields(metadata, "metadata", {"name"})) return e;
  if (!metadata.contains("name")) return FieldError{"metadata.name", "is required"};
  if (!metadata["name"].is_string() || !IsDnsLabel(metadata["name"].get<std::string>())) {
    return FieldError{"metadata.name",
                      Describe(metadata["name"]) +
                          " is not a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending "
                          "with '-')"};
  }
  app->name = metadata["name"].get<std::string>();
  if (!doc.contains("spec")) return FieldError{"spec", "is required"};
  const json& spec = doc["spec"];
  if (!spec.is_object()) return FieldError{"spec", "must be a mapping"};
  if (Check e = UnknownFields(spec, "spec", {"selector", "workloads", "overrides"})) return e;

  json canon = json::object();
  const json null_value;
  if (Check e = ConvertSelector(spec.contains("selector") ? spec["selector"] : null_value,
                                "spec.selector", &app->selector, &canon["selector"])) {
    return e;
  }
  if (!spec.contains("workloads")) return FieldError{"spec.workloads", "is required"};
  if (Check e = ConvertWorkloads(spec["workloads"], app->name, "spec.workloads",
                                 &app->base_workloads, &canon["workloads"])) {
    return e;
  }

  canon["overrides"] = json::array();
  if (spec.contains("overrides") && !spec["overrides"].is_null()) {
    const json& overrides = spec["overrides"];
    if (!overrides.is_array()) return FieldError{"spec.overrides", "must be a list"};
    if (overrides.size() > kMaxOverrides) {
      return FieldError{"spec.overrides",
                        "has more than " + std::to_string(kMaxOverrides) + " overrides"};
    }
    for (std::size_t i = 0; i < overrides.size(); ++i) {
      std::string f = Index("spec.overrides", i);
      const json& o = overrides[i];
      if (!o.is_object()) return FieldError{f, "must be a mapping {selector, patches}"};
      if (Check e = UnknownFields(o, f, {"selector", "patches"})) return e;
      Override ov;
      json oc = json::object();
      if (Check e = ConvertSelector(o.contains("selector") ? o["selector"] : null_value,
                                    Join(f, "selector"), &ov.selector, &oc["selector"])) {
        return e;
      }
      if (!o.contains("patches")) return FieldError{Join(f, "patches"), "is required"};
      const json& patches = o["patches"];
      if (!patches.is_array()) return FieldError{Join(f, "patches"), "must be a list"};
      if (patches.empty()) return FieldError{Join(f, "patches"), "must not be empty"};
      if (patches.size() > kMaxPatches) {
        return FieldError{Join(f, "patches"),
                          "has more than " + std::to_string(kMaxPatches) + " patches"};
      }
      oc["patches"] = json::array();
      // The patches must apply to the base spec, one after the other, and
      // leave valid workloads.
      json patched = canon;
      for (std::size_t j = 0; j < patches.size(); ++j) {
        std::string pf = Index(Join(f, "patches"), j);
        Patch patch;
        json pc;
        if (Check e = ConvertPatch(patches[j], pf, &patch, &pc)) return e;
        if (Status s = ApplyOne(patched, patch); !s.ok()) {
          return FieldError{Join(pf, "path"), s.error().message()};
        }
        ov.patches.push_back(std::move(patch));
        oc["patches"].push_back(std::move(pc));
      }
      std::vector<v1::WorkloadSpec> specs;
      json ignored;
      if (Check e = ConvertWorkloads(patched["workloads"], app->name, "spec.workloads", &specs,
                                     &ignored)) {
        return FieldError{f, "after its patches, " + e->field + ": " + e->problem};
      }
      app->overrides.push_back(std::move(ov));
      canon["overrides"].push_back(std::move(oc));
    }
  }

  app->spec = std::move(canon);
  app->spec_json = app->spec.dump();
  app->content_hash = crypto::Sha256Hex(app->name + "\n" + app->spec_json);
  return std::nullopt;
}

// ConvertDocument with nlohmann's exceptions (which validated input should
// never raise) turned into an error instead of crossing the module boundary.
Check ConvertDocumentSafe(const json& doc, Application* app) {
  try {
    return ConvertDocument(doc, app);
  } catch (const std::exception& e) {
    return FieldError{"", std::string("cannot be processed: ") + e.what()};
  }
}

Error MakeError(Errc code, int document, const std::string& name, const FieldError& fe,
                ParseError* out) {
  if (out != nullptr) *out = ParseError{document, name, fe.field, fe.problem};
  std::string message;
  if (document == 0) {
    message = "manifest: ";
  } else {
    message = "document " + std::to_string(document) + " (" + name + "): ";
  }
  if (!fe.field.empty()) message += fe.field + ": ";
  message += fe.problem;
  return Error(code, message);
}

// ---------------------------------------------------------------------------
// YAML

// A conservative scan for nesting depth before yaml-cpp (which recurses)
// sees the text: block nesting by indentation (plus compact "- - -"
// sequences) and flow nesting by brackets, outside quotes and comments.
Status CheckNesting(std::string_view text, int max_depth) {
  std::vector<std::size_t> indents;
  int flow = 0;
  char quote = 0;                 // inside a quoted scalar spanning lines
  long block_scalar_indent = -1;  // inside a | or > block scalar of this parent indent
  std::size_t line_no = 0;
  std::size_t pos = 0;
  auto too_deep = [&]() {
    return Error(Errc::kResourceExhausted, "line " + std::to_string(line_no) +
                                               ": nesting is deeper than " +
                                               std::to_string(max_depth) + " levels");
  };
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    std::size_t indent = 0;
    while (indent < line.size() && line[indent] == ' ')
      ++indent;
    std::string_view rest = line.substr(indent);
    if (quote == 0) {
      if (rest.empty() || rest[0] == '#' || rest == "\r") continue;
      if (block_scalar_indent >= 0) {
        if (static_cast<long>(indent) > block_scalar_indent) continue;
        block_scalar_indent = -1;
      }
      if (rest.starts_with("---") || rest.starts_with("...")) {
        indents.clear();
        flow = 0;
        continue;
      }
      if (flow == 0) {
        while (!indents.empty() && indents.back() >= indent)
          indents.pop_back();
        indents.push_back(indent);
        std::size_t extra = 0;
        std::size_t i = 0;
        while (i < rest.size() && (rest[i] == '-' || rest[i] == '?') &&
               (i + 1 == rest.size() || rest[i + 1] == ' ')) {
          ++extra;
          i += 2;
          while (i < rest.size() && rest[i] == ' ')
            ++i;
        }
        if (indents.size() + extra > static_cast<std::size_t>(max_depth)) return too_deep();
      }
    }
    // Scan for brackets, quotes and comments.
    char prev = ' ';
    std::size_t last_significant = std::string_view::npos;
    for (std::size_t i = 0; i < line.size(); ++i) {
      char c = line[i];
      if (quote == '"') {
        if (c == '\\') {
          ++i;
        } else if (c == '"') {
          quote = 0;
        }
        prev = c;
        continue;
      }
      if (quote == '\'') {
        if (c == '\'') {
          if (i + 1 < line.size() && line[i + 1] == '\'') {
            ++i;
          } else {
            quote = 0;
          }
        }
        prev = c;
        continue;
      }
      bool token_start = prev == ' ' || prev == '\t' || prev == '[' || prev == '{' || prev == ',' ||
                         prev == ':' || i == 0;
      if (c == '#' && (prev == ' ' || prev == '\t' || i == 0)) break;
      if ((c == '"' || c == '\'') && token_start) {
        quote = c;
      } else if ((c == '[' || c == '{') && (token_start || flow > 0)) {
        ++flow;
        if (indents.size() + static_cast<std::size_t>(flow) > static_cast<std::size_t>(max_depth)) {
          return too_deep();
        }
      } else if ((c == ']' || c == '}') && flow > 0) {
        --flow;
      }
      if (c != ' ' && c != '\t' && c != '\r') last_significant = i;
      prev = c;
    }
    // A block scalar header ends the line: "key: |", "- >-", "key: |2+".
    if (quote == 0 && flow == 0 && last_significant != std::string_view::npos) {
      std::size_t start = last_significant;
      while (start > 0 && (std::isdigit(static_cast<unsigned char>(line[start])) ||
                           line[start] == '-' || line[start] == '+')) {
        --start;
      }
      if ((line[start] == '|' || line[start] == '>') &&
          (start == 0 || line[start - 1] == ' ' || line[start - 1] == '\t')) {
        block_scalar_indent = static_cast<long>(indent);
      }
    }
  }
  return OkStatus();
}

// Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): every string
// must survive nlohmann's dump() and protobuf's string fields.
bool IsValidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

bool IsYamlNull(std::string_view s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

std::optional<bool> YamlBool(std::string_view s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

std::optional<json> YamlInt(std::string_view s) {
  std::string_view digits = s;
  bool negative = false;
  if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  int base = 10;
  if (s.size() > 2 && s.starts_with("0x")) {
    base = 16;
    digits = s.substr(2);
  } else if (s.size() > 2 && s.starts_with("0o")) {
    base = 8;
    digits = s.substr(2);
  }
  if (digits.empty()) return std::nullopt;
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return std::nullopt;
  if (negative) {
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return std::nullopt;
    }
    return json(-static_cast<std::int64_t>(value));
  }
  if (value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return json(static_cast<std::int64_t>(value));
  }
  return json(value);
}

std::optional<json> YamlFloat(std::string_view s) {
  // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?  (YAML 1.2 core; no inf/nan)
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  std::size_t int_digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    ++i, ++int_digits;
  std::size_t frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
      ++i, ++frac_digits;
  }
  if (int_digits + frac_digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    std::size_t exp_digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
      ++i, ++exp_digits;
    if (exp_digits == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  std::string copy(s);
  char* end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || !std::isfinite(value)) return std::nullopt;
  return json(value);
}

json ResolvePlainScalar(const std::string& s) {
  if (IsYamlNull(s)) return json(nullptr);
  if (auto b = YamlBool(s)) return json(*b);
  if (auto i = YamlInt(s)) return *i;
  if (auto f = YamlFloat(s)) return *f;
  return json(s);
}

std::string MarkText(const YAML::Mark& mark) {
  if (mark.is_null()) return "";
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1) +
         ": ";
}

// yaml-cpp 0.7 (Debian 12) never returns from LoadAll on some invalid input,
// e.g. a manifest that is just ",": the parser reports an empty document
// without consuming the token it is stuck on, again and again, and LoadAll
// collects them until memory runs out (jbeder/yaml-cpp#1040, fixed upstream
// by #1319 after 0.8.0). Found by tests/e2e/fuzz (fuzz_manifest). So the
// documents are first walked with a handler that keeps nothing: a document
// starting where the previous one started means the parser is stuck, and the
// count is bounded.
class DocumentWalker final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  YAML::Mark start;
};

// Throws YAML::Exception like LoadAll for what the parser refuses.
Status WalkDocuments(const std::string& text, std::size_t max_documents) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentWalker walker;
  std::size_t documents = 0;
  int previous_start = -1;
  while (parser.HandleNextDocument(walker)) {
    if (walker.start.pos == previous_start) {
      return Error(Errc::kInvalidArgument,
                   "not valid YAML: " + MarkText(walker.start) + "the parser cannot get past this");
    }
    previous_start = walker.start.pos;
    if (++documents > max_documents) {
      return Error(Errc::kResourceExhausted,
                   "more than " + std::to_string(max_documents) + " YAML documents");
    }
  }
  return OkStatus();
}

struct YamlLimits {
  std::size_t nodes = 0;
};

// Converts a yaml-cpp node to JSON, bounding depth and (alias-expanded) size.
Result<json> YamlToJson(const YAML::Node& node, int depth, YamlLimits* limits) {
  if (depth > kMaxNestingDepth) {
    return Error(Errc::kResourceExhausted, MarkText(node.Mark()) + "nesting is deeper than " +
                                               std::to_string(kMaxNestingDepth) + " levels");
  }
  if (++limits->nodes > kMaxYamlNodes) {
    return Error(Errc::kResourceExhausted,
                 "more than " + std::to_string(kMaxYamlNodes) + " values (aliases included)");
  }
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return json(nullptr);
    case YAML::NodeType::Scalar: {
      const std::string& tag = node.Tag();
      const std::string& text = node.Scalar();
      if (!IsValidUtf8(text)) {
        return Error(Errc::kInvalidArgument, MarkText(node.Mark()) + "text is not valid UTF-8");
      }
      if (tag == "!" || tag == "tag:yaml.org,2002:str") return json(text);
      if (tag == "?" || tag.empty()) return ResolvePlainScalar(text);
      if (tag == "tag:yaml.org,2002:int") {
        if (auto i = YamlInt(text)) return *i;
      } else if (tag == "tag:yaml.org,2002:float") {
        if (auto i = YamlInt(text)) return json(static_cast<double>(i->get<double>()));
        if (auto f = YamlFloat(text)) return *f;
      } else if (tag == "tag:yaml.org,2002:bool") {
        if (auto b = YamlBool(text)) return json(*b);
      } else if (tag == "tag:yaml.org,2002:null") {
        if (IsYamlNull(text)) return json(nullptr);
      }
      return Error(Errc::kInvalidArgument, MarkText(node.Mark()) + "unsupported tag " +
                                               Describe(json(tag)) + " for value " +
                                               Describe(json(text)));
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const YAML::Node& child : node) {
        OUTPOST_ASSIGN_OR_RETURN(json value, YamlToJson(child, depth + 1, limits));
        out.push_back(std::move(value));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& entry : node) {
        const YAML::Node& key = entry.first;
        if (!key.IsScalar()) {
          return Error(Errc::kInvalidArgument,
                       MarkText(key.Mark()) + "mapping keys must be plain strings");
        }
        const std::string& k = key.Scalar();
        if (!IsValidUtf8(k)) {
          return Error(Errc::kInvalidArgument, MarkText(key.Mark()) + "key is not valid UTF-8");
        }
        if (out.contains(k)) {
          return Error(Errc::kInvalidArgument,
                       MarkText(key.Mark()) + "duplicate key " + Describe(json(k)));
        }
        OUTPOST_ASSIGN_OR_RETURN(json value, YamlToJson(entry.second, depth + 1, limits));
        out[k] = std::move(value);
      }
      return out;
    }
  }
  return json(nullptr);
}

}  // namespace

// ---------------------------------------------------------------------------

bool Selector::Matches(const Labels& labels) const {
  for (const auto& [key, value] : match_labels) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

bool IsDnsLabel(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (name.front() == '-' || name.back() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::string LabelKeyProblem(std::string_view key) {
  if (key.empty()) return "label key must not be empty";
  std::string_view name = key;
  std::size_t slash = key.find('/');
  if (slash != std::string_view::npos) {
    std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (prefix.empty() || prefix.size() > 253) {
      return "label key prefix must be 1-253 characters";
    }
    std::size_t pos = 0;
    while (pos <= prefix.size()) {
      std::size_t dot = prefix.find('.', pos);
      if (dot == std::string_view::npos) dot = prefix.size();
      if (!IsDnsLabel(prefix.substr(pos, dot - pos))) {
        return "label key prefix must be a DNS subdomain (lowercase, e.g. example.com)";
      }
      pos = dot + 1;
    }
  }
  if (name.empty()) return "label key name must not be empty";
  return LabelNameProblem(name, "label key name");
}

std::string LabelValueProblem(std::string_view value) {
  if (value.empty()) return "";
  return LabelNameProblem(value, "label value");
}

Status ValidateLabels(const Labels& labels) {
  for (const auto& [key, value] : labels) {
    if (std::string problem = LabelKeyProblem(key); !problem.empty()) {
      return Error(Errc::kInvalidArgument, "labels: " + Describe(json(key)) + ": " + problem);
    }
    if (std::string problem = LabelValueProblem(value); !problem.empty()) {
      return Error(Errc::kInvalidArgument,
                   "labels: " + FieldName(key) + ": " + Describe(json(value)) + ": " + problem);
    }
  }
  return OkStatus();
}

std::string SpecHash(const v1::WorkloadSpec& spec) {
  v1::WorkloadSpec copy = spec;
  copy.clear_spec_hash();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&coded);
  }
  return crypto::Sha256Hex(bytes);
}

Result<v1::WorkloadSpec> WorkloadFromJson(const json& workload, std::string_view app_name,
                                          std::string_view field) {
  v1::WorkloadSpec spec;
  json canon;
  if (Check e = ConvertWorkload(workload, app_name, std::string(field), &spec, &canon)) {
    return Error(Errc::kInvalidArgument, e->field + ": " + e->problem);
  }
  return spec;
}

Status ApplyPatches(json& doc, std::span<const Patch> patches) {
  json copy = doc;
  for (const Patch& patch : patches)
    OUTPOST_TRY(ApplyOne(copy, patch));
  doc = std::move(copy);
  return OkStatus();
}

Result<std::vector<Application>> ParseApplications(std::string_view yaml, ParseError* error) {
  if (yaml.size() > kMaxManifestBytes) {
    return MakeError(Errc::kResourceExhausted, 0, "?",
                     {"", "is " + std::to_string(yaml.size()) + " bytes, more than the limit of " +
                              std::to_string(kMaxManifestBytes)},
                     error);
  }
  if (Status nesting = CheckNesting(yaml, kMaxNestingDepth); !nesting.ok()) {
    return MakeError(nesting.error().code(), 0, "?", {"", nesting.error().message()}, error);
  }
  std::vector<YAML::Node> nodes;
  try {
    // Empty documents ("---" lines) count too, hence the margin.
    if (Status walked = WalkDocuments(std::string(yaml), 4 * kMaxDocuments); !walked.ok()) {
      return MakeError(walked.error().code(), 0, "?", {"", walked.error().message()}, error);
    }
    nodes = YAML::LoadAll(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return MakeError(Errc::kInvalidArgument, 0, "?",
                     {"", "not valid YAML: " + MarkText(e.mark) + e.msg}, error);
  } catch (const std::exception& e) {
    return MakeError(Errc::kInvalidArgument, 0, "?",
                     {"", std::string("not valid YAML: ") + e.what()}, error);
  }
  std::vector<Application> apps;
  std::set<std::string> names;
  int document = 0;
  YamlLimits limits;
  for (const YAML::Node& node : nodes) {
    ++document;
    if (node.IsNull()) continue;  // an empty document ("---" at the end)
    if (apps.size() >= kMaxDocuments) {
      return MakeError(Errc::kResourceExhausted, 0, "?",
                       {"", "more than " + std::to_string(kMaxDocuments) + " documents"}, error);
    }
    Result<json> doc = [&]() -> Result<json> {
      try {
        return YamlToJson(node, 1, &limits);
      } catch (const std::exception& e) {
        return Error(Errc::kInvalidArgument, std::string("not valid YAML: ") + e.what());
      }
    }();
    if (!doc.ok()) {
      return MakeError(doc.error().code(), document, "?", {"", doc.error().message()}, error);
    }
    std::string name = "?";
    if (doc->is_object() && doc->contains("metadata") && (*doc)["metadata"].is_object() &&
        (*doc)["metadata"].contains("name") && (*doc)["metadata"]["name"].is_string() &&
        IsDnsLabel((*doc)["metadata"]["name"].get<std::string>())) {
      name = (*doc)["metadata"]["name"].get<std::string>();
    }
    Application app;
    if (Check e = ConvertDocumentSafe(*doc, &app)) {
      return MakeError(Errc::kInvalidArgument, document, name, *e, error);
    }
    if (!names.insert(app.name).second) {
      return MakeError(Errc::kInvalidArgument, document, name,
                       {"metadata.name", "\"" + app.name + "\" appears in an earlier document too"},
                       error);
    }
    apps.push_back(std::move(app));
  }
  if (apps.empty()) {
    return MakeError(Errc::kInvalidArgument, 0, "?", {"", "has no EdgeApplication documents"},
                     error);
  }
  return apps;
}

Result<Application> ApplicationFromCanonical(std::string_view name, std::string_view spec_json) {
  json spec;
  try {
    spec = json::parse(spec_json);
  } catch (const std::exception& e) {
    return Error(Errc::kCorrupt,
                 "application " + std::string(name) + ": stored spec is not JSON: " + e.what());
  }
  json doc = {{"apiVersion", kApiVersion},
              {"kind", kKind},
              {"metadata", {{"name", name}}},
              {"spec", std::move(spec)}};
  Application app;
  if (Check e = ConvertDocumentSafe(doc, &app)) {
    return MakeError(Errc::kCorrupt, 1, std::string(name), *e, nullptr);
  }
  return app;
}

json ApplicationToJson(const Application& app) {
  return json{{"apiVersion", kApiVersion},
              {"kind", kKind},
              {"metadata", {{"name", app.name}}},
              {"spec", app.spec}};
}

namespace {

void HashWorkloads(std::string& acc, std::span<const v1::WorkloadSpec> workloads) {
  for (const v1::WorkloadSpec& w : workloads) {
    acc += w.name();
    acc.push_back('\0');
    acc += w.spec_hash();
    acc.push_back('\n');
  }
}

// One application on one device.
void RenderApp(const Application& app, const Labels& labels, RenderedDevice* out) {
  std::vector<const Override*> matching;
  for (const Override& o : app.overrides) {
    if (o.selector.Matches(labels)) matching.push_back(&o);
  }
  std::size_t first = out->workloads.size();
  if (matching.empty()) {
    out->workloads.insert(out->workloads.end(), app.base_workloads.begin(),
                          app.base_workloads.end());
  } else {
    json spec = app.spec;
    std::vector<v1::WorkloadSpec> specs = app.base_workloads;
    for (std::size_t i = 0; i < matching.size(); ++i) {
      json attempt = spec;
      std::vector<v1::WorkloadSpec> converted;
      json ignored;
      Status applied = ApplyPatches(attempt, matching[i]->patches);
      std::size_t index = static_cast<std::size_t>(matching[i] - app.overrides.data());
      if (!applied.ok()) {
        out->warnings.push_back(app.name + ": override " + std::to_string(index) +
                                " skipped: " + applied.error().message());
        continue;
      }
      if (Check e = ConvertWorkloads(attempt["workloads"], app.name, "spec.workloads", &converted,
                                     &ignored)) {
        out->warnings.push_back(app.name + ": override " + std::to_string(index) +
                                " skipped: " + e->field + ": " + e->problem);
        continue;
      }
      spec = std::move(attempt);
      specs = std::move(converted);
    }
    out->workloads.insert(out->workloads.end(), specs.begin(), specs.end());
  }
  std::string acc;
  HashWorkloads(acc, std::span<const v1::WorkloadSpec>(out->workloads).subspan(first));
  out->app_hashes[app.name] = crypto::Sha256Hex(acc);
}

}  // namespace

RenderedDevice RenderDevice(const Labels& labels,
                            std::span<const Application* const> applications) {
  std::vector<const Application*> matching;
  for (const Application* app : applications) {
    if (app->selector.Matches(labels)) matching.push_back(app);
  }
  std::sort(matching.begin(), matching.end(),
            [](const Application* a, const Application* b) { return a->name < b->name; });
  RenderedDevice out;
  for (const Application* app : matching) {
    std::size_t before = out.workloads.size();
    if (before + app->base_workloads.size() > kMaxDeviceWorkloads) {
      out.warnings.push_back(app->name + ": skipped: the device would run more than " +
                             std::to_string(kMaxDeviceWorkloads) + " workloads");
      continue;
    }
    try {
      RenderApp(*app, labels, &out);
      if (out.workloads.size() > kMaxDeviceWorkloads) {
        out.workloads.resize(before);
        out.app_hashes.erase(app->name);
        out.warnings.push_back(app->name + ": skipped: the device would run more than " +
                               std::to_string(kMaxDeviceWorkloads) + " workloads");
      }
    } catch (const std::exception& e) {
      // Not expected for validated applications; never let it escape.
      out.workloads.resize(before);
      out.app_hashes.erase(app->name);
      out.warnings.push_back(app->name + ": skipped: " + e.what());
    }
  }
  std::string acc;
  HashWorkloads(acc, out.workloads);
  out.hash = crypto::Sha256Hex(acc);
  return out;
}

RenderedDevice RenderDevice(const Labels& labels, std::span<const Application> applications) {
  std::vector<const Application*> pointers;
  pointers.reserve(applications.size());
  for (const Application& app : applications)
    pointers.push_back(&app);
  return RenderDevice(labels, std::span<const Application* const>(pointers));
}

}  // namespace outpost::hub::apps
