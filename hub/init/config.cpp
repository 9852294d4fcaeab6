#include "hub/init/config.hpp"

#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <set>
#include <sstream>

#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"

namespace outpost::hub {
namespace {

// A JSON string literal is a valid YAML double-quoted scalar.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

Status CheckKeys(const YAML::Node& node, const std::string& where,
                 const std::set<std::string>& allowed) {
  if (!node.IsMap()) return Error(Errc::kInvalidArgument, where + ": must be a mapping");
  for (const auto& kv : node) {
    auto key = kv.first.as<std::string>();
    if (!allowed.contains(key)) {
      return Error(Errc::kInvalidArgument,
                   (where.empty() ? "" : where + ".") + key + ": unknown key");
    }
  }
  return OkStatus();
}

Status ReadString(const YAML::Node& node, const char* key, const std::string& where,
                  std::string* out) {
  YAML::Node v = node[key];
  if (!v) return OkStatus();
  if (!v.IsScalar()) {
    return Error(Errc::kInvalidArgument, where + key + ": must be a string");
  }
  *out = v.as<std::string>();
  return OkStatus();
}

Status ReadInt(const YAML::Node& node, const char* key, const std::string& where, int lo, int hi,
               int* out) {
  YAML::Node v = node[key];
  if (!v) return OkStatus();
  int value = 0;
  if (!v.IsScalar() || !YAML::convert<int>::decode(v, value) || value < lo || value > hi) {
    return Error(Errc::kInvalidArgument, where + key + ": must be an integer from " +
                                             std::to_string(lo) + " to " + std::to_string(hi));
  }
  *out = value;
  return OkStatus();
}

Result<HubConfig> ParseNode(const YAML::Node& root) {
  HubConfig c;
  if (root.IsNull()) return c;
  OUTPOST_TRY(CheckKeys(
      root, "", {"hostname", "instance", "api", "broker", "device_cert_days", "log_level"}));
  OUTPOST_TRY(ReadString(root, "hostname", "", &c.hostname));
  OUTPOST_TRY(ReadString(root, "instance", "", &c.instance));
  OUTPOST_TRY(ReadInt(root, "device_cert_days", "", 1, 3650, &c.device_cert_days));
  OUTPOST_TRY(ReadString(root, "log_level", "", &c.log_level));
  if (YAML::Node api = root["api"]) {
    OUTPOST_TRY(CheckKeys(api, "api", {"listen", "port", "public_url"}));
    OUTPOST_TRY(ReadString(api, "listen", "api.", &c.api_listen));
    OUTPOST_TRY(ReadInt(api, "port", "api.", 1, 65535, &c.api_port));
    OUTPOST_TRY(ReadString(api, "public_url", "api.", &c.public_hub_url));
  }
  if (YAML::Node broker = root["broker"]) {
    OUTPOST_TRY(
        CheckKeys(broker, "broker", {"url", "public_url", "reconnect_min_ms", "reconnect_max_ms"}));
    OUTPOST_TRY(ReadString(broker, "url", "broker.", &c.broker_url));
    OUTPOST_TRY(ReadString(broker, "public_url", "broker.", &c.public_broker_url));
    OUTPOST_TRY(
        ReadInt(broker, "reconnect_min_ms", "broker.", 10, 600000, &c.broker_reconnect_min_ms));
    OUTPOST_TRY(
        ReadInt(broker, "reconnect_max_ms", "broker.", 100, 3600000, &c.broker_reconnect_max_ms));
    if (c.broker_reconnect_min_ms > c.broker_reconnect_max_ms) {
      return Error(Errc::kInvalidArgument,
                   "broker.reconnect_min_ms is larger than broker.reconnect_max_ms");
    }
  }
  if (!ValidHostname(c.hostname)) {
    return Error(Errc::kInvalidArgument, "hostname: \"" + c.hostname + "\" is not a valid name");
  }
  if (c.instance.empty() || c.instance.size() > 32) {
    return Error(Errc::kInvalidArgument, "instance: must be 1 to 32 characters");
  }
  for (char ch : c.instance) {
    if (!std::islower(static_cast<unsigned char>(ch)) &&
        !std::isdigit(static_cast<unsigned char>(ch)) && ch != '-') {
      return Error(Errc::kInvalidArgument, "instance: only a-z, 0-9 and '-' are allowed");
    }
  }
  log::Level level;
  if (!log::ParseLevel(c.log_level, &level)) {
    return Error(Errc::kInvalidArgument, "log_level: must be debug, info, warn or error");
  }
  if (c.public_hub_url.empty()) {
    c.public_hub_url = "https://" + UrlHost(c.hostname) + ":" + std::to_string(c.api_port);
  }
  if (c.broker_url.empty()) c.broker_url = "ssl://127.0.0.1:8883";
  if (c.public_broker_url.empty()) {
    c.public_broker_url = "ssl://" + UrlHost(c.hostname) + ":8883";
  }
  return c;
}

}  // namespace

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string UrlHost(const std::string& host) {
  if (host.find(':') != std::string::npos) return "[" + host + "]";
  return host;
}

bool ValidHostname(const std::string& host) {
  if (IsIpLiteral(host)) return true;
  if (host.empty() || host.size() > 253) return false;
  std::size_t label = 0;
  char prev = '.';
  for (char c : host) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      if (label == 0 && c == '-') return false;
      if (++label > 63) return false;
    } else {
      return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

Result<HubConfig> ParseHubConfig(std::string_view yaml_text) {
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    return ParseNode(root);
  } catch (const YAML::Exception& e) {
    return Error(Errc::kInvalidArgument, std::string("not valid YAML: ") + e.what());
  }
}

Result<HubConfig> LoadHubConfig(const std::string& path) {
  auto text = fs::ReadFile(path, 64 << 10);
  if (!text.ok()) return text.error().WithContext("reading " + path);
  auto config = ParseHubConfig(*text);
  if (!config.ok()) return config.error().WithContext(path);
  return config;
}

std::string RenderHubConfig(const HubConfig& c) {
  std::ostringstream out;
  out << "# outpost-hub configuration, written by `outpost-hub init` (see docs/hub.md).\n"
      << "# The certificates and keys are the fixed files next to this one.\n"
      << "hostname: " << Quote(c.hostname) << "\n"
      << "# MQTT client id of the hub: outpost-hub-<instance>\n"
      << "instance: " << Quote(c.instance) << "\n"
      << "api:\n"
      << "  listen: " << Quote(c.api_listen) << "\n"
      << "  port: " << c.api_port << "\n"
      << "  # told to devices at enrollment\n"
      << "  public_url: " << Quote(c.public_hub_url) << "\n"
      << "broker:\n"
      << "  # where the hub itself connects (the broker's certificate names 127.0.0.1)\n"
      << "  url: " << Quote(c.broker_url) << "\n"
      << "  # told to devices at enrollment\n"
      << "  public_url: " << Quote(c.public_broker_url) << "\n"
      << "  # the hub's reconnect backoff (jittered, doubling from min to max)\n"
      << "  reconnect_min_ms: " << c.broker_reconnect_min_ms << "\n"
      << "  reconnect_max_ms: " << c.broker_reconnect_max_ms << "\n"
      << "device_cert_days: " << c.device_cert_days << "\n"
      << "log_level: " << Quote(c.log_level) << "\n";
  return out.str();
}

}  // namespace outpost::hub
