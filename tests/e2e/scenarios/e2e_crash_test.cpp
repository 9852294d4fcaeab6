// End-to-end crash consistency (issue 5, item 7): the agent is SIGKILLed at
// random moments while it applies new documents and reports, and while it
// starts up (re-adoption, the cached document, connect, first report). After
// every kill agent.db opens and passes integrity_check, never holds an older
// generation than before, and the restarted agent returns to the hub's
// generation with exactly one process per workload.
#include <signal.h>

#include <gtest/gtest.h>

#include <random>

#include "outpost.pb.h"
#include "tests/e2e/fixture/e2e_fixture.hpp"

namespace outpost::e2e {
namespace {

constexpr int kKills = 50;
constexpr const char* kMain = "crash.main";
constexpr const char* kSide = "crash.side";

TEST(E2eCrash, AgentKilledFiftyTimesDuringApplyAndReportAlwaysRecovers) {
  Fleet fleet("e2e-crash");
  ASSERT_TRUE(fleet.hub().Start());
  AgentNode& a = fleet.AddAgent("crashy", AgentOptions(Labels{{"role", "crash"}}));
  ASSERT_TRUE(a.Join());
  a.Start();
  int rev = 1;
  auto manifest = [&] {
    return Manifest(
        "crash", {{"role", "crash"}},
        {fleet.Workload("main", {{"REV", std::to_string(rev)}}), fleet.Workload("side")});
  };
  ASSERT_TRUE(fleet.hub().Apply(manifest()));
  std::uint64_t hub_gen = fleet.hub().DesiredGeneration(a.name());
  ASSERT_TRUE(WaitFor(
      [&] {
        return a.Converged(hub_gen, {kMain, kSide});
      },
      seconds(60), milliseconds(100)))
      << a.Logs();

  std::mt19937 rng(std::random_device{}());
  std::uint64_t max_held = 0;
  int kills = 0;
  int kills_in_apply = 0;
  int kills_in_start = 0;
  const auto started = std::chrono::steady_clock::now();

  // After a kill: the cache opens, is intact, and never went backwards.
  auto check_db = [&](const char* when) {
    AgentDbState db = ReadAgentDb(a.db());
    ASSERT_TRUE(db.opened) << "kill " << kills << " (" << when << "): " << db.open_error;
    ASSERT_TRUE(db.integrity_ok) << "kill " << kills << " (" << when << "): " << db.integrity;
    EXPECT_GE(db.held_generation, max_held) << "kill " << kills << ": rolled back";
    EXPECT_LE(db.applied_generation, db.held_generation) << "kill " << kills;
    EXPECT_LE(db.held_generation, hub_gen) << "kill " << kills;
    max_held = std::max(max_held, db.held_generation);
  };
  // After a restart: back to the hub's generation, the right spec running,
  // one process per workload (nothing orphaned and started twice).
  auto check_recovered = [&] {
    a.Start();
    ASSERT_TRUE(WaitFor(
        [&] {
          return a.Converged(hub_gen, {kMain, kSide});
        },
        seconds(60), milliseconds(100)))
        << "after kill " << kills << "\n"
        << a.Logs() << fleet.hub().Logs();
    EXPECT_EQ(fleet.outputs().EnvOf(a.WorkloadPid(kMain))["REV"], std::to_string(rev))
        << "after kill " << kills;
    // ASSERT: a duplicate stays, and every later round would wait for it.
    ASSERT_TRUE(WaitFor([&] {
      return fleet.CountWorkloadProcesses(kMain) == 1 && fleet.CountWorkloadProcesses(kSide) == 1;
    })) << "after kill "
        << kills << ": " << fleet.CountWorkloadProcesses(kMain) << " main and "
        << fleet.CountWorkloadProcesses(kSide) << " side processes";
  };

  while (kills < kKills && !HasFatalFailure()) {
    if (kills % 2 == 0) {
      // During apply and report: a new document arrives, the kill lands
      // somewhere in verify/store/reconcile/report/event send.
      ++rev;
      ASSERT_TRUE(fleet.hub().Apply(manifest()));
      hub_gen = fleet.hub().DesiredGeneration(a.name());
      HoldFor(milliseconds(rng() % 300));
      a.Kill();
      ++kills;
      ++kills_in_apply;
      check_db("during apply");
    } else {
      // During start-up: sometimes with a change waiting that the agent
      // learns only after it connects.
      a.Kill();
      check_db("steady");
      if (rng() % 2 == 0) {
        ++rev;
        ASSERT_TRUE(fleet.hub().Apply(manifest()));
        hub_gen = fleet.hub().DesiredGeneration(a.name());
      }
      a.Start();
      HoldFor(milliseconds(rng() % 700));
      a.Kill();
      ++kills;
      ++kills_in_start;
      check_db("during start-up");
    }
    check_recovered();
  }
  ASSERT_EQ(kills, kKills);

  // Every event of all those lives reached the hub, once; each generation
  // was applied at most once and in order.
  ASSERT_TRUE(WaitFor(
      [&] {
        json s = a.Status();
        HubEvents ev = fleet.hub().Events(a.name());
        return s.value("outboxDepth", -1) == 0 && ev.Contiguous() &&
               ev.max_seq == s.value("ackedSeq", std::uint64_t{0});
      },
      seconds(60), milliseconds(200)))
      << a.Logs();
  HubEvents ev = fleet.hub().Events(a.name());
  for (std::size_t i = 1; i < ev.applied_generations.size(); ++i) {
    EXPECT_LT(ev.applied_generations[i - 1], ev.applied_generations[i])
        << "generation applied twice or out of order";
  }
  EXPECT_EQ(ev.applied_generations.back(), hub_gen);
  EXPECT_GE(ev.by_type[outpost::v1::EVENT_TYPE_AGENT_STARTED], kKills);
  std::cout << "[ timing ] " << kills << " kills (" << kills_in_apply << " during apply, "
            << kills_in_start << " during start-up), " << rev << " revisions, " << MsSince(started)
            << " ms\n";
}

}  // namespace
}  // namespace outpost::e2e
