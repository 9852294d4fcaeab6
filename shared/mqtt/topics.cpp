#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::mqtt::topics {
namespace {
constexpr std::string_view kPrefix = "outpost/v1/devices/";

std::string Make(const std::string& id, std::string_view leaf) {
  std::string t(kPrefix);
  t += id;
  t += '/';
  t += leaf;
  return t;
}
}  // namespace

std::string Desired(const std::string& id) {
  return Make(id, "desired");
}
std::string Reported(const std::string& id) {
  return Make(id, "reported");
}
std::string Events(const std::string& id) {
  return Make(id, "events");
}
std::string Ack(const std::string& id) {
  return Make(id, "ack");
}
std::string Presence(const std::string& id) {
  return Make(id, "presence");
}

bool Parse(const std::string& topic, std::string* device_id, std::string* leaf) {
  if (topic.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  auto rest = std::string_view(topic).substr(kPrefix.size());
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) return false;
  auto id = rest.substr(0, slash);
  auto tail = rest.substr(slash + 1);
  if (tail.find('/') != std::string_view::npos || tail.empty()) return false;
  if (!ValidDeviceId(std::string(id))) return false;
  *device_id = std::string(id);
  *leaf = std::string(tail);
  return true;
}

bool ValidDeviceId(const std::string& id) {
  if (id.empty() || id.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(id.front()) || !alnum(id.back())) return false;
  for (char c : id)
    if (!alnum(c) && c != '-') return false;
  return true;
}

}  // namespace outpost::mqtt::topics
