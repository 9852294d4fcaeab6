// Fuzz target: the hub's ingest of device messages (hub/broker/ingest):
// Classify (topic and size checks on the MQTT thread), then
// DeviceIngest::HandleAll (parse, id check, RecordReport / RecordEvents /
// SetPresence on a real hub.db, acks, republish decisions).
//
// Input: up to 8 messages, each: a topic choice byte (which device, which
// leaf, or a raw topic from the input), a flags byte, a payload chunk. With
// flag 1 a payload that parses as the leaf's message gets its device_id set
// to the topic's, so the fuzzer reaches the registry without guessing ids.
//
// Invariants: no message creates a device; a device's contiguous event mark
// and stored report_seq never go down; every ack published parses and
// carries the mark the registry holds.
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hub/broker/ingest.hpp"
#include "hub/registry/registry.hpp"
#include "outpost.pb.h"
#include "shared/core/log.hpp"
#include "tests/e2e/fuzz/fuzz_support.hpp"

namespace {

using namespace outpost;
using outpost::fuzz::Reader;

class NullSink : public hub::broker::DesiredSink {
 public:
  void Publish(const std::vector<hub::registry::DesiredChange>& changes) override {
    published += changes.size();
  }
  void Republish(const std::vector<hub::registry::DesiredRecord>& records) override {
    republished += records.size();
  }
  void Clear(const std::string&) override {}
  std::size_t published = 0;
  std::size_t republished = 0;
};

class RecordingClient : public mqtt::Client {
 public:
  void SetMessageHandler(MessageHandler) override {}
  void SetConnectionHandler(ConnectionHandler) override {}
  void AddSubscription(const std::string&, int) override {}
  Status Start() override { return OkStatus(); }
  void Stop() override {}
  bool IsConnected() const override { return true; }
  Status Publish(const std::string& topic, std::string payload, int, bool, PublishDone) override {
    sent.emplace_back(topic, std::move(payload));
    return OkStatus();
  }
  std::vector<std::pair<std::string, std::string>> sent;
};

constexpr const char* kDevices[] = {"dev-a", "dev-b"};
constexpr int kResetEvery = 4000;

struct World {
  std::string dir;
  std::unique_ptr<hub::registry::Registry> registry;
  NullSink sink;
  RecordingClient client;
  hub::broker::IngestStats stats;
  std::unique_ptr<hub::broker::DeviceIngest> ingest;
  std::int64_t now = 1'700'000'000'000;
  std::uint64_t marks[2] = {0, 0};
  std::uint64_t report_seqs[2] = {0, 0};
  int inputs = 0;

  void Open() {
    ingest.reset();
    registry.reset();
    for (const char* suffix : {"", "-wal", "-shm"})
      ::unlink((dir + "/hub.db" + suffix).c_str());
    auto r = hub::registry::Registry::Open(dir + "/hub.db");
    if (!r.ok()) fuzz::Broken("Registry::Open", r.error().ToString());
    registry = std::move(r).value();
    auto token = registry->CreateToken(std::chrono::hours(1), 10, {{"role", "fuzz"}}, now);
    if (!token.ok()) fuzz::Broken("CreateToken", token.error().ToString());
    for (const char* id : kDevices) {
      hub::registry::EnrollRequest req;
      req.token = token->token;
      req.requested_name = id;
      auto e = registry->EnrollDevice(req, now);
      if (!e.ok() || e->device_id != id) fuzz::Broken("EnrollDevice", id);
    }
    ingest = std::make_unique<hub::broker::DeviceIngest>(registry.get(), &sink, &client, &stats,
                                                         [this] { return now; });
    marks[0] = marks[1] = 0;
    report_seqs[0] = report_seqs[1] = 0;
  }
};

World& TheWorld() {
  static World* w = [] {
    fuzz::QuietLogs();
    auto* world = new World;
    world->dir = fuzz::ScratchDir("hub-ingest");
    world->Open();
    return world;
  }();
  return *w;
}

std::string Topic(Reader& in) {
  const std::uint8_t choice = in.Byte();
  static const char* kLeaves[] = {"reported", "events", "presence", "desired", "ack", ""};
  static const char* kIds[] = {"dev-a", "dev-b", "nobody", "outpost-hub", "UPPER", "a/b", ""};
  if (choice >= 240) return in.Chunk(300);  // a raw topic
  return std::string("outpost/v1/devices/") + kIds[choice % 7] + "/" + kLeaves[(choice / 7) % 6];
}

// With the fix flag: the payload, when it parses as the leaf's message, made
// to name the topic's device.
std::string FixId(const std::string& topic, std::string payload) {
  std::string id;
  std::string leaf;
  if (!mqtt::topics::Parse(topic, &id, &leaf)) return payload;
  if (leaf == "reported") {
    outpost::v1::ReportedState r;
    if (r.ParseFromString(payload)) {
      r.set_device_id(id);
      return r.SerializeAsString();
    }
  } else if (leaf == "events") {
    outpost::v1::EventBatch b;
    if (b.ParseFromString(payload)) {
      b.set_device_id(id);
      return b.SerializeAsString();
    }
  }
  return payload;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = TheWorld();
  if (++w.inputs % kResetEvery == 0) w.Open();
  Reader in(data, size);
  std::vector<hub::broker::DeviceMessage> batch;
  for (int i = 0; i < 8 && !in.empty(); ++i) {
    mqtt::Message m;
    m.topic = Topic(in);
    const std::uint8_t flags = in.Byte();
    m.payload = in.Chunk(300 * 1024);
    if (flags & 1) m.payload = FixId(m.topic, std::move(m.payload));
    if (flags & 2) w.now += static_cast<std::int64_t>(in.Byte()) * 1000;
    hub::broker::Drop why{};
    auto classified = hub::broker::Classify(m, &why);
    if (classified.has_value()) {
      OUTPOST_FUZZ_CHECK(classified->device_id != "outpost-hub", m.topic);
      batch.push_back(std::move(*classified));
    }
  }
  w.client.sent.clear();
  w.ingest->HandleAll(batch);

  auto devices = w.registry->ListDevices();
  OUTPOST_FUZZ_CHECK(devices.ok(), "ListDevices failed");
  OUTPOST_FUZZ_CHECK(devices->size() == 2, "a message created a device");
  for (int i = 0; i < 2; ++i) {
    auto mark = w.registry->ContiguousMark(kDevices[i]);
    OUTPOST_FUZZ_CHECK(mark.ok(), "ContiguousMark failed");
    OUTPOST_FUZZ_CHECK(*mark >= w.marks[i], "the contiguous mark went down");
    w.marks[i] = *mark;
    auto d = w.registry->GetDevice(kDevices[i]);
    OUTPOST_FUZZ_CHECK(d.ok(), "GetDevice failed");
    OUTPOST_FUZZ_CHECK(d->report_seq >= w.report_seqs[i], "the stored report_seq went down");
    w.report_seqs[i] = d->report_seq;
  }
  for (const auto& [topic, payload] : w.client.sent) {
    std::string id;
    std::string leaf;
    OUTPOST_FUZZ_CHECK(mqtt::topics::Parse(topic, &id, &leaf) && leaf == "ack", topic);
    outpost::v1::Ack ack;
    OUTPOST_FUZZ_CHECK(ack.ParseFromString(payload), "an ack does not parse");
    int index = id == kDevices[0] ? 0 : 1;
    OUTPOST_FUZZ_CHECK(id == kDevices[index], "an ack for an unknown device: " + id);
    OUTPOST_FUZZ_CHECK(ack.acked_seq() <= w.marks[index], "ack beyond the registry's mark");
  }
  return 0;
}
