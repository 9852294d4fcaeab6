// End-to-end: the agent's state dir on a small tmpfs that fills up (issue 5,
// item 8). Root only (mount); fails, never skips, without it.
//
//   low   less free than disk_low_mib: the agent reports DISK_LOW to the hub;
//   full  not one byte left: workloads keep running, the status works, a new
//         document cannot be stored and is not half-applied, the agent
//         keeps its last good state;
//   back  space returns: the agent takes the pending document, converges,
//         and its outbox drains; agent.db is intact.
#include <signal.h>

#include <gtest/gtest.h>

#include "outpost.pb.h"
#include "tests/e2e/fixture/e2e_fixture.hpp"

namespace outpost::e2e {
namespace {

constexpr const char* kMain = "disk.main";
constexpr const char* kSide = "disk.side";
constexpr int kTmpfsKib = 12 * 1024;

TEST(E2eDisk, FullStateDirKeepsWorkloadsRunningAndTheAgentRecovers) {
  ASSERT_TRUE(RequireRoot("mounting a tmpfs for the state dir"));
  Fleet fleet("e2e-disk");
  TmpfsMount tmpfs(fleet.root(), kTmpfsKib);
  ASSERT_TRUE(tmpfs.ok());
  ASSERT_TRUE(fleet.hub().Start());
  // Low below 3 MiB free (the whole filesystem is 12 MiB).
  AgentNode& a = fleet.AddAgent(
      "disky", AgentOptions(Labels{{"role", "disk"}}, "disk_low_mib: 3\ndisk_low_percent: 1\n", "",
                            tmpfs.dir() + "/state"));
  ASSERT_TRUE(a.Join());
  a.Start();
  int rev = 1;
  auto manifest = [&] {
    return Manifest(
        "disk", {{"role", "disk"}},
        {fleet.Workload("main", {{"REV", std::to_string(rev)}}), fleet.Workload("side")});
  };
  ASSERT_TRUE(fleet.hub().Apply(manifest()));
  std::uint64_t gen = fleet.hub().DesiredGeneration(a.name());
  ASSERT_TRUE(WaitFor(
      [&] {
        return a.Converged(gen, {kMain, kSide});
      },
      seconds(60), milliseconds(100)))
      << a.Logs();
  const pid_t main_pid = a.WorkloadPid(kMain);
  std::cout << "[ disk ] " << tmpfs.FreeBytes() / 1024 << " KiB free after convergence\n";

  // --- low -----------------------------------------------------------------
  // Fill all but 1 MiB: below disk_low_mib, with room to write the event.
  {
    std::string filler = tmpfs.dir() + "/ballast";
    const std::uint64_t keep = 1u << 20;
    std::uint64_t free = tmpfs.FreeBytes();
    ASSERT_GT(free, keep);
    std::string out;
    ASSERT_EQ(outpost::testing::RunCommand({"fallocate", "-l", std::to_string(free - keep), filler},
                                           &out),
              0)
        << out;
  }
  // The agent checks the disk every 30 s; it says so to the hub.
  ASSERT_TRUE(WaitFor(
      [&] { return fleet.hub().Events(a.name()).by_type[outpost::v1::EVENT_TYPE_DISK_LOW] >= 1; },
      seconds(45), milliseconds(500)))
      << a.Logs();
  std::string doctor;
  EXPECT_NE(outpost::testing::RunCommand(a.Argv({"doctor", "--json"}), &doctor), 0) << doctor;
  EXPECT_NE(doctor.find("\"disk\""), std::string::npos);

  // --- full ----------------------------------------------------------------
  tmpfs.Fill();
  ASSERT_LT(tmpfs.FreeBytes(), 4096u);
  // Things happen that want to be written: the side workload dies, the
  // operator changes the application.
  const pid_t side_pid = a.WorkloadPid(kSide);
  ASSERT_GT(side_pid, 0);
  ASSERT_EQ(::kill(side_pid, SIGKILL), 0);
  ++rev;
  ASSERT_TRUE(fleet.hub().Apply(manifest()));
  const std::uint64_t pending = fleet.hub().DesiredGeneration(a.name());
  ASSERT_EQ(pending, gen + 1);
  // The agent saw the new document (hubGeneration) but could not store it:
  // it keeps the last good state and keeps it running.
  ASSERT_TRUE(WaitFor(
      [&] {
        json s = a.Status();
        return s.value("hubGeneration", std::uint64_t{0}) == pending;
      },
      seconds(30), milliseconds(200)))
      << a.Logs();
  {
    json s = a.Status();
    EXPECT_EQ(s["daemon"], "running");
    EXPECT_EQ(s.value("desiredGeneration", std::uint64_t{0}), gen);
    EXPECT_EQ(s.value("appliedGeneration", std::uint64_t{0}), gen);
    EXPECT_EQ(AgentNode::Workload(s, kMain)["pid"], main_pid);
    EXPECT_TRUE(Alive(main_pid));
  }
  // The side workload is restarted even so.
  EXPECT_TRUE(WaitFor(
      [&] {
        pid_t p = a.WorkloadPid(kSide);
        return p > 0 && p != side_pid;
      },
      seconds(30), milliseconds(200)))
      << a.Logs();
  EXPECT_TRUE(a.Running());
  EXPECT_TRUE(Alive(main_pid));

  // --- back ----------------------------------------------------------------
  tmpfs.Unfill();
  ::unlink((tmpfs.dir() + "/ballast").c_str());
  const auto back_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(
      [&] {
        return a.Converged(pending, {kMain, kSide});
      },
      seconds(60), milliseconds(200)))
      << a.Logs();
  EXPECT_EQ(fleet.outputs().EnvOf(a.WorkloadPid(kMain))["REV"], std::to_string(rev));
  ASSERT_TRUE(WaitFor(
      [&] {
        json s = a.Status();
        HubEvents ev = fleet.hub().Events(a.name());
        return s.value("outboxDepth", -1) == 0 && ev.Contiguous() &&
               ev.max_seq == s.value("ackedSeq", std::uint64_t{0});
      },
      seconds(60), milliseconds(200)))
      << a.Logs();
  std::cout << "[ timing ] recovered " << MsSince(back_at) << " ms after space returned\n";
  // Everything the agent runs is recorded again: a restart adopts each
  // workload and starts nothing twice.
  const pid_t side_now = a.WorkloadPid(kSide);
  a.Stop();
  a.Start();
  EXPECT_TRUE(WaitFor(
      [&] {
        return a.Converged(pending, {kMain, kSide});
      },
      seconds(30), milliseconds(200)));
  EXPECT_EQ(a.WorkloadPid(kSide), side_now);
  EXPECT_EQ(fleet.CountWorkloadProcesses(kSide), 1);
  EXPECT_EQ(fleet.CountWorkloadProcesses(kMain), 1);
  a.Stop();
  AgentDbState db = ReadAgentDb(a.db());
  EXPECT_TRUE(db.integrity_ok) << db.integrity;
  EXPECT_EQ(db.held_generation, pending);
}

}  // namespace
}  // namespace outpost::e2e
