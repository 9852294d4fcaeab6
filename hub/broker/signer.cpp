#include "hub/broker/signer.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "outpost.pb.h"

namespace outpost::hub::broker {

namespace {

std::shared_ptr<EVP_PKEY> ReadKey(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  if (!bio) return nullptr;
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  return key == nullptr ? nullptr : std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

}  // namespace

Result<std::unique_ptr<DesiredSigner>> DesiredSigner::Load(const std::string& key_pem,
                                                           const std::string& cert_pem) {
  auto key = crypto::PrivateKey::FromPem(key_pem);
  if (!key.ok()) return key.error().WithContext("signing key");
  auto info = crypto::ParseCertificate(cert_pem);
  if (!info.ok()) return info.error().WithContext("signer certificate");
  OUTPOST_ASSIGN_OR_RETURN(std::string pub, key->PublicKeyPem());
  if (pub != info->public_key_pem) {
    return Error(Errc::kInvalidArgument, "the signer certificate does not match signing.key");
  }
  auto signing_key = ReadKey(key_pem);
  if (!signing_key) return Error(Errc::kInvalidArgument, "signing key: OpenSSL cannot read it");
  return std::unique_ptr<DesiredSigner>(
      new DesiredSigner(std::move(signing_key), cert_pem, std::move(info->der)));
}

Result<std::string> DesiredSigner::Sign(const std::string& document_bytes) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string signature(256, '\0');  // a DER P-256 signature is at most 72 bytes
  std::size_t length = signature.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(document_bytes.data()),
                     document_bytes.size()) != 1) {
    return Error(Errc::kInternal, "signing a desired document failed");
  }
  signature.resize(length);
  outpost::v1::SignedDesiredState signed_doc;
  signed_doc.set_document(document_bytes);
  signed_doc.set_signature(std::move(signature));
  signed_doc.set_signer_certificate(cert_der_);
  std::string out;
  if (!signed_doc.SerializeToString(&out)) {
    return Error(Errc::kInternal, "serializing a signed desired document failed");
  }
  return out;
}

}  // namespace outpost::hub::broker
