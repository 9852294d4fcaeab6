#include "agent/sync/sync_store.hpp"

#include <algorithm>

namespace outpost::agent::sync {

std::uint64_t RowsToDrop(std::uint64_t depth, std::uint64_t max_events) {
  if (max_events < 2) max_events = 2;
  if (depth < max_events) return 0;
  // Room for the new event and the EVENTS_DROPPED event.
  std::uint64_t needed = depth + 2 - max_events;
  std::uint64_t chunk = std::max<std::uint64_t>(max_events / 20, 1);
  return std::min(depth, std::max(needed, chunk));
}

OutboxMarks MemorySyncStore::Marks() const {
  OutboxMarks m;
  m.depth = rows_.size();
  m.next_seq = next_seq_;
  m.acked_seq = acked_seq_;
  m.floor_seq = rows_.empty() ? next_seq_ : rows_.front().seq;
  m.dropped_total = dropped_total_;
  return m;
}

Result<std::optional<HeldDesired>> MemorySyncStore::LoadHeld() {
  if (!has_held_) return std::optional<HeldDesired>();
  return std::optional<HeldDesired>(held_);
}

Status MemorySyncStore::StoreDesired(std::uint64_t generation, std::string_view signed_bytes,
                                     std::string_view /*document_bytes*/,
                                     const std::vector<outpost::v1::WorkloadSpec>& workloads) {
  if (generation <= held_.generation)
    return Error(Errc::kFailedPrecondition, "generation " + std::to_string(generation) +
                                                " is not above the held " +
                                                std::to_string(held_.generation));
  held_.generation = generation;
  held_.workloads = workloads;
  has_held_ = true;
  signed_ = std::string(signed_bytes);
  return OkStatus();
}

Status MemorySyncStore::MarkApplied(std::uint64_t generation, outpost::v1::Event applied_event) {
  if (generation > held_.generation)
    return Error(Errc::kFailedPrecondition, "cannot apply generation " +
                                                std::to_string(generation) + " above the held " +
                                                std::to_string(held_.generation));
  applied_ = generation;
  (void)Append(std::move(applied_event));
  return OkStatus();
}

Status MemorySyncStore::CountIgnored(Ignored kind) {
  if (kind == Ignored::kStale)
    ++counters_.stale;
  else
    ++counters_.duplicate;
  return OkStatus();
}

Status MemorySyncStore::RecordRejected(outpost::v1::Event rejected_event) {
  ++counters_.rejected;
  (void)Append(std::move(rejected_event));
  return OkStatus();
}

Result<std::uint64_t> MemorySyncStore::NextReportSeq() {
  return ++report_seq_;
}

std::uint64_t MemorySyncStore::AppendOne(outpost::v1::Event event) {
  std::uint64_t seq = next_seq_++;
  event.set_seq(seq);
  rows_.push_back({seq, event.SerializeAsString()});
  return seq;
}

Result<std::uint64_t> MemorySyncStore::Append(outpost::v1::Event event) {
  std::uint64_t drop = RowsToDrop(rows_.size(), max_events_);
  if (drop > 0) {
    rows_.erase(rows_.begin(), rows_.begin() + static_cast<std::ptrdiff_t>(drop));
    dropped_total_ += drop;
    outpost::v1::Event dropped;
    dropped.set_type(outpost::v1::EVENT_TYPE_EVENTS_DROPPED);
    dropped.set_time_ms(event.time_ms());
    dropped.set_dropped(drop);
    dropped.set_message("outbox full: dropped the " + std::to_string(drop) + " oldest events");
    AppendOne(std::move(dropped));
  }
  return AppendOne(std::move(event));
}

Result<std::vector<OutboxRow>> MemorySyncStore::ReadOutbox(std::uint64_t from_seq,
                                                           std::size_t max_events,
                                                           std::size_t max_bytes) {
  std::vector<OutboxRow> out;
  std::size_t bytes = 0;
  for (const auto& row : rows_) {
    if (row.seq < from_seq) continue;
    if (out.size() >= max_events) break;
    if (!out.empty() && bytes + row.bytes.size() > max_bytes) break;
    bytes += row.bytes.size();
    out.push_back(row);
  }
  return out;
}

Status MemorySyncStore::Ack(std::uint64_t acked_seq) {
  if (next_seq_ > 0 && acked_seq >= next_seq_) acked_seq = next_seq_ - 1;
  if (acked_seq <= acked_seq_) return OkStatus();
  acked_seq_ = acked_seq;
  auto it = std::find_if(rows_.begin(), rows_.end(),
                         [&](const OutboxRow& r) { return r.seq > acked_seq; });
  rows_.erase(rows_.begin(), it);
  return OkStatus();
}

}  // namespace outpost::agent::sync
