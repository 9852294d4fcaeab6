// Helpers shared by the fuzz targets (tests/e2e/fuzz/fuzz_*.cpp). Each target
// defines LLVMFuzzerTestOneInput and is built twice: with clang and libFuzzer
// (`make fuzz`, OUTPOST_FUZZ=ON) and, for `make check`, with any compiler
// into a GoogleTest smoke driver (smoke_driver.cpp) that replays the
// checked-in corpus plus bounded random and mutated inputs.
//
// No gtest here: the libFuzzer binaries do not link it. A broken invariant
// aborts (libFuzzer records the input as a crash; the smoke test fails).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace outpost::fuzz {

// Reads typed values from the fuzzer's bytes; past the end everything is 0
// or empty, so a target never reads out of bounds.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  std::size_t left() const { return size_ - pos_; }

  std::uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool Bool() { return (Byte() & 1) != 0; }
  std::uint32_t U32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v = (v << 8) | Byte();
    return v;
  }
  std::uint64_t U64() { return (static_cast<std::uint64_t>(U32()) << 32) | U32(); }
  // A small number in [0, n).
  std::size_t Pick(std::size_t n) { return n == 0 ? 0 : Byte() % n; }
  // A chunk of at most `max` bytes: a 2-byte length, then the bytes.
  std::string Chunk(std::size_t max) {
    std::size_t want = (static_cast<std::size_t>(Byte()) << 8) | Byte();
    if (want > max) want = max;
    if (want > left()) want = left();
    std::string out(reinterpret_cast<const char*>(data_ + pos_), want);
    pos_ += want;
    return out;
  }
  // Everything that is left.
  std::string Rest() {
    std::string out(reinterpret_cast<const char*>(data_ + pos_), left());
    pos_ = size_;
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// Aborts with a message when an invariant does not hold.
[[noreturn]] inline void Broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz invariant broken: %s: %s\n", what, detail.c_str());
  std::abort();
}
#define OUTPOST_FUZZ_CHECK(cond, detail)                   \
  do {                                                     \
    if (!(cond)) ::outpost::fuzz::Broken(#cond, (detail)); \
  } while (0)

// Silences Outpost's log and protobuf's (which reports every string field
// with invalid UTF-8 it refuses): a fuzzer's output is its own findings.
void QuietLogs();

// A directory for a target's scratch files (databases): in /dev/shm when it
// exists (no fsync cost), else $TMPDIR or /tmp; removed at exit.
std::string ScratchDir(const std::string& name);

}  // namespace outpost::fuzz
