// The simulator's state dir: sim.db (shared/store) holds every enrolled
// simulated device (id, key, certificate) and the counters a real agent keeps
// in agent.db (report_seq, event seqs, generations), so that one enrollment
// serves many benchmark runs and the hub never sees a report_seq or an event
// seq twice.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::store {
class Database;
}

namespace outpost::hub::sim {

// What a device remembers between runs (a real agent keeps it in agent.db).
struct DeviceCounters {
  std::uint64_t report_seq = 0;  // the last report_seq used (or reserved)
  std::uint64_t next_seq = 1;    // the seq the next event gets
  std::uint64_t acked_seq = 0;   // the highest seq the hub acknowledged
  std::uint64_t held_generation = 0;
  std::uint64_t applied_generation = 0;
};

struct DeviceRecord {
  std::string id;
  std::string key_pem;
  std::string cert_pem;
  DeviceCounters counters;
};

struct FleetMeta {
  std::string hub_url;     // https://host:port
  std::string broker_url;  // ssl://host:port, from the enrollment answer
  std::string ca_pem;      // the hub CA pinned at enrollment
};

class FleetStore {
 public:
  static constexpr const char* kFileName = "sim.db";
  // Every report_seq handed out in a run is below the value reserved at its
  // start, so a run that crashes never makes the next one repeat a report_seq.
  static constexpr std::uint64_t kReportSeqReserve = 1u << 20;

  // Opens (creating) <state_dir>/sim.db; creates state_dir (0700) if missing.
  static Result<std::unique_ptr<FleetStore>> Open(const std::string& state_dir);
  ~FleetStore();

  Result<FleetMeta> Meta();
  Status SetMeta(const FleetMeta& meta);

  Result<std::size_t> Count();
  // The first `limit` devices in enrollment order (0: all).
  Result<std::vector<DeviceRecord>> Load(std::size_t limit);
  Status Insert(const std::vector<DeviceRecord>& devices);
  // Reserves kReportSeqReserve report_seqs for every device (one commit);
  // call before a run and start from the loaded value + 1.
  Status ReserveReportSeqs();
  // Stores the counters of the given devices (one commit).
  Status SaveCounters(const std::vector<std::pair<std::string, DeviceCounters>>& counters);

 private:
  explicit FleetStore(std::unique_ptr<store::Database> db);
  std::unique_ptr<store::Database> db_;
};

}  // namespace outpost::hub::sim
