#!/usr/bin/env bash
# How far a local rate limit's enforced rate strays from the configured one when each
# worker holds its own buckets (CONFIG.md, "Rate limits"): strait with WORKERS workers in
# front of an nginx backend, one route limited to RATE requests per second for one key
# (every request carries the same `X-Key`), loaded by wrk for DURATION with each of
# CONNS connection counts. The enforced rate is the 200s per second (wrk counts the 429s
# as non-2xx); the report gives it against the configured rate.
#
# Usage: bench/wrk/ratelimit.sh     (as root, or with sudo available for apt-get)
# Env:   WORKERS=2 RATE=1000 DURATION=10s CONNS="1 2 8 50" ROUNDS=3 SKIP_BUILD=1
#        STRAIT=127.0.0.41:28091 BACKEND=127.0.0.42:28092
# Output: stdout, and bench/results/ratelimit-<timestamp>.txt.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORKERS=${WORKERS:-2}
RATE=${RATE:-1000}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-1 2 8 50}
ROUNDS=${ROUNDS:-3}
STRAIT=${STRAIT:-127.0.0.41:28091}
BACKEND=${BACKEND:-127.0.0.42:28092}

ensure_packages nginx:nginx wrk:wrk curl:curl
[[ -n ${SKIP_BUILD:-} ]] || (cd "$ROOT" && cargo build --release -p strait)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/backend/logs"
cat >"$WORK/backend/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server { listen $BACKEND; location / { return 200 "ok"; } }
}
NGINX
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)

cat >"$WORK/strait.yaml" <<STRAIT
workers: $WORKERS
admin: {listen: "127.0.0.1:0"}
listeners: [{name: http, address: "$STRAIT"}]
access_log: {enabled: false}
services:
  - name: limited
    upstream: backend
    routes:
      - {name: r, path: /, rate_limit: {rate: $RATE/s, burst: $RATE, key: header, header: X-Key}}
upstreams:
  - {name: backend, nodes: [{address: "$BACKEND"}]}
STRAIT
"$TARGET_DIR/release/strait" run --config "$WORK/strait.yaml" >"$WORK/strait.log" 2>&1 &
PIDS+=($!)
ready=
for _ in $(seq 100); do
    if curl -s -o /dev/null "http://$STRAIT/"; then ready=1; break; fi
    sleep 0.1
done
[[ -n $ready ]] || die "strait did not answer on $STRAIT: $(tail -n 20 "$WORK/strait.log")"

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/ratelimit-$(date +%Y%m%d-%H%M%S).txt
secs=${DURATION%s}
{
    echo "rate limit $RATE/s (burst $RATE) on one key, $WORKERS workers, wrk $DURATION per run"
    printf '%-6s %-6s %10s %10s %10s\n' conns round "200/s" "429/s" "200s/rate"
    for round in $(seq "$ROUNDS"); do
        for c in $CONNS; do
            # Every bucket refills (burst = one second's worth) before the next run.
            sleep 2
            out=$(wrk -t1 -c"$c" -d"$DURATION" -H 'X-Key: one' "http://$STRAIT/")
            total=$(awk '/requests in/ {print $1}' <<<"$out")
            refused=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
            refused=${refused:-0}
            ok=$((total - refused))
            awk -v c="$c" -v r="$round" -v ok="$ok" -v no="$refused" -v s="$secs" -v rate="$RATE" \
                'BEGIN { printf "%-6s %-6s %10.0f %10.0f %10.2f\n", c, r, ok / s, no / s, ok / s / rate }'
        done
    done
} | tee "$OUT"
