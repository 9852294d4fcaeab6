// Pure helpers of the runtime: GPU selection, environment, device paths, spec
// hashes; and copytruncate log rotation on real files.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "agent/runtime/log_rotation.hpp"
#include "agent/runtime/workload_env.hpp"
#include "shared/core/fs.hpp"
#include "tests/support/test_support.hpp"

namespace outpost::agent {
namespace {

namespace v1 = outpost::v1;

std::vector<v1::Gpu> Gpus(std::initializer_list<std::uint32_t> indices) {
  std::vector<v1::Gpu> out;
  for (auto i : indices) {
    v1::Gpu g;
    g.set_index(i);
    out.push_back(g);
  }
  return out;
}

v1::GpuRequest Req(std::uint32_t count, bool all = false) {
  v1::GpuRequest r;
  r.set_count(count);
  r.set_all(all);
  return r;
}

TEST(SelectGpus, NoneRequestedHidesGpus) {
  auto s = SelectGpus(Req(0), Gpus({0, 1}));
  EXPECT_EQ(s.nvidia_visible_devices, "void");
  EXPECT_EQ(s.cuda_visible_devices, "");
  EXPECT_TRUE(s.shortage.empty());
}

TEST(SelectGpus, CountTakesFirstByIndex) {
  auto s = SelectGpus(Req(2), Gpus({3, 1, 0}));
  EXPECT_EQ(s.nvidia_visible_devices, "0,1");
  EXPECT_EQ(s.cuda_visible_devices, "0,1");
}

TEST(SelectGpus, AllListsEveryIndex) {
  auto s = SelectGpus(Req(0, true), Gpus({1, 0}));
  EXPECT_EQ(s.nvidia_visible_devices, "all");
  EXPECT_EQ(s.cuda_visible_devices, "0,1");
  auto none = SelectGpus(Req(0, true), {});
  EXPECT_EQ(none.nvidia_visible_devices, "void");
  EXPECT_TRUE(none.shortage.empty());
}

TEST(SelectGpus, ShortageIsAWaitingReason) {
  auto s = SelectGpus(Req(2), Gpus({0}));
  EXPECT_EQ(s.shortage, "needs 2 GPUs, 1 found");
}

TEST(BuildEnvironment, SpecEnvGpuVarsAndUser) {
  v1::WorkloadSpec spec;
  spec.set_name("cam");
  (*spec.mutable_env())["LOG_LEVEL"] = "debug";
  (*spec.mutable_env())["PATH"] = "/opt/bin";
  UserIds user;
  user.name = "nobody";
  user.home = "/nonexistent";
  auto env = BuildEnvironment(spec, SelectGpus(Req(1), Gpus({0})), user, "/usr/bin");
  auto has = [&](const std::string& kv) {
    return std::find(env.begin(), env.end(), kv) != env.end();
  };
  EXPECT_TRUE(has("LOG_LEVEL=debug"));
  EXPECT_TRUE(has("PATH=/opt/bin"));
  EXPECT_TRUE(has("NVIDIA_VISIBLE_DEVICES=0"));
  EXPECT_TRUE(has("CUDA_VISIBLE_DEVICES=0"));
  EXPECT_TRUE(has("HOME=/nonexistent"));
  EXPECT_TRUE(has("USER=nobody"));
  EXPECT_TRUE(has("OUTPOST_WORKLOAD=cam"));
  EXPECT_TRUE(std::is_sorted(env.begin(), env.end()));
}

TEST(BuildEnvironment, SpecMayOverrideGpuVars) {
  v1::WorkloadSpec spec;
  spec.set_name("x");
  (*spec.mutable_env())["CUDA_VISIBLE_DEVICES"] = "3";
  auto env = BuildEnvironment(spec, SelectGpus(Req(0), {}), std::nullopt, "");
  EXPECT_NE(std::find(env.begin(), env.end(), "CUDA_VISIBLE_DEVICES=3"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "NVIDIA_VISIBLE_DEVICES=void"), env.end());
  EXPECT_NE(std::find_if(env.begin(), env.end(),
                         [](const std::string& s) { return s.rfind("PATH=/usr", 0) == 0; }),
            env.end());
}

TEST(DevicePathUnder, MapsOnlyDevPaths) {
  EXPECT_EQ(DevicePathUnder("/dev", "/dev/video0"), "/dev/video0");
  EXPECT_EQ(DevicePathUnder("/tmp/t/dev/", "/dev/video0"), "/tmp/t/dev/video0");
  EXPECT_EQ(DevicePathUnder("/tmp/t/dev", "/dev/dri/card0"), "/tmp/t/dev/dri/card0");
  EXPECT_EQ(DevicePathUnder("/tmp/t/dev", "/run/x"), "/run/x");
}

TEST(EffectiveSpecHash, UsesHubHashElseDeterministicLocalHash) {
  v1::WorkloadSpec a;
  a.set_name("a");
  a.set_spec_hash("abc");
  EXPECT_EQ(EffectiveSpecHash(a), "abc");
  a.clear_spec_hash();
  (*a.mutable_env())["K1"] = "v";
  (*a.mutable_env())["K2"] = "w";
  v1::WorkloadSpec b = a;
  EXPECT_EQ(EffectiveSpecHash(a), EffectiveSpecHash(b));
  (*b.mutable_env())["K2"] = "changed";
  EXPECT_NE(EffectiveSpecHash(a), EffectiveSpecHash(b));
}

TEST(RotateLog, RotatesOverLimitAndKeepsN) {
  testing::TempDir dir;
  std::string log = dir / "w.log";
  EXPECT_FALSE(*RotateLogIfNeeded(log, 100, 2));  // missing: nothing to do
  auto write = [&](char c, int n) {
    std::ofstream(log, std::ios::app) << std::string(static_cast<std::size_t>(n), c);
  };
  write('a', 50);
  EXPECT_FALSE(*RotateLogIfNeeded(log, 100, 2));
  write('a', 100);
  EXPECT_TRUE(*RotateLogIfNeeded(log, 100, 2));
  EXPECT_EQ(testing::ReadFileOr(log), "");
  EXPECT_EQ(testing::ReadFileOr(log + ".1"), std::string(150, 'a'));
  write('b', 120);
  EXPECT_TRUE(*RotateLogIfNeeded(log, 100, 2));
  write('c', 120);
  EXPECT_TRUE(*RotateLogIfNeeded(log, 100, 2));
  EXPECT_EQ(testing::ReadFileOr(log + ".1"), std::string(120, 'c'));
  EXPECT_EQ(testing::ReadFileOr(log + ".2"), std::string(120, 'b'));
  EXPECT_FALSE(fs::Exists(log + ".3"));
}

TEST(RotateLog, AppendingWriterContinuesAtStartAfterTruncate) {
  testing::TempDir dir;
  std::string log = dir / "w.log";
  std::ofstream out(log, std::ios::app);
  out << std::string(200, 'x') << std::flush;
  ASSERT_TRUE(*RotateLogIfNeeded(log, 100, 1));
  out << "after" << std::flush;
  EXPECT_EQ(testing::ReadFileOr(log), "after");
}

}  // namespace
}  // namespace outpost::agent
