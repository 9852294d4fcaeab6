// The mbedTLS 2.28 side of the crypto adapter. Nothing else in Outpost
// includes mbedTLS.
//
// Where mbedTLS 2.28 has no writer (subjectAltName with IP addresses,
// extendedKeyUsage, authorityKeyIdentifier from the CA's own key id, CRLs)
// the DER is written here with mbedtls_asn1_write_*; those writers fill a
// buffer from its end towards its start, so structures are written last
// element first.
#include "shared/crypto/crypto.hpp"

#include <arpa/inet.h>
#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <set>
#include <utility>

namespace outpost::crypto {

// ---------------------------------------------------------------------------
// Small RAII and conversion helpers

namespace {

// An mbedTLS context with its init/free pair.
template <typename T, void (*Init)(T*), void (*Free)(T*)>
class Ctx {
 public:
  Ctx() { Init(&v_); }
  ~Ctx() { Free(&v_); }
  Ctx(const Ctx&) = delete;
  Ctx& operator=(const Ctx&) = delete;
  T* get() { return &v_; }
  const T* get() const { return &v_; }
  T* operator->() { return &v_; }
  const T* operator->() const { return &v_; }

 private:
  T v_;
};

using PkCtx = Ctx<mbedtls_pk_context, mbedtls_pk_init, mbedtls_pk_free>;
using CrtCtx = Ctx<mbedtls_x509_crt, mbedtls_x509_crt_init, mbedtls_x509_crt_free>;
using CsrCtx = Ctx<mbedtls_x509_csr, mbedtls_x509_csr_init, mbedtls_x509_csr_free>;
using CrtWriteCtx =
    Ctx<mbedtls_x509write_cert, mbedtls_x509write_crt_init, mbedtls_x509write_crt_free>;
using CsrWriteCtx =
    Ctx<mbedtls_x509write_csr, mbedtls_x509write_csr_init, mbedtls_x509write_csr_free>;
using MpiCtx = Ctx<mbedtls_mpi, mbedtls_mpi_init, mbedtls_mpi_free>;

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
std::string_view S(const unsigned char* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}
std::string_view S(const mbedtls_x509_buf& buf) {
  return S(buf.p, buf.len);
}

std::string MbedText(int ret) {
  std::array<char, 200> text{};
  mbedtls_strerror(ret, text.data(), text.size());
  return std::string(text.data());
}

Error MbedError(int ret, std::string_view what, Errc code = Errc::kInternal) {
  return Error(code, std::string(what) + ": " + MbedText(ret));
}

// A CTR-DRBG seeded from the kernel's entropy, for one call.
class Rng {
 public:
  Rng() {
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
  }
  ~Rng() {
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  Rng(const Rng&) = delete;
  Rng& operator=(const Rng&) = delete;

  Status Seed() {
    static constexpr std::string_view kPersonalization = "outpost-crypto";
    int ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, U(kPersonalization),
                                    kPersonalization.size());
    if (ret != 0) return MbedError(ret, "seeding the random generator");
    return OkStatus();
  }
  static int Fill(void* self, unsigned char* out, size_t n) {
    return mbedtls_ctr_drbg_random(&static_cast<Rng*>(self)->drbg_, out, n);
  }
  Status Bytes(unsigned char* out, size_t n) {
    while (n > 0) {
      size_t chunk = std::min<size_t>(n, MBEDTLS_CTR_DRBG_MAX_REQUEST);
      int ret = mbedtls_ctr_drbg_random(&drbg_, out, chunk);
      if (ret != 0) return MbedError(ret, "drawing random bytes");
      out += chunk;
      n -= chunk;
    }
    return OkStatus();
  }

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
};

Result<std::string> SeededRandom(size_t n) {
  Rng rng;
  OUTPOST_TRY(rng.Seed());
  std::string out(n, '\0');
  OUTPOST_TRY(rng.Bytes(reinterpret_cast<unsigned char*>(out.data()), n));
  return out;
}

bool IsPem(std::string_view text) {
  return text.find("-----BEGIN ") != std::string_view::npos;
}

// The base64 body of the first PEM block with `label` (any label if empty).
Result<std::string> PemBlock(std::string_view pem, std::string_view label) {
  static constexpr std::string_view kBegin = "-----BEGIN ";
  static constexpr std::string_view kDashes = "-----";
  size_t pos = 0;
  while (true) {
    size_t begin = pem.find(kBegin, pos);
    if (begin == std::string_view::npos) {
      return Error(Errc::kInvalidArgument,
                   label.empty() ? std::string("no PEM block found")
                                 : "no PEM block \"" + std::string(label) + "\" found");
    }
    size_t label_start = begin + kBegin.size();
    size_t label_end = pem.find(kDashes, label_start);
    if (label_end == std::string_view::npos) {
      return Error(Errc::kInvalidArgument, "malformed PEM header");
    }
    std::string_view found = pem.substr(label_start, label_end - label_start);
    pos = label_end + kDashes.size();
    if (!label.empty() && found != label) continue;
    std::string footer = "-----END " + std::string(found) + "-----";
    size_t end = pem.find(footer, pos);
    if (end == std::string_view::npos) {
      return Error(Errc::kInvalidArgument, "PEM block \"" + std::string(found) + "\" has no end");
    }
    std::string body;
    for (char c : pem.substr(pos, end - pos)) {
      if (c != '\n' && c != '\r' && c != ' ' && c != '\t') body.push_back(c);
    }
    size_t out_len = 0;
    mbedtls_base64_decode(nullptr, 0, &out_len, U(body), body.size());
    std::string der(out_len, '\0');
    int ret = mbedtls_base64_decode(reinterpret_cast<unsigned char*>(der.data()), der.size(),
                                    &out_len, U(body), body.size());
    if (ret != 0) {
      return MbedError(ret, "decoding PEM block \"" + std::string(found) + "\"",
                       Errc::kInvalidArgument);
    }
    der.resize(out_len);
    if (der.empty()) return Error(Errc::kInvalidArgument, "empty PEM block");
    return der;
  }
}

// PEM in (first block with `label`) or DER in; DER out.
Result<std::string> ToDer(std::string_view text, std::string_view label) {
  if (IsPem(text)) return PemBlock(text, label);
  if (text.empty()) return Error(Errc::kInvalidArgument, "empty input");
  return std::string(text);
}

// One certificate (the first one of a PEM).
Status LoadCert(std::string_view text, CrtCtx* crt) {
  OUTPOST_ASSIGN_OR_RETURN(std::string der, ToDer(text, "CERTIFICATE"));
  int ret = mbedtls_x509_crt_parse_der(crt->get(), U(der), der.size());
  if (ret != 0) return MbedError(ret, "parsing certificate", Errc::kInvalidArgument);
  return OkStatus();
}

// Every certificate of a PEM bundle (or one DER certificate).
Status LoadCertBundle(std::string_view text, CrtCtx* crt) {
  if (!IsPem(text)) return LoadCert(text, crt);
  std::string nul_terminated(text);
  int ret = mbedtls_x509_crt_parse(crt->get(), U(nul_terminated), nul_terminated.size() + 1);
  if (ret < 0) return MbedError(ret, "parsing CA certificates", Errc::kInvalidArgument);
  if (ret > 0) {
    return Error(Errc::kInvalidArgument,
                 std::to_string(ret) + " CA certificate(s) in the bundle do not parse");
  }
  return OkStatus();
}

bool IsP256(const mbedtls_pk_context* pk) {
  if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY) return false;
  return mbedtls_pk_ec(*pk)->grp.id == MBEDTLS_ECP_DP_SECP256R1;
}

Result<std::string> WritePublicKeyPem(mbedtls_pk_context* pk) {
  std::array<unsigned char, 1024> buf{};
  int ret = mbedtls_pk_write_pubkey_pem(pk, buf.data(), buf.size());
  if (ret != 0) return MbedError(ret, "writing public key");
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

std::string NameCn(const mbedtls_x509_name* name) {
  for (; name != nullptr; name = name->next) {
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0) return std::string(S(name->val));
  }
  return "";
}

Status CheckCommonName(std::string_view cn) {
  static constexpr std::string_view kForbidden = ",=+\\\"<>;#";
  if (cn.empty() || cn.size() > 64) {
    return Error(Errc::kInvalidArgument, "common name must be 1 to 64 characters");
  }
  if (cn.front() == ' ' || cn.back() == ' ') {
    return Error(Errc::kInvalidArgument, "common name must not start or end with a space");
  }
  for (char c : cn) {
    if (c < 0x20 || c > 0x7e || kForbidden.find(c) != std::string_view::npos) {
      return Error(Errc::kInvalidArgument, "common name \"" + std::string(cn) +
                                               "\" has a character outside the allowed " +
                                               "set (printable ASCII without , = + \\ \" < > ; #)");
    }
  }
  return OkStatus();
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

struct Civil {
  int64_t year, month, day, hour, minute, second;
};

Civil CivilFromUnix(int64_t t) {
  int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
  int64_t secs = t - days * 86400;
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const int64_t doe = days - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp + (mp < 10 ? 3 : -9);
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return {y, m, d, secs / 3600, (secs % 3600) / 60, secs % 60};
}

int64_t UnixFromX509(const mbedtls_x509_time& t) {
  return DaysFromCivil(t.year, t.mon, t.day) * 86400 + int64_t{t.hour} * 3600 +
         int64_t{t.min} * 60 + t.sec;
}

// "20250101000000" for mbedtls_x509write_crt_set_validity.
std::string X509WriteTime(int64_t t) {
  Civil c = CivilFromUnix(t);
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%04lld%02lld%02lld%02lld%02lld%02lld",
                static_cast<long long>(c.year), static_cast<long long>(c.month),
                static_cast<long long>(c.day), static_cast<long long>(c.hour),
                static_cast<long long>(c.minute), static_cast<long long>(c.second));
  return buf.data();
}

// "2025-01-01T00:00:00Z", for messages.
std::string IsoTime(int64_t t) {
  Civil c = CivilFromUnix(t);
  std::array<char, 40> buf{};
  std::snprintf(buf.data(), buf.size(), "%04lld-%02lld-%02lldT%02lld:%02lld:%02lldZ",
                static_cast<long long>(c.year), static_cast<long long>(c.month),
                static_cast<long long>(c.day), static_cast<long long>(c.hour),
                static_cast<long long>(c.minute), static_cast<long long>(c.second));
  return buf.data();
}

int64_t NowUnix() {
  return static_cast<int64_t>(std::time(nullptr));
}

constexpr int64_t kBackdateSeconds = 3600;
constexpr int kMaxValidityDays = 36500;

// "0A1b" -> bytes; no leading zeros, positive, at most 20 bytes (RFC 5280).
Status ParseSerialHex(std::string_view hex, mbedtls_mpi* out) {
  size_t first = hex.find_first_not_of('0');
  std::string_view digits = first == std::string_view::npos ? "" : hex.substr(first);
  if (hex.empty() || digits.empty()) {
    return Error(Errc::kInvalidArgument, "serial \"" + std::string(hex) + "\" is not positive hex");
  }
  if (digits.size() > 40) {
    return Error(Errc::kInvalidArgument, "serial \"" + std::string(hex) + "\" is over 20 bytes");
  }
  for (char c : digits) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return Error(Errc::kInvalidArgument, "serial \"" + std::string(hex) + "\" is not hex");
    }
  }
  std::string text(digits);
  int ret = mbedtls_mpi_read_string(out, 16, text.c_str());
  if (ret != 0) return MbedError(ret, "reading serial", Errc::kInvalidArgument);
  return OkStatus();
}

std::string SerialHex(const mbedtls_x509_buf& serial) {
  std::string_view bytes = S(serial);
  while (bytes.size() > 1 && bytes.front() == '\0')
    bytes.remove_prefix(1);
  std::string hex = HexEncode(bytes);
  // Keep the digits minimal: "0a" -> "a".
  size_t first = hex.find_first_not_of('0');
  return first == std::string::npos ? "0" : hex.substr(first);
}

// ---------------------------------------------------------------------------
// Reading DER that mbedTLS does not expose (extensions, SANs of every type)

struct Tlv {
  int tag = 0;
  const unsigned char* value = nullptr;
  size_t len = 0;
};

// Reads one TLV at *p and advances past it.
bool NextTlv(const unsigned char** p, const unsigned char* end, Tlv* out) {
  if (*p >= end) return false;
  unsigned char* cur = const_cast<unsigned char*>(*p);
  out->tag = *cur++;
  size_t len = 0;
  if (mbedtls_asn1_get_len(&cur, end, &len) != 0) return false;
  out->value = cur;
  out->len = len;
  *p = cur + len;
  return true;
}

// extnID (DER OID bytes) -> extnValue contents, from a TBSCertificate.
struct Extension {
  std::string_view oid;
  std::string_view value;
};

Result<std::vector<Extension>> ReadExtensions(const mbedtls_x509_crt& crt) {
  const Error malformed(Errc::kInvalidArgument, "malformed certificate extensions");
  std::vector<Extension> out;
  const unsigned char* p = crt.tbs.p;
  const unsigned char* end = crt.tbs.p + crt.tbs.len;
  Tlv tbs;
  if (!NextTlv(&p, end, &tbs) || tbs.tag != (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) {
    return malformed;
  }
  p = tbs.value;
  end = tbs.value + tbs.len;
  Tlv field;
  while (NextTlv(&p, end, &field)) {
    if (field.tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3)) continue;
    const unsigned char* q = field.value;
    const unsigned char* q_end = field.value + field.len;
    Tlv seq;
    if (!NextTlv(&q, q_end, &seq)) return malformed;
    q = seq.value;
    q_end = seq.value + seq.len;
    Tlv ext;
    while (NextTlv(&q, q_end, &ext)) {
      const unsigned char* r = ext.value;
      const unsigned char* r_end = ext.value + ext.len;
      Tlv oid;
      Tlv item;
      if (!NextTlv(&r, r_end, &oid) || oid.tag != MBEDTLS_ASN1_OID) return malformed;
      if (!NextTlv(&r, r_end, &item)) return malformed;
      if (item.tag == MBEDTLS_ASN1_BOOLEAN && !NextTlv(&r, r_end, &item)) return malformed;
      if (item.tag != MBEDTLS_ASN1_OCTET_STRING) return malformed;
      out.push_back({S(oid.value, oid.len), S(item.value, item.len)});
    }
  }
  return out;
}

std::string_view OidView(const char* oid, size_t len) {
  return std::string_view(oid, len);
}
#define OUTPOST_OID(name) OidView(name, MBEDTLS_OID_SIZE(name))

// The keyIdentifier of the subjectKeyIdentifier extension, empty if none.
Result<std::string> SubjectKeyId(const mbedtls_x509_crt& crt) {
  OUTPOST_ASSIGN_OR_RETURN(std::vector<Extension> exts, ReadExtensions(crt));
  for (const Extension& ext : exts) {
    if (ext.oid != OUTPOST_OID(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER)) continue;
    const unsigned char* p = U(ext.value);
    Tlv id;
    if (!NextTlv(&p, p + ext.value.size(), &id) || id.tag != MBEDTLS_ASN1_OCTET_STRING) {
      return Error(Errc::kInvalidArgument, "malformed subjectKeyIdentifier");
    }
    return std::string(S(id.value, id.len));
  }
  return std::string();
}

Status ReadSans(const mbedtls_x509_crt& crt, CertInfo* info) {
  OUTPOST_ASSIGN_OR_RETURN(std::vector<Extension> exts, ReadExtensions(crt));
  for (const Extension& ext : exts) {
    if (ext.oid != OUTPOST_OID(MBEDTLS_OID_SUBJECT_ALT_NAME)) continue;
    const Error malformed(Errc::kInvalidArgument, "malformed subjectAltName");
    const unsigned char* p = U(ext.value);
    const unsigned char* end = p + ext.value.size();
    Tlv names;
    if (!NextTlv(&p, end, &names)) return malformed;
    p = names.value;
    end = names.value + names.len;
    Tlv name;
    while (NextTlv(&p, end, &name)) {
      if (name.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)) {
        info->dns_sans.emplace_back(S(name.value, name.len));
      } else if (name.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)) {
        std::array<char, INET6_ADDRSTRLEN> text{};
        int family = name.len == 4 ? AF_INET : name.len == 16 ? AF_INET6 : 0;
        if (family == 0 || inet_ntop(family, name.value, text.data(), text.size()) == nullptr) {
          return malformed;
        }
        info->ip_sans.emplace_back(text.data());
      }
    }
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Writing DER by hand

// Runs one mbedtls_asn1_write_* call, adding what it wrote to `len`.
#define OUTPOST_ASN1_ADD(len, expr)                                              \
  do {                                                                           \
    int outpost_asn1_ret = (expr);                                               \
    if (outpost_asn1_ret < 0) return MbedError(outpost_asn1_ret, "writing DER"); \
    (len) += static_cast<size_t>(outpost_asn1_ret);                              \
  } while (0)

// Writes tag and length in front of `len` bytes already written.
#define OUTPOST_ASN1_WRAP(len, tag)                                                           \
  do {                                                                                        \
    OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_len(p, start, len));                             \
    OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_tag(p, start, static_cast<unsigned char>(tag))); \
  } while (0)

constexpr int kSequence = MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE;

// A DER writer over a buffer filled from its end.
class DerBuffer {
 public:
  explicit DerBuffer(size_t size) : buf_(size), p_(buf_.data() + buf_.size()) {}
  unsigned char** p() { return &p_; }
  unsigned char* start() { return buf_.data(); }
  std::string Take(size_t len) const { return std::string(S(p_, len)); }

 private:
  std::vector<unsigned char> buf_;
  unsigned char* p_;
};

// GeneralNames for subjectAltName: dNSName [2] IA5String, iPAddress [7].
Result<std::string> SubjectAltNameDer(const CertSpec& spec) {
  struct Name {
    int tag;
    std::string bytes;
  };
  std::vector<Name> names;
  for (const std::string& dns : spec.dns_sans) {
    bool ok = !dns.empty() && dns.size() <= 253;
    for (char c : dns) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*');
    }
    if (!ok) return Error(Errc::kInvalidArgument, "\"" + dns + "\" is not a valid DNS name");
    names.push_back({MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, dns});
  }
  for (const std::string& ip : spec.ip_sans) {
    std::array<unsigned char, 16> addr{};
    if (inet_pton(AF_INET, ip.c_str(), addr.data()) == 1) {
      names.push_back({MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, std::string(S(addr.data(), 4))});
    } else if (inet_pton(AF_INET6, ip.c_str(), addr.data()) == 1) {
      names.push_back({MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, std::string(S(addr.data(), 16))});
    } else {
      return Error(Errc::kInvalidArgument, "\"" + ip + "\" is not an IPv4 or IPv6 address");
    }
  }
  size_t size = 16;
  for (const Name& n : names)
    size += n.bytes.size() + 8;
  DerBuffer der(size);
  unsigned char** p = der.p();
  unsigned char* start = der.start();
  size_t len = 0;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    size_t one = 0;
    OUTPOST_ASN1_ADD(one, mbedtls_asn1_write_raw_buffer(p, start, U(it->bytes), it->bytes.size()));
    OUTPOST_ASN1_WRAP(one, it->tag);
    len += one;
  }
  OUTPOST_ASN1_WRAP(len, kSequence);
  return der.Take(len);
}

// ExtKeyUsageSyntax ::= SEQUENCE OF KeyPurposeId.
Result<std::string> ExtKeyUsageDer(CertUsage usage) {
  std::vector<std::string_view> oids;
  if (usage == CertUsage::kServer || usage == CertUsage::kServerAndClient) {
    oids.push_back(OUTPOST_OID(MBEDTLS_OID_SERVER_AUTH));
  }
  if (usage == CertUsage::kClient || usage == CertUsage::kServerAndClient) {
    oids.push_back(OUTPOST_OID(MBEDTLS_OID_CLIENT_AUTH));
  }
  if (usage == CertUsage::kSigning) oids.push_back(OUTPOST_OID(MBEDTLS_OID_CODE_SIGNING));
  DerBuffer der(128);
  unsigned char** p = der.p();
  unsigned char* start = der.start();
  size_t len = 0;
  for (auto it = oids.rbegin(); it != oids.rend(); ++it) {
    OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_oid(p, start, it->data(), it->size()));
  }
  OUTPOST_ASN1_WRAP(len, kSequence);
  return der.Take(len);
}

// AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }.
Result<std::string> AuthorityKeyIdDer(std::string_view key_id) {
  DerBuffer der(key_id.size() + 16);
  unsigned char** p = der.p();
  unsigned char* start = der.start();
  size_t len = 0;
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_raw_buffer(p, start, U(key_id), key_id.size()));
  OUTPOST_ASN1_WRAP(len, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0);
  OUTPOST_ASN1_WRAP(len, kSequence);
  return der.Take(len);
}

Status SetExtension(mbedtls_x509write_cert* ctx, std::string_view oid, bool critical,
                    std::string_view value) {
  int ret = mbedtls_x509write_crt_set_extension(ctx, oid.data(), oid.size(), critical ? 1 : 0,
                                                U(value), value.size());
  if (ret != 0) return MbedError(ret, "adding certificate extension");
  return OkStatus();
}

Status RandomSerial(Rng* rng, mbedtls_mpi* serial) {
  std::array<unsigned char, 16> bytes{};
  OUTPOST_TRY(rng->Bytes(bytes.data(), bytes.size()));
  bytes[0] = static_cast<unsigned char>(bytes[0] & 0x7f);  // positive
  if (bytes[0] == 0) bytes[0] = 1;                         // always 16 bytes long
  int ret = mbedtls_mpi_read_binary(serial, bytes.data(), bytes.size());
  if (ret != 0) return MbedError(ret, "making serial");
  return OkStatus();
}

Result<std::string> WriteCertDer(mbedtls_x509write_cert* ctx, Rng* rng) {
  std::vector<unsigned char> buf(16384);
  int ret = mbedtls_x509write_crt_der(ctx, buf.data(), buf.size(), Rng::Fill, rng);
  if (ret < 0) return MbedError(ret, "writing certificate");
  size_t len = static_cast<size_t>(ret);
  return std::string(S(buf.data() + buf.size() - len, len));
}

}  // namespace

// ---------------------------------------------------------------------------
// PrivateKey

// mbedTLS does not promise that a context may be used by several threads at
// once, even for operations that look read-only (with
// MBEDTLS_ECP_FIXED_POINT_OPTIM an EC group may cache a precomputed table on
// first use; 2.28 ships static tables for P-256, other builds may not), so
// every use of a key holds its mutex.
struct PrivateKey::Impl {
  std::mutex mu;
  PkCtx pk;
};

struct KeyAccess {
  // Hold this while using Pk(key).
  [[nodiscard]] static std::unique_lock<std::mutex> Lock(const PrivateKey& key) {
    return std::unique_lock<std::mutex>(key.impl_->mu);
  }
  // mbedTLS's functions take non-const contexts even where they only read.
  static mbedtls_pk_context* Pk(const PrivateKey& key) {
    return const_cast<mbedtls_pk_context*>(key.impl_->pk.get());
  }
  static PrivateKey Make(std::unique_ptr<PrivateKey::Impl> impl) {
    return PrivateKey(std::move(impl));
  }
};

PrivateKey::PrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;
PrivateKey::~PrivateKey() = default;  // mbedtls_pk_free zeroizes the key

Result<PrivateKey> PrivateKey::Generate() {
  Rng rng;
  OUTPOST_TRY(rng.Seed());
  auto impl = std::make_unique<Impl>();
  int ret = mbedtls_pk_setup(impl->pk.get(), mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (ret != 0) return MbedError(ret, "setting up key");
  ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*impl->pk.get()), Rng::Fill,
                            &rng);
  if (ret != 0) return MbedError(ret, "generating P-256 key");
  return KeyAccess::Make(std::move(impl));
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (!IsPem(pem)) return Error(Errc::kInvalidArgument, "private key is not PEM");
  std::string nul_terminated(pem);
  auto impl = std::make_unique<Impl>();
  int ret = mbedtls_pk_parse_key(impl->pk.get(), U(nul_terminated), nul_terminated.size() + 1,
                                 nullptr, 0);
  mbedtls_platform_zeroize(nul_terminated.data(), nul_terminated.size());
  if (ret != 0) return MbedError(ret, "parsing private key", Errc::kInvalidArgument);
  if (!IsP256(impl->pk.get())) {
    return Error(Errc::kInvalidArgument, "private key is not an EC P-256 key");
  }
  return KeyAccess::Make(std::move(impl));
}

Result<std::string> PrivateKey::ToPem() const {
  std::array<unsigned char, 1024> buf{};
  auto lock = KeyAccess::Lock(*this);
  int ret = mbedtls_pk_write_key_pem(KeyAccess::Pk(*this), buf.data(), buf.size());
  if (ret != 0) return MbedError(ret, "writing private key");
  std::string pem(reinterpret_cast<const char*>(buf.data()));
  mbedtls_platform_zeroize(buf.data(), buf.size());
  return pem;
}

Result<std::string> PrivateKey::PublicKeyPem() const {
  auto lock = KeyAccess::Lock(*this);
  return WritePublicKeyPem(KeyAccess::Pk(*this));
}

// ---------------------------------------------------------------------------
// CSRs

Result<std::string> CreateCsr(const PrivateKey& key, const std::string& common_name) {
  OUTPOST_TRY(CheckCommonName(common_name));
  Rng rng;
  OUTPOST_TRY(rng.Seed());
  CsrWriteCtx csr;
  auto lock = KeyAccess::Lock(key);
  mbedtls_x509write_csr_set_key(csr.get(), KeyAccess::Pk(key));
  mbedtls_x509write_csr_set_md_alg(csr.get(), MBEDTLS_MD_SHA256);
  std::string subject = "CN=" + common_name;
  int ret = mbedtls_x509write_csr_set_subject_name(csr.get(), subject.c_str());
  if (ret != 0) return MbedError(ret, "setting CSR subject", Errc::kInvalidArgument);
  std::array<unsigned char, 4096> buf{};
  ret = mbedtls_x509write_csr_pem(csr.get(), buf.data(), buf.size(), Rng::Fill, &rng);
  if (ret != 0) return MbedError(ret, "writing CSR");
  return std::string(reinterpret_cast<const char*>(buf.data()));
}

Result<CsrInfo> ParseCsr(std::string_view pem) {
  OUTPOST_ASSIGN_OR_RETURN(std::string der, ToDer(pem, "CERTIFICATE REQUEST"));
  CsrCtx csr;
  int ret = mbedtls_x509_csr_parse_der(csr.get(), U(der), der.size());
  if (ret != 0) return MbedError(ret, "parsing CSR", Errc::kInvalidArgument);
  if (!IsP256(&csr->pk)) return Error(Errc::kInvalidArgument, "CSR key is not an EC P-256 key");
  // mbedtls_x509_csr_parse does not check the self-signature; do it here.
  const mbedtls_md_info_t* md = mbedtls_md_info_from_type(csr->sig_md);
  if (md == nullptr || (csr->sig_md != MBEDTLS_MD_SHA256 && csr->sig_md != MBEDTLS_MD_SHA384 &&
                        csr->sig_md != MBEDTLS_MD_SHA512)) {
    return Error(Errc::kInvalidArgument, "CSR is not signed with SHA-256/384/512");
  }
  std::array<unsigned char, MBEDTLS_MD_MAX_SIZE> hash{};
  ret = mbedtls_md(md, csr->cri.p, csr->cri.len, hash.data());
  if (ret != 0) return MbedError(ret, "hashing CSR");
  ret = mbedtls_pk_verify_ext(csr->sig_pk, csr->sig_opts, &csr->pk, csr->sig_md, hash.data(),
                              mbedtls_md_get_size(md), csr->sig.p, csr->sig.len);
  if (ret != 0) {
    return Error(Errc::kUnauthenticated, "CSR signature does not verify: " + MbedText(ret));
  }
  CsrInfo info;
  info.common_name = NameCn(&csr->subject);
  OUTPOST_ASSIGN_OR_RETURN(info.public_key_pem, WritePublicKeyPem(&csr->pk));
  return info;
}

// ---------------------------------------------------------------------------
// Certificates

Result<std::string> CreateSelfSignedCa(const PrivateKey& key, const std::string& common_name,
                                       int validity_days) {
  OUTPOST_TRY(CheckCommonName(common_name));
  if (validity_days < 1 || validity_days > kMaxValidityDays) {
    return Error(Errc::kInvalidArgument, "validity must be 1 to 36500 days");
  }
  Rng rng;
  OUTPOST_TRY(rng.Seed());
  CrtWriteCtx crt;
  MpiCtx serial;
  OUTPOST_TRY(RandomSerial(&rng, serial.get()));
  auto lock = KeyAccess::Lock(key);
  mbedtls_pk_context* pk = KeyAccess::Pk(key);
  std::string name = "CN=" + common_name;
  int64_t now = NowUnix();
  mbedtls_x509write_crt_set_version(crt.get(), MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(crt.get(), MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(crt.get(), pk);
  mbedtls_x509write_crt_set_issuer_key(crt.get(), pk);
  int ret = mbedtls_x509write_crt_set_serial(crt.get(), serial.get());
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_name(crt.get(), name.c_str());
  if (ret == 0) ret = mbedtls_x509write_crt_set_issuer_name(crt.get(), name.c_str());
  if (ret == 0) {
    ret = mbedtls_x509write_crt_set_validity(
        crt.get(), X509WriteTime(now - kBackdateSeconds).c_str(),
        X509WriteTime(now + int64_t{validity_days} * 86400).c_str());
  }
  if (ret == 0) ret = mbedtls_x509write_crt_set_basic_constraints(crt.get(), 1, 0);
  if (ret == 0) {
    ret = mbedtls_x509write_crt_set_key_usage(
        crt.get(), MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN);
  }
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_key_identifier(crt.get());
  if (ret == 0) ret = mbedtls_x509write_crt_set_authority_key_identifier(crt.get());
  if (ret != 0) return MbedError(ret, "preparing CA certificate");
  OUTPOST_ASSIGN_OR_RETURN(std::string der, WriteCertDer(crt.get(), &rng));
  return DerToPem(der, "CERTIFICATE");
}

Result<std::string> IssueCertificate(const std::string& subject_public_key_pem,
                                     const CertSpec& spec, const PrivateKey& ca_key,
                                     const std::string& ca_cert_pem) {
  OUTPOST_TRY(CheckCommonName(spec.common_name));
  if (spec.validity_days < 1 || spec.validity_days > kMaxValidityDays) {
    return Error(Errc::kInvalidArgument, "validity must be 1 to 36500 days");
  }
  OUTPOST_ASSIGN_OR_RETURN(std::string san_der, SubjectAltNameDer(spec));
  OUTPOST_ASSIGN_OR_RETURN(std::string eku_der, ExtKeyUsageDer(spec.usage));

  PkCtx subject_key;
  std::string nul_terminated(subject_public_key_pem);
  int ret = IsPem(nul_terminated)
                ? mbedtls_pk_parse_public_key(subject_key.get(), U(nul_terminated),
                                              nul_terminated.size() + 1)
                : mbedtls_pk_parse_public_key(subject_key.get(), U(nul_terminated),
                                              nul_terminated.size());
  if (ret != 0) return MbedError(ret, "parsing subject public key", Errc::kInvalidArgument);
  if (!IsP256(subject_key.get())) {
    return Error(Errc::kInvalidArgument, "subject key is not an EC P-256 key");
  }

  CrtCtx ca;
  OUTPOST_TRY(LoadCert(ca_cert_pem, &ca));
  if (ca->ca_istrue == 0) return Error(Errc::kInvalidArgument, "issuer certificate is not a CA");
  auto lock = KeyAccess::Lock(ca_key);
  if (mbedtls_pk_check_pair(&ca->pk, KeyAccess::Pk(ca_key)) != 0) {
    return Error(Errc::kInvalidArgument, "CA key does not match the CA certificate");
  }
  std::array<char, 1024> issuer_name{};
  if (mbedtls_x509_dn_gets(issuer_name.data(), issuer_name.size(), &ca->subject) < 0) {
    return Error(Errc::kInvalidArgument, "CA subject name is too long");
  }
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_key_id, SubjectKeyId(*ca.get()));

  Rng rng;
  OUTPOST_TRY(rng.Seed());
  MpiCtx serial;
  if (spec.serial_hex.empty()) {
    OUTPOST_TRY(RandomSerial(&rng, serial.get()));
  } else {
    OUTPOST_TRY(ParseSerialHex(spec.serial_hex, serial.get()));
  }

  CrtWriteCtx crt;
  std::string subject = "CN=" + spec.common_name;
  int64_t now = NowUnix();
  int64_t not_after = now + int64_t{spec.validity_days} * 86400;
  // Never outlive the CA: a chain check would fail from then on anyway.
  not_after = std::min(not_after, UnixFromX509(ca->valid_to));
  mbedtls_x509write_crt_set_version(crt.get(), MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(crt.get(), MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(crt.get(), subject_key.get());
  mbedtls_x509write_crt_set_issuer_key(crt.get(), KeyAccess::Pk(ca_key));
  ret = mbedtls_x509write_crt_set_serial(crt.get(), serial.get());
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_name(crt.get(), subject.c_str());
  if (ret == 0) ret = mbedtls_x509write_crt_set_issuer_name(crt.get(), issuer_name.data());
  if (ret == 0) {
    ret = mbedtls_x509write_crt_set_validity(
        crt.get(), X509WriteTime(now - kBackdateSeconds).c_str(), X509WriteTime(not_after).c_str());
  }
  if (ret == 0) ret = mbedtls_x509write_crt_set_basic_constraints(crt.get(), 0, -1);
  if (ret == 0) {
    unsigned int key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
    if (spec.usage != CertUsage::kSigning) key_usage |= MBEDTLS_X509_KU_KEY_AGREEMENT;
    ret = mbedtls_x509write_crt_set_key_usage(crt.get(), key_usage);
  }
  if (ret == 0) ret = mbedtls_x509write_crt_set_subject_key_identifier(crt.get());
  if (ret == 0 && ca_key_id.empty()) {
    ret = mbedtls_x509write_crt_set_authority_key_identifier(crt.get());
  }
  if (ret != 0) return MbedError(ret, "preparing certificate");
  if (!ca_key_id.empty()) {
    OUTPOST_ASSIGN_OR_RETURN(std::string aki_der, AuthorityKeyIdDer(ca_key_id));
    OUTPOST_TRY(
        SetExtension(crt.get(), OUTPOST_OID(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), false, aki_der));
  }
  OUTPOST_TRY(SetExtension(crt.get(), OUTPOST_OID(MBEDTLS_OID_EXTENDED_KEY_USAGE), false, eku_der));
  if (!spec.dns_sans.empty() || !spec.ip_sans.empty()) {
    OUTPOST_TRY(SetExtension(crt.get(), OUTPOST_OID(MBEDTLS_OID_SUBJECT_ALT_NAME), false, san_der));
  }
  OUTPOST_ASSIGN_OR_RETURN(std::string der, WriteCertDer(crt.get(), &rng));

  // The issuer name was rebuilt from text; it must be the CA's subject byte
  // for byte, or verifiers will not find the CA.
  CrtCtx issued;
  OUTPOST_TRY(LoadCert(der, &issued));
  if (S(issued->issuer_raw) != S(ca->subject_raw)) {
    return Error(Errc::kInvalidArgument,
                 "the CA's subject name cannot be reproduced as the issuer name");
  }
  return DerToPem(der, "CERTIFICATE");
}

Result<CertInfo> ParseCertificate(std::string_view pem) {
  CrtCtx crt;
  OUTPOST_TRY(LoadCert(pem, &crt));
  CertInfo info;
  info.common_name = NameCn(&crt->subject);
  info.issuer_cn = NameCn(&crt->issuer);
  info.serial_hex = SerialHex(crt->serial);
  info.not_before_unix = UnixFromX509(crt->valid_from);
  info.not_after_unix = UnixFromX509(crt->valid_to);
  OUTPOST_TRY(ReadSans(*crt.get(), &info));
  OUTPOST_ASSIGN_OR_RETURN(info.public_key_pem, WritePublicKeyPem(&crt->pk));
  info.der = std::string(S(crt->raw));
  info.is_ca = crt->ca_istrue != 0;
  return info;
}

namespace {

struct VerifyTrace {
  const mbedtls_x509_crt* issuer = nullptr;  // the CA the leaf chained to
};

// Time is checked by VerifyChain itself (against options.now_unix), so the
// library's clock-based flags are dropped here.
int ClearTimeFlags(void* trace, mbedtls_x509_crt* crt, int depth, uint32_t* flags) {
  *flags &= ~static_cast<uint32_t>(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
  if (depth == 1) static_cast<VerifyTrace*>(trace)->issuer = crt;
  return 0;
}

Status CheckValidity(const mbedtls_x509_crt& crt, int64_t now, std::string_view what) {
  int64_t not_before = UnixFromX509(crt.valid_from);
  int64_t not_after = UnixFromX509(crt.valid_to);
  if (now > not_after) {
    return Error(Errc::kExpired, std::string(what) + " expired at " + IsoTime(not_after));
  }
  if (now < not_before) {
    return Error(Errc::kUnauthenticated, std::string(what) + " is not yet valid (valid from " +
                                             IsoTime(not_before) + ", now is " + IsoTime(now) +
                                             "; is the clock right?)");
  }
  return OkStatus();
}

bool HasExtKeyUsage(const mbedtls_x509_crt& crt, std::string_view oid) {
  for (const mbedtls_x509_sequence* cur = &crt.ext_key_usage; cur != nullptr; cur = cur->next) {
    if (cur->buf.p != nullptr && S(cur->buf) == oid) return true;
  }
  return false;
}

Status CheckUsage(mbedtls_x509_crt* crt, CertUsage usage) {
  if (mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0) {
    return Error(Errc::kUnauthenticated, "certificate key usage does not allow signatures");
  }
  bool has_eku = (crt->ext_types & MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE) != 0;
  auto allows = [&](std::string_view oid) {
    return !has_eku || HasExtKeyUsage(*crt, oid) ||
           HasExtKeyUsage(*crt, OUTPOST_OID(MBEDTLS_OID_ANY_EXTENDED_KEY_USAGE));
  };
  switch (usage) {
    case CertUsage::kServer:
      if (!allows(OUTPOST_OID(MBEDTLS_OID_SERVER_AUTH))) {
        return Error(Errc::kUnauthenticated, "certificate is not valid for TLS servers");
      }
      break;
    case CertUsage::kClient:
      if (!allows(OUTPOST_OID(MBEDTLS_OID_CLIENT_AUTH))) {
        return Error(Errc::kUnauthenticated, "certificate is not valid for TLS clients");
      }
      break;
    case CertUsage::kServerAndClient:
      if (!allows(OUTPOST_OID(MBEDTLS_OID_SERVER_AUTH)) ||
          !allows(OUTPOST_OID(MBEDTLS_OID_CLIENT_AUTH))) {
        return Error(Errc::kUnauthenticated,
                     "certificate is not valid for both TLS servers and clients");
      }
      break;
    case CertUsage::kSigning:
      // Strict: only a certificate made for signing, never a TLS one.
      if (!has_eku || !HasExtKeyUsage(*crt, OUTPOST_OID(MBEDTLS_OID_CODE_SIGNING))) {
        return Error(Errc::kUnauthenticated, "certificate is not a signing certificate");
      }
      break;
  }
  return OkStatus();
}

}  // namespace

Status VerifyChain(std::string_view leaf_pem, std::string_view ca_pem,
                   const VerifyOptions& options) {
  CrtCtx leaf;
  if (Status s = LoadCert(leaf_pem, &leaf); !s) return std::move(s).error();
  CrtCtx ca;
  if (Status s = LoadCertBundle(ca_pem, &ca); !s) return std::move(s).error();
  const std::string leaf_cn = NameCn(&leaf->subject);
  if (leaf->ca_istrue != 0) {
    return Error(Errc::kUnauthenticated,
                 "certificate \"" + leaf_cn + "\" is a CA certificate, not a leaf");
  }
  uint32_t flags = 0;
  VerifyTrace trace;
  int ret = mbedtls_x509_crt_verify(leaf.get(), ca.get(), nullptr, nullptr, &flags, ClearTimeFlags,
                                    &trace);
  if (ret != 0 || flags != 0 || trace.issuer == nullptr) {
    if ((flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) != 0 || trace.issuer == nullptr) {
      return Error(Errc::kUnauthenticated, "certificate \"" + leaf_cn +
                                               "\" is not signed by this CA (its issuer is \"" +
                                               NameCn(&leaf->issuer) + "\")");
    }
    std::array<char, 512> info{};
    mbedtls_x509_crt_verify_info(info.data(), info.size(), "", flags);
    std::string text = info.data();
    std::replace(text.begin(), text.end(), '\n', ';');
    if (text.empty()) text = MbedText(ret);
    return Error(Errc::kUnauthenticated,
                 "certificate \"" + leaf_cn + "\" fails verification: " + text);
  }
  const int64_t now = options.now_unix.value_or(NowUnix());
  OUTPOST_TRY(CheckValidity(*leaf.get(), now, "certificate \"" + leaf_cn + "\""));
  OUTPOST_TRY(CheckValidity(*trace.issuer, now,
                            "CA certificate \"" + NameCn(&trace.issuer->subject) + "\""));
  if (!options.expected_cn.empty() && leaf_cn != options.expected_cn) {
    return Error(Errc::kUnauthenticated,
                 "certificate CN is \"" + leaf_cn + "\", expected \"" + options.expected_cn + "\"");
  }
  if (options.usage) OUTPOST_TRY(CheckUsage(leaf.get(), *options.usage));
  return OkStatus();
}

// ---------------------------------------------------------------------------
// Signatures

Result<std::string> Sign(const PrivateKey& key, std::string_view payload) {
  Rng rng;
  OUTPOST_TRY(rng.Seed());
  std::string hash = Sha256(payload);
  std::array<unsigned char, MBEDTLS_PK_SIGNATURE_MAX_SIZE> sig{};
  size_t sig_len = 0;
  auto lock = KeyAccess::Lock(key);
  int ret = mbedtls_pk_sign(KeyAccess::Pk(key), MBEDTLS_MD_SHA256, U(hash), hash.size(), sig.data(),
                            &sig_len, Rng::Fill, &rng);
  if (ret != 0) return MbedError(ret, "signing");
  return std::string(S(sig.data(), sig_len));
}

Status VerifySignature(std::string_view cert_pem_or_der, std::string_view payload,
                       std::string_view signature_der) {
  CrtCtx crt;
  OUTPOST_TRY(LoadCert(cert_pem_or_der, &crt));
  if (signature_der.empty()) return Error(Errc::kUnauthenticated, "signature is empty");
  std::string hash = Sha256(payload);
  int ret = mbedtls_pk_verify(&crt->pk, MBEDTLS_MD_SHA256, U(hash), hash.size(), U(signature_der),
                              signature_der.size());
  if (ret != 0) {
    return Error(Errc::kUnauthenticated, "signature does not verify with the key of \"" +
                                             NameCn(&crt->subject) + "\": " + MbedText(ret));
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------
// CRLs

namespace {

// UTCTime before 2050, GeneralizedTime from then on (RFC 5280 5.1.2.4).
Result<size_t> WriteTime(unsigned char** p, unsigned char* start, int64_t t) {
  Civil c = CivilFromUnix(t);
  std::array<char, 32> text{};
  int tag = MBEDTLS_ASN1_UTC_TIME;
  if (c.year >= 1950 && c.year < 2050) {
    std::snprintf(text.data(), text.size(), "%02lld%02lld%02lld%02lld%02lld%02lldZ",
                  static_cast<long long>(c.year % 100), static_cast<long long>(c.month),
                  static_cast<long long>(c.day), static_cast<long long>(c.hour),
                  static_cast<long long>(c.minute), static_cast<long long>(c.second));
  } else {
    tag = MBEDTLS_ASN1_GENERALIZED_TIME;
    std::snprintf(text.data(), text.size(), "%04lld%02lld%02lld%02lld%02lld%02lldZ",
                  static_cast<long long>(c.year), static_cast<long long>(c.month),
                  static_cast<long long>(c.day), static_cast<long long>(c.hour),
                  static_cast<long long>(c.minute), static_cast<long long>(c.second));
  }
  size_t len = 0;
  std::string_view view(text.data());
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_tagged_string(p, start, tag, view.data(), view.size()));
  return len;
}

// Extension ::= SEQUENCE { extnID, extnValue OCTET STRING } (not critical).
Result<size_t> WriteExtension(unsigned char** p, unsigned char* start, std::string_view oid,
                              std::string_view value) {
  size_t len = 0;
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_raw_buffer(p, start, U(value), value.size()));
  OUTPOST_ASN1_WRAP(len, MBEDTLS_ASN1_OCTET_STRING);
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_oid(p, start, oid.data(), oid.size()));
  OUTPOST_ASN1_WRAP(len, kSequence);
  return len;
}

// AlgorithmIdentifier for ecdsa-with-SHA256: no parameters (RFC 5758 3.2).
Result<size_t> WriteEcdsaSha256AlgId(unsigned char** p, unsigned char* start) {
  size_t len = 0;
  std::string_view oid = OUTPOST_OID(MBEDTLS_OID_ECDSA_SHA256);
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_oid(p, start, oid.data(), oid.size()));
  OUTPOST_ASN1_WRAP(len, kSequence);
  return len;
}

}  // namespace

Result<std::string> CreateCrl(const PrivateKey& ca_key, const std::string& ca_cert_pem,
                              const std::vector<std::string>& revoked_serials_hex,
                              int next_update_days) {
  if (next_update_days < 1 || next_update_days > 3650) {
    return Error(Errc::kInvalidArgument, "CRL next update must be 1 to 3650 days away");
  }
  CrtCtx ca;
  OUTPOST_TRY(LoadCert(ca_cert_pem, &ca));
  if (ca->ca_istrue == 0) return Error(Errc::kInvalidArgument, "issuer certificate is not a CA");
  {
    auto lock = KeyAccess::Lock(ca_key);
    mbedtls_pk_context* key = KeyAccess::Pk(ca_key);
    if (mbedtls_pk_check_pair(&ca->pk, key) != 0) {
      return Error(Errc::kInvalidArgument, "CA key does not match the CA certificate");
    }
    if (!IsP256(key)) return Error(Errc::kInvalidArgument, "CA key is not an EC P-256 key");
  }  // Sign() below takes the lock again
  OUTPOST_ASSIGN_OR_RETURN(std::string ca_key_id, SubjectKeyId(*ca.get()));

  // Parse and deduplicate serials (by value, so "0a" and "A" are one).
  std::set<std::string> seen;
  std::vector<std::unique_ptr<MpiCtx>> serials;
  for (const std::string& hex : revoked_serials_hex) {
    auto mpi = std::make_unique<MpiCtx>();
    OUTPOST_TRY(ParseSerialHex(hex, mpi->get()));
    std::array<unsigned char, 20> bytes{};
    if (mbedtls_mpi_write_binary(mpi->get(), bytes.data(), bytes.size()) != 0) {
      return Error(Errc::kInvalidArgument, "serial \"" + hex + "\" is over 20 bytes");
    }
    if (seen.insert(std::string(S(bytes.data(), bytes.size()))).second) {
      serials.push_back(std::move(mpi));
    }
  }

  const int64_t this_update = NowUnix();
  const int64_t next_update = this_update + int64_t{next_update_days} * 86400;

  // TBSCertList, written back to front.
  DerBuffer tbs(1024 + ca->subject_raw.len + ca_key_id.size() + 64 * serials.size());
  unsigned char** p = tbs.p();
  unsigned char* start = tbs.start();
  size_t len = 0;
  {
    // crlExtensions [0] EXPLICIT Extensions: authorityKeyIdentifier, cRLNumber.
    size_t ext_len = 0;
    DerBuffer number(32);
    {
      unsigned char** np = number.p();
      MpiCtx crl_number;
      // From the 64-bit time as big-endian bytes: mbedtls_mpi_lset takes an
      // mbedtls_mpi_sint, 32 bits on armhf (and this_update passes 2^31 in 2038).
      unsigned char be[8];
      const auto number_value = static_cast<std::uint64_t>(this_update);
      for (int i = 0; i < 8; ++i)
        be[i] = static_cast<unsigned char>(number_value >> (56 - 8 * i));
      if (mbedtls_mpi_read_binary(crl_number.get(), be, sizeof be) != 0) {
        return Error(Errc::kInternal, "CRL number");
      }
      size_t n = 0;
      int r = mbedtls_asn1_write_mpi(np, number.start(), crl_number.get());
      if (r < 0) return MbedError(r, "writing CRL number");
      n = static_cast<size_t>(r);
      OUTPOST_ASSIGN_OR_RETURN(
          size_t written,
          WriteExtension(p, start, OUTPOST_OID(MBEDTLS_OID_CRL_NUMBER), number.Take(n)));
      ext_len += written;
    }
    if (!ca_key_id.empty()) {
      OUTPOST_ASSIGN_OR_RETURN(std::string aki, AuthorityKeyIdDer(ca_key_id));
      OUTPOST_ASSIGN_OR_RETURN(
          size_t written,
          WriteExtension(p, start, OUTPOST_OID(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), aki));
      ext_len += written;
    }
    OUTPOST_ASN1_WRAP(ext_len, kSequence);
    OUTPOST_ASN1_WRAP(ext_len, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0);
    len += ext_len;
  }
  if (!serials.empty()) {
    // revokedCertificates SEQUENCE OF SEQUENCE { userCertificate, revocationDate }
    size_t list_len = 0;
    for (auto it = serials.rbegin(); it != serials.rend(); ++it) {
      size_t entry_len = 0;
      OUTPOST_ASSIGN_OR_RETURN(size_t time_len, WriteTime(p, start, this_update));
      entry_len += time_len;
      OUTPOST_ASN1_ADD(entry_len, mbedtls_asn1_write_mpi(p, start, (*it)->get()));
      OUTPOST_ASN1_WRAP(entry_len, kSequence);
      list_len += entry_len;
    }
    OUTPOST_ASN1_WRAP(list_len, kSequence);
    len += list_len;
  }
  {
    OUTPOST_ASSIGN_OR_RETURN(size_t next_len, WriteTime(p, start, next_update));
    len += next_len;
    OUTPOST_ASSIGN_OR_RETURN(size_t this_len, WriteTime(p, start, this_update));
    len += this_len;
  }
  OUTPOST_ASN1_ADD(len,
                   mbedtls_asn1_write_raw_buffer(p, start, ca->subject_raw.p, ca->subject_raw.len));
  {
    OUTPOST_ASSIGN_OR_RETURN(size_t alg_len, WriteEcdsaSha256AlgId(p, start));
    len += alg_len;
  }
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_int(p, start, 1));  // v2
  OUTPOST_ASN1_WRAP(len, kSequence);
  const std::string tbs_der = tbs.Take(len);

  // Sign it.
  OUTPOST_ASSIGN_OR_RETURN(std::string signature, Sign(ca_key, tbs_der));

  // CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
  DerBuffer crl(tbs_der.size() + signature.size() + 64);
  p = crl.p();
  start = crl.start();
  len = 0;
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_bitstring(p, start, U(signature), signature.size() * 8));
  {
    OUTPOST_ASSIGN_OR_RETURN(size_t alg_len, WriteEcdsaSha256AlgId(p, start));
    len += alg_len;
  }
  OUTPOST_ASN1_ADD(len, mbedtls_asn1_write_raw_buffer(p, start, U(tbs_der), tbs_der.size()));
  OUTPOST_ASN1_WRAP(len, kSequence);
  return DerToPem(crl.Take(len), "X509 CRL");
}

// ---------------------------------------------------------------------------
// Encodings, hashes, randomness

std::string DerToPem(std::string_view der, const char* label) {
  size_t b64_len = 0;
  mbedtls_base64_encode(nullptr, 0, &b64_len, U(der), der.size());
  std::string b64(b64_len, '\0');
  if (mbedtls_base64_encode(reinterpret_cast<unsigned char*>(b64.data()), b64.size(), &b64_len,
                            U(der), der.size()) != 0) {
    std::abort();  // the buffer was sized by the same function
  }
  b64.resize(b64_len);
  std::string pem = "-----BEGIN " + std::string(label) + "-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) {
    pem.append(b64, i, 64);
    pem.push_back('\n');
  }
  pem += "-----END " + std::string(label) + "-----\n";
  return pem;
}

Result<std::string> PemToDer(std::string_view pem) {
  return PemBlock(pem, "");
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    auto b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

std::string Sha256(std::string_view data) {
  std::array<unsigned char, 32> digest{};
  if (mbedtls_sha256_ret(U(data), data.size(), digest.data(), 0) != 0) {
    std::abort();  // cannot fail for the software implementation
  }
  return std::string(S(digest.data(), digest.size()));
}

std::string Sha256Hex(std::string_view data) {
  return HexEncode(Sha256(data));
}

Result<std::string> SpkiSha256(std::string_view cert_pem) {
  CrtCtx crt;
  OUTPOST_TRY(LoadCert(cert_pem, &crt));
  return "sha256:" + Sha256Hex(S(crt->pk_raw));
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = static_cast<unsigned char>(
        diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i])));
  }
  return diff == 0;
}

std::string RandomBytes(size_t n) {
  Result<std::string> bytes = SeededRandom(n);
  if (!bytes.ok()) {
    std::fprintf(stderr, "outpost: fatal: no randomness: %s\n", bytes.error().message().c_str());
    std::abort();
  }
  return std::move(bytes).value();
}

std::string RandomToken(size_t n) {
  static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  // 252 = 7 * 36: bytes at or above it are dropped, so every symbol is
  // equally likely.
  constexpr unsigned kLimit = 252;
  std::string out;
  out.reserve(n);
  while (out.size() < n) {
    std::string chunk = RandomBytes(n - out.size() + 8);
    for (char c : chunk) {
      auto b = static_cast<unsigned char>(c);
      if (b >= kLimit) continue;
      out.push_back(kAlphabet[b % kAlphabet.size()]);
      if (out.size() == n) break;
    }
  }
  return out;
}

}  // namespace outpost::crypto
