// Interop with the openssl command as a third party: it verifies what we
// make (keys, CSRs, certificates, signatures, CRLs, a real TLS handshake),
// and we verify what it makes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "shared/core/fs.hpp"
#include "shared/crypto/crypto.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/crypto/crypto_test_util.hpp"

namespace outpost::crypto {
namespace {

using outpost::testing::FreePort;
using outpost::testing::Process;
using outpost::testing::ReadFileOr;
using outpost::testing::RunCommand;
using outpost::testing::TempDir;
using outpost::testing::WaitFor;
using testing::MakeCa;
using testing::MakeLeaf;
using testing::Spec;
using testing::TestCa;
using testing::TestLeaf;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string Upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

class crypto_interop : public ::testing::Test {
 protected:
  // Writes `content` to a file in the test dir and returns its path.
  std::string Put(const std::string& name, const std::string& content) {
    std::string path = dir_ / name;
    Status s = fs::WriteFileAtomic(path, content, 0600);
    EXPECT_TRUE(s.ok()) << s.error().ToString();
    return path;
  }

  // Runs openssl with `args`; returns its exit code, output in *out.
  int Openssl(std::vector<std::string> args, std::string* out = nullptr) {
    args.insert(args.begin(), "openssl");
    std::string output;
    int rc = RunCommand(args, &output);
    if (out != nullptr) *out = output;
    last_output_ = output;
    return rc;
  }

  // Runs a shell pipeline in the test dir.
  int Shell(const std::string& script, std::string* out) {
    int rc = RunCommand({"sh", "-c", "cd '" + dir_.path() + "' && " + script}, out);
    last_output_ = *out;
    return rc;
  }

  TempDir dir_{"outpost-crypto-interop"};
  std::string last_output_;
};

TEST_F(crypto_interop, OpensslReadsOurKeysAndWeReadItsKeys) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pem, key.ToPem());
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  std::string key_path = Put("ours.key", pem);
  ASSERT_EQ(Openssl({"pkey", "-in", key_path, "-noout", "-check"}), 0) << last_output_;
  std::string openssl_pub;
  ASSERT_EQ(Openssl({"pkey", "-in", key_path, "-pubout"}, &openssl_pub), 0) << openssl_pub;
  EXPECT_EQ(openssl_pub, pub);

  // PKCS#8 from genpkey, and SEC1 with an EC PARAMETERS block from ecparam.
  std::string pkcs8 = dir_ / "pkcs8.key";
  ASSERT_EQ(Openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                     pkcs8}),
            0)
      << last_output_;
  std::string sec1 = dir_ / "sec1.key";
  ASSERT_EQ(Openssl({"ecparam", "-name", "prime256v1", "-genkey", "-out", sec1}), 0)
      << last_output_;
  for (const std::string& path : {pkcs8, sec1}) {
    std::string text = ReadFileOr(path);
    ASSERT_OK_AND_ASSIGN(PrivateKey theirs, PrivateKey::FromPem(text));
    ASSERT_OK_AND_ASSIGN(std::string their_pub, theirs.PublicKeyPem());
    ASSERT_EQ(Openssl({"pkey", "-in", path, "-pubout"}, &openssl_pub), 0) << openssl_pub;
    EXPECT_EQ(their_pub, openssl_pub) << path;
  }

  // Other curves and RSA are refused.
  std::string p384 = dir_ / "p384.key";
  ASSERT_EQ(
      Openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", p384}),
      0);
  EXPECT_EQ(PrivateKey::FromPem(ReadFileOr(p384)).error().code(), Errc::kInvalidArgument);
  std::string rsa = dir_ / "rsa.key";
  ASSERT_EQ(
      Openssl({"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", rsa}),
      0);
  EXPECT_EQ(PrivateKey::FromPem(ReadFileOr(rsa)).error().code(), Errc::kInvalidArgument);
}

TEST_F(crypto_interop, OpensslVerifiesOurCsr) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string csr, CreateCsr(key, "device-7"));
  std::string path = Put("dev.csr", csr);
  std::string out;
  ASSERT_EQ(Openssl({"req", "-in", path, "-noout", "-verify", "-subject"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "CN = device-7")) << out;
}

TEST_F(crypto_interop, OpensslVerifiesOurCertificates) {
  TestCa ca, other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  ASSERT_NO_FATAL_FAILURE(MakeCa("Other CA", 365, &other));
  CertSpec server_spec = Spec("broker", CertUsage::kServer, 30);
  server_spec.dns_sans = {"localhost", "broker.example"};
  server_spec.ip_sans = {"127.0.0.1", "::1"};
  server_spec.serial_hex = "0a1b2c";
  TestLeaf server, client, signer;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, server_spec, &server));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("device-1", CertUsage::kClient), &client));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("hub-signing", CertUsage::kSigning), &signer));
  std::string ca_path = Put("ca.crt", ca.cert);
  std::string other_path = Put("other.crt", other.cert);
  std::string server_path = Put("server.crt", server.cert);
  std::string client_path = Put("client.crt", client.cert);
  std::string signer_path = Put("signer.crt", signer.cert);

  auto verify = [&](std::vector<std::string> extra, const std::string& cert) {
    std::vector<std::string> args = {"verify", "-x509_strict", "-CAfile", ca_path};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(cert);
    return Openssl(args);
  };
  EXPECT_EQ(verify({"-purpose", "sslserver", "-verify_hostname", "localhost"}, server_path), 0)
      << last_output_;
  EXPECT_EQ(verify({"-purpose", "sslserver", "-verify_hostname", "broker.example"}, server_path), 0)
      << last_output_;
  EXPECT_EQ(verify({"-purpose", "sslserver", "-verify_ip", "127.0.0.1"}, server_path), 0)
      << last_output_;
  EXPECT_EQ(verify({"-purpose", "sslserver", "-verify_ip", "::1"}, server_path), 0) << last_output_;
  EXPECT_NE(verify({"-verify_hostname", "evil.example"}, server_path), 0);
  EXPECT_NE(verify({"-verify_ip", "10.0.0.1"}, server_path), 0);
  EXPECT_EQ(verify({"-purpose", "sslclient"}, client_path), 0) << last_output_;
  EXPECT_NE(verify({"-purpose", "sslclient"}, server_path), 0);
  EXPECT_NE(verify({"-purpose", "sslserver"}, client_path), 0);
  EXPECT_EQ(verify({}, signer_path), 0) << last_output_;
  EXPECT_NE(verify({"-purpose", "sslclient"}, signer_path), 0);
  EXPECT_NE(Openssl({"verify", "-CAfile", other_path, client_path}), 0);

  std::string out;
  ASSERT_EQ(Openssl({"x509", "-in", ca_path, "-noout", "-text"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "CA:TRUE")) << out;
  EXPECT_TRUE(Contains(out, "Certificate Sign, CRL Sign")) << out;
  EXPECT_TRUE(Contains(out, "X509v3 Subject Key Identifier")) << out;

  ASSERT_EQ(Openssl({"x509", "-in", server_path, "-noout", "-text"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "DNS:localhost")) << out;
  EXPECT_TRUE(Contains(out, "DNS:broker.example")) << out;
  EXPECT_TRUE(Contains(out, "IP Address:127.0.0.1")) << out;
  EXPECT_TRUE(Contains(out, "IP Address:0:0:0:0:0:0:0:1")) << out;
  EXPECT_TRUE(Contains(out, "TLS Web Server Authentication")) << out;
  EXPECT_TRUE(Contains(out, "CA:FALSE")) << out;
  EXPECT_TRUE(Contains(out, "ecdsa-with-SHA256")) << out;

  ASSERT_EQ(Openssl({"x509", "-in", signer_path, "-noout", "-text"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "Code Signing")) << out;

  // Serial and notAfter as openssl reads them.
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(server.cert));
  ASSERT_EQ(Openssl({"x509", "-in", server_path, "-noout", "-serial"}, &out), 0) << out;
  EXPECT_EQ(out, "serial=0A1B2C\n");
  EXPECT_EQ(info.serial_hex, "a1b2c");
  const int64_t left = info.not_after_unix - static_cast<int64_t>(std::time(nullptr));
  EXPECT_EQ(Openssl({"x509", "-in", server_path, "-noout", "-checkend", std::to_string(left - 60)}),
            0);
  EXPECT_NE(Openssl({"x509", "-in", server_path, "-noout", "-checkend", std::to_string(left + 60)}),
            0);
}

TEST_F(crypto_interop, WeSignAnOpensslCsrAndOpensslVerifiesTheResult) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  std::string key_path = dir_ / "dev.key";
  std::string csr_path = dir_ / "dev.csr";
  ASSERT_EQ(
      Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", key_path, "-out", csr_path, "-subj", "/CN=openssl-device"}),
      0)
      << last_output_;
  ASSERT_OK_AND_ASSIGN(CsrInfo csr, ParseCsr(ReadFileOr(csr_path)));
  EXPECT_EQ(csr.common_name, "openssl-device");
  CertSpec spec = Spec("device-42", CertUsage::kClient);
  ASSERT_OK_AND_ASSIGN(std::string cert,
                       IssueCertificate(csr.public_key_pem, spec, ca.k(), ca.cert));
  std::string cert_path = Put("dev.crt", cert);
  std::string ca_path = Put("ca.crt", ca.cert);
  ASSERT_EQ(
      Openssl({"verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", ca_path, cert_path}),
      0)
      << last_output_;
  std::string cert_pub, key_pub;
  ASSERT_EQ(Openssl({"x509", "-in", cert_path, "-noout", "-pubkey"}, &cert_pub), 0);
  ASSERT_EQ(Openssl({"pkey", "-in", key_path, "-pubout"}, &key_pub), 0);
  EXPECT_EQ(cert_pub, key_pub);
  std::string subject;
  ASSERT_EQ(Openssl({"x509", "-in", cert_path, "-noout", "-subject"}, &subject), 0);
  EXPECT_EQ(subject, "subject=CN = device-42\n");

  // A CSR for another curve, or RSA, is refused.
  std::string p384_csr = dir_ / "p384.csr";
  ASSERT_EQ(Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384",
                     "-nodes", "-keyout", dir_ / "p384.key", "-out", p384_csr, "-subj", "/CN=x"}),
            0);
  EXPECT_EQ(ParseCsr(ReadFileOr(p384_csr)).error().code(), Errc::kInvalidArgument);
  std::string rsa_csr = dir_ / "rsa.csr";
  ASSERT_EQ(Openssl({"req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", dir_ / "rsa.key",
                     "-out", rsa_csr, "-subj", "/CN=x"}),
            0);
  EXPECT_EQ(ParseCsr(ReadFileOr(rsa_csr)).error().code(), Errc::kInvalidArgument);
}

TEST_F(crypto_interop, SignaturesVerifyBothWays) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  const std::string payload = "desired state, generation 42\n";
  std::string payload_path = Put("payload", payload);
  std::string tampered_path = Put("tampered", payload + "!");

  // Ours, checked by openssl.
  TestLeaf signer;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("hub-signing", CertUsage::kSigning), &signer));
  ASSERT_OK_AND_ASSIGN(std::string sig, Sign(signer.k(), payload));
  std::string sig_path = Put("ours.sig", sig);
  ASSERT_OK_AND_ASSIGN(std::string pub, signer.k().PublicKeyPem());
  std::string pub_path = Put("signer.pub", pub);
  EXPECT_EQ(Openssl({"dgst", "-sha256", "-verify", pub_path, "-signature", sig_path, payload_path}),
            0)
      << last_output_;
  EXPECT_NE(
      Openssl({"dgst", "-sha256", "-verify", pub_path, "-signature", sig_path, tampered_path}), 0);

  // Openssl's, checked by us (its key certified by our CA).
  std::string key_path = dir_ / "theirs.key";
  ASSERT_EQ(Openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                     key_path}),
            0);
  std::string their_pub;
  ASSERT_EQ(Openssl({"pkey", "-in", key_path, "-pubout"}, &their_pub), 0);
  ASSERT_OK_AND_ASSIGN(
      std::string their_cert,
      IssueCertificate(their_pub, Spec("theirs", CertUsage::kSigning), ca.k(), ca.cert));
  std::string their_sig_path = dir_ / "theirs.sig";
  ASSERT_EQ(Openssl({"dgst", "-sha256", "-sign", key_path, "-out", their_sig_path, payload_path}),
            0)
      << last_output_;
  std::string their_sig = ReadFileOr(their_sig_path);
  EXPECT_OK(VerifySignature(their_cert, payload, their_sig));
  EXPECT_FALSE(VerifySignature(their_cert, payload + "!", their_sig).ok());
  EXPECT_FALSE(VerifySignature(signer.cert, payload, their_sig).ok());
}

TEST_F(crypto_interop, CertificatesOfAnOpensslCaVerifyWithUs) {
  std::string ca_key = dir_ / "ca.key";
  std::string ca_crt = dir_ / "ca.crt";
  ASSERT_EQ(Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "3", "-subj",
                     "/CN=OpenSSL CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                     "keyUsage=critical,keyCertSign,cRLSign"}),
            0)
      << last_output_;
  const std::string ca_pem = ReadFileOr(ca_crt);

  // openssl signs our CSR.
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string csr, CreateCsr(key, "device-9"));
  std::string csr_path = Put("dev.csr", csr);
  std::string ext_path = Put("ext.cnf",
                             "basicConstraints=CA:FALSE\n"
                             "keyUsage=critical,digitalSignature\n"
                             "extendedKeyUsage=clientAuth\n"
                             "subjectAltName=DNS:dev.example,IP:10.0.0.7\n");
  std::string leaf_path = dir_ / "dev.crt";
  ASSERT_EQ(Openssl({"x509", "-req", "-in", csr_path, "-CA", ca_crt, "-CAkey", ca_key,
                     "-set_serial", "4660", "-days", "2", "-extfile", ext_path, "-out", leaf_path}),
            0)
      << last_output_;
  const std::string leaf = ReadFileOr(leaf_path);
  EXPECT_OK(VerifyChain(leaf, ca_pem));
  EXPECT_OK(VerifyChain(leaf, ca_pem, {.expected_cn = "device-9", .usage = CertUsage::kClient}));
  EXPECT_FALSE(VerifyChain(leaf, ca_pem, {.usage = CertUsage::kServer}).ok());
  EXPECT_FALSE(VerifyChain(leaf, ca_pem, {.usage = CertUsage::kSigning}).ok());
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(leaf));
  EXPECT_EQ(info.common_name, "device-9");
  EXPECT_EQ(info.issuer_cn, "OpenSSL CA");
  EXPECT_EQ(info.serial_hex, "1234");
  EXPECT_EQ(info.dns_sans, std::vector<std::string>{"dev.example"});
  EXPECT_EQ(info.ip_sans, std::vector<std::string>{"10.0.0.7"});
  EXPECT_EQ(info.not_after_unix - info.not_before_unix, 2 * 86400);
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  EXPECT_EQ(info.public_key_pem, pub);
  TestCa ours;
  ASSERT_NO_FATAL_FAILURE(MakeCa("OpenSSL CA", 30, &ours));  // same name, other key
  Status s = VerifyChain(leaf, ours.cert);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);

  // And we can issue with openssl's CA key (PKCS#8) and certificate.
  ASSERT_OK_AND_ASSIGN(PrivateKey openssl_ca_key, PrivateKey::FromPem(ReadFileOr(ca_key)));
  ASSERT_OK_AND_ASSIGN(
      std::string ours_leaf,
      IssueCertificate(pub, Spec("device-10", CertUsage::kClient, 1), openssl_ca_key, ca_pem));
  std::string ours_leaf_path = Put("ours.crt", ours_leaf);
  EXPECT_EQ(Openssl({"verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", ca_crt,
                     ours_leaf_path}),
            0)
      << last_output_;
}

TEST_F(crypto_interop, SpkiHashEqualsOpenssls) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  Put("ca.crt", ca.cert);
  std::string out;
  ASSERT_EQ(Shell("openssl x509 -in ca.crt -pubkey -noout | openssl pkey -pubin -outform der | "
                  "sha256sum",
                  &out),
            0)
      << out;
  ASSERT_GE(out.size(), 64u);
  ASSERT_OK_AND_ASSIGN(std::string pin, SpkiSha256(ca.cert));
  EXPECT_EQ(pin, "sha256:" + out.substr(0, 64));
}

TEST_F(crypto_interop, CrlRevokesForOpenssl) {
  TestCa ca, other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  ASSERT_NO_FATAL_FAILURE(MakeCa("Other CA", 365, &other));
  TestLeaf revoked, good;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("device-bad", CertUsage::kClient), &revoked));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("device-good", CertUsage::kClient), &good));
  ASSERT_OK_AND_ASSIGN(CertInfo revoked_info, ParseCertificate(revoked.cert));
  ASSERT_OK_AND_ASSIGN(std::string crl,
                       CreateCrl(ca.k(), ca.cert, {revoked_info.serial_hex, "0abc", "ABC"}, 7));
  ASSERT_OK_AND_ASSIGN(std::string empty_crl, CreateCrl(ca.k(), ca.cert, {}, 7));
  std::string ca_path = Put("ca.crt", ca.cert);
  std::string other_path = Put("other.crt", other.cert);
  std::string crl_path = Put("crl.pem", crl);
  std::string empty_crl_path = Put("empty-crl.pem", empty_crl);
  std::string revoked_path = Put("revoked.crt", revoked.cert);
  std::string good_path = Put("good.crt", good.cert);

  std::string out;
  EXPECT_EQ(Openssl({"crl", "-in", crl_path, "-CAfile", ca_path, "-noout"}, &out), 0) << out;
  EXPECT_EQ(Openssl({"crl", "-in", empty_crl_path, "-CAfile", ca_path, "-noout"}, &out), 0) << out;
  EXPECT_NE(Openssl({"crl", "-in", crl_path, "-CAfile", other_path, "-noout"}, &out), 0) << out;
  ASSERT_EQ(Openssl({"crl", "-in", crl_path, "-noout", "-text"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "Version 2")) << out;
  EXPECT_TRUE(Contains(out, "X509v3 CRL Number")) << out;
  EXPECT_TRUE(Contains(out, "X509v3 Authority Key Identifier")) << out;
  EXPECT_TRUE(Contains(out, Upper(revoked_info.serial_hex))) << out;
  EXPECT_TRUE(Contains(out, "Serial Number: 0ABC")) << out;
  // "0abc" and "ABC" are the same serial: listed once.
  EXPECT_EQ(out.find("Serial Number: 0ABC"), out.rfind("Serial Number: 0ABC")) << out;

  auto verify = [&](const std::string& crl_file, const std::string& cert) {
    return Openssl(
        {"verify", "-x509_strict", "-crl_check", "-CAfile", ca_path, "-CRLfile", crl_file, cert});
  };
  EXPECT_NE(verify(crl_path, revoked_path), 0);
  EXPECT_TRUE(Contains(last_output_, "revoked")) << last_output_;
  EXPECT_EQ(verify(crl_path, good_path), 0) << last_output_;
  EXPECT_EQ(verify(empty_crl_path, revoked_path), 0) << last_output_;
}

// A real TLS handshake: openssl s_server with our server certificate and our
// CRL, and openssl s_client with our client certificate, each verifying the
// other against our CA. (-www: the server does not read stdin, which is
// /dev/null here and would end it.)
TEST_F(crypto_interop, TlsHandshakeWithOurCertificates) {
  TestCa ca, other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Outpost Hub CA", 365, &ca));
  ASSERT_NO_FATAL_FAILURE(MakeCa("Other CA", 365, &other));
  CertSpec server_spec = Spec("broker", CertUsage::kServer);
  server_spec.dns_sans = {"localhost"};
  server_spec.ip_sans = {"127.0.0.1"};
  TestLeaf server, client, stranger, revoked;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, server_spec, &server));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("device-1", CertUsage::kClient), &client));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(other, Spec("device-1", CertUsage::kClient), &stranger));
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("device-2", CertUsage::kClient), &revoked));
  ASSERT_OK_AND_ASSIGN(CertInfo revoked_info, ParseCertificate(revoked.cert));
  ASSERT_OK_AND_ASSIGN(std::string crl, CreateCrl(ca.k(), ca.cert, {revoked_info.serial_hex}, 1));
  auto key_file = [&](const std::string& name, const PrivateKey& key) {
    auto pem = key.ToPem();
    EXPECT_TRUE(pem.ok());
    return Put(name, pem.ok() ? *pem : "");
  };
  std::string ca_path = Put("ca.crt", ca.cert);
  std::string other_path = Put("other.crt", other.cert);
  std::string server_crt = Put("server.crt", server.cert);
  std::string server_key = key_file("server.key", server.k());
  std::string client_crt = Put("client.crt", client.cert);
  std::string client_key = key_file("client.key", client.k());
  std::string stranger_crt = Put("stranger.crt", stranger.cert);
  std::string stranger_key = key_file("stranger.key", stranger.k());
  std::string revoked_crt = Put("revoked.crt", revoked.cert);
  std::string revoked_key = key_file("revoked.key", revoked.k());
  std::string crl_path = Put("crl.pem", crl);

  const int port = FreePort();
  Process s_server({"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert",
                    server_crt, "-key", server_key, "-CAfile", ca_path, "-Verify", "1",
                    "-verify_return_error", "-tls1_2", "-www", "-CRL", crl_path, "-crl_check"},
                   dir_ / "s_server.log");
  auto connect = [&](const std::string& trust, const std::string& crt, const std::string& key) {
    std::string out;
    int rc = RunCommand({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                         "-CAfile", trust, "-verify_return_error", "-verify_hostname", "localhost",
                         "-cert", crt, "-key", key, "-brief"},
                        &out, {}, std::chrono::seconds(10));
    last_output_ = out;
    return rc;
  };
  // The server takes a moment to listen; poll instead of sleeping.
  bool ok = WaitFor([&] { return connect(ca_path, client_crt, client_key) == 0; },
                    std::chrono::seconds(20), std::chrono::milliseconds(50));
  ASSERT_TRUE(ok) << last_output_ << "\nserver: " << s_server.Log();
  // The client refuses a server it cannot chain to its trust.
  EXPECT_NE(connect(other_path, client_crt, client_key), 0) << last_output_;
  // The server refuses a client certificate from another CA.
  EXPECT_NE(connect(ca_path, stranger_crt, stranger_key), 0) << last_output_;
  // The server refuses a revoked client (what Mosquitto's crlfile does).
  EXPECT_NE(connect(ca_path, revoked_crt, revoked_key), 0) << last_output_;
  // And still serves good clients afterwards.
  EXPECT_EQ(connect(ca_path, client_crt, client_key), 0) << last_output_;
}

}  // namespace
}  // namespace outpost::crypto
