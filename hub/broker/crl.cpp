#include "hub/broker/crl.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"

namespace outpost::hub::broker {
namespace {
// Long enough that a broker running while the hub is down keeps accepting
// devices; every revocation and every hub start writes a fresh CRL.
constexpr int kCrlDays = 3650;
}  // namespace

Status SignalBroker(const std::string& pid_file) {
  if (!fs::Exists(pid_file)) return Error(Errc::kNotFound, pid_file + " does not exist");
  OUTPOST_ASSIGN_OR_RETURN(std::string text, fs::ReadFile(pid_file, 64));
  char* end = nullptr;
  long pid = std::strtol(text.c_str(), &end, 10);
  if (pid <= 1 || end == text.c_str()) {
    return Error(Errc::kInvalidArgument, pid_file + " does not hold a process id");
  }
  auto comm = fs::ReadFile("/proc/" + std::to_string(pid) + "/comm", 256);
  if (!comm.ok()) return Error(Errc::kNotFound, "no process " + std::to_string(pid));
  std::string name = *comm;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' '))
    name.pop_back();
  if (name != "mosquitto") {
    return Error(Errc::kFailedPrecondition, "process " + std::to_string(pid) + " is \"" + name +
                                                "\", not mosquitto; not signalling it");
  }
  if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0) {
    return ErrnoError("signalling mosquitto (pid " + std::to_string(pid) + ")", errno);
  }
  return OkStatus();
}

Result<CrlPublisher::Outcome> FileCrlPublisher::Update(
    const std::vector<std::string>& revoked_serials) {
  OUTPOST_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::FromPem(ca_key_pem_));
  OUTPOST_ASSIGN_OR_RETURN(std::string crl,
                           crypto::CreateCrl(key, ca_cert_pem_, revoked_serials, kCrlDays));
  OUTPOST_TRY(fs::WriteFileAtomic(crl_path_, crl, 0644));
  Outcome outcome;
  outcome.written = true;
  Status signalled = SignalBroker(pid_file_);
  if (signalled.ok()) {
    outcome.broker_signalled = true;
  } else {
    outcome.note =
        "crl.pem written; reload the broker (SIGHUP) to apply it: " + signalled.error().message();
    log::Warn(outcome.note);
  }
  return outcome;
}

}  // namespace outpost::hub::broker
