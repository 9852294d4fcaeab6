// outpost::agent::enroll — `outpost-agent join` (docs/protocol.md,
// "Enrollment") and certificate renewal.
//
// Join: GET /v1/ca without verifying the server; refuse unless the CA's SPKI
// hash equals --ca-hash; make the device key here (it never leaves); POST
// /v1/enroll (protobuf) over TLS verified against the pinned CA; check the
// answer (certificate for our key, CN = device id, chained to the CA); then
// install key, certificate, CA and identity into the state dir atomically:
// everything is staged in a temporary directory inside the state dir and
// agent.db (holding the identity) is renamed in last, so a crash leaves either
// an enrolled state dir or one that `join` treats as empty. A failed join
// leaves nothing behind.
//
// Renewal: a new key and CSR, POST /v1/renew over mutual TLS with the current
// certificate, then an atomic swap of key and certificate (see
// RecoverIdentityFiles for the crash rules).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "agent/config/config.hpp"
#include "agent/discovery/discovery.hpp"
#include "shared/core/result.hpp"
#include "shared/http/http_client.hpp"

namespace outpost::agent::enroll {

// The transport, injectable for tests (production: http::Send).
using HttpSend = std::function<Result<http::Response>(
    const std::string& base_url, const http::Request& request, const http::ClientOptions& options)>;

struct JoinOptions {
  std::string state_dir;
  std::string hub_url;  // https://host:port
  std::string token;    // <id>.<secret>
  std::string ca_hash;  // sha256:<hex>; empty: trust the CA on first use (warned)
  std::string name;     // requested device name (DNS label); empty: from the hostname
  std::map<std::string, std::string> labels;
  bool force = false;  // enroll again although enrolled
  DiscoveryRoots roots;
  std::chrono::milliseconds timeout{15000};
};

struct JoinResult {
  std::string device_id;
  std::string hub_url;
  std::string broker_url;
  std::string ca_hash;            // of the CA now trusted
  bool ca_pinned_by_hash = true;  // false: no --ca-hash was given
  std::map<std::string, std::string> labels;
};

// Runs the whole join. Errors are one line naming the cause, e.g.
//   "CA hash mismatch: hub presented sha256:ab.., expected sha256:cd.."
//   "join token rejected: the token has expired (token_expired)"
//   "cannot reach the hub at https://h:8443: connect: Connection refused"
//   "already enrolled as device edge-1 (use --force to enroll again)"
Result<JoinResult> Join(const JoinOptions& options, const HttpSend& send);

// The one line for a non-2xx answer of /v1/enroll or /v1/renew: the hub's
// JSON error code mapped to a sentence for people.
Error MapHubError(const std::string& what, int status, const std::string& body);

// "sha256:<64 lowercase hex>" from user input (case-insensitive); error otherwise.
Result<std::string> NormalizeCaHash(const std::string& text);

// A CSR common name for join: the requested name, else the hostname made a
// DNS label plus a random suffix (the hub takes the CSR's CN as the device
// name and refuses one that exists, so identical images must not collide).
std::string CsrNameFor(const std::string& requested, const std::string& hostname,
                       const std::string& random_suffix);

// --- identity files -------------------------------------------------------

// Finishes or undoes a key/certificate swap interrupted by a crash:
//   device.crt.next and device.key.next  -> both renamed into place
//   device.crt.next only                 -> the key was swapped; rename the cert
//   device.key.next only                 -> preparation was incomplete; removed
// and removes leftovers of an interrupted join (.join-* directories, and key
// files without an enrolled agent.db are left for `join` to replace).
Status RecoverIdentityFiles(const config::StatePaths& paths);

struct RenewOptions {
  std::string hub_url;
  std::chrono::milliseconds timeout{15000};
};

struct RenewResult {
  std::int64_t not_after_unix = 0;
};

// Renews the device certificate (new key) and swaps key and certificate in
// the state dir. The caller reconnects afterwards.
Result<RenewResult> Renew(const config::StatePaths& paths, const std::string& device_id,
                          const RenewOptions& options, const HttpSend& send);

}  // namespace outpost::agent::enroll
