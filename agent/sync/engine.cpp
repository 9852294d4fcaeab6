#include "agent/sync/engine.hpp"

#include <algorithm>
#include <utility>

#include "agent/sync/validate.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::agent::sync {
namespace {

constexpr const char* kSignerCn = "outpost-signer";

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
void Truncate(std::string* s, std::size_t max) {
  if (s->size() <= max) return;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>((*s)[cut]) & 0xC0) == 0x80)
    --cut;
  s->resize(cut);
}

bool SameStatuses(const std::vector<outpost::v1::WorkloadStatus>& a,
                  const std::vector<outpost::v1::WorkloadStatus>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].SerializeAsString() != b[i].SerializeAsString()) return false;
  }
  return true;
}

}  // namespace

Engine::Engine(EngineConfig config, SyncStore& store)
    : config_(std::move(config)),
      store_(store),
      topic_desired_(mqtt::topics::Desired(config_.device_id)),
      topic_ack_(mqtt::topics::Ack(config_.device_id)),
      topic_reported_(mqtt::topics::Reported(config_.device_id)),
      topic_events_(mqtt::topics::Events(config_.device_id)),
      topic_presence_(mqtt::topics::Presence(config_.device_id)) {}

Status Engine::Start(Now now) {
  (void)now;
  next_send_seq_ = store_.Marks().floor_seq;
  OUTPOST_ASSIGN_OR_RETURN(auto held, store_.LoadHeld());
  if (held.has_value() && held->generation > 0) {
    apply_ = ApplyRequest{held->generation, std::move(held->workloads)};
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Connection

void Engine::OnConnected(bool session_present, std::uint64_t session_nonce, Now now) {
  (void)session_present;  // the resync below is the same either way
  connected_ = true;
  session_nonce_ = session_nonce;
  in_flight_.clear();
  next_send_seq_ = store_.Marks().floor_seq;
  last_ack_steady_ms_ = now.steady_ms;
  Emit(topic_presence_, PresencePayload(true, now.unix_ms, config_.agent_version, session_nonce),
       true);
  SendReport(now, /*full=*/true);
  PumpOutbox(now);
}

void Engine::OnDisconnected(Now now) {
  (void)now;
  connected_ = false;
  in_flight_.clear();
}

void Engine::Shutdown(Now now) {
  if (connected_) {
    Emit(topic_presence_,
         PresencePayload(false, now.unix_ms, config_.agent_version, session_nonce_), true);
  }
  connected_ = false;
  in_flight_.clear();
}

std::string Engine::PresencePayload(bool online, std::int64_t since_ms,
                                    const std::string& agent_version, std::uint64_t session) {
  outpost::v1::Presence p;
  p.set_online(online);
  p.set_since_ms(since_ms);
  p.set_agent_version(agent_version);
  p.set_session(session);
  return p.SerializeAsString();
}

// ---------------------------------------------------------------------------
// Inbound

void Engine::OnMessage(const std::string& topic, const std::string& payload, Now now) {
  if (topic == topic_desired_) {
    OnDesired(payload, now);
  } else if (topic == topic_ack_) {
    OnAck(payload, now);
  } else {
    ++dropped_messages_;
    log::Warn("sync: dropped a message on unexpected topic ", topic);
  }
}

void Engine::Reject(const std::string& why, std::uint64_t generation, Now now) {
  last_rejection_ = why;
  log::Warn("sync: rejected a desired document",
            generation > 0 ? " (generation " + std::to_string(generation) + ")" : "", ": ", why);
  outpost::v1::Event event;
  event.set_type(outpost::v1::EVENT_TYPE_DESIRED_REJECTED);
  event.set_time_ms(now.unix_ms);
  event.set_generation(generation);
  event.set_message(why);
  Truncate(event.mutable_message(), kMaxEventMessageBytes);
  if (Status s = store_.RecordRejected(std::move(event)); !s.ok()) {
    log::Error("sync: recording a rejected document: ", s.error().ToString());
  }
  PumpOutbox(now);
}

DesiredOutcome Engine::OnDesired(const std::string& payload, Now now) {
  if (payload.size() > kMaxDesiredBytes) {
    Reject("document is " + std::to_string(payload.size()) + " bytes, over the limit of " +
               std::to_string(kMaxDesiredBytes),
           0, now);
    return DesiredOutcome::kRejected;
  }
  outpost::v1::SignedDesiredState signed_state;
  if (!signed_state.ParseFromString(payload)) {
    Reject("document does not parse as SignedDesiredState", 0, now);
    return DesiredOutcome::kRejected;
  }
  // Before the signature is checked nothing in the document is trusted, but
  // the generation (if it parses) makes the rejection event useful.
  std::uint64_t claimed_generation = 0;
  {
    outpost::v1::DesiredState peek;
    if (peek.ParseFromString(signed_state.document())) claimed_generation = peek.generation();
  }
  if (signed_state.signer_certificate().empty() || signed_state.signature().empty()) {
    Reject("document is not signed", claimed_generation, now);
    return DesiredOutcome::kRejected;
  }
  crypto::VerifyOptions verify;
  verify.now_unix = now.unix_ms / 1000;
  verify.expected_cn = kSignerCn;
  verify.usage = crypto::CertUsage::kSigning;
  if (Status s = crypto::VerifyChain(signed_state.signer_certificate(), config_.ca_pem, verify);
      !s.ok()) {
    Reject("signer certificate refused: " + s.error().message(), claimed_generation, now);
    return DesiredOutcome::kRejected;
  }
  if (Status s = crypto::VerifySignature(signed_state.signer_certificate(), signed_state.document(),
                                         signed_state.signature());
      !s.ok()) {
    Reject("signature does not verify: " + s.error().message(), claimed_generation, now);
    return DesiredOutcome::kRejected;
  }
  outpost::v1::DesiredState document;
  if (!document.ParseFromString(signed_state.document())) {
    Reject("signed document does not parse as DesiredState", 0, now);
    return DesiredOutcome::kRejected;
  }
  const std::uint64_t generation = document.generation();
  if (document.device_id() != config_.device_id) {
    std::string other = document.device_id();
    Truncate(&other, 64);
    Reject("document is for device \"" + other + "\", not \"" + config_.device_id + "\"",
           generation, now);
    return DesiredOutcome::kRejected;
  }
  if (generation == 0) {
    Reject("document has generation 0", 0, now);
    return DesiredOutcome::kRejected;
  }
  if (Status s = ValidateAndNormalize(document); !s.ok()) {
    Reject(s.error().message(), generation, now);
    return DesiredOutcome::kRejected;
  }
  hub_generation_ = std::max(hub_generation_, generation);

  const std::uint64_t held = store_.HeldGeneration();
  if (generation == held) {
    if (Status s = store_.CountIgnored(Ignored::kDuplicate); !s.ok())
      log::Error("sync: counting a duplicate document: ", s.error().ToString());
    log::Debug("sync: desired generation ", generation, " is the one held (duplicate)");
    // The hub (re)published it: after the broker lost its state the hub
    // republishes every document, and the report this agent sent when it
    // reconnected may have reached a broker the hub was not subscribed to
    // yet. Reporting again (coalesced) gives the hub the device's view.
    MarkReportDirty(now);
    return DesiredOutcome::kDuplicate;
  }
  if (generation < held) {
    if (Status s = store_.CountIgnored(Ignored::kStale); !s.ok())
      log::Error("sync: counting a stale document: ", s.error().ToString());
    log::Warn("sync: ignored stale desired generation ", generation, " (holding ", held, ")");
    // Tell the hub which generation this device holds, so that a hub restored
    // from an older backup moves past it.
    MarkReportDirty(now);
    return DesiredOutcome::kStale;
  }

  std::vector<outpost::v1::WorkloadSpec> workloads(document.workloads().begin(),
                                                   document.workloads().end());
  if (Status s = store_.StoreDesired(generation, payload, signed_state.document(), workloads);
      !s.ok()) {
    last_rejection_ =
        "storing generation " + std::to_string(generation) + ": " + s.error().message();
    log::Error("sync: ", last_rejection_);
    // Not the document's fault (a full disk): try it again later. The hub
    // would not send it again by itself.
    retry_desired_ = payload;
    retry_desired_at_ms_ = now.steady_ms + kStoreRetryMs;
    return DesiredOutcome::kRejected;
  }
  retry_desired_.reset();
  log::Info("sync: accepted desired generation ", generation, " (", workloads.size(),
            " workloads)");
  apply_ = ApplyRequest{generation, std::move(workloads)};
  MarkReportDirty(now);
  return DesiredOutcome::kAccepted;
}

void Engine::OnAck(const std::string& payload, Now now) {
  if (payload.size() > kMaxAckBytes) {
    ++dropped_messages_;
    log::Warn("sync: dropped an ack of ", payload.size(), " bytes");
    return;
  }
  outpost::v1::Ack ack;
  if (!ack.ParseFromString(payload)) {
    ++dropped_messages_;
    log::Warn("sync: dropped an ack that does not parse");
    return;
  }
  hub_generation_ = std::max(hub_generation_, ack.hub_generation());
  const std::uint64_t before = store_.Marks().acked_seq;
  if (Status s = store_.Ack(ack.acked_seq()); !s.ok()) {
    log::Error("sync: recording ack ", ack.acked_seq(), ": ", s.error().ToString());
    return;
  }
  const std::uint64_t acked = store_.Marks().acked_seq;
  if (acked > before) last_ack_steady_ms_ = now.steady_ms;
  while (!in_flight_.empty() && in_flight_.front().last <= acked)
    in_flight_.pop_front();
  if (next_send_seq_ <= acked) next_send_seq_ = acked + 1;
  PumpOutbox(now);
}

// ---------------------------------------------------------------------------
// From the runtime

void Engine::OnApplied(std::uint64_t generation, Now now) {
  if (generation > store_.HeldGeneration()) {
    log::Error("sync: applied generation ", generation, " is above the held ",
               store_.HeldGeneration());
    return;
  }
  if (generation > store_.AppliedGeneration()) {
    outpost::v1::Event event;
    event.set_type(outpost::v1::EVENT_TYPE_DESIRED_APPLIED);
    event.set_time_ms(now.unix_ms);
    event.set_generation(generation);
    event.set_message("applied generation " + std::to_string(generation));
    if (Status s = store_.MarkApplied(generation, std::move(event)); !s.ok()) {
      log::Error("sync: recording applied generation ", generation, ": ", s.error().ToString());
      return;
    }
    log::Info("sync: applied generation ", generation);
    PumpOutbox(now);
  }
  MarkReportDirty(now);
}

void Engine::OnWorkloadStatuses(std::vector<outpost::v1::WorkloadStatus> statuses, Now now) {
  if (SameStatuses(statuses, statuses_)) return;
  statuses_ = std::move(statuses);
  MarkReportDirty(now);
}

void Engine::OnFacts(const outpost::v1::DeviceFacts& facts, Now now) {
  if (facts_.has_value() && facts_->SerializeAsString() == facts.SerializeAsString()) return;
  facts_ = facts;
  facts_dirty_ = true;
  MarkReportDirty(now);
}

void Engine::QueueEvent(outpost::v1::Event event, Now now) {
  if (event.time_ms() == 0) event.set_time_ms(now.unix_ms);
  Truncate(event.mutable_message(), kMaxEventMessageBytes);
  Truncate(event.mutable_workload(), 63);
  Truncate(event.mutable_device_path(), 256);
  if (auto seq = store_.Append(std::move(event)); !seq.ok()) {
    log::Error("sync: queueing an event: ", seq.error().ToString());
    return;
  }
  PumpOutbox(now);
}

// ---------------------------------------------------------------------------
// Reports

void Engine::MarkReportDirty(Now now) {
  report_dirty_ = true;
  if (!connected_) return;
  if (!last_report_steady_ms_.has_value() ||
      now.steady_ms - *last_report_steady_ms_ >= config_.report_interval.count()) {
    SendReport(now, /*full=*/false);
  }
}

void Engine::SendReport(Now now, bool full) {
  auto seq = store_.NextReportSeq();
  if (!seq.ok()) {
    log::Error("sync: report_seq: ", seq.error().ToString());
    report_dirty_ = true;
    // Try again one report interval from now, not at once: NextWakeup()
    // counts from the last attempt, and a full disk fails every attempt.
    last_report_steady_ms_ = now.steady_ms;
    return;
  }
  outpost::v1::ReportedState report;
  report.set_device_id(config_.device_id);
  report.set_observed_generation(store_.AppliedGeneration());
  report.set_desired_generation(store_.HeldGeneration());
  for (const auto& w : statuses_)
    *report.add_workloads() = w;
  report.set_reported_at_ms(now.unix_ms);
  report.set_report_seq(*seq);
  report.set_outbox_depth(store_.Marks().depth);
  const DocumentCounters counters = store_.Counters();
  report.set_stale_documents(counters.stale + counters.duplicate);
  report.set_agent_version(config_.agent_version);
  report.set_cert_not_after_ms(config_.cert_not_after_ms);
  if (facts_.has_value() && (full || facts_dirty_)) {
    *report.mutable_facts() = *facts_;
    facts_dirty_ = false;
  }
  // Stay within the receiver's limit: shorten messages, then drop the facts,
  // then drop workloads from the end (the hub sees the rest next time).
  if (report.ByteSizeLong() > kMaxReportedBytes) {
    for (auto& w : *report.mutable_workloads())
      Truncate(w.mutable_message(), 128);
  }
  if (report.ByteSizeLong() > kMaxReportedBytes && report.has_facts()) {
    report.clear_facts();
    facts_dirty_ = true;
  }
  while (report.ByteSizeLong() > kMaxReportedBytes && report.workloads_size() > 0) {
    report.mutable_workloads()->RemoveLast();
  }
  Emit(topic_reported_, report.SerializeAsString(), false);
  report_dirty_ = false;
  last_report_steady_ms_ = now.steady_ms;
}

// ---------------------------------------------------------------------------
// Outbox

void Engine::PumpOutbox(Now now) {
  if (!connected_) return;
  OutboxMarks marks = store_.Marks();
  if (next_send_seq_ < marks.floor_seq) next_send_seq_ = marks.floor_seq;
  // A little room for the batch's own fields around the events.
  const std::size_t max_bytes =
      config_.batch_max_bytes > 1024 ? config_.batch_max_bytes - 1024 : config_.batch_max_bytes;
  while (in_flight_.size() < config_.max_in_flight && next_send_seq_ < marks.next_seq) {
    auto rows = store_.ReadOutbox(next_send_seq_, config_.batch_max_events, max_bytes);
    if (!rows.ok()) {
      log::Error("sync: reading the outbox: ", rows.error().ToString());
      return;
    }
    if (rows->empty()) {
      next_send_seq_ = marks.next_seq;
      return;
    }
    outpost::v1::EventBatch batch;
    batch.set_device_id(config_.device_id);
    batch.set_floor_seq(marks.floor_seq);
    for (const auto& row : *rows) {
      if (!batch.add_events()->ParseFromString(row.bytes)) {
        // A row we wrote ourselves; never expected. Send it as a placeholder
        // so that the seq is not lost to the hub.
        auto* e = batch.mutable_events(batch.events_size() - 1);
        e->Clear();
        e->set_seq(row.seq);
        e->set_message("unreadable outbox row");
      }
    }
    if (in_flight_.empty() && now.steady_ms > last_ack_steady_ms_) {
      // Nothing was outstanding: the ack clock starts with this batch.
      last_ack_steady_ms_ = now.steady_ms;
    }
    Emit(topic_events_, batch.SerializeAsString(), false);
    in_flight_.push_back({rows->front().seq, rows->back().seq, now.steady_ms});
    next_send_seq_ = rows->back().seq + 1;
  }
}

// ---------------------------------------------------------------------------
// Time

std::optional<std::int64_t> Engine::NextWakeup() const {
  std::optional<std::int64_t> at;
  auto consider = [&](std::int64_t t) {
    if (!at.has_value() || t < *at) at = t;
  };
  if (connected_ && report_dirty_ && last_report_steady_ms_.has_value())
    consider(*last_report_steady_ms_ + config_.report_interval.count());
  if (connected_ && !in_flight_.empty()) {
    consider(std::max(in_flight_.front().sent_steady_ms, last_ack_steady_ms_) +
             config_.ack_timeout.count());
  }
  if (retry_desired_.has_value()) consider(retry_desired_at_ms_);
  return at;
}

void Engine::OnTick(Now now) {
  if (retry_desired_.has_value() && now.steady_ms >= retry_desired_at_ms_) {
    std::string payload = std::move(*retry_desired_);
    retry_desired_.reset();
    log::Info("sync: trying to store the desired document again");
    OnDesired(payload, now);  // accepted, or scheduled again
  }
  if (!connected_) return;
  if (report_dirty_ && (!last_report_steady_ms_.has_value() ||
                        now.steady_ms - *last_report_steady_ms_ >= config_.report_interval.count()))
    SendReport(now, /*full=*/false);
  if (!in_flight_.empty()) {
    std::int64_t deadline = std::max(in_flight_.front().sent_steady_ms, last_ack_steady_ms_) +
                            config_.ack_timeout.count();
    if (now.steady_ms >= deadline) {
      log::Info("sync: no ack for ", config_.ack_timeout.count(), " ms; resending events from seq ",
                store_.Marks().floor_seq);
      in_flight_.clear();
      next_send_seq_ = store_.Marks().floor_seq;
      last_ack_steady_ms_ = now.steady_ms;
      PumpOutbox(now);
    }
  }
}

// ---------------------------------------------------------------------------
// Outputs

void Engine::Emit(std::string topic, std::string payload, bool retained) {
  publishes_.push_back(Publish{std::move(topic), std::move(payload), 1, retained});
}

std::vector<Publish> Engine::TakePublishes() {
  std::vector<Publish> out;
  out.swap(publishes_);
  return out;
}

std::optional<ApplyRequest> Engine::TakeApply() {
  std::optional<ApplyRequest> out;
  out.swap(apply_);
  return out;
}

}  // namespace outpost::agent::sync
