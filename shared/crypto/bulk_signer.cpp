#include "shared/crypto/bulk_signer.hpp"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

namespace outpost::crypto {

struct BulkSigner::Key {
  explicit Key(EVP_PKEY* k) : pkey(k) {}
  ~Key() { EVP_PKEY_free(pkey); }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;
  EVP_PKEY* pkey;
};

Result<BulkSigner> BulkSigner::Load(std::string_view key_pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), BIO_free);
  if (!bio) return Error(Errc::kInternal, "signing key: out of memory");
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (pkey == nullptr) return Error(Errc::kInvalidArgument, "signing key: not a PEM private key");
  auto key = std::make_shared<Key>(pkey);
  char curve[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(pkey, "group", curve, sizeof curve, &len) != 1 ||
      std::string_view(curve, len) != "prime256v1") {
    return Error(Errc::kInvalidArgument, "signing key: not an EC P-256 key");
  }
  return BulkSigner(std::move(key));
}

Result<std::string> BulkSigner::Sign(std::string_view payload) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string signature(128, '\0');  // a DER P-256 signature is at most 72 bytes
  std::size_t length = signature.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_->pkey) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(payload.data()), payload.size()) != 1) {
    return Error(Errc::kInternal, "ECDSA signing failed");
  }
  signature.resize(length);
  return signature;
}

}  // namespace outpost::crypto
