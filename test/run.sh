#!/usr/bin/env bash
# Runs every suite and ends with one plain summary line: "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BUN=node_modules/.bin/bun
# Per-test time limit: the suites that start the daemon or a PostgreSQL cluster need room on a
# loaded 2-core machine (bunfig.toml's [test] timeout is not read by this Bun).
TIMEOUT_MS=60000
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The resource-limits suite holds 10,500 connections open in the test process and in the daemon
# (which inherits this limit): raise it (as root the hard limit too); the suite fails clearly if it
# is still too low.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

status=0
failed_runs=()
run() {
  echo "== $*"
  "$@" 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; failed_runs+=("$*"); }
}
run "$BUN" test --timeout "$TIMEOUT_MS" test/unit
run "$BUN" test --timeout "$TIMEOUT_MS" test/integration
# The randomized suites use fixed seeds so CI is repeatable; `make test-crash` and `make fuzz` run
# long with random ones (each prints its seed; CRASH_SEED / FUZZ_SEED replay one).
run env CRASH_SEED=20261122 "$BUN" test --timeout "$TIMEOUT_MS" test/crash
run env FUZZ_SEED=20261122 "$BUN" test --timeout "$TIMEOUT_MS" test/fuzz
run "$BUN" test --timeout "$TIMEOUT_MS" test/hosts
run env IPPOOL_DAEMON=deno "$BUN" test --timeout "$TIMEOUT_MS" test/integration/smoke.test.ts
# The container image, built and run with podman, the original README's `docker run` lines among
# its checks (its own pass/fail: it is a script, not a bun suite).
run bash hooks/image-test

passed=$(grep -E '^ *[0-9]+ pass$' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^ *[0-9]+ fail$' "$log" | awk '{s+=$1} END {print s+0}')
[ "$passed" -gt 0 ] || status=1
[ "$failed" -eq 0 ] || status=1
echo "tests: $passed passed, $failed failed"
for failed_run in "${failed_runs[@]}"; do echo "failed: $failed_run"; done
exit "$status"
