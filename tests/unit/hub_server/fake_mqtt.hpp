// A fake mqtt::Client for hub unit tests: records publishes, lets the test
// complete them (broker ack or failure) and drive connection events.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::testing {

class FakeMqttClient : public mqtt::Client {
 public:
  struct Published {
    std::string topic;
    std::string payload;
    int qos = 0;
    bool retained = false;
    PublishDone done;
  };

  void SetMessageHandler(MessageHandler handler) override { message_handler = std::move(handler); }
  void SetConnectionHandler(ConnectionHandler handler) override {
    connection_handler = std::move(handler);
  }
  void AddSubscription(const std::string& filter, int qos) override {
    subscriptions.emplace_back(filter, qos);
  }
  Status Start() override {
    started = true;
    return OkStatus();
  }
  void Stop() override { started = false; }
  bool IsConnected() const override { return connected; }
  Status Publish(const std::string& topic, std::string payload, int qos, bool retained,
                 PublishDone done) override {
    std::lock_guard lock(mu);
    if (fail_publish) return Error(Errc::kResourceExhausted, "fake: buffer full");
    published.push_back(Published{topic, std::move(payload), qos, retained, std::move(done)});
    return OkStatus();
  }

  std::vector<Published> Take() {
    std::lock_guard lock(mu);
    std::vector<Published> out;
    out.swap(published);
    return out;
  }
  std::size_t Count() {
    std::lock_guard lock(mu);
    return published.size();
  }

  std::mutex mu;
  std::vector<Published> published;
  bool fail_publish = false;
  bool started = false;
  bool connected = false;
  MessageHandler message_handler;
  ConnectionHandler connection_handler;
  std::vector<std::pair<std::string, int>> subscriptions;
};

}  // namespace outpost::testing
