// Where the hub's state thread hands desired documents to be signed and
// published (and, optionally, acks to be sent). Calls never block on the
// network or on signing.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "hub/registry/registry.hpp"

namespace outpost::hub::broker {

class DesiredSink {
 public:
  virtual ~DesiredSink() = default;
  // New documents from a registry mutation.
  virtual void Publish(const std::vector<registry::DesiredChange>& changes) = 0;
  // Stored documents again (the broker may have lost them, a device is behind).
  virtual void Republish(const std::vector<registry::DesiredRecord>& records) = 0;
  // Removes the device's retained messages (desired, presence) from the
  // broker: the device was revoked or deleted.
  virtual void Clear(const std::string& device_id) = 0;
  // Acks for devices (topic, payload), QoS 1, not retained. A sink that
  // sends them takes them and returns true; the default sends nothing and
  // returns false (the caller then publishes them itself).
  virtual bool SendAcks(std::vector<std::pair<std::string, std::string>>& acks) {
    (void)acks;
    return false;
  }
};

}  // namespace outpost::hub::broker
