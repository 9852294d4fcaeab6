// The request and response the hub's API logic sees: plain values, no Beast
// types, so routing and validation are testable without sockets.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace outpost::hub::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // target without the query, percent-decoded
  std::map<std::string, std::string> query;
  std::string content_type;   // media type only, lowercase, parameters cut
  std::string authorization;  // the Authorization header
  std::string body;
  // The client certificate the peer presented in the TLS handshake (PEM), ""
  // when none. Not verified by the transport: handlers that rely on it verify
  // it against the hub CA themselves.
  std::string peer_cert_pem;
  std::string remote;  // "ip:port", for logs
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// Body limits (docs/protocol.md): manifests 1 MiB, everything else 64 KiB.
inline constexpr std::size_t kMaxBodyBytes = 64u << 10;
inline constexpr std::size_t kMaxManifestBodyBytes = 1u << 20;
// The limit for a request, decided from its method and path before the body
// is read.
std::size_t BodyLimitFor(std::string_view method, std::string_view path);

// {"error": code, "message": message} with `status`.
HttpResponse JsonError(int status, std::string_view code, std::string_view message);
HttpResponse JsonResponse(int status, const nlohmann::json& body);

// Splits a target into path (percent-decoded) and query parameters. False
// when the target is malformed (bad escapes, NUL, not starting with '/').
bool ParseTarget(std::string_view target, std::string* path,
                 std::map<std::string, std::string>* query);

}  // namespace outpost::hub::server
