#include "hub/sim/floor.hpp"

#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::sim {

FloorPublisher::FloorPublisher(std::string client_id, const std::vector<std::string>& device_ids)
    : client_id_(std::move(client_id)), ids_(device_ids), answered_at_ms_(device_ids.size(), 0) {
  for (std::size_t i = 0; i < ids_.size(); ++i)
    index_.emplace(ids_[i], i);
}

std::vector<std::string> FloorPublisher::Subscriptions() const {
  return {"outpost/v1/devices/+/reported"};
}

void FloorPublisher::OnMessage(std::string_view topic, std::string_view /*payload*/, Now now) {
  std::string id;
  std::string leaf;
  if (!mqtt::topics::Parse(std::string(topic), &id, &leaf) || leaf != "reported") return;
  auto it = index_.find(id);
  if (it == index_.end() || answered_at_ms_[it->second] != 0) return;
  answered_at_ms_[it->second] = now.steady_ms;
  ++answers_;
}

void FloorPublisher::FanOut(std::size_t bytes) {
  const std::string payload(bytes, 'd');
  for (const auto& id : ids_)
    out_.push_back({mqtt::topics::Desired(id), payload, true});
}

}  // namespace outpost::hub::sim
