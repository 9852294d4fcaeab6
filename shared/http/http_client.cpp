// The Beast backend of http::Send: one request per connection, with a
// deadline over the whole exchange and a bounded response body.
#include <utility>  // before Boost: 1.74's awaitable.hpp uses std::exchange

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

#include "shared/http/http_client.hpp"

namespace outpost::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

Result<Url> ParseUrl(const std::string& url) {
  Url out;
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos)
    return Error(Errc::kInvalidArgument, "URL '" + url + "' has no scheme (https://host:port)");
  out.scheme = url.substr(0, scheme_end);
  if (out.scheme != "https" && out.scheme != "http")
    return Error(Errc::kInvalidArgument, "URL '" + url + "': scheme must be https or http");
  std::string rest = url.substr(scheme_end + 3);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  out.path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!out.path.empty() && out.path.back() == '/')
    out.path.pop_back();
  if (hostport.empty()) return Error(Errc::kInvalidArgument, "URL '" + url + "' has no host");
  if (hostport.front() == '[') {  // [::1]:8443
    auto close = hostport.find(']');
    if (close == std::string::npos)
      return Error(Errc::kInvalidArgument, "URL '" + url + "': unterminated IPv6 address");
    out.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size() && hostport[close + 1] == ':')
      out.port = hostport.substr(close + 2);
  } else {
    auto colon = hostport.rfind(':');
    out.host = hostport.substr(0, colon);
    if (colon != std::string::npos) out.port = hostport.substr(colon + 1);
  }
  if (out.port.empty()) out.port = out.scheme == "https" ? "443" : "80";
  for (char c : out.port)
    if (c < '0' || c > '9') return Error(Errc::kInvalidArgument, "URL '" + url + "': bad port");
  if (out.host.empty()) return Error(Errc::kInvalidArgument, "URL '" + url + "' has no host");
  return out;
}

namespace {

std::string ChainPem(SSL* ssl) {
  std::string out;
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (!chain) return out;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    BIO* bio = BIO_new(BIO_s_mem());
    if (!bio) break;
    if (PEM_write_bio_X509(bio, sk_X509_value(chain, i)) == 1) {
      char* data = nullptr;
      long n = BIO_get_mem_data(bio, &data);
      out.append(data, static_cast<std::size_t>(n));
    }
    BIO_free(bio);
  }
  return out;
}

// SSL_set_tlsext_host_name is a macro with an old-style cast.
void SetSni(SSL* ssl, const std::string& host) {
  SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
           const_cast<char*>(host.c_str()));
}

bool IsIpAddress(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

Error TransportError(const std::string& what, const Url& url, const beast::error_code& ec) {
  std::string where = url.host + ":" + url.port;
  if (ec == beast::error::timeout || ec == asio::error::timed_out)
    return Error(Errc::kTimeout, what + " " + where + ": timed out");
  if (ec.category() == asio::error::get_ssl_category() ||
      ec.category() == asio::ssl::error::get_stream_category()) {
    return Error(Errc::kUnauthenticated, what + " " + where + ": TLS: " + ec.message());
  }
  return Error(Errc::kUnavailable, what + " " + where + ": " + ec.message());
}

bhttp::request<bhttp::string_body> BuildRequest(const Url& url, const Request& request) {
  bhttp::request<bhttp::string_body> req;
  req.method_string(request.method);
  req.target(url.path + (request.target.empty() ? "/" : request.target));
  req.version(11);
  req.set(bhttp::field::host, url.host);
  req.set(bhttp::field::user_agent, "outpost/" OUTPOST_VERSION);
  req.set(bhttp::field::connection, "close");
  for (const auto& [k, v] : request.headers)
    req.set(k, v);
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    if (!request.content_type.empty()) req.set(bhttp::field::content_type, request.content_type);
    req.body() = request.body;
    req.prepare_payload();
  }
  return req;
}

// Every step is asynchronous so that one deadline (io_context::run_for)
// bounds the whole exchange; Beast's synchronous calls have no timeout.
class Exchange {
 public:
  Exchange(const Url& url, const Request& request, const ClientOptions& options)
      : url_(url), request_(request), options_(options) {}

  Result<Response> Run() {
    asio::io_context ioc;
    std::optional<Result<Response>> result;
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { result.emplace(co_await Body(ioc)); },
        asio::detached);
    ioc.run_for(options_.timeout);
    if (!result)
      return Error(Errc::kTimeout, "request to " + url_.host + ":" + url_.port +
                                       " timed out after " +
                                       std::to_string(options_.timeout.count()) + " ms");
    return std::move(*result);
  }

 private:
  asio::awaitable<Result<Response>> Body(asio::io_context& ioc) {
    auto token = asio::redirect_error(asio::use_awaitable, ec_);
    tcp::resolver resolver(ioc);
    auto endpoints = co_await resolver.async_resolve(url_.host, url_.port, token);
    if (ec_) co_return TransportError("resolving", url_, ec_);

    if (url_.scheme == "http") {
      beast::tcp_stream stream(ioc);
      co_await stream.async_connect(endpoints, token);
      if (ec_) co_return TransportError("connecting to", url_, ec_);
      co_return co_await Talk(stream);
    }

    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    const TlsOptions& tls = options_.tls;
    if (tls.insecure_skip_verify) {
      ctx.set_verify_mode(asio::ssl::verify_none);
    } else {
      if (tls.ca_pem.empty())
        co_return Error(Errc::kInvalidArgument,
                        "https to " + url_.host + " needs a CA to verify it");
      ctx.add_certificate_authority(asio::buffer(tls.ca_pem), ec_);
      if (ec_) co_return Error(Errc::kInvalidArgument, "the CA certificate is not valid PEM");
      ctx.set_verify_mode(asio::ssl::verify_peer);
      ctx.set_verify_callback(asio::ssl::host_name_verification(url_.host));
    }
    if (!tls.client_cert_pem.empty()) {
      ctx.use_certificate_chain(asio::buffer(tls.client_cert_pem), ec_);
      if (!ec_) ctx.use_private_key(asio::buffer(tls.client_key_pem), asio::ssl::context::pem, ec_);
      if (ec_)
        co_return Error(Errc::kInvalidArgument, "client certificate or key is not valid PEM");
    }
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    if (!IsIpAddress(url_.host)) SetSni(stream.native_handle(), url_.host);
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, token);
    if (ec_) co_return TransportError("connecting to", url_, ec_);
    co_await stream.async_handshake(asio::ssl::stream_base::client, token);
    if (ec_) co_return TransportError("TLS handshake with", url_, ec_);
    std::string chain = ChainPem(stream.native_handle());
    auto res = co_await Talk(stream);
    if (res.ok()) res->peer_chain_pem = std::move(chain);
    co_return res;
  }

  template <typename Stream>
  asio::awaitable<Result<Response>> Talk(Stream& stream) {
    auto token = asio::redirect_error(asio::use_awaitable, ec_);
    auto req = BuildRequest(url_, request_);
    co_await bhttp::async_write(stream, req, token);
    if (ec_) co_return TransportError("sending to", url_, ec_);
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(options_.max_response_bytes);
    parser.header_limit(64 * 1024);
    co_await bhttp::async_read(stream, buffer, parser, token);
    if (ec_ == bhttp::error::body_limit)
      co_return Error(Errc::kResourceExhausted, "response from " + url_.host + " is larger than " +
                                                    std::to_string(options_.max_response_bytes) +
                                                    " bytes");
    if (ec_) co_return TransportError("reading from", url_, ec_);
    Response out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    out.content_type = std::string(res[bhttp::field::content_type]);
    co_return out;
  }

  const Url& url_;
  const Request& request_;
  const ClientOptions& options_;
  beast::error_code ec_;
};

}  // namespace

Result<Response> Send(const std::string& base_url, const Request& request,
                      const ClientOptions& options) {
  OUTPOST_ASSIGN_OR_RETURN(Url url, ParseUrl(base_url));
  try {
    return Exchange(url, request, options).Run();
  } catch (const std::exception& e) {
    return Error(Errc::kInternal, std::string("http: ") + e.what());
  }
}

}  // namespace outpost::http
