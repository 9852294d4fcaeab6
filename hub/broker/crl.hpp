// Revocation at the broker: the hub writes crl.pem (signed by the hub CA,
// listing every revoked device certificate) and asks mosquitto to reload it.
//
// Debian's mosquitto 2.0.11 reloads its listener certificates and the CRL on
// SIGHUP (checked: a certificate revoked in a new crl.pem is refused right
// after the signal, connected clients stay connected). The hub signals the
// pid in the data directory's mosquitto.pid (written by the generated
// mosquitto.conf) after making sure that pid is a mosquitto process, so a
// stale pid file never signals a stranger. Without a pid file (the broker
// runs elsewhere) the operator reloads the broker (systemctl reload / kill
// -HUP) after copying crl.pem; docs/hub.md says so.
#pragma once

#include <string>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::hub::broker {

// What the API needs from revocation (an interface, so tests need no broker).
class CrlPublisher {
 public:
  struct Outcome {
    bool written = false;
    bool broker_signalled = false;
    std::string note;  // why the broker was not signalled, for the operator
  };
  virtual ~CrlPublisher() = default;
  virtual Result<Outcome> Update(const std::vector<std::string>& revoked_serials) = 0;
};

class FileCrlPublisher : public CrlPublisher {
 public:
  FileCrlPublisher(std::string ca_key_pem, std::string ca_cert_pem, std::string crl_path,
                   std::string pid_file)
      : ca_key_pem_(std::move(ca_key_pem)),
        ca_cert_pem_(std::move(ca_cert_pem)),
        crl_path_(std::move(crl_path)),
        pid_file_(std::move(pid_file)) {}

  Result<Outcome> Update(const std::vector<std::string>& revoked_serials) override;

 private:
  std::string ca_key_pem_;
  std::string ca_cert_pem_;
  std::string crl_path_;
  std::string pid_file_;
};

// Sends SIGHUP to the mosquitto whose pid is in `pid_file`. kNotFound when
// there is no pid file or no such process; kFailedPrecondition when the pid
// is not a mosquitto process.
Status SignalBroker(const std::string& pid_file);

}  // namespace outpost::hub::broker
