#include "hub/server/api.hpp"

#include <time.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "hub/apps/apps.hpp"
#include "outpost.pb.h"
#include "shared/core/log.hpp"
#include "shared/store/store.hpp"

namespace outpost::hub::server {

using nlohmann::json;

namespace {

constexpr std::int64_t kMaxTokenTtlSeconds = 365LL * 24 * 3600;
constexpr int kMaxTokenUses = 1000000;
constexpr std::size_t kMaxCsrBytes = 16 << 10;

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

HttpResponse MethodNotAllowed(const HttpRequest& request) {
  return JsonError(405, "method_not_allowed",
                   request.method + " is not supported on " + request.path + ".");
}

HttpResponse NotFoundPath(const HttpRequest& request) {
  return JsonError(404, "not_found", "There is no endpoint " + request.path + ".");
}

HttpResponse Protobuf(const google::protobuf::MessageLite& message) {
  HttpResponse response;
  response.status = 200;
  response.content_type = "application/x-protobuf";
  message.SerializeToString(&response.body);
  return response;
}

bool ProtobufContentType(const std::string& type) {
  return type.empty() || type == "application/x-protobuf" || type == "application/protobuf" ||
         type == "application/octet-stream";
}

Result<json> ParseJsonBody(const HttpRequest& request) {
  if (request.body.empty()) return json::object();
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded()) {
    return Error(Errc::kInvalidArgument, "The request body is not valid JSON.");
  }
  if (!body.is_object()) {
    return Error(Errc::kInvalidArgument, "The request body must be a JSON object.");
  }
  return body;
}

const char* WorkloadStateName(int state) {
  switch (state) {
    case outpost::v1::WORKLOAD_STATE_RUNNING:
      return "running";
    case outpost::v1::WORKLOAD_STATE_STARTING:
      return "starting";
    case outpost::v1::WORKLOAD_STATE_BACKOFF:
      return "backoff";
    case outpost::v1::WORKLOAD_STATE_STOPPED:
      return "stopped";
    case outpost::v1::WORKLOAD_STATE_FAILED:
      return "failed";
    case outpost::v1::WORKLOAD_STATE_WAITING:
      return "waiting";
    default:
      return "unknown";
  }
}

json LabelsJson(const registry::Labels& labels) {
  json out = json::object();
  for (const auto& [k, v] : labels)
    out[k] = v;
  return out;
}

json FactsJson(const outpost::v1::DeviceFacts& f) {
  json gpus = json::array();
  for (const auto& g : f.gpus()) {
    gpus.push_back({{"index", g.index()},
                    {"name", g.name()},
                    {"uuid", g.uuid()},
                    {"devicePath", g.device_path()},
                    {"memoryMiB", g.memory_mib()}});
  }
  json cameras = json::array();
  for (const auto& cam : f.cameras()) {
    cameras.push_back(
        {{"path", cam.path()}, {"name", cam.name()}, {"driver", cam.driver()}, {"bus", cam.bus()}});
  }
  return {{"hostname", f.hostname()},
          {"arch", f.arch()},
          {"os", f.os()},
          {"kernel", f.kernel()},
          {"agentVersion", f.agent_version()},
          {"gpuDriverVersion", f.gpu_driver_version()},
          {"gpus", gpus},
          {"cameras", cameras}};
}

json TimeOrNull(std::int64_t ms) {
  if (ms <= 0) return nullptr;
  return FormatTime(ms);
}

// The per-application signature of a document: for each app, its workloads'
// names and spec hashes in order.
using AppSignature = std::map<std::string, std::vector<std::pair<std::string, std::string>>>;

AppSignature SignatureOf(const outpost::v1::DesiredState& doc) {
  AppSignature sig;
  for (const auto& w : doc.workloads())
    sig[w.app()].emplace_back(w.name(), w.spec_hash());
  return sig;
}

}  // namespace

// ---------------------------------------------------------------------------
// Shared helpers

std::string FormatTime(std::int64_t unix_ms) {
  if (unix_ms <= 0) return "";
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

HttpResponse ErrorResponse(const Error& error) {
  const std::string& msg = error.message();
  switch (error.code()) {
    case Errc::kInvalidArgument:
      return JsonError(400, "invalid_argument", msg);
    case Errc::kNotFound:
      return JsonError(404, "not_found", msg);
    case Errc::kAlreadyExists:
      return JsonError(409, "already_exists", msg);
    case Errc::kConflict:
      return JsonError(409, "conflict", msg);
    case Errc::kPermissionDenied:
      return JsonError(403, "forbidden", msg);
    case Errc::kUnauthenticated:
      return JsonError(401, "unauthenticated", msg);
    case Errc::kResourceExhausted:
      return JsonError(413, "too_large", msg);
    case Errc::kFailedPrecondition:
      return JsonError(409, "failed_precondition", msg);
    case Errc::kExpired:
      return JsonError(410, "expired", msg);
    case Errc::kUnavailable:
      return JsonError(503, "unavailable", msg);
    case Errc::kTimeout:
      return JsonError(504, "timeout", msg);
    default:
      log::Error("api: internal error: ", error.ToString());
      return JsonError(500, "internal", "The hub failed to handle the request: " + msg);
  }
}

bool IsAdminPath(const std::string& path) {
  return path == "/v1/admin" || path.rfind("/v1/admin/", 0) == 0;
}

std::optional<HttpResponse> CheckAdminAuth(const HttpRequest& request,
                                           const std::string& admin_token) {
  static constexpr std::string_view kBearer = "Bearer ";
  const std::string& auth = request.authorization;
  if (auth.size() <= kBearer.size() || auth.compare(0, kBearer.size(), kBearer) != 0) {
    return JsonError(401, "unauthenticated",
                     "The admin API needs the header \"Authorization: Bearer <admin token>\".");
  }
  std::string_view presented = std::string_view(auth).substr(kBearer.size());
  if (admin_token.empty() || !crypto::ConstantTimeEqual(presented, admin_token)) {
    return JsonError(401, "unauthenticated", "The admin token is not valid.");
  }
  return std::nullopt;
}

std::string JoinCommand(const std::string& hub_url, const std::string& token,
                        const std::string& ca_hash) {
  return "outpost-agent join --hub " + hub_url + " --token " + token + " --ca-hash " + ca_hash;
}

json TokenJson(const registry::TokenInfo& t, std::int64_t now_ms) {
  return {{"id", t.id},
          {"labels", LabelsJson(t.labels)},
          {"createdAt", FormatTime(t.created_ms)},
          {"expiresAt", FormatTime(t.expires_ms)},
          {"usesTotal", t.uses_total},
          {"usesLeft", t.uses_left},
          {"revoked", t.revoked},
          {"state", std::string(t.State(now_ms))}};
}

json DeviceJson(const registry::Device& d, bool detail) {
  json out = {{"id", d.id},
              {"labels", LabelsJson(d.labels)},
              {"online", d.online},
              {"lastSeen", TimeOrNull(d.last_seen_ms)},
              {"desiredGeneration", d.desired_generation},
              {"observedGeneration", d.observed_generation},
              {"heldGeneration", d.reported_desired_generation},
              {"revoked", d.revoked},
              {"createdAt", FormatTime(d.created_ms)},
              {"certNotAfter", TimeOrNull(d.cert_not_after_ms)}};
  if (d.revoked) out["revokedAt"] = FormatTime(d.revoked_ms);
  json workloads = json::array();
  for (const auto& w : d.report.workloads()) {
    json item = {{"name", w.name()},
                 {"state", WorkloadStateName(w.state())},
                 {"pid", w.pid()},
                 {"restarts", w.restarts()}};
    if (detail) {
      item["since"] = TimeOrNull(w.since_ms());
      item["message"] = w.message();
      item["specHash"] = w.spec_hash();
      if (w.has_exited()) item["lastExitCode"] = w.last_exit_code();
    }
    workloads.push_back(std::move(item));
  }
  out["workloads"] = std::move(workloads);
  if (detail) {
    out["facts"] = FactsJson(d.facts);
    out["reportedAt"] = TimeOrNull(d.reported_ms);
    out["outboxDepth"] = d.report.outbox_depth();
    out["staleDocuments"] = d.report.stale_documents();
    out["agentVersion"] = d.report.agent_version();
    out["certSerial"] = d.cert_serial;
    out["ackedEventSeq"] = d.contiguous_mark;
  }
  return out;
}

json RolloutJson(const registry::RolloutStatus& s) {
  return {{"app", s.app},         {"revision", s.revision}, {"matched", s.matched},
          {"updated", s.updated}, {"online", s.online},     {"pending", s.pending},
          {"done", s.done()}};
}

// ---------------------------------------------------------------------------
// Routing

HttpResponse Api::Handle(const HttpRequest& request) {
  const std::string& p = request.path;
  if (p == "/healthz") {
    if (request.method != "GET") return MethodNotAllowed(request);
    return Health();
  }
  if (p == "/v1/ca") {
    if (request.method != "GET") return MethodNotAllowed(request);
    return HttpResponse{200, "application/x-pem-file", c_.ca_pem};
  }
  if (p == "/v1/enroll") {
    if (request.method != "POST") return MethodNotAllowed(request);
    return Enroll(request);
  }
  if (p == "/v1/renew") {
    if (request.method != "POST") return MethodNotAllowed(request);
    return Renew(request);
  }
  if (IsAdminPath(p)) return Admin(request);
  return NotFoundPath(request);
}

HttpResponse Api::Admin(const HttpRequest& request) {
  auto parts = SplitPath(request.path);  // v1 admin <collection> [id] [action]
  const std::string& m = request.method;
  if (parts.size() < 3 || parts.size() > 5) return NotFoundPath(request);
  const std::string& collection = parts[2];
  const std::string id = parts.size() > 3 ? parts[3] : "";
  const std::string action = parts.size() > 4 ? parts[4] : "";

  if (collection == "tokens") {
    if (parts.size() == 3) {
      if (m == "GET") return ListTokens();
      if (m == "POST") return CreateToken(request);
      return MethodNotAllowed(request);
    }
    if (parts.size() == 4 && m == "DELETE") return RevokeToken(id);
    if (parts.size() == 5 && action == "revoke" && m == "POST") return RevokeToken(id);
    if (parts.size() == 4 || action == "revoke") return MethodNotAllowed(request);
    return NotFoundPath(request);
  }
  if (collection == "devices") {
    if (parts.size() == 3) return m == "GET" ? ListDevices() : MethodNotAllowed(request);
    if (parts.size() == 4) {
      if (m == "GET") return GetDevice(id);
      if (m == "DELETE") return DeleteDevice(id);
      return MethodNotAllowed(request);
    }
    if (action == "labels")
      return m == "POST" ? LabelDevice(id, request) : MethodNotAllowed(request);
    if (action == "revoke") return m == "POST" ? RevokeDevice(id) : MethodNotAllowed(request);
    return NotFoundPath(request);
  }
  if (collection == "apps") {
    if (parts.size() == 3) {
      if (m == "GET") return ListApps();
      if (m == "POST") return ApplyApps(request);
      return MethodNotAllowed(request);
    }
    if (parts.size() == 4) {
      if (m == "GET") return GetApp(id);
      if (m == "DELETE") return DeleteApp(id);
      return MethodNotAllowed(request);
    }
    if (action == "rollout") return m == "GET" ? Rollout(id) : MethodNotAllowed(request);
    return NotFoundPath(request);
  }
  return NotFoundPath(request);
}

// ---------------------------------------------------------------------------
// Health

HttpResponse Api::Health() {
  json body = {{"status", "ok"}};
  auto stmt = c_.registry->database().Prepare("SELECT 1");
  Status db = stmt.ok()
                  ? Status(stmt->Step().ok() ? OkStatus() : Error(Errc::kIo, "SELECT 1 failed"))
                  : Status(stmt.error());
  body["db"] = db.ok() ? "ok" : "error";
  if (!db.ok()) {
    body["status"] = "degraded";
    body["dbError"] = db.error().message();
  }
  if (c_.health) {
    json extra = c_.health();
    for (auto& [k, v] : extra.items())
      body[k] = v;
  }
  body["version"] = OUTPOST_VERSION;
  return JsonResponse(db.ok() ? 200 : 503, body);
}

// ---------------------------------------------------------------------------
// Enrollment and renewal

Result<std::string> Api::IssueDeviceCertificate(const std::string& device_id,
                                                const std::string& public_key_pem) {
  crypto::CertSpec spec;
  spec.common_name = device_id;
  spec.usage = crypto::CertUsage::kClient;
  spec.validity_days = c_.device_cert_days;
  OUTPOST_ASSIGN_OR_RETURN(std::string cert,
                           crypto::IssueCertificate(public_key_pem, spec, *c_.ca_key, c_.ca_pem));
  OUTPOST_ASSIGN_OR_RETURN(auto info, crypto::ParseCertificate(cert));
  OUTPOST_TRY(c_.registry->SetDeviceCertificate(device_id, info.serial_hex,
                                                info.not_after_unix * 1000, c_.now_ms()));
  return cert;
}

HttpResponse Api::Enroll(const HttpRequest& request) {
  if (!ProtobufContentType(request.content_type)) {
    return JsonError(415, "unsupported_media_type",
                     "POST /v1/enroll takes an application/x-protobuf EnrollRequest.");
  }
  outpost::v1::EnrollRequest req;
  if (!req.ParseFromString(request.body)) {
    return JsonError(400, "bad_request", "The body is not an EnrollRequest.");
  }
  if (req.token().empty()) {
    return JsonError(401, std::string(registry::kInvalidToken), "The request carries no token.");
  }
  if (req.csr_pem().empty() || req.csr_pem().size() > kMaxCsrBytes) {
    return JsonError(400, "bad_csr", "The request needs a PEM certificate signing request.");
  }
  auto csr = crypto::ParseCsr(req.csr_pem());
  if (!csr.ok()) {
    return JsonError(400, "bad_csr",
                     "The certificate signing request is not valid: " + csr.error().message());
  }
  // The hub names devices. A CSR may leave its CN empty or ask for the name it
  // requests; it may never ask for a reserved identity or an existing device.
  std::string name = req.name();
  const std::string& cn = csr->common_name;
  if (!cn.empty()) {
    if (cn.rfind("outpost-", 0) == 0) {
      return JsonError(403, "identity_refused",
                       "The CSR asks for the reserved identity \"" + cn + "\".");
    }
    if (!apps::IsDnsLabel(cn)) {
      return JsonError(403, "identity_refused",
                       "The CSR's CN \"" + cn +
                           "\" is not a valid device id; leave it empty and the hub assigns one.");
    }
    if (name.empty()) {
      name = cn;
    } else if (name != cn) {
      return JsonError(403, "identity_refused",
                       "The CSR asks for CN \"" + cn + "\" but the request names \"" + name +
                           "\"; leave the CN empty or make them equal.");
    }
    auto existing = c_.registry->GetDevice(cn);
    if (existing.ok()) {
      return JsonError(403, "identity_refused",
                       "The CSR asks for \"" + cn +
                           "\", the identity of an existing device; leave the CN empty.");
    }
    if (existing.error().code() != Errc::kNotFound) return ErrorResponse(existing.error());
  }
  registry::EnrollRequest enroll;
  enroll.token = req.token();
  enroll.requested_name = name.empty() ? req.facts().hostname() : name;
  for (const auto& [k, v] : req.labels())
    enroll.labels[k] = v;
  enroll.facts = req.facts();
  const std::int64_t now = c_.now_ms();
  auto enrolled = c_.registry->EnrollDevice(enroll, now);
  if (!enrolled.ok()) {
    std::string_view token_error = registry::TokenErrorId(enrolled.error());
    if (!token_error.empty()) {
      int status = token_error == registry::kTokenUsedUp ? 403 : 401;
      std::string message;
      if (token_error == registry::kInvalidToken) {
        message = "The join token is not valid.";
      } else if (token_error == registry::kTokenExpired) {
        message = "The join token has expired.";
      } else if (token_error == registry::kTokenRevoked) {
        message = "The join token was revoked.";
      } else {
        message = "The join token has no uses left.";
      }
      return JsonError(status, token_error, message);
    }
    if (enrolled.error().code() == Errc::kInvalidArgument) {
      return JsonError(400, "invalid_argument", enrolled.error().message());
    }
    return ErrorResponse(enrolled.error());
  }
  auto cert = IssueDeviceCertificate(enrolled->device_id, csr->public_key_pem);
  if (!cert.ok()) {
    log::Error("enroll: issuing the certificate of ", enrolled->device_id,
               " failed: ", cert.error().ToString(), "; removing the device again");
    (void)c_.registry->DeleteDevice(enrolled->device_id);
    return ErrorResponse(cert.error());
  }
  c_.desired->Publish(enrolled->mutation.desired);
  log::Info("enrolled device ", enrolled->device_id, " (", req.facts().hostname(), ", ",
            req.facts().arch(), ")");

  outpost::v1::EnrollResponse resp;
  resp.set_device_id(enrolled->device_id);
  resp.set_certificate_pem(*cert);
  resp.set_ca_pem(c_.ca_pem);
  resp.set_broker_url(c_.public_broker_url);
  resp.set_hub_url(c_.public_hub_url);
  for (const auto& [k, v] : enrolled->labels)
    (*resp.mutable_labels())[k] = v;
  return Protobuf(resp);
}

HttpResponse Api::Renew(const HttpRequest& request) {
  if (request.peer_cert_pem.empty()) {
    return JsonError(401, "certificate_required",
                     "Renewal needs the device's current certificate (mutual TLS).");
  }
  crypto::VerifyOptions verify;
  verify.usage = crypto::CertUsage::kClient;
  verify.now_unix = c_.now_ms() / 1000;
  if (Status ok = crypto::VerifyChain(request.peer_cert_pem, c_.ca_pem, verify); !ok.ok()) {
    if (ok.error().code() == Errc::kExpired) {
      return JsonError(401, "certificate_expired",
                       "The device certificate has expired; enroll the device again.");
    }
    return JsonError(401, "invalid_certificate",
                     "The client certificate is not valid: " + ok.error().message());
  }
  auto info = crypto::ParseCertificate(request.peer_cert_pem);
  if (!info.ok()) return JsonError(401, "invalid_certificate", info.error().message());
  const std::string id = info->common_name;
  if (id.empty() || id.rfind("outpost-", 0) == 0) {
    return JsonError(403, "forbidden", "Only device certificates can be renewed.");
  }
  auto device = c_.registry->GetDevice(id);
  if (!device.ok()) {
    if (device.error().code() == Errc::kNotFound) {
      return JsonError(403, "unknown_device", "The device \"" + id + "\" is not registered.");
    }
    return ErrorResponse(device.error());
  }
  if (device->revoked) {
    return JsonError(403, "device_revoked", "The device \"" + id + "\" was revoked.");
  }
  auto revoked = c_.registry->RevokedSerials();
  if (!revoked.ok()) return ErrorResponse(revoked.error());
  if (std::find(revoked->begin(), revoked->end(), info->serial_hex) != revoked->end()) {
    return JsonError(403, "certificate_revoked", "This certificate was revoked.");
  }
  if (!ProtobufContentType(request.content_type)) {
    return JsonError(415, "unsupported_media_type",
                     "POST /v1/renew takes an application/x-protobuf RenewRequest.");
  }
  outpost::v1::RenewRequest req;
  if (!req.ParseFromString(request.body) || req.csr_pem().empty() ||
      req.csr_pem().size() > kMaxCsrBytes) {
    return JsonError(400, "bad_csr", "The body is not a RenewRequest with a CSR.");
  }
  auto csr = crypto::ParseCsr(req.csr_pem());
  if (!csr.ok()) {
    return JsonError(400, "bad_csr",
                     "The certificate signing request is not valid: " + csr.error().message());
  }
  if (!csr->common_name.empty() && csr->common_name != id) {
    return JsonError(
        403, "identity_refused",
        "The CSR asks for \"" + csr->common_name + "\" but the certificate is \"" + id + "\".");
  }
  auto cert = IssueDeviceCertificate(id, csr->public_key_pem);
  if (!cert.ok()) return ErrorResponse(cert.error());
  log::Info("renewed the certificate of ", id);
  outpost::v1::RenewResponse resp;
  resp.set_certificate_pem(*cert);
  return Protobuf(resp);
}

// ---------------------------------------------------------------------------
// Tokens

HttpResponse Api::CreateToken(const HttpRequest& request) {
  auto body = ParseJsonBody(request);
  if (!body.ok()) return JsonError(400, "bad_request", body.error().message());
  std::int64_t ttl_seconds = 24 * 3600;
  int uses = 1;
  registry::Labels labels;
  const json& b = *body;
  if (b.contains("ttlSeconds")) {
    if (!b["ttlSeconds"].is_number_integer() || b["ttlSeconds"].get<std::int64_t>() < 1 ||
        b["ttlSeconds"].get<std::int64_t>() > kMaxTokenTtlSeconds) {
      return JsonError(400, "invalid_argument",
                       "ttlSeconds must be an integer from 1 to 31536000 (365 days).");
    }
    ttl_seconds = b["ttlSeconds"].get<std::int64_t>();
  }
  if (b.contains("uses")) {
    if (!b["uses"].is_number_integer() || b["uses"].get<std::int64_t>() < 1 ||
        b["uses"].get<std::int64_t>() > kMaxTokenUses) {
      return JsonError(400, "invalid_argument", "uses must be an integer from 1 to 1000000.");
    }
    uses = b["uses"].get<int>();
  }
  if (b.contains("labels")) {
    if (!b["labels"].is_object()) {
      return JsonError(400, "invalid_argument", "labels must be an object of strings.");
    }
    for (auto& [k, v] : b["labels"].items()) {
      if (!v.is_string()) {
        return JsonError(400, "invalid_argument", "label \"" + k + "\" must be a string.");
      }
      labels[k] = v.get<std::string>();
    }
  }
  for (auto& [k, v] : b.items()) {
    if (k != "ttlSeconds" && k != "uses" && k != "labels") {
      return JsonError(400, "invalid_argument", "Unknown field \"" + k + "\".");
    }
  }
  const std::int64_t now = c_.now_ms();
  auto created = c_.registry->CreateToken(std::chrono::seconds(ttl_seconds), uses, labels, now);
  if (!created.ok()) return ErrorResponse(created.error());
  json out = TokenJson(created->info, now);
  out["token"] = created->token;
  out["caHash"] = c_.ca_hash;
  out["hubUrl"] = c_.public_hub_url;
  out["joinCommand"] = JoinCommand(c_.public_hub_url, created->token, c_.ca_hash);
  log::Info("created join token ", created->info.id, " (", uses, " uses, ttl ", ttl_seconds, " s)");
  return JsonResponse(201, out);
}

HttpResponse Api::ListTokens() {
  auto tokens = c_.registry->ListTokens();
  if (!tokens.ok()) return ErrorResponse(tokens.error());
  const std::int64_t now = c_.now_ms();
  json items = json::array();
  for (const auto& t : *tokens)
    items.push_back(TokenJson(t, now));
  return JsonResponse(200, {{"tokens", items}});
}

HttpResponse Api::RevokeToken(const std::string& id) {
  Status s = c_.registry->RevokeToken(id);
  if (!s.ok()) {
    if (s.error().code() == Errc::kNotFound) {
      return JsonError(404, "not_found", "There is no token \"" + id + "\".");
    }
    return ErrorResponse(s.error());
  }
  log::Info("revoked join token ", id);
  return JsonResponse(200, {{"id", id}, {"revoked", true}});
}

// ---------------------------------------------------------------------------
// Devices

HttpResponse Api::ListDevices() {
  auto devices = c_.registry->ListDevices();
  if (!devices.ok()) return ErrorResponse(devices.error());
  json items = json::array();
  for (const auto& d : *devices)
    items.push_back(DeviceJson(d, false));
  return JsonResponse(200, {{"devices", items}});
}

namespace {
HttpResponse DeviceNotFound(const std::string& id) {
  return JsonError(404, "not_found", "There is no device \"" + id + "\".");
}
}  // namespace

HttpResponse Api::GetDevice(const std::string& id) {
  auto device = c_.registry->GetDevice(id);
  if (!device.ok()) {
    if (device.error().code() == Errc::kNotFound) return DeviceNotFound(id);
    return ErrorResponse(device.error());
  }
  return JsonResponse(200, DeviceJson(*device, true));
}

HttpResponse Api::LabelDevice(const std::string& id, const HttpRequest& request) {
  auto body = ParseJsonBody(request);
  if (!body.ok()) return JsonError(400, "bad_request", body.error().message());
  const json& b = *body;
  if (!b.contains("edits") || !b["edits"].is_array() || b["edits"].empty()) {
    return JsonError(400, "invalid_argument",
                     "The body needs \"edits\": a list like [\"k=v\", \"k-\"].");
  }
  std::vector<std::string> edits;
  for (const auto& e : b["edits"]) {
    if (!e.is_string()) return JsonError(400, "invalid_argument", "Every edit is a string.");
    edits.push_back(e.get<std::string>());
  }
  auto mutation = c_.registry->EditLabels(id, edits, c_.now_ms());
  if (!mutation.ok()) {
    if (mutation.error().code() == Errc::kNotFound) return DeviceNotFound(id);
    if (mutation.error().code() == Errc::kPermissionDenied) {
      return JsonError(409, "device_revoked",
                       "The device \"" + id + "\" is revoked; its labels cannot change.");
    }
    return ErrorResponse(mutation.error());
  }
  c_.desired->Publish(mutation->desired);
  auto device = c_.registry->GetDevice(id);
  if (!device.ok()) return ErrorResponse(device.error());
  json out = DeviceJson(*device, false);
  out["desiredChanged"] = !mutation->desired.empty();
  return JsonResponse(200, out);
}

json Api::UpdateCrl() {
  auto serials = c_.registry->RevokedSerials();
  if (!serials.ok()) {
    return {{"written", false}, {"note", "reading revoked serials: " + serials.error().message()}};
  }
  auto outcome = c_.crl->Update(*serials);
  if (!outcome.ok()) {
    log::Error("writing the CRL failed: ", outcome.error().ToString());
    return {{"written", false}, {"note", outcome.error().message()}};
  }
  json out = {{"written", outcome->written},
              {"brokerReloaded", outcome->broker_signalled},
              {"revokedCertificates", serials->size()}};
  if (!outcome->note.empty()) out["note"] = outcome->note;
  return out;
}

HttpResponse Api::RevokeDevice(const std::string& id) {
  auto serials = c_.registry->RevokeDevice(id, c_.now_ms());
  if (!serials.ok()) {
    if (serials.error().code() == Errc::kNotFound) return DeviceNotFound(id);
    return ErrorResponse(serials.error());
  }
  json crl = UpdateCrl();
  c_.desired->Clear(id);
  log::Info("revoked device ", id);
  return JsonResponse(200, {{"id", id}, {"revoked", true}, {"crl", crl}});
}

HttpResponse Api::DeleteDevice(const std::string& id) {
  auto serials = c_.registry->DeleteDevice(id);
  if (!serials.ok()) {
    if (serials.error().code() == Errc::kNotFound) return DeviceNotFound(id);
    return ErrorResponse(serials.error());
  }
  // A deleted device's certificates stay valid until they expire unless the
  // CRL names them.
  json crl = UpdateCrl();
  c_.desired->Clear(id);
  log::Info("deleted device ", id);
  return JsonResponse(200, {{"id", id}, {"deleted", true}, {"crl", crl}});
}

// ---------------------------------------------------------------------------
// Applications

HttpResponse Api::ApplyApps(const HttpRequest& request) {
  apps::ParseError where;
  auto parsed = apps::ParseApplications(request.body, &where);
  if (!parsed.ok()) {
    if (parsed.error().code() == Errc::kResourceExhausted) {
      return JsonError(413, "too_large", parsed.error().message());
    }
    return JsonError(400, "invalid_manifest", parsed.error().message());
  }
  if (parsed->empty()) {
    return JsonError(400, "invalid_manifest", "The manifest holds no EdgeApplication.");
  }
  // Which applications will change: when more than one does, remember every
  // device's current document so the devices changed can be told apart per
  // application.
  std::vector<std::string> changing;
  for (const auto& app : *parsed) {
    auto stored = c_.registry->GetApplication(app.name);
    if (!stored.ok() && stored.error().code() != Errc::kNotFound) {
      return ErrorResponse(stored.error());
    }
    if (!stored.ok() || stored->app.content_hash != app.content_hash) {
      changing.push_back(app.name);
    }
  }
  std::map<std::string, AppSignature> before;
  if (changing.size() > 1) {
    auto all = c_.registry->AllDesired();
    if (!all.ok()) return ErrorResponse(all.error());
    for (const auto& record : *all) {
      outpost::v1::DesiredState doc;
      if (doc.ParseFromString(record.document)) before[record.device_id] = SignatureOf(doc);
    }
  }

  auto applied = c_.registry->ApplyApplications(std::move(*parsed), c_.now_ms());
  if (!applied.ok()) return ErrorResponse(applied.error());
  c_.desired->Publish(applied->mutation.desired);

  std::map<std::string, std::size_t> changed_per_app;
  if (changing.size() == 1) {
    changed_per_app[changing.front()] = applied->mutation.desired.size();
  } else if (changing.size() > 1) {
    for (const auto& change : applied->mutation.desired) {
      AppSignature after = SignatureOf(change.document);
      const AppSignature& old = before[change.device_id];
      for (const auto& name : changing) {
        auto a = after.find(name);
        auto o = old.find(name);
        bool differs = (a == after.end()) != (o == old.end()) ||
                       (a != after.end() && o != old.end() && a->second != o->second);
        if (differs) ++changed_per_app[name];
      }
    }
  }
  json items = json::array();
  for (const auto& [name, action] : applied->applications) {
    items.push_back({{"name", name},
                     {"action", std::string(registry::ApplyActionName(action))},
                     {"devicesChanged", changed_per_app[name]}});
    log::Info("application ", name, " ", registry::ApplyActionName(action));
  }
  return JsonResponse(200, {{"applications", items},
                            {"devicesChanged", applied->mutation.desired.size()},
                            {"warnings", applied->mutation.warnings}});
}

HttpResponse Api::ListApps() {
  auto list = c_.registry->ListApplications();
  if (!list.ok()) return ErrorResponse(list.error());
  json items = json::array();
  for (const auto& stored : *list) {
    json workloads = json::array();
    for (const auto& w : stored.app.base_workloads)
      workloads.push_back(w.name());
    json item = {{"name", stored.app.name},
                 {"revision", stored.revision},
                 {"createdAt", FormatTime(stored.created_ms)},
                 {"updatedAt", FormatTime(stored.updated_ms)},
                 {"selector", LabelsJson(stored.app.selector.match_labels)},
                 {"workloads", workloads}};
    auto rollout = c_.registry->GetRolloutStatus(stored.app.name);
    if (rollout.ok()) item["rollout"] = RolloutJson(*rollout);
    items.push_back(std::move(item));
  }
  return JsonResponse(200, {{"applications", items}});
}

HttpResponse Api::GetApp(const std::string& name) {
  auto stored = c_.registry->GetApplication(name);
  if (!stored.ok()) {
    if (stored.error().code() == Errc::kNotFound) {
      return JsonError(404, "not_found", "There is no application \"" + name + "\".");
    }
    return ErrorResponse(stored.error());
  }
  json out = {{"name", stored->app.name},
              {"revision", stored->revision},
              {"createdAt", FormatTime(stored->created_ms)},
              {"updatedAt", FormatTime(stored->updated_ms)},
              {"manifest", apps::ApplicationToJson(stored->app)}};
  auto rollout = c_.registry->GetRolloutStatus(name);
  if (rollout.ok()) out["rollout"] = RolloutJson(*rollout);
  return JsonResponse(200, out);
}

HttpResponse Api::DeleteApp(const std::string& name) {
  auto mutation = c_.registry->DeleteApplication(name, c_.now_ms());
  if (!mutation.ok()) {
    if (mutation.error().code() == Errc::kNotFound) {
      return JsonError(404, "not_found", "There is no application \"" + name + "\".");
    }
    return ErrorResponse(mutation.error());
  }
  c_.desired->Publish(mutation->desired);
  log::Info("deleted application ", name);
  return JsonResponse(
      200, {{"name", name}, {"deleted", true}, {"devicesChanged", mutation->desired.size()}});
}

HttpResponse Api::Rollout(const std::string& name) {
  auto status = c_.registry->GetRolloutStatus(name);
  if (!status.ok()) {
    if (status.error().code() == Errc::kNotFound) {
      return JsonError(404, "not_found", "There is no application \"" + name + "\".");
    }
    return ErrorResponse(status.error());
  }
  return JsonResponse(200, RolloutJson(*status));
}

}  // namespace outpost::hub::server
