#include <algorithm>

#include "agent/runtime/supervisor.hpp"

namespace outpost::agent {

Status MemoryProcessRecordStore::Save(const ProcessRecord& record) {
  auto it = std::find_if(records_.begin(), records_.end(),
                         [&](const ProcessRecord& r) { return r.name == record.name; });
  if (it == records_.end()) {
    records_.push_back(record);
  } else {
    *it = record;
  }
  return OkStatus();
}

Status MemoryProcessRecordStore::Remove(const std::string& name) {
  std::erase_if(records_, [&](const ProcessRecord& r) { return r.name == name; });
  return OkStatus();
}

Result<std::vector<ProcessRecord>> MemoryProcessRecordStore::LoadAll() {
  return records_;
}

}  // namespace outpost::agent
