// The one HTTP(S) client of Outpost (agent enrollment and renewal, outpostctl),
// on Boost.Beast. Blocking, with a deadline, bounded response size.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::http {

struct Url {
  std::string scheme;  // "https" or "http"
  std::string host;
  std::string port;  // defaulted from the scheme
  std::string path;  // "" or starting with '/'
};
Result<Url> ParseUrl(const std::string& url);

struct TlsOptions {
  std::string ca_pem;                 // verify the server against this CA (and its name)
  bool insecure_skip_verify = false;  // only for fetching a CA that is then pinned by hash
  std::string client_cert_pem;        // mutual TLS (renewal)
  std::string client_key_pem;
};

struct Request {
  std::string method = "GET";
  std::string target;  // path and query, appended to the base URL's path
  std::string body;
  std::string content_type;
  std::map<std::string, std::string> headers;  // e.g. Authorization
};

struct Response {
  int status = 0;
  std::string body;
  std::string content_type;
  // The server's certificate chain as PEM (leaf first), as presented.
  std::string peer_chain_pem;
};

struct ClientOptions {
  TlsOptions tls;
  std::chrono::milliseconds timeout{15000};
  std::size_t max_response_bytes = 8u << 20;
};

// Transport failures (DNS, refused, TLS verification, timeout) are errors
// with kUnavailable / kUnauthenticated / kTimeout; any HTTP status is a value.
Result<Response> Send(const std::string& base_url, const Request& request,
                      const ClientOptions& options);

}  // namespace outpost::http
