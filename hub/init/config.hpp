// hub.yaml: what `outpost-hub serve` needs beyond the files of the data
// directory. `outpost-hub init` writes it; an operator may edit it.
//
//   hostname: hub.example.com          # names in the server certificates
//   instance: k3x9qa                   # MQTT client id outpost-hub-<instance>
//   api:
//     listen: 0.0.0.0                  # address the HTTPS API binds
//     port: 8443
//     public_url: https://hub.example.com:8443   # told to devices at enrollment
//   broker:
//     url: ssl://127.0.0.1:8883        # where the hub itself connects
//     public_url: ssl://hub.example.com:8883     # told to devices at enrollment
//     reconnect_min_ms: 250            # the hub's own reconnect backoff
//     reconnect_max_ms: 2000
//   device_cert_days: 90
//   log_level: info
//
// Unknown keys are an error (a typo must not silently fall back to a default).
#pragma once

#include <string>
#include <string_view>

#include "shared/core/result.hpp"

namespace outpost::hub {

struct HubConfig {
  std::string data_dir;  // not in the file: from --data-dir or the file's directory
  std::string hostname = "localhost";
  std::string instance = "default";
  std::string api_listen = "0.0.0.0";
  int api_port = 8443;
  std::string public_hub_url;     // default https://<hostname>:<api_port>
  std::string broker_url;         // default ssl://127.0.0.1:8883
  std::string public_broker_url;  // default ssl://<hostname>:8883
  // The hub's reconnect backoff to its broker. Short: the hub is one client,
  // and every device's events wait for it (they are acked by the hub) after
  // a broker restart; devices spread their own reconnects (up to 30 s).
  int broker_reconnect_min_ms = 250;
  int broker_reconnect_max_ms = 2000;
  int device_cert_days = 90;
  std::string log_level = "info";
};

// Parses hub.yaml text. Missing keys keep their defaults; derived URLs are
// filled in. Errors are kInvalidArgument naming the key.
Result<HubConfig> ParseHubConfig(std::string_view yaml_text);
// Reads and parses a file (at most 64 KiB).
Result<HubConfig> LoadHubConfig(const std::string& path);

// The YAML text for `config`, with comments.
std::string RenderHubConfig(const HubConfig& config);

// "host" for names, "[::1]" for IPv6 literals: the host part of a URL.
std::string UrlHost(const std::string& host);
bool IsIpLiteral(const std::string& host);
// A DNS name (labels of [A-Za-z0-9-], dots, at most 253 chars) or an IP literal.
bool ValidHostname(const std::string& host);

}  // namespace outpost::hub
