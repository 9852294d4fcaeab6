// The daemon's local status socket, <state_dir>/agent.sock (unix stream,
// mode 0600): every connection gets one JSON status document followed by a
// newline, then the daemon closes it. Nothing is read from the client, at most
// kMaxClients are served at once, and each has kClientDeadline to read.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::agent::daemon {

class StatusServer {
 public:
  using Producer = std::function<std::string()>;
  static constexpr int kMaxClients = 8;
  static constexpr std::chrono::seconds kClientDeadline{2};

  StatusServer(boost::asio::io_context& io, std::string path, Producer produce);
  ~StatusServer();

  // Binds (replacing a stale socket file nobody answers on) and accepts.
  // kAlreadyExists when another process answers on the path.
  Status Start();
  void Stop();

 private:
  void Accept();

  boost::asio::io_context& io_;
  std::string path_;
  Producer produce_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::shared_ptr<int> active_ = std::make_shared<int>(0);
  bool started_ = false;
};

// Whether something accepts connections on `path` (another daemon).
bool AgentListening(const std::string& path);

// The client side: connects to `path`, reads the whole answer (at most
// `max_bytes`), within `timeout`. kUnavailable when nobody listens.
Result<std::string> QueryStatus(const std::string& path,
                                std::chrono::milliseconds timeout = std::chrono::seconds(3),
                                std::size_t max_bytes = 4u << 20);

}  // namespace outpost::agent::daemon
