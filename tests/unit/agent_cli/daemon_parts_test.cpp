// Pieces of the daemon that talk to the OS: sd_notify datagrams (path and
// abstract sockets) and the local status socket.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include <cstring>
#include <thread>

#include "agent/daemon/sd_notify.hpp"
#include "agent/daemon/status_server.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::agent::daemon {
namespace {

// A datagram socket standing in for systemd's notify socket.
class NotifyReceiver {
 public:
  explicit NotifyReceiver(const std::string& name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (name[0] == '@') {
      addr.sun_path[0] = '\0';
    } else {
      len = static_cast<socklen_t>(len + 1);
    }
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0) << std::strerror(errno);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifyReceiver() { ::close(fd_); }
  std::string Receive() {
    char buf[512];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  int fd_ = -1;
};

TEST(SdNotify, SendsToAPathSocket) {
  outpost::testing::TempDir dir;
  std::string path = dir / "notify";
  NotifyReceiver rx(path);
  ASSERT_TRUE(NotifySocket(path, "READY=1").ok());
  EXPECT_EQ(rx.Receive(), "READY=1");
  ASSERT_TRUE(NotifySocket(path, "WATCHDOG=1").ok());
  EXPECT_EQ(rx.Receive(), "WATCHDOG=1");
}

TEST(SdNotify, SendsToAnAbstractSocket) {
  std::string name = "@outpost-test-" + std::to_string(::getpid());
  NotifyReceiver rx(name);
  ASSERT_TRUE(NotifySocket(name, "READY=1").ok());
  EXPECT_EQ(rx.Receive(), "READY=1");
}

TEST(SdNotify, NoSocketIsANoOpAndBadOnesAreErrors) {
  EXPECT_TRUE(NotifySocket("", "READY=1").ok());
  EXPECT_FALSE(NotifySocket("relative/path", "READY=1").ok());
  outpost::testing::TempDir dir;
  EXPECT_FALSE(NotifySocket(dir / "nobody-listens", "READY=1").ok());
}

TEST(SdNotify, WatchdogIntervalIsHalfOfWatchdogUsec) {
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "20000000", 1);
  auto w = WatchdogInterval();
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->count(), 10000000);
  ::setenv("WATCHDOG_PID", "1", 1);  // for another process
  EXPECT_FALSE(WatchdogInterval().has_value());
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_TRUE(WatchdogInterval().has_value());
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  EXPECT_FALSE(WatchdogInterval().has_value());
}

TEST(StatusSocket, ServesTheDocumentAndRefusesASecondServer) {
  outpost::testing::TempDir dir;
  std::string path = dir / "agent.sock";
  boost::asio::io_context io;
  int served = 0;
  StatusServer server(io, path, [&] {
    ++served;
    return std::string(R"({"daemon":"running"})");
  });
  ASSERT_TRUE(server.Start().ok());
  boost::asio::io_context other_io;
  StatusServer second(other_io, path, [] { return std::string("{}"); });
  std::thread loop([&] { io.run_for(std::chrono::seconds(10)); });
  EXPECT_FALSE(second.Start().ok());  // the first one answers
  for (int i = 0; i < 3; ++i) {
    auto answer = QueryStatus(path);
    ASSERT_TRUE(answer.ok()) << answer.error().ToString();
    EXPECT_EQ(*answer, "{\"daemon\":\"running\"}\n");
  }
  EXPECT_TRUE(AgentListening(path));
  boost::asio::post(io, [&] {
    server.Stop();
    io.stop();
  });
  loop.join();
  EXPECT_GE(served, 3);  // plus the probes of AgentListening
  EXPECT_FALSE(AgentListening(path));
  EXPECT_FALSE(QueryStatus(path).ok());
}

TEST(StatusSocket, AStaleSocketFileIsReplaced) {
  outpost::testing::TempDir dir;
  std::string path = dir / "agent.sock";
  {
    // A crashed daemon: the socket file stays, nobody listens on it.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  ASSERT_EQ(::access(path.c_str(), F_OK), 0);
  EXPECT_FALSE(AgentListening(path));
  boost::asio::io_context io;
  StatusServer b(io, path, [] { return std::string("{}"); });
  EXPECT_TRUE(b.Start().ok());
  EXPECT_TRUE(AgentListening(path));
}

}  // namespace
}  // namespace outpost::agent::daemon
