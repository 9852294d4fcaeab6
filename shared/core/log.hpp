// The logging facade: one line per record on stderr.
//
// Under systemd (stderr is the journal stream) each line starts with the
// sd-daemon priority prefix ("<6>") so journald keeps the level; otherwise a
// UTC timestamp and the level name, coloured only when stderr is a TTY.
#pragma once

#include <functional>
#include <sstream>
#include <string>
#include <string_view>

namespace outpost::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLevel(Level level);
Level GetLevel();
// Parses "debug", "info", "warn"/"warning", "error"; false on anything else.
bool ParseLevel(std::string_view text, Level* out);

// Tests can capture records; an empty sink restores stderr.
using Sink = std::function<void(Level, std::string_view line)>;
void SetSinkForTest(Sink sink);

void Write(Level level, std::string_view message);

template <typename... Args>
void Log(Level level, Args&&... args) {
  if (level < GetLevel()) return;
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  Write(level, out.str());
}

template <typename... Args>
void Debug(Args&&... args) {
  Log(Level::kDebug, std::forward<Args>(args)...);
}
template <typename... Args>
void Info(Args&&... args) {
  Log(Level::kInfo, std::forward<Args>(args)...);
}
template <typename... Args>
void Warn(Args&&... args) {
  Log(Level::kWarn, std::forward<Args>(args)...);
}
template <typename... Args>
void Error(Args&&... args) {
  Log(Level::kError, std::forward<Args>(args)...);
}

}  // namespace outpost::log
