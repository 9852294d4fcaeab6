// The check-time smoke run of one fuzz target, built with any compiler (gcc
// with ASan and UBSan in `make check`): every input of the checked-in
// corpus, then random and mutated inputs for a bounded time. The real
// fuzzing is `make fuzz` (clang, libFuzzer).
//
//   OUTPOST_FUZZ_SMOKE_SECONDS  time for generated inputs (default 3)
//   OUTPOST_FUZZ_SEED           the generator's seed (default: random, printed)
//
// A failing input (invariant abort, sanitizer report, crash) is written to
// $TMPDIR/outpost-fuzz-smoke-<target>.crash before the process dies; replay
// it with the libFuzzer binary: build-fuzz/bin/fuzz_<target> <file>.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// The input being run, for the crash handler and the watchdog.
std::atomic<const std::string*> g_current{nullptr};
std::atomic<std::uint64_t> g_runs{0};
char g_crash_path[512];

// libFuzzer's -timeout and -rss_limit_mb, for the smoke run: one input may
// take at most kInputTimeout, the process at most kRssLimitMb resident.
constexpr auto kInputTimeout = std::chrono::seconds(10);
constexpr long kRssLimitMb = 2048;

void SaveCurrent() {
  const std::string* current = g_current.load();
  if (current == nullptr) return;
  int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  (void)!::write(fd, current->data(), current->size());
  ::close(fd);
  static const char kMsg[] = "fuzz smoke: the failing input was saved to ";
  (void)!::write(2, kMsg, sizeof kMsg - 1);
  (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
  (void)!::write(2, "\n", 1);
}

long RssMb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0;
  long rss = 0;
  in >> pages >> rss;
  return rss * (::sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

// Aborts (saving the input) when one input runs too long or the process
// grows too large.
void Watchdog(std::atomic<bool>* stop) {
  std::uint64_t last = g_runs.load();
  auto since = std::chrono::steady_clock::now();
  while (!stop->load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::uint64_t now_runs = g_runs.load();
    if (now_runs != last) {
      last = now_runs;
      since = std::chrono::steady_clock::now();
    }
    const long rss = RssMb();
    const bool slow = std::chrono::steady_clock::now() - since > kInputTimeout;
    if (slow || rss > kRssLimitMb) {
      std::fprintf(stderr, "fuzz smoke: %s (rss %ld MiB)\n",
                   slow ? "one input ran longer than 10 s" : "over the memory limit", rss);
      SaveCurrent();
      std::_Exit(3);
    }
  }
}

void OnFatalSignal(int sig) {
  SaveCurrent();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::vector<std::string> LoadCorpus(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> out;
  for (const auto& n : names) {
    std::ifstream in(dir + "/" + n, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  return out;
}

// libFuzzer-style mutations: flip, set, insert, erase, duplicate, truncate,
// splice with another input, overwrite with an "interesting" integer.
std::string Mutate(std::string s, const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  const int n = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) {
    const std::size_t len = s.size();
    switch (rng() % 8) {
      case 0:
        if (len) s[rng() % len] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (len) s[rng() % len] = static_cast<char>(rng());
        break;
      case 2: {
        std::string ins(1 + rng() % 16, '\0');
        for (auto& c : ins)
          c = static_cast<char>(rng());
        s.insert(len ? rng() % (len + 1) : 0, ins);
        break;
      }
      case 3:
        if (len) {
          std::size_t at = rng() % len;
          s.erase(at, 1 + rng() % std::min<std::size_t>(len - at, 32));
        }
        break;
      case 4:
        if (len) {
          std::size_t at = rng() % len;
          std::size_t cnt = 1 + rng() % std::min<std::size_t>(len - at, 64);
          s.insert(rng() % (len + 1), s.substr(at, cnt));
        }
        break;
      case 5:
        if (len) s.resize(rng() % len);
        break;
      case 6:
        if (!corpus.empty()) {
          const std::string& other = corpus[rng() % corpus.size()];
          s = s.substr(0, len ? rng() % (len + 1) : 0) +
              other.substr(other.empty() ? 0 : rng() % other.size());
        }
        break;
      default: {
        static const std::uint64_t kInteresting[] = {0,     1,      0x7f,       0x80,       0xff,
                                                     0x100, 0xffff, 0x7fffffff, 0xffffffff, ~0ull};
        if (len >= 8) {
          std::uint64_t v = kInteresting[rng() % 10];
          std::size_t at = rng() % (len - 7);
          for (int b = 0; b < 8; ++b)
            s[at + b] = static_cast<char>(v >> (8 * b));
        }
        break;
      }
    }
  }
  if (s.size() > (1u << 20)) s.resize(1u << 20);
  return s;
}

void RunInput(const std::string& input) {
  g_current.store(&input);
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
  g_runs.fetch_add(1);
}

TEST(FuzzSmoke, OUTPOST_FUZZ_TARGET) {
  const char* tmp = std::getenv("TMPDIR");
  std::snprintf(g_crash_path, sizeof g_crash_path, "%s/outpost-fuzz-smoke-%s.crash",
                tmp && *tmp ? tmp : "/tmp", OUTPOST_FUZZ_TARGET_NAME);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
    ::signal(sig, OnFatalSignal);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_set_death_callback(SaveCurrent);
#endif

  std::atomic<bool> stop_watchdog{false};
  std::thread watchdog(Watchdog, &stop_watchdog);
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* t;
    ~Joiner() {
      stop->store(true);
      t->join();
    }
  } joiner{&stop_watchdog, &watchdog};

  const std::vector<std::string> corpus = LoadCorpus(OUTPOST_FUZZ_CORPUS);
  ASSERT_FALSE(corpus.empty()) << "no seed corpus in " << OUTPOST_FUZZ_CORPUS;
  for (const auto& input : corpus)
    RunInput(input);

  const char* secs = std::getenv("OUTPOST_FUZZ_SMOKE_SECONDS");
  const auto budget =
      std::chrono::milliseconds(static_cast<std::int64_t>((secs ? std::atof(secs) : 3.0) * 1000));
  const char* seed_env = std::getenv("OUTPOST_FUZZ_SEED");
  const std::uint64_t seed =
      seed_env ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  std::mt19937_64 rng(seed);
  std::vector<std::string> pool = corpus;
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t runs = 0;
  while (std::chrono::steady_clock::now() - start < budget) {
    std::string input;
    if (rng() % 10 == 0) {
      input.resize(rng() % 512);
      for (auto& c : input)
        c = static_cast<char>(rng());
    } else {
      input = Mutate(pool[rng() % pool.size()], corpus, rng);
    }
    RunInput(input);
    ++runs;
    // Keep some mutants as parents: cheap depth without coverage feedback.
    if (rng() % 16 == 0) {
      if (pool.size() < 256) {
        pool.push_back(input);
      } else {
        pool[corpus.size() + rng() % (pool.size() - corpus.size())] = input;
      }
    }
  }
  std::cout << "[ fuzz smoke ] " << OUTPOST_FUZZ_TARGET_NAME << ": " << corpus.size()
            << " corpus inputs + " << runs << " generated inputs ran clean (seed " << seed << ")\n";
  EXPECT_GT(runs, 0u);
}

}  // namespace
