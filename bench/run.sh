#!/usr/bin/env bash
# Benchmarks dist/ippool on 127.0.0.1 with wrk (`make bench` builds it and runs this):
#   1. against the floor of its stack (bench/floor.ts: a bare Bun.serve route writing what an
#      allocation writes in one lmdb-js transaction): allocate over TCP (wrk) and over the Unix
#      socket (bench/load.ts), allocate+release pairs and -c1 latency, in interleaved rounds
#   2. Kea's DHCPv4 server (memfile, single-threaded) under perfdhcp in network namespaces:
#      bench/kea.ts (as root), set against ippool's allocate rate of section 1
#   3. client commands (health, allocate, show, release) over the socket against curl's:
#      bench/client-start.ts
#   4. a /12 pool: allocate (unique vm_ids), allocate+release pairs, health — throughput and latency
#   5. a /10 pool: allocate latency empty vs 99% full (filled in-process by bench/fill.ts)
#   6. start-up time (spawn to first healthy answer) with the 99%-full /10 and with an empty one
#   7. elastic IP failover (old host reachable and down) and associate/disassociate latency up to
#      1,000 associations on one host: bench/failover.ts against dist/ippool in the network-namespace
#      testbed of the host suites (as root; skipped otherwise)
#   8. pool API throughput and p99 while one host flaps vs steady: bench/flap.ts in the same testbed
#      (as root; skipped otherwise)
#   9. API key check timing, wrong vs right keys, in process and over HTTP: bench/key-timing.ts
#  10. fleet mode: allocate over HTTP on LMDB vs PostgreSQL (fsync on) with one and three daemons,
#      alone and on a primary with a synchronous standby,
#      bench/fleet.ts (needs Debian's postgresql), and Kea's PostgreSQL lease backend under perfdhcp
#      (bench/kea.ts --pgsql, as root)
# The report is printed at the end and written to bench/results/latest.txt (raw wrk output in
# bench/results/raw/). Knobs (environment): BENCH_FLOOR_ROUNDS (5) and BENCH_FLOOR_DURATION (5s)
# for section 1, BENCH_CLIENT_RUNS (30) for section 3, BENCH_CONNECTIONS (32), BENCH_HIGH_CONNECTIONS (128, a
# second /12 round where group commit fills bigger batches), BENCH_DURATION (10s),
# BENCH_BIG_CIDR (10.0.0.0/10), BENCH_FILL_PERCENT (99), BENCH_STARTS (5), BENCH_FULL_C32_DURATION (1s:
# a 99%-full /10 has only 41,944 free addresses, which -c32 uses up in about two seconds),
# BENCH_FAILOVER_MOVES (20 moves per case), BENCH_FAILOVER_BULK (1000 associations on one host).
set -euo pipefail
cd "$(dirname "$0")/.."

BUN=node_modules/.bin/bun
BIN=dist/ippool
CONNS=${BENCH_CONNECTIONS:-32}
HIGH_CONNS=${BENCH_HIGH_CONNECTIONS:-128}
DURATION=${BENCH_DURATION:-10s}
BIG_CIDR=${BENCH_BIG_CIDR:-10.0.0.0/10}
FILL_PERCENT=${BENCH_FILL_PERCENT:-99}
STARTS=${BENCH_STARTS:-5}
FULL_C32_DURATION=${BENCH_FULL_C32_DURATION:-1s}
FAILOVER_MOVES=${BENCH_FAILOVER_MOVES:-20}
FAILOVER_BULK=${BENCH_FAILOVER_BULK:-1000}
FLOOR_ROUNDS=${BENCH_FLOOR_ROUNDS:-5}
FLOOR_DURATION=${BENCH_FLOOR_DURATION:-5s}
FLOOR_WARM_UP=3s
CLIENT_RUNS=${BENCH_CLIENT_RUNS:-30}
RESULTS=bench/results

for tool in "$BIN" "$BUN"; do [ -x "$tool" ] || { echo "bench/run.sh: $tool is missing (run make bench)" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "bench/run.sh: wrk is missing (run make bench as root: it installs wrk)" >&2; exit 1; }

# Data on disk, not tmpfs: every answer waits for an fsync, and that is part of what is measured.
WORK=$(mktemp -d /var/tmp/ippool-bench.XXXXXX)
DAEMON_PID=""
DAEMONS=0
declare -A R # results: R[run.key], keys from the BENCH line of bench/wrk/report.lua

FLOOR_PID=""
stop_floor() {
  [ -n "$FLOOR_PID" ] || return 0
  kill -TERM "$FLOOR_PID" 2>/dev/null || true
  wait "$FLOOR_PID" 2>/dev/null || true
  FLOOR_PID=""
}
stop_daemon() {
  [ -n "$DAEMON_PID" ] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}
cleanup() {
  stop_floor
  stop_daemon
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# write_config NAME CIDR [SOCKET]: a one-pool config with its own data dir (and a Unix socket when
# SOCKET is given); prints the config's path.
write_config() {
  local name=$1 cidr=$2 socket=${3:-}
  cat >"$WORK/$name.toml" <<EOF
[server]
listen = "127.0.0.1:0"
socket = "$socket"
data_dir = "$WORK/$name"

[[pools]]
name = "bench"
cidr = "$cidr"
gateway = "${cidr%.*/*}.1"
EOF
  echo "$WORK/$name.toml"
}

# start_daemon CONFIG: starts dist/ippool, sets DAEMON_PID and PORT once health answers 200.
start_daemon() {
  DAEMONS=$((DAEMONS + 1))
  local out="$WORK/daemon-$DAEMONS.log"
  "$BIN" --config "$1" >"$out" 2>&1 &
  DAEMON_PID=$!
  PORT=""
  for _ in $(seq 1 3000); do # 30 s at most
    PORT=$(grep -om1 'tcp=127\.0\.0\.1:[0-9]*' "$out" | cut -d: -f2 || true)
    [ -n "$PORT" ] && curl -fso /dev/null "http://127.0.0.1:$PORT/api/v1/health" && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.01
  done
  echo "bench/run.sh: daemon did not start:" >&2
  cat "$out" >&2
  exit 1
}

# start_floor DATA_DIR [SOCKET]: starts bench/floor.ts on a free TCP port (sets PORT) or on SOCKET.
start_floor() {
  local out="$WORK/floor-$RANDOM.log"
  if [ -n "${2:-}" ]; then "$BUN" bench/floor.ts --data "$1" --socket "$2" >"$out" 2>&1 &
  else "$BUN" bench/floor.ts --data "$1" --port 0 >"$out" 2>&1 &
  fi
  FLOOR_PID=$!
  for _ in $(seq 1 1000); do
    grep -q '^FLOOR ready' "$out" && break
    kill -0 "$FLOOR_PID" 2>/dev/null || { cat "$out" >&2; exit 1; }
    sleep 0.01
  done
  [ -n "${2:-}" ] || PORT=$(sed -n 's/^FLOOR ready port=//p' "$out")
}

# parse_bench RUN FILE: the BENCH line of FILE into R[RUN.*].
parse_bench() {
  local run=$1 line kv
  line=$(grep '^BENCH ' "$2")
  for kv in ${line#BENCH }; do R[$run.${kv%%=*}]=${kv#*=}; done
  log "$run: ${line#BENCH }"
}

# bench RUN SCRIPT CONNECTIONS DURATION: one wrk run against the running daemon, parsed into R.
bench() {
  local run=$1 script=$2 conns=$3 duration=$4
  log "$run: wrk -t1 -c$conns -d$duration --latency -s bench/wrk/$script.lua"
  BENCH_TAG=$run wrk -t1 -c"$conns" -d"$duration" --latency -s "bench/wrk/$script.lua" "http://127.0.0.1:$PORT" \
    >"$RESULTS/raw/$run.txt"
  parse_bench "$run" "$RESULTS/raw/$run.txt"
}

# bench_socket RUN SOCKET SCRIPT CONNECTIONS DURATION: one bench/load.ts run over a Unix socket, parsed into R.
bench_socket() {
  local run=$1 socket=$2 script=$3 conns=$4 duration=$5
  log "$run: bench/load.ts --socket $socket --script $script --connections $conns --seconds ${duration%s}"
  "$BUN" bench/load.ts --socket "$socket" --script "$script" --connections "$conns" --seconds "${duration%s}" \
    --tag "$run" >"$RESULTS/raw/$run.txt"
  parse_bench "$run" "$RESULTS/raw/$run.txt"
}

# median_of: the median of the numbers on stdin, one per line.
median_of() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median RUN KEY: the median over the floor rounds of R[RUN-rN.KEY].
median() {
  local r
  for r in $(seq 1 "$FLOOR_ROUNDS"); do echo "${R[$1-r$r.$2]}"; done | median_of
}

# paired_ratio RUN KEY: the median over the floor rounds of each round's ippool/floor ratio of KEY.
paired_ratio() {
  local r
  for r in $(seq 1 "$FLOOR_ROUNDS"); do ratio "${R[ippool-$1-r$r.$2]}" "${R[floor-$1-r$r.$2]}"; echo; done | median_of
}

# warm_up [CONNECTIONS]: two seconds of health checks, so the first measured run does not pay for JIT warm-up.
warm_up() {
  wrk -t1 -c"${1:-$CONNS}" -d2s -s bench/wrk/health.lua "http://127.0.0.1:$PORT" >/dev/null
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { # row LABEL RUN: one table line
  printf '  %-28s %9s %9s %9s %9s %9s %7s\n' "$1" "${R[$2.rps]}" "${R[$2.p50]}" "${R[$2.p90]}" "${R[$2.p99]}" \
    "${R[$2.max]}" "$((${R[$2.non2xx]} + ${R[$2.sockerr]}))"
}
header() { printf '  %-28s %9s %9s %9s %9s %9s %7s\n' "" "req/s" "p50 ms" "p90 ms" "p99 ms" "max ms" "errors"; }

mkdir -p "$RESULTS/raw"
BEGAN=$(date +%s)

# --- 1. against the floor: interleaved rounds, every run on a fresh data dir -----------------------
# The floor's TCP runs use wrk as ippool's do; its socket runs use bench/load.ts as ippool's do.
# The machine's speed drifts (a shared VM): odd rounds run the floor first, even rounds ippool first,
# and each round's ippool/floor ratio is taken within the round.
for round in $(seq 1 "$FLOOR_ROUNDS"); do
  sides="floor ippool"
  [ $((round % 2)) = 1 ] || sides="ippool floor"
  for side in $sides; do
    for run in allocate unix pairs c1; do
      id="$side-$run-r$round"
      if [ "$side" = floor ]; then
        if [ "$run" = unix ]; then start_floor "$WORK/$id" "$WORK/$id.sock"; else start_floor "$WORK/$id"; fi
      else
        start_daemon "$(write_config "$id" 10.0.0.0/12 "$WORK/$id.sock")"
      fi
      # Warmed up with the allocations themselves, so both run JIT-compiled code: a health warm-up
      # leaves the allocation path to be compiled during the measured run.
      if [ "$run" = unix ]; then
        "$BUN" bench/load.ts --socket "$WORK/$id.sock" --script allocate --seconds "${FLOOR_WARM_UP%s}" --tag "$id-w" >/dev/null
        bench_socket "$id" "$WORK/$id.sock" allocate "$CONNS" "$FLOOR_DURATION"
      else
        BENCH_TAG="$id-w" wrk -t1 -c"$CONNS" -d"$FLOOR_WARM_UP" -s bench/wrk/allocate.lua "http://127.0.0.1:$PORT" >/dev/null
        case $run in
          allocate) bench "$id" allocate "$CONNS" "$FLOOR_DURATION" ;;
          pairs) bench "$id" pairs "$CONNS" "$FLOOR_DURATION" ;;
          c1) bench "$id" allocate 1 "$FLOOR_DURATION" ;;
        esac
      fi
      if [ "$side" = floor ]; then stop_floor; else stop_daemon; fi
    done
  done
done

# --- 2. Kea's DHCPv4 lease rate (as root: network namespaces) -------------------------------------
KEA_FAILED=0
if [ "$(id -u)" = 0 ]; then
  bash hooks/install-packages kea-dhcp4-server kea-admin
  log "Kea DHCPv4 (memfile, single-threaded) under perfdhcp (bench/kea.ts)"
  if KEA_LINE=$("$BUN" bench/kea.ts); then
    for kv in ${KEA_LINE#KEA }; do R[kea.${kv%%=*}]=${kv#*=}; done
  else
    KEA_FAILED=1
  fi
fi

# --- 3. client commands against curl, over the Unix socket -----------------------------------------
log "client commands against curl ($CLIENT_RUNS runs each, bench/client-start.ts)"
CLIENT=$("$BUN" bench/client-start.ts --runs "$CLIENT_RUNS")

# --- 4. /12: allocate, allocate+release pairs, health, each on a fresh data dir -----------------
for conns in "$CONNS" "$HIGH_CONNS"; do
  for run in allocate pairs health; do
    start_daemon "$(write_config "p12-$run-c$conns" 10.0.0.0/12)"
    warm_up "$conns"
    bench "p12-$run-c$conns" "$run" "$conns" "$DURATION"
    stop_daemon
  done
done

# --- fill a /10 to 99% in-process ---------------------------------------------------------------
FULL_CONFIG=$(write_config full "$BIG_CIDR")
log "filling $BIG_CIDR to $FILL_PERCENT% with bench/fill.ts"
FILL_STARTED=$(date +%s.%N)
"$BUN" bench/fill.ts --config "$FULL_CONFIG" --percent "$FILL_PERCENT" 2>&1 | sed 's/^/bench: /' >&2
FILL_SECONDS=$(awk -v a="$FILL_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
FULL_SIZE=$(du -sh "$WORK/full" | cut -f1)

# --- 6. start-up, before any run changes the filled store ---------------------------------------
log "start-up with the $FILL_PERCENT%-full $BIG_CIDR ($STARTS starts)"
STARTUP_FULL=$("$BUN" bench/startup.ts --config "$FULL_CONFIG" --runs "$STARTS")
log "$STARTUP_FULL"
EMPTY_CONFIG=$(write_config empty "$BIG_CIDR")
log "start-up with an empty $BIG_CIDR ($STARTS starts)"
STARTUP_EMPTY=$("$BUN" bench/startup.ts --config "$EMPTY_CONFIG" --runs "$STARTS")
log "$STARTUP_EMPTY"
startup() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# --- 5. /10 allocate latency, empty vs full; every run on its own copy of the store ---------------
for conns in 1 "$CONNS"; do
  duration=$DURATION
  [ "$conns" = 1 ] || duration=$FULL_C32_DURATION
  for state in empty full; do
    rm -rf "$WORK/run"
    # Copy in 4 KiB writes and sync. A plain cp leaves ~600 MB dirty, which the daemon's first
    # fdatasync writes back (a ~200 ms stall), and fills the page cache with large folios that make
    # every later 4 KiB page write write back far more (~1 MB per commit instead of ~70 KB here).
    mkdir -p "$WORK/run"
    if [ "$state" = full ]; then dd if="$WORK/full/ippool.mdb" of="$WORK/run/ippool.mdb" bs=4096 conv=fsync status=none; fi
    sed "s|^data_dir = .*|data_dir = \"$WORK/run\"|" "$WORK/$state.toml" >"$WORK/run.toml"
    start_daemon "$WORK/run.toml"
    warm_up
    bench "p10-$state-c$conns" allocate "$conns" "$duration"
    stop_daemon
  done
done

# --- 7. EIP failover and association latency, in the network-namespace testbed (as root) ----------
FAILOVER_FAILED=0
if [ "$(id -u)" = 0 ]; then
  # What the testbed needs on the fake hosts (the host suites' packages; make test-hosts installs the same).
  bash hooks/install-packages openssh-server openssh-client nftables iproute2 libvirt-clients conntrack iputils-arping procps
  log "EIP failover ($FAILOVER_MOVES moves per case) and $FAILOVER_BULK associations on one host, in the testbed"
  if ! FAILOVER=$("$BUN" bench/failover.ts --moves "$FAILOVER_MOVES" --bulk "$FAILOVER_BULK" --raw "$RESULTS/raw/failover.json"); then
    FAILOVER_FAILED=1
    FAILOVER="7. Elastic IP failover and association: FAILED (bench/failover.ts exited non-zero; see its output above)"
  fi
else
  FAILOVER="7. Elastic IP failover and association: skipped (needs root: network namespaces, sshd, nftables)"
fi

# --- 8. pool API under load while one host flaps, in the testbed (as root) ------------------------
FLAP_FAILED=0
if [ "$(id -u)" = 0 ]; then
  log "pool API under load while hv1 flaps (bench/flap.ts; BENCH_FLAP_ROUNDS, BENCH_FLAP_DURATION, BENCH_FLAP_MS, BENCH_FLAP_MODES)"
  if ! FLAP=$("$BUN" bench/flap.ts --connections "$CONNS" --raw "$RESULTS/raw/flap.json"); then
    FLAP_FAILED=1
    FLAP="8. Pool API under load while a host flaps: FAILED (bench/flap.ts exited non-zero; see its output above)"
  fi
else
  FLAP="8. Pool API under load while a host flaps: skipped (needs root: network namespaces, sshd, nftables)"
fi

# --- 9. key comparison timing ----------------------------------------------------------------------
log "API key check timing (bench/key-timing.ts)"
KEYS=$("$BUN" bench/key-timing.ts)

log "fleet mode: LMDB vs PostgreSQL, one and three daemons (bench/fleet.ts)"
FLEET_FAILED=0
FLEET=$("$BUN" bench/fleet.ts --seconds "${DURATION%s}" --connections "$CONNS") || FLEET_FAILED=1
KEA_PG="Kea with its PostgreSQL lease backend: skipped (needs root: network namespaces)"
if [ "$(id -u)" = 0 ]; then
  log "Kea DHCPv4 with its PostgreSQL lease backend under perfdhcp (bench/kea.ts --pgsql)"
  if KEA_PG_LINE=$("$BUN" bench/kea.ts --pgsql); then
    KEA_PG_LEASES=$(sed -E 's/.*leases=([0-9]+).*/\1/' <<<"$KEA_PG_LINE")
    # One line per round: their median.
    FLEET3_RPS=$(sed -nE 's/.*case=postgres-3 .*rps=([0-9]+).*/\1/p' <<<"$FLEET" | median_of)
    KEA_PG="Kea with its PostgreSQL lease backend (fsync on, single-threaded), perfdhcp, < 1 % dropped: $KEA_PG_LEASES leases/s
fleet mode with three daemons (median of the rounds) / Kea PostgreSQL: $(ratio "$FLEET3_RPS" "$KEA_PG_LEASES")"
  else
    FLEET_FAILED=1
    KEA_PG="Kea with its PostgreSQL lease backend: FAILED (bench/kea.ts --pgsql exited non-zero)"
  fi
fi

FREE_AT_FILL=$(awk -v p="$FILL_PERCENT" -v c="${BIG_CIDR#*/}" 'BEGIN { u = 2 ^ (32 - c) - 3; print u - int(u * p / 100) }')

# --- report ----------------------------------------------------------------------------------------
REPORT="$RESULTS/latest.txt"
{
  echo "ippool benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "  commit $(git describe --always --dirty 2>/dev/null || echo unknown), $("$BIN" --version), bun $("$BUN" --version), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "  $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -sr); client and daemon share the cores"
  echo "  data on $(df --output=source,fstype "$WORK" | tail -1 | tr -s ' '); every 2xx state change waits for the LMDB flush"
  echo "  sections 4 and 5: wrk -t1 -c$CONNS -d$DURATION --latency after a 2 s health warm-up; errors = non-2xx + socket errors"
  echo "  (wrk corrects its percentiles for coordinated omission: one long stall adds many samples)"
  echo
  echo "1. Against the floor of its stack (bench/floor.ts), medians of $FLOOR_ROUNDS interleaved rounds, -d$FLOOR_DURATION each,"
  echo "  fresh data dirs, each run after $FLOOR_WARM_UP of allocations at -c$CONNS"
  echo "  TCP: wrk -t1; socket: bench/load.ts (no coordinated-omission correction: compare it with itself)"
  echo "  ratio = ippool / floor within each round, median over the rounds (the rounds alternate which side runs first)"
  printf '  %-34s %9s %9s %9s\n' "" "floor" "ippool" "ratio"
  floor_row() { # floor_row LABEL RUN KEY
    printf '  %-34s %9s %9s %9s\n' "$1" "$(median "floor-$2" "$3")" "$(median "ippool-$2" "$3")" "$(paired_ratio "$2" "$3")"
  }
  floor_row "allocate -c$CONNS TCP, req/s" allocate rps
  floor_row "allocate -c$CONNS TCP, p99 ms" allocate p99
  floor_row "allocate -c$CONNS socket, req/s" unix rps
  floor_row "allocate -c$CONNS socket, p99 ms" unix p99
  floor_row "allocate+release -c$CONNS, req/s" pairs rps
  floor_row "allocate+release -c$CONNS, p99 ms" pairs p99
  floor_row "allocate -c1 TCP, p50 ms" c1 p50
  floor_row "allocate -c1 TCP, p99 ms" c1 p99
  for run in allocate unix pairs c1; do
    echo "  $run rounds, req/s: floor $(for r in $(seq 1 "$FLOOR_ROUNDS"); do printf '%s ' "${R[floor-$run-r$r.rps]}"; done)| ippool $(for r in $(seq 1 "$FLOOR_ROUNDS"); do printf '%s ' "${R[ippool-$run-r$r.rps]}"; done)"
  done
  echo
  if [ "$(id -u)" != 0 ]; then
    echo "2. Kea DHCPv4: skipped (needs root: network namespaces)"
  elif [ "$KEA_FAILED" = 1 ]; then
    echo "2. Kea DHCPv4: FAILED (bench/kea.ts exited non-zero; see its output above)"
  else
    echo "2. Kea ${R[kea.version]} DHCPv4, memfile (no fsync), single-threaded, perfdhcp -4 -g single -R 1000000 (bench/kea.ts)"
    echo "  highest lease rate with < 1 % dropped: ${R[kea.leases]} leases/s (offered ${R[kea.offered]}/s, ${R[kea.drops]} dropped)"
    echo "  ippool allocate -c$CONNS TCP (section 1, median) / Kea leases: $(ratio "$(median ippool-allocate rps)" "${R[kea.leases]}")"
    echo "  (perfdhcp keeps as many exchanges in flight as its rate needs; with -c$HIGH_CONNS in flight (section 4)"
    echo "  ippool allocates ${R[p12-allocate-c$HIGH_CONNS.rps]}/s: $(ratio "${R[p12-allocate-c$HIGH_CONNS.rps]}" "${R[kea.leases]}") × Kea's rate)"
  fi
  echo
  echo "3. Client commands over the Unix socket: wall time spawn to exit, median of $CLIENT_RUNS, ms (bench/client-start.ts)"
  printf '  %-12s %9s %9s %9s\n' "" "ippool" "curl" "ratio"
  while read -r _ kvs; do
    declare -A C=()
    for kv in $kvs; do C[${kv%%=*}]=${kv#*=}; done
    printf '  %-12s %9s %9s %9s\n' "${C[command]}" "${C[ippool_median]}" "${C[curl_median]}" "${C[ratio]}"
  done <<<"$CLIENT"
  echo
  echo "4. /12 pool (10.0.0.0/12, 1,048,573 usable), fresh data dir per run"
  for conns in "$CONNS" "$HIGH_CONNS"; do
    echo "  wrk -c$conns"
    header
    row "allocate (unique vm_ids)" "p12-allocate-c$conns"
    row "allocate+release (requests)" "p12-pairs-c$conns"
    row "health" "p12-health-c$conns"
    echo "  allocate+release pairs/s:        $(awk -v r="${R[p12-pairs-c$conns.rps]}" 'BEGIN { printf "%.1f", r / 2 }')"
    echo "  allocate / health throughput:    $(ratio "${R[p12-allocate-c$conns.rps]}" "${R[p12-health-c$conns.rps]}")"
    echo "  allocate+release / health:       $(ratio "${R[p12-pairs-c$conns.rps]}" "${R[p12-health-c$conns.rps]}") (requests)"
  done
  echo
  echo "5. /10 pool ($BIG_CIDR), allocate (unique vm_ids): empty vs $FILL_PERCENT% full"
  echo "  -c1 for $DURATION, -c$CONNS for $FULL_C32_DURATION (so the full pool cannot run out); each run on a copy of the store"
  echo "  filled in-process by bench/fill.ts in ${FILL_SECONDS} s; store $FULL_SIZE on disk; $FREE_AT_FILL addresses left free"
  echo "  (next-fit filled the pool from the bottom up, so the free addresses are the top of the pool)"
  header
  for conns in 1 "$CONNS"; do
    row "empty, -c$conns" "p10-empty-c$conns"
    row "$FILL_PERCENT% full, -c$conns" "p10-full-c$conns"
  done
  for conns in 1 "$CONNS"; do
    echo "  full/empty at -c$conns: p50 $(ratio "${R[p10-full-c$conns.p50]}" "${R[p10-empty-c$conns.p50]}"), p99 $(ratio "${R[p10-full-c$conns.p99]}" "${R[p10-empty-c$conns.p99]}"), throughput $(ratio "${R[p10-full-c$conns.rps]}" "${R[p10-empty-c$conns.rps]}")"
  done
  echo
  echo "6. Start-up: spawn to first 200 from GET /api/v1/health (polled every 5 ms), $STARTS starts, ms"
  printf '  %-28s %9s %9s %9s  %s\n' "" median min max "allocations present"
  printf '  %-28s %9s %9s %9s  %s\n' "$FILL_PERCENT% full $BIG_CIDR" "$(startup median "$STARTUP_FULL")" \
    "$(startup min "$STARTUP_FULL")" "$(startup max "$STARTUP_FULL")" "$(startup allocated "$STARTUP_FULL")"
  printf '  %-28s %9s %9s %9s  %s\n' "empty $BIG_CIDR" "$(startup median "$STARTUP_EMPTY")" \
    "$(startup min "$STARTUP_EMPTY")" "$(startup max "$STARTUP_EMPTY")" "$(startup allocated "$STARTUP_EMPTY")"
  echo "  full/empty median: $(ratio "$(startup median "$STARTUP_FULL")" "$(startup median "$STARTUP_EMPTY")")"
  echo "  full runs:  $(startup runs "$STARTUP_FULL")"
  echo "  empty runs: $(startup runs "$STARTUP_EMPTY")"
  echo
  echo "$FAILOVER"
  echo
  echo "$FLAP"
  echo
  echo "9. API key check timing"
  echo "$KEYS" | sed 's/^/  /'
  echo
  echo "10. Fleet mode: allocate -c$CONNS over TCP (bench/load.ts, split across the daemons), PostgreSQL 15 with fsync on"
  echo "$FLEET" | sed 's/^FLEET /  /'
  echo "$KEA_PG" | sed 's/^/  /'
  echo
  for run in p12-{allocate,pairs,health}-c{"$CONNS","$HIGH_CONNS"} p10-{empty,full}-c{1,"$CONNS"}; do
    [ "$((${R[$run.non2xx]} + ${R[$run.sockerr]}))" = 0 ] || echo "WARNING: $run had errors: see $RESULTS/raw/$run.txt"
  done
  for run in floor-{allocate,unix,pairs,c1} ippool-{allocate,unix,pairs,c1}; do
    for r in $(seq 1 "$FLOOR_ROUNDS"); do
      [ "$((${R[$run-r$r.non2xx]} + ${R[$run-r$r.sockerr]}))" = 0 ] || echo "WARNING: $run-r$r had errors: see $RESULTS/raw/$run-r$r.txt"
    done
  done
  [ "$KEA_FAILED" = 0 ] || echo "WARNING: section 2 (bench/kea.ts) failed"
  [ "$FAILOVER_FAILED" = 0 ] || echo "WARNING: section 7 (bench/failover.ts) failed"
  [ "$FLAP_FAILED" = 0 ] || echo "WARNING: section 8 (bench/flap.ts) failed"
  [ "$FLEET_FAILED" = 0 ] || echo "WARNING: section 10 (bench/fleet.ts) failed"
  echo "Total wall time: $(($(date +%s) - BEGAN)) s"
} >"$REPORT"
echo
cat "$REPORT"
exit $((KEA_FAILED | FAILOVER_FAILED | FLAP_FAILED | FLEET_FAILED))
