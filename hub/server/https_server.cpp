#include "hub/server/https_server.hpp"

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include "shared/core/log.hpp"

namespace outpost::hub::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kHeaderLimit = 16u << 10;

std::string PeerCertificatePem(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return "";
  std::string pem;
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio != nullptr && PEM_write_bio_X509(bio, cert) == 1) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    if (len > 0) pem.assign(data, static_cast<std::size_t>(len));
  }
  BIO_free(bio);
  X509_free(cert);
  return pem;
}

std::string MediaType(std::string_view value) {
  auto semi = value.find(';');
  std::string out(value.substr(0, semi));
  while (!out.empty() && (out.back() == ' ' || out.back() == '\t'))
    out.pop_back();
  std::size_t start = 0;
  while (start < out.size() && (out[start] == ' ' || out[start] == '\t'))
    ++start;
  out.erase(0, start);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

class Session;

// What sessions share. Deliberately not the io_context: a handler still queued
// when the server is destroyed dies with the io_context without keeping it
// alive through a reference cycle.
struct Shared {
  HttpsServerOptions options;
  RequestHandler* handler = nullptr;
  asio::ssl::context ssl{asio::ssl::context::tls_server};
  std::atomic<std::size_t> open{0};
  std::atomic<bool> stopped{false};
  // Where answers from other threads are posted; null once the server is
  // stopped, so a handler that answers late (or never) is harmless.
  std::mutex io_mu;
  asio::io_context* io = nullptr;
};

struct HttpsServer::Impl {
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::uint16_t bound_port = 0;
  // Sessions alive, for Stop(); touched on the io thread only.
  std::set<std::weak_ptr<Session>, std::owner_less<std::weak_ptr<Session>>> sessions;

  void Accept();
};

// One connection: handshake, then requests one at a time (keep-alive).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Shared> server)
      : stream_(std::move(socket), server->ssl),
        server_(std::move(server)),
        handler_timer_(stream_.get_executor()) {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  ~Session() { server_->open.fetch_sub(1); }

  void Start() {
    beast::get_lowest_layer(stream_).expires_after(server_->options.handshake_timeout);
    stream_.async_handshake(
        asio::ssl::stream_base::server,
        [self = shared_from_this()](beast::error_code ec) { self->OnHandshake(ec); });
  }

  void Close() {
    beast::error_code ec;
    handler_timer_.cancel();
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(stream_).close();
  }

 private:
  void OnHandshake(beast::error_code ec) {
    if (ec) {
      log::Debug("https: handshake with ", remote_, " failed: ", ec.message());
      return Close();
    }
    peer_cert_pem_ = PeerCertificatePem(stream_.native_handle());
    ReadHeader(server_->options.request_timeout);
  }

  void ReadHeader(std::chrono::milliseconds timeout) {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    // No limit while the header is read (Beast would check Content-Length
    // against it there); OnHeader sets the one for this path.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::get_lowest_layer(stream_).expires_after(timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) {
      if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
          ec == asio::error::operation_aborted || ec == asio::ssl::error::stream_truncated ||
          ec == asio::error::eof || ec == asio::error::connection_reset) {
        return Close();
      }
      if (ec == bhttp::error::header_limit) {
        return Reply(JsonError(431, "headers_too_large", "The request headers are too large."),
                     true);
      }
      return Reply(JsonError(400, "bad_request", "The request is not valid HTTP."), true);
    }
    // The rest of the request (its body) must arrive within the request
    // deadline too.
    beast::get_lowest_layer(stream_).expires_after(server_->options.request_timeout);
    auto& req = parser_->get();
    std::string path;
    std::map<std::string, std::string> query;
    std::string target(req.target());
    if (!ParseTarget(target, &path, &query)) {
      return Reply(JsonError(400, "bad_request", "The request target is not valid."), true);
    }
    const std::size_t limit = BodyLimitFor(std::string(req.method_string()), path);
    if (auto length = parser_->content_length(); length && *length > limit) {
      drain_ = true;
      return Reply(TooLarge(limit), true);
    }
    parser_->body_limit(limit);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this(), limit](beast::error_code read_ec, std::size_t) {
                        self->OnBody(read_ec, limit);
                      });
  }

  static HttpResponse TooLarge(std::size_t limit) {
    return JsonError(413, "too_large",
                     "The request body is larger than " + std::to_string(limit / 1024) + " KiB.");
  }

  void OnBody(beast::error_code ec, std::size_t limit) {
    if (ec == bhttp::error::body_limit) {
      drain_ = true;
      return Reply(TooLarge(limit), true);
    }
    if (ec) {
      if (ec == beast::error::timeout || ec == asio::error::operation_aborted) return Close();
      return Reply(JsonError(400, "bad_request", "The request is not valid HTTP."), true);
    }
    auto req = parser_->release();
    keep_alive_ = req.keep_alive();
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    ParseTarget(request.target, &request.path, &request.query);
    auto content_type = req[bhttp::field::content_type];
    request.content_type = MediaType(std::string_view(content_type.data(), content_type.size()));
    auto authorization = req[bhttp::field::authorization];
    request.authorization = std::string(authorization.data(), authorization.size());
    request.body = std::move(req.body());
    request.peer_cert_pem = peer_cert_pem_;
    request.remote = remote_;

    // No read is pending while the handler works: stop the stream's timer and
    // bound the wait with our own.
    beast::get_lowest_layer(stream_).expires_never();
    const std::uint64_t id = ++request_id_;
    handler_timer_.expires_after(server_->options.handler_timeout);
    handler_timer_.async_wait([self = shared_from_this(), id](beast::error_code tec) {
      if (tec || self->answered_ == id) return;
      self->answered_ = id;
      self->Reply(JsonError(503, "unavailable", "The hub did not answer in time; try again."),
                  true);
    });
    // The answer holds the session weakly (the handler timer keeps it alive
    // meanwhile), so an answer that comes after the server stopped, or never,
    // holds nothing of the server.
    std::weak_ptr<Session> weak = shared_from_this();
    std::shared_ptr<Shared> shared = server_;
    server_->handler->Handle(std::move(request), [weak, shared, id](HttpResponse response) {
      std::lock_guard lock(shared->io_mu);
      if (shared->io == nullptr) return;
      asio::post(*shared->io, [weak, id, response = std::move(response)]() mutable {
        auto self = weak.lock();
        if (!self || self->answered_ == id) return;  // gone, or timed out meanwhile
        self->answered_ = id;
        self->handler_timer_.cancel();
        self->Reply(std::move(response), false);
      });
    });
  }

  void Reply(HttpResponse response, bool close) {
    if (close || server_->stopped.load()) keep_alive_ = false;
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(response.status));
    res_.set(bhttp::field::server, "outpost-hub");
    res_.set(bhttp::field::content_type, response.content_type);
    res_.set(bhttp::field::cache_control, "no-store");
    res_.body() = std::move(response.body);
    res_.keep_alive(keep_alive_);
    res_.prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(server_->options.write_timeout);
    bhttp::async_write(
        stream_, res_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnWrite(ec); });
  }

  void OnWrite(beast::error_code ec) {
    if (ec) return Close();
    if (drain_) return Drain();
    if (!keep_alive_) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->Close(); });
      return;
    }
    ReadHeader(server_->options.idle_timeout);
  }

  // After a 413 sent before the body was read: read and discard what the
  // client still sends (bounded in bytes and time) instead of resetting the
  // connection under it, so it gets to read the answer.
  void Drain() {
    if (drained_ >= kDrainLimit) return Close();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              if (ec) return self->Close();
                              self->drained_ += n;
                              self->Drain();
                            });
  }

  static constexpr std::size_t kDrainLimit = 8u << 20;

  beast::ssl_stream<beast::tcp_stream> stream_;
  std::shared_ptr<Shared> server_;
  asio::steady_timer handler_timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  std::string peer_cert_pem_;
  std::string remote_;
  bool keep_alive_ = false;
  bool drain_ = false;
  std::size_t drained_ = 0;
  std::array<char, 16384> scratch_{};
  std::uint64_t request_id_ = 0;
  std::uint64_t answered_ = 0;
};

void HttpsServer::Impl::Accept() {
  // The Impl outlives the io thread (Stop() joins it), so `this` is safe here.
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || shared->stopped.load()) return;
    if (!ec) {
      if (shared->open.load() >= shared->options.max_connections) {
        log::Warn("https: ", shared->options.max_connections,
                  " connections open; refusing a new one");
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        shared->open.fetch_add(1);
        auto session = std::make_shared<Session>(std::move(socket), shared);
        // Forget sessions that ended, then remember this one.
        for (auto it = sessions.begin(); it != sessions.end();) {
          it = it->expired() ? sessions.erase(it) : std::next(it);
        }
        sessions.insert(session);
        session->Start();
      }
    } else {
      log::Warn("https: accept failed: ", ec.message());
    }
    Accept();
  });
}

HttpsServer::HttpsServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpsServer::~HttpsServer() {
  Stop();
}

Result<std::unique_ptr<HttpsServer>> HttpsServer::Start(const HttpsServerOptions& options,
                                                        RequestHandler* handler) {
  auto impl = std::make_shared<Impl>();
  impl->shared->options = options;
  impl->shared->handler = handler;
  try {
    impl->shared->ssl.set_options(asio::ssl::context::default_workarounds |
                                  asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                                  asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                                  asio::ssl::context::single_dh_use);
    impl->shared->ssl.use_certificate_chain(asio::buffer(options.cert_pem));
    impl->shared->ssl.use_private_key(asio::buffer(options.key_pem), asio::ssl::context::pem);
    // Ask for a client certificate (renewal uses it) but let clients without
    // one in; the handler verifies what it gets.
    impl->shared->ssl.set_verify_mode(asio::ssl::verify_peer);
    impl->shared->ssl.set_verify_callback([](bool, asio::ssl::verify_context&) { return true; });
    static const unsigned char kSessionContext[] = "outpost-hub";
    SSL_CTX_set_session_id_context(impl->shared->ssl.native_handle(), kSessionContext,
                                   sizeof kSessionContext - 1);
  } catch (const boost::system::system_error& e) {
    return Error(Errc::kInvalidArgument,
                 std::string("loading the API certificate or key: ") + e.what());
  }
  try {
    auto address = asio::ip::make_address(options.listen_address);
    tcp::endpoint endpoint(address, options.port);
    impl->acceptor.open(endpoint.protocol());
    impl->acceptor.set_option(asio::socket_base::reuse_address(true));
    impl->acceptor.bind(endpoint);
    impl->acceptor.listen(asio::socket_base::max_listen_connections);
    impl->bound_port = impl->acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    return Error(Errc::kUnavailable, "listening on " + options.listen_address + ":" +
                                         std::to_string(options.port) + ": " + e.code().message());
  }
  impl->shared->io = &impl->io;
  impl->Accept();
  impl->thread = std::thread([raw = impl.get()] {
    for (;;) {
      try {
        raw->io.run();
        return;
      } catch (const std::exception& e) {
        log::Error("https: unexpected exception in the io thread: ", e.what());
      }
    }
  });
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(impl)));
}

std::uint16_t HttpsServer::port() const {
  return impl_->bound_port;
}

std::size_t HttpsServer::open_connections() const {
  return impl_->shared->open.load();
}

void HttpsServer::Stop() {
  if (!impl_ || impl_->shared->stopped.exchange(true)) return;
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    for (auto& weak : impl->sessions) {
      if (auto session = weak.lock()) session->Close();
    }
    impl->sessions.clear();
  });
  // With the acceptor and every socket closed, the pending operations finish
  // with errors and run() returns on its own.
  if (impl->thread.joinable()) impl->thread.join();
  std::lock_guard lock(impl->shared->io_mu);
  impl->shared->io = nullptr;
}

}  // namespace outpost::hub::server
