#include "hub/ctl/output.hpp"

#include <time.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>

namespace outpost::hub::ctl {

using nlohmann::json;

bool ParseFormat(std::string_view text, Format* format) {
  if (text == "table") {
    *format = Format::kTable;
  } else if (text == "json") {
    *format = Format::kJson;
  } else if (text == "yaml") {
    *format = Format::kYaml;
  } else {
    return false;
  }
  return true;
}

std::string ToJsonText(const json& value) {
  return value.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// Would a plain YAML scalar with this text be read back as a string equal to it?
bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  static const char* kWords[] = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"};
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* w : kWords) {
    if (lower == w) return true;
  }
  // Numbers (and things that look like them: 1e3, 0x1f, .5, 1_000).
  char first = s.front();
  if (std::isdigit(static_cast<unsigned char>(first)) || first == '-' || first == '+' ||
      first == '.') {
    return true;
  }
  // Indicators and characters with meaning in flow or block context.
  if (std::string_view("!&*-?:,[]{}#|>@`\"'%").find(first) != std::string_view::npos) return true;
  if (s.find(": ") != std::string::npos || s.find(" #") != std::string::npos) return true;
  if (s.back() == ' ' || s.back() == ':' || first == ' ') return true;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

void Emit(YAML::Emitter& out, const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      if (v.empty()) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        break;
      }
      out << YAML::BeginMap;
      for (auto it = v.begin(); it != v.end(); ++it) {
        out << YAML::Key;
        if (NeedsQuotes(it.key())) out << YAML::DoubleQuoted;
        out << it.key() << YAML::Value;
        Emit(out, it.value());
      }
      out << YAML::EndMap;
      break;
    case json::value_t::array:
      if (v.empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        break;
      }
      out << YAML::BeginSeq;
      for (const auto& item : v)
        Emit(out, item);
      out << YAML::EndSeq;
      break;
    case json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      if (NeedsQuotes(s)) out << YAML::DoubleQuoted;
      out << s;
      break;
    }
    case json::value_t::boolean:
      out << (v.get<bool>() ? "true" : "false");
      break;
    case json::value_t::null:
      out << YAML::Null;
      break;
    default:
      out << v.dump();
  }
}

}  // namespace

std::string ToYamlText(const json& value) {
  YAML::Emitter out;
  out.SetIndent(2);
  out << YAML::Block;
  if ((value.is_object() || value.is_array()) && value.empty()) {
    return value.is_object() ? "{}\n" : "[]\n";
  }
  Emit(out, value);
  std::string text = out.c_str();
  if (text.empty() || text.back() != '\n') text += '\n';
  return text;
}

std::string Table::Render() const {
  std::vector<std::size_t> widths(headers_.size(), 0);
  for (std::size_t i = 0; i < headers_.size(); ++i)
    widths[i] = headers_[i].size();
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t i = 0; i < widths.size(); ++i) {
      std::string cell = i < cells.size() ? cells[i] : "";
      text += cell;
      if (i + 1 < widths.size()) text += std::string(widths[i] - cell.size() + 3, ' ');
    }
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    out << text << "\n";
  };
  line(headers_);
  for (const auto& row : rows_)
    line(row);
  return out.str();
}

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto bad = [&] {
    return Error(Errc::kInvalidArgument,
                 "\"" + std::string(text) + "\" is not a duration (like 90s, 5m, 24h, 7d)");
  };
  if (text.empty()) return bad();
  std::int64_t total_ms = 0;
  std::size_t i = 0;
  bool bare = true;
  while (i < text.size()) {
    std::int64_t n = 0;
    auto [ptr, ec] = std::from_chars(text.data() + i, text.data() + text.size(), n);
    if (ec != std::errc() || n < 0) return bad();
    i = static_cast<std::size_t>(ptr - text.data());
    std::int64_t unit_ms = 1000;
    if (i < text.size()) {
      bare = false;
      std::string_view unit =
          text.substr(i, text.size() > i + 1 && text[i] == 'm' && text[i + 1] == 's' ? 2 : 1);
      if (unit == "ms") {
        unit_ms = 1;
      } else if (unit == "s") {
        unit_ms = 1000;
      } else if (unit == "m") {
        unit_ms = 60 * 1000;
      } else if (unit == "h") {
        unit_ms = 3600 * 1000;
      } else if (unit == "d") {
        unit_ms = 24LL * 3600 * 1000;
      } else {
        return bad();
      }
      i += unit.size();
    } else if (!bare) {
      return bad();  // "5m3": a number without a unit after a unit
    }
    if (n > (INT64_MAX / 2) / unit_ms) return bad();
    total_ms += n * unit_ms;
    if (total_ms > INT64_MAX / 2) return bad();
  }
  if (total_ms <= 0) return bad();
  return std::chrono::milliseconds(total_ms);
}

std::optional<std::int64_t> ParseTime(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SSZ
  if (s.size() != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != 'Z') {
    return std::nullopt;
  }
  auto num = [&](std::size_t pos, std::size_t len, int* out) {
    auto [ptr, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, *out);
    return ec == std::errc() && ptr == s.data() + pos + len;
  };
  struct tm tm {};
  int year, mon, day, hour, min, sec;
  if (!num(0, 4, &year) || !num(5, 2, &mon) || !num(8, 2, &day) || !num(11, 2, &hour) ||
      !num(14, 2, &min) || !num(17, 2, &sec)) {
    return std::nullopt;
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

namespace {
std::string Short(std::int64_t ms) {
  std::int64_t s = ms / 1000;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 2 * 3600) return std::to_string(s / 60) + "m";
  if (s < 2 * 86400) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}
}  // namespace

std::string Age(const json& rfc3339, std::int64_t now_ms) {
  if (!rfc3339.is_string() || rfc3339.get_ref<const std::string&>().empty()) return "<never>";
  auto t = ParseTime(rfc3339.get_ref<const std::string&>());
  if (!t) return "-";
  return Short(std::max<std::int64_t>(0, now_ms - *t)) + " ago";
}

std::string Until(const json& rfc3339, std::int64_t now_ms) {
  if (!rfc3339.is_string()) return "-";
  auto t = ParseTime(rfc3339.get_ref<const std::string&>());
  if (!t) return "-";
  if (*t <= now_ms) return "expired";
  return "in " + Short(*t - now_ms);
}

std::string LabelsText(const json& labels) {
  if (!labels.is_object() || labels.empty()) return "<none>";
  std::string out;
  for (auto it = labels.begin(); it != labels.end(); ++it) {
    if (!out.empty()) out += ",";
    out += it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : "");
  }
  return out;
}

bool SplitLabel(std::string_view text, std::string* key, std::string* value) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) return false;
  *key = std::string(text.substr(0, eq));
  *value = std::string(text.substr(eq + 1));
  return true;
}

}  // namespace outpost::hub::ctl
