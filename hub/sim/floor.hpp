// The publisher side of the rollout floor: one client with the hub's
// identity fans a message out to every device's desired topic (retained,
// QoS 1, as the hub publishes documents) and counts the answers on
// outpost/v1/devices/+/reported. Nothing is signed, parsed or stored: what it
// measures is the broker, TLS and the simulated devices alone.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "hub/sim/device.hpp"

namespace outpost::hub::sim {

class FloorPublisher final : public Endpoint {
 public:
  FloorPublisher(std::string client_id, const std::vector<std::string>& device_ids);

  const std::string& client_id() const override { return client_id_; }
  std::vector<std::string> Subscriptions() const override;
  void OnConnected(Now /*now*/) override { connected_ = true; }
  void OnDisconnected(Now /*now*/) override { connected_ = false; }
  void OnMessage(std::string_view topic, std::string_view payload, Now now) override;

  // Queues one message of `bytes` for every device (published by the Fleet).
  void FanOut(std::size_t bytes);

  bool connected() const { return connected_; }
  std::size_t answers() const { return answers_; }
  // Steady ms of each device's answer (0: none yet), in device order.
  const std::vector<std::int64_t>& answered_at_ms() const { return answered_at_ms_; }

 private:
  std::string client_id_;
  std::vector<std::string> ids_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::int64_t> answered_at_ms_;
  std::size_t answers_ = 0;
  bool connected_ = false;
};

}  // namespace outpost::hub::sim
