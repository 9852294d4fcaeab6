#include "shared/core/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace outpost::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};
std::mutex g_mu;
Sink g_sink;  // guarded by g_mu

enum class Style { kPlain, kColour, kJournal };

Style DetectStyle() {
  // systemd sets JOURNAL_STREAM=<dev>:<ino> when stderr is the journal.
  if (const char* js = std::getenv("JOURNAL_STREAM")) {
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) == 0) {
      unsigned long long dev = 0, ino = 0;
      if (std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == st.st_dev && ino == st.st_ino)
        return Style::kJournal;
    }
  }
  if (isatty(STDERR_FILENO) && std::getenv("NO_COLOR") == nullptr) return Style::kColour;
  return Style::kPlain;
}

const char* Name(Level level) {
  switch (level) {
    case Level::kDebug:
      return "DEBUG";
    case Level::kInfo:
      return "INFO ";
    case Level::kWarn:
      return "WARN ";
    case Level::kError:
      return "ERROR";
  }
  return "?";
}

int SyslogPriority(Level level) {
  switch (level) {
    case Level::kDebug:
      return 7;
    case Level::kInfo:
      return 6;
    case Level::kWarn:
      return 4;
    case Level::kError:
      return 3;
  }
  return 6;
}

const char* Colour(Level level) {
  switch (level) {
    case Level::kDebug:
      return "\033[2m";
    case Level::kInfo:
      return "";
    case Level::kWarn:
      return "\033[33m";
    case Level::kError:
      return "\033[31m";
  }
  return "";
}

}  // namespace

void SetLevel(Level level) {
  g_level.store(level);
}
Level GetLevel() {
  return g_level.load();
}

bool ParseLevel(std::string_view text, Level* out) {
  if (text == "debug")
    *out = Level::kDebug;
  else if (text == "info")
    *out = Level::kInfo;
  else if (text == "warn" || text == "warning")
    *out = Level::kWarn;
  else if (text == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

void SetSinkForTest(Sink sink) {
  std::lock_guard lock(g_mu);
  g_sink = std::move(sink);
}

void Write(Level level, std::string_view message) {
  static const Style style = DetectStyle();
  std::lock_guard lock(g_mu);
  if (g_sink) {
    g_sink(level, message);
    return;
  }
  if (style == Style::kJournal) {
    std::fprintf(stderr, "<%d>%.*s\n", SyslogPriority(level), static_cast<int>(message.size()),
                 message.data());
    return;
  }
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  if (style == Style::kColour) {
    std::fprintf(stderr, "%s%s.%03lldZ %s %.*s\033[0m\n", Colour(level), stamp,
                 static_cast<long long>(millis), Name(level), static_cast<int>(message.size()),
                 message.data());
  } else {
    std::fprintf(stderr, "%s.%03lldZ %s %.*s\n", stamp, static_cast<long long>(millis), Name(level),
                 static_cast<int>(message.size()), message.data());
  }
}

}  // namespace outpost::log
