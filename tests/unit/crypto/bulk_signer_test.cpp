#include "shared/crypto/bulk_signer.hpp"

#include <gtest/gtest.h>

#include "shared/crypto/crypto.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::crypto {
namespace {

struct SignerCert {
  std::string key_pem;
  std::string cert_pem;
};

SignerCert MakeSigner() {
  auto ca_key = PrivateKey::Generate();
  auto ca = CreateSelfSignedCa(*ca_key, "test-ca", 30);
  auto key = PrivateKey::Generate();
  CertSpec spec;
  spec.common_name = "outpost-signer";
  spec.usage = CertUsage::kSigning;
  auto cert = IssueCertificate(*key->PublicKeyPem(), spec, *ca_key, *ca);
  return {*key->ToPem(), *cert};
}

TEST(BulkSigner, SignaturesVerifyWithTheMbedTlsAdapter) {
  auto s = MakeSigner();
  auto signer = BulkSigner::Load(s.key_pem);
  ASSERT_TRUE(signer.ok()) << signer.error().ToString();
  for (std::string payload :
       {std::string(), std::string("desired gen 7"), std::string(1 << 20, 'x')}) {
    auto sig = signer->Sign(payload);
    ASSERT_TRUE(sig.ok());
    EXPECT_TRUE(VerifySignature(s.cert_pem, payload, *sig).ok());
    EXPECT_FALSE(VerifySignature(s.cert_pem, payload + "!", *sig).ok());
  }
}

TEST(BulkSigner, RefusesWhatIsNotAP256Key) {
  EXPECT_FALSE(BulkSigner::Load("not a key").ok());
  testing::TempDir dir;
  std::string out;
  ASSERT_EQ(testing::RunCommand({"openssl", "ecparam", "-name", "secp384r1", "-genkey", "-noout",
                                 "-out", dir / "p384.pem"},
                                &out),
            0)
      << out;
  auto p384 = BulkSigner::Load(testing::ReadFileOr(dir / "p384.pem"));
  ASSERT_FALSE(p384.ok());
  EXPECT_EQ(p384.error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace outpost::crypto
