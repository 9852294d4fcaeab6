// outpost-hub init: the generated files (mosquitto.conf, ACL, hub.yaml,
// ctl.yaml), the credentials, refusal to overwrite, and the CLI around it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <sstream>

#include "hub/cli/hub_cli.hpp"
#include "hub/ctl/config.hpp"
#include "hub/init/config.hpp"
#include "hub/init/init.hpp"
#include "hub/init/layout.hpp"
#include "hub/init/render.hpp"
#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::hub {
namespace {

using outpost::testing::TempDir;

bool HasLine(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l == line) return true;
  }
  return false;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(MosquittoConf, TlsOnlyWithCertificatesAsIdentity) {
  std::string conf = RenderMosquittoConf({"/srv/hub", 9883, "outpost"});
  EXPECT_TRUE(HasLine(conf, "listener 9883"));
  EXPECT_TRUE(HasLine(conf, "require_certificate true"));
  EXPECT_TRUE(HasLine(conf, "use_identity_as_username true"));
  EXPECT_TRUE(HasLine(conf, "allow_anonymous false"));
  EXPECT_TRUE(HasLine(conf, "cafile /srv/hub/ca.crt"));
  EXPECT_TRUE(HasLine(conf, "certfile /srv/hub/broker.crt"));
  EXPECT_TRUE(HasLine(conf, "keyfile /srv/hub/broker.key"));
  EXPECT_TRUE(HasLine(conf, "crlfile /srv/hub/crl.pem"));
  EXPECT_TRUE(HasLine(conf, "acl_file /srv/hub/mosquitto.acl"));
  EXPECT_TRUE(HasLine(conf, "persistence true"));
  EXPECT_TRUE(HasLine(conf, "persistence_location /srv/hub/"));
  EXPECT_TRUE(HasLine(conf, "pid_file /srv/hub/mosquitto.pid"));
  EXPECT_TRUE(HasLine(conf, "user outpost"));
  // Exactly one listener, and it is not restricted to loopback.
  std::size_t listeners = 0;
  std::istringstream in(conf);
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("listener", 0) == 0) ++listeners;
  }
  EXPECT_EQ(listeners, 1u);
  EXPECT_EQ(conf.find("127.0.0.1"), std::string::npos);
}

TEST(MosquittoAcl, DevicesOnlyTheirOwnTopicsHubEverything) {
  std::string acl = RenderMosquittoAcl();
  EXPECT_TRUE(HasLine(acl, "user outpost-hub"));
  EXPECT_TRUE(HasLine(acl, "topic readwrite outpost/v1/devices/#"));
  EXPECT_TRUE(HasLine(acl, "pattern read outpost/v1/devices/%u/desired"));
  EXPECT_TRUE(HasLine(acl, "pattern read outpost/v1/devices/%u/ack"));
  EXPECT_TRUE(HasLine(acl, "pattern write outpost/v1/devices/%u/reported"));
  EXPECT_TRUE(HasLine(acl, "pattern write outpost/v1/devices/%u/events"));
  EXPECT_TRUE(HasLine(acl, "pattern write outpost/v1/devices/%u/presence"));
  // Nothing else is granted: every rule line is one of the above.
  std::istringstream in(acl);
  int rules = 0;
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("pattern", 0) == 0 || l.rfind("topic", 0) == 0) ++rules;
    EXPECT_EQ(l.find("readwrite outpost/v1/devices/%u"), std::string::npos) << l;
  }
  EXPECT_EQ(rules, 6);
}

TEST(MosquittoConf, PathsItCannotQuoteAreRefused) {
  EXPECT_TRUE(PathUsableInMosquittoConf("/var/lib/outpost-hub"));
  EXPECT_FALSE(PathUsableInMosquittoConf("relative/dir"));
  EXPECT_FALSE(PathUsableInMosquittoConf("/with space"));
  EXPECT_FALSE(PathUsableInMosquittoConf("/with#hash"));
  EXPECT_FALSE(PathUsableInMosquittoConf("/new\nline"));
}

TEST(HubConfig, RoundTripsAndDerivesUrls) {
  HubConfig c;
  c.hostname = "hub.example.com";
  c.instance = "abc123";
  c.api_port = 9443;
  c.public_hub_url = "https://hub.example.com:9443";
  c.broker_url = "ssl://127.0.0.1:9883";
  c.public_broker_url = "ssl://hub.example.com:9883";
  c.broker_reconnect_min_ms = 100;
  c.broker_reconnect_max_ms = 5000;
  auto parsed = ParseHubConfig(RenderHubConfig(c));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->hostname, "hub.example.com");
  EXPECT_EQ(parsed->instance, "abc123");
  EXPECT_EQ(parsed->api_port, 9443);
  EXPECT_EQ(parsed->public_hub_url, "https://hub.example.com:9443");
  EXPECT_EQ(parsed->broker_url, "ssl://127.0.0.1:9883");
  EXPECT_EQ(parsed->public_broker_url, "ssl://hub.example.com:9883");
  EXPECT_EQ(parsed->broker_reconnect_min_ms, 100);
  EXPECT_EQ(parsed->broker_reconnect_max_ms, 5000);

  auto minimal = ParseHubConfig("hostname: edge.local\napi: {port: 1234}\n");
  ASSERT_TRUE(minimal.ok());
  EXPECT_EQ(minimal->public_hub_url, "https://edge.local:1234");
  EXPECT_EQ(minimal->public_broker_url, "ssl://edge.local:8883");
  EXPECT_EQ(minimal->broker_reconnect_min_ms, 250);
  EXPECT_EQ(minimal->broker_reconnect_max_ms, 2000);
}

TEST(HubConfig, RejectsUnknownKeysAndBadValues) {
  auto typo = ParseHubConfig("hostnme: x\n");
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.error().message().find("hostnme"), std::string::npos);
  EXPECT_FALSE(ParseHubConfig("api: {port: 70000}\n").ok());
  EXPECT_FALSE(ParseHubConfig("api: {bogus: 1}\n").ok());
  EXPECT_FALSE(ParseHubConfig("log_level: loud\n").ok());
  EXPECT_FALSE(ParseHubConfig("broker: {reconnect_min_ms: 5}\n").ok());
  EXPECT_FALSE(ParseHubConfig("broker: {reconnect_min_ms: 5000, reconnect_max_ms: 1000}\n").ok());
  EXPECT_FALSE(ParseHubConfig("hostname: 'bad host'\n").ok());
  EXPECT_FALSE(ParseHubConfig("[not, a, map]\n").ok());
}

TEST(Hostnames, DnsNamesAndIpLiterals) {
  EXPECT_TRUE(ValidHostname("localhost"));
  EXPECT_TRUE(ValidHostname("hub.example.com"));
  EXPECT_TRUE(ValidHostname("10.0.0.1"));
  EXPECT_TRUE(ValidHostname("::1"));
  EXPECT_FALSE(ValidHostname(""));
  EXPECT_FALSE(ValidHostname("-bad.example"));
  EXPECT_FALSE(ValidHostname("bad..example"));
  EXPECT_FALSE(ValidHostname("under_score"));
  EXPECT_EQ(UrlHost("::1"), "[::1]");
  EXPECT_EQ(UrlHost("hub"), "hub");
}

TEST(Init, WritesEveryFileWithTheRightModesAndCertificates) {
  TempDir tmp;
  InitOptions o;
  o.data_dir = tmp / "hub";
  o.hostname = "hub.test";
  o.broker_port = 9883;
  o.api_port = 9443;
  auto result = InitHub(o);
  ASSERT_TRUE(result.ok()) << result.error().ToString();
  DataLayout l(result->data_dir);
  for (const auto& key : {l.CaKey(), l.BrokerKey(), l.ApiKey(), l.HubKey(), l.SigningKey(),
                          l.AdminToken(), l.CtlYaml()}) {
    EXPECT_EQ(ModeOf(key), 0600u) << key;
  }
  for (const auto& pub : {l.CaCert(), l.BrokerCert(), l.ApiCert(), l.HubCert(), l.SignerCert(),
                          l.Crl(), l.MosquittoConf(), l.MosquittoAcl(), l.HubYaml()}) {
    EXPECT_TRUE(fs::Exists(pub)) << pub;
  }
  EXPECT_EQ(ModeOf(result->data_dir), 0700u);

  std::string ca = *fs::ReadFile(l.CaCert());
  EXPECT_EQ(result->ca_hash, *crypto::SpkiSha256(ca));

  std::string broker = *fs::ReadFile(l.BrokerCert());
  EXPECT_TRUE(crypto::VerifyChain(broker, ca, {.usage = crypto::CertUsage::kServer}).ok());
  auto info = crypto::ParseCertificate(broker);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->dns_sans, (std::vector<std::string>{"hub.test", "localhost"}));
  EXPECT_EQ(info->ip_sans, (std::vector<std::string>{"127.0.0.1"}));

  std::string hub = *fs::ReadFile(l.HubCert());
  EXPECT_TRUE(crypto::VerifyChain(
                  hub, ca, {.expected_cn = "outpost-hub", .usage = crypto::CertUsage::kClient})
                  .ok());
  std::string signer = *fs::ReadFile(l.SignerCert());
  EXPECT_TRUE(
      crypto::VerifyChain(signer, ca,
                          {.expected_cn = "outpost-signer", .usage = crypto::CertUsage::kSigning})
          .ok());
  // The signing key matches the signer certificate.
  auto key = crypto::PrivateKey::FromPem(*fs::ReadFile(l.SigningKey()));
  ASSERT_TRUE(key.ok());
  auto sig = crypto::Sign(*key, "doc");
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(crypto::VerifySignature(signer, "doc", *sig).ok());

  // ctl.yaml: what outpostctl reads back.
  auto ctl = ctl::ParseCtlYaml(*fs::ReadFile(l.CtlYaml()), result->data_dir);
  ASSERT_TRUE(ctl.ok()) << ctl.error().ToString();
  EXPECT_EQ(ctl->hub_url, "https://hub.test:9443");
  EXPECT_EQ(ctl->ca_path, l.CaCert());
  std::string token = *fs::ReadFile(l.AdminToken());
  EXPECT_EQ(ctl->token + "\n", token);
  EXPECT_GE(ctl->token.size(), 32u);

  auto config = LoadHubConfig(l.HubYaml());
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->broker_url, "ssl://127.0.0.1:9883");
  EXPECT_EQ(config->public_broker_url, "ssl://hub.test:9883");
  EXPECT_EQ(config->api_port, 9443);

  std::string conf = *fs::ReadFile(l.MosquittoConf());
  EXPECT_TRUE(HasLine(conf, "listener 9883"));
  EXPECT_TRUE(HasLine(conf, "crlfile " + l.Crl()));
}

TEST(Init, RefusesAnExistingHubUnlessForced) {
  TempDir tmp;
  InitOptions o;
  o.data_dir = tmp / "hub";
  o.hostname = "localhost";
  ASSERT_TRUE(InitHub(o).ok());
  DataLayout l(o.data_dir);
  std::string ca_before = *fs::ReadFile(l.CaCert());

  auto again = InitHub(o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kAlreadyExists);
  EXPECT_NE(again.error().message().find("--force"), std::string::npos);
  EXPECT_EQ(*fs::ReadFile(l.CaCert()), ca_before);

  o.force = true;
  ASSERT_TRUE(InitHub(o).ok());
  EXPECT_NE(*fs::ReadFile(l.CaCert()), ca_before);
}

TEST(Init, ValidatesOptions) {
  TempDir tmp;
  InitOptions o;
  o.data_dir = tmp / "hub";
  o.hostname = "not a host";
  EXPECT_EQ(InitHub(o).error().code(), Errc::kInvalidArgument);
  o.hostname = "localhost";
  o.api_port = o.broker_port;
  EXPECT_EQ(InitHub(o).error().code(), Errc::kInvalidArgument);
  o.api_port = 70000;
  EXPECT_EQ(InitHub(o).error().code(), Errc::kInvalidArgument);
  o.api_port = 8443;
  o.data_dir = tmp / "with space";
  EXPECT_EQ(InitHub(o).error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::Exists(tmp / "with space/ca.key"));
}

TEST(Init, IpHostnameGoesIntoIpSans) {
  TempDir tmp;
  InitOptions o;
  o.data_dir = tmp / "hub";
  o.hostname = "10.1.2.3";
  ASSERT_TRUE(InitHub(o).ok());
  auto info = crypto::ParseCertificate(*fs::ReadFile(DataLayout(o.data_dir).BrokerCert()));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->ip_sans, (std::vector<std::string>{"10.1.2.3", "127.0.0.1"}));
  EXPECT_EQ(info->dns_sans, (std::vector<std::string>{"localhost"}));
}

int RunCli(const std::vector<std::string>& args, std::string* out, std::string* err) {
  std::ostringstream o, e;
  int rc = cli::Main(args, o, e);
  *out = o.str();
  *err = e.str();
  return rc;
}

TEST(HubCli, VersionInitAndUsageErrors) {
  std::string out, err;
  EXPECT_EQ(RunCli({"outpost-hub", "version"}, &out, &err), 0);
  EXPECT_EQ(out, std::string("outpost-hub ") + OUTPOST_VERSION + "\n");

  TempDir tmp;
  EXPECT_EQ(RunCli({"outpost-hub", "init", "--data-dir", tmp / "h", "--hostname", "localhost",
                    "--broker-port", "19883", "--api-port=19443"},
                   &out, &err),
            0)
      << err;
  EXPECT_NE(out.find("sha256:"), std::string::npos);
  EXPECT_TRUE(fs::Exists(tmp / "h/mosquitto.conf"));
  // A second init refuses with one line on stderr.
  EXPECT_EQ(RunCli({"outpost-hub", "init", "--data-dir", tmp / "h", "--hostname", "localhost"},
                   &out, &err),
            1);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;

  EXPECT_EQ(RunCli({"outpost-hub", "init", "--hostname", "x"}, &out, &err), 2);
  EXPECT_EQ(RunCli({"outpost-hub", "init", "--data-dir", tmp / "y", "--hostname", "x",
                    "--broker-port", "nope"},
                   &out, &err),
            2);
  EXPECT_EQ(RunCli({"outpost-hub", "frobnicate"}, &out, &err), 2);
  EXPECT_EQ(RunCli({"outpost-hub"}, &out, &err), 2);
  EXPECT_EQ(RunCli({"outpost-hub", "serve", "--data-dir", tmp / "missing"}, &out, &err), 1);
  EXPECT_NE(err.find("init"), std::string::npos);
}

}  // namespace
}  // namespace outpost::hub
