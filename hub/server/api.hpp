// The hub's HTTPS API (docs/hub.md lists every endpoint): enrollment,
// renewal, the admin API and /healthz. Pure request -> response logic over
// the Registry; it runs on the hub's state thread, the one thread that owns
// the Registry. The transport (https_server) and the thread hand-off
// (ApiDispatcher in hub.hpp) are elsewhere, so everything here is testable by
// calling Handle().
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "hub/broker/crl.hpp"
#include "hub/broker/desired_sink.hpp"
#include "hub/registry/registry.hpp"
#include "hub/server/http_types.hpp"
#include "shared/crypto/crypto.hpp"

namespace outpost::hub::server {

struct ApiContext {
  registry::Registry* registry = nullptr;
  broker::DesiredSink* desired = nullptr;
  broker::CrlPublisher* crl = nullptr;
  const crypto::PrivateKey* ca_key = nullptr;
  std::string ca_pem;
  std::string ca_hash;            // sha256:<hex>
  std::string public_hub_url;     // https://host:port (join command, EnrollResponse)
  std::string public_broker_url;  // ssl://host:port (EnrollResponse)
  int device_cert_days = 90;
  std::function<std::int64_t()> now_ms;
  // Extra state for /healthz (the broker link's), merged into the answer.
  std::function<nlohmann::json()> health;
};

class Api {
 public:
  explicit Api(ApiContext context) : c_(std::move(context)) {}

  // Routes and answers one request. Admin requests must have passed
  // CheckAdminAuth already (the transport does it before queueing).
  HttpResponse Handle(const HttpRequest& request);

 private:
  HttpResponse Health();
  HttpResponse Enroll(const HttpRequest& request);
  HttpResponse Renew(const HttpRequest& request);
  HttpResponse Admin(const HttpRequest& request);
  HttpResponse CreateToken(const HttpRequest& request);
  HttpResponse ListTokens();
  HttpResponse RevokeToken(const std::string& id);
  HttpResponse ListDevices();
  HttpResponse GetDevice(const std::string& id);
  HttpResponse LabelDevice(const std::string& id, const HttpRequest& request);
  HttpResponse RevokeDevice(const std::string& id);
  HttpResponse DeleteDevice(const std::string& id);
  HttpResponse ApplyApps(const HttpRequest& request);
  HttpResponse ListApps();
  HttpResponse GetApp(const std::string& name);
  HttpResponse DeleteApp(const std::string& name);
  HttpResponse Rollout(const std::string& name);
  Result<std::string> IssueDeviceCertificate(const std::string& device_id,
                                             const std::string& public_key_pem);
  nlohmann::json UpdateCrl();

  ApiContext c_;
};

// --- Pieces used on the transport thread and by tests ----------------------

bool IsAdminPath(const std::string& path);
// nullopt when the request carries `Authorization: Bearer <admin_token>`
// (constant-time comparison), else the 401 answer.
std::optional<HttpResponse> CheckAdminAuth(const HttpRequest& request,
                                           const std::string& admin_token);

// The status and error id for an Error (kNotFound -> 404 "not_found", ...).
HttpResponse ErrorResponse(const Error& error);

// "2025-01-02T03:04:05Z" (UTC); "" for 0.
std::string FormatTime(std::int64_t unix_ms);

// JSON forms of registry values (the admin API's answers).
nlohmann::json TokenJson(const registry::TokenInfo& token, std::int64_t now_ms);
nlohmann::json DeviceJson(const registry::Device& device, bool detail);
nlohmann::json RolloutJson(const registry::RolloutStatus& status);
std::string JoinCommand(const std::string& hub_url, const std::string& token,
                        const std::string& ca_hash);

}  // namespace outpost::hub::server
