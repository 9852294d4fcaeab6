// Publishes signed desired documents, retained at QoS 1, from a thread of its
// own so that signing and publishing never hold the state thread or the API.
//
// Work is coalesced per device: while a device's document waits, a newer one
// replaces it, so the backlog is bounded by the number of devices, however
// many changes arrive. At most `max_in_flight` publishes wait for the
// broker's acknowledgement at a time (this is also what throttles a
// republication of the whole fleet). Publishing pauses while the link is down
// and resumes on the next connect.
//
// Back to the state thread (through `post`): StoreSigned for documents it
// signed, MarkPublished for documents the broker acknowledged (both batched).
//
// It also sends the acks for event batches (SendAcks), before documents: one
// per device at most waits (a newer ack replaces it), and one the MQTT client
// cannot take yet is retried rather than dropped (a dropped ack costs its
// device a 10 s wait before it resends its events).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hub/broker/desired_sink.hpp"
#include "hub/broker/signer.hpp"
#include "hub/registry/registry.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::broker {

class DesiredPublisher : public DesiredSink {
 public:
  using StateTask = std::function<void(registry::Registry&)>;
  using PostToState = std::function<void(StateTask)>;

  struct Options {
    std::size_t max_in_flight = 256;
    std::size_t store_batch = 64;
  };

  DesiredPublisher(mqtt::Client* client, const DesiredSigner* signer, PostToState post,
                   Options options);
  DesiredPublisher(mqtt::Client* client, const DesiredSigner* signer, PostToState post)
      : DesiredPublisher(client, signer, std::move(post), Options{}) {}
  ~DesiredPublisher() override;
  DesiredPublisher(const DesiredPublisher&) = delete;
  DesiredPublisher& operator=(const DesiredPublisher&) = delete;

  void Start();
  // Joins the thread; documents still waiting are dropped (the registry
  // knows they are unpublished and the next start publishes them).
  void Stop();
  // The broker link's state: publishing waits while it is down.
  void SetConnected(bool connected);

  void Publish(const std::vector<registry::DesiredChange>& changes) override;
  void Republish(const std::vector<registry::DesiredRecord>& records) override;
  void Clear(const std::string& device_id) override;
  bool SendAcks(std::vector<std::pair<std::string, std::string>>& acks) override;

  nlohmann::json StatsJson() const;
  // Nothing waiting and nothing in flight.
  bool Idle() const;

 private:
  struct Job {
    std::string device_id;
    std::uint64_t generation = 0;
    std::string document;      // serialized DesiredState
    std::string signed_bytes;  // serialized SignedDesiredState, "" until signed
    bool clear = false;        // remove the retained messages instead
  };

  void Enqueue(Job job);
  void Run();
  // Sends the waiting acks; false (with the lock held again) when the client
  // refused one, which then waits again.
  bool SendAcksLocked(std::unique_lock<std::mutex>& lock);
  void OnDone(const std::string& device_id, std::uint64_t generation, bool clear,
              const Status& status);
  void FlushSignedLocked();

  mqtt::Client* client_;
  const DesiredSigner* signer_;
  PostToState post_;
  Options options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool connected_ = false;
  std::unordered_map<std::string, Job> pending_;
  std::deque<std::string> order_;
  std::size_t in_flight_ = 0;
  std::unordered_map<std::string, std::string> acks_;  // topic -> newest payload
  std::deque<std::string> ack_order_;
  std::uint64_t acks_sent_ = 0;
  std::vector<std::pair<std::string, std::uint64_t>> acked_;
  struct SignedDoc {
    std::string device_id;
    std::uint64_t generation;
    std::string bytes;
  };
  std::vector<SignedDoc> signed_;
  std::uint64_t published_ = 0;
  std::uint64_t acked_total_ = 0;
  std::uint64_t failed_ = 0;
  std::uint64_t signed_total_ = 0;
  std::thread thread_;
};

}  // namespace outpost::hub::broker
