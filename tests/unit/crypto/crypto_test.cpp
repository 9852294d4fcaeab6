// Unit tests of the crypto adapter on its own: round trips, refusals,
// known vectors. The interop tests with the openssl command are in
// interop_test.cpp.
#include <gtest/gtest.h>

#include <ctime>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shared/crypto/crypto.hpp"
#include "tests/unit/crypto/crypto_test_util.hpp"

namespace outpost::crypto {
namespace {

using testing::MakeCa;
using testing::MakeLeaf;
using testing::Spec;
using testing::TestCa;
using testing::TestLeaf;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

int64_t Now() {
  return static_cast<int64_t>(std::time(nullptr));
}

// Replaces the first `from` in the DER of a PEM block and re-armours it.
std::string TamperPem(const std::string& pem, const char* label, const std::string& from,
                      const std::string& to) {
  auto der = PemToDer(pem);
  EXPECT_TRUE(der.ok());
  std::string bytes = *der;
  size_t at = bytes.find(from);
  EXPECT_NE(at, std::string::npos) << "nothing to tamper with";
  if (at != std::string::npos) bytes.replace(at, from.size(), to);
  return DerToPem(bytes, label);
}

// ---------------------------------------------------------------------------
// Keys

TEST(crypto_key, GeneratesAndRoundTripsThroughPem) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pem, key.ToPem());
  EXPECT_TRUE(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n")) << pem;
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  EXPECT_TRUE(pub.starts_with("-----BEGIN PUBLIC KEY-----\n")) << pub;

  ASSERT_OK_AND_ASSIGN(PrivateKey again, PrivateKey::FromPem(pem));
  ASSERT_OK_AND_ASSIGN(std::string again_pem, again.ToPem());
  EXPECT_EQ(again_pem, pem);
  ASSERT_OK_AND_ASSIGN(std::string again_pub, again.PublicKeyPem());
  EXPECT_EQ(again_pub, pub);

  ASSERT_OK_AND_ASSIGN(PrivateKey other, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string other_pub, other.PublicKeyPem());
  EXPECT_NE(other_pub, pub);
}

TEST(crypto_key, MovesKeepTheKey) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  PrivateKey moved = std::move(key);
  ASSERT_OK_AND_ASSIGN(std::string moved_pub, moved.PublicKeyPem());
  EXPECT_EQ(moved_pub, pub);
}

TEST(crypto_key, RefusesGarbage) {
  for (const char* text :
       {"", "not a key", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"}) {
    auto key = PrivateKey::FromPem(text);
    ASSERT_FALSE(key.ok()) << text;
    EXPECT_EQ(key.error().code(), Errc::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------
// CSRs

TEST(crypto_csr, RoundTripsNameAndKey) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string csr, CreateCsr(key, "device-abc123"));
  EXPECT_TRUE(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")) << csr;
  ASSERT_OK_AND_ASSIGN(CsrInfo info, ParseCsr(csr));
  EXPECT_EQ(info.common_name, "device-abc123");
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  EXPECT_EQ(info.public_key_pem, pub);

  // DER works too.
  ASSERT_OK_AND_ASSIGN(std::string der, PemToDer(csr));
  ASSERT_OK_AND_ASSIGN(CsrInfo from_der, ParseCsr(der));
  EXPECT_EQ(from_der.common_name, "device-abc123");
}

TEST(crypto_csr, RefusesATamperedRequest) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string csr, CreateCsr(key, "device-abc123"));
  std::string tampered = TamperPem(csr, "CERTIFICATE REQUEST", "device-abc123", "device-xyz789");
  auto info = ParseCsr(tampered);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.error().code(), Errc::kUnauthenticated);
  EXPECT_TRUE(Contains(info.error().message(), "signature")) << info.error().message();
}

TEST(crypto_csr, RefusesGarbageAndBadNames) {
  EXPECT_FALSE(ParseCsr("").ok());
  EXPECT_FALSE(ParseCsr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE "
                        "REQUEST-----\n")
                   .ok());
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  for (const char* cn : {"", "a,b", "CN=x", "a+b", " lead", "trail ", "new\nline"}) {
    auto csr = CreateCsr(key, cn);
    ASSERT_FALSE(csr.ok()) << cn;
    EXPECT_EQ(csr.error().code(), Errc::kInvalidArgument);
  }
  EXPECT_FALSE(CreateCsr(key, std::string(65, 'a')).ok());
  EXPECT_OK(CreateCsr(key, std::string(64, 'a')));
}

// ---------------------------------------------------------------------------
// Certificates

TEST(crypto_cert, SelfSignedCaHasTheRightShape) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  const int64_t before = Now();
  ASSERT_OK_AND_ASSIGN(std::string ca, CreateSelfSignedCa(key, "Outpost Hub CA", 3650));
  const int64_t after = Now();
  EXPECT_TRUE(ca.starts_with("-----BEGIN CERTIFICATE-----\n"));
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(ca));
  EXPECT_EQ(info.common_name, "Outpost Hub CA");
  EXPECT_EQ(info.issuer_cn, "Outpost Hub CA");
  EXPECT_TRUE(info.is_ca);
  EXPECT_GE(info.not_before_unix, before - 3600);
  EXPECT_LE(info.not_before_unix, after - 3600);
  EXPECT_EQ(info.not_after_unix - info.not_before_unix, 3650 * 86400 + 3600);
  EXPECT_TRUE(info.dns_sans.empty());
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  EXPECT_EQ(info.public_key_pem, pub);
  ASSERT_OK_AND_ASSIGN(std::string der, PemToDer(ca));
  EXPECT_EQ(info.der, der);
  EXPECT_LE(info.serial_hex.size(), 32u);
  EXPECT_GE(info.serial_hex.size(), 31u);
}

TEST(crypto_cert, IssuedCertificateCarriesSansSerialAndValidity) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Test CA", 30, &ca));
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  CertSpec spec = Spec("broker", CertUsage::kServer, 10);
  spec.dns_sans = {"broker.example", "localhost"};
  spec.ip_sans = {"127.0.0.1", "::1", "10.1.2.3"};
  spec.serial_hex = "000A1B";
  ASSERT_OK_AND_ASSIGN(std::string cert, IssueCertificate(pub, spec, ca.k(), ca.cert));
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(cert));
  EXPECT_EQ(info.common_name, "broker");
  EXPECT_EQ(info.issuer_cn, "Test CA");
  EXPECT_EQ(info.serial_hex, "a1b");
  EXPECT_FALSE(info.is_ca);
  EXPECT_EQ(info.dns_sans, (std::vector<std::string>{"broker.example", "localhost"}));
  EXPECT_EQ(info.ip_sans, (std::vector<std::string>{"127.0.0.1", "::1", "10.1.2.3"}));
  EXPECT_EQ(info.not_after_unix - info.not_before_unix, 10 * 86400 + 3600);
  EXPECT_EQ(info.public_key_pem, pub);
}

TEST(crypto_cert, RandomSerialsDiffer) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Test CA", 30, &ca));
  std::set<std::string> serials;
  for (int i = 0; i < 5; ++i) {
    TestLeaf leaf;
    ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("dev", CertUsage::kClient), &leaf));
    ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(leaf.cert));
    EXPECT_GE(info.serial_hex.size(), 31u);
    EXPECT_TRUE(serials.insert(info.serial_hex).second);
  }
}

TEST(crypto_cert, NeverOutlivesItsCa) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Short CA", 2, &ca));
  TestLeaf leaf;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("dev", CertUsage::kClient, 365), &leaf));
  ASSERT_OK_AND_ASSIGN(CertInfo ca_info, ParseCertificate(ca.cert));
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(leaf.cert));
  EXPECT_EQ(info.not_after_unix, ca_info.not_after_unix);
}

TEST(crypto_cert, IssueRefusesBadInput) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Test CA", 30, &ca));
  TestCa other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Other CA", 30, &other));
  ASSERT_OK_AND_ASSIGN(std::string pub, ca.k().PublicKeyPem());

  auto expect_invalid = [&](const CertSpec& spec, const PrivateKey& key, const std::string& cert,
                            const std::string& why) {
    auto issued = IssueCertificate(pub, spec, key, cert);
    ASSERT_FALSE(issued.ok()) << why;
    EXPECT_EQ(issued.error().code(), Errc::kInvalidArgument) << why;
  };
  CertSpec good = Spec("dev", CertUsage::kClient);
  EXPECT_OK(IssueCertificate(pub, good, ca.k(), ca.cert));
  expect_invalid(good, other.k(), ca.cert, "CA key does not match");
  CertSpec spec = good;
  spec.dns_sans = {"bad name"};
  expect_invalid(spec, ca.k(), ca.cert, "DNS SAN with a space");
  spec = good;
  spec.ip_sans = {"300.1.1.1"};
  expect_invalid(spec, ca.k(), ca.cert, "bad IP");
  spec = good;
  spec.validity_days = 0;
  expect_invalid(spec, ca.k(), ca.cert, "zero validity");
  spec = good;
  spec.serial_hex = "xyz";
  expect_invalid(spec, ca.k(), ca.cert, "serial not hex");
  spec = good;
  spec.serial_hex = "0";
  expect_invalid(spec, ca.k(), ca.cert, "serial zero");
  spec = good;
  spec.common_name = "a=b";
  expect_invalid(spec, ca.k(), ca.cert, "bad CN");

  // A leaf cannot issue.
  TestLeaf leaf;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, good, &leaf));
  expect_invalid(good, leaf.k(), leaf.cert, "issuer is no CA");
  // Not a public key.
  EXPECT_FALSE(IssueCertificate("garbage", good, ca.k(), ca.cert).ok());
}

TEST(crypto_cert, ParseRefusesGarbage) {
  EXPECT_FALSE(ParseCertificate("").ok());
  EXPECT_FALSE(ParseCertificate("hello").ok());
  EXPECT_FALSE(
      ParseCertificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").ok());
}

// ---------------------------------------------------------------------------
// Chain verification

class ChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(MakeCa("Hub CA", 365, &ca_));
    ASSERT_NO_FATAL_FAILURE(MakeCa("Other CA", 365, &other_ca_));
    CertSpec spec = Spec("device-1", CertUsage::kClient, 30);
    ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca_, spec, &client_));
    spec = Spec("broker", CertUsage::kServer, 30);
    spec.dns_sans = {"localhost"};
    ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca_, spec, &server_));
    ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca_, Spec("hub-signing", CertUsage::kSigning), &signer_));
  }

  TestCa ca_, other_ca_;
  TestLeaf client_, server_, signer_;
};
// Suite names start with "crypto" so that `ctest -R crypto` selects them.
using crypto_chain = ChainTest;

TEST_F(crypto_chain, AcceptsCertificatesOfThisCa) {
  EXPECT_OK(VerifyChain(client_.cert, ca_.cert));
  EXPECT_OK(VerifyChain(server_.cert, ca_.cert));
  EXPECT_OK(VerifyChain(signer_.cert, ca_.cert));
  // DER leaf, and a bundle of CAs that holds the right one.
  ASSERT_OK_AND_ASSIGN(std::string der, PemToDer(client_.cert));
  EXPECT_OK(VerifyChain(der, ca_.cert));
  EXPECT_OK(VerifyChain(client_.cert, other_ca_.cert + ca_.cert));
}

TEST_F(crypto_chain, RefusesAnotherCa) {
  Status s = VerifyChain(client_.cert, other_ca_.cert);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);
  EXPECT_TRUE(Contains(s.error().message(), "not signed by this CA")) << s.error().message();
}

TEST_F(crypto_chain, ChecksTimeAgainstTheGivenClock) {
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(client_.cert));
  EXPECT_OK(VerifyChain(client_.cert, ca_.cert, {.now_unix = info.not_after_unix}));
  EXPECT_OK(VerifyChain(client_.cert, ca_.cert, {.now_unix = info.not_before_unix}));

  Status expired = VerifyChain(client_.cert, ca_.cert, {.now_unix = info.not_after_unix + 1});
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code(), Errc::kExpired);
  EXPECT_TRUE(Contains(expired.error().message(), "expired at")) << expired.error().message();

  Status early = VerifyChain(client_.cert, ca_.cert, {.now_unix = info.not_before_unix - 1});
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code(), Errc::kUnauthenticated);
  EXPECT_TRUE(Contains(early.error().message(), "not yet valid")) << early.error().message();
}

TEST_F(crypto_chain, RefusesALeafWhenTheCaHasExpired) {
  TestCa short_ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Short CA", 1, &short_ca));
  TestLeaf leaf;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(short_ca, Spec("dev", CertUsage::kClient, 1), &leaf));
  ASSERT_OK_AND_ASSIGN(CertInfo ca_info, ParseCertificate(short_ca.cert));
  // The leaf is capped to the CA's notAfter, so both expire together; the
  // message names whichever is checked first, and the code is kExpired.
  Status s = VerifyChain(leaf.cert, short_ca.cert, {.now_unix = ca_info.not_after_unix + 10});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kExpired);
}

TEST_F(crypto_chain, RefusesTamperedCertificates) {
  std::string tampered = TamperPem(client_.cert, "CERTIFICATE", "device-1", "device-2");
  ASSERT_OK_AND_ASSIGN(CertInfo info, ParseCertificate(tampered));
  EXPECT_EQ(info.common_name, "device-2");
  Status s = VerifyChain(tampered, ca_.cert);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);
}

TEST_F(crypto_chain, ChecksTheExpectedCommonName) {
  EXPECT_OK(VerifyChain(client_.cert, ca_.cert, {.expected_cn = "device-1"}));
  Status s = VerifyChain(client_.cert, ca_.cert, {.expected_cn = "device-2"});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);
  EXPECT_TRUE(Contains(s.error().message(), "\"device-2\"")) << s.error().message();
}

TEST_F(crypto_chain, ChecksUsage) {
  EXPECT_OK(VerifyChain(client_.cert, ca_.cert, {.usage = CertUsage::kClient}));
  EXPECT_OK(VerifyChain(server_.cert, ca_.cert, {.usage = CertUsage::kServer}));
  EXPECT_OK(VerifyChain(signer_.cert, ca_.cert, {.usage = CertUsage::kSigning}));
  EXPECT_FALSE(VerifyChain(client_.cert, ca_.cert, {.usage = CertUsage::kServer}).ok());
  EXPECT_FALSE(VerifyChain(server_.cert, ca_.cert, {.usage = CertUsage::kClient}).ok());
  EXPECT_FALSE(VerifyChain(signer_.cert, ca_.cert, {.usage = CertUsage::kClient}).ok());
  EXPECT_FALSE(VerifyChain(server_.cert, ca_.cert, {.usage = CertUsage::kServerAndClient}).ok());
  // A device's client certificate never passes as the hub's signing one.
  Status s = VerifyChain(client_.cert, ca_.cert, {.usage = CertUsage::kSigning});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);

  TestLeaf both;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca_, Spec("hub", CertUsage::kServerAndClient), &both));
  EXPECT_OK(VerifyChain(both.cert, ca_.cert, {.usage = CertUsage::kServerAndClient}));
  EXPECT_OK(VerifyChain(both.cert, ca_.cert, {.usage = CertUsage::kServer}));
  EXPECT_OK(VerifyChain(both.cert, ca_.cert, {.usage = CertUsage::kClient}));
  EXPECT_FALSE(VerifyChain(both.cert, ca_.cert, {.usage = CertUsage::kSigning}).ok());
}

TEST_F(crypto_chain, RefusesACaAsLeafAndGarbage) {
  Status s = VerifyChain(ca_.cert, ca_.cert);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnauthenticated);
  EXPECT_EQ(VerifyChain("junk", ca_.cert).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(VerifyChain(client_.cert, "junk").error().code(), Errc::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Signatures

TEST_F(crypto_chain, SignaturesVerifyWithTheSignersCertificate) {
  const std::string payload = "generation: 7\nworkloads: []\n";
  ASSERT_OK_AND_ASSIGN(std::string sig, Sign(signer_.k(), payload));
  EXPECT_EQ(sig[0], '\x30');  // DER SEQUENCE
  EXPECT_OK(VerifySignature(signer_.cert, payload, sig));
  ASSERT_OK_AND_ASSIGN(std::string der, PemToDer(signer_.cert));
  EXPECT_OK(VerifySignature(der, payload, sig));
  // The agent's recipe.
  EXPECT_OK(VerifyChain(signer_.cert, ca_.cert, {.usage = CertUsage::kSigning}));

  Status tampered = VerifySignature(signer_.cert, payload + " ", sig);
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.error().code(), Errc::kUnauthenticated);

  Status wrong_key = VerifySignature(client_.cert, payload, sig);
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_EQ(wrong_key.error().code(), Errc::kUnauthenticated);

  std::string flipped = sig;
  flipped[flipped.size() - 1] = static_cast<char>(flipped.back() ^ 0x01);
  EXPECT_FALSE(VerifySignature(signer_.cert, payload, flipped).ok());
  EXPECT_FALSE(VerifySignature(signer_.cert, payload, "").ok());
  EXPECT_FALSE(VerifySignature(signer_.cert, payload, "garbage").ok());
  EXPECT_FALSE(VerifySignature("not a cert", payload, sig).ok());
}

TEST(crypto_signature, EmptyAndLargePayloads) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("CA", 30, &ca));
  TestLeaf signer;
  ASSERT_NO_FATAL_FAILURE(MakeLeaf(ca, Spec("s", CertUsage::kSigning), &signer));
  const std::string big(1 << 20, 'x');
  for (const std::string& payload : {std::string(), big}) {
    ASSERT_OK_AND_ASSIGN(std::string sig, Sign(signer.k(), payload));
    EXPECT_OK(VerifySignature(signer.cert, payload, sig));
  }
}

// ---------------------------------------------------------------------------
// CRLs (openssl checks their meaning in interop_test.cpp)

TEST(crypto_crl, WritesPemAndRefusesBadInput) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("CA", 30, &ca));
  ASSERT_OK_AND_ASSIGN(std::string crl, CreateCrl(ca.k(), ca.cert, {"0a", "A", "1234"}, 7));
  EXPECT_TRUE(crl.starts_with("-----BEGIN X509 CRL-----\n")) << crl;
  ASSERT_OK_AND_ASSIGN(std::string empty, CreateCrl(ca.k(), ca.cert, {}, 7));
  EXPECT_LT(empty.size(), crl.size());

  EXPECT_EQ(CreateCrl(ca.k(), ca.cert, {"xyz"}, 7).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(CreateCrl(ca.k(), ca.cert, {std::string(41, '1')}, 7).error().code(),
            Errc::kInvalidArgument);
  EXPECT_EQ(CreateCrl(ca.k(), ca.cert, {}, 0).error().code(), Errc::kInvalidArgument);
  TestCa other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("Other", 30, &other));
  EXPECT_EQ(CreateCrl(other.k(), ca.cert, {}, 7).error().code(), Errc::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Encodings, hashes, randomness

TEST(crypto_encoding, PemRoundTrip) {
  const std::string der = std::string("\x30\x03\x02\x01\x00", 5) + std::string(100, '\xff');
  std::string pem = DerToPem(der, "THING");
  EXPECT_TRUE(pem.starts_with("-----BEGIN THING-----\n"));
  EXPECT_TRUE(pem.ends_with("-----END THING-----\n"));
  ASSERT_OK_AND_ASSIGN(std::string back, PemToDer(pem));
  EXPECT_EQ(back, der);
  ASSERT_OK_AND_ASSIGN(std::string with_noise, PemToDer("junk before\r\n" + pem + "after"));
  EXPECT_EQ(with_noise, der);
  EXPECT_FALSE(PemToDer("no pem here").ok());
  EXPECT_FALSE(PemToDer("-----BEGIN THING-----\nAAAA").ok());
  EXPECT_FALSE(PemToDer("-----BEGIN THING-----\n!!!!\n-----END THING-----\n").ok());
}

TEST(crypto_hash, Sha256KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(Sha256("abc").size(), 32u);
  EXPECT_EQ(HexEncode(Sha256("abc")), Sha256Hex("abc"));
}

TEST(crypto_hash, HexEncode) {
  EXPECT_EQ(HexEncode(""), "");
  EXPECT_EQ(HexEncode(std::string("\x00\x01\xab\xff", 4)), "0001abff");
}

TEST(crypto_hash, SpkiSha256IsAboutTheKey) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("CA", 30, &ca));
  ASSERT_OK_AND_ASSIGN(std::string pin, SpkiSha256(ca.cert));
  EXPECT_TRUE(pin.starts_with("sha256:"));
  EXPECT_EQ(pin.size(), 7u + 64u);
  // A new certificate for the same key has the same pin; another key not.
  ASSERT_OK_AND_ASSIGN(std::string reissued, CreateSelfSignedCa(ca.k(), "CA renewed", 60));
  ASSERT_OK_AND_ASSIGN(std::string pin2, SpkiSha256(reissued));
  EXPECT_EQ(pin2, pin);
  TestCa other;
  ASSERT_NO_FATAL_FAILURE(MakeCa("CA", 30, &other));
  ASSERT_OK_AND_ASSIGN(std::string pin3, SpkiSha256(other.cert));
  EXPECT_NE(pin3, pin);
  // It is the hash of the DER public key.
  ASSERT_OK_AND_ASSIGN(std::string pub, ca.k().PublicKeyPem());
  ASSERT_OK_AND_ASSIGN(std::string spki, PemToDer(pub));
  EXPECT_EQ(pin, "sha256:" + Sha256Hex(spki));
  EXPECT_FALSE(SpkiSha256("junk").ok());
}

TEST(crypto_compare, ConstantTimeEqual) {
  EXPECT_TRUE(ConstantTimeEqual("", ""));
  EXPECT_TRUE(ConstantTimeEqual("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "Secret"));
  EXPECT_FALSE(ConstantTimeEqual("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEqual("", "x"));
  EXPECT_TRUE(ConstantTimeEqual(std::string("a\0b", 3), std::string("a\0b", 3)));
  EXPECT_FALSE(ConstantTimeEqual(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(crypto_random, BytesHaveTheLengthAndDiffer) {
  EXPECT_EQ(RandomBytes(0).size(), 0u);
  EXPECT_EQ(RandomBytes(32).size(), 32u);
  EXPECT_EQ(RandomBytes(5000).size(), 5000u);  // more than one DRBG request
  EXPECT_NE(RandomBytes(32), RandomBytes(32));
}

TEST(crypto_random, TokensUseTheAlphabetAndAreUnique) {
  EXPECT_EQ(RandomToken(0), "");
  std::set<std::string> seen;
  std::map<char, int> counts;
  const int kTokens = 2000;
  for (int i = 0; i < kTokens; ++i) {
    std::string token = RandomToken(18);
    ASSERT_EQ(token.size(), 18u);
    for (char c : token) {
      ASSERT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) << token;
      ++counts[c];
    }
    EXPECT_TRUE(seen.insert(token).second);
  }
  // Every symbol shows up, none wildly more often than the others: 36000
  // draws, 1000 expected per symbol, sd ~31.
  EXPECT_EQ(counts.size(), 36u);
  for (const auto& [c, n] : counts) {
    EXPECT_GT(n, 800) << c;
    EXPECT_LT(n, 1200) << c;
  }
}

// ---------------------------------------------------------------------------
// Thread safety: no shared state between calls.

TEST(crypto_threads, ConcurrentCallsAreIndependent) {
  TestCa ca;
  ASSERT_NO_FATAL_FAILURE(MakeCa("CA", 30, &ca));
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (size_t t = 0; t < failures.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        auto key = PrivateKey::Generate();
        if (!key.ok()) {
          ++failures[t];
          continue;
        }
        auto pub = key->PublicKeyPem();
        auto cert = IssueCertificate(*pub, Spec("d" + std::to_string(t), CertUsage::kSigning),
                                     ca.k(), ca.cert);
        auto sig = Sign(*key, "payload");
        if (!cert.ok() || !sig.ok() || !VerifySignature(*cert, "payload", *sig).ok() ||
            !VerifyChain(*cert, ca.cert).ok()) {
          ++failures[t];
        }
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  for (int f : failures)
    EXPECT_EQ(f, 0);
}

TEST(crypto_threads, OneKeySharedByManyThreads) {
  // A key fresh from PEM, first used by many threads at once (run under
  // ThreadSanitizer to make this test bite).
  ASSERT_OK_AND_ASSIGN(PrivateKey original, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pem, original.ToPem());
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::FromPem(pem));
  ASSERT_OK_AND_ASSIGN(std::string ca, CreateSelfSignedCa(original, "CA", 30));
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (size_t t = 0; t < failures.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        auto sig = Sign(key, "payload");
        if (!sig.ok() || !VerifySignature(ca, "payload", *sig).ok()) ++failures[t];
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  for (int f : failures)
    EXPECT_EQ(f, 0);
}

}  // namespace
}  // namespace outpost::crypto
