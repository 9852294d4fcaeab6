// Signs desired documents: SignedDesiredState{document, signature (ECDSA
// P-256/SHA-256 over the exact document bytes), signer_certificate (DER)}.
// Immutable after Load; safe to use from several threads at once.
//
// The signature is made with OpenSSL, not with the mbedTLS adapter
// (shared/crypto): a rollout signs one document per device, and mbedTLS 2.28
// takes about 1.9 ms per P-256 signature against OpenSSL's 0.02 ms, which
// made signing 80% of the hub's CPU in a 10,000-device rollout
// (docs/benchmarks.md). The bytes are the same format (DER ECDSA-Sig-Value);
// agents verify them with shared/crypto as before. Loading still checks the
// key against the certificate with shared/crypto.
#pragma once

#include <memory>
#include <string>

#include "shared/core/result.hpp"
#include "shared/crypto/crypto.hpp"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace outpost::hub::broker {

class DesiredSigner {
 public:
  // From the PEM of signing.key and signing.crt. The certificate must match
  // the key.
  static Result<std::unique_ptr<DesiredSigner>> Load(const std::string& key_pem,
                                                     const std::string& cert_pem);

  // The serialized SignedDesiredState for `document_bytes` (a serialized
  // DesiredState, signed as is).
  Result<std::string> Sign(const std::string& document_bytes) const;

  const std::string& certificate_pem() const { return cert_pem_; }

 private:
  DesiredSigner(std::shared_ptr<evp_pkey_st> key, std::string cert_pem, std::string cert_der)
      : key_(std::move(key)), cert_pem_(std::move(cert_pem)), cert_der_(std::move(cert_der)) {}
  std::shared_ptr<evp_pkey_st> key_;
  std::string cert_pem_;
  std::string cert_der_;
};

}  // namespace outpost::hub::broker
