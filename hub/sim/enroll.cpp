#include "hub/sim/enroll.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "hub/sim/fleet_store.hpp"
#include "outpost.pb.h"
#include "shared/crypto/crypto.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::hub::sim {

namespace {

Result<DeviceRecord> EnrollOne(const EnrollOptions& o, const std::string& ca_pem,
                               const std::string& name, FleetMeta* meta, std::mutex* meta_mu) {
  OUTPOST_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate());
  OUTPOST_ASSIGN_OR_RETURN(std::string csr, crypto::CreateCsr(key, name));
  outpost::v1::EnrollRequest req;
  req.set_token(o.token);
  req.set_csr_pem(csr);
  req.set_name(name);
  auto* facts = req.mutable_facts();
  facts->set_hostname(name);
  facts->set_arch("amd64");
  facts->set_os("Debian GNU/Linux 12 (bookworm)");
  facts->set_agent_version(OUTPOST_VERSION);
  for (const auto& [k, v] : o.labels)
    (*req.mutable_labels())[k] = v;
  http::Request hr;
  hr.method = "POST";
  hr.target = "/v1/enroll";
  hr.content_type = "application/x-protobuf";
  hr.body = req.SerializeAsString();
  http::ClientOptions co;
  co.tls.ca_pem = ca_pem;
  co.timeout = std::chrono::seconds(60);
  auto resp = http::Send(o.hub_url, hr, co);
  if (!resp.ok()) return resp.error().WithContext("enrolling " + name);
  if (resp->status != 200) {
    auto j = nlohmann::json::parse(resp->body, nullptr, false);
    std::string why = j.is_object() ? j.value("message", "") + " (" + j.value("error", "") + ")"
                                    : resp->body.substr(0, 200);
    return Error(Errc::kUnavailable,
                 "enrolling " + name + ": HTTP " + std::to_string(resp->status) + ": " + why);
  }
  outpost::v1::EnrollResponse er;
  if (!er.ParseFromString(resp->body)) {
    return Error(Errc::kInvalidArgument, "enrolling " + name + ": answer does not parse");
  }
  {
    std::lock_guard lock(*meta_mu);
    if (meta->broker_url.empty()) meta->broker_url = er.broker_url();
  }
  DeviceRecord d;
  d.id = er.device_id();
  d.cert_pem = er.certificate_pem();
  OUTPOST_ASSIGN_OR_RETURN(d.key_pem, key.ToPem());
  return d;
}

}  // namespace

Status EnrollFleet(const EnrollOptions& o) {
  if (o.hub_url.empty() || o.token.empty() || o.ca_hash.empty()) {
    return Error(Errc::kInvalidArgument, "enroll needs --hub, --token and --ca-hash");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto store, FleetStore::Open(o.state_dir));
  OUTPOST_ASSIGN_OR_RETURN(FleetMeta meta, store->Meta());
  if (!meta.hub_url.empty() && meta.hub_url != o.hub_url) {
    return Error(Errc::kFailedPrecondition, o.state_dir + " holds devices of " + meta.hub_url +
                                                ", not " + o.hub_url + "; use another state dir");
  }
  OUTPOST_ASSIGN_OR_RETURN(std::size_t have, store->Count());
  if (have >= o.count) {
    std::fprintf(stderr, "outpost-sim: %zu devices already enrolled in %s\n", have,
                 o.state_dir.c_str());
    return OkStatus();
  }

  // The CA, fetched unverified and pinned by its hash (as `join` does).
  http::Request get;
  get.target = "/v1/ca";
  http::ClientOptions insecure;
  insecure.tls.insecure_skip_verify = true;
  OUTPOST_ASSIGN_OR_RETURN(auto ca_resp, http::Send(o.hub_url, get, insecure));
  if (ca_resp.status != 200) {
    return Error(Errc::kUnavailable, "GET /v1/ca: HTTP " + std::to_string(ca_resp.status));
  }
  OUTPOST_ASSIGN_OR_RETURN(std::string hash, crypto::SpkiSha256(ca_resp.body));
  if (hash != o.ca_hash) {
    return Error(Errc::kUnauthenticated,
                 "CA hash mismatch: hub presented " + hash + ", expected " + o.ca_hash);
  }
  meta.hub_url = o.hub_url;
  meta.ca_pem = ca_resp.body;

  // Names: <prefix>-<tag>-<n>; the tag keeps a re-run after a crash (devices
  // the hub enrolled but sim.db never stored) from asking for taken names.
  const std::string tag = crypto::RandomToken(4);
  const std::size_t missing = o.count - have;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first_error = OkStatus();
  std::vector<DeviceRecord> pending;
  std::size_t done = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto flush = [&]() -> Status {
    // Called with mu held.
    if (pending.empty()) return OkStatus();
    Status s = store->Insert(pending);
    done += pending.size();
    pending.clear();
    return s;
  };
  auto work = [&] {
    for (;;) {
      std::size_t i = next.fetch_add(1);
      if (i >= missing || failed.load()) return;
      char name[96];
      std::snprintf(name, sizeof name, "%s-%s-%zu", o.prefix.c_str(), tag.c_str(), have + i + 1);
      auto d = EnrollOne(o, meta.ca_pem, name, &meta, &mu);
      std::lock_guard lock(mu);
      if (!d.ok()) {
        if (!failed.exchange(true)) first_error = d.error();
        return;
      }
      pending.push_back(std::move(*d));
      if (pending.size() >= 100) {
        if (Status s = flush(); !s.ok()) {
          if (!failed.exchange(true)) first_error = s;
          return;
        }
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "outpost-sim: enrolled %zu/%zu (%.0f/s)\n", have + done, o.count,
                     static_cast<double>(done) / secs);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < std::max(1, o.jobs); ++j)
    threads.emplace_back(work);
  for (auto& t : threads)
    t.join();
  {
    std::lock_guard lock(mu);
    if (Status s = flush(); !s.ok() && first_error.ok()) first_error = s;
  }
  OUTPOST_TRY(store->SetMeta(meta));
  if (!first_error.ok()) return first_error;
  std::fprintf(stderr, "outpost-sim: %zu devices enrolled in %s\n", have + done,
               o.state_dir.c_str());
  return OkStatus();
}

}  // namespace outpost::hub::sim
