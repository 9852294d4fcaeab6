// Writes the binary seed inputs of the fuzz corpus (tests/e2e/fuzz/corpus/),
// in each target's input format (see the comment at the top of each
// fuzz_*.cpp). The manifest seeds are YAML files checked in as they are.
//
//   build-e2e/bin/fuzz_seed_gen tests/e2e/fuzz/corpus
#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>

#include "outpost.pb.h"

namespace {

namespace v1 = outpost::v1;

void Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary | std::ios::trunc) << bytes;
}

std::string Len16(const std::string& s) {
  std::string out;
  out.push_back(static_cast<char>((s.size() >> 8) & 0xff));
  out.push_back(static_cast<char>(s.size() & 0xff));
  return out + s;
}

std::string Byte(int b) {
  return std::string(1, static_cast<char>(b));
}

v1::WorkloadSpec Spec(const std::string& name) {
  v1::WorkloadSpec w;
  w.set_name(name);
  w.set_kind(v1::WORKLOAD_KIND_PROCESS);
  w.add_command("/bin/sleep");
  w.add_command("100");
  (*w.mutable_env())["LOG_LEVEL"] = "info";
  w.set_restart_policy(v1::RESTART_POLICY_ALWAYS);
  w.set_app(name.substr(0, name.find('.')));
  return w;
}

// hub_ingest: [topic choice][flags][len16 payload]... (choice: id + 7 * leaf;
// ids dev-a=0 dev-b=1; leaves reported=0 events=1 presence=2).
void HubIngest(const std::string& dir) {
  v1::ReportedState r;
  r.set_device_id("dev-a");
  r.set_report_seq(5);
  r.set_observed_generation(1);
  r.set_desired_generation(1);
  auto* w = r.add_workloads();
  w->set_name("app.main");
  w->set_state(v1::WORKLOAD_STATE_RUNNING);
  w->set_pid(4242);
  r.mutable_facts()->set_hostname("dev-a.local");
  r.mutable_facts()->set_arch("amd64");
  Write(dir, "report", Byte(0) + Byte(0) + Len16(r.SerializeAsString()));

  v1::EventBatch b;
  b.set_device_id("dev-a");
  b.set_floor_seq(1);
  for (int i = 1; i <= 3; ++i) {
    auto* e = b.add_events();
    e->set_seq(static_cast<std::uint64_t>(i));
    e->set_type(v1::EVENT_TYPE_WORKLOAD_STARTED);
    e->set_workload("app.main");
    e->set_time_ms(1700000000000 + i);
  }
  Write(dir, "events", Byte(7) + Byte(0) + Len16(b.SerializeAsString()));

  v1::EventBatch gap = b;
  gap.clear_events();
  gap.set_floor_seq(10);
  gap.add_events()->set_seq(12);
  gap.add_events()->set_seq(13);
  Write(dir, "events-gap-floor", Byte(7) + Byte(0) + Len16(gap.SerializeAsString()));

  v1::Presence p;
  p.set_online(true);
  p.set_since_ms(1700000000000);
  p.set_session(99);
  Write(dir, "presence", Byte(2 * 7) + Byte(0) + Len16(p.SerializeAsString()));

  v1::ReportedState ahead = r;
  ahead.set_device_id("dev-b");
  ahead.set_desired_generation(50);
  ahead.set_observed_generation(50);
  v1::EventBatch bb = b;
  bb.set_device_id("dev-b");
  Write(dir, "mixed",
        Byte(1) + Byte(1) + Len16(ahead.SerializeAsString()) + Byte(8) + Byte(3) +
            Len16(bb.SerializeAsString()) + Byte(1 + 14) + Byte(0) + Len16("") + Byte(0) + Byte(1) +
            Len16(r.SerializeAsString()));
  Write(dir, "id-mismatch", Byte(1) + Byte(0) + Len16(r.SerializeAsString()));
  Write(dir, "bad-topic",
        Byte(250) + Len16("outpost/v1/devices/dev-a/reported/x") + Byte(0) +
            Len16(r.SerializeAsString()));
}

// agent_sync: steps; 1 = [1][len16 DesiredState][fix flag], 3 = [3][u32 seq][u64 gen],
// 5 = an event, 6 = [6][u32 ms], 7 = applied.
void AgentSync(const std::string& dir) {
  v1::DesiredState d;
  d.set_device_id("dev-1");
  d.set_generation(1);
  *d.add_workloads() = Spec("app.main");
  *d.add_workloads() = Spec("app.side");
  v1::DesiredState d2 = d;
  d2.set_generation(2);
  d2.mutable_workloads(0)->add_command("--verbose");
  auto* g = d2.add_workloads();
  *g = Spec("other.gpu");
  g->mutable_gpus()->set_count(1);
  g->add_devices("/dev/video0");
  g->mutable_resources()->set_memory_mib(256);
  g->mutable_resources()->set_milli_cpus(1500);
  const std::string u32_seq = std::string("\0\0\0\x02", 4);
  const std::string u64_gen = std::string("\0\0\0\0\0\0\0\x02", 8);
  Write(dir, "apply-two",
        Byte(1) + Len16(d.SerializeAsString()) + Byte(0) + Byte(1) + Len16(d2.SerializeAsString()) +
            Byte(0) + Byte(3) + u32_seq + u64_gen);
  Write(dir, "stale-and-dup",
        Byte(1) + Len16(d2.SerializeAsString()) + Byte(0) + Byte(1) + Len16(d.SerializeAsString()) +
            Byte(0) + Byte(1) + Len16(d2.SerializeAsString()) + Byte(0));
  v1::DesiredState other = d;
  other.set_device_id("dev-2");
  Write(dir, "wrong-device", Byte(1) + Len16(other.SerializeAsString()) + Byte(0));
  Write(dir, "events-and-time",
        Byte(5) + Byte(2) + Len16("app.main") + Len16("exited") + Byte(1) + Byte(1) + Byte(0) +
            Byte(6) + std::string("\0\0\x2a\xf8", 4) + Byte(7) + Byte(1));
  Write(dir, "raw-garbage",
        Byte(0) + Len16("\x0a\x03"
                        "abc"
                        "\x12\x01x"));
}

// enroll: [mode][...]; mode < 96 raw body, 96..223 built
// ([flags][len16 cn][EnrollRequest]), >= 224 target ([method][len16 target][body]).
void Enroll(const std::string& dir) {
  v1::EnrollRequest er;
  er.set_name("store-17");
  (*er.mutable_labels())["region"] = "south";
  er.mutable_facts()->set_hostname("store-17");
  er.mutable_facts()->set_arch("arm64");
  Write(dir, "built-ok", Byte(100) + Byte(7) + Len16("store-17") + er.SerializeAsString());
  Write(dir, "built-taken", Byte(100) + Byte(5) + Len16("taken") + er.SerializeAsString());
  Write(dir, "built-reserved", Byte(100) + Byte(5) + Len16("outpost-hub") + er.SerializeAsString());
  v1::EnrollRequest bad = er;
  (*bad.mutable_labels())["bad key!"] = "v";
  Write(dir, "built-bad-label", Byte(100) + Byte(7) + Len16("store-18") + bad.SerializeAsString());
  v1::EnrollRequest raw = er;
  raw.set_token("abcdef.0123456789abcdef");
  raw.set_csr_pem("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n");
  Write(dir, "raw", Byte(0) + raw.SerializeAsString());
  Write(dir, "target-ca", Byte(230) + Byte(0) + Len16("/v1/ca?x=1&y=%41"));
  Write(dir, "target-admin", Byte(230) + Byte(1) + Len16("/v1/admin/apps") + "name: x");
  Write(dir, "target-healthz", Byte(230) + Byte(0) + Len16("/healthz"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_seed_gen CORPUS_DIR\n";
    return 2;
  }
  const std::string root = argv[1];
  HubIngest(root + "/hub_ingest");
  AgentSync(root + "/agent_sync");
  Enroll(root + "/enroll");
  return 0;
}
