#include "hub/sim/verifier.hpp"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

#include "shared/crypto/crypto.hpp"

namespace outpost::hub::sim {

namespace {

constexpr const char* kSignerCn = "outpost-signer";

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

DesiredVerifier::DesiredVerifier(std::string ca_pem) : ca_pem_(std::move(ca_pem)) {}

DesiredVerifier::~DesiredVerifier() {
  EVP_PKEY_free(key_);
}

EVP_PKEY* DesiredVerifier::KeyFor(std::string_view cert_der, std::int64_t now_unix,
                                  Status* why) const {
  std::lock_guard lock(mu_);
  if (key_ != nullptr && cert_der == cert_der_ && now_unix <= not_after_) {
    EVP_PKEY_up_ref(key_);
    return key_;
  }
  crypto::VerifyOptions options;
  options.now_unix = now_unix;
  options.expected_cn = kSignerCn;
  options.usage = crypto::CertUsage::kSigning;
  if (Status s = crypto::VerifyChain(cert_der, ca_pem_, options); !s.ok()) {
    *why = Error(s.error().code(), "signer certificate refused: " + s.error().message());
    return nullptr;
  }
  auto info = crypto::ParseCertificate(cert_der);
  if (!info.ok()) {
    *why = Error(Errc::kUnauthenticated, "signer certificate: " + info.error().message());
    return nullptr;
  }
  const unsigned char* p = U(cert_der);
  std::unique_ptr<X509, decltype(&X509_free)> x509(
      d2i_X509(nullptr, &p, static_cast<long>(cert_der.size())), X509_free);
  EVP_PKEY* key = x509 ? X509_get_pubkey(x509.get()) : nullptr;
  if (key == nullptr) {
    *why = Error(Errc::kUnauthenticated, "signer certificate has no usable public key");
    return nullptr;
  }
  EVP_PKEY_free(key_);
  key_ = key;
  cert_der_ = std::string(cert_der);
  not_after_ = info->not_after_unix;
  EVP_PKEY_up_ref(key_);
  return key_;
}

Status DesiredVerifier::Verify(std::string_view signer_cert_der, std::string_view document,
                               std::string_view signature_der, std::int64_t now_unix) const {
  if (signer_cert_der.empty() || signature_der.empty()) {
    return Error(Errc::kUnauthenticated, "document is not signed");
  }
  Status why = OkStatus();
  EVP_PKEY* key = KeyFor(signer_cert_der, now_unix, &why);
  if (key == nullptr) return why;
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> owned(key, EVP_PKEY_free);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
    return Error(Errc::kInternal, "signature check could not start");
  }
  int rc = EVP_DigestVerify(ctx.get(), U(signature_der), signature_der.size(), U(document),
                            document.size());
  if (rc != 1) return Error(Errc::kUnauthenticated, "signature does not verify");
  return OkStatus();
}

}  // namespace outpost::hub::sim
