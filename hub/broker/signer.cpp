#include "hub/broker/signer.hpp"

#include "outpost.pb.h"

namespace outpost::hub::broker {

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
  auto signer = crypto::BulkSigner::Load(key_pem);
  if (!signer.ok()) return signer.error();
  return std::unique_ptr<DesiredSigner>(
      new DesiredSigner(std::move(*signer), cert_pem, std::move(info->der)));
}

Result<std::string> DesiredSigner::Sign(const std::string& document_bytes) const {
  auto signature = signer_.Sign(document_bytes);
  if (!signature.ok()) return signature.error().WithContext("signing a desired document");
  outpost::v1::SignedDesiredState signed_doc;
  signed_doc.set_document(document_bytes);
  signed_doc.set_signature(std::move(*signature));
  signed_doc.set_signer_certificate(cert_der_);
  std::string out;
  if (!signed_doc.SerializeToString(&out)) {
    return Error(Errc::kInternal, "serializing a signed desired document failed");
  }
  return out;
}

}  // namespace outpost::hub::broker
