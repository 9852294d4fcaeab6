// `outpost-hub serve`: wires the parts together and owns the threads.
//
// Threads (docs/hub.md, "Threads"):
//   http    the HTTPS server's io_context: TLS, parsing, admin-token checks,
//           GET /v1/ca; everything else is posted to the state thread.
//   state   owns the Registry (hub.db): API requests, device messages drained
//           from the broker link's fair queue, StoreSigned/MarkPublished.
//   publish signs desired documents and hands them to the MQTT client.
//   mqtt    Paho's own threads; its callbacks only queue work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "shared/core/result.hpp"

namespace outpost::hub::server {

struct ServeOptions {
  std::string data_dir;     // "" -> the config file's directory, else the default
  std::string config_path;  // "" -> <data_dir>/hub.yaml
};

class Hub {
 public:
  static Result<std::unique_ptr<Hub>> Start(const ServeOptions& options);
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  std::uint16_t api_port() const;
  // Stops everything in an order that leaves no thread touching a part that
  // is gone. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit Hub(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::hub::server
