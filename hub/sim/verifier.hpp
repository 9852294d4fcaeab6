// Checks signed desired documents the way an agent does (docs/protocol.md):
// the signer certificate chains to the CA pinned at enrollment, has CN
// outpost-signer and the signing usage (shared/crypto), and the signature
// verifies over the document bytes.
//
// A fleet of 10,000 simulated devices shares this machine's two cores with
// the hub and the broker under test, so the simulator must not spend a real
// device's CPU per document: the chain check runs once per distinct signer
// certificate (cached by its bytes, then re-checked only when its validity
// ends), and the signature check uses OpenSSL's P-256 (about 60 us) instead
// of mbedTLS (about 4 ms with the certificate parse). Same rules, same
// answers; only the cost differs. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "shared/core/result.hpp"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace outpost::hub::sim {

class DesiredVerifier {
 public:
  explicit DesiredVerifier(std::string ca_pem);
  ~DesiredVerifier();
  DesiredVerifier(const DesiredVerifier&) = delete;
  DesiredVerifier& operator=(const DesiredVerifier&) = delete;

  // kUnauthenticated (or kExpired) with the reason when the document is not
  // to be trusted.
  Status Verify(std::string_view signer_cert_der, std::string_view document,
                std::string_view signature_der, std::int64_t now_unix) const;

 private:
  // The public key of an accepted signer certificate (up-ref'd: the caller
  // frees it), or null with `why`.
  evp_pkey_st* KeyFor(std::string_view cert_der, std::int64_t now_unix, Status* why) const;

  std::string ca_pem_;
  mutable std::mutex mu_;
  mutable std::string cert_der_;        // the accepted signer certificate
  mutable evp_pkey_st* key_ = nullptr;  // its public key
  mutable std::int64_t not_after_ = 0;
};

}  // namespace outpost::hub::sim
