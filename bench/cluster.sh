#!/usr/bin/env bash
# Cluster figures: 3 headcount nodes sharing one Redis, all on 127.0.0.1, with the load
# generator on the same machine.
#
#   bench/cluster.sh                  fan-out (single node, then cluster) and ghosts
#   bench/cluster.sh fanout           only the fan-out pair
#   bench/cluster.sh ghosts           only the crashed-node run
#
# Each run gets a fresh Redis (`--save '' --appendonly no`) and fresh nodes on free ports:
# * cluster-fanout-single-rN.json: fan-out against one node (no Redis), the baseline;
# * cluster-fanout-rN.json: the same fan-out against the 3-node cluster: subscribers dealt
#   round-robin over the nodes, every publisher on node 1, so two thirds of the deliveries
#   cross Redis;
# * cluster-ghosts-rN.json: 3,000 members over the 3 nodes under a background broadcast load;
#   node 3 is killed (SIGKILL) and every surviving view must drop its members within the node
#   timeout.
#
# Environment:
#   ROUNDS=1                  rounds
#   NODE_TIMEOUT=10           the nodes' --node-timeout, in seconds (the ghosts bound)
#   RESULTS=bench/results     where the JSON goes
#   QUICK=1                   small sizes, to try the script itself
#   HEADCOUNT_BIN=path        use this binary instead of building one
#   REDIS_SERVER=redis-server the Redis to start
#   FANOUT_SHAPE=10x300       channels x subscribers of the fan-out (publishers: one per
#                             channel, at least 10); another shape than 10x300 is written as
#                             cluster-fanout[-single]-CxS-rN.json
#
# The fan-out shape is 10 channels x 300 subscribers with 10 publishers: 3,000 subscribers,
# 1,000 per node; at 100 k deliveries/s that is 333 messages/s through Redis and 33 frames/s
# per subscriber (a cursor-like rate that does not let frames pile up per socket as 1 x 1,000
# does). The ramp is 25k, 50k, 75k, 100k, 150k, 200k deliveries/s, 5 s per step, and a step passes
# with no loss, no duplicate and p99 <= 20 ms (cross-node p99 too, against the cluster).
#
# Every process this script starts is stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-1}"
node_timeout="${NODE_TIMEOUT:-10}"
results="${RESULTS:-bench/results}"
redis_bin="${REDIS_SERVER:-redis-server}"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(fanout ghosts)
mkdir -p "$results"
work="$(mktemp -d "${TMPDIR:-/tmp}/headcount-cluster.XXXXXX")"

log() { printf '\n==> %s\n' "$*" >&2; }

command -v "$redis_bin" >/dev/null || { echo "cluster: $redis_bin not found (apt-get install redis-server)" >&2; exit 1; }

bin="${HEADCOUNT_BIN:-}"
if [ -z "$bin" ]; then
  log "building headcount (release)"
  cargo build --release -q -p headcount
  bin=target/release/headcount
fi
# A copy named `headcount`: another build in the tree cannot change it mid-run, the recorded
# commands read as typed, and the ghosts scenario checks that the process it kills is one.
mkdir -p "$work/bin"
cp "$bin" "$work/bin/headcount"
bin="$work/bin/headcount"

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# At least 32 bytes: `serve` refuses shorter secrets.
secret="cluster-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
redis_port=""
redis_pid=""
node_urls=()
node_pids=()

start_redis() {
  redis_port="$(free_port)"
  "$redis_bin" --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --protected-mode yes --logfile "$work/redis.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && return 0
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "cluster: redis did not start" >&2
  cat "$work/redis.log" >&2 || true
  exit 1
}

# start_node NAME [--redis URL --node-timeout S]: a node on a free port; appends its URL and
# pid to node_urls and node_pids.
start_node() {
  local name="$1"
  shift
  "$bin" serve --bind 127.0.0.1:0 --jwt-secret "$secret" "$@" >"$work/$name.log" 2>&1 &
  local pid=$! url=""
  pids+=("$pid")
  for _ in $(seq 1 100); do
    url="$(sed -n 's/^ *API URL: //p' "$work/$name.log" | head -n1)"
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "cluster: node $name did not start" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
  node_urls+=("$url")
  node_pids+=("$pid")
}

start_cluster() {
  start_redis
  node_urls=()
  node_pids=()
  for k in 1 2 3; do
    start_node "node$k" --redis "redis://127.0.0.1:$redis_port" --node-timeout "$node_timeout"
  done
  sleep 1
}

# bench NAME ARGS...: runs the generator, the JSON into $results/NAME.json.
bench() {
  local name="$1"
  shift
  log "$name (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  (
    cd "$work"
    RUST_BACKTRACE=0 PATH="$work/bin:$PATH" timeout 600 headcount bench "$@" \
      --jwt-secret "$secret" --json "$name.json"
  ) || echo "(the run ended with an error; its results are kept)" >&2
  mv -f "$work/$name.json" "$results/" 2>/dev/null || true
}

join_by() {
  local IFS="$1"
  shift
  echo "$*"
}

shape="${FANOUT_SHAPE:-10x300}"
shape_channels="${shape%x*}"
shape_subscribers="${shape#*x}"
case "$shape_channels$shape_subscribers" in
  *[!0-9]* | "") echo "FANOUT_SHAPE must be CxS, like 10x300 or 1x1000" >&2; exit 2 ;;
esac
shape_publishers=$((shape_channels > 10 ? shape_channels : 10))
suffix=""
[ "$shape" = 10x300 ] || suffix="-$shape"
if [ -n "${QUICK:-}" ]; then
  fan=(--channels 3 --subscribers 60 --publishers 3 --rates 5k,10k --step-secs 2 --p99-ms 20)
  ghosts=(--members 300 --channels 3 --join-rate 500 --background-rate 5k)
else
  fan=(--channels "$shape_channels" --subscribers "$shape_subscribers" --publishers "$shape_publishers"
    --rates 25k,50k,75k,100k,150k,200k --step-secs 5 --p99-ms 20)
  ghosts=(--members 3000 --channels 10 --join-rate 500 --background-rate 30k --warmup-secs 3)
fi

for round in $(seq 1 "$rounds"); do
  for w in "${what[@]}"; do
    case "$w" in
      fanout)
        node_urls=()
        node_pids=()
        start_node single
        sleep 1
        bench "cluster-fanout-single$suffix-r$round" fanout "${fan[@]}" --url "${node_urls[0]}" \
          --pid "${node_pids[0]}" --label "round $round, single node"
        stop_all

        start_cluster
        bench "cluster-fanout$suffix-r$round" fanout "${fan[@]}" --url "$(join_by , "${node_urls[@]}")" \
          --pid "$(join_by , "${node_pids[@]}" "$redis_pid")" \
          --label "round $round, 3 nodes + Redis"
        stop_all
        ;;
      ghosts)
        start_cluster
        bench "cluster-ghosts-r$round" ghosts "${ghosts[@]}" --url "$(join_by , "${node_urls[@]}")" \
          --pid "$(join_by , "${node_pids[@]}" "$redis_pid")" \
          --kill-node 3 --kill-pid "${node_pids[2]}" --node-timeout-secs "$node_timeout" \
          --label "round $round, 3 nodes + Redis, node 3 killed"
        stop_all
        ;;
      *) echo "unknown workload: $w (fanout, ghosts)" >&2; exit 2 ;;
    esac
  done
done
log "cluster results in $results"
