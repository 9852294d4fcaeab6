// A bounded queue of messages from many devices, served round-robin: each
// device has its own FIFO of at most `per_key` messages, the whole queue holds
// at most `total` messages and `total_bytes` payload bytes. A device that
// floods fills only its own FIFO (further messages are dropped and counted)
// and gets one turn in N when N devices are waiting, so it can neither grow
// the hub's memory nor delay the others. Not thread-safe (the broker link
// locks around it).
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

namespace outpost::hub::broker {

template <typename Item>
class FairQueue {
 public:
  FairQueue(std::size_t per_key, std::size_t total, std::size_t total_bytes)
      : per_key_(per_key), total_(total), total_bytes_(total_bytes) {}

  // False (and the item is dropped) when the key's FIFO or the queue is full.
  bool Push(const std::string& key, Item item, std::size_t bytes) {
    if (size_ >= total_ || bytes_ + bytes > total_bytes_) return false;
    auto& fifo = fifos_[key];
    if (fifo.size() >= per_key_) return false;
    if (fifo.empty()) ready_.push_back(key);
    fifo.push_back(Entry{std::move(item), bytes});
    ++size_;
    bytes_ += bytes;
    return true;
  }

  // The next item, taking keys in turn.
  std::optional<Item> Pop() {
    while (!ready_.empty()) {
      std::string key = std::move(ready_.front());
      ready_.pop_front();
      auto it = fifos_.find(key);
      if (it == fifos_.end() || it->second.empty()) continue;
      Entry entry = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) {
        fifos_.erase(it);
      } else {
        ready_.push_back(std::move(key));
      }
      --size_;
      bytes_ -= entry.bytes;
      return std::move(entry.item);
    }
    return std::nullopt;
  }

  std::size_t size() const { return size_; }
  std::size_t bytes() const { return bytes_; }
  bool empty() const { return size_ == 0; }
  std::size_t keys() const { return fifos_.size(); }

 private:
  struct Entry {
    Item item;
    std::size_t bytes = 0;
  };
  std::size_t per_key_;
  std::size_t total_;
  std::size_t total_bytes_;
  std::unordered_map<std::string, std::deque<Entry>> fifos_;
  std::deque<std::string> ready_;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace outpost::hub::broker
