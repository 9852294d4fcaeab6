#include "hub/broker/publisher.hpp"

#include <chrono>

#include "shared/core/log.hpp"

namespace outpost::hub::broker {

DesiredPublisher::DesiredPublisher(mqtt::Client* client, const DesiredSigner* signer,
                                   PostToState post, Options options)
    : client_(client), signer_(signer), post_(std::move(post)), options_(options) {}

DesiredPublisher::~DesiredPublisher() {
  Stop();
}

void DesiredPublisher::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void DesiredPublisher::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DesiredPublisher::SetConnected(bool connected) {
  {
    std::lock_guard lock(mu_);
    connected_ = connected;
  }
  cv_.notify_all();
}

void DesiredPublisher::Enqueue(Job job) {
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(job.device_id);
    if (it == pending_.end()) {
      order_.push_back(job.device_id);
      pending_.emplace(job.device_id, std::move(job));
    } else if (job.clear || it->second.clear || job.generation >= it->second.generation) {
      it->second = std::move(job);
    }
  }
  cv_.notify_all();
}

void DesiredPublisher::Publish(const std::vector<registry::DesiredChange>& changes) {
  for (const auto& change : changes) {
    Enqueue(Job{change.device_id, change.generation, change.document_bytes, "", false});
  }
}

void DesiredPublisher::Republish(const std::vector<registry::DesiredRecord>& records) {
  for (const auto& r : records) {
    if (r.generation == 0 || r.document.empty()) continue;
    std::string signed_bytes = r.signed_generation == r.generation ? r.signed_document : "";
    Enqueue(Job{r.device_id, r.generation, r.document, std::move(signed_bytes), false});
  }
}

void DesiredPublisher::Clear(const std::string& device_id) {
  Enqueue(Job{device_id, 0, "", "", true});
}

bool DesiredPublisher::SendAcks(std::vector<std::pair<std::string, std::string>>& acks) {
  {
    std::lock_guard lock(mu_);
    for (auto& [topic, payload] : acks) {
      auto [it, inserted] = acks_.try_emplace(topic);
      if (inserted) ack_order_.push_back(topic);
      it->second = std::move(payload);
    }
  }
  acks.clear();
  cv_.notify_all();
  return true;
}

bool DesiredPublisher::SendAcksLocked(std::unique_lock<std::mutex>& lock) {
  while (!ack_order_.empty() && connected_ && !stop_) {
    std::string topic = std::move(ack_order_.front());
    ack_order_.pop_front();
    auto node = acks_.extract(topic);
    if (node.empty()) continue;
    lock.unlock();
    // Fire and forget: a lost ack makes the agent resend, and the resend is
    // acknowledged again.
    Status s = client_->Publish(topic, node.mapped(), 1, false);
    lock.lock();
    if (!s.ok()) {
      log::Debug("ack on ", topic, " not sent yet: ", s.error().message());
      if (acks_.try_emplace(topic, std::move(node.mapped())).second) {
        ack_order_.push_front(std::move(topic));
      }
      return false;
    }
    ++acks_sent_;
  }
  return true;
}

void DesiredPublisher::FlushSignedLocked() {
  if (signed_.empty()) return;
  auto batch = std::make_shared<std::vector<SignedDoc>>(std::move(signed_));
  signed_.clear();
  post_([batch](registry::Registry& registry) {
    Status committed = registry.Batch([&]() -> Status {
      for (const auto& doc : *batch) {
        Status s = registry.StoreSigned(doc.device_id, doc.generation, doc.bytes);
        if (!s.ok() && s.error().code() != Errc::kNotFound) {
          log::Warn("storing the signed document of ", doc.device_id,
                    " failed: ", s.error().ToString());
        }
      }
      return OkStatus();
    });
    if (!committed.ok()) {
      log::Warn("storing signed documents failed: ", committed.error().ToString());
    }
  });
}

void DesiredPublisher::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (connected_ && (!ack_order_.empty() ||
                                      (in_flight_ < options_.max_in_flight && !order_.empty())));
    });
    if (stop_) break;
    if (!SendAcksLocked(lock)) {
      // The client's buffer is full: let it drain.
      cv_.wait_for(lock, std::chrono::milliseconds(10), [&] { return stop_; });
      continue;
    }
    if (!connected_ || in_flight_ >= options_.max_in_flight || order_.empty()) continue;
    std::string id = std::move(order_.front());
    order_.pop_front();
    auto node = pending_.extract(id);
    if (node.empty()) continue;
    Job job = std::move(node.mapped());
    ++in_flight_;
    lock.unlock();

    bool signed_now = false;
    if (!job.clear && job.signed_bytes.empty()) {
      auto signed_doc = signer_->Sign(job.document);
      if (!signed_doc.ok()) {
        log::Error("signing the desired document of ", job.device_id,
                   " failed: ", signed_doc.error().ToString());
        lock.lock();
        --in_flight_;
        ++failed_;
        continue;
      }
      job.signed_bytes = std::move(*signed_doc);
      signed_now = true;
    }
    const std::string topic = mqtt::topics::Desired(job.device_id);
    const std::string device_id = job.device_id;
    const std::uint64_t generation = job.generation;
    const bool clear = job.clear;
    Status s = client_->Publish(topic, clear ? std::string() : job.signed_bytes, 1, true,
                                [this, device_id, generation, clear](const Status& status) {
                                  OnDone(device_id, generation, clear, status);
                                });
    if (s.ok() && clear) {
      // The retained presence goes too; nothing waits for it.
      (void)client_->Publish(mqtt::topics::Presence(device_id), std::string(), 1, true);
    }

    lock.lock();
    if (signed_now) {
      ++signed_total_;
      signed_.push_back(SignedDoc{device_id, generation, job.signed_bytes});
    }
    if (s.ok()) {
      ++published_;
    } else {
      --in_flight_;
      ++failed_;
      log::Debug("publishing the desired document of ", device_id, " failed: ", s.error().message(),
                 "; retrying");
      // Put it back unless something newer is waiting, and pause briefly: the
      // client's buffer is full or the link is going down.
      if (!pending_.contains(device_id)) {
        order_.push_back(device_id);
        pending_.emplace(device_id, std::move(job));
      }
      cv_.wait_for(lock, std::chrono::milliseconds(10), [&] { return stop_; });
    }
    if (signed_.size() >= options_.store_batch || order_.empty()) FlushSignedLocked();
  }
  FlushSignedLocked();
}

void DesiredPublisher::OnDone(const std::string& device_id, std::uint64_t generation, bool clear,
                              const Status& status) {
  bool schedule = false;
  {
    std::lock_guard lock(mu_);
    if (in_flight_ > 0) --in_flight_;
    if (status.ok()) {
      ++acked_total_;
      if (!clear) {
        schedule = acked_.empty();
        acked_.emplace_back(device_id, generation);
      }
    } else {
      ++failed_;
      log::Debug("the broker did not take the desired document of ", device_id, ": ",
                 status.error().message());
    }
  }
  cv_.notify_all();
  if (schedule) {
    post_([this](registry::Registry& registry) {
      std::vector<std::pair<std::string, std::uint64_t>> batch;
      {
        std::lock_guard lock(mu_);
        batch.swap(acked_);
      }
      Status committed = registry.Batch([&]() -> Status {
        for (const auto& [id, gen] : batch) {
          Status s = registry.MarkPublished(id, gen);
          if (!s.ok() && s.error().code() != Errc::kNotFound) {
            log::Warn("marking the document of ", id, " published failed: ", s.error().ToString());
          }
        }
        return OkStatus();
      });
      if (!committed.ok()) {
        log::Warn("marking documents published failed: ", committed.error().ToString());
      }
    });
  }
}

nlohmann::json DesiredPublisher::StatsJson() const {
  std::lock_guard lock(mu_);
  return {{"pending", pending_.size()},  {"inFlight", in_flight_}, {"published", published_},
          {"acked", acked_total_},       {"failed", failed_},      {"signed", signed_total_},
          {"acksWaiting", acks_.size()}, {"acksSent", acks_sent_}};
}

bool DesiredPublisher::Idle() const {
  std::lock_guard lock(mu_);
  return pending_.empty() && in_flight_ == 0 && acks_.empty();
}

}  // namespace outpost::hub::broker
