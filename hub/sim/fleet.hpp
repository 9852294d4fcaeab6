// Many MQTT-over-TLS connections in one process, driven by a few epoll
// threads (no thread per client), each connection running one Endpoint
// (device.hpp). The MQTT 3.1.1 client is our own (fleet.cpp): one file
// descriptor per connection.
//
// Every member connects with its own client id, identity and TLS session,
// subscribes to its Endpoint's topics (QoS 1) after every connect, and then
// tells the Endpoint; a lost connection is retried after the agent's
// reconnect backoff (0.5 s doubling to 30 s, jitter 0.5, like shared/mqtt).
// The Endpoint's callbacks run on its member's thread; Fleet::ForEach runs
// code there too.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hub/sim/device.hpp"
#include "hub/sim/tls.hpp"
#include "shared/core/result.hpp"

namespace outpost::hub::sim {

struct FleetOptions {
  std::string host = "127.0.0.1";
  int port = 8883;
  int threads = 4;
  int keepalive_seconds = 30;
  bool clean_session = false;
  std::chrono::milliseconds min_retry{500};
  std::chrono::milliseconds max_retry{30000};
  std::chrono::milliseconds connect_timeout{10000};
  // Connects in progress per thread (0: no limit). Pacing for the first
  // connect of a large fleet; reconnects after a loss are never paced.
  int max_connecting_per_thread = 64;
};

struct FleetStats {
  std::size_t members = 0;
  std::size_t up = 0;  // connected with subscriptions in place
  std::uint64_t connects = 0;
  std::uint64_t losses = 0;
  std::uint64_t failures = 0;  // attempts that never got to CONNACK
};

struct TcpTraffic {
  std::size_t sockets = 0;
  std::uint64_t bytes_sent = 0;  // acknowledged by the peer
  std::uint64_t bytes_received = 0;
  std::uint64_t segments_out = 0;
  std::uint64_t segments_in = 0;
};

class Fleet {
 public:
  Fleet(FleetOptions options, const TlsClientContext* tls);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Before Start. Neither pointer is owned; both must outlive the Fleet.
  void Add(Endpoint* endpoint, const TlsIdentity* identity);
  // Starts the threads; they connect every member.
  Status Start();
  // Runs `fn` for every member on the member's thread and publishes what the
  // Endpoint queued; returns when every member was visited.
  void ForEach(const std::function<void(Endpoint&, Now)>& fn);
  // Every member disconnects cleanly (after `before` ran for it, e.g. a
  // presence offline) and stops reconnecting. Returns when all are closed or
  // after `timeout`.
  void DisconnectAll(const std::function<void(Endpoint&, Now)>& before,
                     std::chrono::milliseconds timeout);
  // Joins the threads (members still connected are dropped).
  void Stop();

  FleetStats Stats() const;
  // Summed TCP_INFO counters of the members' sockets (the device side).
  TcpTraffic Traffic();
  // Lifts the connect pacing (0) or sets it.
  void SetMaxConnectingPerThread(int n) { max_connecting_.store(n); }

  struct Worker;
  struct Member;

 private:
  FleetOptions options_;
  const TlsClientContext* tls_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::size_t next_worker_ = 0;
  std::size_t members_ = 0;
  std::atomic<int> max_connecting_;
  bool started_ = false;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  bool host_is_address_ = false;
};

}  // namespace outpost::hub::sim
