#include "hub/sim/device.hpp"

#include <algorithm>
#include <chrono>

#include "agent/sync/validate.hpp"
#include "hub/sim/verifier.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::sim {

namespace {

// Receiver-side limits (docs/protocol.md).
constexpr std::size_t kMaxDesiredBytes = 1u << 20;
constexpr std::size_t kMaxAckBytes = 1024;
constexpr std::int64_t kReportIntervalMs = 250;
constexpr std::int64_t kAckTimeoutMs = 10000;
constexpr std::size_t kBatchMaxEvents = 100;
constexpr std::size_t kBatchMaxBytes = (64u << 10) - 1024;
constexpr std::size_t kMaxInFlight = 4;
constexpr std::size_t kMaxEventMessageBytes = 1024;

}  // namespace

Now ClockNow() {
  using namespace std::chrono;
  return Now{duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count(),
             duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count()};
}

// ---------------------------------------------------------------------------
// SimDevice

SimDevice::SimDevice(std::string id, const DeviceCounters& counters,
                     const DesiredVerifier* verifier, std::int64_t cert_not_after_ms)
    : id_(std::move(id)),
      verifier_(verifier),
      cert_not_after_ms_(cert_not_after_ms),
      t_desired_(mqtt::topics::Desired(id_)),
      t_ack_(mqtt::topics::Ack(id_)),
      t_reported_(mqtt::topics::Reported(id_)),
      t_events_(mqtt::topics::Events(id_)),
      t_presence_(mqtt::topics::Presence(id_)),
      counters_(counters) {
  // Events that were queued but not acknowledged when the previous run ended
  // are not kept (the simulator's outbox lives in memory): floor_seq tells the
  // hub that everything below next_seq is done with.
  counters_.acked_seq = counters_.next_seq - 1;
  next_send_seq_ = counters_.next_seq;
}

std::vector<std::string> SimDevice::Subscriptions() const {
  return {t_desired_, t_ack_};
}

std::optional<OutMessage> SimDevice::Will() const {
  outpost::v1::Presence p;
  p.set_online(false);
  p.set_agent_version(OUTPOST_VERSION);
  return OutMessage{t_presence_, p.SerializeAsString(), true};
}

void SimDevice::OnConnected(Now now) {
  connected_ = true;
  ++connects_;
  connected_at_ms_ = now.steady_ms;
  resync_pending_ = true;
  in_flight_.clear();
  next_send_seq_ = outbox_.empty() ? counters_.next_seq : outbox_.front().seq;
  last_ack_ms_ = now.steady_ms;
  outpost::v1::Presence p;
  p.set_online(true);
  p.set_since_ms(now.unix_ms);
  p.set_agent_version(OUTPOST_VERSION);
  p.set_session(static_cast<std::uint64_t>(now.steady_ms) * 2654435761u ^ connects_);
  out_.push_back({t_presence_, p.SerializeAsString(), true});
  SendReport(now, /*full=*/true);
  Pump(now);
  CheckSynced(now);
}

void SimDevice::OnDisconnected(Now now) {
  connected_ = false;
  in_flight_.clear();
  if (event_on_loss_) {
    QueueEvent(outpost::v1::EVENT_TYPE_WORKLOAD_RESTARTED, "sim.workload",
               "restarted while the broker was away", now);
  }
}

void SimDevice::Shutdown(Now now) {
  if (!connected_) return;
  outpost::v1::Presence p;
  p.set_online(false);
  p.set_since_ms(now.unix_ms);
  p.set_agent_version(OUTPOST_VERSION);
  out_.push_back({t_presence_, p.SerializeAsString(), true});
}

void SimDevice::OnMessage(std::string_view topic, std::string_view payload, Now now) {
  if (topic == t_desired_) {
    OnDesired(payload, now);
  } else if (topic == t_ack_) {
    OnAck(payload, now);
  }
}

void SimDevice::Reject(const std::string& why, std::uint64_t generation, Now now) {
  ++rejected_;
  outpost::v1::Event e;
  e.set_type(outpost::v1::EVENT_TYPE_DESIRED_REJECTED);
  e.set_generation(generation);
  e.set_message(why.substr(0, kMaxEventMessageBytes));
  Append(std::move(e), now);
}

void SimDevice::OnDesired(std::string_view payload, Now now) {
  if (payload.empty()) return;  // a cleared retained message
  if (payload.size() > kMaxDesiredBytes) return Reject("document over the limit", 0, now);
  outpost::v1::SignedDesiredState signed_state;
  if (!signed_state.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Reject("document does not parse as SignedDesiredState", 0, now);
  }
  if (Status s = verifier_->Verify(signed_state.signer_certificate(), signed_state.document(),
                                   signed_state.signature(), now.unix_ms / 1000);
      !s.ok()) {
    return Reject(s.error().message(), 0, now);
  }
  outpost::v1::DesiredState document;
  if (!document.ParseFromString(signed_state.document())) {
    return Reject("signed document does not parse as DesiredState", 0, now);
  }
  const std::uint64_t generation = document.generation();
  if (document.device_id() != id_) return Reject("document is for another device", 0, now);
  if (generation == 0) return Reject("document has generation 0", 0, now);
  if (Status s = agent::sync::ValidateAndNormalize(document); !s.ok()) {
    return Reject(s.error().message(), generation, now);
  }
  if (generation <= counters_.held_generation) {
    ++stale_;
    if (generation < counters_.held_generation) RequestReport(now);
    return;
  }
  last_desired_bytes_ = payload.size();
  counters_.held_generation = generation;
  desired_at_ms_ = now.steady_ms;
  applied_acked_at_ms_ = 0;
  workloads_.clear();
  for (const auto& w : document.workloads())
    workloads_.emplace_back(w.name(), w.spec_hash());
  workloads_since_ms_ = now.unix_ms;
  // "Reconciled": a simulated device has no processes to start.
  counters_.applied_generation = generation;
  outpost::v1::Event e;
  e.set_type(outpost::v1::EVENT_TYPE_DESIRED_APPLIED);
  e.set_generation(generation);
  e.set_message("applied generation " + std::to_string(generation));
  applied_event_seq_ = counters_.next_seq;
  // The report goes out at once and before the event, so that the ack of
  // the event means the hub holds the report (a device's messages are handled
  // in order). The agent may hold such a report back up to 250 ms.
  if (connected_) {
    SendReport(now, /*full=*/false);
  } else {
    report_dirty_ = true;
  }
  Append(std::move(e), now);
}

void SimDevice::OnAck(std::string_view payload, Now now) {
  if (payload.size() > kMaxAckBytes) return;
  outpost::v1::Ack ack;
  if (!ack.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
  std::uint64_t acked = std::min<std::uint64_t>(ack.acked_seq(), counters_.next_seq - 1);
  if (acked <= counters_.acked_seq) return;
  counters_.acked_seq = acked;
  last_ack_ms_ = now.steady_ms;
  while (!outbox_.empty() && outbox_.front().seq <= acked)
    outbox_.pop_front();
  while (!in_flight_.empty() && in_flight_.front().last <= acked)
    in_flight_.pop_front();
  if (next_send_seq_ <= acked) next_send_seq_ = acked + 1;
  if (applied_event_seq_ != 0 && acked >= applied_event_seq_ && applied_acked_at_ms_ == 0) {
    applied_acked_at_ms_ = now.steady_ms;
  }
  Pump(now);
  CheckSynced(now);
}

void SimDevice::QueueEvent(outpost::v1::EventType type, std::string workload, std::string message,
                           Now now) {
  outpost::v1::Event e;
  e.set_type(type);
  e.set_workload(std::move(workload));
  e.set_message(std::move(message));
  Append(std::move(e), now);
}

void SimDevice::Append(outpost::v1::Event event, Now now) {
  event.set_seq(counters_.next_seq++);
  if (event.time_ms() == 0) event.set_time_ms(now.unix_ms);
  outbox_.push_back({event.seq(), event.SerializeAsString()});
  Pump(now);
}

void SimDevice::RequestReport(Now now) {
  report_dirty_ = true;
  if (connected_ && (last_report_ms_ < 0 || now.steady_ms - last_report_ms_ >= kReportIntervalMs)) {
    SendReport(now, /*full=*/false);
  }
}

void SimDevice::SendReport(Now now, bool full) {
  outpost::v1::ReportedState r;
  r.set_device_id(id_);
  r.set_observed_generation(counters_.applied_generation);
  r.set_desired_generation(counters_.held_generation);
  std::int32_t pid = 1000;
  for (const auto& [name, hash] : workloads_) {
    auto* w = r.add_workloads();
    w->set_name(name);
    w->set_state(outpost::v1::WORKLOAD_STATE_RUNNING);
    w->set_pid(++pid);
    w->set_since_ms(workloads_since_ms_);
    w->set_spec_hash(hash);
    w->set_resource_mode(outpost::v1::RESOURCE_MODE_UNSPECIFIED);
  }
  r.set_reported_at_ms(now.unix_ms);
  r.set_report_seq(++counters_.report_seq);
  r.set_outbox_depth(outbox_.size());
  r.set_stale_documents(stale_);
  r.set_agent_version(OUTPOST_VERSION);
  r.set_cert_not_after_ms(cert_not_after_ms_);
  if (full) {
    auto* f = r.mutable_facts();
    f->set_hostname(id_);
    f->set_arch("amd64");
    f->set_os("Debian GNU/Linux 12 (bookworm)");
    f->set_agent_version(OUTPOST_VERSION);
    f->set_kernel("6.1.0-sim");
  }
  std::string bytes = r.SerializeAsString();
  last_report_bytes_ = bytes.size();
  out_.push_back({t_reported_, std::move(bytes), false});
  report_dirty_ = false;
  last_report_ms_ = now.steady_ms;
}

void SimDevice::Pump(Now now) {
  if (!connected_ || outbox_.empty()) return;
  if (next_send_seq_ < outbox_.front().seq) next_send_seq_ = outbox_.front().seq;
  while (in_flight_.size() < kMaxInFlight && next_send_seq_ < counters_.next_seq) {
    // Rows are contiguous: the row of seq s is at s - front.seq.
    std::size_t i = static_cast<std::size_t>(next_send_seq_ - outbox_.front().seq);
    outpost::v1::EventBatch batch;
    batch.set_device_id(id_);
    batch.set_floor_seq(outbox_.front().seq);
    std::size_t bytes = 0;
    std::uint64_t last = 0;
    for (; i < outbox_.size() && static_cast<std::size_t>(batch.events_size()) < kBatchMaxEvents;
         ++i) {
      const Row& row = outbox_[i];
      if (batch.events_size() > 0 && bytes + row.bytes.size() > kBatchMaxBytes) break;
      batch.add_events()->ParseFromString(row.bytes);
      bytes += row.bytes.size();
      last = row.seq;
    }
    if (in_flight_.empty()) last_ack_ms_ = std::max(last_ack_ms_, now.steady_ms);
    out_.push_back({t_events_, batch.SerializeAsString(), false});
    in_flight_.push_back({last, now.steady_ms});
    next_send_seq_ = last + 1;
  }
}

void SimDevice::CheckSynced(Now now) {
  if (resync_pending_ && connected_ && outbox_.empty()) {
    resync_pending_ = false;
    synced_at_ms_ = now.steady_ms;
  }
}

void SimDevice::OnTick(Now now) {
  if (!connected_) return;
  if (report_dirty_ && now.steady_ms - last_report_ms_ >= kReportIntervalMs) {
    SendReport(now, /*full=*/false);
  }
  if (!in_flight_.empty() && now.steady_ms - last_ack_ms_ >= kAckTimeoutMs) {
    // No ack progress: again from the first unacked seq.
    in_flight_.clear();
    next_send_seq_ = outbox_.empty() ? counters_.next_seq : outbox_.front().seq;
    last_ack_ms_ = now.steady_ms;
    Pump(now);
  }
}

// ---------------------------------------------------------------------------
// FloorDevice

FloorDevice::FloorDevice(std::string id, std::string client_id, std::size_t answer_bytes)
    : id_(std::move(id)), client_id_(std::move(client_id)), answer_bytes_(answer_bytes) {}

std::vector<std::string> FloorDevice::Subscriptions() const {
  return {mqtt::topics::Desired(id_)};
}

void FloorDevice::OnConnected(Now /*now*/) {
  connected_ = true;
}

void FloorDevice::OnMessage(std::string_view /*topic*/, std::string_view payload, Now now) {
  if (payload.empty() || answered_at_ms_ != 0) return;
  received_at_ms_ = now.steady_ms;
  answered_at_ms_ = now.steady_ms;
  out_.push_back({mqtt::topics::Reported(id_), std::string(answer_bytes_, 'r'), false});
}

}  // namespace outpost::hub::sim
