#include "hub/broker/ingest.hpp"

#include "outpost.pb.h"
#include "shared/core/log.hpp"

namespace outpost::hub::broker {

const char* DropName(Drop reason) {
  switch (reason) {
    case Drop::kBadTopic:
      return "badTopic";
    case Drop::kTooLarge:
      return "tooLarge";
    case Drop::kUnparseable:
      return "unparseable";
    case Drop::kIdMismatch:
      return "idMismatch";
    case Drop::kTooManyEvents:
      return "tooManyEvents";
    case Drop::kUnknownDevice:
      return "unknownDevice";
    case Drop::kRevoked:
      return "revoked";
    case Drop::kQueueFull:
      return "queueFull";
    case Drop::kStoreError:
      return "storeError";
    case Drop::kCount:
      break;
  }
  return "?";
}

nlohmann::json IngestStats::ToJson() const {
  nlohmann::json dropped_json = nlohmann::json::object();
  for (std::size_t i = 0; i < static_cast<std::size_t>(Drop::kCount); ++i) {
    dropped_json[DropName(static_cast<Drop>(i))] = dropped[i].load();
  }
  return {{"received", received.load()},
          {"processed", processed.load()},
          {"republished", republished.load()},
          {"dropped", dropped_json}};
}

std::optional<DeviceMessage> Classify(const mqtt::Message& message, Drop* why) {
  std::string id;
  std::string leaf;
  if (!mqtt::topics::Parse(message.topic, &id, &leaf) || !mqtt::topics::ValidDeviceId(id) ||
      id.rfind("outpost-", 0) == 0) {
    *why = Drop::kBadTopic;
    return std::nullopt;
  }
  DeviceMessage out;
  std::size_t limit = 0;
  if (leaf == "reported") {
    out.leaf = Leaf::kReported;
    limit = kMaxReportBytes;
  } else if (leaf == "events") {
    out.leaf = Leaf::kEvents;
    limit = kMaxEventBatchBytes;
  } else if (leaf == "presence") {
    out.leaf = Leaf::kPresence;
    limit = kMaxPresenceBytes;
  } else {
    *why = Drop::kBadTopic;
    return std::nullopt;
  }
  if (message.payload.size() > limit) {
    *why = Drop::kTooLarge;
    return std::nullopt;
  }
  out.device_id = std::move(id);
  out.payload = message.payload;
  return out;
}

void DeviceIngest::HandleAll(const std::vector<DeviceMessage>& messages) {
  if (messages.empty()) return;
  Status committed = registry_->Batch([&]() -> Status {
    for (const auto& m : messages)
      Process(m);
    return OkStatus();
  });
  if (!committed.ok()) {
    log::Warn("ingest: committing ", messages.size(),
              " device message(s) failed: ", committed.error().ToString());
    for (std::size_t i = 0; i < messages.size(); ++i)
      stats_->Count(Drop::kStoreError);
    acks_.clear();
    publish_.clear();
    republish_.clear();
    return;
  }
  Flush();
}

void DeviceIngest::Flush() {
  // The publisher thread sends acks (retrying a full client buffer); without
  // one, they go out from here.
  if (!acks_.empty() && !desired_->SendAcks(acks_)) {
    for (auto& [topic, payload] : acks_) {
      // Fire and forget: a lost ack makes the agent resend, and the resend is
      // acknowledged again.
      Status published = client_->Publish(topic, std::move(payload), 1, false);
      if (!published.ok()) {
        log::Debug("ingest: ack on ", topic, " not sent: ", published.error().message());
      }
    }
  }
  acks_.clear();
  if (!publish_.empty()) desired_->Publish(publish_);
  publish_.clear();
  if (!republish_.empty()) desired_->Republish(republish_);
  republish_.clear();
}

void DeviceIngest::Process(const DeviceMessage& message) {
  switch (message.leaf) {
    case Leaf::kReported:
      return HandleReport(message);
    case Leaf::kEvents:
      return HandleEvents(message);
    case Leaf::kPresence:
      return HandlePresence(message);
  }
}

void DeviceIngest::CountError(const std::string& device_id, const Error& error) {
  switch (error.code()) {
    case Errc::kNotFound:
      stats_->Count(Drop::kUnknownDevice);
      log::Debug("ingest: message from unknown device ", device_id, " dropped");
      return;
    case Errc::kPermissionDenied:
      stats_->Count(Drop::kRevoked);
      log::Debug("ingest: message from revoked device ", device_id, " dropped");
      return;
    default:
      stats_->Count(Drop::kStoreError);
      log::Warn("ingest: storing a message from ", device_id, " failed: ", error.ToString());
  }
}

void DeviceIngest::MaybeRepublish(const std::string& device_id, std::int64_t now) {
  auto it = last_republish_.find(device_id);
  if (it != last_republish_.end() && now - it->second < kRepublishIntervalMs) return;
  if (last_republish_.size() > 4096) {
    std::erase_if(last_republish_,
                  [now](const auto& kv) { return now - kv.second >= kRepublishIntervalMs; });
  }
  last_republish_[device_id] = now;
  auto record = registry_->GetDesired(device_id);
  if (!record.ok()) {
    log::Warn("ingest: reading the desired document of ", device_id,
              " failed: ", record.error().ToString());
    return;
  }
  stats_->republished.fetch_add(1);
  republish_.push_back(std::move(*record));
}

void DeviceIngest::HandleReport(const DeviceMessage& message) {
  outpost::v1::ReportedState report;
  if (!report.ParseFromString(message.payload)) {
    stats_->Count(Drop::kUnparseable);
    return;
  }
  if (report.device_id() != message.device_id) {
    stats_->Count(Drop::kIdMismatch);
    return;
  }
  const std::int64_t now = now_ms_();
  auto outcome = registry_->RecordReport(message.device_id, report, now);
  if (!outcome.ok()) return CountError(message.device_id, outcome.error());
  stats_->processed.fetch_add(1);
  if (outcome->device_ahead) {
    auto mutation =
        registry_->EnsureGenerationAbove(message.device_id, report.desired_generation(), now);
    if (!mutation.ok()) {
      log::Warn("ingest: moving the generation of ", message.device_id,
                " forward failed: ", mutation.error().ToString());
      return;
    }
    log::Info("device ", message.device_id, " holds generation ", report.desired_generation(),
              ", newer than the hub's; issuing a newer one");
    for (auto& change : mutation->desired)
      publish_.push_back(std::move(change));
  } else if (outcome->device_behind) {
    MaybeRepublish(message.device_id, now);
  }
}

void DeviceIngest::HandleEvents(const DeviceMessage& message) {
  outpost::v1::EventBatch batch;
  if (!batch.ParseFromString(message.payload)) {
    stats_->Count(Drop::kUnparseable);
    return;
  }
  if (batch.device_id() != message.device_id) {
    stats_->Count(Drop::kIdMismatch);
    return;
  }
  if (batch.events_size() > kMaxEventsPerBatch) {
    stats_->Count(Drop::kTooManyEvents);
    return;
  }
  auto outcome = registry_->RecordEvents(message.device_id, batch, now_ms_());
  if (!outcome.ok()) return CountError(message.device_id, outcome.error());
  stats_->processed.fetch_add(1);
  outpost::v1::Ack ack;
  ack.set_acked_seq(outcome->contiguous_mark);
  ack.set_hub_generation(outcome->hub_generation);
  std::string payload;
  ack.SerializeToString(&payload);
  acks_.emplace_back(mqtt::topics::Ack(message.device_id), std::move(payload));
}

void DeviceIngest::HandlePresence(const DeviceMessage& message) {
  // Presence{online=false} with every other field at its default serializes
  // to zero bytes, so an empty payload is "offline" (the hub's own clearing of
  // a deleted or revoked device's topic then finds no live device: dropped).
  outpost::v1::Presence presence;
  if (!presence.ParseFromString(message.payload)) {
    stats_->Count(Drop::kUnparseable);
    return;
  }
  Status s = registry_->SetPresence(message.device_id, presence.online(), now_ms_());
  if (!s.ok()) return CountError(message.device_id, s.error());
  stats_->processed.fetch_add(1);
}

}  // namespace outpost::hub::broker
