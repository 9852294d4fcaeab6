#include "hub/sim/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>

namespace outpost::hub::sim {

namespace {

std::unique_ptr<BIO, decltype(&BIO_free)> MemBio(const std::string& text) {
  return {BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), BIO_free};
}

bool IsAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

Result<std::unique_ptr<TlsIdentity>> TlsIdentity::FromPem(const std::string& cert_pem,
                                                          const std::string& key_pem) {
  std::unique_ptr<TlsIdentity> id(new TlsIdentity());
  auto cb = MemBio(cert_pem);
  id->cert_ = PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr);
  auto kb = MemBio(key_pem);
  id->key_ = PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr);
  if (id->cert_ == nullptr || id->key_ == nullptr) {
    return Error(Errc::kInvalidArgument, "device certificate or key does not parse");
  }
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(id->cert_), &tm) == 1) {
    id->not_after_ms_ = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  }
  return id;
}

TlsIdentity::~TlsIdentity() {
  X509_free(cert_);
  EVP_PKEY_free(key_);
}

Result<std::unique_ptr<TlsClientContext>> TlsClientContext::Create(const std::string& ca_pem,
                                                                   const std::string& host) {
  std::unique_ptr<TlsClientContext> c(new TlsClientContext());
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (c->ctx_ == nullptr) return Error(Errc::kInternal, "SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(c->ctx_, TLS1_2_VERSION);
  X509_STORE* store = SSL_CTX_get_cert_store(c->ctx_);
  auto bio = MemBio(ca_pem);
  int added = 0;
  while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store, ca) == 1) ++added;
    X509_free(ca);
  }
  if (added == 0) return Error(Errc::kInvalidArgument, "no CA certificate in the state dir");
  SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(c->ctx_);
  int ok = IsAddress(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                           : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (ok != 1) return Error(Errc::kInvalidArgument, "bad broker host " + host);
  // 10,000 idle sessions: give their record buffers back between messages.
  // Writes resume with a longer (appended) buffer after SSL_ERROR_WANT_WRITE.
  SSL_CTX_set_mode(c->ctx_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return c;
}

TlsClientContext::~TlsClientContext() {
  SSL_CTX_free(ctx_);
}

}  // namespace outpost::hub::sim
