// The one crypto adapter of Outpost (mbedTLS 2.28 underneath; only crypto.cpp
// includes mbedTLS). Everything here is EC P-256 with SHA-256.
//
// What it covers: device and CA keys, CSRs, a self-signed hub CA, issuing
// server/client/signing certificates with DNS and IP SANs, chain
// verification, detached signatures (the hub signs desired-state documents,
// the agent verifies them), the CA pin used by `join --ca-hash`, CRLs for the
// broker, SHA-256, constant-time comparison and random tokens.
//
// Formats: keys, CSRs, certificates and CRLs travel as PEM strings that the
// openssl command reads; signatures are DER-encoded ECDSA-Sig-Value (what
// `openssl dgst -sha256 -sign` writes). Serial numbers are lowercase hex of
// the positive integer with no leading zeros ("1a2b..."); inputs accept any
// case and leading zeros.
//
// Names: common names (CN) are 1..64 printable ASCII characters without
// , = + \ " < > ; # and without leading or trailing spaces (a device id, a
// hostname, "Outpost Hub CA"); anything else is refused with
// kInvalidArgument.
//
// Thread safety: every function is self-contained. Functions that need
// randomness seed their own CTR-DRBG from the kernel's entropy for that call;
// there is no global state, so any function may be called from any thread
// at the same time. Several threads may share one PrivateKey (const): its
// uses are serialized by a mutex inside it (mbedTLS does not promise that
// its contexts are safe to share).
//
// Errors: malformed input is kInvalidArgument; a bad signature, a certificate
// not issued by the given CA, a wrong CN or usage is kUnauthenticated; an
// expired certificate is kExpired; a library failure that should not happen is
// kInternal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shared/core/result.hpp"

namespace outpost::crypto {

// An EC P-256 private key. Move-only (a moved-from key may only be assigned
// to or destroyed); the key material is wiped on destruction.
class PrivateKey {
 public:
  // A fresh P-256 key from a CTR-DRBG seeded with the kernel's entropy.
  static Result<PrivateKey> Generate();
  // SEC1 ("EC PRIVATE KEY") or unencrypted PKCS#8 ("PRIVATE KEY") PEM, as
  // written by ToPem() or `openssl genpkey`/`openssl ecparam -genkey`.
  // Anything but a P-256 key is refused.
  static Result<PrivateKey> FromPem(std::string_view pem);

  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;
  ~PrivateKey();

  // SEC1 PEM ("-----BEGIN EC PRIVATE KEY-----"); store it with mode 0600.
  Result<std::string> ToPem() const;
  // The public half as SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----").
  Result<std::string> PublicKeyPem() const;

 private:
  struct Impl;              // the mbedTLS context; defined in crypto.cpp
  friend struct KeyAccess;  // crypto.cpp's free functions reach the context
  explicit PrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// Certificate signing requests

// A PKCS#10 CSR (PEM) for `key`, subject "CN=<common_name>", signed with
// ECDSA-SHA256.
Result<std::string> CreateCsr(const PrivateKey& key, const std::string& common_name);

struct CsrInfo {
  std::string common_name;     // empty if the subject has no CN
  std::string public_key_pem;  // SubjectPublicKeyInfo PEM, feed to IssueCertificate
};

// Parses a CSR (PEM or DER), checks its self-signature (a CSR whose signature
// does not verify is refused with kUnauthenticated) and that its key is
// P-256 (else kInvalidArgument).
Result<CsrInfo> ParseCsr(std::string_view pem);

// ---------------------------------------------------------------------------
// Certificates

// What a certificate is for. kServer: TLS server (extendedKeyUsage
// serverAuth). kClient: TLS client (clientAuth). kServerAndClient: both.
// kSigning: detached signatures only (extendedKeyUsage codeSigning, no TLS);
// the hub's desired-state signing certificate. Verifiers ask for the usage
// they need (VerifyOptions::usage), so a device's client certificate, though
// issued by the same CA, can never pass as the hub's signing certificate.
enum class CertUsage { kServer, kClient, kServerAndClient, kSigning };

struct CertSpec {
  using Usage = CertUsage;
  std::string common_name{};
  std::vector<std::string> dns_sans{};  // "broker.example", "localhost"
  std::vector<std::string> ip_sans{};   // "127.0.0.1", "::1" (IPv4 or IPv6 text)
  int validity_days = 365;              // 1..36500; notBefore is backdated 1 hour
  CertUsage usage = CertUsage::kClient;
  std::string serial_hex{};  // empty: a random positive 127-bit serial
};

// A self-signed CA certificate (PEM) for `key`: subject and issuer
// "CN=<common_name>", basicConstraints critical CA:TRUE pathlen:0, keyUsage
// keyCertSign|cRLSign, subject key identifier. notBefore is backdated 1 hour.
Result<std::string> CreateSelfSignedCa(const PrivateKey& key, const std::string& common_name,
                                       int validity_days);

// Issues a leaf certificate (PEM) for the public key `subject_public_key_pem`
// (CsrInfo::public_key_pem or PrivateKey::PublicKeyPem()), signed by
// `ca_key`, whose certificate is `ca_cert_pem` (the two must match). The
// subject is "CN=<spec.common_name>" (the CSR's own CN is not used: the issuer
// decides names). basicConstraints CA:FALSE, keyUsage digitalSignature
// (+keyAgreement for TLS usages), extendedKeyUsage per spec.usage,
// subjectAltName with the DNS and IP SANs, subject and authority key ids.
Result<std::string> IssueCertificate(const std::string& subject_public_key_pem,
                                     const CertSpec& spec, const PrivateKey& ca_key,
                                     const std::string& ca_cert_pem);

struct CertInfo {
  std::string common_name;  // subject CN, empty if none
  std::string issuer_cn;    // issuer CN, empty if none
  std::string serial_hex;   // lowercase, no leading zeros
  int64_t not_before_unix = 0;
  int64_t not_after_unix = 0;
  std::vector<std::string> dns_sans;
  std::vector<std::string> ip_sans;  // text form: "127.0.0.1", "::1"
  std::string public_key_pem;        // SubjectPublicKeyInfo PEM; compare with
                                     // PrivateKey::PublicKeyPem() to match a key
  std::string der;                   // the whole certificate, DER
  bool is_ca = false;                // basicConstraints CA:TRUE
};

// Parses the first certificate of a PEM (or a DER certificate).
Result<CertInfo> ParseCertificate(std::string_view pem);

struct VerifyOptions {
  // The time to check validity against; default: the system clock.
  std::optional<int64_t> now_unix{};
  // When set, the leaf's subject CN must equal this exactly.
  std::string expected_cn{};
  // When set, the leaf must allow this usage. kServer/kClient: its
  // extendedKeyUsage, if present, must include serverAuth/clientAuth (for
  // kServerAndClient: both). kSigning: extendedKeyUsage must be present and
  // include codeSigning.
  std::optional<CertUsage> usage{};
};

// Checks that `leaf_pem` (PEM or DER, one certificate) is a non-CA certificate
// issued directly by the CA certificate `ca_pem` (PEM; may hold several CAs,
// any of them may be the issuer), that both are within their validity period
// at `now`, and the options. Messages name the cause: "certificate expired
// at 2025-01-01T00:00:00Z", "certificate is not yet valid ...", "certificate
// is not signed by this CA", "certificate CN is \"x\", expected \"y\"",
// "certificate is not valid for client authentication", ...
Status VerifyChain(std::string_view leaf_pem, std::string_view ca_pem,
                   const VerifyOptions& options = {});

// ---------------------------------------------------------------------------
// Detached signatures

// ECDSA over SHA-256(payload) with `key`; DER ECDSA-Sig-Value (the format of
// `openssl dgst -sha256 -sign`).
Result<std::string> Sign(const PrivateKey& key, std::string_view payload);

// Checks `signature_der` over `payload` with the public key of the
// certificate `cert_pem_or_der` (PEM or DER). Does NOT check the
// certificate's chain: for a signed desired-state document call
//   VerifyChain(signer_cert, ca, {.usage = CertUsage::kSigning})
// and then VerifySignature(signer_cert, payload, signature).
Status VerifySignature(std::string_view cert_pem_or_der, std::string_view payload,
                       std::string_view signature_der);

// ---------------------------------------------------------------------------
// Certificate revocation

// An X.509 v2 CRL (PEM) signed by the CA (ecdsa-with-SHA256): thisUpdate now,
// nextUpdate now + next_update_days (1..3650), one entry per revoked serial
// (revocationDate = thisUpdate; duplicates dropped), extensions
// authorityKeyIdentifier and cRLNumber (= thisUpdate as Unix seconds, so it
// grows with every CRL). For Mosquitto's `crlfile`.
Result<std::string> CreateCrl(const PrivateKey& ca_key, const std::string& ca_cert_pem,
                              const std::vector<std::string>& revoked_serials_hex,
                              int next_update_days);

// ---------------------------------------------------------------------------
// Encodings, hashes, randomness

// PEM with `label` ("CERTIFICATE", ...) around base64 of `der`, 64 per line.
std::string DerToPem(std::string_view der, const char* label);
// The DER inside the first PEM block of `pem`, whatever its label.
Result<std::string> PemToDer(std::string_view pem);

std::string HexEncode(std::string_view bytes);  // lowercase
std::string Sha256(std::string_view data);      // raw 32 bytes
std::string Sha256Hex(std::string_view data);   // 64 lowercase hex digits

// The CA pin of `outpost-agent join --ca-hash`: "sha256:<hex>" of the DER
// SubjectPublicKeyInfo of the certificate (PEM or DER), like kubeadm's
// discovery-token-ca-cert-hash. Equals
//   openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
Result<std::string> SpkiSha256(std::string_view cert_pem);

// True when a and b are equal; the time taken depends only on the lengths.
// For tokens, MACs and hashes.
bool ConstantTimeEqual(std::string_view a, std::string_view b);

// n random bytes from a CTR-DRBG seeded with the kernel's entropy. Aborts the
// process if the kernel has no entropy to give (there is no recovering).
std::string RandomBytes(size_t n);
// n characters from [a-z0-9], uniformly (rejection sampling, no modulo bias).
// Join tokens are RandomToken(6) + "." + RandomToken(16).
std::string RandomToken(size_t n);

}  // namespace outpost::crypto
