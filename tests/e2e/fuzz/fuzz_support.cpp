#include "tests/e2e/fuzz/fuzz_support.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/stubs/logging.h>

#include <mutex>
#include <vector>

#include "shared/core/log.hpp"

namespace outpost::fuzz {
namespace {

// Never destroyed: the atexit handler below runs after static destructors.
std::vector<std::string>& Dirs() {
  static auto* dirs = new std::vector<std::string>;
  return *dirs;
}

void RemoveTree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") RemoveTree(path + "/" + n);
      }
      ::closedir(d);
    }
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

void RemoveAll() {
  for (const auto& d : Dirs())
    RemoveTree(d);
}

}  // namespace

void QuietLogs() {
  log::SetLevel(log::Level::kError);
  log::SetSinkForTest([](log::Level, std::string_view) {});
  google::protobuf::SetLogHandler(nullptr);
}

std::string ScratchDir(const std::string& name) {
  struct stat st {};
  std::string base;
  if (::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && ::access("/dev/shm", W_OK) == 0) {
    base = "/dev/shm";
  } else {
    const char* t = std::getenv("TMPDIR");
    base = t && *t ? t : "/tmp";
  }
  std::string tmpl = base + "/outpost-fuzz-" + name + ".XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) Broken("mkdtemp", tmpl);
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(RemoveAll); });
  Dirs().push_back(buf.data());
  return buf.data();
}

}  // namespace outpost::fuzz
