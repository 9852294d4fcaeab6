#include "agent/daemon/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace outpost::agent::daemon {

Status NotifySocket(const std::string& socket_path, std::string_view state) {
  if (socket_path.empty()) return OkStatus();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path) ||
      (socket_path[0] != '/' && socket_path[0] != '@'))
    return Error(Errc::kInvalidArgument, "NOTIFY_SOCKET \"" + socket_path + "\" is not usable");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size());
  if (socket_path[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no terminating NUL counted
  } else {
    len = static_cast<socklen_t>(len + 1);
  }
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError("sd_notify socket", errno);
  ssize_t n;
  do {
    n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                 len);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) return ErrnoError("sd_notify to " + socket_path, err);
  return OkStatus();
}

Status Notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  return NotifySocket(path == nullptr ? std::string() : std::string(path), state);
}

std::optional<std::chrono::microseconds> WatchdogInterval() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr) return std::nullopt;
  std::uint64_t value = 0;
  std::string_view text(usec);
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || p != text.data() + text.size() || value == 0) return std::nullopt;
  if (const char* pid = std::getenv("WATCHDOG_PID")) {
    long long want = 0;
    std::string_view pid_text(pid);
    auto [pp, pec] = std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), want);
    if (pec != std::errc() || want != static_cast<long long>(::getpid())) return std::nullopt;
  }
  return std::chrono::microseconds(static_cast<std::int64_t>(value / 2));
}

}  // namespace outpost::agent::daemon
