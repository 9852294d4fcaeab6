#include "agent/enroll/enroll.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "agent/state/agent_store.hpp"
#include "outpost.pb.h"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/crypto/crypto.hpp"
#include "shared/mqtt/mqtt_client.hpp"

namespace outpost::agent::enroll {
namespace {

constexpr std::size_t kMaxCaResponse = 64 * 1024;
constexpr std::size_t kMaxEnrollResponse = 256 * 1024;

std::int64_t UnixMsNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One line for people: no control characters, bounded.
std::string OneLine(std::string s, std::size_t max = 300) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

Error Fail(Errc code, std::string message) {
  return Error(code, OneLine(std::move(message)));
}

bool DaemonAnswers(const std::string& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return false;
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

Status Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    return ErrnoError("rename " + from + " to " + to, errno);
  return OkStatus();
}

void RenameIfExists(const std::string& from, const std::string& to) {
  if (fs::Exists(from)) (void)::rename(from.c_str(), to.c_str());
}

Result<std::string> MakeTempDir(const std::string& parent, const std::string& prefix) {
  std::string templ = fs::Join(parent, prefix + "XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return ErrnoError("mkdtemp " + templ, errno);
  return std::string(buf.data());
}

bool IsLowerHex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

Status ValidateJoinOptions(const JoinOptions& o) {
  if (o.hub_url.empty()) return Fail(Errc::kInvalidArgument, "--hub URL is required");
  auto url = http::ParseUrl(o.hub_url);
  if (!url.ok()) return Fail(Errc::kInvalidArgument, "invalid --hub URL: " + url.error().message());
  if (url->scheme != "https")
    return Fail(Errc::kInvalidArgument, "invalid --hub URL " + o.hub_url + ": must be https://");
  if (o.token.empty()) return Fail(Errc::kInvalidArgument, "--token is required");
  auto dot = o.token.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == o.token.size() || o.token.size() > 256 ||
      o.token.find_first_of(" \t\r\n") != std::string::npos)
    return Fail(Errc::kInvalidArgument, "the join token is malformed (expected <id>.<secret>)");
  if (!o.name.empty() && (!mqtt::topics::ValidDeviceId(o.name) || o.name.starts_with("outpost-")))
    return Fail(Errc::kInvalidArgument,
                "--name \"" + o.name + "\" must be a DNS label (a-z, 0-9, '-'; not outpost-...)");
  for (const auto& [k, v] : o.labels) {
    if (k.empty() || k.size() > 63 || v.size() > 63)
      return Fail(Errc::kInvalidArgument, "--label " + k + "=" + v + " is not a valid label");
  }
  return OkStatus();
}

// What an answer of the hub looks like to people.
Error TransportError(const std::string& hub_url, const Error& e) {
  if (e.code() == Errc::kUnauthenticated)
    return Fail(Errc::kUnauthenticated,
                "the hub at " + hub_url + " is not the pinned CA's hub (TLS: " + e.message() + ")");
  return Fail(e.code() == Errc::kTimeout ? Errc::kTimeout : Errc::kUnavailable,
              "cannot reach the hub at " + hub_url + ": " + e.message());
}

struct Installed {
  std::string key_pem;
  std::string cert_pem;
  std::string ca_pem;
  state::Identity identity;
};

// Stages everything in <state>/.join-XXXXXX, then renames into place with
// agent.db last (the commit point).
Status Install(const config::StatePaths& paths, const Installed& in, bool force) {
  OUTPOST_ASSIGN_OR_RETURN(std::string staging, MakeTempDir(paths.dir, ".join-"));
  std::string trash;
  bool committed = false;
  struct Cleanup {
    std::string* staging;
    std::string* trash;
    bool* committed;
    const config::StatePaths* paths;
    ~Cleanup() {
      if (!*committed && !trash->empty()) {
        // Put the previous enrollment back.
        RenameIfExists(fs::Join(*trash, "agent.db"), paths->db);
        RenameIfExists(fs::Join(*trash, "agent.db-wal"), paths->db + "-wal");
        RenameIfExists(fs::Join(*trash, "agent.db-shm"), paths->db + "-shm");
      }
      RemoveTree(*staging);
      if (!trash->empty()) RemoveTree(*trash);
    }
  } cleanup{&staging, &trash, &committed, &paths};

  config::StatePaths next(staging);
  OUTPOST_TRY(fs::WriteFileAtomic(next.key, in.key_pem, 0600));
  OUTPOST_TRY(fs::WriteFileAtomic(next.cert, in.cert_pem, 0644));
  OUTPOST_TRY(fs::WriteFileAtomic(next.ca, in.ca_pem, 0644));
  std::vector<ProcessRecord> carried;
  if (force && fs::Exists(paths.db)) {
    // Workloads of the previous enrollment may still run (the daemon detaches
    // on stop): hand their records over, so the next `run` adopts them and
    // stops those the new desired state does not name.
    state::OpenOptions ro;
    ro.read_only = true;
    if (auto old = state::AgentStore::Open(paths.db, ro); old.ok()) {
      if (auto records = (*old)->LoadAll(); records.ok()) carried = std::move(records).value();
    }
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(auto db, state::AgentStore::Open(next.db));
    OUTPOST_TRY(db->SaveIdentity(in.identity));
    for (const auto& r : carried)
      OUTPOST_TRY(db->Save(r));
  }  // closing checkpoints the WAL into agent.db and removes it
  if (fs::Exists(next.db + "-wal"))
    return Error(Errc::kInternal, "the staged agent.db kept its write-ahead log");
  OUTPOST_TRY(fs::SyncDir(staging));

  if (force && fs::Exists(paths.db)) {
    OUTPOST_ASSIGN_OR_RETURN(trash, MakeTempDir(paths.dir, ".old-"));
    OUTPOST_TRY(Rename(paths.db, fs::Join(trash, "agent.db")));
    RenameIfExists(paths.db + "-wal", fs::Join(trash, "agent.db-wal"));
    RenameIfExists(paths.db + "-shm", fs::Join(trash, "agent.db-shm"));
    OUTPOST_TRY(fs::SyncDir(paths.dir));
  }
  // A write-ahead log without its database (an earlier crash) must never be
  // replayed onto the new one.
  (void)::unlink((paths.db + "-wal").c_str());
  (void)::unlink((paths.db + "-shm").c_str());
  (void)::unlink((paths.key + ".next").c_str());
  (void)::unlink((paths.cert + ".next").c_str());
  OUTPOST_TRY(Rename(next.key, paths.key));
  OUTPOST_TRY(Rename(next.cert, paths.cert));
  OUTPOST_TRY(Rename(next.ca, paths.ca));
  OUTPOST_TRY(Rename(next.db, paths.db));  // the commit point
  committed = true;
  OUTPOST_TRY(fs::SyncDir(paths.dir));
  return OkStatus();
}

}  // namespace

Result<std::string> NormalizeCaHash(const std::string& text) {
  std::string s = text;
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!s.starts_with("sha256:") || s.size() != 7 + 64 || !IsLowerHex(s.substr(7)))
    return Fail(Errc::kInvalidArgument,
                "--ca-hash must be sha256:<64 hex digits> (as printed by outpostctl token create)");
  return s;
}

std::string CsrNameFor(const std::string& requested, const std::string& hostname,
                       const std::string& random_suffix) {
  if (!requested.empty()) return requested;
  std::string base;
  for (char c : hostname) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9');
    if (ok) {
      base += l;
    } else if (!base.empty() && base.back() != '-') {
      base += '-';
    }
  }
  while (base.starts_with("outpost-"))
    base = base.substr(8);
  if (base.size() > 50) base.resize(50);
  while (!base.empty() && base.back() == '-')
    base.pop_back();
  while (!base.empty() && base.front() == '-')
    base.erase(0, 1);
  if (base.empty()) base = "device";
  return base + "-" + random_suffix;
}

Error MapHubError(const std::string& what, int status, const std::string& body) {
  std::string code;
  std::string message;
  try {
    auto j = nlohmann::json::parse(body);
    if (j.is_object()) {
      if (j.contains("error") && j["error"].is_string()) code = j["error"].get<std::string>();
      if (j.contains("message") && j["message"].is_string())
        message = j["message"].get<std::string>();
    }
  } catch (const std::exception&) {
  }
  if (code == "invalid_token")
    return Fail(Errc::kUnauthenticated,
                "join token rejected: the token is not valid (invalid_token)");
  if (code == "token_expired")
    return Fail(Errc::kExpired, "join token rejected: the token has expired (token_expired)");
  if (code == "token_revoked")
    return Fail(Errc::kPermissionDenied,
                "join token rejected: the token was revoked (token_revoked)");
  if (code == "token_used_up")
    return Fail(Errc::kConflict, "join token rejected: the token has no uses left (token_used_up)");
  Errc errc = status >= 500   ? Errc::kUnavailable
              : status == 401 ? Errc::kUnauthenticated
              : status == 403 ? Errc::kPermissionDenied
                              : Errc::kInvalidArgument;
  std::string line = "the hub refused the " + what + ": ";
  if (!message.empty()) {
    line +=
        message + " (" + (code.empty() ? "" : code + ", ") + "HTTP " + std::to_string(status) + ")";
  } else {
    line += "HTTP " + std::to_string(status);
  }
  return Fail(errc, line);
}

namespace {
Result<JoinResult> JoinIn(const JoinOptions& o, const config::StatePaths& paths,
                          const std::string& expected_hash, const HttpSend& send);
}  // namespace

Result<JoinResult> Join(const JoinOptions& o, const HttpSend& send) {
  OUTPOST_TRY(ValidateJoinOptions(o));
  std::string expected_hash;
  if (!o.ca_hash.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(expected_hash, NormalizeCaHash(o.ca_hash));
  }
  config::StatePaths paths(o.state_dir);
  const bool created_dir = !fs::Exists(paths.dir);
  if (Status s = fs::MakeDirs(paths.dir, 0700); !s.ok())
    return Fail(Errc::kIo, "cannot create the state dir: " + s.error().message());
  (void)RecoverIdentityFiles(paths);
  auto result = JoinIn(o, paths, expected_hash, send);
  // A failed join leaves nothing behind, not even the directory it made.
  if (!result.ok() && created_dir) (void)::rmdir(paths.dir.c_str());
  return result;
}

namespace {

Result<JoinResult> JoinIn(const JoinOptions& o, const config::StatePaths& paths,
                          const std::string& expected_hash, const HttpSend& send) {
  // Already enrolled?
  if (fs::Exists(paths.db)) {
    state::OpenOptions ro;
    ro.read_only = true;
    auto db = state::AgentStore::Open(paths.db, ro);
    if (!db.ok())
      return Fail(Errc::kFailedPrecondition, "cannot read " + paths.db + ": " +
                                                 db.error().message() +
                                                 (o.force ? "" : " (use --force to enroll again)"));
    auto identity = (*db)->LoadIdentity();
    if (identity.ok() && identity->has_value()) {
      if (!o.force)
        return Fail(Errc::kAlreadyExists, "already enrolled as device " + (*identity)->device_id +
                                              " with " + (*identity)->hub_url +
                                              " (use --force to enroll again)");
    }
    if (o.force && DaemonAnswers(paths.socket))
      return Fail(Errc::kFailedPrecondition,
                  "the agent is running on this state dir; stop it before joining again");
  }

  // 1. The CA, fetched without verification and pinned by hash.
  http::ClientOptions insecure;
  insecure.tls.insecure_skip_verify = true;
  insecure.timeout = o.timeout;
  insecure.max_response_bytes = kMaxCaResponse;
  http::Request get_ca;
  get_ca.method = "GET";
  get_ca.target = "/v1/ca";
  auto ca_resp = send(o.hub_url, get_ca, insecure);
  if (!ca_resp.ok()) return TransportError(o.hub_url, ca_resp.error());
  if (ca_resp->status != 200)
    return Fail(Errc::kUnavailable, "the hub at " + o.hub_url + " answered HTTP " +
                                        std::to_string(ca_resp->status) + " to GET /v1/ca");
  const std::string ca_pem = ca_resp->body;
  auto ca_info = crypto::ParseCertificate(ca_pem);
  if (!ca_info.ok() || !ca_info->is_ca)
    return Fail(Errc::kInvalidArgument, "the hub's GET /v1/ca answer is not a CA certificate");
  auto presented = crypto::SpkiSha256(ca_pem);
  if (!presented.ok())
    return Fail(Errc::kInvalidArgument, "the hub's CA: " + presented.error().message());
  if (!expected_hash.empty() && !crypto::ConstantTimeEqual(*presented, expected_hash))
    return Fail(Errc::kUnauthenticated,
                "CA hash mismatch: hub presented " + *presented + ", expected " + expected_hash);

  // 2. Our key (never leaves the device), the CSR, the facts.
  auto key = crypto::PrivateKey::Generate();
  if (!key.ok())
    return Fail(Errc::kInternal, "generating the device key: " + key.error().message());
  auto key_pem = key->ToPem();
  auto pub_pem = key->PublicKeyPem();
  if (!key_pem.ok() || !pub_pem.ok()) return Fail(Errc::kInternal, "encoding the device key");
  auto facts = CollectFacts(o.roots);
  std::string csr_cn = CsrNameFor(o.name, facts.hostname(), crypto::RandomToken(6));
  auto csr = crypto::CreateCsr(*key, csr_cn);
  if (!csr.ok()) return Fail(Errc::kInternal, "creating the CSR: " + csr.error().message());

  outpost::v1::EnrollRequest req;
  req.set_token(o.token);
  req.set_csr_pem(*csr);
  *req.mutable_facts() = facts;
  req.set_name(csr_cn);
  for (const auto& [k, v] : o.labels)
    (*req.mutable_labels())[k] = v;

  http::ClientOptions pinned;
  pinned.tls.ca_pem = ca_pem;
  pinned.timeout = o.timeout;
  pinned.max_response_bytes = kMaxEnrollResponse;
  http::Request post;
  post.method = "POST";
  post.target = "/v1/enroll";
  post.content_type = "application/x-protobuf";
  post.body = req.SerializeAsString();
  auto resp = send(o.hub_url, post, pinned);
  if (!resp.ok()) return TransportError(o.hub_url, resp.error());
  if (resp->status != 200) return MapHubError("enrollment", resp->status, resp->body);

  // 3. Check the answer before trusting any of it.
  outpost::v1::EnrollResponse er;
  if (!er.ParseFromString(resp->body))
    return Fail(Errc::kInvalidArgument, "the hub's enrollment answer does not parse");
  if (!mqtt::topics::ValidDeviceId(er.device_id()))
    return Fail(Errc::kInvalidArgument,
                "the hub assigned an invalid device id \"" + OneLine(er.device_id(), 70) + "\"");
  crypto::VerifyOptions verify;
  verify.expected_cn = er.device_id();
  verify.usage = crypto::CertUsage::kClient;
  if (Status s = crypto::VerifyChain(er.certificate_pem(), ca_pem, verify); !s.ok())
    return Fail(Errc::kUnauthenticated,
                "the hub's certificate for this device is not valid: " + s.error().message());
  auto cert_info = crypto::ParseCertificate(er.certificate_pem());
  if (!cert_info.ok() || cert_info->public_key_pem != *pub_pem)
    return Fail(Errc::kUnauthenticated, "the hub's certificate is not for this device's key");
  if (!er.ca_pem().empty()) {
    auto answered = crypto::SpkiSha256(er.ca_pem());
    if (!answered.ok() || *answered != *presented)
      return Fail(Errc::kUnauthenticated, "the hub answered with a different CA than it presented");
  }
  if (!er.broker_url().starts_with("ssl://") && !er.broker_url().starts_with("mqtts://"))
    return Fail(Errc::kInvalidArgument, "the hub gave no TLS broker address (got \"" +
                                            OneLine(er.broker_url(), 100) + "\")");

  // 4. Install atomically.
  Installed in;
  in.key_pem = *key_pem;
  in.cert_pem = er.certificate_pem();
  in.ca_pem = ca_pem;
  in.identity.device_id = er.device_id();
  in.identity.hub_url = o.hub_url;
  in.identity.broker_url = er.broker_url();
  in.identity.name = csr_cn;
  for (const auto& [k, v] : er.labels())
    in.identity.labels[k] = v;
  in.identity.enrolled_at_ms = UnixMsNow();
  if (Status s = Install(paths, in, o.force); !s.ok())
    return Fail(s.error().code(),
                "writing the state dir " + paths.dir + ": " + s.error().message());

  JoinResult result;
  result.device_id = er.device_id();
  result.hub_url = o.hub_url;
  result.broker_url = er.broker_url();
  result.ca_hash = *presented;
  result.ca_pinned_by_hash = !expected_hash.empty();
  result.labels = in.identity.labels;
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------
// Identity files

Status RecoverIdentityFiles(const config::StatePaths& paths) {
  const std::string key_next = paths.key + ".next";
  const std::string cert_next = paths.cert + ".next";
  const bool has_key_next = fs::Exists(key_next);
  const bool has_cert_next = fs::Exists(cert_next);
  if (has_cert_next) {
    if (has_key_next) OUTPOST_TRY(Rename(key_next, paths.key));
    OUTPOST_TRY(Rename(cert_next, paths.cert));
    OUTPOST_TRY(fs::SyncDir(paths.dir));
    log::Warn("finished a certificate renewal interrupted by a restart");
  } else if (has_key_next) {
    (void)::unlink(key_next.c_str());
  }
  // Leftovers of an interrupted join.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(paths.dir, ec)) {
    std::string name = entry.path().filename().string();
    if ((name.starts_with(".join-") || name.starts_with(".old-")) && entry.is_directory(ec))
      RemoveTree(entry.path().string());
  }
  return OkStatus();
}

Result<RenewResult> Renew(const config::StatePaths& paths, const std::string& device_id,
                          const RenewOptions& options, const HttpSend& send) {
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_pem, fs::ReadFile(paths.ca, 1u << 20));
  OUTPOST_ASSIGN_OR_RETURN(std::string cert_pem, fs::ReadFile(paths.cert, 1u << 20));
  OUTPOST_ASSIGN_OR_RETURN(std::string key_pem, fs::ReadFile(paths.key, 1u << 20));
  OUTPOST_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate());
  OUTPOST_ASSIGN_OR_RETURN(std::string new_key_pem, key.ToPem());
  OUTPOST_ASSIGN_OR_RETURN(std::string pub_pem, key.PublicKeyPem());
  OUTPOST_ASSIGN_OR_RETURN(std::string csr, crypto::CreateCsr(key, device_id));

  outpost::v1::RenewRequest req;
  req.set_csr_pem(csr);
  http::ClientOptions client;
  client.tls.ca_pem = ca_pem;
  client.tls.client_cert_pem = cert_pem;
  client.tls.client_key_pem = key_pem;
  client.timeout = options.timeout;
  client.max_response_bytes = kMaxEnrollResponse;
  http::Request post;
  post.method = "POST";
  post.target = "/v1/renew";
  post.content_type = "application/x-protobuf";
  post.body = req.SerializeAsString();
  auto resp = send(options.hub_url, post, client);
  if (!resp.ok()) return TransportError(options.hub_url, resp.error());
  if (resp->status != 200) return MapHubError("renewal", resp->status, resp->body);
  outpost::v1::RenewResponse rr;
  if (!rr.ParseFromString(resp->body))
    return Fail(Errc::kInvalidArgument, "the hub's renewal answer does not parse");
  crypto::VerifyOptions verify;
  verify.expected_cn = device_id;
  verify.usage = crypto::CertUsage::kClient;
  OUTPOST_TRY(crypto::VerifyChain(rr.certificate_pem(), ca_pem, verify));
  OUTPOST_ASSIGN_OR_RETURN(auto info, crypto::ParseCertificate(rr.certificate_pem()));
  if (info.public_key_pem != pub_pem)
    return Fail(Errc::kUnauthenticated, "the renewed certificate is not for the new key");

  // The swap: both .next files complete before the first rename (see
  // RecoverIdentityFiles for every crash point).
  OUTPOST_TRY(fs::WriteFileAtomic(paths.key + ".next", new_key_pem, 0600));
  OUTPOST_TRY(fs::WriteFileAtomic(paths.cert + ".next", rr.certificate_pem(), 0644));
  OUTPOST_TRY(Rename(paths.key + ".next", paths.key));
  OUTPOST_TRY(Rename(paths.cert + ".next", paths.cert));
  OUTPOST_TRY(fs::SyncDir(paths.dir));
  return RenewResult{info.not_after_unix};
}

}  // namespace outpost::agent::enroll
