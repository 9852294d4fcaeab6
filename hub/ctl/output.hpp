// outpostctl's output: tables (the default), JSON and YAML, plus the small
// parsers and formatters its commands share. Pure functions, unit-tested.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "shared/core/result.hpp"

namespace outpost::hub::ctl {

enum class Format { kTable, kJson, kYaml };
// "table", "json", "yaml"; false otherwise.
bool ParseFormat(std::string_view text, Format* format);

// Pretty JSON (two-space indent) with a final newline.
std::string ToJsonText(const nlohmann::json& value);
// Block-style YAML with a final newline; strings that YAML would read as
// something else ("true", "1.5", "") are quoted.
std::string ToYamlText(const nlohmann::json& value);

// Columns separated by three spaces, headers in capitals, like kubectl.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  std::string Render() const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// Go-style durations: "90s", "5m", "24h", "7d", "1h30m"; a bare number is
// seconds. Must be positive.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

// Parses "2025-01-02T03:04:05Z"; nullopt when it is not that form.
std::optional<std::int64_t> ParseTime(std::string_view rfc3339);
// How long ago `rfc3339` was, shortly: "4s", "12m", "3h", "5d"; "<never>"
// for null/empty; "-" when unparseable. Until: "in 23h", "expired".
std::string Age(const nlohmann::json& rfc3339, std::int64_t now_ms);
std::string Until(const nlohmann::json& rfc3339, std::int64_t now_ms);

// "k=v,k2=v2" from a JSON object of strings; "<none>" when empty.
std::string LabelsText(const nlohmann::json& labels);

// "k=v" -> (k, v); false when there is no '=' or the key is empty.
bool SplitLabel(std::string_view text, std::string* key, std::string* value);

}  // namespace outpost::hub::ctl
