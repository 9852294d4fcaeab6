// The Paho MQTT C++ backend of mqtt::Client. The only file that includes Paho.
//
// Reconnection is ours, not Paho's automatic one, so that it uses capped
// exponential backoff with jitter (thousands of devices must not reconnect in
// lock-step after a broker restart). One worker thread per client runs the
// connect/subscribe sequence; Paho's own thread delivers messages.
#include <mqtt/async_client.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "shared/core/backoff.hpp"
#include "shared/core/log.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::mqtt {
namespace {

class PublishListener : public ::mqtt::iaction_listener {
 public:
  PublishListener(Client::PublishDone done, std::atomic<int>* pending)
      : done_(std::move(done)), pending_(pending) {}

  void on_success(const ::mqtt::token&) override { Finish(OkStatus()); }
  void on_failure(const ::mqtt::token& tok) override {
    Finish(Error(Errc::kUnavailable,
                 "publish failed (code " + std::to_string(tok.get_return_code()) + ")"));
  }

 private:
  void Finish(const Status& st) {
    pending_->fetch_sub(1);
    if (done_) done_(st);
    delete this;  // one listener per publish, owned by itself
  }
  Client::PublishDone done_;
  std::atomic<int>* pending_;
};

class PahoClient final : public Client, public ::mqtt::callback {
 public:
  explicit PahoClient(ClientOptions options)
      : options_(std::move(options)),
        backoff_(options_.min_retry, options_.max_retry, 0.5),
        rng_(std::random_device{}()) {}

  ~PahoClient() override { Stop(); }

  Status Init() {
    try {
      client_ = std::make_unique<::mqtt::async_client>(options_.server_uri, options_.client_id);
      auto ssl = ::mqtt::ssl_options_builder()
                     .trust_store(options_.ca_file)
                     .key_store(options_.cert_file)
                     .private_key(options_.key_file)
                     .enable_server_cert_auth(true)
                     .verify(true)
                     .error_handler([](const std::string& msg) { log::Debug("mqtt tls: ", msg); })
                     .finalize();
      auto builder = ::mqtt::connect_options_builder()
                         .clean_session(options_.clean_session)
                         .keep_alive_interval(options_.keep_alive)
                         .connect_timeout(std::chrono::duration_cast<std::chrono::seconds>(
                             options_.connect_timeout))
                         .max_inflight(std::max(10, options_.max_buffered))
                         // 3.1.1 only: Paho's default falls back to MQTT 3.1
                         // after a timed-out attempt, a second attempt that
                         // outlived our wait for the first and left Paho
                         // connected while we counted a failure.
                         .mqtt_version(MQTTVERSION_3_1_1)
                         .automatic_reconnect(false);
      if (options_.server_uri.rfind("ssl://", 0) == 0) builder.ssl(std::move(ssl));
      if (options_.will) {
        builder.will(::mqtt::message(options_.will->topic, options_.will->payload,
                                     options_.will->qos, options_.will->retained));
      }
      connect_options_ = builder.finalize();
      client_->set_callback(*this);
    } catch (const ::mqtt::exception& e) {
      return Error(Errc::kInvalidArgument, std::string("mqtt client: ") + e.what());
    }
    return OkStatus();
  }

  void SetMessageHandler(MessageHandler handler) override { on_message_ = std::move(handler); }
  void SetConnectionHandler(ConnectionHandler handler) override {
    on_connection_ = std::move(handler);
  }
  void AddSubscription(const std::string& filter, int qos) override {
    std::lock_guard lock(mu_);
    subscriptions_.emplace_back(filter, qos);
  }

  Status Start() override {
    std::lock_guard lock(mu_);
    if (worker_.joinable()) return Error(Errc::kFailedPrecondition, "mqtt client already started");
    stopping_ = false;
    want_connect_ = true;
    worker_ = std::thread([this] { Run(); });
    return OkStatus();
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (!worker_.joinable()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
    try {
      if (client_->is_connected()) client_->disconnect(1000)->wait_for(std::chrono::seconds(3));
    } catch (const ::mqtt::exception& e) {
      log::Debug("mqtt disconnect: ", e.what());
    }
    connected_ = false;
  }

  bool IsConnected() const override { return connected_.load(); }

  Status Publish(const std::string& topic, std::string payload, int qos, bool retained,
                 PublishDone done) override {
    if (!connected_.load()) return Error(Errc::kUnavailable, "not connected to the broker");
    if (pending_.load() >= options_.max_buffered)
      return Error(Errc::kResourceExhausted, "too many publishes waiting for the broker");
    pending_.fetch_add(1);
    auto* listener = new PublishListener(std::move(done), &pending_);
    try {
      auto msg = ::mqtt::make_message(topic, std::move(payload), qos, retained);
      client_->publish(msg, nullptr, *listener);
    } catch (const ::mqtt::exception& e) {
      // Paho did not take the message: the listener will never be called.
      pending_.fetch_sub(1);
      delete listener;
      return Error(Errc::kUnavailable, std::string("publish: ") + e.what());
    }
    return OkStatus();
  }

 private:
  // ::mqtt::callback, on Paho's thread.
  void connection_lost(const std::string& cause) override {
    bool was = connected_.exchange(false);
    if (was && on_connection_)
      on_connection_({false, false, cause.empty() ? "connection lost" : cause});
    {
      std::lock_guard lock(mu_);
      want_connect_ = true;
      delay_next_ = true;
    }
    cv_.notify_all();
  }

  void message_arrived(::mqtt::const_message_ptr msg) override {
    if (!on_message_) return;
    Message m;
    m.topic = msg->get_topic();
    m.payload = msg->get_payload_str();
    m.retained = msg->is_retained();
    m.qos = msg->get_qos();
    on_message_(m);
  }

  void delivery_complete(::mqtt::delivery_token_ptr) override {}

  // The worker: connect, subscribe, report; after a failure or a loss, wait
  // a jittered backoff and try again.
  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || want_connect_; });
      if (stopping_) return;
      if (delay_next_) {
        auto delay = backoff_.Next(std::uniform_real_distribution<double>(0, 1)(rng_));
        log::Debug("mqtt: reconnecting in ", delay.count(), " ms");
        if (cv_.wait_for(lock, delay, [&] { return stopping_; })) return;
      }
      want_connect_ = false;
      auto subs = subscriptions_;
      lock.unlock();
      std::string cause;
      bool session_present = false;
      bool ok = ConnectOnce(subs, &session_present, &cause);
      lock.lock();
      if (stopping_) return;
      if (ok) {
        backoff_.Reset();
        delay_next_ = false;
        connected_ = true;
        lock.unlock();
        if (on_connection_) on_connection_({true, session_present, ""});
        lock.lock();
      } else {
        delay_next_ = true;
        want_connect_ = true;
        lock.unlock();
        if (on_connection_) on_connection_({false, false, cause});
        lock.lock();
      }
    }
  }

  bool ConnectOnce(const std::vector<std::pair<std::string, int>>& subs, bool* session_present,
                   std::string* cause) {
    try {
      // A connection left over from an attempt we gave up on (it completed
      // after our wait): start from a clean slate.
      if (client_->is_connected()) Abandon();
      auto tok = client_->connect(connect_options_);
      if (!tok->wait_for(options_.connect_timeout + std::chrono::seconds(1))) {
        *cause = "connect timed out";
        // Paho may still be connecting: cancel it, or it connects behind our
        // back and the next connect() never completes (found by the
        // reconnect-storm benchmark: a hub that stayed offline for good).
        Abandon();
        return false;
      }
      *session_present = tok->get_connect_response().is_session_present();
      if (!subs.empty()) {
        auto filters = std::make_shared<::mqtt::string_collection>();
        std::vector<int> qos;
        for (const auto& [f, q] : subs) {
          filters->push_back(f);
          qos.push_back(q);
        }
        auto st = client_->subscribe(filters, qos);
        if (*session_present && !options_.await_resubscribe) return true;
        if (!st->wait_for(options_.connect_timeout)) {
          *cause = "subscribe timed out";
          Abandon();
          return false;
        }
      }
      return true;
    } catch (const ::mqtt::exception& e) {
      *cause = e.get_message().empty() ? e.what() : e.get_message();
      if (e.get_reason_code() != 0)
        *cause += " (reason " + std::to_string(e.get_reason_code()) + ")";
      if (client_->is_connected()) Abandon();
      return false;
    }
  }

  // Ends a connection or a connect in progress, without the will's delay:
  // Paho's disconnect also cancels a pending connect. Waits briefly for it.
  void Abandon() {
    try {
      client_->disconnect(0)->wait_for(std::chrono::seconds(2));
    } catch (const ::mqtt::exception& e) {
      log::Debug("mqtt: abandoning the connection: ", e.what());
    }
  }

  ClientOptions options_;
  std::unique_ptr<::mqtt::async_client> client_;
  ::mqtt::connect_options connect_options_;
  MessageHandler on_message_;
  ConnectionHandler on_connection_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
  bool stopping_ = false;                                   // guarded by mu_
  bool want_connect_ = false;                               // guarded by mu_
  bool delay_next_ = false;                                 // guarded by mu_
  std::vector<std::pair<std::string, int>> subscriptions_;  // guarded by mu_
  Backoff backoff_;                                         // guarded by mu_
  std::mt19937_64 rng_;                                     // guarded by mu_

  std::atomic<bool> connected_{false};
  std::atomic<int> pending_{0};
};

}  // namespace

Result<ClientPtr> NewPahoClient(ClientOptions options) {
  if (options.client_id.empty()) return Error(Errc::kInvalidArgument, "mqtt: empty client id");
  auto client = std::make_unique<PahoClient>(std::move(options));
  OUTPOST_TRY(client->Init());
  return ClientPtr(std::move(client));
}

}  // namespace outpost::mqtt
