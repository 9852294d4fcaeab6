#include "hub/init/init.hpp"

#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "hub/init/config.hpp"
#include "hub/init/layout.hpp"
#include "hub/init/render.hpp"
#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"

namespace outpost::hub {
namespace {

constexpr int kCaDays = 3650;
constexpr int kServiceCertDays = 1825;
// The CRL is rewritten on every revocation and at every hub start; a long
// nextUpdate keeps a broker running while the hub is down from refusing
// everyone because of an outdated CRL.
constexpr int kCrlDays = 3650;

struct Owner {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
};

Result<Owner> DirOwner(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoError("stat " + dir, errno);
  if (!S_ISDIR(st.st_mode)) return Error(Errc::kInvalidArgument, dir + " is not a directory");
  Owner owner{st.st_uid, st.st_gid, ""};
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (::getpwuid_r(st.st_uid, &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
    return Error(Errc::kFailedPrecondition,
                 "the owner of " + dir + " (uid " + std::to_string(st.st_uid) +
                     ") has no account name, which mosquitto's `user` line needs");
  }
  owner.name = found->pw_name;
  return owner;
}

// Writes files and remembers them, so a failure part way can remove them.
class FileWriter {
 public:
  explicit FileWriter(const Owner& owner) : owner_(owner) {}
  ~FileWriter() {
    if (committed_) return;
    for (const auto& path : written_)
      ::unlink(path.c_str());
  }
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  Status Write(const std::string& path, std::string_view data, mode_t mode) {
    OUTPOST_TRY(fs::WriteFileAtomic(path, data, mode));
    written_.push_back(path);
    // Root initialising a directory owned by another account: the files are
    // that account's, so the hub and the broker can run as it.
    if (::geteuid() == 0 && owner_.uid != 0) {
      if (::chown(path.c_str(), owner_.uid, owner_.gid) != 0) {
        return ErrnoError("chown " + path, errno);
      }
    }
    return OkStatus();
  }
  void Commit() { committed_ = true; }
  const std::vector<std::string>& written() const { return written_; }

 private:
  Owner owner_;
  std::vector<std::string> written_;
  bool committed_ = false;
};

struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;
};

Result<KeyAndCert> Issue(const crypto::CertSpec& spec, const crypto::PrivateKey& ca_key,
                         const std::string& ca_cert) {
  OUTPOST_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate());
  OUTPOST_ASSIGN_OR_RETURN(auto pub, key.PublicKeyPem());
  OUTPOST_ASSIGN_OR_RETURN(auto cert, crypto::IssueCertificate(pub, spec, ca_key, ca_cert));
  OUTPOST_ASSIGN_OR_RETURN(auto key_pem, key.ToPem());
  return KeyAndCert{std::move(key_pem), std::move(cert)};
}

Status ValidatePort(int port, const char* flag) {
  if (port < 1 || port > 65535) {
    return Error(Errc::kInvalidArgument,
                 std::string(flag) + " must be a port number from 1 to 65535");
  }
  return OkStatus();
}

}  // namespace

Result<InitResult> InitHub(const InitOptions& options) {
  if (options.data_dir.empty()) return Error(Errc::kInvalidArgument, "--data-dir is required");
  if (options.hostname.empty()) return Error(Errc::kInvalidArgument, "--hostname is required");
  if (!ValidHostname(options.hostname)) {
    return Error(Errc::kInvalidArgument,
                 "--hostname \"" + options.hostname + "\" is not a DNS name or an IP address");
  }
  OUTPOST_TRY(ValidatePort(options.broker_port, "--broker-port"));
  OUTPOST_TRY(ValidatePort(options.api_port, "--api-port"));
  if (options.broker_port == options.api_port) {
    return Error(Errc::kInvalidArgument, "--broker-port and --api-port must differ");
  }

  OUTPOST_TRY(fs::MakeDirs(options.data_dir, 0700));
  char resolved[PATH_MAX];
  if (::realpath(options.data_dir.c_str(), resolved) == nullptr) {
    return ErrnoError("resolving " + options.data_dir, errno);
  }
  const std::string dir = resolved;
  if (!PathUsableInMosquittoConf(dir)) {
    return Error(Errc::kInvalidArgument,
                 "the data directory \"" + dir +
                     "\" contains spaces, quotes, '%' or '#', which mosquitto.conf cannot hold");
  }
  OUTPOST_ASSIGN_OR_RETURN(Owner owner, DirOwner(dir));
  DataLayout layout(dir);

  if (!options.force) {
    for (const auto& marker : {layout.CaKey(), layout.CaCert(), layout.HubYaml(),
                               layout.MosquittoConf(), layout.AdminToken(), layout.CtlYaml()}) {
      if (fs::Exists(marker)) {
        return Error(Errc::kAlreadyExists,
                     dir + " already holds a hub (" + marker +
                         " exists); refusing to overwrite it (--force replaces every "
                         "credential and invalidates all enrolled devices)");
      }
    }
  }

  // The CA.
  OUTPOST_ASSIGN_OR_RETURN(auto ca_key, crypto::PrivateKey::Generate());
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_cert,
                           crypto::CreateSelfSignedCa(ca_key, kCaName, kCaDays));
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_key_pem, ca_key.ToPem());
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_hash, crypto::SpkiSha256(ca_cert));

  // Server certificates for the broker and the API: the hostname, and the
  // loopback names the hub and local tools use.
  crypto::CertSpec server;
  server.common_name = options.hostname;
  if (IsIpLiteral(options.hostname)) {
    server.ip_sans.push_back(options.hostname);
  } else {
    server.dns_sans.push_back(options.hostname);
  }
  if (options.hostname != "localhost") server.dns_sans.push_back("localhost");
  if (options.hostname != "127.0.0.1") server.ip_sans.push_back("127.0.0.1");
  server.validity_days = kServiceCertDays;
  server.usage = crypto::CertUsage::kServer;
  OUTPOST_ASSIGN_OR_RETURN(auto broker, Issue(server, ca_key, ca_cert));
  OUTPOST_ASSIGN_OR_RETURN(auto api, Issue(server, ca_key, ca_cert));

  crypto::CertSpec hub_client;
  hub_client.common_name = kHubIdentity;
  hub_client.validity_days = kServiceCertDays;
  hub_client.usage = crypto::CertUsage::kClient;
  OUTPOST_ASSIGN_OR_RETURN(auto hub, Issue(hub_client, ca_key, ca_cert));

  crypto::CertSpec signer;
  signer.common_name = kSignerIdentity;
  signer.validity_days = kServiceCertDays;
  signer.usage = crypto::CertUsage::kSigning;
  OUTPOST_ASSIGN_OR_RETURN(auto signing, Issue(signer, ca_key, ca_cert));

  OUTPOST_ASSIGN_OR_RETURN(std::string crl, crypto::CreateCrl(ca_key, ca_cert, {}, kCrlDays));

  const std::string admin_token = crypto::RandomToken(40);

  HubConfig config;
  config.hostname = options.hostname;
  config.instance = crypto::RandomToken(6);
  config.api_port = options.api_port;
  config.public_hub_url =
      "https://" + UrlHost(options.hostname) + ":" + std::to_string(options.api_port);
  config.broker_url = "ssl://127.0.0.1:" + std::to_string(options.broker_port);
  config.public_broker_url =
      "ssl://" + UrlHost(options.hostname) + ":" + std::to_string(options.broker_port);

  BrokerConfParams broker_conf{dir, options.broker_port, owner.name};

  FileWriter w(owner);
  OUTPOST_TRY(w.Write(layout.CaKey(), ca_key_pem, 0600));
  OUTPOST_TRY(w.Write(layout.CaCert(), ca_cert, 0644));
  OUTPOST_TRY(w.Write(layout.BrokerKey(), broker.key_pem, 0600));
  OUTPOST_TRY(w.Write(layout.BrokerCert(), broker.cert_pem, 0644));
  OUTPOST_TRY(w.Write(layout.ApiKey(), api.key_pem, 0600));
  OUTPOST_TRY(w.Write(layout.ApiCert(), api.cert_pem, 0644));
  OUTPOST_TRY(w.Write(layout.HubKey(), hub.key_pem, 0600));
  OUTPOST_TRY(w.Write(layout.HubCert(), hub.cert_pem, 0644));
  OUTPOST_TRY(w.Write(layout.SigningKey(), signing.key_pem, 0600));
  OUTPOST_TRY(w.Write(layout.SignerCert(), signing.cert_pem, 0644));
  OUTPOST_TRY(w.Write(layout.Crl(), crl, 0644));
  OUTPOST_TRY(w.Write(layout.AdminToken(), admin_token + "\n", 0600));
  OUTPOST_TRY(w.Write(layout.HubYaml(), RenderHubConfig(config), 0644));
  OUTPOST_TRY(w.Write(layout.CtlYaml(),
                      RenderCtlYaml(config.public_hub_url, admin_token, layout.CaCert()), 0600));
  OUTPOST_TRY(w.Write(layout.MosquittoAcl(), RenderMosquittoAcl(), 0644));
  OUTPOST_TRY(w.Write(layout.MosquittoConf(), RenderMosquittoConf(broker_conf), 0644));
  w.Commit();

  InitResult result;
  result.data_dir = dir;
  result.ca_hash = ca_hash;
  result.files = w.written();
  return result;
}

}  // namespace outpost::hub
