#include "hub/registry/registry.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <nlohmann/json.hpp>

#include "shared/crypto/crypto.hpp"
#include "shared/store/store.hpp"

namespace outpost::hub::registry {
namespace {

using nlohmann::json;
using store::Blob;

constexpr std::uint64_t kMaxSqlInt =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
constexpr std::size_t kMaxEventsPerBatch = 500;
constexpr std::size_t kRolloutPendingShown = 50;
constexpr std::int64_t kTouchGranularityMs = 1000;

// The schema. Per-message paths (reports, events, presence) touch rows by
// primary key; selector lookups go through device_labels(key, value).
const char* const kSchemaV1 = R"sql(
CREATE TABLE tokens(
  id TEXT PRIMARY KEY,
  secret_sha256 TEXT NOT NULL,
  labels TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  uses_total INTEGER NOT NULL,
  uses_left INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE devices(
  id TEXT PRIMARY KEY,
  labels TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  revoked_ms INTEGER NOT NULL DEFAULT 0,
  online INTEGER NOT NULL DEFAULT 0,
  presence_ms INTEGER NOT NULL DEFAULT 0,
  last_seen_ms INTEGER NOT NULL DEFAULT 0,
  cert_serial TEXT NOT NULL DEFAULT '',
  cert_not_after_ms INTEGER NOT NULL DEFAULT 0,
  report_seq INTEGER NOT NULL DEFAULT 0,
  observed_generation INTEGER NOT NULL DEFAULT 0,
  reported_desired_generation INTEGER NOT NULL DEFAULT 0,
  reported_ms INTEGER NOT NULL DEFAULT 0,
  contiguous_mark INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE device_blobs(
  device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
  facts BLOB NOT NULL DEFAULT x'',
  report BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
CREATE TABLE device_labels(
  device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(device_id, key)
) WITHOUT ROWID;
CREATE INDEX device_labels_by_pair ON device_labels(key, value);
CREATE TABLE certificates(
  serial TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  not_after_ms INTEGER NOT NULL,
  issued_ms INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX certificates_by_device ON certificates(device_id);
CREATE INDEX certificates_revoked ON certificates(serial) WHERE revoked = 1;
CREATE TABLE desired(
  device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
  generation INTEGER NOT NULL,
  render_hash TEXT NOT NULL,
  document BLOB NOT NULL,
  signed_document BLOB NOT NULL DEFAULT x'',
  signed_generation INTEGER NOT NULL DEFAULT 0,
  published_generation INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX desired_unpublished ON desired(device_id) WHERE published_generation < generation;
CREATE TABLE applications(
  name TEXT PRIMARY KEY,
  spec_json TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE device_apps(
  device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  app TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  since_generation INTEGER NOT NULL,
  PRIMARY KEY(device_id, app)
) WITHOUT ROWID;
CREATE INDEX device_apps_by_app ON device_apps(app, device_id);
CREATE TABLE events(
  device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  type INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  received_ms INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY(device_id, seq)
) WITHOUT ROWID;
)sql";

std::string SerializeDeterministic(const google::protobuf::MessageLite& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return bytes;
}

std::string LabelsToJson(const Labels& labels) {
  json j = json::object();
  for (const auto& [k, v] : labels)
    j[k] = v;
  return j.dump();
}

Labels LabelsFromJson(const std::string& text) {
  Labels labels;
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return labels;
  for (const auto& [k, v] : j.items()) {
    if (v.is_string()) labels[k] = v.get<std::string>();
  }
  return labels;
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

Error TokenError(Errc code, std::string message) {
  return Error(code, std::move(message));
}

Error InvalidToken() {
  return TokenError(Errc::kUnauthenticated, "join token is invalid (unknown id or wrong secret)");
}

Error NoDevice(std::string_view id) {
  return Error(Errc::kNotFound, "no device \"" + std::string(id) + "\"");
}

Error RevokedDevice(std::string_view id) {
  return Error(Errc::kPermissionDenied, "device \"" + std::string(id) + "\" is revoked");
}

// A requested name as a device id: lowercase, [a-z0-9-], no leading
// "outpost-" (reserved identities), at most `max` characters.
std::string SanitizeName(std::string_view requested, std::size_t max) {
  std::string out;
  for (char c : requested) {
    char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool ok = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9');
    if (ok) {
      out.push_back(lower);
    } else if (!out.empty() && out.back() != '-') {
      out.push_back('-');
    }
    if (out.size() > 256) break;
  }
  auto trim = [&]() {
    while (!out.empty() && out.front() == '-')
      out.erase(out.begin());
    while (!out.empty() && out.back() == '-')
      out.pop_back();
  };
  trim();
  while (out.starts_with("outpost-")) {
    out.erase(0, 8);
    trim();
  }
  if (out == "outpost") out.clear();
  if (out.size() > max) out.resize(max);
  trim();
  if (out.empty()) out = "device";
  return out;
}

// The transaction of one Registry operation: its own IMMEDIATE transaction,
// or, inside Registry::Batch, a savepoint of the batch's transaction (so a
// failed operation undoes only its own writes).
class TxScope {
 public:
  static Result<TxScope> Open(store::Database& db) {
    if (db.InTransaction()) {
      OUTPOST_TRY(db.Exec("SAVEPOINT registry_op"));
      return TxScope(&db, std::nullopt);
    }
    OUTPOST_ASSIGN_OR_RETURN(store::Transaction tx, db.Begin(store::TxMode::kImmediate));
    return TxScope(&db, std::move(tx));
  }
  TxScope(TxScope&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), tx_(std::move(other.tx_)) {}
  TxScope& operator=(TxScope&&) = delete;
  TxScope(const TxScope&) = delete;
  TxScope& operator=(const TxScope&) = delete;
  ~TxScope() {
    if (db_ != nullptr && !tx_.has_value()) {
      (void)db_->Exec("ROLLBACK TO registry_op");
      (void)db_->Exec("RELEASE registry_op");
    }
  }

  Status Commit() {
    store::Database* db = std::exchange(db_, nullptr);
    if (tx_.has_value()) return tx_->Commit();
    return db->Exec("RELEASE registry_op");
  }

 private:
  TxScope(store::Database* db, std::optional<store::Transaction> tx)
      : db_(db), tx_(std::move(tx)) {}
  store::Database* db_ = nullptr;
  std::optional<store::Transaction> tx_;
};

}  // namespace

std::string_view TokenErrorId(const Error& error) {
  if (!error.message().starts_with("join token")) return "";
  switch (error.code()) {
    case Errc::kUnauthenticated:
      return kInvalidToken;
    case Errc::kExpired:
      return kTokenExpired;
    case Errc::kPermissionDenied:
      return kTokenRevoked;
    case Errc::kConflict:
      return kTokenUsedUp;
    default:
      return "";
  }
}

std::string_view TokenInfo::State(UnixMs now) const {
  if (revoked) return "revoked";
  if (uses_left <= 0) return "used-up";
  if (now >= expires_ms) return "expired";
  return "active";
}

std::string_view ApplyActionName(ApplyAction action) {
  switch (action) {
    case ApplyAction::kCreated:
      return "created";
    case ApplyAction::kConfigured:
      return "configured";
    case ApplyAction::kUnchanged:
      return "unchanged";
  }
  return "?";
}

// ---------------------------------------------------------------------------

struct Registry::Impl {
  // Every stored application, parsed once (they are few; devices are many).
  std::map<std::string, apps::Application, std::less<>> apps;
};

Registry::Registry(std::unique_ptr<store::Database> db, Options options)
    : db_(std::move(db)), options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

Registry::~Registry() = default;

Result<std::unique_ptr<Registry>> Registry::Open(const std::string& path, const Options& options) {
  store::OpenOptions open;
  open.busy_timeout = options.busy_timeout;
  open.migrations = {{1, kSchemaV1}};
  OUTPOST_ASSIGN_OR_RETURN(auto db, store::Database::Open(path, open));
  std::unique_ptr<Registry> registry(new Registry(std::move(db), options));
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, registry->db_->Prepare("SELECT name, spec_json FROM applications ORDER BY name"));
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    OUTPOST_ASSIGN_OR_RETURN(apps::Application app,
                             apps::ApplicationFromCanonical(st.ColumnText(0), st.ColumnText(1)));
    std::string name = app.name;
    registry->impl_->apps.emplace(std::move(name), std::move(app));
  }
  return registry;
}

Status Registry::Batch(const std::function<Status()>& body) {
  if (db_->InTransaction()) {
    return Error(Errc::kFailedPrecondition, "registry batches do not nest");
  }
  OUTPOST_ASSIGN_OR_RETURN(store::Transaction tx, db_->Begin(store::TxMode::kImmediate));
  OUTPOST_TRY(body());
  return tx.Commit();
}

// ---------------------------------------------------------------------------
// Tokens

Result<CreatedToken> Registry::CreateToken(std::chrono::milliseconds ttl, int uses,
                                           const Labels& labels, UnixMs now) {
  if (ttl.count() <= 0) return Error(Errc::kInvalidArgument, "token ttl must be positive");
  if (uses < 1) return Error(Errc::kInvalidArgument, "token uses must be at least 1");
  OUTPOST_TRY(apps::ValidateLabels(labels));
  CreatedToken created;
  created.info.labels = labels;
  created.info.created_ms = now;
  created.info.expires_ms = now + ttl.count();
  created.info.uses_total = uses;
  created.info.uses_left = uses;
  created.secret = crypto::RandomToken(kTokenSecretLength);
  OUTPOST_ASSIGN_OR_RETURN(auto insert,
                           db_->Prepare("INSERT INTO tokens(id, secret_sha256, labels, created_ms, "
                                        "expires_ms, uses_total, uses_left) "
                                        "VALUES(?, ?, ?, ?, ?, ?, ?)"));
  // A fresh id; collisions (36^6 ids) are retried.
  for (int attempt = 0;; ++attempt) {
    created.info.id = crypto::RandomToken(kTokenIdLength);
    Result<int> done = insert
                           .BindAll(created.info.id, crypto::Sha256Hex(created.secret),
                                    LabelsToJson(labels), now, created.info.expires_ms, uses, uses)
                           .ExecDone();
    if (done.ok()) break;
    if (done.error().code() != Errc::kAlreadyExists || attempt >= 10) return done.error();
  }
  created.token = created.info.id + "." + created.secret;
  return created;
}

Result<std::vector<TokenInfo>> Registry::ListTokens() {
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare("SELECT id, labels, created_ms, expires_ms, uses_total, "
                                        "uses_left, revoked FROM tokens ORDER BY created_ms, id"));
  std::vector<TokenInfo> out;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    TokenInfo t;
    t.id = st.ColumnText(0);
    t.labels = LabelsFromJson(st.ColumnText(1));
    t.created_ms = st.ColumnInt64(2);
    t.expires_ms = st.ColumnInt64(3);
    t.uses_total = st.ColumnInt(4);
    t.uses_left = st.ColumnInt(5);
    t.revoked = st.ColumnInt(6) != 0;
    out.push_back(std::move(t));
  }
  return out;
}

Status Registry::RevokeToken(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare("UPDATE tokens SET revoked = 1 WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, st.Bind(1, id).ExecDone());
  if (changed == 0) return Error(Errc::kNotFound, "no token \"" + std::string(id) + "\"");
  return OkStatus();
}

namespace {

// Checks and consumes one use; the caller holds an IMMEDIATE transaction.
Result<Labels> ConsumeTokenInTx(store::Database& db, std::string_view token, UnixMs now) {
  std::size_t dot = token.find('.');
  if (dot != kTokenIdLength || token.size() - dot - 1 < kMinTokenSecretLength ||
      token.size() - dot - 1 > kMaxTokenSecretLength ||
      !std::all_of(token.begin(), token.begin() + static_cast<std::ptrdiff_t>(dot), IsTokenChar) ||
      !std::all_of(token.begin() + static_cast<std::ptrdiff_t>(dot) + 1, token.end(),
                   IsTokenChar)) {
    return TokenError(Errc::kUnauthenticated,
                      "join token is malformed (expected <6-char id>.<secret>, lowercase letters "
                      "and digits)");
  }
  std::string_view id = token.substr(0, dot);
  std::string_view secret = token.substr(dot + 1);
  OUTPOST_ASSIGN_OR_RETURN(auto st, db.Prepare("SELECT secret_sha256, labels, expires_ms, "
                                               "uses_left, revoked FROM tokens WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  std::string presented = crypto::Sha256Hex(secret);
  if (!row) {
    // Same work as a known id with a wrong secret.
    (void)crypto::ConstantTimeEqual(presented, std::string(presented.size(), '0'));
    return InvalidToken();
  }
  std::string stored = st.ColumnText(0);
  Labels labels = LabelsFromJson(st.ColumnText(1));
  UnixMs expires = st.ColumnInt64(2);
  std::int64_t uses_left = st.ColumnInt64(3);
  bool revoked = st.ColumnInt(4) != 0;
  st.Reset();
  if (!crypto::ConstantTimeEqual(presented, stored)) return InvalidToken();
  if (revoked) return TokenError(Errc::kPermissionDenied, "join token was revoked");
  if (now >= expires) {
    return TokenError(Errc::kExpired,
                      "join token expired " + std::to_string((now - expires) / 1000) + " s ago");
  }
  if (uses_left <= 0) return TokenError(Errc::kConflict, "join token has no uses left");
  OUTPOST_ASSIGN_OR_RETURN(auto use, db.Prepare("UPDATE tokens SET uses_left = uses_left - 1 "
                                                "WHERE id = ? AND uses_left > 0"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, use.Bind(1, id).ExecDone());
  if (changed != 1) return TokenError(Errc::kConflict, "join token has no uses left");
  return labels;
}

}  // namespace

Result<Labels> Registry::ConsumeToken(std::string_view token, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(Labels labels, ConsumeTokenInTx(*db_, token, now));
  OUTPOST_TRY(tx.Commit());
  return labels;
}

// ---------------------------------------------------------------------------
// Internal helpers (run inside the caller's transaction)

namespace {

struct DeviceTarget {
  std::string id;
  Labels labels;
};

}  // namespace

namespace {

// The shared steps of mutations: the db, the options and the app cache.
struct RegistryOps {
  store::Database& db;
  const Options& options;
  const std::map<std::string, apps::Application, std::less<>>& apps;

  Status WriteLabels(std::string_view id, const Labels& labels) {
    OUTPOST_ASSIGN_OR_RETURN(auto update, db.Prepare("UPDATE devices SET labels = ? WHERE id = ?"));
    OUTPOST_TRY(update.BindAll(LabelsToJson(labels), id).ExecDone());
    OUTPOST_ASSIGN_OR_RETURN(auto clear,
                             db.Prepare("DELETE FROM device_labels WHERE device_id = ?"));
    OUTPOST_TRY(clear.Bind(1, id).ExecDone());
    OUTPOST_ASSIGN_OR_RETURN(
        auto insert,
        db.Prepare("INSERT INTO device_labels(device_id, key, value) VALUES(?, ?, ?)"));
    for (const auto& [k, v] : labels)
      OUTPOST_TRY(insert.BindAll(id, k, v).ExecDone());
    return OkStatus();
  }

  // Devices (not revoked) the selector matches, added to `out`.
  Status SelectDevices(const apps::Selector& selector, std::map<std::string, Labels>* out) {
    if (selector.empty()) {
      OUTPOST_ASSIGN_OR_RETURN(auto st,
                               db.Prepare("SELECT id, labels FROM devices WHERE revoked = 0"));
      while (true) {
        OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        (*out)[st.ColumnText(0)] = LabelsFromJson(st.ColumnText(1));
      }
      return OkStatus();
    }
    const auto& [key, value] = *selector.match_labels.begin();
    OUTPOST_ASSIGN_OR_RETURN(auto st,
                             db.Prepare("SELECT d.id, d.labels FROM device_labels l JOIN devices d "
                                        "ON d.id = l.device_id WHERE l.key = ? AND l.value = ? "
                                        "AND d.revoked = 0"));
    st.BindAll(key, value);
    while (true) {
      OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      Labels labels = LabelsFromJson(st.ColumnText(1));
      if (selector.Matches(labels)) (*out)[st.ColumnText(0)] = std::move(labels);
    }
    return OkStatus();
  }

  // Builds, stores and reports a new generation of `id`'s document.
  Status StoreDocument(std::string_view id, std::uint64_t generation, const std::string& hash,
                       std::span<const v1::WorkloadSpec> workloads, UnixMs now, bool existed,
                       Mutation* mutation) {
    if (generation > kMaxSqlInt) {
      return Error(Errc::kResourceExhausted, "generation of \"" + std::string(id) + "\" overflows");
    }
    DesiredChange change;
    change.device_id = std::string(id);
    change.generation = generation;
    change.document.set_device_id(std::string(id));
    change.document.set_generation(generation);
    for (const v1::WorkloadSpec& w : workloads)
      *change.document.add_workloads() = w;
    change.document.set_issued_at_ms(now);
    change.document.set_hub_instance(options.hub_instance);
    change.document_bytes = SerializeDeterministic(change.document);
    if (existed) {
      OUTPOST_ASSIGN_OR_RETURN(
          auto st, db.Prepare("UPDATE desired SET generation = ?, render_hash = ?, document = ?, "
                              "signed_document = x'', signed_generation = 0 WHERE device_id = ?"));
      OUTPOST_TRY(st.BindAll(generation, hash, Blob{change.document_bytes}, id).ExecDone());
    } else {
      OUTPOST_ASSIGN_OR_RETURN(auto st,
                               db.Prepare("INSERT INTO desired(device_id, generation, render_hash, "
                                          "document) VALUES(?, ?, ?, ?)"));
      OUTPOST_TRY(st.BindAll(id, generation, hash, Blob{change.document_bytes}).ExecDone());
    }
    mutation->desired.push_back(std::move(change));
    return OkStatus();
  }

  // Renders `id` with `labels` against the app cache; stores a new generation
  // when the rendered list differs from the stored one.
  Status Render(std::string_view id, const Labels& labels, UnixMs now, Mutation* mutation) {
    std::vector<const apps::Application*> list;
    list.reserve(apps.size());
    for (const auto& [name, app] : apps)
      list.push_back(&app);
    apps::RenderedDevice rendered =
        apps::RenderDevice(labels, std::span<const apps::Application* const>(list));
    for (const std::string& w : rendered.warnings) {
      mutation->warnings.push_back(std::string(id) + ": " + w);
    }

    OUTPOST_ASSIGN_OR_RETURN(
        auto current,
        db.Prepare("SELECT generation, render_hash FROM desired WHERE device_id = ?"));
    OUTPOST_ASSIGN_OR_RETURN(bool existed, current.Bind(1, id).Step());
    std::uint64_t generation = 0;
    if (existed) {
      generation = static_cast<std::uint64_t>(current.ColumnInt64(0));
      std::string hash = current.ColumnText(1);
      current.Reset();
      if (hash == rendered.hash) return OkStatus();
    }
    ++generation;
    OUTPOST_TRY(
        StoreDocument(id, generation, rendered.hash, rendered.workloads, now, existed, mutation));

    // Per-app content: remember the generation each app's current content
    // first reached the device (rollout status).
    std::map<std::string, std::string> stored;
    OUTPOST_ASSIGN_OR_RETURN(
        auto read, db.Prepare("SELECT app, content_hash FROM device_apps WHERE device_id = ?"));
    read.Bind(1, id);
    while (true) {
      OUTPOST_ASSIGN_OR_RETURN(bool row, read.Step());
      if (!row) break;
      stored[read.ColumnText(0)] = read.ColumnText(1);
    }
    OUTPOST_ASSIGN_OR_RETURN(
        auto upsert, db.Prepare("INSERT INTO device_apps(device_id, app, content_hash, "
                                "since_generation) VALUES(?, ?, ?, ?) ON CONFLICT(device_id, app) "
                                "DO UPDATE SET content_hash = excluded.content_hash, "
                                "since_generation = excluded.since_generation"));
    for (const auto& [app, hash] : rendered.app_hashes) {
      auto it = stored.find(app);
      if (it != stored.end() && it->second == hash) continue;
      OUTPOST_TRY(upsert.BindAll(id, app, hash, generation).ExecDone());
    }
    OUTPOST_ASSIGN_OR_RETURN(auto remove,
                             db.Prepare("DELETE FROM device_apps WHERE device_id = ? AND app = ?"));
    for (const auto& [app, hash] : stored) {
      if (!rendered.app_hashes.contains(app)) OUTPOST_TRY(remove.BindAll(id, app).ExecDone());
    }
    return OkStatus();
  }

  // Loads the device's labels; kNotFound, or kPermissionDenied when revoked.
  Result<Labels> ActiveDeviceLabels(std::string_view id) {
    OUTPOST_ASSIGN_OR_RETURN(auto st,
                             db.Prepare("SELECT labels, revoked FROM devices WHERE id = ?"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
    if (!row) return NoDevice(id);
    if (st.ColumnInt(1) != 0) return RevokedDevice(id);
    Labels labels = LabelsFromJson(st.ColumnText(0));
    st.Reset();
    return labels;
  }

  // kNotFound or kPermissionDenied for a device that is missing or revoked.
  Error DeviceProblem(std::string_view id) {
    auto st = db.Prepare("SELECT revoked FROM devices WHERE id = ?");
    if (!st.ok()) return st.error();
    auto row = st->Bind(1, id).Step();
    if (!row.ok()) return row.error();
    if (!*row) return NoDevice(id);
    return RevokedDevice(id);
  }
};

void SortMutation(Mutation* mutation) {
  std::sort(
      mutation->desired.begin(), mutation->desired.end(),
      [](const DesiredChange& a, const DesiredChange& b) { return a.device_id < b.device_id; });
}

}  // namespace

// ---------------------------------------------------------------------------
// Devices

Result<Registry::Enrollment> Registry::EnrollDevice(const EnrollRequest& request, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(Labels token_labels, ConsumeTokenInTx(*db_, request.token, now));
  Labels labels = request.labels;
  for (const auto& [k, v] : token_labels)
    labels[k] = v;
  OUTPOST_TRY(apps::ValidateLabels(labels));

  std::string base = SanitizeName(request.requested_name, 63);
  OUTPOST_ASSIGN_OR_RETURN(auto exists, db_->Prepare("SELECT 1 FROM devices WHERE id = ?"));
  std::string id = base;
  for (int attempt = 0;; ++attempt) {
    OUTPOST_ASSIGN_OR_RETURN(bool taken, exists.Bind(1, id).Step());
    if (!taken) break;
    exists.Reset();
    if (attempt >= 20) {
      return Error(Errc::kAlreadyExists, "could not find a free device id for \"" + base + "\"");
    }
    std::string trimmed = base.substr(0, std::min<std::size_t>(base.size(), 57));
    while (!trimmed.empty() && trimmed.back() == '-')
      trimmed.pop_back();
    id = trimmed + "-" + crypto::RandomToken(5);
  }
  exists.Reset();

  OUTPOST_ASSIGN_OR_RETURN(
      auto insert, db_->Prepare("INSERT INTO devices(id, labels, created_ms) VALUES(?, ?, ?)"));
  OUTPOST_TRY(insert.BindAll(id, LabelsToJson(labels), now).ExecDone());
  OUTPOST_ASSIGN_OR_RETURN(auto blobs,
                           db_->Prepare("INSERT INTO device_blobs(device_id, facts) VALUES(?, ?)"));
  OUTPOST_TRY(blobs.BindAll(id, Blob{SerializeDeterministic(request.facts)}).ExecDone());
  RegistryOps ops{*db_, options_, impl_->apps};
  OUTPOST_TRY(ops.WriteLabels(id, labels));
  Enrollment enrollment;
  enrollment.device_id = id;
  enrollment.labels = labels;
  OUTPOST_TRY(ops.Render(id, labels, now, &enrollment.mutation));
  OUTPOST_TRY(tx.Commit());
  return enrollment;
}

Status Registry::SetDeviceCertificate(std::string_view id, std::string_view serial_hex,
                                      UnixMs not_after_ms, UnixMs now) {
  if (serial_hex.empty() || serial_hex.size() > 64) {
    return Error(Errc::kInvalidArgument, "certificate serial must be 1-64 hex digits");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto st,
      db_->Prepare("UPDATE devices SET cert_serial = ?, cert_not_after_ms = ? WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, st.BindAll(serial_hex, not_after_ms, id).ExecDone());
  if (changed == 0) return NoDevice(id);
  OUTPOST_ASSIGN_OR_RETURN(
      auto cert,
      db_->Prepare("INSERT INTO certificates(serial, device_id, not_after_ms, issued_ms, "
                   "revoked) VALUES(?1, ?2, ?3, ?4, (SELECT revoked FROM devices WHERE "
                   "id = ?2)) ON CONFLICT(serial) DO UPDATE SET device_id = "
                   "excluded.device_id, not_after_ms = excluded.not_after_ms"));
  OUTPOST_TRY(cert.BindAll(serial_hex, id, not_after_ms, now).ExecDone());
  return tx.Commit();
}

namespace {

constexpr const char* kDeviceColumns =
    "SELECT d.id, d.labels, d.created_ms, d.revoked, d.revoked_ms, d.online, d.presence_ms, "
    "d.last_seen_ms, d.cert_serial, d.cert_not_after_ms, d.report_seq, d.observed_generation, "
    "d.reported_desired_generation, d.reported_ms, d.contiguous_mark, "
    "COALESCE(x.generation, 0), b.facts, b.report FROM devices d "
    "LEFT JOIN desired x ON x.device_id = d.id LEFT JOIN device_blobs b ON b.device_id = d.id ";

Device DeviceFromRow(const store::Statement& st) {
  Device d;
  d.id = st.ColumnText(0);
  d.labels = LabelsFromJson(st.ColumnText(1));
  d.created_ms = st.ColumnInt64(2);
  d.revoked = st.ColumnInt(3) != 0;
  d.revoked_ms = st.ColumnInt64(4);
  d.online = st.ColumnInt(5) != 0;
  d.presence_ms = st.ColumnInt64(6);
  d.last_seen_ms = st.ColumnInt64(7);
  d.cert_serial = st.ColumnText(8);
  d.cert_not_after_ms = st.ColumnInt64(9);
  d.report_seq = static_cast<std::uint64_t>(st.ColumnInt64(10));
  d.observed_generation = static_cast<std::uint64_t>(st.ColumnInt64(11));
  d.reported_desired_generation = static_cast<std::uint64_t>(st.ColumnInt64(12));
  d.reported_ms = st.ColumnInt64(13);
  d.contiguous_mark = static_cast<std::uint64_t>(st.ColumnInt64(14));
  d.desired_generation = static_cast<std::uint64_t>(st.ColumnInt64(15));
  std::string facts = st.ColumnBlob(16);
  if (!facts.empty()) (void)d.facts.ParseFromString(facts);
  std::string report = st.ColumnBlob(17);
  if (!report.empty()) (void)d.report.ParseFromString(report);
  return d;
}

}  // namespace

Result<Device> Registry::GetDevice(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare(std::string(kDeviceColumns) + "WHERE d.id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return NoDevice(id);
  Device device = DeviceFromRow(st);
  st.Reset();
  return device;
}

Result<std::vector<Device>> Registry::ListDevices() {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare(std::string(kDeviceColumns) + "ORDER BY d.id"));
  std::vector<Device> out;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(DeviceFromRow(st));
  }
  return out;
}

Result<Mutation> Registry::SetLabels(std::string_view id, const Labels& labels, UnixMs now) {
  OUTPOST_TRY(apps::ValidateLabels(labels));
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  RegistryOps ops{*db_, options_, impl_->apps};
  OUTPOST_ASSIGN_OR_RETURN(Labels current, ops.ActiveDeviceLabels(id));
  Mutation mutation;
  if (current == labels) return mutation;
  OUTPOST_TRY(ops.WriteLabels(id, labels));
  OUTPOST_TRY(ops.Render(id, labels, now, &mutation));
  OUTPOST_TRY(tx.Commit());
  return mutation;
}

Result<Mutation> Registry::EditLabels(std::string_view id, std::span<const std::string> edits,
                                      UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  RegistryOps ops{*db_, options_, impl_->apps};
  OUTPOST_ASSIGN_OR_RETURN(Labels labels, ops.ActiveDeviceLabels(id));
  Labels before = labels;
  for (const std::string& edit : edits) {
    std::size_t eq = edit.find('=');
    if (eq != std::string::npos) {
      labels[edit.substr(0, eq)] = edit.substr(eq + 1);
    } else if (edit.size() > 1 && edit.back() == '-') {
      labels.erase(edit.substr(0, edit.size() - 1));
    } else {
      return Error(Errc::kInvalidArgument,
                   "label edit \"" + edit + "\" is neither key=value nor key- (to remove)");
    }
  }
  OUTPOST_TRY(apps::ValidateLabels(labels));
  Mutation mutation;
  if (labels == before) return mutation;
  OUTPOST_TRY(ops.WriteLabels(id, labels));
  OUTPOST_TRY(ops.Render(id, labels, now, &mutation));
  OUTPOST_TRY(tx.Commit());
  return mutation;
}

namespace {

Result<std::vector<std::string>> DeviceSerials(store::Database& db, std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db.Prepare("SELECT serial FROM certificates WHERE device_id = ? ORDER BY serial"));
  st.Bind(1, id);
  std::vector<std::string> serials;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    serials.push_back(st.ColumnText(0));
  }
  return serials;
}

}  // namespace

Result<std::vector<std::string>> Registry::RevokeDevice(std::string_view id, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto exists, db_->Prepare("SELECT 1 FROM devices WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, exists.Bind(1, id).Step());
  if (!row) return NoDevice(id);
  exists.Reset();
  OUTPOST_ASSIGN_OR_RETURN(auto mark,
                           db_->Prepare("UPDATE devices SET revoked = 1, revoked_ms = ?, "
                                        "online = 0 WHERE id = ? AND revoked = 0"));
  OUTPOST_TRY(mark.BindAll(now, id).ExecDone());
  OUTPOST_ASSIGN_OR_RETURN(auto certs,
                           db_->Prepare("UPDATE certificates SET revoked = 1 WHERE device_id = ?"));
  OUTPOST_TRY(certs.Bind(1, id).ExecDone());
  // A revoked device no longer counts in any rollout.
  OUTPOST_ASSIGN_OR_RETURN(auto apps, db_->Prepare("DELETE FROM device_apps WHERE device_id = ?"));
  OUTPOST_TRY(apps.Bind(1, id).ExecDone());
  OUTPOST_ASSIGN_OR_RETURN(std::vector<std::string> serials, DeviceSerials(*db_, id));
  OUTPOST_TRY(tx.Commit());
  return serials;
}

Result<std::vector<std::string>> Registry::DeleteDevice(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto certs,
                           db_->Prepare("UPDATE certificates SET revoked = 1 WHERE device_id = ?"));
  OUTPOST_TRY(certs.Bind(1, id).ExecDone());
  OUTPOST_ASSIGN_OR_RETURN(std::vector<std::string> serials, DeviceSerials(*db_, id));
  OUTPOST_ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM devices WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, del.Bind(1, id).ExecDone());
  if (changed == 0) return NoDevice(id);
  OUTPOST_TRY(tx.Commit());
  return serials;
}

Result<std::vector<std::string>> Registry::RevokedSerials() {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT serial FROM certificates WHERE revoked = 1 ORDER BY serial"));
  std::vector<std::string> serials;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    serials.push_back(st.ColumnText(0));
  }
  return serials;
}

Status Registry::UpdateFacts(std::string_view id, const v1::DeviceFacts& facts, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto touch,
                           db_->Prepare("UPDATE devices SET last_seen_ms = max(last_seen_ms, ?) "
                                        "WHERE id = ? AND revoked = 0"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, touch.BindAll(now, id).ExecDone());
  RegistryOps ops{*db_, options_, impl_->apps};
  if (changed == 0) return ops.DeviceProblem(id);
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare("UPDATE device_blobs SET facts = ? WHERE device_id = ?"));
  OUTPOST_TRY(st.BindAll(Blob{SerializeDeterministic(facts)}, id).ExecDone());
  return tx.Commit();
}

// ---------------------------------------------------------------------------
// Applications

Result<ApplyResult> Registry::ApplyApplications(std::vector<apps::Application> applications,
                                                UnixMs now) {
  if (db_->InTransaction()) {
    return Error(Errc::kFailedPrecondition, "applications cannot change inside a registry batch");
  }
  std::set<std::string> seen;
  for (const apps::Application& app : applications) {
    if (!seen.insert(app.name).second) {
      return Error(Errc::kInvalidArgument, "application \"" + app.name + "\" is given twice");
    }
  }
  ApplyResult result;
  std::map<std::string, apps::Application, std::less<>> next = impl_->apps;
  std::vector<const apps::Selector*> selectors;  // old and new of changed apps
  std::vector<std::string> changed_names;
  for (apps::Application& app : applications) {
    auto it = next.find(app.name);
    if (it != next.end() && it->second.content_hash == app.content_hash) {
      result.applications.emplace_back(app.name, ApplyAction::kUnchanged);
      continue;
    }
    result.applications.emplace_back(
        app.name, it == next.end() ? ApplyAction::kCreated : ApplyAction::kConfigured);
    changed_names.push_back(app.name);
    std::string name = app.name;
    next.insert_or_assign(std::move(name), std::move(app));
  }
  if (changed_names.empty()) return result;

  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto upsert,
      db_->Prepare("INSERT INTO applications(name, spec_json, content_hash, created_ms, "
                   "updated_ms, revision) VALUES(?1, ?2, ?3, ?4, ?4, 1) ON CONFLICT(name) DO "
                   "UPDATE SET spec_json = excluded.spec_json, content_hash = "
                   "excluded.content_hash, updated_ms = excluded.updated_ms, revision = revision "
                   "+ 1"));
  RegistryOps ops{*db_, options_, next};
  std::map<std::string, Labels> targets;
  for (const std::string& name : changed_names) {
    const apps::Application& app = next.at(name);
    OUTPOST_TRY(upsert.BindAll(app.name, app.spec_json, app.content_hash, now).ExecDone());
    if (auto old = impl_->apps.find(name); old != impl_->apps.end()) {
      OUTPOST_TRY(ops.SelectDevices(old->second.selector, &targets));
    }
    OUTPOST_TRY(ops.SelectDevices(app.selector, &targets));
  }
  for (const auto& [id, labels] : targets) {
    OUTPOST_TRY(ops.Render(id, labels, now, &result.mutation));
  }
  OUTPOST_TRY(tx.Commit());
  impl_->apps = std::move(next);
  SortMutation(&result.mutation);
  return result;
}

Result<Mutation> Registry::DeleteApplication(std::string_view name, UnixMs now) {
  if (db_->InTransaction()) {
    return Error(Errc::kFailedPrecondition, "applications cannot change inside a registry batch");
  }
  auto it = impl_->apps.find(name);
  if (it == impl_->apps.end()) {
    return Error(Errc::kNotFound, "no application \"" + std::string(name) + "\"");
  }
  std::map<std::string, apps::Application, std::less<>> next = impl_->apps;
  next.erase(std::string(name));
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM applications WHERE name = ?"));
  OUTPOST_TRY(del.Bind(1, name).ExecDone());
  RegistryOps ops{*db_, options_, next};
  std::map<std::string, Labels> targets;
  OUTPOST_TRY(ops.SelectDevices(it->second.selector, &targets));
  Mutation mutation;
  for (const auto& [id, labels] : targets)
    OUTPOST_TRY(ops.Render(id, labels, now, &mutation));
  OUTPOST_ASSIGN_OR_RETURN(auto rows, db_->Prepare("DELETE FROM device_apps WHERE app = ?"));
  OUTPOST_TRY(rows.Bind(1, name).ExecDone());
  OUTPOST_TRY(tx.Commit());
  impl_->apps = std::move(next);
  SortMutation(&mutation);
  return mutation;
}

Result<std::vector<StoredApplication>> Registry::ListApplications() {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT name, created_ms, updated_ms, revision "
                                                 "FROM applications ORDER BY name"));
  std::vector<StoredApplication> out;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    auto it = impl_->apps.find(st.ColumnText(0));
    if (it == impl_->apps.end()) continue;  // written by another process since Open
    StoredApplication stored;
    stored.app = it->second;
    stored.created_ms = st.ColumnInt64(1);
    stored.updated_ms = st.ColumnInt64(2);
    stored.revision = static_cast<std::uint64_t>(st.ColumnInt64(3));
    out.push_back(std::move(stored));
  }
  return out;
}

Result<StoredApplication> Registry::GetApplication(std::string_view name) {
  auto it = impl_->apps.find(name);
  OUTPOST_ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT created_ms, updated_ms, revision "
                                                 "FROM applications WHERE name = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, name).Step());
  if (!row || it == impl_->apps.end()) {
    return Error(Errc::kNotFound, "no application \"" + std::string(name) + "\"");
  }
  StoredApplication stored;
  stored.app = it->second;
  stored.created_ms = st.ColumnInt64(0);
  stored.updated_ms = st.ColumnInt64(1);
  stored.revision = static_cast<std::uint64_t>(st.ColumnInt64(2));
  st.Reset();
  return stored;
}

Result<RolloutStatus> Registry::GetRolloutStatus(std::string_view app_name) {
  OUTPOST_ASSIGN_OR_RETURN(StoredApplication app, GetApplication(app_name));
  RolloutStatus status;
  status.app = std::string(app_name);
  status.revision = app.revision;
  OUTPOST_ASSIGN_OR_RETURN(
      auto counts,
      db_->Prepare(
          "SELECT count(*), COALESCE(sum(d.observed_generation >= a.since_generation), 0), "
          "COALESCE(sum(d.online), 0) FROM device_apps a JOIN devices d ON d.id = "
          "a.device_id WHERE a.app = ? AND d.revoked = 0"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, counts.Bind(1, app_name).Step());
  if (row) {
    status.matched = static_cast<std::uint64_t>(counts.ColumnInt64(0));
    status.updated = static_cast<std::uint64_t>(counts.ColumnInt64(1));
    status.online = static_cast<std::uint64_t>(counts.ColumnInt64(2));
    counts.Reset();
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto pending,
      db_->Prepare("SELECT a.device_id FROM device_apps a JOIN devices d ON d.id = a.device_id "
                   "WHERE a.app = ? AND d.revoked = 0 AND d.observed_generation < "
                   "a.since_generation ORDER BY a.device_id LIMIT ?"));
  pending.BindAll(app_name, static_cast<std::int64_t>(kRolloutPendingShown));
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool more, pending.Step());
    if (!more) break;
    status.pending.push_back(pending.ColumnText(0));
  }
  return status;
}

// ---------------------------------------------------------------------------
// Desired documents

namespace {

constexpr const char* kDesiredColumns =
    "SELECT x.device_id, x.generation, x.document, x.signed_document, x.signed_generation, "
    "x.published_generation FROM desired x ";

DesiredRecord DesiredFromRow(const store::Statement& st) {
  DesiredRecord r;
  r.device_id = st.ColumnText(0);
  r.generation = static_cast<std::uint64_t>(st.ColumnInt64(1));
  r.document = st.ColumnBlob(2);
  r.signed_document = st.ColumnBlob(3);
  r.signed_generation = static_cast<std::uint64_t>(st.ColumnInt64(4));
  r.published_generation = static_cast<std::uint64_t>(st.ColumnInt64(5));
  return r;
}

Result<std::vector<DesiredRecord>> ReadDesired(store::Database& db, const std::string& sql) {
  OUTPOST_ASSIGN_OR_RETURN(auto st, db.Prepare(sql));
  std::vector<DesiredRecord> out;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(DesiredFromRow(st));
  }
  return out;
}

}  // namespace

Result<DesiredRecord> Registry::GetDesired(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare(std::string(kDesiredColumns) + "WHERE x.device_id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return Error(Errc::kNotFound, "no desired document for \"" + std::string(id) + "\"");
  DesiredRecord record = DesiredFromRow(st);
  st.Reset();
  return record;
}

Status Registry::StoreSigned(std::string_view id, std::uint64_t generation,
                             std::string_view signed_bytes) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("UPDATE desired SET signed_document = ?, signed_generation = ? "
                            "WHERE device_id = ? AND generation = ?"));
  OUTPOST_ASSIGN_OR_RETURN(int changed,
                           st.BindAll(Blob{signed_bytes}, generation, id, generation).ExecDone());
  if (changed == 0) {
    OUTPOST_ASSIGN_OR_RETURN(auto exists,
                             db_->Prepare("SELECT 1 FROM desired WHERE device_id = ?"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, exists.Bind(1, id).Step());
    if (!row) return Error(Errc::kNotFound, "no desired document for \"" + std::string(id) + "\"");
  }
  return OkStatus();
}

Status Registry::MarkPublished(std::string_view id, std::uint64_t generation) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("UPDATE desired SET published_generation = ?1 WHERE device_id = ?2 "
                            "AND published_generation < ?1 AND generation >= ?1"));
  OUTPOST_TRY(st.BindAll(generation, id).ExecDone());
  return OkStatus();
}

Result<std::vector<DesiredRecord>> Registry::UnpublishedDesired() {
  return ReadDesired(*db_, std::string(kDesiredColumns) +
                               "JOIN devices d ON d.id = x.device_id WHERE x.published_generation "
                               "< x.generation AND d.revoked = 0 ORDER BY x.device_id");
}

Result<std::vector<DesiredRecord>> Registry::AllDesired() {
  return ReadDesired(*db_, std::string(kDesiredColumns) +
                               "JOIN devices d ON d.id = x.device_id WHERE d.revoked = 0 "
                               "ORDER BY x.device_id");
}

Result<Mutation> Registry::EnsureGenerationAbove(std::string_view id,
                                                 std::uint64_t reported_generation, UnixMs now) {
  if (reported_generation >= kMaxSqlInt) {
    return Error(Errc::kInvalidArgument,
                 "reported generation " + std::to_string(reported_generation) + " is too large");
  }
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT generation, render_hash, document FROM desired WHERE "
                            "device_id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return Error(Errc::kNotFound, "no desired document for \"" + std::string(id) + "\"");
  std::uint64_t generation = static_cast<std::uint64_t>(st.ColumnInt64(0));
  std::string hash = st.ColumnText(1);
  std::string bytes = st.ColumnBlob(2);
  st.Reset();
  Mutation mutation;
  if (reported_generation < generation) return mutation;
  v1::DesiredState current;
  if (!current.ParseFromString(bytes)) {
    return Error(Errc::kCorrupt,
                 "stored desired document of \"" + std::string(id) + "\" is corrupt");
  }
  std::uint64_t next = reported_generation + 1;
  RegistryOps ops{*db_, options_, impl_->apps};
  std::vector<v1::WorkloadSpec> workloads(current.workloads().begin(), current.workloads().end());
  OUTPOST_TRY(ops.StoreDocument(id, next, hash, workloads, now, true, &mutation));
  // The device's old timeline says nothing about this content.
  OUTPOST_ASSIGN_OR_RETURN(
      auto apps, db_->Prepare("UPDATE device_apps SET since_generation = ? WHERE device_id = ?"));
  OUTPOST_TRY(apps.BindAll(next, id).ExecDone());
  OUTPOST_TRY(tx.Commit());
  return mutation;
}

// ---------------------------------------------------------------------------
// Reports, presence

Result<ReportOutcome> Registry::RecordReport(std::string_view id, const v1::ReportedState& report,
                                             UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT d.revoked, d.report_seq, COALESCE(x.generation, 0) FROM "
                            "devices d LEFT JOIN desired x ON x.device_id = d.id WHERE d.id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return NoDevice(id);
  if (st.ColumnInt(0) != 0) return RevokedDevice(id);
  std::uint64_t stored_seq = static_cast<std::uint64_t>(st.ColumnInt64(1));
  ReportOutcome outcome;
  outcome.hub_generation = static_cast<std::uint64_t>(st.ColumnInt64(2));
  st.Reset();

  if (report.report_seq() <= stored_seq || report.report_seq() > kMaxSqlInt ||
      report.observed_generation() > kMaxSqlInt || report.desired_generation() > kMaxSqlInt) {
    OUTPOST_ASSIGN_OR_RETURN(auto touch,
                             db_->Prepare("UPDATE devices SET last_seen_ms = max(last_seen_ms, ?) "
                                          "WHERE id = ?"));
    OUTPOST_TRY(touch.BindAll(now, id).ExecDone());
    OUTPOST_TRY(tx.Commit());
    return outcome;
  }
  OUTPOST_ASSIGN_OR_RETURN(
      auto update, db_->Prepare("UPDATE devices SET report_seq = ?, observed_generation = ?, "
                                "reported_desired_generation = ?, reported_ms = ?, last_seen_ms = "
                                "max(last_seen_ms, ?) WHERE id = ?"));
  OUTPOST_TRY(update
                  .BindAll(report.report_seq(), report.observed_generation(),
                           report.desired_generation(), now, now, id)
                  .ExecDone());
  v1::ReportedState without_facts = report;
  without_facts.clear_facts();
  if (report.has_facts()) {
    OUTPOST_ASSIGN_OR_RETURN(
        auto blobs,
        db_->Prepare("UPDATE device_blobs SET report = ?, facts = ? WHERE device_id = ?"));
    OUTPOST_TRY(blobs
                    .BindAll(Blob{SerializeDeterministic(without_facts)},
                             Blob{SerializeDeterministic(report.facts())}, id)
                    .ExecDone());
  } else {
    OUTPOST_ASSIGN_OR_RETURN(
        auto blobs, db_->Prepare("UPDATE device_blobs SET report = ? WHERE device_id = ?"));
    OUTPOST_TRY(blobs.BindAll(Blob{SerializeDeterministic(without_facts)}, id).ExecDone());
  }
  OUTPOST_TRY(tx.Commit());
  outcome.stored = true;
  outcome.device_behind = report.desired_generation() < outcome.hub_generation;
  outcome.device_ahead = report.desired_generation() > outcome.hub_generation;
  return outcome;
}

Status Registry::SetPresence(std::string_view id, bool online, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st,
      db_->Prepare("UPDATE devices SET presence_ms = CASE WHEN online != ?1 THEN ?2 ELSE "
                   "presence_ms END, online = ?1, last_seen_ms = CASE WHEN ?1 THEN "
                   "max(last_seen_ms, ?2) ELSE last_seen_ms END WHERE id = ?3 AND revoked = 0"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, st.BindAll(online ? 1 : 0, now, id).ExecDone());
  if (changed == 0) return RegistryOps{*db_, options_, impl_->apps}.DeviceProblem(id);
  return OkStatus();
}

Status Registry::Touch(std::string_view id, UnixMs now) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("UPDATE devices SET last_seen_ms = ?1 WHERE id = ?2 AND revoked = 0 "
                            "AND last_seen_ms <= ?1 - ?3"));
  OUTPOST_ASSIGN_OR_RETURN(int changed, st.BindAll(now, id, kTouchGranularityMs).ExecDone());
  if (changed == 0) {
    OUTPOST_ASSIGN_OR_RETURN(auto check, db_->Prepare("SELECT revoked FROM devices WHERE id = ?"));
    OUTPOST_ASSIGN_OR_RETURN(bool row, check.Bind(1, id).Step());
    if (!row) return NoDevice(id);
    if (check.ColumnInt(0) != 0) return RevokedDevice(id);
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Events

Result<EventsOutcome> Registry::RecordEvents(std::string_view id, const v1::EventBatch& batch,
                                             UnixMs now) {
  if (static_cast<std::size_t>(batch.events_size()) > kMaxEventsPerBatch) {
    return Error(Errc::kResourceExhausted,
                 "event batch has " + std::to_string(batch.events_size()) + " events, more than " +
                     std::to_string(kMaxEventsPerBatch));
  }
  OUTPOST_ASSIGN_OR_RETURN(auto tx, TxScope::Open(*db_));
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT d.revoked, d.contiguous_mark, COALESCE(x.generation, 0) FROM "
                            "devices d LEFT JOIN desired x ON x.device_id = d.id WHERE d.id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return NoDevice(id);
  if (st.ColumnInt(0) != 0) return RevokedDevice(id);
  EventsOutcome outcome;
  std::uint64_t mark = static_cast<std::uint64_t>(st.ColumnInt64(1));
  outcome.hub_generation = static_cast<std::uint64_t>(st.ColumnInt64(2));
  st.Reset();

  OUTPOST_ASSIGN_OR_RETURN(
      auto insert, db_->Prepare("INSERT OR IGNORE INTO events(device_id, seq, type, time_ms, "
                                "received_ms, event) VALUES(?, ?, ?, ?, ?, ?)"));
  for (const v1::Event& event : batch.events()) {
    if (event.seq() == 0 || event.seq() > kMaxSqlInt) {
      ++outcome.invalid;
      continue;
    }
    if (event.seq() <= mark) {
      ++outcome.duplicates;
      continue;
    }
    OUTPOST_ASSIGN_OR_RETURN(
        int changed, insert
                         .BindAll(id, event.seq(), static_cast<int>(event.type()), event.time_ms(),
                                  now, Blob{SerializeDeterministic(event)})
                         .ExecDone());
    if (changed == 1) {
      ++outcome.stored;
    } else {
      ++outcome.duplicates;
    }
  }
  if (batch.floor_seq() > 0) {
    std::uint64_t floor_mark = std::min(batch.floor_seq() - 1, kMaxSqlInt);
    mark = std::max(mark, floor_mark);
  }
  // Advance over stored seqs: mark+1, mark+2, ...
  OUTPOST_ASSIGN_OR_RETURN(auto next, db_->Prepare("SELECT seq FROM events WHERE device_id = ? "
                                                   "AND seq > ? ORDER BY seq LIMIT 256"));
  while (true) {
    next.BindAll(id, mark);
    std::size_t advanced = 0;
    bool gap = false;
    while (true) {
      OUTPOST_ASSIGN_OR_RETURN(bool more, next.Step());
      if (!more) break;
      std::uint64_t seq = static_cast<std::uint64_t>(next.ColumnInt64(0));
      if (seq != mark + 1) {
        gap = true;
        break;
      }
      mark = seq;
      ++advanced;
    }
    next.Reset();
    if (gap || advanced < 256) break;
  }
  OUTPOST_ASSIGN_OR_RETURN(auto update,
                           db_->Prepare("UPDATE devices SET contiguous_mark = ?, last_seen_ms = "
                                        "max(last_seen_ms, ?) WHERE id = ?"));
  OUTPOST_TRY(update.BindAll(mark, now, id).ExecDone());
  OUTPOST_TRY(tx.Commit());
  outcome.contiguous_mark = mark;
  return outcome;
}

Result<std::uint64_t> Registry::ContiguousMark(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare("SELECT contiguous_mark FROM devices WHERE id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  if (!row) return NoDevice(id);
  std::uint64_t mark = static_cast<std::uint64_t>(st.ColumnInt64(0));
  st.Reset();
  return mark;
}

Result<std::uint64_t> Registry::EventCount(std::string_view id) {
  OUTPOST_ASSIGN_OR_RETURN(auto st,
                           db_->Prepare("SELECT count(*) FROM events WHERE device_id = ?"));
  OUTPOST_ASSIGN_OR_RETURN(bool row, st.Bind(1, id).Step());
  std::uint64_t count = row ? static_cast<std::uint64_t>(st.ColumnInt64(0)) : 0;
  st.Reset();
  return count;
}

Result<std::vector<StoredEvent>> Registry::ListEvents(std::string_view id, std::uint64_t after_seq,
                                                      std::size_t limit) {
  OUTPOST_ASSIGN_OR_RETURN(
      auto st, db_->Prepare("SELECT event, received_ms FROM events WHERE device_id = ? AND seq > ? "
                            "ORDER BY seq LIMIT ?"));
  st.BindAll(id, std::min(after_seq, kMaxSqlInt),
             static_cast<std::int64_t>(std::min<std::size_t>(limit, 100000)));
  std::vector<StoredEvent> out;
  while (true) {
    OUTPOST_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    StoredEvent e;
    (void)e.event.ParseFromString(st.ColumnBlob(0));
    e.received_ms = st.ColumnInt64(1);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace outpost::hub::registry
