#!/usr/bin/env bash
# The full benchmark session: builds headcount in release, installs the peers, runs every
# workload against headcount and each peer in turn, in rounds (headcount, socketio, yjs,
# prosody, headcount, socketio, ...), each against a freshly started server, writes
# bench/results/*.json and regenerates BENCHMARKS.md and its charts.
#
#   bench/run.sh                    every workload
#   bench/run.sh idle fanout        only these scenarios (idle, fanout, storm, join-rate,
#                                   cluster)
#
# Environment:
#   ROUNDS=2                        rounds per workload
#   PEERS="socketio yjs prosody"    peers to compare with (empty: headcount only)
#   QUICK=1                         small sizes, to try the runner itself in a minute or two
#   HEADCOUNT_BIN=path              use this binary instead of building one
#   CLUSTER=0                       skip the cluster step (bench/cluster.sh: 3 nodes + Redis,
#                                   headcount only, needs redis-server)
#
# Every server listens on 127.0.0.1 only and is stopped after its run.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-2}"
peers="${PEERS-socketio yjs prosody}"
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(idle fanout storm join-rate)
  [ "${CLUSTER:-1}" = 0 ] || scenarios+=(cluster)
fi
results=bench/results
[ -z "${QUICK:-}" ] || results=bench/results/quick
mkdir -p "$results"
export BENCH_TMP="${BENCH_TMP:-/tmp/headcount-bench}"
mkdir -p "$BENCH_TMP"

log() { printf '\n==> %s\n' "$*" >&2; }

bin="${HEADCOUNT_BIN:-}"
if [ -z "$bin" ]; then
  log "building headcount (release)"
  cargo build --release -q -p headcount
  bin=target/release/headcount
fi
# A copy, so that another build in the same tree cannot change the binary mid-session, and
# named `headcount` so that the recorded commands read as typed.
mkdir -p "$BENCH_TMP/bin"
cp "$bin" "$BENCH_TMP/bin/headcount"
bin="$BENCH_TMP/bin/headcount"
if [ -n "$peers" ]; then
  log "installing the peers"
  bench/peers/install.sh >&2
fi

# At least 32 bytes: `serve` refuses shorter secrets.
secret="bench-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    bench/peers/stop.sh "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

# start TARGET: starts a fresh server and sets server_pid and url.
start() {
  local port
  case "$1" in headcount) port=4000 ;; socketio) port=4001 ;; yjs) port=4002 ;; prosody) port=5280 ;; esac
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: stop whatever listens there first" >&2
    exit 1
  fi
  case "$1" in
    headcount)
      "$bin" serve --bind 127.0.0.1:4000 --jwt-secret "$secret" >"$BENCH_TMP/headcount.log" 2>&1 &
      server_pid=$!
      url=http://127.0.0.1:4000
      for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || { cat "$BENCH_TMP/headcount.log" >&2; exit 1; }
        (exec 3<>/dev/tcp/127.0.0.1/4000) 2>/dev/null && return 0
        sleep 0.1
      done
      echo "headcount did not start" >&2
      return 1
      ;;
    socketio) server_pid=$(bench/peers/start.sh socketio 4001); url=http://127.0.0.1:4001 ;;
    yjs) server_pid=$(bench/peers/start.sh yjs 4002); url=http://127.0.0.1:4002 ;;
    prosody) server_pid=$(bench/peers/start.sh prosody 5280); url=http://127.0.0.1:5280 ;;
  esac
}

# run NAME SCENARIO ARGS...: every target, every round, interleaved.
run() {
  local name="$1"
  shift
  for round in $(seq 1 "$rounds"); do
    for target in headcount $peers; do
      log "$name against $target (round $round of $rounds; load: $(cut -d' ' -f1-3 /proc/loadavg))"
      start "$target"
      sleep 1
      # The command is recorded in the results as typed (secrets masked), so it is spelled
      # the way a reader would type it.
      (
        cd "$BENCH_TMP"
        RUST_BACKTRACE=0 PATH="$BENCH_TMP/bin:$PATH" headcount bench "$@" --target "$target" --url "$url" \
          --jwt-secret "$secret" --pid "$server_pid" --label "round $round" \
          --json "$name-$target-r$round.json"
      ) || echo "(the run ended with an error; its results are kept)" >&2
      mv -f "$BENCH_TMP/$name-$target-r$round.json" "$results/" 2>/dev/null || true
      stop_server
    done
  done
}

if [ -n "${QUICK:-}" ]; then
  idle=(--connections 500 --channels 10 --hold-secs 2)
  fan1=(--channels 1 --subscribers 100 --rates 10k,50k --step-secs 2)
  fan2=(--channels 10 --subscribers 10 --rates 10k,50k --step-secs 2)
  storm1=(--members 200 --join-rate 500 --timeout-secs 20)
  storm2=(--members 300 --join-rate 500 --timeout-secs 20)
  joins=(--rates 200,1000 --step-secs 2)
else
  idle=(--connections 15000 --channels 100 --hold-secs 10 --timeout-secs 40)
  fan1=(--channels 1 --subscribers 1000 --publishers 10 --step-secs 5)
  fan2=(--channels 100 --subscribers 100 --publishers 100 --step-secs 5 --rates 10k,25k,50k,75k,100k,150k,200k,300k,500k,1M)
  storm1=(--members 2000 --join-rate 500 --timeout-secs 40)
  storm2=(--members 5000 --join-rate 500 --timeout-secs 40)
  joins=(--step-secs 5)
fi

{
  echo "{"
  echo "  \"started\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"commit\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')\","
  echo "  \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"rounds\": $rounds,"
  echo "  \"peers\": \"$peers\","
  echo "  \"quick\": $([ -n "${QUICK:-}" ] && echo true || echo false)"
  echo "}"
} >"$results/session.json"

for s in "${scenarios[@]}"; do
  case "$s" in
    idle) run idle idle "${idle[@]}" ;;
    fanout)
      run fanout-1x1000 fanout "${fan1[@]}"
      run fanout-100x100 fanout "${fan2[@]}"
      ;;
    storm | presence-storm)
      run storm-2000 presence-storm "${storm1[@]}"
      run storm-5000 presence-storm "${storm2[@]}"
      ;;
    join-rate) run join-rate join-rate "${joins[@]}" ;;
    cluster)
      log "cluster: 3 nodes + Redis (load: $(cut -d' ' -f1-3 /proc/loadavg))"
      HEADCOUNT_BIN="$bin" RESULTS="$results" ROUNDS="$rounds" bench/cluster.sh ||
        echo "(the cluster step ended with an error; its results are kept)" >&2
      ;;
    *) echo "unknown scenario: $s" >&2; exit 2 ;;
  esac
done

if [ -z "${QUICK:-}" ]; then
  log "writing BENCHMARKS.md"
  python3 bench/report.py
else
  log "quick results in $results (BENCHMARKS.md is built from full runs only)"
  python3 bench/report.py --results "$results" --out "$BENCH_TMP/BENCHMARKS-quick.md" --charts "$BENCH_TMP/charts"
fi
