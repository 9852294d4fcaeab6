#include "agent/runtime/log_rotation.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace outpost::agent {

namespace {

// Copies `in` (from offset 0) into a new file `to`, at most `limit` bytes.
Status CopyFile(int in, const std::string& to, std::uint64_t limit) {
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (out < 0) return ErrnoError("open " + to, errno);
  loff_t off_in = 0;
  std::uint64_t left = limit;
  Status result;
  bool fallback = false;
  while (left > 0) {
    // At most 1 GiB per call: size_t is 32 bits on armhf.
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, 1ULL << 30));
    ssize_t n = ::copy_file_range(in, &off_in, out, nullptr, chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
      fallback = true;
      break;
    }
    if (n < 0) {
      result = ErrnoError("copy to " + to, errno);
      break;
    }
    if (n == 0) break;
    left -= static_cast<std::uint64_t>(n);
  }
  if (fallback) {
    char buf[64 * 1024];
    while (left > 0) {
      ssize_t n =
          ::pread(in, buf, static_cast<std::size_t>(std::min<std::uint64_t>(sizeof buf, left)),
                  static_cast<off_t>(off_in));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        result = ErrnoError("read for rotation", errno);
        break;
      }
      if (n == 0) break;
      ssize_t w = ::write(out, buf, static_cast<std::size_t>(n));
      if (w != n) {
        result = ErrnoError("write " + to, errno);
        break;
      }
      off_in += n;
      left -= static_cast<std::uint64_t>(n);
    }
  }
  ::close(out);
  return result;
}

}  // namespace

Result<bool> RotateLogIfNeeded(const std::string& path, std::uint64_t max_bytes, int keep) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoError("stat " + path, errno);
  }
  if (static_cast<std::uint64_t>(st.st_size) <= max_bytes) return false;
  int in = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (in < 0) return ErrnoError("open " + path, errno);
  Status copied;
  if (keep > 0) {
    // Shift: .keep-1 -> .keep, ..., .1 -> .2 (the oldest is overwritten).
    for (int i = keep - 1; i >= 1; --i) {
      std::string from = path + "." + std::to_string(i);
      std::string to = path + "." + std::to_string(i + 1);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        copied = ErrnoError("rename " + from, errno);
        break;
      }
    }
    if (copied.ok()) {
      // Bounded: a log racing ahead is cut at 2x the limit in the copy.
      copied = CopyFile(in, path + ".1", max_bytes * 2 + (64u << 10));
    }
  }
  int rc = ::ftruncate(in, 0);
  int err = errno;
  ::close(in);
  if (!copied.ok()) return copied.error();
  if (rc != 0) return ErrnoError("truncate " + path, err);
  return true;
}

}  // namespace outpost::agent
