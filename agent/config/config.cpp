#include "agent/config/config.hpp"

#include <cerrno>
#include <charconv>
#include <limits>

#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"

namespace outpost::agent::config {
namespace {

constexpr std::size_t kMaxConfigBytes = 64 * 1024;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

Error LineError(int line, const std::string& what) {
  return Error(Errc::kInvalidArgument, "line " + std::to_string(line) + ": " + what);
}

// The value part of `key: value`: quotes removed, trailing comment removed.
Result<std::string> ParseValue(std::string_view raw, int line) {
  raw = Trim(raw);
  if (raw.empty()) return std::string();
  if (raw.front() == '"' || raw.front() == '\'') {
    char quote = raw.front();
    std::string out;
    std::size_t i = 1;
    for (; i < raw.size(); ++i) {
      char c = raw[i];
      if (c == quote) break;
      if (quote == '"' && c == '\\' && i + 1 < raw.size()) {
        char n = raw[++i];
        switch (n) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          default:
            out += n;
        }
        continue;
      }
      out += c;
    }
    if (i >= raw.size()) return LineError(line, "unterminated quoted value");
    std::string_view rest = Trim(raw.substr(i + 1));
    if (!rest.empty() && rest.front() != '#')
      return LineError(line, "unexpected text after the quoted value");
    return out;
  }
  // Unquoted: a comment starts at " #".
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '#' && (i == 0 || raw[i - 1] == ' ' || raw[i - 1] == '\t')) {
      raw = Trim(raw.substr(0, i));
      break;
    }
  }
  if (!raw.empty() && (raw.front() == '[' || raw.front() == '{' || raw.front() == '&' ||
                       raw.front() == '*' || raw.front() == '|' || raw.front() == '>'))
    return LineError(line, "only plain scalar values are supported");
  return std::string(raw);
}

template <typename T>
Status ParseUnsigned(const std::string& value, T min, T max, int line, const std::string& key,
                     T* out) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size() || value.empty())
    return LineError(line, key + ": \"" + value + "\" is not a number");
  if (v < min || v > max)
    return LineError(line, key + ": " + value + " is out of range " + std::to_string(min) + ".." +
                               std::to_string(max));
  *out = static_cast<T>(v);
  return OkStatus();
}

Status Assign(AgentConfig& c, const std::string& key, const std::string& value, int line) {
  if (key == "log_level") {
    log::Level level;
    if (!log::ParseLevel(value, &level))
      return LineError(line, "log_level: \"" + value + "\" is not one of debug, info, warn, error");
    c.log_level = value;
  } else if (key == "workload_user") {
    c.workload_user = value;
  } else if (key == "outbox_max_events") {
    return ParseUnsigned<std::uint64_t>(value, 10, 10'000'000, line, key, &c.outbox_max_events);
  } else if (key == "cgroup_root") {
    c.cgroup_root = value;
  } else if (key == "dev_root") {
    c.dev_root = value;
  } else if (key == "proc_root") {
    c.proc_root = value;
  } else if (key == "etc_root") {
    c.etc_root = value;
  } else if (key == "nvidia_smi") {
    c.nvidia_smi = value;
  } else if (key == "disk_low_percent") {
    return ParseUnsigned<std::uint32_t>(value, 1, 50, line, key, &c.disk_low_percent);
  } else if (key == "disk_low_mib") {
    return ParseUnsigned<std::uint64_t>(value, 0, 1u << 20, line, key, &c.disk_low_mib);
  } else if (key == "reconnect_min_ms") {
    return ParseUnsigned<std::uint32_t>(value, 10, 600000, line, key, &c.reconnect_min_ms);
  } else if (key == "reconnect_max_ms") {
    return ParseUnsigned<std::uint32_t>(value, 100, 3600000, line, key, &c.reconnect_max_ms);
  } else if (key == "keepalive_seconds") {
    return ParseUnsigned<std::uint32_t>(value, 5, 3600, line, key, &c.keepalive_seconds);
  } else if (key == "workload_log_max_bytes") {
    return ParseUnsigned<std::uint64_t>(value, 4096, 1ull << 32, line, key,
                                        &c.workload_log_max_bytes);
  } else if (key == "renew_fraction_denominator") {
    return ParseUnsigned<std::uint32_t>(value, 1, 100, line, key, &c.renew_fraction_denominator);
  } else {
    c.unknown_keys.push_back(key);
  }
  return OkStatus();
}

bool ValidKey(std::string_view key) {
  if (key.empty()) return false;
  for (char ch : key) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) return false;
  }
  return true;
}

}  // namespace

Result<AgentConfig> Parse(std::string_view text) {
  AgentConfig c;
  int line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line_no == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
    std::string_view t = Trim(line);
    if (t.empty() || t.front() == '#') {
      if (end == text.size()) break;
      continue;
    }
    if (t == "---" || t == "...") continue;
    if (line.front() == ' ' || line.front() == '\t')
      return LineError(line_no, "nested keys are not supported (the file is flat key: value)");
    if (t.front() == '-') return LineError(line_no, "lists are not supported");
    auto colon = t.find(':');
    if (colon == std::string_view::npos) return LineError(line_no, "expected \"key: value\"");
    std::string key(Trim(t.substr(0, colon)));
    if (!ValidKey(key)) return LineError(line_no, "\"" + key + "\" is not a valid key");
    std::string_view rest = t.substr(colon + 1);
    if (!rest.empty() && rest.front() != ' ' && rest.front() != '\t')
      return LineError(line_no, "expected a space after \"" + key + ":\"");
    OUTPOST_ASSIGN_OR_RETURN(std::string value, ParseValue(rest, line_no));
    OUTPOST_TRY(Assign(c, key, value, line_no));
    if (end == text.size()) break;
  }
  if (c.reconnect_min_ms > c.reconnect_max_ms)
    return Error(Errc::kInvalidArgument, "reconnect_min_ms is larger than reconnect_max_ms");
  return c;
}

Result<AgentConfig> Load(const std::string& path, bool required) {
  if (!required && !fs::Exists(path)) return AgentConfig{};
  auto text = fs::ReadFile(path, kMaxConfigBytes);
  if (!text.ok()) return text.error().WithContext("config " + path);
  auto parsed = Parse(*text);
  if (!parsed.ok()) return parsed.error().WithContext("config " + path);
  return parsed;
}

StatePaths::StatePaths(std::string d)
    : dir(std::move(d)),
      db(fs::Join(dir, "agent.db")),
      key(fs::Join(dir, "device.key")),
      cert(fs::Join(dir, "device.crt")),
      ca(fs::Join(dir, "ca.crt")),
      socket(fs::Join(dir, "agent.sock")),
      logs(fs::Join(dir, "logs")),
      run(fs::Join(dir, "run")) {}

}  // namespace outpost::agent::config
