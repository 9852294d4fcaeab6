// The hub's MQTT link: subscribes to every device's reported, events and
// presence topics on a persistent session at QoS 1, passes what arrives
// through the cheap checks (Classify) into a bounded, per-device fair queue,
// and drains that queue on the state thread (DeviceIngest) in small batches,
// so API requests interleave with device traffic.
//
// On every connect it resumes the publisher and, on the state thread, asks
// the registry what to (re)publish: every device's document when the broker
// lost our session (session_present=false: it may have lost its retained
// messages too), else only documents not yet acknowledged.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "hub/broker/fair_queue.hpp"
#include "hub/broker/ingest.hpp"
#include "hub/broker/publisher.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::broker {

class BrokerLink {
 public:
  using PostToState = std::function<void(std::function<void(registry::Registry&)>)>;

  struct Options {
    std::size_t per_device_queue = 32;
    std::size_t total_queue = 20000;
    std::size_t total_queue_bytes = 64u << 20;
    std::size_t drain_batch = 64;
  };

  BrokerLink(mqtt::Client* client, DesiredPublisher* publisher, DeviceIngest* ingest,
             IngestStats* stats, PostToState post, Options options);
  BrokerLink(mqtt::Client* client, DesiredPublisher* publisher, DeviceIngest* ingest,
             IngestStats* stats, PostToState post)
      : BrokerLink(client, publisher, ingest, stats, std::move(post), Options{}) {}

  // Installs the handlers and subscriptions, then starts the client.
  Status Start();
  void Stop();

  bool connected() const { return connected_.load(); }
  nlohmann::json HealthJson() const;

  // The MQTT thread's entry points (public for tests with a fake client).
  void OnMessage(const mqtt::Message& message);
  void OnConnection(const mqtt::Client::ConnectionEvent& event);

 private:
  void Drain(registry::Registry& registry);

  mqtt::Client* client_;
  DesiredPublisher* publisher_;
  DeviceIngest* ingest_;
  IngestStats* stats_;
  PostToState post_;
  Options options_;

  mutable std::mutex mu_;
  FairQueue<DeviceMessage> queue_;
  bool drain_scheduled_ = false;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> connects_{0};
  std::string last_cause_;
};

}  // namespace outpost::hub::broker
