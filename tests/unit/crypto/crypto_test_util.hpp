// Helpers shared by the crypto tests.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>

#include "shared/core/result.hpp"
#include "shared/crypto/crypto.hpp"

// Declares `lhs` from the value of `expr`, or fails the test with its error.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(OUTPOST_CONCAT(assert_result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                   \
  auto tmp = (expr);                                                \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.error().ToString(); \
  lhs = std::move(tmp).value()

#define ASSERT_OK(expr)                                                                   \
  do {                                                                                    \
    auto assert_status = (expr);                                                          \
    ASSERT_TRUE(assert_status.ok()) << #expr << ": " << assert_status.error().ToString(); \
  } while (0)

#define EXPECT_OK(expr)                                                                   \
  do {                                                                                    \
    auto expect_status = (expr);                                                          \
    EXPECT_TRUE(expect_status.ok()) << #expr << ": " << expect_status.error().ToString(); \
  } while (0)

namespace outpost::crypto::testing {

// A CA: its key and its certificate.
struct TestCa {
  std::optional<PrivateKey> key;
  std::string cert;

  const PrivateKey& k() const { return *key; }
};

// A leaf: key and certificate issued by some CA.
struct TestLeaf {
  std::optional<PrivateKey> key;
  std::string cert;

  const PrivateKey& k() const { return *key; }
};

inline void MakeCa(const std::string& cn, int days, TestCa* out) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(out->cert, CreateSelfSignedCa(key, cn, days));
  out->key.emplace(std::move(key));
}

inline void MakeLeaf(const TestCa& ca, const CertSpec& spec, TestLeaf* out) {
  ASSERT_OK_AND_ASSIGN(PrivateKey key, PrivateKey::Generate());
  ASSERT_OK_AND_ASSIGN(std::string pub, key.PublicKeyPem());
  ASSERT_OK_AND_ASSIGN(out->cert, IssueCertificate(pub, spec, ca.k(), ca.cert));
  out->key.emplace(std::move(key));
}

inline CertSpec Spec(const std::string& cn, CertUsage usage, int days = 30) {
  CertSpec spec;
  spec.common_name = cn;
  spec.usage = usage;
  spec.validity_days = days;
  return spec;
}

}  // namespace outpost::crypto::testing
