// outpost::agent::sync::Engine — the agent's side of docs/protocol.md as a
// pure state machine: no broker, no clock, no processes.
//
// The daemon feeds it inputs (messages from the broker, connection changes,
// the time, workload statuses, runtime events, device facts) and carries out
// what it asks for (messages to publish, a document to apply, when to call
// OnTick next). Persistence goes through the SyncStore interface (agent.db in
// production, memory in tests), so every decision is unit-testable.
//
//   Engine engine(config, store);
//   engine.Start(now);                          // -> TakeApply(): the cached document
//   engine.OnConnected(session_present, nonce, now);
//   engine.OnMessage(topic, payload, now);      // desired / ack
//   engine.OnApplied(generation, now);          // after Supervisor::Apply
//   engine.OnWorkloadStatuses(statuses, now);   // when the supervisor's changed
//   engine.QueueEvent(event, now);              // runtime events, disk low, ...
//   engine.OnTick(now);                         // at NextWakeup()
//   for (auto& p : engine.TakePublishes()) client.Publish(p.topic, p.payload, ...);
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "agent/sync/sync_store.hpp"
#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace outpost::agent::sync {

// Receiver-side size limits (docs/protocol.md).
inline constexpr std::size_t kMaxDesiredBytes = 1u << 20;
inline constexpr std::size_t kMaxReportedBytes = 64u << 10;
inline constexpr std::size_t kMaxAckBytes = 1024;
inline constexpr std::size_t kMaxPresenceBytes = 1024;
inline constexpr std::size_t kMaxEventMessageBytes = 1024;
// A valid document that could not be stored (a full disk) is tried again
// after this long, until it is stored or a newer one replaces it.
inline constexpr std::int64_t kStoreRetryMs = 5000;

// The time, injected: steady for timers, Unix for timestamps and certificate checks.
struct Now {
  std::int64_t steady_ms = 0;
  std::int64_t unix_ms = 0;
};

struct EngineConfig {
  std::string device_id;
  std::string ca_pem;  // the hub CA stored at enrollment; signer certificates chain to it
  std::string agent_version = OUTPOST_VERSION;
  std::int64_t cert_not_after_ms = 0;              // the device certificate's expiry, for reports
  std::chrono::milliseconds report_interval{250};  // at most one report per interval
  std::chrono::milliseconds ack_timeout{10000};    // resend from the first unacked after this
  std::size_t batch_max_events = 100;
  std::size_t batch_max_bytes = 64u << 10;
  std::size_t max_in_flight = 4;
};

struct Publish {
  std::string topic;
  std::string payload;
  int qos = 1;
  bool retained = false;
};

// A document to reconcile to (Supervisor::Apply), then report back with
// OnApplied(generation).
struct ApplyRequest {
  std::uint64_t generation = 0;
  std::vector<outpost::v1::WorkloadSpec> workloads;
};

enum class DesiredOutcome { kAccepted, kDuplicate, kStale, kRejected };

class Engine {
 public:
  Engine(EngineConfig config, SyncStore& store);

  // Loads the held document and asks to apply it at once (cold start: no
  // network needed). A document stored but not yet applied before a restart
  // is reconciled now; OnApplied then records it (at most once).
  Status Start(Now now);

  // --- connection -----------------------------------------------------------
  // After every (re)connect with subscriptions in place: presence online, a
  // full report (with facts), then the outbox from the first unacked seq.
  void OnConnected(bool session_present, std::uint64_t session_nonce, Now now);
  void OnDisconnected(Now now);
  bool connected() const { return connected_; }

  // --- inbound --------------------------------------------------------------
  // Dispatches a message of our own desired or ack topic; anything else is
  // dropped and counted.
  void OnMessage(const std::string& topic, const std::string& payload, Now now);
  // The desired-document rules: size, signature chain to the CA with CN
  // outpost-signer, signature, device id, spec validation, then generations.
  DesiredOutcome OnDesired(const std::string& payload, Now now);
  void OnAck(const std::string& payload, Now now);

  // --- from the runtime -----------------------------------------------------
  // Reconciliation of `generation` is done: record it (and DESIRED_APPLIED
  // once per generation), report.
  void OnApplied(std::uint64_t generation, Now now);
  // The supervisor's statuses changed: report (coalesced).
  void OnWorkloadStatuses(std::vector<outpost::v1::WorkloadStatus> statuses, Now now);
  // Device facts (sent when they changed, and after every connect).
  void OnFacts(const outpost::v1::DeviceFacts& facts, Now now);
  // Queues an event into the outbox (time and seq filled in, message bounded)
  // and sends it when the link allows.
  void QueueEvent(outpost::v1::Event event, Now now);
  void SetCertNotAfter(std::int64_t unix_ms) { config_.cert_not_after_ms = unix_ms; }

  // --- time -----------------------------------------------------------------
  void OnTick(Now now);
  // When OnTick wants to run next (steady ms); nullopt: nothing pending.
  std::optional<std::int64_t> NextWakeup() const;

  // --- outputs --------------------------------------------------------------
  std::vector<Publish> TakePublishes();
  std::optional<ApplyRequest> TakeApply();

  // The retained presence payloads (the offline one is also the last will).
  static std::string PresencePayload(bool online, std::int64_t since_ms,
                                     const std::string& agent_version, std::uint64_t session);
  // Clean shutdown: presence offline (retained).
  void Shutdown(Now now);

  // --- introspection (status, tests) ----------------------------------------
  std::uint64_t hub_generation() const { return hub_generation_; }
  std::uint64_t dropped_messages() const { return dropped_messages_; }
  std::size_t in_flight_batches() const { return in_flight_.size(); }
  std::uint64_t next_send_seq() const { return next_send_seq_; }
  bool report_pending() const { return report_dirty_; }
  std::string last_rejection() const { return last_rejection_; }

 private:
  struct Batch {
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    std::int64_t sent_steady_ms = 0;
  };

  void Reject(const std::string& why, std::uint64_t generation, Now now);
  void MarkReportDirty(Now now);
  void SendReport(Now now, bool full);
  void PumpOutbox(Now now);
  void Emit(std::string topic, std::string payload, bool retained);

  EngineConfig config_;
  SyncStore& store_;
  std::string topic_desired_, topic_ack_, topic_reported_, topic_events_, topic_presence_;

  bool connected_ = false;
  std::uint64_t session_nonce_ = 0;

  // Reports.
  std::vector<outpost::v1::WorkloadStatus> statuses_;
  std::optional<outpost::v1::DeviceFacts> facts_;
  bool facts_dirty_ = false;
  bool report_dirty_ = false;
  std::optional<std::int64_t> last_report_steady_ms_;

  // Outbox.
  std::deque<Batch> in_flight_;
  std::uint64_t next_send_seq_ = 1;
  std::int64_t last_ack_steady_ms_ = 0;

  std::uint64_t hub_generation_ = 0;
  std::uint64_t dropped_messages_ = 0;
  // A valid document whose storing failed, and when to try again.
  std::optional<std::string> retry_desired_;
  std::int64_t retry_desired_at_ms_ = 0;
  std::string last_rejection_;

  std::vector<Publish> publishes_;
  std::optional<ApplyRequest> apply_;
};

}  // namespace outpost::agent::sync
