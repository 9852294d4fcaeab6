// An in-process stand-in for the hub's enrollment API, behind the
// enroll::HttpSend seam: GET /v1/ca, POST /v1/enroll, POST /v1/renew, with
// the JSON errors of docs/protocol.md.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <string>

#include "agent/enroll/enroll.hpp"
#include "outpost.pb.h"
#include "shared/crypto/crypto.hpp"
#include "tests/unit/agent_sync/test_pki.hpp"

namespace outpost::agent::testhub {

class FakeHub {
 public:
  explicit FakeHub(const testpki::Pki& pki) : pki_(pki) {}

  // What the next /v1/enroll answers: empty = success, else this JSON error code.
  std::string enroll_error;
  int enroll_error_status = 401;
  bool unreachable = false;
  bool tls_mismatch = false;  // the pinned-CA TLS check fails
  std::string broker_url = "ssl://127.0.0.1:8883";
  int device_counter = 0;
  int cert_days = 365;
  std::atomic<int> enroll_calls{0};
  std::atomic<int> renew_calls{0};
  std::string last_token;
  std::string last_csr_cn;
  outpost::v1::EnrollRequest last_request;
  std::string last_client_cert;

  enroll::HttpSend Send() {
    return [this](const std::string& base, const http::Request& req,
                  const http::ClientOptions& opts) { return Handle(base, req, opts); };
  }

 private:
  Result<http::Response> Handle(const std::string& base, const http::Request& req,
                                const http::ClientOptions& opts) {
    if (unreachable) return Error(Errc::kUnavailable, "connect " + base + ": Connection refused");
    http::Response r;
    if (req.target == "/v1/ca" && req.method == "GET") {
      if (!opts.tls.insecure_skip_verify && opts.tls.ca_pem.empty())
        return Error(Errc::kUnauthenticated, "no CA to verify with");
      r.status = 200;
      r.body = pki_.ca_pem;
      return r;
    }
    // Everything else is verified against the pinned CA.
    if (opts.tls.insecure_skip_verify || opts.tls.ca_pem != pki_.ca_pem || tls_mismatch)
      return Error(Errc::kUnauthenticated, "certificate verify failed");
    if (req.target == "/v1/enroll" && req.method == "POST") {
      ++enroll_calls;
      outpost::v1::EnrollRequest er;
      if (!er.ParseFromString(req.body)) return Json(400, "bad_request", "not an EnrollRequest");
      last_request = er;
      last_token = er.token();
      if (!enroll_error.empty()) return Json(enroll_error_status, enroll_error, "refused");
      auto csr = crypto::ParseCsr(er.csr_pem());
      if (!csr.ok()) return Json(400, "bad_csr", csr.error().message());
      last_csr_cn = csr->common_name;
      std::string id = csr->common_name.empty() ? "device-" + std::to_string(++device_counter)
                                                : csr->common_name;
      crypto::CertSpec spec;
      spec.common_name = id;
      spec.usage = crypto::CertUsage::kClient;
      spec.validity_days = cert_days;
      auto cert = crypto::IssueCertificate(csr->public_key_pem, spec, pki_.ca_key, pki_.ca_pem);
      if (!cert.ok()) return Json(500, "internal", cert.error().message());
      outpost::v1::EnrollResponse resp;
      resp.set_device_id(id);
      resp.set_certificate_pem(*cert);
      resp.set_ca_pem(pki_.ca_pem);
      resp.set_broker_url(broker_url);
      resp.set_hub_url(base);
      (*resp.mutable_labels())["role"] = "store";
      for (const auto& [k, v] : er.labels())
        (*resp.mutable_labels())[k] = v;
      r.status = 200;
      r.body = resp.SerializeAsString();
      return r;
    }
    if (req.target == "/v1/renew" && req.method == "POST") {
      ++renew_calls;
      last_client_cert = opts.tls.client_cert_pem;
      if (opts.tls.client_cert_pem.empty())
        return Json(401, "certificate_required", "mutual TLS needed");
      auto info = crypto::ParseCertificate(opts.tls.client_cert_pem);
      outpost::v1::RenewRequest rr;
      if (!info.ok() || !rr.ParseFromString(req.body)) return Json(400, "bad_csr", "bad");
      auto csr = crypto::ParseCsr(rr.csr_pem());
      if (!csr.ok()) return Json(400, "bad_csr", csr.error().message());
      crypto::CertSpec spec;
      spec.common_name = info->common_name;
      spec.usage = crypto::CertUsage::kClient;
      spec.validity_days = cert_days;
      auto cert = crypto::IssueCertificate(csr->public_key_pem, spec, pki_.ca_key, pki_.ca_pem);
      if (!cert.ok()) return Json(500, "internal", cert.error().message());
      outpost::v1::RenewResponse resp;
      resp.set_certificate_pem(*cert);
      r.status = 200;
      r.body = resp.SerializeAsString();
      return r;
    }
    return Json(404, "not_found", "no such path");
  }

  static http::Response Json(int status, const std::string& code, const std::string& message) {
    http::Response r;
    r.status = status;
    r.content_type = "application/json";
    r.body = nlohmann::json{{"error", code}, {"message", message}}.dump();
    return r;
  }

  const testpki::Pki& pki_;
};

}  // namespace outpost::agent::testhub
