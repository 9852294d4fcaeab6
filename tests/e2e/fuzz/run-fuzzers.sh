#!/usr/bin/env bash
# Runs every libFuzzer target of a clang build (make fuzz) for a bounded time
# and prints what ran: executions, new inputs, and the outcome.
#   tests/e2e/fuzz/run-fuzzers.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]
# The growing corpus of each target stays in BUILD_DIR/fuzz-corpus/<target>
# (seeded from tests/e2e/fuzz/corpus/<target>); a crashing, leaking, slow or
# oversized input lands in BUILD_DIR/fuzz-artifacts/<target>/ and makes the
# script fail. Reproduce one with: BUILD_DIR/bin/fuzz_<target> <file>.
set -uo pipefail

build=${1:?usage: run-fuzzers.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run-fuzzers.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(hub_ingest agent_sync manifest enroll)
here=$(cd "$(dirname "$0")" && pwd)

case "$seconds" in
  ''|*[!0-9]*) echo "run-fuzzers: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

failed=0
summary=()
for t in "${targets[@]}"; do
  bin="$build/bin/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "run-fuzzers: $bin is missing (build the fuzz_targets target with OUTPOST_FUZZ=ON)" >&2
    exit 2
  fi
  corpus="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  log="$build/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "fuzz: $t for ${seconds}s (corpus $corpus)"
  # -timeout: one input may take 10 s; -rss_limit_mb: 2 GiB; leaks are
  # findings too (LeakSanitizer runs at the end of each input).
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" "$corpus" "$here/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result="clean"
  else
    result="FOUND SOMETHING (exit $rc): $(ls -t "$artifacts" 2>/dev/null | head -1); see $log"
    failed=1
    grep -E "ERROR|SUMMARY|fuzz invariant" "$log" | head -5 >&2
  fi
  summary+=("$(printf '%-11s %12s executions %7s/s %6s new inputs (corpus %s)  %s' \
    "$t" "${execs:-?}" "${rate:-?}" "${units:-?}" "$size" "$result")")
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
exit $failed
