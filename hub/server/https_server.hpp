// The hub's HTTPS transport: Boost.Beast over asio::ssl (OpenSSL), one
// io_context thread of its own. It parses requests with bounded headers and
// bodies (413 past the limit, decided from the path before the body is read),
// enforces per-connection deadlines (handshake, request, idle keep-alive,
// write) and a cap on open connections, and hands each request to a
// RequestHandler. The handler must not block: it answers through `respond`,
// from any thread, exactly once; the session waits for it without holding the
// io thread, so a slow client or a slow request never delays anyone else.
//
// The server asks every client for a certificate but accepts connections
// without one, and does not judge the one it gets: it passes the PEM along
// (HttpRequest::peer_cert_pem) and the handler of /v1/renew verifies it
// against the hub CA.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "hub/server/http_types.hpp"
#include "shared/core/result.hpp"

namespace outpost::hub::server {

class RequestHandler {
 public:
  using Respond = std::function<void(HttpResponse)>;
  virtual ~RequestHandler() = default;
  // Runs on the server's io thread: quick checks only, then hand off.
  virtual void Handle(HttpRequest request, Respond respond) = 0;
};

struct HttpsServerOptions {
  std::string listen_address = "0.0.0.0";
  std::uint16_t port = 0;  // 0: an ephemeral port (see HttpsServer::port())
  std::string cert_pem;    // server certificate chain
  std::string key_pem;
  std::size_t max_connections = 1024;
  std::chrono::milliseconds handshake_timeout{10000};
  // From the first byte of a request to its last.
  std::chrono::milliseconds request_timeout{30000};
  // Between requests on a kept-alive connection.
  std::chrono::milliseconds idle_timeout{60000};
  std::chrono::milliseconds write_timeout{30000};
  // How long a request may wait for its handler before the client gets 503.
  std::chrono::milliseconds handler_timeout{120000};
};

class HttpsServer {
 public:
  // Binds and starts serving on a thread of its own.
  static Result<std::unique_ptr<HttpsServer>> Start(const HttpsServerOptions& options,
                                                    RequestHandler* handler);
  ~HttpsServer();  // Stop()
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  std::uint16_t port() const;
  std::size_t open_connections() const;
  // Stops accepting, closes every connection, joins the thread. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit HttpsServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace outpost::hub::server
