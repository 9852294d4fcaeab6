#include "agent/cli/tls_probe.hpp"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

#include <optional>

namespace outpost::agent::cli {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

Status ProbeTls(const std::string& host, const std::string& port, const std::string& ca_pem,
                const std::string& cert_pem, const std::string& key_pem,
                std::chrono::milliseconds timeout) {
  try {
    asio::io_context io;
    ssl::context ctx(ssl::context::tls_client);
    boost::system::error_code ec;
    ctx.add_certificate_authority(asio::buffer(ca_pem), ec);
    if (ec) return Error(Errc::kInvalidArgument, "ca.crt: " + ec.message());
    ctx.use_certificate_chain(asio::buffer(cert_pem), ec);
    if (ec) return Error(Errc::kInvalidArgument, "device.crt: " + ec.message());
    ctx.use_private_key(asio::buffer(key_pem), ssl::context::pem, ec);
    if (ec) return Error(Errc::kInvalidArgument, "device.key: " + ec.message());
    ctx.set_verify_mode(ssl::verify_peer);
    ssl::stream<tcp::socket> stream(io, ctx);
    stream.set_verify_callback(ssl::host_name_verification(host));
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(host.c_str()));

    std::optional<Error> failure;
    bool done = false;
    asio::steady_timer deadline(io, timeout);
    deadline.async_wait([&](const boost::system::error_code& tec) {
      if (tec) return;
      if (!done)
        failure = Error(Errc::kTimeout,
                        "no TLS handshake within " + std::to_string(timeout.count()) + " ms");
      boost::system::error_code ignored;
      stream.lowest_layer().close(ignored);
    });
    tcp::resolver resolver(io);
    char probe_byte = 0;
    resolver.async_resolve(
        host, port, [&](const boost::system::error_code& rec, tcp::resolver::results_type results) {
          if (rec) {
            failure = Error(Errc::kUnavailable, "resolving " + host + ": " + rec.message());
            deadline.cancel();
            return;
          }
          asio::async_connect(
              stream.lowest_layer(), results,
              [&](const boost::system::error_code& cec, const tcp::endpoint&) {
                if (cec) {
                  failure = Error(Errc::kUnavailable, "connect: " + cec.message());
                  deadline.cancel();
                  return;
                }
                stream.async_handshake(
                    ssl::stream_base::client, [&](const boost::system::error_code& hec) {
                      if (hec) {
                        failure = Error(Errc::kUnauthenticated, "TLS handshake: " + hec.message());
                        deadline.cancel();
                        return;
                      }
                      // TLS 1.3 reports a refused client certificate after the
                      // handshake: wait briefly for an alert before calling it good.
                      done = true;
                      deadline.expires_after(std::chrono::milliseconds(500));
                      deadline.async_wait([&](const boost::system::error_code& tec) {
                        if (tec) return;
                        boost::system::error_code ignored;
                        stream.lowest_layer().close(ignored);
                      });
                      stream.async_read_some(
                          asio::buffer(&probe_byte, 1),
                          [&](const boost::system::error_code& rec2, std::size_t) {
                            if (rec2 && rec2 != asio::error::operation_aborted &&
                                rec2 != asio::error::bad_descriptor &&
                                stream.lowest_layer().is_open()) {
                              failure =
                                  Error(Errc::kUnauthenticated,
                                        "the broker closed the TLS session: " + rec2.message());
                            }
                            deadline.cancel();
                          });
                    });
              });
        });
    io.run();
    if (failure) return *failure;
    return OkStatus();
  } catch (const std::exception& e) {
    return Error(Errc::kInternal, std::string("tls probe: ") + e.what());
  }
}

}  // namespace outpost::agent::cli
