// The text files `outpost-hub init` generates: mosquitto.conf, its ACL file
// and ctl.yaml. Pure functions, unit-tested.
#pragma once

#include <string>

namespace outpost::hub {

struct BrokerConfParams {
  std::string data_dir;  // absolute; no whitespace or '#' (mosquitto.conf cannot quote)
  int port = 8883;
  // The account mosquitto switches to when started as root (`user` line):
  // the owner of the data directory, who can read the 0600 broker key.
  std::string run_user;
};

// mosquitto.conf for Debian's mosquitto 2.0: one TLS listener on every
// interface, client certificates required and used as the username, CRL and
// ACL from the data directory, persistence in the data directory.
std::string RenderMosquittoConf(const BrokerConfParams& params);

// The ACL: the hub reads and writes every device topic; each device (its
// certificate CN, %u) reads its own desired and ack and writes its own
// reported, events and presence, and nothing else.
std::string RenderMosquittoAcl();

// ctl.yaml, read by outpostctl (format in hub/ctl/config.hpp and docs/hub.md).
std::string RenderCtlYaml(const std::string& hub_url, const std::string& admin_token,
                          const std::string& ca_path);

// True when `path` can be written into mosquitto.conf unquoted.
bool PathUsableInMosquittoConf(const std::string& path);

}  // namespace outpost::hub
