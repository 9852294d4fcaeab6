// Signs desired documents: SignedDesiredState{document, signature (ECDSA
// P-256/SHA-256 over the exact document bytes), signer_certificate (DER)}.
// Immutable after Load; safe to use from several threads at once.
//
// The signature comes from crypto::BulkSigner (the crypto adapter's fast path:
// a rollout signs one document per device; see bulk_signer.hpp); agents verify
// with crypto::VerifySignature. Loading checks the key against the certificate.
#pragma once

#include <memory>
#include <string>

#include "shared/core/result.hpp"
#include "shared/crypto/bulk_signer.hpp"
#include "shared/crypto/crypto.hpp"

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
  DesiredSigner(crypto::BulkSigner signer, std::string cert_pem, std::string cert_der)
      : signer_(std::move(signer)),
        cert_pem_(std::move(cert_pem)),
        cert_der_(std::move(cert_der)) {}
  crypto::BulkSigner signer_;
  std::string cert_pem_;
  std::string cert_der_;
};

}  // namespace outpost::hub::broker
