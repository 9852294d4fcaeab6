#include "agent/daemon/status_server.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <cstring>

#include "shared/core/log.hpp"

namespace outpost::agent::daemon {

namespace asio = boost::asio;
using Local = asio::local::stream_protocol;

StatusServer::StatusServer(asio::io_context& io, std::string path, Producer produce)
    : io_(io), path_(std::move(path)), produce_(std::move(produce)), acceptor_(io) {}

StatusServer::~StatusServer() {
  Stop();
}

Status StatusServer::Start() {
  if (AgentListening(path_))
    return Error(Errc::kAlreadyExists, "another agent answers on " + path_);
  ::unlink(path_.c_str());  // a stale socket of a previous run
  boost::system::error_code ec;
  acceptor_.open(Local(), ec);
  if (!ec) acceptor_.bind(Local::endpoint(path_), ec);
  if (ec) return Error(Errc::kIo, "status socket " + path_ + ": " + ec.message());
  ::chmod(path_.c_str(), 0600);
  acceptor_.listen(16, ec);
  if (ec) return Error(Errc::kIo, "status socket " + path_ + ": " + ec.message());
  started_ = true;
  Accept();
  return OkStatus();
}

void StatusServer::Stop() {
  if (!started_) return;
  started_ = false;
  boost::system::error_code ec;
  acceptor_.close(ec);
  ::unlink(path_.c_str());
}

void StatusServer::Accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, Local::socket socket) {
    if (ec == asio::error::operation_aborted || !started_) return;
    if (!ec) {
      if (*active_ >= kMaxClients) {
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        ++*active_;
        auto sock = std::make_shared<Local::socket>(std::move(socket));
        auto body = std::make_shared<std::string>(produce_());
        body->push_back('\n');
        auto timer = std::make_shared<asio::steady_timer>(io_, kClientDeadline);
        timer->async_wait([sock](const boost::system::error_code& tec) {
          if (tec) return;
          boost::system::error_code ignored;
          sock->close(ignored);
        });
        auto active = active_;
        asio::async_write(
            *sock, asio::buffer(*body),
            [sock, body, timer, active](const boost::system::error_code&, std::size_t) {
              --*active;
              timer->cancel();
              boost::system::error_code ignored;
              sock->shutdown(Local::socket::shutdown_both, ignored);
              sock->close(ignored);
            });
      }
    } else {
      log::Warn("status socket: accept: ", ec.message());
    }
    Accept();
  });
}

bool AgentListening(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

Result<std::string> QueryStatus(const std::string& path, std::chrono::milliseconds timeout,
                                std::size_t max_bytes) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    return Error(Errc::kInvalidArgument, "socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("socket", errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return Error(Errc::kUnavailable, "no agent answers on " + path + ": " + std::strerror(errno));
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[8192];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Error(Errc::kTimeout, "the agent did not answer in time");
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("poll", errno);
    }
    if (r == 0) return Error(Errc::kTimeout, "the agent did not answer in time");
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + path, errno);
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes)
      return Error(Errc::kResourceExhausted, "the agent's answer is too large");
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace outpost::agent::daemon
