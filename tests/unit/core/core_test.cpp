#include <sys/stat.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shared/core/backoff.hpp"
#include "shared/core/fs.hpp"
#include "shared/core/log.hpp"
#include "shared/core/result.hpp"
#include "tests/support/test_support.hpp"

namespace outpost {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Error(Errc::kInvalidArgument, std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  OUTPOST_ASSIGN_OR_RETURN(int h, Half(x));
  OUTPOST_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  OUTPOST_TRY(Half(x));
  return OkStatus();
}

TEST(Result, CarriesValueOrError) {
  auto ok = Quarter(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 2);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "3 is odd");
  EXPECT_EQ(bad.value_or(-1), -1);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(5).ok());
}

TEST(Result, ConvertsConstructibleValues) {
  Result<std::string> s = "literal";
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "literal");
  Result<std::vector<int>> moved = std::vector<int>{1, 2, 3};
  EXPECT_EQ(moved->size(), 3u);
}

TEST(Error, WithContextPrefixesAndKeepsCode) {
  Error e = Error(Errc::kNotFound, "no such file").WithContext("loading config");
  EXPECT_EQ(e.code(), Errc::kNotFound);
  EXPECT_EQ(e.message(), "loading config: no such file");
  EXPECT_EQ(e.ToString(), "not found: loading config: no such file");
  EXPECT_EQ(ErrnoError("open x", ENOENT).code(), Errc::kNotFound);
  EXPECT_EQ(ErrnoError("write x", ENOSPC).code(), Errc::kResourceExhausted);
}

TEST(Log, FiltersByLevelAndFormatsArguments) {
  std::vector<std::string> lines;
  log::SetSinkForTest([&](log::Level, std::string_view line) { lines.emplace_back(line); });
  log::SetLevel(log::Level::kInfo);
  log::Debug("hidden ", 1);
  log::Info("port ", 8883, " ready");
  log::Error("failed: ", std::string("x"));
  log::SetSinkForTest(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "port 8883 ready");
  EXPECT_EQ(lines[1], "failed: x");
  log::Level level;
  EXPECT_TRUE(log::ParseLevel("warning", &level));
  EXPECT_EQ(level, log::Level::kWarn);
  EXPECT_FALSE(log::ParseLevel("loud", &level));
}

TEST(Fs, AtomicWriteSetsModeAndReplaces) {
  testing::TempDir dir;
  std::string path = dir / "secret.key";
  ASSERT_TRUE(fs::WriteFileAtomic(path, "one", 0600).ok());
  ASSERT_TRUE(fs::WriteFileAtomic(path, "two", 0600).ok());
  auto content = fs::ReadFile(path);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "two");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Fs, ReadFileIsBounded) {
  testing::TempDir dir;
  std::string path = dir / "big";
  ASSERT_TRUE(fs::WriteFileAtomic(path, std::string(1000, 'x')).ok());
  auto r = fs::ReadFile(path, 999);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kResourceExhausted);
  EXPECT_EQ(fs::ReadFile(dir / "missing").error().code(), Errc::kNotFound);
}

TEST(Fs, MakeDirsAndPaths) {
  testing::TempDir dir;
  std::string deep = dir / "a/b/c";
  ASSERT_TRUE(fs::MakeDirs(deep, 0700).ok());
  EXPECT_TRUE(fs::Exists(deep));
  EXPECT_TRUE(fs::MakeDirs(deep).ok());  // idempotent
  EXPECT_EQ(fs::DirName("/x/y/z"), "/x/y");
  EXPECT_EQ(fs::DirName("z"), ".");
  EXPECT_EQ(fs::Join("/a/", "/b"), "/a/b");
}

}  // namespace
}  // namespace outpost

namespace outpost {
namespace {

TEST(Backoff, DoublesUpToTheCapAndResets) {
  Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(1000), 0.0);
  EXPECT_EQ(b.Next(0.5).count(), 100);
  EXPECT_EQ(b.Next(0.5).count(), 200);
  EXPECT_EQ(b.Next(0.5).count(), 400);
  EXPECT_EQ(b.Next(0.5).count(), 800);
  EXPECT_EQ(b.Next(0.5).count(), 1000);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(b.Next(0.9).count(), 1000);  // no overflow
  b.Reset();
  EXPECT_EQ(b.Next(0.5).count(), 100);
}

TEST(Backoff, JitterStaysInItsBand) {
  Backoff b(std::chrono::milliseconds(1000), std::chrono::milliseconds(1000), 0.5);
  EXPECT_EQ(b.Next(0.0).count(), 1000);
  EXPECT_EQ(b.Next(1.0).count(), 500);
  EXPECT_EQ(b.Next(0.5).count(), 750);
  EXPECT_EQ(b.Peek().count(), 1000);
}

}  // namespace
}  // namespace outpost
