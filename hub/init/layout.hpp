// The files of a hub data directory (docs/hub.md lists them). `outpost-hub
// init` writes them, `outpost-hub serve` and the broker read them. One place
// for the names, so init, serve and the tests cannot drift apart.
#pragma once

#include <string>

#include "shared/core/fs.hpp"

namespace outpost::hub {

class DataLayout {
 public:
  explicit DataLayout(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string Path(const char* name) const { return fs::Join(dir_, name); }

  // The hub CA: signs every certificate and the CRL.
  std::string CaCert() const { return Path("ca.crt"); }
  std::string CaKey() const { return Path("ca.key"); }
  // The broker's TLS server certificate (SANs: hostname, localhost, 127.0.0.1).
  std::string BrokerCert() const { return Path("broker.crt"); }
  std::string BrokerKey() const { return Path("broker.key"); }
  // The HTTPS API's server certificate (same names as the broker's).
  std::string ApiCert() const { return Path("api.crt"); }
  std::string ApiKey() const { return Path("api.key"); }
  // The hub's own MQTT client certificate (CN outpost-hub).
  std::string HubCert() const { return Path("hub.crt"); }
  std::string HubKey() const { return Path("hub.key"); }
  // The signer of desired documents (CN outpost-signer).
  std::string SignerCert() const { return Path("signing.crt"); }
  std::string SigningKey() const { return Path("signing.key"); }
  std::string AdminToken() const { return Path("admin.token"); }
  std::string CtlYaml() const { return Path("ctl.yaml"); }
  std::string HubYaml() const { return Path("hub.yaml"); }
  std::string Crl() const { return Path("crl.pem"); }
  std::string MosquittoConf() const { return Path("mosquitto.conf"); }
  std::string MosquittoAcl() const { return Path("mosquitto.acl"); }
  std::string MosquittoPid() const { return Path("mosquitto.pid"); }
  std::string HubDb() const { return Path("hub.db"); }

 private:
  std::string dir_;
};

// Well-known identities (docs/protocol.md).
inline constexpr const char* kHubIdentity = "outpost-hub";
inline constexpr const char* kSignerIdentity = "outpost-signer";
inline constexpr const char* kCaName = "Outpost Hub CA";

inline constexpr int kDefaultBrokerPort = 8883;
inline constexpr int kDefaultApiPort = 8443;
inline constexpr const char* kDefaultDataDir = "/var/lib/outpost-hub";

}  // namespace outpost::hub
