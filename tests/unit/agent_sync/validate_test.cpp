#include "agent/sync/validate.hpp"

#include <gtest/gtest.h>

namespace outpost::agent::sync {
namespace {

outpost::v1::WorkloadSpec Good() {
  outpost::v1::WorkloadSpec s;
  s.set_name("detector");
  s.add_command("/opt/detector/bin/detector");
  s.add_command("--model");
  (*s.mutable_env())["LOG_LEVEL"] = "info";
  s.add_devices("/dev/video0");
  s.mutable_gpus()->set_count(1);
  s.mutable_resources()->set_memory_mib(512);
  s.mutable_resources()->set_milli_cpus(1500);
  return s;
}

TEST(Validate, AcceptsAGoodSpec) {
  EXPECT_TRUE(ValidateWorkload(Good()).ok());
}

TEST(Validate, WorkloadNames) {
  EXPECT_TRUE(ValidWorkloadName("a"));
  EXPECT_TRUE(ValidWorkloadName("cam-1"));
  EXPECT_FALSE(ValidWorkloadName(""));
  EXPECT_FALSE(ValidWorkloadName("-a"));
  EXPECT_FALSE(ValidWorkloadName("a-"));
  EXPECT_FALSE(ValidWorkloadName("A"));
  EXPECT_FALSE(ValidWorkloadName("a_b"));
  EXPECT_FALSE(ValidWorkloadName("../x"));
  EXPECT_FALSE(ValidWorkloadName(std::string(64, 'a')));
  // The hub's "<application>.<workload>".
  EXPECT_TRUE(ValidWorkloadName("store-vision.camera-ingest"));
  EXPECT_TRUE(ValidWorkloadName(std::string(63, 'a') + "." + std::string(63, 'b')));
  EXPECT_FALSE(ValidWorkloadName(std::string(63, 'a') + "." + std::string(64, 'b')));
  EXPECT_FALSE(ValidWorkloadName(".a"));
  EXPECT_FALSE(ValidWorkloadName("a."));
  EXPECT_FALSE(ValidWorkloadName("a..b"));
  EXPECT_FALSE(ValidWorkloadName(".."));
  EXPECT_FALSE(ValidWorkloadName("a/b"));
}

TEST(Validate, RefusesBadFieldsNamingTheWorkload) {
  auto check = [](auto mutate) {
    auto s = Good();
    mutate(s);
    auto st = ValidateWorkload(s);
    EXPECT_FALSE(st.ok());
    if (!st.ok()) {
      EXPECT_NE(st.error().message().find("detector"), std::string::npos);
    }
  };
  check([](auto& s) { s.clear_command(); });
  check([](auto& s) { s.set_command(0, ""); });
  check([](auto& s) { s.set_command(0, std::string("/bin/a\0b", 8)); });
  check([](auto& s) { s.set_kind(outpost::v1::WORKLOAD_KIND_CONTAINER); });
  check([](auto& s) { s.set_kind(static_cast<outpost::v1::WorkloadKind>(42)); });
  check([](auto& s) { s.set_restart_policy(static_cast<outpost::v1::RestartPolicy>(9)); });
  check([](auto& s) { (*s.mutable_env())["1BAD"] = "x"; });
  check([](auto& s) { (*s.mutable_env())["A=B"] = "x"; });
  check([](auto& s) { s.add_devices("video0"); });
  check([](auto& s) { s.add_devices("/dev/../etc/shadow"); });
  check([](auto& s) { s.add_devices("/etc/passwd"); });
  check([](auto& s) { s.set_working_dir("relative"); });
  check([](auto& s) { s.set_user("bad user"); });
  check([](auto& s) { s.set_stop_grace_seconds(100000); });
  check([](auto& s) { s.set_spec_hash("xyz"); });
}

TEST(Validate, DocumentNamesUniqueAndHashesFilled) {
  outpost::v1::DesiredState d;
  *d.add_workloads() = Good();
  auto second = Good();
  second.set_name("other");
  second.set_spec_hash(std::string(64, 'a'));
  *d.add_workloads() = second;
  ASSERT_TRUE(ValidateAndNormalize(d).ok());
  EXPECT_EQ(d.workloads(0).spec_hash(), ComputeSpecHash(Good()));
  EXPECT_EQ(d.workloads(0).spec_hash().size(), 64u);
  EXPECT_EQ(d.workloads(1).spec_hash(), std::string(64, 'a'));  // the hub's is kept
  *d.add_workloads() = Good();
  EXPECT_FALSE(ValidateAndNormalize(d).ok());
}

TEST(Validate, SpecHashIsStableAndSensitive) {
  auto a = Good();
  auto b = Good();
  EXPECT_EQ(ComputeSpecHash(a), ComputeSpecHash(b));
  b.set_spec_hash(std::string(64, 'f'));  // ignored by the hash
  EXPECT_EQ(ComputeSpecHash(a), ComputeSpecHash(b));
  (*b.mutable_env())["LOG_LEVEL"] = "debug";
  EXPECT_NE(ComputeSpecHash(a), ComputeSpecHash(b));
}

TEST(Validate, TooManyWorkloads) {
  outpost::v1::DesiredState d;
  for (std::size_t i = 0; i <= kMaxWorkloads; ++i) {
    auto s = Good();
    s.set_name("w" + std::to_string(i));
    *d.add_workloads() = s;
  }
  EXPECT_FALSE(ValidateAndNormalize(d).ok());
}

}  // namespace
}  // namespace outpost::agent::sync
