// Test PKI for agent tests: a hub CA, the desired-state signer, and helpers
// that sign DesiredState documents the way the hub does (docs/protocol.md).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "outpost.pb.h"
#include "shared/crypto/crypto.hpp"

namespace outpost::agent::testpki {

inline crypto::PrivateKey MustKey() {
  auto key = crypto::PrivateKey::Generate();
  EXPECT_TRUE(key.ok());
  return std::move(key).value();
}

inline std::string MustIssue(const crypto::PrivateKey& subject, const std::string& cn,
                             crypto::CertUsage usage, const crypto::PrivateKey& ca_key,
                             const std::string& ca_pem, int days = 365) {
  crypto::CertSpec spec;
  spec.common_name = cn;
  spec.usage = usage;
  spec.validity_days = days;
  auto pub = subject.PublicKeyPem();
  EXPECT_TRUE(pub.ok());
  auto cert = crypto::IssueCertificate(*pub, spec, ca_key, ca_pem);
  EXPECT_TRUE(cert.ok()) << (cert.ok() ? "" : cert.error().ToString());
  return cert.ok() ? *cert : std::string();
}

// A hub CA with its signer (CN outpost-signer, usage signing).
struct Pki {
  crypto::PrivateKey ca_key = MustKey();
  std::string ca_pem;
  crypto::PrivateKey signer_key = MustKey();
  std::string signer_pem;

  Pki() {
    auto ca = crypto::CreateSelfSignedCa(ca_key, "Outpost Test CA", 3650);
    EXPECT_TRUE(ca.ok());
    ca_pem = *ca;
    signer_pem =
        MustIssue(signer_key, "outpost-signer", crypto::CertUsage::kSigning, ca_key, ca_pem);
  }

  // Signs `document` with `key` and certificate `cert_pem` (DER on the wire).
  static std::string SignWith(const outpost::v1::DesiredState& document,
                              const crypto::PrivateKey& key, const std::string& cert_pem) {
    outpost::v1::SignedDesiredState s;
    s.set_document(document.SerializeAsString());
    auto sig = crypto::Sign(key, s.document());
    EXPECT_TRUE(sig.ok());
    s.set_signature(*sig);
    auto der = crypto::PemToDer(cert_pem);
    EXPECT_TRUE(der.ok());
    s.set_signer_certificate(*der);
    return s.SerializeAsString();
  }

  std::string Sign(const outpost::v1::DesiredState& document) const {
    return SignWith(document, signer_key, signer_pem);
  }
};

inline outpost::v1::WorkloadSpec Spec(const std::string& name,
                                      std::vector<std::string> command = {"/bin/sleep", "1000"}) {
  outpost::v1::WorkloadSpec spec;
  spec.set_name(name);
  spec.set_kind(outpost::v1::WORKLOAD_KIND_PROCESS);
  for (auto& arg : command)
    spec.add_command(arg);
  spec.set_restart_policy(outpost::v1::RESTART_POLICY_ALWAYS);
  return spec;
}

inline outpost::v1::DesiredState Doc(const std::string& device_id, std::uint64_t generation,
                                     std::vector<outpost::v1::WorkloadSpec> workloads = {}) {
  outpost::v1::DesiredState d;
  d.set_device_id(device_id);
  d.set_generation(generation);
  d.set_issued_at_ms(1700000000000);
  d.set_hub_instance("test");
  for (auto& w : workloads)
    *d.add_workloads() = w;
  return d;
}

}  // namespace outpost::agent::testpki
