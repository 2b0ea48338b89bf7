#!/usr/bin/env bash
# HTTP/2 from clients: strait against nginx (`http2` on its listeners, upstream keep-alive
# to the same HTTP/1.1 backend), over TLS (ALPN h2, ECDSA P-256) and h2c (prior
# knowledge), h2load with 10 streams per connection, same core, alternating rounds. Then
# gRPC unary calls per second through strait (h2c to an h2c gRPC server) against calls
# straight to that server.
#
# Per round and contender: CPU per request of the proxy (utime+stime over the run /
# requests), its ratio to nginx's in the same round, req/s, and p99 from h2load's
# per-request log; medians over rounds.
#
# Usage: bench/wrk/h2.sh     Env: ROUNDS=3 DURATION=5 CLIENTS=10 STREAMS=10
#        PROXY_CORE=0 LOAD_CORE=1 SKIP_BUILD=1
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-10}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_packages h2load:nghttp2-client nginx:nginx openssl:openssl taskset:util-linux curl:curl python3:python3

BACKEND=127.0.0.61:28280
STRAIT_TLS=127.0.0.62:28443
STRAIT_H2C=127.0.0.62:28480
NGINX_TLS=127.0.0.63:28444
NGINX_H2C=127.0.0.63:28481
GRPC=127.0.0.64:28500
STRAIT_GRPC=127.0.0.62:28501

if [[ -z ${SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release -p strait)
fi
STRAIT_BIN=$TARGET_DIR/release/strait
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strait-h2-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key" 2>/dev/null
openssl req -x509 -new -key "$WORK/ca.key" -subj /CN=bench-ca -days 2 -out "$WORK/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/leaf.ec" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$WORK/leaf.ec" -out "$WORK/leaf.key"
openssl req -new -key "$WORK/leaf.key" -subj /CN=bench.test -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/ext" -out "$WORK/leaf.crt" 2>/dev/null
chmod 644 "$WORK"/*

common_nginx() {
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
EOF
}
temp_paths() {
    echo "client_body_temp_path $1/cb; proxy_temp_path $1/p; fastcgi_temp_path $1/f; uwsgi_temp_path $1/u; scgi_temp_path $1/s;"
}

mkdir -p "$WORK/backend" "$WORK/nginx"
{
    common_nginx "$WORK/backend"
    echo "http { access_log off; keepalive_timeout 3600s; keepalive_requests 1000000; $(temp_paths "$WORK/backend")"
    # shellcheck disable=SC2028
    echo "  server { listen $BACKEND; location / { return 200 \"strait bench backend: a fixed body of exactly one hundred bytes, keep-alive on, no access log......\n\"; } } }"
} >"$WORK/backend/nginx.conf"
taskset -c "$LOAD_CORE" nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)

# nginx 1.22: `http2` on the listen line (1.25 moved it to `http2 on;`).
{
    common_nginx "$WORK/nginx"
    echo "http { access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 128; $(temp_paths "$WORK/nginx")"
    echo "  upstream backend { server $BACKEND; keepalive 64; }"
    echo "  server { listen $NGINX_TLS ssl http2; listen $NGINX_H2C http2;"
    echo "           ssl_certificate $WORK/leaf.crt; ssl_certificate_key $WORK/leaf.key;"
    echo "           ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;"
    echo "           location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    echo "             proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    echo "             proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host; } } }"
} >"$WORK/nginx/nginx.conf"
taskset -c "$PROXY_CORE" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

cat >"$WORK/strait.yaml" <<EOF
workers: 1
admin: {listen: "127.0.0.1:0"}
listeners:
  - name: https
    address: $STRAIT_TLS
    tls:
      certificates: [{cert_file: $WORK/leaf.crt, key_file: $WORK/leaf.key}]
  - {name: h2c, address: $STRAIT_H2C}
  - {name: grpc, address: $STRAIT_GRPC}
access_log: {enabled: false}
services:
  - {name: grpc, hosts: [grpc.test], upstream: grpc}
  - {name: bench, path_prefix: /, upstream: backend}
upstreams:
  - {name: backend, nodes: [{address: $BACKEND}], keepalive: {max_idle: 64}}
  - {name: grpc, protocol: h2c, nodes: [{address: $GRPC}]}
EOF
taskset -c "$PROXY_CORE" "$STRAIT_BIN" run --config "$WORK/strait.yaml" --workers 1 >"$WORK/strait.log" 2>&1 &
STRAIT_PID=$!
PIDS+=("$STRAIT_PID")

# The gRPC server: the tests' peer (grpcio), in the tests' venv (made like they make it).
VENV=$ROOT/target/grpc-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import grpc' 2>/dev/null; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check grpcio==1.85.3 &&
        echo -n grpcio==1.85.3 >"$VENV/.installed"
fi
taskset -c "$LOAD_CORE" "$VENV/bin/python" "$ROOT/proxy/tests/it/grpc_peer.py" server --listen "$GRPC" --name bench >"$WORK/grpc.log" 2>&1 &
PIDS+=($!)

declare -A URL=(
    [strait-tls]=https://$STRAIT_TLS/ [nginx-tls]=https://$NGINX_TLS/
    [strait-h2c]=http://$STRAIT_H2C/ [nginx-h2c]=http://$NGINX_H2C/
)
declare -A PID=([strait]=$STRAIT_PID [nginx]=$NGINX_PID)
ready() {
    local deadline=$((SECONDS + 15))
    until h2load -n1 -c1 "$1" 2>/dev/null | grep -q "1 succeeded"; do
        ((SECONDS < deadline)) || die "$1 does not answer over HTTP/2; logs: $(tail -n 5 "$WORK"/*.log 2>/dev/null)"
        sleep 0.2
    done
}
for k in "${!URL[@]}"; do ready "${URL[$k]}"; done
deadline=$((SECONDS + 30))
until grep -q listening "$WORK/grpc.log"; do
    ((SECONDS < deadline)) || die "the gRPC server did not start: $(cat "$WORK/grpc.log")"
    sleep 0.2
done

pids_of() {
    echo "$1"
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
}
ticks() {
    local t=0 p f
    for p in $(pids_of "$1"); do
        read -r -a f <<<"$(sed 's/^.*) //' "/proc/$p/stat")"
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
ROWS=$WORK/rows
# measure ROUND KIND CONTENDER PROXY-PID URL [h2load args...]
measure() {
    local round=$1 kind=$2 c=$3 pid=$4 url=$5
    shift 5
    local before after out req rps p99
    taskset -c "$LOAD_CORE" h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D1 "$@" "$url" >/dev/null
    rm -f "$WORK/h2load.log"
    before=$(ticks "$pid")
    out=$(taskset -c "$LOAD_CORE" h2load -t1 -c"$CLIENTS" -m"$STREAMS" -D"$DURATION" --log-file="$WORK/h2load.log" "$@" "$url")
    after=$(ticks "$pid")
    req=$(awk '/^requests:/{print $8}' <<<"$out")
    rps=$(awk '/^finished in/{print $4}' <<<"$out")
    p99=$(awk '{print $3}' "$WORK/h2load.log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)]/1000}')
    awk -v r="$round" -v k="$kind" -v c="$c" -v t=$((after - before)) -v n="$req" -v hz="$HZ" -v rps="$rps" -v p99="$p99" \
        'BEGIN {printf "%s %s %s %.2f %s %s\n", r, k, c, (n > 0 ? t * 1e6 / hz / n : 0), rps, p99}' >>"$ROWS"
    tail -n1 "$ROWS" >&2
}

# A gRPC unary call: a 5-byte frame header and a 5-byte message.
printf '\x00\x00\x00\x00\x05hello' >"$WORK/grpc.body"
GRPC_ARGS=(-d "$WORK/grpc.body" -H "content-type: application/grpc" -H "te: trailers")

for r in $(seq 1 "$ROUNDS"); do
    for proto in tls h2c; do
        for c in strait nginx; do
            measure "$r" "$proto" "$c" "${PID[$c]}" "${URL[$c-$proto]}"
        done
    done
    measure "$r" grpc direct "$STRAIT_PID" "http://$GRPC/test.Echo/Unary" "${GRPC_ARGS[@]}"
    measure "$r" grpc strait "$STRAIT_PID" "http://$STRAIT_GRPC/test.Echo/Unary" "${GRPC_ARGS[@]}" -H ":authority: grpc.test"
done

echo
echo "HTTP/2, $ROUNDS rounds of h2load -t1 -c$CLIENTS -m$STREAMS -D$DURATION, 100 B responses, ECDSA P-256 for TLS, $(nginx -v 2>&1 | sed 's/.*\///'), $(uname -r)"
echo "CPU us per request of the proxy: median; ratio to nginx: median of per-round ratios; p99 from h2load's request log"
python3 - "$ROWS" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'kind':6} {'proxy':8} {'cpu_us':>8} {'req/s':>10} {'p99_ms':>8} {'cpu/nginx':>10} {'req/s/nginx':>12} {'p99/nginx':>10}")
for k in ["tls", "h2c"]:
    for c in ["strait", "nginx"]:
        mine = {r[0]: r for r in rows if r[1] == k and r[2] == c}
        ref = {r[0]: r for r in rows if r[1] == k and r[2] == "nginx"}
        med = lambda i: statistics.median(float(r[i]) for r in mine.values())
        ratio = lambda i: statistics.median(float(mine[x][i]) / float(ref[x][i]) for x in mine)
        print(f"{k:6} {c:8} {med(3):8.2f} {med(4):10.0f} {med(5):8.2f} {ratio(3):10.3f} {ratio(4):12.3f} {ratio(5):10.3f}")
print()
print("gRPC unary calls (h2load, same payload): straight to the grpcio server vs through strait (h2c both ways)")
for c in ["direct", "strait"]:
    mine = [r for r in rows if r[1] == "grpc" and r[2] == c]
    rps = statistics.median(float(r[4]) for r in mine)
    p99 = statistics.median(float(r[5]) for r in mine)
    cpu = statistics.median(float(r[3]) for r in mine)
    extra = f"  strait cpu_us/call {cpu:.2f}" if c == "strait" else ""
    print(f"  {c:7} {rps:10.0f} calls/s  p99 {p99:7.2f} ms{extra}")
EOF
