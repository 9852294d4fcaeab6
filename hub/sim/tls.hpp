// TLS for the simulated fleet: one OpenSSL client context shared by every
// connection (CA, peer and host name verification, small buffers), and one
// identity (certificate and key) per simulated device, set on each of its
// connections.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "shared/core/result.hpp"

struct ssl_ctx_st;   // SSL_CTX
struct x509_st;      // X509
struct evp_pkey_st;  // EVP_PKEY

namespace outpost::hub::sim {

class TlsIdentity {
 public:
  static Result<std::unique_ptr<TlsIdentity>> FromPem(const std::string& cert_pem,
                                                      const std::string& key_pem);
  ~TlsIdentity();
  TlsIdentity(const TlsIdentity&) = delete;
  TlsIdentity& operator=(const TlsIdentity&) = delete;
  x509_st* cert() const { return cert_; }
  evp_pkey_st* key() const { return key_; }
  // notAfter of the certificate, Unix ms.
  std::int64_t not_after_ms() const { return not_after_ms_; }

 private:
  TlsIdentity() = default;
  x509_st* cert_ = nullptr;
  evp_pkey_st* key_ = nullptr;
  std::int64_t not_after_ms_ = 0;
};

class TlsClientContext {
 public:
  // Verifies the broker against `ca_pem` and `host` (a name or an address).
  static Result<std::unique_ptr<TlsClientContext>> Create(const std::string& ca_pem,
                                                          const std::string& host);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;
  ssl_ctx_st* ctx() const { return ctx_; }

 private:
  TlsClientContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
};

}  // namespace outpost::hub::sim
