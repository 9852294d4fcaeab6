// What runs on one simulated MQTT connection, without the connection: the
// Fleet (fleet.hpp) feeds an Endpoint the connection's events, messages and
// the time, and publishes what it asks for. SimDevice is the device side of
// docs/protocol.md; FloorDevice is the benchmark floor (answer once, nothing
// else).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hub/sim/fleet_store.hpp"
#include "outpost.pb.h"

namespace outpost::hub::sim {

class DesiredVerifier;

struct Now {
  std::int64_t steady_ms = 0;
  std::int64_t unix_ms = 0;
};
Now ClockNow();

struct OutMessage {
  std::string topic;
  std::string payload;
  bool retained = false;
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual const std::string& client_id() const = 0;
  // Subscribed (QoS 1) after every connect, before OnConnected.
  virtual std::vector<std::string> Subscriptions() const = 0;
  virtual std::optional<OutMessage> Will() const { return std::nullopt; }
  // Connected with the subscriptions in place.
  virtual void OnConnected(Now now) = 0;
  virtual void OnDisconnected(Now now) = 0;
  virtual void OnMessage(std::string_view topic, std::string_view payload, Now now) = 0;
  // Called every few tens of milliseconds.
  virtual void OnTick(Now /*now*/) {}
  // What to publish now (QoS 1), in order.
  std::vector<OutMessage>& out() { return out_; }

 protected:
  std::vector<OutMessage> out_;
};

// The device side of the protocol, as outpost-agent runs it, minus the
// processes: a document that verifies and is newer than the held one is
// "applied" at once (DESIRED_APPLIED is queued, the report says the new
// observed generation); reports are coalesced to one per 250 ms; the outbox
// is sent in batches of <= 100 events, <= 4 in flight, from the first unacked
// seq after every connect and after 10 s without ack progress.
class SimDevice final : public Endpoint {
 public:
  SimDevice(std::string id, const DeviceCounters& counters, const DesiredVerifier* verifier,
            std::int64_t cert_not_after_ms);

  const std::string& client_id() const override { return id_; }
  std::vector<std::string> Subscriptions() const override;
  std::optional<OutMessage> Will() const override;
  void OnConnected(Now now) override;
  void OnDisconnected(Now now) override;
  void OnMessage(std::string_view topic, std::string_view payload, Now now) override;
  void OnTick(Now now) override;

  // Queues an event (as the runtime does when a workload exits, ...).
  void QueueEvent(outpost::v1::EventType type, std::string workload, std::string message, Now now);
  // A report now (or as soon as the 250 ms coalescing allows).
  void RequestReport(Now now);
  // Clean stop: presence offline (retained).
  void Shutdown(Now now);
  // When set, every lost connection queues an event while offline (as a
  // workload that restarts during an outage would), so that a reconnect has
  // something to deliver.
  void set_event_on_loss(bool on) { event_on_loss_ = on; }

  // The device's position in the fleet (for the scenarios' tables).
  std::size_t index = 0;

  // --- observation (read on the device's own thread) ----------------------
  bool connected() const { return connected_; }
  std::uint64_t held_generation() const { return counters_.held_generation; }
  std::uint64_t applied_generation() const { return counters_.applied_generation; }
  std::uint64_t last_seq() const { return counters_.next_seq - 1; }
  std::uint64_t acked_seq() const { return counters_.acked_seq; }
  bool outbox_empty() const { return outbox_.empty(); }
  // The seq of the DESIRED_APPLIED event of the newest applied generation.
  std::uint64_t applied_event_seq() const { return applied_event_seq_; }
  // Steady times (ms, 0: not yet) of the newest accepted document and of the
  // ack that covered its DESIRED_APPLIED event (the hub has stored the report
  // that went out before it: a device's messages are handled in order).
  std::int64_t desired_at_ms() const { return desired_at_ms_; }
  std::int64_t applied_acked_at_ms() const { return applied_acked_at_ms_; }
  // When the last connect's resync (report sent, outbox drained) completed.
  std::int64_t synced_at_ms() const { return synced_at_ms_; }
  std::int64_t connected_at_ms() const { return connected_at_ms_; }
  std::uint64_t rejected() const { return rejected_; }
  std::uint64_t connects() const { return connects_; }
  std::size_t last_desired_bytes() const { return last_desired_bytes_; }
  std::size_t last_report_bytes() const { return last_report_bytes_; }
  const DeviceCounters& counters() const { return counters_; }

 private:
  void OnDesired(std::string_view payload, Now now);
  void OnAck(std::string_view payload, Now now);
  void Reject(const std::string& why, std::uint64_t generation, Now now);
  void Append(outpost::v1::Event event, Now now);
  void SendReport(Now now, bool full);
  void Pump(Now now);
  void CheckSynced(Now now);

  std::string id_;
  const DesiredVerifier* verifier_;
  std::int64_t cert_not_after_ms_;
  std::string t_desired_, t_ack_, t_reported_, t_events_, t_presence_;
  DeviceCounters counters_;

  struct Row {
    std::uint64_t seq;
    std::string bytes;  // a serialized Event
  };
  std::deque<Row> outbox_;
  struct Batch {
    std::uint64_t last;
    std::int64_t sent_ms;
  };
  std::deque<Batch> in_flight_;
  std::uint64_t next_send_seq_ = 1;
  std::int64_t last_ack_ms_ = 0;

  bool connected_ = false;
  bool event_on_loss_ = false;
  bool report_dirty_ = false;
  bool resync_pending_ = false;
  std::int64_t last_report_ms_ = -1;
  std::vector<std::pair<std::string, std::string>> workloads_;  // name, spec_hash
  std::int64_t workloads_since_ms_ = 0;
  std::uint64_t stale_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t connects_ = 0;
  std::uint64_t applied_event_seq_ = 0;
  std::int64_t desired_at_ms_ = 0;
  std::int64_t applied_acked_at_ms_ = 0;
  std::int64_t synced_at_ms_ = 0;
  std::int64_t connected_at_ms_ = 0;
  std::size_t last_desired_bytes_ = 0;
  std::size_t last_report_bytes_ = 0;
};

// The floor of the rollout benchmark: subscribes to its device's desired
// topic and answers the first non-empty message with one message of
// `answer_bytes` on its reported topic. No parsing, no checks, no state.
class FloorDevice final : public Endpoint {
 public:
  FloorDevice(std::string id, std::string client_id, std::size_t answer_bytes);
  const std::string& client_id() const override { return client_id_; }
  std::vector<std::string> Subscriptions() const override;
  void OnConnected(Now now) override;
  void OnDisconnected(Now /*now*/) override { connected_ = false; }
  void OnMessage(std::string_view topic, std::string_view payload, Now now) override;

  bool connected() const { return connected_; }
  bool answered() const { return answered_at_ms_ != 0; }
  std::int64_t received_at_ms() const { return received_at_ms_; }

 private:
  std::string id_;
  std::string client_id_;
  std::size_t answer_bytes_;
  bool connected_ = false;
  std::int64_t received_at_ms_ = 0;
  std::int64_t answered_at_ms_ = 0;
};

}  // namespace outpost::hub::sim
