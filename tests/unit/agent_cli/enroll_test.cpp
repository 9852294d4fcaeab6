// join and renewal against an in-process fake hub: the messages people see,
// what lands in the state dir, and what a failure leaves behind (nothing).
#include "agent/enroll/enroll.hpp"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "agent/state/agent_store.hpp"
#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent_cli/fake_hub.hpp"

namespace outpost::agent::enroll {
namespace {

const testpki::Pki& SharedPki() {
  static const testpki::Pki* pki = new testpki::Pki();
  return *pki;
}

std::set<std::string> Entries(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    out.insert(e.path().filename().string());
  return out;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

class JoinTest : public ::testing::Test {
 protected:
  JoinOptions Options() {
    JoinOptions o;
    o.state_dir = state_dir_;
    o.hub_url = "https://hub.example:8443";
    o.token = "abc123.0123456789abcdef";
    o.ca_hash = *crypto::SpkiSha256(SharedPki().ca_pem);
    o.name = "edge-1";
    o.labels = {{"site", "berlin"}};
    o.roots.proc_root = tmp_ / "none";
    o.roots.dev_root = tmp_ / "none";
    o.roots.etc_root = tmp_ / "none";
    o.roots.nvidia_smi = "-";
    return o;
  }

  outpost::testing::TempDir tmp_{"agent-join"};
  std::string state_dir_ = tmp_ / "state";
  testhub::FakeHub hub_{SharedPki()};
};

TEST_F(JoinTest, EnrollsAndInstallsEverythingAtomically) {
  auto r = Join(Options(), hub_.Send());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->device_id, "edge-1");
  EXPECT_EQ(r->broker_url, "ssl://127.0.0.1:8883");
  EXPECT_TRUE(r->ca_pinned_by_hash);
  // The request carried the token, a CSR, the facts and the labels.
  EXPECT_EQ(hub_.last_token, "abc123.0123456789abcdef");
  EXPECT_EQ(hub_.last_csr_cn, "edge-1");
  EXPECT_EQ(hub_.last_request.labels().at("site"), "berlin");
  EXPECT_FALSE(hub_.last_request.facts().agent_version().empty());
  // The key never left: the request holds only a CSR.
  EXPECT_EQ(hub_.last_request.csr_pem().find("PRIVATE KEY"), std::string::npos);

  EXPECT_EQ(Entries(state_dir_),
            (std::set<std::string>{"agent.db", "ca.crt", "device.crt", "device.key"}));
  EXPECT_EQ(ModeOf(state_dir_ + "/device.key"), 0600u);
  EXPECT_EQ(ModeOf(state_dir_), 0700u);
  auto key = crypto::PrivateKey::FromPem(*fs::ReadFile(state_dir_ + "/device.key"));
  ASSERT_TRUE(key.ok());
  auto cert = crypto::ParseCertificate(*fs::ReadFile(state_dir_ + "/device.crt"));
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(cert->public_key_pem, *key->PublicKeyPem());
  EXPECT_EQ(*fs::ReadFile(state_dir_ + "/ca.crt"), SharedPki().ca_pem);

  state::OpenOptions ro;
  ro.read_only = true;
  auto db = state::AgentStore::Open(state_dir_ + "/agent.db", ro);
  ASSERT_TRUE(db.ok());
  auto id = (*db)->LoadIdentity();
  ASSERT_TRUE(id.ok() && id->has_value());
  EXPECT_EQ((*id)->device_id, "edge-1");
  EXPECT_EQ((*id)->hub_url, "https://hub.example:8443");
  EXPECT_EQ((*id)->broker_url, "ssl://127.0.0.1:8883");
  EXPECT_EQ((*id)->labels.at("role"), "store");
}

TEST_F(JoinTest, RefusesWhenAlreadyEnrolledUnlessForced) {
  ASSERT_TRUE(Join(Options(), hub_.Send()).ok());
  auto key_before = *fs::ReadFile(state_dir_ + "/device.key");
  auto again = Join(Options(), hub_.Send());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kAlreadyExists);
  EXPECT_NE(again.error().message().find("already enrolled as device edge-1"), std::string::npos);
  EXPECT_NE(again.error().message().find("--force"), std::string::npos);
  EXPECT_EQ(*fs::ReadFile(state_dir_ + "/device.key"), key_before);

  auto o = Options();
  o.force = true;
  o.name = "edge-2";
  auto forced = Join(o, hub_.Send());
  ASSERT_TRUE(forced.ok()) << forced.error().ToString();
  EXPECT_EQ(forced->device_id, "edge-2");
  EXPECT_NE(*fs::ReadFile(state_dir_ + "/device.key"), key_before);
  EXPECT_EQ(Entries(state_dir_),
            (std::set<std::string>{"agent.db", "ca.crt", "device.crt", "device.key"}));
}

TEST_F(JoinTest, CaHashMismatchNamesBothHashesAndLeavesNothing) {
  auto o = Options();
  o.ca_hash = "sha256:" + std::string(64, 'a');
  auto r = Join(o, hub_.Send());
  ASSERT_FALSE(r.ok());
  const std::string presented = *crypto::SpkiSha256(SharedPki().ca_pem);
  EXPECT_EQ(r.error().message(), "CA hash mismatch: hub presented " + presented +
                                     ", expected sha256:" + std::string(64, 'a'));
  EXPECT_EQ(hub_.enroll_calls, 0);  // nothing was sent to an untrusted hub
  EXPECT_FALSE(fs::Exists(state_dir_));
}

TEST_F(JoinTest, CaHashIsCaseInsensitive) {
  auto o = Options();
  std::string upper = o.ca_hash;
  for (std::size_t i = 7; i < upper.size(); ++i)
    upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper[i])));
  o.ca_hash = "SHA256:" + upper.substr(7);
  EXPECT_TRUE(Join(o, hub_.Send()).ok());
}

TEST_F(JoinTest, TokenErrorsAreOneLineNamingTheCause) {
  struct Case {
    std::string code;
    int status;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"invalid_token", 401, "join token rejected: the token is not valid (invalid_token)"},
      {"token_expired", 401, "join token rejected: the token has expired (token_expired)"},
      {"token_revoked", 401, "join token rejected: the token was revoked (token_revoked)"},
      {"token_used_up", 403, "join token rejected: the token has no uses left (token_used_up)"},
  };
  for (const auto& c : cases) {
    hub_.enroll_error = c.code;
    hub_.enroll_error_status = c.status;
    auto r = Join(Options(), hub_.Send());
    ASSERT_FALSE(r.ok()) << c.code;
    EXPECT_EQ(r.error().message(), c.expect);
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
    EXPECT_FALSE(fs::Exists(state_dir_)) << c.code;
  }
}

TEST_F(JoinTest, UnreachableHub) {
  hub_.unreachable = true;
  auto r = Join(Options(), hub_.Send());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.error().message().starts_with("cannot reach the hub at https://hub.example:8443"))
      << r.error().message();
  EXPECT_FALSE(fs::Exists(state_dir_));
}

TEST_F(JoinTest, HubNotPresentingThePinnedCa) {
  hub_.tls_mismatch = true;
  auto r = Join(Options(), hub_.Send());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("not the pinned CA's hub"), std::string::npos);
  EXPECT_FALSE(fs::Exists(state_dir_));
}

TEST_F(JoinTest, FailureKeepsAnExistingStateDirAsItWas) {
  ASSERT_TRUE(fs::MakeDirs(state_dir_, 0700).ok());
  ASSERT_TRUE(fs::WriteFileAtomic(state_dir_ + "/unrelated", "x").ok());
  hub_.enroll_error = "token_expired";
  ASSERT_FALSE(Join(Options(), hub_.Send()).ok());
  EXPECT_EQ(Entries(state_dir_), (std::set<std::string>{"unrelated"}));
}

TEST_F(JoinTest, BadInputsAreRefusedBeforeAnyRequest) {
  auto o = Options();
  o.hub_url = "http://hub:80";
  EXPECT_FALSE(Join(o, hub_.Send()).ok());
  o = Options();
  o.token = "no-dot";
  EXPECT_FALSE(Join(o, hub_.Send()).ok());
  o = Options();
  o.ca_hash = "md5:abc";
  EXPECT_FALSE(Join(o, hub_.Send()).ok());
  o = Options();
  o.name = "Not_A_Label";
  EXPECT_FALSE(Join(o, hub_.Send()).ok());
  EXPECT_EQ(hub_.enroll_calls, 0);
}

TEST_F(JoinTest, WithoutCaHashTheCaIsTrustedOnFirstUse) {
  auto o = Options();
  o.ca_hash.clear();
  auto r = Join(o, hub_.Send());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->ca_pinned_by_hash);
  EXPECT_EQ(r->ca_hash, *crypto::SpkiSha256(SharedPki().ca_pem));
}

TEST(MapHubError, OtherErrorsCarryTheHubsMessage) {
  auto e = MapHubError("enrollment", 400, R"({"error":"bad_csr","message":"The CSR is bad."})");
  EXPECT_EQ(e.message(), "the hub refused the enrollment: The CSR is bad. (bad_csr, HTTP 400)");
  auto plain = MapHubError("renewal", 502, "<html>bad gateway</html>");
  EXPECT_EQ(plain.message(), "the hub refused the renewal: HTTP 502");
  EXPECT_EQ(plain.code(), Errc::kUnavailable);
  auto multi = MapHubError("enrollment", 400, R"({"error":"x","message":"line1\nline2"})");
  EXPECT_EQ(multi.message().find('\n'), std::string::npos);
}

TEST(CsrNameFor, RequestedNameWinsElseHostnamePlusSuffix) {
  EXPECT_EQ(CsrNameFor("cam-7", "whatever", "abc123"), "cam-7");
  EXPECT_EQ(CsrNameFor("", "RaspberryPi.local", "abc123"), "raspberrypi-local-abc123");
  EXPECT_EQ(CsrNameFor("", "", "abc123"), "device-abc123");
  EXPECT_EQ(CsrNameFor("", "outpost-hub", "x1"), "hub-x1");
  EXPECT_LE(CsrNameFor("", std::string(200, 'a'), "abcdef").size(), 63u);
}

// ---------------------------------------------------------------------------
// Renewal and the key/certificate swap

TEST_F(JoinTest, RenewSwapsKeyAndCertificate) {
  ASSERT_TRUE(Join(Options(), hub_.Send()).ok());
  config::StatePaths paths(state_dir_);
  auto old_cert = *fs::ReadFile(paths.cert);
  auto old_key = *fs::ReadFile(paths.key);
  RenewOptions ro;
  ro.hub_url = "https://hub.example:8443";
  auto r = Renew(paths, "edge-1", ro, hub_.Send());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(hub_.last_client_cert, old_cert);  // authenticated with the current certificate
  auto new_key = crypto::PrivateKey::FromPem(*fs::ReadFile(paths.key));
  auto new_cert = crypto::ParseCertificate(*fs::ReadFile(paths.cert));
  ASSERT_TRUE(new_key.ok() && new_cert.ok());
  EXPECT_NE(*fs::ReadFile(paths.key), old_key);
  EXPECT_EQ(new_cert->public_key_pem, *new_key->PublicKeyPem());
  EXPECT_EQ(new_cert->common_name, "edge-1");
  EXPECT_EQ(ModeOf(paths.key), 0600u);
  EXPECT_FALSE(fs::Exists(paths.key + ".next"));
  EXPECT_FALSE(fs::Exists(paths.cert + ".next"));
}

TEST_F(JoinTest, RecoveryFinishesOrUndoesAnInterruptedSwap) {
  ASSERT_TRUE(Join(Options(), hub_.Send()).ok());
  config::StatePaths paths(state_dir_);
  // Crash after both .next files were written: roll forward.
  ASSERT_TRUE(fs::WriteFileAtomic(paths.key + ".next", "NEWKEY", 0600).ok());
  ASSERT_TRUE(fs::WriteFileAtomic(paths.cert + ".next", "NEWCERT").ok());
  ASSERT_TRUE(RecoverIdentityFiles(paths).ok());
  EXPECT_EQ(*fs::ReadFile(paths.key), "NEWKEY");
  EXPECT_EQ(*fs::ReadFile(paths.cert), "NEWCERT");
  // Crash after the key was renamed: the certificate follows.
  ASSERT_TRUE(fs::WriteFileAtomic(paths.cert + ".next", "CERT2").ok());
  ASSERT_TRUE(RecoverIdentityFiles(paths).ok());
  EXPECT_EQ(*fs::ReadFile(paths.cert), "CERT2");
  EXPECT_EQ(*fs::ReadFile(paths.key), "NEWKEY");
  // Crash while preparing (key only): undone.
  ASSERT_TRUE(fs::WriteFileAtomic(paths.key + ".next", "HALF", 0600).ok());
  ASSERT_TRUE(RecoverIdentityFiles(paths).ok());
  EXPECT_EQ(*fs::ReadFile(paths.key), "NEWKEY");
  EXPECT_FALSE(fs::Exists(paths.key + ".next"));
  // Leftover staging directories of an interrupted join are removed.
  ASSERT_TRUE(fs::MakeDirs(state_dir_ + "/.join-abc123", 0700).ok());
  ASSERT_TRUE(RecoverIdentityFiles(paths).ok());
  EXPECT_FALSE(fs::Exists(state_dir_ + "/.join-abc123"));
}

}  // namespace
}  // namespace outpost::agent::enroll
