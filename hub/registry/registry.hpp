// outpost::hub::registry — the hub's state in hub.db (through shared/store):
// join tokens, devices, applications, each device's desired document and its
// generation, reports, presence, events and rollout progress.
//
// Threading: a Registry is NOT thread-safe. It owns one store::Database
// connection and belongs to one strand (the hub's state strand); every call
// runs to completion on it. Other processes or threads may open their own
// Registry on the same file (WAL, IMMEDIATE transactions): the token checks
// and every read-modify-write below run in one IMMEDIATE transaction, so two
// writers never interleave (e.g. two enrollments racing for a token's last
// use: exactly one wins). kUnavailable means the file stayed locked past the
// busy timeout; retry.
//
// Time: every call that needs the time takes `now` (Unix milliseconds); the
// registry never reads a clock.
//
// Desired documents: every device has one from enrollment on (generation 1,
// possibly with no workloads). A mutation that changes a device's rendered
// workload list stores the new DesiredState and bumps its generation by
// exactly 1 in the same transaction; an unchanged render bumps nothing. The
// mutation returns each changed document (DesiredChange) so the caller can
// sign `document_bytes` (StoreSigned), publish it retained, and MarkPublished
// once the broker acknowledged it. Rendering is incremental: applying or
// deleting an application re-renders only the devices its old or new selector
// matches (found through an index on device labels, not a table scan);
// changing a device's labels re-renders that device only.
//
// Per-message work (RecordReport, RecordEvents, SetPresence, Touch) is a few
// indexed row reads and writes, independent of the number of devices.
//
// Revoked devices: RecordReport, RecordEvents, SetPresence, Touch, UpdateFacts
// and SetLabels refuse them with kPermissionDenied (their messages are
// ignored); their certificate serials stay in RevokedSerials() for the CRL.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hub/apps/apps.hpp"
#include "outpost.pb.h"
#include "shared/core/result.hpp"

namespace outpost::store {
class Database;
}

namespace outpost::hub::registry {

using Labels = apps::Labels;
using UnixMs = std::int64_t;  // Unix time in milliseconds

// ---------------------------------------------------------------------------
// Token errors. ConsumeToken and EnrollDevice fail with these codes; the API
// maps them to its JSON error ids with TokenErrorId().
//   invalid (bad format, unknown id, wrong secret) -> Errc::kUnauthenticated
//   expired                                         -> Errc::kExpired
//   revoked                                         -> Errc::kPermissionDenied
//   no uses left                                    -> Errc::kConflict
inline constexpr std::string_view kInvalidToken = "invalid_token";
inline constexpr std::string_view kTokenExpired = "token_expired";
inline constexpr std::string_view kTokenRevoked = "token_revoked";
inline constexpr std::string_view kTokenUsedUp = "token_used_up";
// The JSON error id for an error from ConsumeToken/EnrollDevice, or "" when
// the error is not about the token (storage, bad name, ...).
std::string_view TokenErrorId(const Error& error);

inline constexpr std::size_t kTokenIdLength = 6;
inline constexpr std::size_t kTokenSecretLength = 16;  // what CreateToken makes
inline constexpr std::size_t kMinTokenSecretLength = 16;
inline constexpr std::size_t kMaxTokenSecretLength = 128;

struct TokenInfo {
  std::string id;  // 6 chars [a-z0-9]
  Labels labels;   // become the enrolled device's labels
  UnixMs created_ms = 0;
  UnixMs expires_ms = 0;
  int uses_total = 0;
  int uses_left = 0;
  bool revoked = false;

  // "active", "expired", "used-up" or "revoked" at `now` (revoked wins,
  // then used-up, then expired).
  std::string_view State(UnixMs now) const;
};

struct CreatedToken {
  TokenInfo info;
  std::string secret;  // shown once; only its SHA-256 is stored
  std::string token;   // "<id>.<secret>"
};

// ---------------------------------------------------------------------------
// Devices

struct Device {
  std::string id;
  Labels labels;
  UnixMs created_ms = 0;
  bool revoked = false;
  UnixMs revoked_ms = 0;
  bool online = false;
  UnixMs presence_ms = 0;                 // when `online` last changed
  UnixMs last_seen_ms = 0;                // last message of any kind from the device; 0: never
  std::uint64_t desired_generation = 0;   // the hub's current generation
  std::uint64_t observed_generation = 0;  // from the last stored report (applied)
  std::uint64_t reported_desired_generation = 0;  // from the last report (held)
  std::uint64_t report_seq = 0;                   // of the last stored report; 0: none
  UnixMs reported_ms = 0;                         // when it was stored
  // The last stored report as it arrived (workloads, outbox depth, ...);
  // empty when report_seq == 0.
  outpost::v1::ReportedState report;
  outpost::v1::DeviceFacts facts;  // from enrollment, updated by reports/UpdateFacts
  std::string cert_serial;         // current certificate (SetDeviceCertificate)
  UnixMs cert_not_after_ms = 0;
  std::uint64_t contiguous_mark = 0;  // highest contiguous event seq stored
};

struct EnrollRequest {
  std::string token;           // "<id>.<secret>"
  std::string requested_name;  // sanitized to a DNS label; "" -> "device"
  Labels labels;               // added to the token's labels (the token's win a conflict)
  outpost::v1::DeviceFacts facts;
};

// ---------------------------------------------------------------------------
// Desired documents

// One device's new desired document, produced by a mutation.
struct DesiredChange {
  std::string device_id;
  std::uint64_t generation = 0;
  outpost::v1::DesiredState document;
  std::string document_bytes;  // document serialized once: the bytes to sign
};

// What a mutation changed: the devices whose desired document changed, in
// device-id order.
struct Mutation {
  std::vector<DesiredChange> desired;
  // Overrides skipped while rendering (apps::RenderedDevice::warnings),
  // prefixed with the device id. Informational.
  std::vector<std::string> warnings;
};

struct DesiredRecord {
  std::string device_id;
  std::uint64_t generation = 0;
  std::string document;                    // serialized DesiredState (what is signed)
  std::string signed_document;             // serialized SignedDesiredState; "" until StoreSigned
  std::uint64_t signed_generation = 0;     // generation signed_document is for
  std::uint64_t published_generation = 0;  // highest generation MarkPublished
};

// ---------------------------------------------------------------------------
// Applications

struct StoredApplication {
  apps::Application app;
  UnixMs created_ms = 0;
  UnixMs updated_ms = 0;
  std::uint64_t revision = 0;  // 1 on create, +1 on every content change
};

enum class ApplyAction { kCreated, kConfigured, kUnchanged };
std::string_view ApplyActionName(ApplyAction action);  // "created", "configured", "unchanged"

struct ApplyResult {
  std::vector<std::pair<std::string, ApplyAction>> applications;  // input order
  Mutation mutation;
};

struct RolloutStatus {
  std::string app;
  std::uint64_t revision = 0;
  std::uint64_t matched = 0;  // devices the app currently selects (not revoked)
  // Matched devices whose observed_generation >= the generation that first
  // carried the app's current content to them.
  std::uint64_t updated = 0;
  std::uint64_t online = 0;  // matched devices that are online
  // Up to 50 matched devices that are not updated yet, sorted by id.
  std::vector<std::string> pending;
  bool done() const { return updated == matched; }
};

// ---------------------------------------------------------------------------
// Reports and events

struct ReportOutcome {
  bool stored = false;  // false: report_seq not newer than the stored one
  std::uint64_t hub_generation = 0;
  // The device holds an older generation than the hub's current one: the
  // caller should republish the signed document (throttled).
  bool device_behind = false;
  // The device holds a newer generation than the hub has (hub.db restored
  // from a backup): the caller should call EnsureGenerationAbove.
  bool device_ahead = false;
};

struct EventsOutcome {
  std::uint64_t contiguous_mark = 0;  // publish as Ack.acked_seq
  std::uint64_t hub_generation = 0;   // publish as Ack.hub_generation
  std::size_t stored = 0;
  std::size_t duplicates = 0;
  std::size_t invalid = 0;  // seq 0 or above INT64_MAX: ignored
};

struct StoredEvent {
  outpost::v1::Event event;
  UnixMs received_ms = 0;
};

// ---------------------------------------------------------------------------

struct Options {
  // DesiredState.hub_instance of the documents rendered.
  std::string hub_instance;
  // store busy timeout for the hub.db connection.
  std::chrono::milliseconds busy_timeout{5000};
};

class Registry {
 public:
  // Opens (creating and migrating) hub.db at `path`.
  static Result<std::unique_ptr<Registry>> Open(const std::string& path,
                                                const Options& options = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // ---- Tokens ------------------------------------------------------------
  // ttl > 0, uses >= 1, labels valid (apps::ValidateLabels).
  Result<CreatedToken> CreateToken(std::chrono::milliseconds ttl, int uses, const Labels& labels,
                                   UnixMs now);
  Result<std::vector<TokenInfo>> ListTokens();  // by creation time
  Status RevokeToken(std::string_view id);      // kNotFound
  // Checks and consumes one use in one IMMEDIATE transaction; returns the
  // token's labels. Errors: see TokenErrorId.
  Result<Labels> ConsumeToken(std::string_view token, UnixMs now);

  // ---- Devices -----------------------------------------------------------
  struct Enrollment {
    std::string device_id;
    Labels labels;
    Mutation mutation;  // the device's first document (generation 1)
  };
  // Consumes one use of the token, creates the device and its first desired
  // document, all in one transaction. Device id: requested_name lowercased,
  // other characters turned into '-', trimmed to a DNS label ("device" when
  // nothing is left; a leading "outpost-" is removed because those names are
  // reserved); when taken, "-" plus 5 random [a-z0-9] is appended.
  // Labels: the request's, then the token's over them; invalid ones are
  // refused (kInvalidArgument).
  Result<Enrollment> EnrollDevice(const EnrollRequest& request, UnixMs now);
  // Records the device's current certificate (enrollment, renewal).
  Status SetDeviceCertificate(std::string_view id, std::string_view serial_hex, UnixMs not_after_ms,
                              UnixMs now);
  Result<Device> GetDevice(std::string_view id);  // kNotFound
  Result<std::vector<Device>> ListDevices();      // by id
  // Replaces all labels.
  Result<Mutation> SetLabels(std::string_view id, const Labels& labels, UnixMs now);
  // kubectl-style edits: "k=v" sets, "k-" removes; applied in order. Bad
  // syntax or labels: kInvalidArgument, nothing changed.
  Result<Mutation> EditLabels(std::string_view id, std::span<const std::string> edits, UnixMs now);
  // Marks the device revoked; returns all its certificate serials (for the
  // CRL). Revoking twice is fine (same serials).
  Result<std::vector<std::string>> RevokeDevice(std::string_view id, UnixMs now);
  // Removes the device and everything about it; its certificate serials stay
  // revoked (returned, for the CRL). kNotFound when absent.
  Result<std::vector<std::string>> DeleteDevice(std::string_view id);
  // Every serial of a revoked or deleted device.
  Result<std::vector<std::string>> RevokedSerials();
  Status UpdateFacts(std::string_view id, const outpost::v1::DeviceFacts& facts, UnixMs now);

  // ---- Applications ------------------------------------------------------
  // Stores the applications (unchanged content: no-op) and re-renders the
  // devices selected by the old or new selector of each changed one, all in
  // one transaction.
  Result<ApplyResult> ApplyApplications(std::vector<apps::Application> applications, UnixMs now);
  // Removes the application; its devices get documents without its workloads.
  Result<Mutation> DeleteApplication(std::string_view name, UnixMs now);  // kNotFound
  Result<std::vector<StoredApplication>> ListApplications();              // by name
  Result<StoredApplication> GetApplication(std::string_view name);        // kNotFound
  Result<RolloutStatus> GetRolloutStatus(std::string_view app_name);      // kNotFound

  // ---- Desired documents -------------------------------------------------
  Result<DesiredRecord> GetDesired(std::string_view id);  // kNotFound
  // Stores the signed form of `generation`; ignored (ok) when the device has
  // moved past it meanwhile.
  Status StoreSigned(std::string_view id, std::uint64_t generation, std::string_view signed_bytes);
  // Records that the broker acknowledged `generation` (never goes down).
  Status MarkPublished(std::string_view id, std::uint64_t generation);
  // Documents whose current generation is not yet published (start-up).
  Result<std::vector<DesiredRecord>> UnpublishedDesired();
  // Every device's current document (the broker lost its retained messages).
  Result<std::vector<DesiredRecord>> AllDesired();
  // If `reported_generation` >= the device's generation, re-issues the same
  // workloads as generation reported_generation + 1 and returns that change;
  // otherwise an empty mutation.
  Result<Mutation> EnsureGenerationAbove(std::string_view id, std::uint64_t reported_generation,
                                         UnixMs now);

  // ---- Reports, presence -------------------------------------------------
  // Stores the report if its report_seq is greater than the stored one
  // (facts too, when present); always updates lastSeen.
  Result<ReportOutcome> RecordReport(std::string_view id, const outpost::v1::ReportedState& report,
                                     UnixMs now);
  Status SetPresence(std::string_view id, bool online, UnixMs now);
  // lastSeen = now (cheap; skips the write when it moved less than a second).
  Status Touch(std::string_view id, UnixMs now);

  // ---- Events ------------------------------------------------------------
  // Stores each event once ((device, seq) unique; duplicates ignored), lets
  // the mark jump to floor_seq - 1, then advances it over stored seqs.
  Result<EventsOutcome> RecordEvents(std::string_view id, const outpost::v1::EventBatch& batch,
                                     UnixMs now);
  Result<std::uint64_t> ContiguousMark(std::string_view id);
  Result<std::uint64_t> EventCount(std::string_view id);
  Result<std::vector<StoredEvent>> ListEvents(std::string_view id, std::uint64_t after_seq,
                                              std::size_t limit);

  // ---- Batching -----------------------------------------------------------
  // Runs `body` inside one IMMEDIATE transaction: every Registry call made in
  // it joins that transaction (each as a savepoint, so a call that fails
  // undoes only its own writes), and the whole batch costs one commit (one
  // fsync) instead of one per call. For the broker ingest: drain N reports,
  // events and presence messages in one Batch. `body` returning an error
  // rolls back everything. Mutations returned inside the batch (e.g. by
  // EnsureGenerationAbove) are durable only once Batch returned ok: publish
  // them after that. ApplyApplications and DeleteApplication refuse to run in
  // a batch (kFailedPrecondition); batches do not nest.
  Status Batch(const std::function<Status()>& body);

  store::Database& database() { return *db_; }

 private:
  Registry(std::unique_ptr<store::Database> db, Options options);
  struct Impl;
  std::unique_ptr<store::Database> db_;
  Options options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace outpost::hub::registry
