// The systemd notification protocol (sd_notify(3)), implemented here so the
// agent does not link libsystemd: one datagram "KEY=VALUE\n..." to the
// AF_UNIX socket named by $NOTIFY_SOCKET (a path, or '@' for the abstract
// namespace). Without $NOTIFY_SOCKET every call is a successful no-op.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "shared/core/result.hpp"

namespace outpost::agent::daemon {

// Sends `state` (e.g. "READY=1", "WATCHDOG=1", "STOPPING=1") to `socket_path`
// (as $NOTIFY_SOCKET would name it). Empty path: no-op.
Status NotifySocket(const std::string& socket_path, std::string_view state);

// NotifySocket($NOTIFY_SOCKET, state).
Status Notify(std::string_view state);

// How often to send WATCHDOG=1: half of $WATCHDOG_USEC, when it is set and
// $WATCHDOG_PID is unset or this process; nullopt otherwise.
std::optional<std::chrono::microseconds> WatchdogInterval();

}  // namespace outpost::agent::daemon
