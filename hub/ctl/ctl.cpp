#include "hub/ctl/ctl.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "hub/ctl/output.hpp"
#include "shared/core/fs.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::hub::ctl {

using nlohmann::json;

namespace {

constexpr const char* kUsage =
    "usage: outpostctl [--config FILE | --hub URL --token T --ca FILE] [-o table|json|yaml] "
    "<command>\n"
    "\n"
    "commands:\n"
    "  token create [--ttl 24h] [--uses N] [--label k=v]...\n"
    "  token list\n"
    "  token revoke ID\n"
    "  device list\n"
    "  device get ID\n"
    "  device label ID k=v... k-...\n"
    "  device revoke ID\n"
    "  device delete ID\n"
    "  apply -f FILE            (one or more EdgeApplication documents; - for stdin)\n"
    "  get apps | get app NAME\n"
    "  delete app NAME\n"
    "  rollout status NAME [--watch] [--timeout 5m]\n"
    "  version\n"
    "\n"
    "connection: --config (ctl.yaml from `outpost-hub init`), or --hub/--token/--ca,\n"
    "or OUTPOST_HUB / OUTPOST_ADMIN_TOKEN / OUTPOST_CA.\n";

class HttpHubApi : public HubApi {
 public:
  HttpHubApi(Connection connection, std::string ca_pem)
      : connection_(std::move(connection)), ca_pem_(std::move(ca_pem)) {}

  Result<ApiResponse> Call(const std::string& method, const std::string& target,
                           const std::string& body, const std::string& content_type) override {
    http::Request request;
    request.method = method;
    request.target = target;
    request.body = body;
    request.content_type = content_type;
    request.headers["Authorization"] = "Bearer " + connection_.token;
    http::ClientOptions options;
    options.tls.ca_pem = ca_pem_;
    options.timeout = std::chrono::seconds(60);
    auto response = http::Send(connection_.hub_url, request, options);
    if (!response.ok()) {
      return response.error().WithContext("cannot reach the hub at " + connection_.hub_url);
    }
    return ApiResponse{response->status, std::move(response->body)};
  }

 private:
  Connection connection_;
  std::string ca_pem_;
};

// A usage problem (exit 2) or a failure (exit 1), reported as one line.
struct Failure {
  int code = 1;
  std::string message;
};

struct Context {
  std::ostream& out;
  std::ostream& err;
  const CtlEnv& env;
  Format format = Format::kTable;
  ConnectionFlags flags;
  std::unique_ptr<HubApi> api;
};

std::optional<Failure> Connect(Context& c) {
  if (c.api) return std::nullopt;
  auto connection = ResolveConnection(c.flags, c.env.getenv);
  if (!connection.ok()) return Failure{2, connection.error().message()};
  auto api = c.env.connect(*connection);
  if (!api.ok()) return Failure{1, api.error().message()};
  c.api = std::move(*api);
  return std::nullopt;
}

// Calls the API; a non-2xx answer becomes a Failure with the hub's message.
Result<json> CallJson(Context& c, const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const std::string& content_type = "application/json") {
  auto response = c.api->Call(method, target, body, content_type);
  if (!response.ok()) return response.error();
  json parsed = json::parse(response->body, nullptr, false);
  if (response->status < 200 || response->status >= 300) {
    std::string message = "the hub answered HTTP " + std::to_string(response->status);
    if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("message") &&
        parsed["message"].is_string()) {
      message = parsed["message"].get<std::string>();
      if (parsed.contains("error") && parsed["error"].is_string()) {
        message += " (" + parsed["error"].get<std::string>() + ")";
      }
    }
    Errc code = response->status == 404 ? Errc::kNotFound : Errc::kFailedPrecondition;
    return Error(code, message);
  }
  if (parsed.is_discarded()) {
    return Error(Errc::kCorrupt, "the hub's answer is not JSON");
  }
  return parsed;
}

std::string PathEscape(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  return out;
}

// Prints `value` as JSON or YAML; false when the format is table (the
// caller prints its own).
bool PrintStructured(Context& c, const json& value) {
  if (c.format == Format::kJson) {
    c.out << ToJsonText(value);
    return true;
  }
  if (c.format == Format::kYaml) {
    c.out << ToYamlText(value);
    return true;
  }
  return false;
}

std::string Str(const json& v, const char* key) {
  if (!v.contains(key)) return "";
  const json& x = v[key];
  if (x.is_string()) return x.get<std::string>();
  if (x.is_null()) return "";
  return x.dump();
}

// --- token -----------------------------------------------------------------

std::optional<Failure> TokenCreate(Context& c, const std::vector<std::string>& args) {
  json body = json::object();
  json labels = json::object();
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> std::optional<std::string> {
      std::string f = flag;
      if (a == f && i + 1 < args.size()) return args[++i];
      if (a.rfind(f + "=", 0) == 0) return a.substr(f.size() + 1);
      return std::nullopt;
    };
    if (auto ttl = value("--ttl")) {
      auto d = ParseDuration(*ttl);
      if (!d.ok()) return Failure{2, "--ttl: " + d.error().message()};
      if (d->count() < 1000) return Failure{2, "--ttl must be at least 1s"};
      body["ttlSeconds"] = d->count() / 1000;
    } else if (auto uses = value("--uses")) {
      int n = 0;
      auto [ptr, ec] = std::from_chars(uses->data(), uses->data() + uses->size(), n);
      if (ec != std::errc() || ptr != uses->data() + uses->size() || n < 1) {
        return Failure{2, "--uses must be a positive whole number"};
      }
      body["uses"] = n;
    } else if (auto label = value("--label")) {
      std::string k, v;
      if (!SplitLabel(*label, &k, &v))
        return Failure{2, "--label takes k=v, got \"" + *label + "\""};
      labels[k] = v;
    } else {
      return Failure{2, "token create: unexpected argument \"" + a + "\""};
    }
  }
  if (!labels.empty()) body["labels"] = labels;
  if (auto f = Connect(c)) return f;
  auto created = CallJson(c, "POST", "/v1/admin/tokens", body.dump());
  if (!created.ok()) return Failure{1, created.error().message()};
  const json& t = *created;
  json summary = {{"token", t.value("token", "")},
                  {"caHash", t.value("caHash", "")},
                  {"expiresAt", t.value("expiresAt", "")},
                  {"joinCommand", t.value("joinCommand", "")},
                  {"id", t.value("id", "")},
                  {"uses", t.value("usesTotal", 0)},
                  {"labels", t.contains("labels") ? t["labels"] : json::object()}};
  if (PrintStructured(c, summary)) return std::nullopt;
  c.out << "token:    " << Str(t, "token") << "\n"
        << "expires:  " << Str(t, "expiresAt") << "\n"
        << "uses:     " << Str(t, "usesTotal") << "\n"
        << "labels:   " << LabelsText(t.contains("labels") ? t["labels"] : json()) << "\n"
        << "ca hash:  " << Str(t, "caHash") << "\n"
        << "\n"
        << "Join a device with:\n"
        << "  " << Str(t, "joinCommand") << "\n";
  return std::nullopt;
}

std::optional<Failure> TokenList(Context& c) {
  if (auto f = Connect(c)) return f;
  auto list = CallJson(c, "GET", "/v1/admin/tokens");
  if (!list.ok()) return Failure{1, list.error().message()};
  const json& tokens = (*list)["tokens"];
  if (PrintStructured(c, tokens)) return std::nullopt;
  Table table({"ID", "STATE", "USES LEFT", "EXPIRES", "LABELS"});
  const std::int64_t now = c.env.now_ms();
  for (const auto& t : tokens) {
    table.AddRow({Str(t, "id"), Str(t, "state"), Str(t, "usesLeft") + "/" + Str(t, "usesTotal"),
                  Until(t["expiresAt"], now), LabelsText(t["labels"])});
  }
  if (table.empty()) {
    c.out << "No join tokens.\n";
  } else {
    c.out << table.Render();
  }
  return std::nullopt;
}

std::optional<Failure> SimpleAction(Context& c, const std::string& method,
                                    const std::string& target, const std::string& done_line,
                                    const std::string& body = "") {
  if (auto f = Connect(c)) return f;
  auto result = CallJson(c, method, target, body);
  if (!result.ok()) return Failure{1, result.error().message()};
  if (PrintStructured(c, *result)) return std::nullopt;
  c.out << done_line << "\n";
  if (result->contains("crl") && (*result)["crl"].contains("note")) {
    c.err << "note: " << Str((*result)["crl"], "note") << "\n";
  }
  return std::nullopt;
}

// --- device ----------------------------------------------------------------

std::string Generation(const json& d) {
  return Str(d, "observedGeneration") + "/" + Str(d, "desiredGeneration");
}

std::optional<Failure> DeviceList(Context& c) {
  if (auto f = Connect(c)) return f;
  auto list = CallJson(c, "GET", "/v1/admin/devices");
  if (!list.ok()) return Failure{1, list.error().message()};
  const json& devices = (*list)["devices"];
  if (PrintStructured(c, devices)) return std::nullopt;
  const std::int64_t now = c.env.now_ms();
  Table table({"ID", "STATUS", "LAST SEEN", "GENERATION", "WORKLOADS", "LABELS"});
  for (const auto& d : devices) {
    std::string status = d.value("revoked", false)  ? "revoked"
                         : d.value("online", false) ? "online"
                                                    : "offline";
    std::size_t running = 0;
    for (const auto& w : d["workloads"])
      running += Str(w, "state") == "running" ? 1 : 0;
    table.AddRow(
        {Str(d, "id"), status, Age(d["lastSeen"], now), Generation(d),
         std::to_string(running) + "/" + std::to_string(d["workloads"].size()) + " running",
         LabelsText(d["labels"])});
  }
  if (table.empty()) {
    c.out << "No devices.\n";
  } else {
    c.out << table.Render();
  }
  return std::nullopt;
}

std::optional<Failure> DeviceGet(Context& c, const std::string& id) {
  if (auto f = Connect(c)) return f;
  auto device = CallJson(c, "GET", "/v1/admin/devices/" + PathEscape(id));
  if (!device.ok()) return Failure{1, device.error().message()};
  const json& d = *device;
  if (PrintStructured(c, d)) return std::nullopt;
  const std::int64_t now = c.env.now_ms();
  const json& facts = d.contains("facts") ? d["facts"] : json::object();
  c.out << "ID:           " << Str(d, "id") << "\n"
        << "Status:       "
        << (d.value("revoked", false)  ? "revoked"
            : d.value("online", false) ? "online"
                                       : "offline")
        << " (last seen " << Age(d["lastSeen"], now) << ")\n"
        << "Labels:       " << LabelsText(d["labels"]) << "\n"
        << "Generation:   observed " << Str(d, "observedGeneration") << ", desired "
        << Str(d, "desiredGeneration") << "\n"
        << "Host:         " << Str(facts, "hostname") << " (" << Str(facts, "arch") << ", "
        << Str(facts, "os") << ")\n"
        << "Agent:        " << Str(facts, "agentVersion") << "\n"
        << "Outbox:       " << Str(d, "outboxDepth") << " event(s) waiting\n"
        << "Certificate:  expires " << Str(d, "certNotAfter") << "\n";
  if (d["workloads"].empty()) {
    c.out << "Workloads:    none reported\n";
    return std::nullopt;
  }
  c.out << "Workloads:\n";
  Table table({"NAME", "STATE", "PID", "RESTARTS", "MESSAGE"});
  for (const auto& w : d["workloads"]) {
    table.AddRow(
        {Str(w, "name"), Str(w, "state"), Str(w, "pid"), Str(w, "restarts"), Str(w, "message")});
  }
  std::istringstream lines(table.Render());
  for (std::string line; std::getline(lines, line);)
    c.out << "  " << line << "\n";
  return std::nullopt;
}

std::optional<Failure> DeviceLabel(Context& c, const std::string& id,
                                   const std::vector<std::string>& edits) {
  if (edits.empty()) return Failure{2, "device label: give at least one k=v or k-"};
  for (const auto& e : edits) {
    std::string k, v;
    bool removal = e.size() > 1 && e.back() == '-' && e.find('=') == std::string::npos;
    if (!removal && !SplitLabel(e, &k, &v)) {
      return Failure{2, "device label: \"" + e + "\" is neither k=v nor k-"};
    }
  }
  if (auto f = Connect(c)) return f;
  json body = {{"edits", edits}};
  auto result = CallJson(c, "POST", "/v1/admin/devices/" + PathEscape(id) + "/labels", body.dump());
  if (!result.ok()) return Failure{1, result.error().message()};
  if (PrintStructured(c, *result)) return std::nullopt;
  c.out << "device/" << id << " labeled: " << LabelsText((*result)["labels"])
        << (result->value("desiredChanged", false) ? " (desired state changed)" : "") << "\n";
  return std::nullopt;
}

// --- apps ------------------------------------------------------------------

std::optional<Failure> Apply(Context& c, const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if ((a == "-f" || a == "--filename") && i + 1 < args.size()) {
      files.push_back(args[++i]);
    } else if (a.rfind("--filename=", 0) == 0) {
      files.push_back(a.substr(11));
    } else if (a.rfind("-f=", 0) == 0) {
      files.push_back(a.substr(3));
    } else {
      return Failure{2, "apply: unexpected argument \"" + a + "\" (use apply -f FILE)"};
    }
  }
  if (files.empty()) return Failure{2, "apply: -f FILE is required"};
  std::string manifest;
  for (const auto& file : files) {
    auto text = c.env.read_file(file);
    if (!text.ok()) return Failure{1, "reading " + file + ": " + text.error().message()};
    if (!manifest.empty()) manifest += "\n---\n";
    manifest += *text;
  }
  if (auto f = Connect(c)) return f;
  auto result = CallJson(c, "POST", "/v1/admin/apps", manifest, "application/yaml");
  if (!result.ok()) return Failure{1, result.error().message()};
  if (PrintStructured(c, *result)) return std::nullopt;
  for (const auto& app : (*result)["applications"]) {
    auto n = app.value("devicesChanged", 0);
    c.out << "edgeapplication/" << Str(app, "name") << " " << Str(app, "action") << " (" << n
          << (n == 1 ? " device" : " devices") << " changed)\n";
  }
  for (const auto& w : (*result)["warnings"])
    c.err << "warning: " << w.get<std::string>() << "\n";
  return std::nullopt;
}

std::string RolloutText(const json& r) {
  return Str(r, "updated") + "/" + Str(r, "matched") + " devices updated";
}

std::optional<Failure> GetApps(Context& c) {
  if (auto f = Connect(c)) return f;
  auto list = CallJson(c, "GET", "/v1/admin/apps");
  if (!list.ok()) return Failure{1, list.error().message()};
  const json& apps = (*list)["applications"];
  if (PrintStructured(c, apps)) return std::nullopt;
  Table table({"NAME", "REVISION", "SELECTOR", "WORKLOADS", "UPDATED", "AGE"});
  const std::int64_t now = c.env.now_ms();
  for (const auto& a : apps) {
    std::string rollout = "-";
    if (a.contains("rollout"))
      rollout = Str(a["rollout"], "updated") + "/" + Str(a["rollout"], "matched");
    table.AddRow({Str(a, "name"), Str(a, "revision"), LabelsText(a["selector"]),
                  std::to_string(a["workloads"].size()), rollout, Age(a["createdAt"], now)});
  }
  if (table.empty()) {
    c.out << "No applications.\n";
  } else {
    std::string text = table.Render();
    // Age() says "ago"; a table column reads better without it.
    for (std::size_t pos; (pos = text.find(" ago")) != std::string::npos;)
      text.erase(pos, 4);
    c.out << text;
  }
  return std::nullopt;
}

std::optional<Failure> GetApp(Context& c, const std::string& name) {
  if (auto f = Connect(c)) return f;
  auto app = CallJson(c, "GET", "/v1/admin/apps/" + PathEscape(name));
  if (!app.ok()) return Failure{1, app.error().message()};
  if (c.format == Format::kTable) {
    // The manifest as YAML is the readable form.
    c.out << ToYamlText((*app)["manifest"]);
    if (app->contains("rollout")) c.out << "# rollout: " << RolloutText((*app)["rollout"]) << "\n";
    return std::nullopt;
  }
  PrintStructured(c, *app);
  return std::nullopt;
}

std::optional<Failure> DeleteApp(Context& c, const std::string& name) {
  if (auto f = Connect(c)) return f;
  auto result = CallJson(c, "DELETE", "/v1/admin/apps/" + PathEscape(name));
  if (!result.ok()) return Failure{1, result.error().message()};
  if (PrintStructured(c, *result)) return std::nullopt;
  auto n = result->value("devicesChanged", 0);
  c.out << "edgeapplication/" << name << " deleted (" << n << (n == 1 ? " device" : " devices")
        << " changed)\n";
  return std::nullopt;
}

std::optional<Failure> RolloutStatus(Context& c, const std::vector<std::string>& args) {
  std::string name;
  bool watch = false;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--watch" || a == "-w" || a == "--watch=true") {
      watch = true;
    } else if (a == "--watch=false") {
      watch = false;
    } else if (a == "--timeout" || a.rfind("--timeout=", 0) == 0) {
      std::string value;
      if (a == "--timeout") {
        if (i + 1 >= args.size()) return Failure{2, "--timeout needs a duration"};
        value = args[++i];
      } else {
        value = a.substr(10);
      }
      auto d = ParseDuration(value);
      if (!d.ok()) return Failure{2, "--timeout: " + d.error().message()};
      timeout = *d;
    } else if (name.empty() && !a.empty() && a[0] != '-') {
      name = a;
    } else {
      return Failure{2, "rollout status: unexpected argument \"" + a + "\""};
    }
  }
  if (name.empty()) return Failure{2, "rollout status: NAME is required"};
  if (auto f = Connect(c)) return f;
  const std::string target = "/v1/admin/apps/" + PathEscape(name) + "/rollout";
  const std::int64_t deadline = c.env.now_ms() + timeout.count();
  std::string last_line;
  for (;;) {
    auto status = CallJson(c, "GET", target);
    if (!status.ok()) {
      if (c.env.stdout_is_tty && !last_line.empty() && c.format == Format::kTable) c.out << "\n";
      return Failure{1, status.error().message()};
    }
    const json& r = *status;
    const bool done = r.value("done", false);
    std::string line =
        "rollout " + name + ": " + RolloutText(r) + ", " + Str(r, "online") + " online";
    if (!watch) {
      if (!PrintStructured(c, r)) c.out << line << (done ? " (complete)" : "") << "\n";
      return std::nullopt;
    }
    if (c.format != Format::kTable) {
      if (done) {
        PrintStructured(c, r);
        return std::nullopt;
      }
    } else {
      if (c.env.stdout_is_tty) {
        c.out << "\r\033[K" << line << std::flush;
      } else if (line != last_line) {
        c.out << line << "\n";
      }
      last_line = line;
      if (done) {
        if (c.env.stdout_is_tty) c.out << "\n";
        c.out << "rollout " << name << " complete: " << RolloutText(r) << "\n";
        return std::nullopt;
      }
    }
    if (c.env.now_ms() >= deadline) {
      if (c.env.stdout_is_tty && c.format == Format::kTable) c.out << "\n";
      std::string pending;
      for (const auto& p : r["pending"]) {
        if (!pending.empty()) pending += ", ";
        pending += p.get<std::string>();
      }
      return Failure{1, "rollout of " + name + " not complete after " +
                            std::to_string(timeout.count() / 1000) + "s: " + RolloutText(r) +
                            (pending.empty() ? "" : " (waiting for " + pending + ")")};
    }
    c.env.sleep(std::chrono::seconds(1));
  }
}

// --- dispatch --------------------------------------------------------------

std::optional<Failure> Dispatch(Context& c, const std::vector<std::string>& rest) {
  auto need = [&](std::size_t n, const char* usage) -> std::optional<Failure> {
    if (rest.size() != n) return Failure{2, std::string("usage: outpostctl ") + usage};
    return std::nullopt;
  };
  const std::string& cmd = rest[0];
  const std::string sub = rest.size() > 1 ? rest[1] : "";
  if (cmd == "version") {
    json v = {{"outpostctl", OUTPOST_VERSION}};
    if (!PrintStructured(c, v)) c.out << "outpostctl " << OUTPOST_VERSION << "\n";
    return std::nullopt;
  }
  if (cmd == "token") {
    if (sub == "create") return TokenCreate(c, {rest.begin() + 2, rest.end()});
    if (sub == "list") {
      if (auto f = need(2, "token list")) return f;
      return TokenList(c);
    }
    if (sub == "revoke") {
      if (auto f = need(3, "token revoke ID")) return f;
      return SimpleAction(c, "DELETE", "/v1/admin/tokens/" + PathEscape(rest[2]),
                          "token/" + rest[2] + " revoked");
    }
    return Failure{2, "token: expected create, list or revoke"};
  }
  if (cmd == "device" || cmd == "devices") {
    if (sub == "list") {
      if (auto f = need(2, "device list")) return f;
      return DeviceList(c);
    }
    if (sub == "get") {
      if (auto f = need(3, "device get ID")) return f;
      return DeviceGet(c, rest[2]);
    }
    if (sub == "label") {
      if (rest.size() < 4) return Failure{2, "usage: outpostctl device label ID k=v... k-..."};
      return DeviceLabel(c, rest[2], {rest.begin() + 3, rest.end()});
    }
    if (sub == "revoke") {
      if (auto f = need(3, "device revoke ID")) return f;
      return SimpleAction(c, "POST", "/v1/admin/devices/" + PathEscape(rest[2]) + "/revoke",
                          "device/" + rest[2] + " revoked");
    }
    if (sub == "delete") {
      if (auto f = need(3, "device delete ID")) return f;
      return SimpleAction(c, "DELETE", "/v1/admin/devices/" + PathEscape(rest[2]),
                          "device/" + rest[2] + " deleted");
    }
    return Failure{2, "device: expected list, get, label, revoke or delete"};
  }
  if (cmd == "apply") return Apply(c, {rest.begin() + 1, rest.end()});
  if (cmd == "get") {
    if (sub == "apps" || sub == "applications" || sub == "edgeapplications") {
      if (rest.size() == 3) return GetApp(c, rest[2]);
      if (auto f = need(2, "get apps")) return f;
      return GetApps(c);
    }
    if (sub == "app" || sub == "application" || sub == "edgeapplication") {
      if (auto f = need(3, "get app NAME")) return f;
      return GetApp(c, rest[2]);
    }
    return Failure{2, "get: expected apps or app NAME"};
  }
  if (cmd == "delete") {
    if (sub == "app" || sub == "apps" || sub == "application" || sub == "edgeapplication") {
      if (auto f = need(3, "delete app NAME")) return f;
      return DeleteApp(c, rest[2]);
    }
    return Failure{2, "delete: expected app NAME"};
  }
  if (cmd == "rollout") {
    if (sub == "status") return RolloutStatus(c, {rest.begin() + 2, rest.end()});
    return Failure{2, "rollout: expected status NAME"};
  }
  return Failure{2, "unknown command \"" + cmd + "\" (see outpostctl --help)"};
}

}  // namespace

Result<std::unique_ptr<HubApi>> ConnectHttp(const Connection& connection) {
  std::string ca_pem;
  if (!connection.ca_path.empty()) {
    auto ca = fs::ReadFile(connection.ca_path, 1 << 20);
    if (!ca.ok()) return ca.error().WithContext("reading the hub CA " + connection.ca_path);
    ca_pem = std::move(*ca);
  }
  auto url = http::ParseUrl(connection.hub_url);
  if (!url.ok()) return url.error().WithContext("hub URL " + connection.hub_url);
  return std::unique_ptr<HubApi>(new HttpHubApi(connection, std::move(ca_pem)));
}

CtlEnv SystemEnv() {
  CtlEnv env;
  env.getenv = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
  env.now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  env.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  env.stdout_is_tty = ::isatty(STDOUT_FILENO) == 1;
  env.read_file = [](const std::string& path) -> Result<std::string> {
    if (path != "-") return fs::ReadFile(path, 1 << 20);
    std::ostringstream all;
    all << std::cin.rdbuf();
    std::string text = all.str();
    if (text.size() > (1u << 20)) {
      return Error(Errc::kResourceExhausted, "standard input is larger than 1 MiB");
    }
    return text;
  };
  return env;
}

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
         const CtlEnv& env) {
  Context c{out, err, env, Format::kTable, {}, nullptr};
  std::vector<std::string> rest;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto take = [&](const char* long_flag, const char* short_flag,
                    std::string* into) -> std::optional<bool> {
      std::string lf = long_flag;
      if (a == lf || (short_flag != nullptr && a == short_flag)) {
        if (i + 1 >= args.size()) return false;
        *into = args[++i];
        return true;
      }
      if (a.rfind(lf + "=", 0) == 0) {
        *into = a.substr(lf.size() + 1);
        return true;
      }
      if (short_flag != nullptr && a.rfind(std::string(short_flag) + "=", 0) == 0) {
        *into = a.substr(std::strlen(short_flag) + 1);
        return true;
      }
      return std::nullopt;
    };
    std::string format;
    std::optional<bool> took;
    if ((took = take("--config", nullptr, &c.flags.config)) ||
        (took = take("--hub", nullptr, &c.flags.hub)) ||
        (took = take("--token", nullptr, &c.flags.token)) ||
        (took = take("--ca", nullptr, &c.flags.ca))) {
      if (!*took) {
        err << "outpostctl: " << a << " needs a value\n";
        return 2;
      }
    } else if ((took = take("--output", "-o", &format))) {
      if (!*took || !ParseFormat(format, &c.format)) {
        err << "outpostctl: -o takes table, json or yaml\n";
        return 2;
      }
    } else if (a == "-h" || a == "--help" || a == "help") {
      out << kUsage;
      return 0;
    } else {
      rest.push_back(a);
    }
  }
  if (rest.empty()) {
    err << kUsage;
    return 2;
  }
  auto failure = Dispatch(c, rest);
  if (!failure) return 0;
  err << "outpostctl: " << failure->message << "\n";
  return failure->code;
}

}  // namespace outpost::hub::ctl
