#include "hub/server/hub.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "hub/broker/crl.hpp"
#include "hub/broker/ingest.hpp"
#include "hub/broker/link.hpp"
#include "hub/broker/publisher.hpp"
#include "hub/broker/signer.hpp"
#include "hub/init/config.hpp"
#include "hub/init/layout.hpp"
#include "hub/registry/registry.hpp"
#include "hub/server/api.hpp"
#include "hub/server/https_server.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::hub::server {

namespace asio = boost::asio;

namespace {

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::string> ReadSecret(const std::string& path, std::size_t max = 64 << 10) {
  auto text = fs::ReadFile(path, max);
  if (!text.ok()) return text.error().WithContext("reading " + path);
  return text;
}

// The one thread that owns the Registry. Tasks run in the order posted.
class StateLoop {
 public:
  explicit StateLoop(registry::Registry* registry) : registry_(registry) {}
  ~StateLoop() { Stop(); }

  void Start() {
    thread_ = std::thread([this] {
      for (;;) {
        try {
          io_.run();
          return;
        } catch (const std::exception& e) {
          log::Error("state thread: unexpected exception: ", e.what());
        }
      }
    });
  }
  void Post(std::function<void(registry::Registry&)> task) {
    asio::post(io_, [this, task = std::move(task)] { task(*registry_); });
  }
  // Stops after the task running now; queued tasks are dropped.
  void Stop() {
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  registry::Registry* registry_;
  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{
      asio::make_work_guard(io_)};
  std::thread thread_;
};

// The transport-side handler: answers what needs no state at once (the CA,
// bad admin tokens) and posts the rest to the state thread.
class ApiDispatcher : public RequestHandler {
 public:
  ApiDispatcher(Api* api, StateLoop* state, std::string admin_token, std::string ca_pem)
      : api_(api),
        state_(state),
        admin_token_(std::move(admin_token)),
        ca_pem_(std::move(ca_pem)) {}

  void Handle(HttpRequest request, Respond respond) override {
    if (request.path == "/v1/ca" && request.method == "GET") {
      return respond(HttpResponse{200, "application/x-pem-file", ca_pem_});
    }
    if (IsAdminPath(request.path)) {
      if (auto denied = CheckAdminAuth(request, admin_token_)) return respond(std::move(*denied));
    }
    Api* api = api_;
    state_->Post([api, request = std::move(request), respond = std::move(respond)](
                     registry::Registry&) { respond(api->Handle(request)); });
  }

 private:
  Api* api_;
  StateLoop* state_;
  std::string admin_token_;
  std::string ca_pem_;
};

}  // namespace

struct Hub::Impl {
  HubConfig config;
  std::unique_ptr<registry::Registry> registry;
  std::optional<crypto::PrivateKey> ca_key;
  std::unique_ptr<broker::DesiredSigner> signer;
  std::unique_ptr<broker::FileCrlPublisher> crl;
  mqtt::ClientPtr mqtt;
  std::unique_ptr<StateLoop> state;
  broker::IngestStats stats;
  std::unique_ptr<broker::DesiredPublisher> publisher;
  std::unique_ptr<broker::DeviceIngest> ingest;
  std::unique_ptr<broker::BrokerLink> link;
  std::unique_ptr<Api> api;
  std::unique_ptr<ApiDispatcher> dispatcher;
  std::unique_ptr<HttpsServer> https;
  bool stopped = false;

  void Stop() {
    if (stopped) return;
    stopped = true;
    // No new requests; the io thread is gone, its io_context stays until the
    // end so that answers still posted to it are safe.
    if (https) https->Stop();
    // No new device messages or acknowledgements.
    if (link) link->Stop();
    if (publisher) publisher->Stop();
    // Queued state work is dropped; what it would have answered is gone.
    if (state) state->Stop();
    // The MQTT client goes before the state loop: a callback it still makes
    // while being destroyed may post to the (stopped) loop, which must exist.
    mqtt.reset();
    state.reset();
  }
};

Hub::Hub(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Hub::~Hub() {
  Stop();
}

void Hub::Stop() {
  if (impl_) impl_->Stop();
}

std::uint16_t Hub::api_port() const {
  return impl_->https ? impl_->https->port() : 0;
}

Result<std::unique_ptr<Hub>> Hub::Start(const ServeOptions& options) {
  std::string data_dir = options.data_dir;
  std::string config_path = options.config_path;
  if (data_dir.empty()) {
    data_dir = config_path.empty() ? std::string(kDefaultDataDir) : fs::DirName(config_path);
  }
  DataLayout layout(data_dir);
  if (config_path.empty()) config_path = layout.HubYaml();
  if (!fs::Exists(config_path)) {
    return Error(Errc::kNotFound, config_path +
                                      " does not exist; run `outpost-hub init --data-dir " +
                                      data_dir + " --hostname NAME` first");
  }
  auto impl = std::make_unique<Impl>();
  OUTPOST_ASSIGN_OR_RETURN(impl->config, LoadHubConfig(config_path));
  impl->config.data_dir = data_dir;
  const HubConfig& cfg = impl->config;
  log::Level level;
  if (log::ParseLevel(cfg.log_level, &level)) log::SetLevel(level);

  OUTPOST_ASSIGN_OR_RETURN(std::string ca_pem, ReadSecret(layout.CaCert()));
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_key_pem, ReadSecret(layout.CaKey()));
  OUTPOST_ASSIGN_OR_RETURN(std::string api_cert, ReadSecret(layout.ApiCert()));
  OUTPOST_ASSIGN_OR_RETURN(std::string api_key, ReadSecret(layout.ApiKey()));
  OUTPOST_ASSIGN_OR_RETURN(std::string signing_key, ReadSecret(layout.SigningKey()));
  OUTPOST_ASSIGN_OR_RETURN(std::string signer_cert, ReadSecret(layout.SignerCert()));
  OUTPOST_ASSIGN_OR_RETURN(std::string admin_token, ReadSecret(layout.AdminToken(), 4096));
  while (!admin_token.empty() &&
         (admin_token.back() == '\n' || admin_token.back() == '\r' || admin_token.back() == ' ')) {
    admin_token.pop_back();
  }
  if (admin_token.size() < 16) {
    return Error(Errc::kFailedPrecondition, layout.AdminToken() + " holds no usable token");
  }
  auto ca_key = crypto::PrivateKey::FromPem(ca_key_pem);
  if (!ca_key.ok()) return ca_key.error().WithContext(layout.CaKey());
  impl->ca_key.emplace(std::move(*ca_key));
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_hash, crypto::SpkiSha256(ca_pem));
  auto signer = broker::DesiredSigner::Load(signing_key, signer_cert);
  if (!signer.ok()) return signer.error().WithContext(layout.Path("signing.*"));
  impl->signer = std::move(*signer);

  registry::Options reg_options;
  reg_options.hub_instance = cfg.instance;
  auto reg = registry::Registry::Open(layout.HubDb(), reg_options);
  if (!reg.ok()) return reg.error().WithContext("opening " + layout.HubDb());
  impl->registry = std::move(*reg);

  // A fresh CRL at every start: it refreshes nextUpdate and repairs a lost file.
  impl->crl = std::make_unique<broker::FileCrlPublisher>(ca_key_pem, ca_pem, layout.Crl(),
                                                         layout.MosquittoPid());
  {
    auto serials = impl->registry->RevokedSerials();
    if (!serials.ok()) return serials.error().WithContext("reading revoked serials");
    auto written = impl->crl->Update(*serials);
    if (!written.ok()) return written.error().WithContext("writing " + layout.Crl());
  }

  mqtt::ClientOptions mo;
  mo.server_uri = cfg.broker_url;
  mo.client_id = std::string(kHubIdentity) + "-" + cfg.instance;
  mo.ca_file = layout.CaCert();
  mo.cert_file = layout.HubCert();
  mo.key_file = layout.HubKey();
  mo.clean_session = false;
  // A resumed session still holds the subscriptions: the hub does not wait
  // for the SUBACK of their renewal (it comes after every device's retained
  // presence, and after a broker restart behind a reconnecting fleet's
  // handshakes). The renewal's retained presence still repairs what a killed
  // hub had received and not stored.
  mo.await_resubscribe = false;
  mo.min_retry = std::chrono::milliseconds(cfg.broker_reconnect_min_ms);
  mo.max_retry = std::chrono::milliseconds(cfg.broker_reconnect_max_ms);
  // QoS 1 publishes waiting for the broker's ack: acks to devices are fire and
  // forget, and when a whole fleet answers a rollout at once, one is waiting
  // per device (a full buffer drops the ack, and the device resends its events
  // only after 10 s). Below 65535, the MQTT packet ids there are.
  mo.max_buffered = 60000;
  auto client = mqtt::NewPahoClient(mo);
  if (!client.ok()) return client.error().WithContext("creating the MQTT client");
  impl->mqtt = std::move(*client);

  impl->state = std::make_unique<StateLoop>(impl->registry.get());
  StateLoop* state = impl->state.get();
  auto post = [state](std::function<void(registry::Registry&)> task) {
    state->Post(std::move(task));
  };
  impl->publisher =
      std::make_unique<broker::DesiredPublisher>(impl->mqtt.get(), impl->signer.get(), post);
  impl->ingest = std::make_unique<broker::DeviceIngest>(impl->registry.get(), impl->publisher.get(),
                                                        impl->mqtt.get(), &impl->stats, NowMs);
  impl->link = std::make_unique<broker::BrokerLink>(impl->mqtt.get(), impl->publisher.get(),
                                                    impl->ingest.get(), &impl->stats, post);

  ApiContext ctx;
  ctx.registry = impl->registry.get();
  ctx.desired = impl->publisher.get();
  ctx.crl = impl->crl.get();
  ctx.ca_key = &*impl->ca_key;
  ctx.ca_pem = ca_pem;
  ctx.ca_hash = ca_hash;
  ctx.public_hub_url = cfg.public_hub_url;
  ctx.public_broker_url = cfg.public_broker_url;
  ctx.device_cert_days = cfg.device_cert_days;
  ctx.now_ms = NowMs;
  broker::BrokerLink* link = impl->link.get();
  ctx.health = [link] { return link->HealthJson(); };
  impl->api = std::make_unique<Api>(std::move(ctx));
  impl->dispatcher = std::make_unique<ApiDispatcher>(impl->api.get(), state, admin_token, ca_pem);

  impl->state->Start();
  impl->publisher->Start();
  // Documents stored but never acknowledged by the broker (the hub stopped
  // before the ack): they go out as soon as the link is up.
  broker::DesiredPublisher* publisher = impl->publisher.get();
  state->Post([publisher](registry::Registry& registry) {
    auto records = registry.UnpublishedDesired();
    if (records.ok()) {
      publisher->Republish(*records);
    } else {
      log::Error("reading unpublished documents failed: ", records.error().ToString());
    }
    // Devices last seen behind their document: the report saying they caught
    // up may have been in this hub's ingest queue when it stopped (the broker
    // counts a QoS 1 message delivered once the client has it, before it is
    // committed), and agents report only on change. A document sent again
    // makes an agent report (a duplicate document is answered with a report).
    // Found by tests/e2e (E2eFleet.HubKilledMidRolloutLosesAndSkipsNoGeneration).
    auto devices = registry.ListDevices();
    if (!devices.ok()) {
      log::Error("listing devices failed: ", devices.error().ToString());
      return;
    }
    std::vector<registry::DesiredRecord> behind;
    for (const auto& d : *devices) {
      if (d.revoked || d.observed_generation >= d.desired_generation) continue;
      auto record = registry.GetDesired(d.id);
      if (record.ok() && record->published_generation >= record->generation)
        behind.push_back(std::move(*record));  // unpublished ones went out above
    }
    if (!behind.empty()) {
      log::Info("sending ", behind.size(), " document(s) again to devices behind them");
      publisher->Republish(behind);
    }
  });
  if (Status s = impl->link->Start(); !s.ok()) {
    impl->Stop();
    return s.error().WithContext("starting the MQTT client");
  }

  HttpsServerOptions ho;
  ho.listen_address = cfg.api_listen;
  ho.port = static_cast<std::uint16_t>(cfg.api_port);
  ho.cert_pem = api_cert;
  ho.key_pem = api_key;
  auto https = HttpsServer::Start(ho, impl->dispatcher.get());
  if (!https.ok()) {
    impl->Stop();
    return https.error();
  }
  impl->https = std::move(*https);
  log::Info("outpost-hub ", OUTPOST_VERSION, " serving https://", UrlHost(cfg.api_listen), ":",
            impl->https->port(), " (public ", cfg.public_hub_url, "), broker ", cfg.broker_url,
            ", data ", data_dir);
  return std::unique_ptr<Hub>(new Hub(std::move(impl)));
}

}  // namespace outpost::hub::server
