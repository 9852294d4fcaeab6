// Fuzz target: the agent's sync engine (agent/sync) with what arrives from
// the broker: desired documents (size check, SignedDesiredState parse,
// signer chain and signature, DesiredState parse, device id, spec
// validation, generations) and acks, interleaved with the daemon's inputs
// (applied, ticks, events, reconnects).
//
// A fuzzer cannot forge an ECDSA signature, so besides raw payloads the
// input may give a DesiredState that the harness signs with a signer the
// engine trusts (a CA and an `outpost-signer` certificate made at start):
// that reaches spec validation, storage and apply with fuzzed documents.
//
// Invariants: the held generation never goes down and the applied one never
// passes it; an apply request is for the held generation and only carries
// specs that pass validation; everything the engine publishes parses and is
// within what the hub accepts (reports <= 64 KiB, event batches <= 256 KiB
// and <= 500 events, presence <= 1 KiB).
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "agent/sync/engine.hpp"
#include "agent/sync/sync_store.hpp"
#include "agent/sync/validate.hpp"
#include "outpost.pb.h"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/mqtt/mqtt_client.hpp"
#include "tests/e2e/fuzz/fuzz_support.hpp"

namespace {

using namespace outpost;
using outpost::fuzz::Reader;

constexpr const char* kDevice = "dev-1";

struct Trust {
  std::string ca_pem;
  std::unique_ptr<crypto::PrivateKey> signer_key;
  std::string signer_der;
  std::int64_t start_unix_ms = 0;
};

Trust& TheTrust() {
  static Trust* t = [] {
    fuzz::QuietLogs();
    auto* trust = new Trust;
    auto ca_key = crypto::PrivateKey::Generate();
    auto key = crypto::PrivateKey::Generate();
    if (!ca_key.ok() || !key.ok()) fuzz::Broken("key generation", "");
    auto ca = crypto::CreateSelfSignedCa(*ca_key, "Fuzz CA", 3650);
    if (!ca.ok()) fuzz::Broken("CA", ca.error().ToString());
    crypto::CertSpec spec;
    spec.common_name = "outpost-signer";
    spec.usage = crypto::CertUsage::kSigning;
    spec.validity_days = 3650;
    auto cert = crypto::IssueCertificate(*key->PublicKeyPem(), spec, *ca_key, *ca);
    if (!cert.ok()) fuzz::Broken("signer certificate", cert.error().ToString());
    auto der = crypto::PemToDer(*cert);
    if (!der.ok()) fuzz::Broken("PemToDer", der.error().ToString());
    trust->ca_pem = *ca;
    trust->signer_key = std::make_unique<crypto::PrivateKey>(std::move(*key));
    trust->signer_der = *der;
    trust->start_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    return trust;
  }();
  return *t;
}

// Signing costs an ECDSA signature per input; most mutations leave the
// document as it was and change another step, so signatures are cached.
std::string SignedDocument(const std::string& document) {
  Trust& t = TheTrust();
  static std::unordered_map<std::string, std::string> cache;
  if (auto it = cache.find(document); it != cache.end()) return it->second;
  if (cache.size() >= 4096) cache.clear();
  auto sig = crypto::Sign(*t.signer_key, document);
  if (!sig.ok()) fuzz::Broken("Sign", sig.error().ToString());
  outpost::v1::SignedDesiredState s;
  s.set_document(document);
  s.set_signature(*sig);
  s.set_signer_certificate(t.signer_der);
  return cache[document] = s.SerializeAsString();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Trust& trust = TheTrust();
  Reader in(data, size);
  agent::sync::MemorySyncStore store(1000);
  agent::sync::EngineConfig config;
  config.device_id = kDevice;
  config.ca_pem = trust.ca_pem;
  agent::sync::Engine engine(config, store);
  agent::sync::Now now{1000, trust.start_unix_ms};
  if (!engine.Start(now).ok()) fuzz::Broken("Start", "");
  engine.OnConnected(false, 42, now);

  const std::string desired = mqtt::topics::Desired(kDevice);
  const std::string ack = mqtt::topics::Ack(kDevice);
  std::uint64_t held = 0;
  for (int step = 0; step < 12 && !in.empty(); ++step) {
    switch (in.Pick(8)) {
      case 0:  // raw bytes on the desired topic
        engine.OnMessage(desired, in.Chunk(1100 * 1024), now);
        break;
      case 1: {  // a document the trusted signer signed, fuzzed content
        std::string document = in.Chunk(64 * 1024);
        if (in.Bool()) {
          outpost::v1::DesiredState d;
          if (d.ParseFromString(document)) {
            d.set_device_id(kDevice);
            if (d.generation() == 0) d.set_generation(held + 1);
            document = d.SerializeAsString();
          }
        }
        engine.OnMessage(desired, SignedDocument(document), now);
        break;
      }
      case 2:  // an ack
        engine.OnMessage(ack, in.Chunk(2048), now);
        break;
      case 3: {  // an ack for a plausible seq
        outpost::v1::Ack a;
        a.set_acked_seq(in.U32() % (store.Marks().next_seq + 3));
        a.set_hub_generation(in.U64());
        engine.OnMessage(ack, a.SerializeAsString(), now);
        break;
      }
      case 4:  // another topic
        engine.OnMessage(in.Chunk(200), in.Chunk(1024), now);
        break;
      case 5: {  // the daemon: an event, a reconnect or a disconnect
        outpost::v1::Event e;
        e.set_type(static_cast<outpost::v1::EventType>(in.Pick(14)));
        e.set_workload(in.Chunk(300));
        e.set_message(in.Chunk(4096));
        engine.QueueEvent(e, now);
        if (in.Bool()) engine.OnDisconnected(now);
        if (in.Bool()) engine.OnConnected(in.Bool(), in.U64(), now);
        break;
      }
      case 6: {  // time passes
        const std::int64_t ms = static_cast<std::int64_t>(in.U32() % 60000);
        now.steady_ms += ms;
        now.unix_ms += ms;
        engine.OnTick(now);
        break;
      }
      default: {  // the runtime applied something (maybe a wrong generation)
        engine.OnApplied(in.Bool() ? store.HeldGeneration() : in.U64() % 1000, now);
        break;
      }
    }
    // What the engine asks for.
    if (auto apply = engine.TakeApply(); apply.has_value()) {
      OUTPOST_FUZZ_CHECK(apply->generation == store.HeldGeneration(),
                         "apply request for a generation that is not held");
      for (const auto& spec : apply->workloads) {
        OUTPOST_FUZZ_CHECK(agent::sync::ValidateWorkload(spec).ok(),
                           "an invalid spec reached the runtime: " + spec.name());
      }
      engine.OnApplied(apply->generation, now);
    }
    OUTPOST_FUZZ_CHECK(store.HeldGeneration() >= held, "the held generation went down");
    held = store.HeldGeneration();
    OUTPOST_FUZZ_CHECK(store.AppliedGeneration() <= held, "applied passed held");
    const auto marks = store.Marks();
    OUTPOST_FUZZ_CHECK(marks.floor_seq <= marks.next_seq, "floor above next seq");
    for (const auto& p : engine.TakePublishes()) {
      std::string id;
      std::string leaf;
      OUTPOST_FUZZ_CHECK(mqtt::topics::Parse(p.topic, &id, &leaf) && id == kDevice, p.topic);
      if (leaf == "reported") {
        outpost::v1::ReportedState r;
        OUTPOST_FUZZ_CHECK(p.payload.size() <= 64u << 10, "report over 64 KiB");
        OUTPOST_FUZZ_CHECK(r.ParseFromString(p.payload) && r.device_id() == kDevice, "report");
        OUTPOST_FUZZ_CHECK(r.observed_generation() <= r.desired_generation(), "observed > held");
      } else if (leaf == "events") {
        outpost::v1::EventBatch b;
        OUTPOST_FUZZ_CHECK(p.payload.size() <= 256u << 10, "event batch over 256 KiB");
        OUTPOST_FUZZ_CHECK(b.ParseFromString(p.payload) && b.device_id() == kDevice, "batch");
        OUTPOST_FUZZ_CHECK(b.events_size() <= 500, "more than 500 events");
        for (int i = 1; i < b.events_size(); ++i) {
          OUTPOST_FUZZ_CHECK(b.events(i).seq() == b.events(i - 1).seq() + 1, "events out of order");
        }
      } else if (leaf == "presence") {
        outpost::v1::Presence pr;
        OUTPOST_FUZZ_CHECK(p.payload.size() <= 1024 && pr.ParseFromString(p.payload), "presence");
      } else {
        fuzz::Broken("publish on an unexpected leaf", p.topic);
      }
    }
  }
  return 0;
}
