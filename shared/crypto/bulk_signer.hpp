// BulkSigner: many ECDSA P-256 / SHA-256 signatures with one key, fast.
//
// The hub signs one desired document per device in a rollout. mbedTLS 2.28
// takes about 1.9 ms per P-256 signature on the reference machine (plus a DRBG
// seeding per call), OpenSSL about 0.02 ms (docs/benchmarks.md), so this one
// hot path of the crypto adapter uses OpenSSL's libcrypto, which the hub links
// for TLS anyway. The output is the same DER ECDSA-Sig-Value that
// crypto::Sign makes and crypto::VerifySignature (mbedTLS, on the devices)
// checks. Keys, CSRs, certificates and verification stay on mbedTLS.
//
// Immutable after Load; Sign may be called from several threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "shared/core/result.hpp"

namespace outpost::crypto {

class BulkSigner {
 public:
  // From a PEM private key (SEC1 or PKCS#8, P-256 only).
  static Result<BulkSigner> Load(std::string_view key_pem);

  // DER ECDSA signature over SHA-256(payload).
  Result<std::string> Sign(std::string_view payload) const;

 private:
  struct Key;
  explicit BulkSigner(std::shared_ptr<Key> key) : key_(std::move(key)) {}
  std::shared_ptr<Key> key_;
};

}  // namespace outpost::crypto
