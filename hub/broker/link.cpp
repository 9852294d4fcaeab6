#include "hub/broker/link.hpp"

#include "shared/core/log.hpp"

namespace outpost::hub::broker {

BrokerLink::BrokerLink(mqtt::Client* client, DesiredPublisher* publisher, DeviceIngest* ingest,
                       IngestStats* stats, PostToState post, Options options)
    : client_(client),
      publisher_(publisher),
      ingest_(ingest),
      stats_(stats),
      post_(std::move(post)),
      options_(options),
      queue_(options.per_device_queue, options.total_queue, options.total_queue_bytes) {}

Status BrokerLink::Start() {
  client_->SetMessageHandler([this](const mqtt::Message& m) { OnMessage(m); });
  client_->SetConnectionHandler(
      [this](const mqtt::Client::ConnectionEvent& e) { OnConnection(e); });
  for (const char* leaf : {"reported", "events", "presence"}) {
    client_->AddSubscription(std::string("outpost/v1/devices/+/") + leaf, 1);
  }
  return client_->Start();
}

void BrokerLink::Stop() {
  client_->Stop();
  connected_.store(false);
  publisher_->SetConnected(false);
}

void BrokerLink::OnMessage(const mqtt::Message& message) {
  stats_->received.fetch_add(1);
  Drop why = Drop::kBadTopic;
  auto classified = Classify(message, &why);
  if (!classified) {
    stats_->Count(why);
    return;
  }
  bool schedule = false;
  {
    std::lock_guard lock(mu_);
    std::string key = classified->device_id;
    const std::size_t bytes = classified->payload.size() + key.size();
    if (!queue_.Push(key, std::move(*classified), bytes)) {
      stats_->Count(Drop::kQueueFull);
      return;
    }
    if (!drain_scheduled_) {
      drain_scheduled_ = true;
      schedule = true;
    }
  }
  if (schedule) post_([this](registry::Registry& registry) { Drain(registry); });
}

void BrokerLink::Drain(registry::Registry& /*registry*/) {
  std::vector<DeviceMessage> batch;
  bool more = false;
  {
    std::lock_guard lock(mu_);
    while (batch.size() < options_.drain_batch) {
      auto message = queue_.Pop();
      if (!message) break;
      batch.push_back(std::move(*message));
    }
    more = !queue_.empty();
    if (!more) drain_scheduled_ = false;
  }
  // One registry batch (one commit) for the lot.
  ingest_->HandleAll(batch);
  // More waiting: yield to other state-thread work (API requests), then go on.
  if (more) post_([this](registry::Registry& registry) { Drain(registry); });
}

void BrokerLink::OnConnection(const mqtt::Client::ConnectionEvent& event) {
  if (!event.connected) {
    const bool was_connected = connected_.exchange(false);
    {
      std::lock_guard lock(mu_);
      if (was_connected) {
        log::Warn("broker link down: ", event.cause);
      } else if (event.cause != last_cause_) {
        // A failed attempt: said once per distinct cause, not every retry.
        log::Warn("broker connect failed: ", event.cause);
      }
      last_cause_ = event.cause;
    }
    publisher_->SetConnected(false);
    return;
  }
  connected_.store(true);
  connects_.fetch_add(1);
  log::Info("broker link up (session ", event.session_present ? "resumed" : "new", ")");
  const bool all = !event.session_present;
  DesiredPublisher* publisher = publisher_;
  post_([publisher, all](registry::Registry& registry) {
    auto records = all ? registry.AllDesired() : registry.UnpublishedDesired();
    if (!records.ok()) {
      log::Error("reading desired documents to republish failed: ", records.error().ToString());
      return;
    }
    if (!records->empty()) {
      log::Info("republishing ", records->size(), " desired document(s)",
                all ? " (the broker did not keep our session)" : "");
    }
    publisher->Republish(*records);
  });
  publisher_->SetConnected(true);
}

nlohmann::json BrokerLink::HealthJson() const {
  nlohmann::json out;
  out["broker"] = connected_.load() ? "connected" : "disconnected";
  out["brokerConnects"] = connects_.load();
  {
    std::lock_guard lock(mu_);
    if (!connected_.load() && !last_cause_.empty()) out["brokerError"] = last_cause_;
    out["ingestQueue"] = queue_.size();
  }
  out["ingest"] = stats_->ToJson();
  out["publisher"] = publisher_->StatsJson();
  return out;
}

}  // namespace outpost::hub::broker
