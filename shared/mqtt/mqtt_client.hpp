// The one MQTT adapter of Outpost (hub and agent). Business logic talks to the
// `Client` interface; `NewPahoClient` is the only code that includes Paho.
//
// Threading: handlers run on the adapter's own thread (Paho's callback
// thread); they must be quick and hand work to the owner's executor.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::mqtt {

struct Will {
  std::string topic;
  std::string payload;
  bool retained = true;
  int qos = 1;
};

struct ClientOptions {
  std::string server_uri;      // ssl://host:port (tcp:// only for tests of failure paths)
  std::string client_id;       // devices: their id; the hub: "outpost-hub-<instance>"
  std::string ca_file;         // PEM; the broker's certificate must chain to it
  std::string cert_file;       // PEM client certificate
  std::string key_file;        // PEM private key
  bool clean_session = false;  // false: a persistent session, QoS 1 survives reconnects
  // After a connect that resumed our session (the broker kept the
  // subscriptions), wait for the SUBACK of the renewed subscriptions before
  // counting the client connected. The renewal still goes out either way (it
  // re-delivers the filters' retained messages). The hub sets false: under a
  // reconnect storm its SUBACK came after the whole fleet's retained presence
  // and handshakes, past the connect timeout, again and again.
  bool await_resubscribe = true;
  std::chrono::seconds keep_alive{30};
  std::optional<Will> will;
  // Reconnect backoff: exponential from min to max, with jitter.
  std::chrono::milliseconds min_retry{500};
  std::chrono::milliseconds max_retry{30000};
  std::chrono::milliseconds connect_timeout{10000};
  // Publishes accepted while disconnected and not yet sent; beyond this,
  // Publish fails with kResourceExhausted.
  int max_buffered = 1000;
};

struct Message {
  std::string topic;
  std::string payload;
  bool retained = false;
  int qos = 0;
};

class Client {
 public:
  struct ConnectionEvent {
    bool connected = false;        // true after every (re)connect, subscriptions in place
    bool session_present = false;  // the broker kept our session (and QoS 1 queue)
    std::string cause;             // why a connect failed or the connection was lost
  };
  using MessageHandler = std::function<void(const Message&)>;
  using ConnectionHandler = std::function<void(const ConnectionEvent&)>;
  using PublishDone = std::function<void(const Status&)>;

  virtual ~Client() = default;

  // Set before Start().
  virtual void SetMessageHandler(MessageHandler handler) = 0;
  virtual void SetConnectionHandler(ConnectionHandler handler) = 0;
  // Subscriptions re-established on every connect (needed even with a
  // persistent session: the broker may have lost it).
  virtual void AddSubscription(const std::string& filter, int qos) = 0;

  // Starts connecting in the background; reconnects until Stop().
  virtual Status Start() = 0;
  // Disconnects cleanly (no last will) and stops reconnecting. Idempotent.
  virtual void Stop() = 0;
  virtual bool IsConnected() const = 0;

  // Never blocks on the network. `done` (optional) runs when the broker
  // acknowledged (QoS 1) or the publish failed.
  virtual Status Publish(const std::string& topic, std::string payload, int qos, bool retained,
                         PublishDone done = nullptr) = 0;
};

using ClientPtr = std::unique_ptr<Client>;

Result<ClientPtr> NewPahoClient(ClientOptions options);

// Topic names of the contract.
namespace topics {
std::string Desired(const std::string& device_id);
std::string Reported(const std::string& device_id);
std::string Events(const std::string& device_id);
std::string Ack(const std::string& device_id);
std::string Presence(const std::string& device_id);
// "outpost/v1/devices/{id}/{leaf}" -> id and leaf; false when it does not match.
bool Parse(const std::string& topic, std::string* device_id, std::string* leaf);
// A device id usable inside a topic and as a certificate CN: 1-63 chars of
// [a-z0-9-], starting and ending alphanumeric.
bool ValidDeviceId(const std::string& id);
}  // namespace topics

}  // namespace outpost::mqtt
