// What the hub does with messages from devices (docs/protocol.md): reports,
// event batches and presence. Checks happen in two steps:
//   Classify (on the MQTT thread, cheap): the topic names a valid device id
//     and a device-to-hub leaf, and the payload is within that leaf's limit;
//   DeviceIngest::Handle (on the state thread, owns the Registry): parse,
//     topic id == payload device_id, the device exists and is not revoked,
//     then store, acknowledge events, and republish desired documents to
//     devices that are behind (at most once per device per 5 s) or move a
//     device's generation past one it reports ahead of the hub.
// Anything that fails a check is dropped and counted in IngestStats; it
// never changes state.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hub/broker/desired_sink.hpp"
#include "hub/registry/registry.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::broker {

inline constexpr std::size_t kMaxReportBytes = 64u << 10;
inline constexpr std::size_t kMaxEventBatchBytes = 256u << 10;
inline constexpr int kMaxEventsPerBatch = 500;
inline constexpr std::size_t kMaxPresenceBytes = 1u << 10;
inline constexpr std::int64_t kRepublishIntervalMs = 5000;

enum class Leaf { kReported, kEvents, kPresence };

struct DeviceMessage {
  std::string device_id;
  Leaf leaf = Leaf::kReported;
  std::string payload;
};

enum class Drop {
  kBadTopic,       // not outpost/v1/devices/{valid id}/{reported|events|presence}
  kTooLarge,       // over the leaf's size limit
  kUnparseable,    // not the leaf's protobuf message
  kIdMismatch,     // payload device_id differs from the topic's id
  kTooManyEvents,  // a batch of more than 500 events
  kUnknownDevice,  // no such device
  kRevoked,        // the device is revoked
  kQueueFull,      // the device's (or the hub's) ingest queue was full
  kStoreError,     // the registry failed (logged)
  kCount
};
const char* DropName(Drop reason);

// Counters shared by the MQTT thread and the state thread.
struct IngestStats {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> processed{0};
  std::atomic<std::uint64_t> republished{0};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Drop::kCount)> dropped{};

  void Count(Drop reason) { dropped[static_cast<std::size_t>(reason)].fetch_add(1); }
  std::uint64_t Dropped(Drop reason) const {
    return dropped[static_cast<std::size_t>(reason)].load();
  }
  nlohmann::json ToJson() const;
};

// The cheap checks; nullopt (with `why`) when the message is to be dropped.
std::optional<DeviceMessage> Classify(const mqtt::Message& message, Drop* why);

class DeviceIngest {
 public:
  DeviceIngest(registry::Registry* registry, DesiredSink* desired, mqtt::Client* client,
               IngestStats* stats, std::function<std::int64_t()> now_ms)
      : registry_(registry),
        desired_(desired),
        client_(client),
        stats_(stats),
        now_ms_(std::move(now_ms)) {}

  // Runs on the state thread. Handles the messages in one registry Batch
  // (one commit), then sends what they call for (acks, documents): only
  // after the commit, so nothing is acknowledged that is not durable.
  void HandleAll(const std::vector<DeviceMessage>& messages);
  void Handle(const DeviceMessage& message) { HandleAll({message}); }

 private:
  void Process(const DeviceMessage& message);
  void Flush();
  void HandleReport(const DeviceMessage& message);
  void HandleEvents(const DeviceMessage& message);
  void HandlePresence(const DeviceMessage& message);
  // Counts a registry error as unknown/revoked/store error.
  void CountError(const std::string& device_id, const Error& error);
  void MaybeRepublish(const std::string& device_id, std::int64_t now);

  registry::Registry* registry_;
  DesiredSink* desired_;
  mqtt::Client* client_;
  IngestStats* stats_;
  std::function<std::int64_t()> now_ms_;
  // Last republish per device (the 5 s throttle); pruned as it grows.
  std::unordered_map<std::string, std::int64_t> last_republish_;
  // What the current batch calls for, sent after its commit.
  std::vector<std::pair<std::string, std::string>> acks_;  // topic, payload
  std::vector<registry::DesiredChange> publish_;
  std::vector<registry::DesiredRecord> republish_;
};

}  // namespace outpost::hub::broker
