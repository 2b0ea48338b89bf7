#!/usr/bin/env bash
# TLS termination: strait against nginx (OpenSSL, session tickets on) and HAProxy, same
# ECDSA P-256 certificate, same backend, same core, alternating rounds.
#
# Per round and contender:
#   keep-alive HTTPS: wrk -c50 over one TLS connection each, 100 B and 16 KiB bodies;
#   handshakes:       wrk -c50 with `Connection: close`, so every request is a new TCP
#                     connection and a full TLS handshake (wrk does not resume sessions).
# CPU per request of the proxy (utime+stime over the run / requests), and its ratio to
# nginx's in the same round; median over rounds. Then memory per idle TLS connection:
# RSS of the proxy before and after IDLE_CONNS handshaken connections that stay open.
#
# Usage: bench/wrk/tls.sh     Env: ROUNDS=3 DURATION=5s CONNECTIONS=50 IDLE_CONNS=2000
#        PROXY_CORE=0 LOAD_CORE=1 SKIP_BUILD=1
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
IDLE_CONNS=${IDLE_CONNS:-2000}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export PATH="$PATH:/usr/sbin:/sbin"
export -n NGINX
# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_packages wrk:wrk nginx:nginx haproxy:haproxy openssl:openssl taskset:util-linux curl:curl python3:python3

BACKEND=127.0.0.51:28180
STRAIT=127.0.0.52:28443
NGINX_ADDR=127.0.0.53:28444
HAPROXY=127.0.0.54:28445

if [[ -z ${SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release -p strait)
fi
STRAIT_BIN=$TARGET_DIR/release/strait
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strait-tls-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# One ECDSA P-256 CA and leaf for bench.test, for every contender.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key" 2>/dev/null
openssl req -x509 -new -key "$WORK/ca.key" -subj /CN=bench-ca -days 2 -out "$WORK/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/leaf.ec" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$WORK/leaf.ec" -out "$WORK/leaf.key"
openssl req -new -key "$WORK/leaf.key" -subj /CN=bench.test -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.test\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/ext" -out "$WORK/leaf.crt" 2>/dev/null
cat "$WORK/leaf.crt" "$WORK/leaf.key" >"$WORK/haproxy.pem"
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

mkdir -p "$WORK/backend/www" "$WORK/nginx"
head -c 16384 /dev/zero | tr '\0' x >"$WORK/backend/www/16k"
chmod -R 755 "$WORK/backend" "$WORK/nginx"
{
    common_nginx "$WORK/backend"
    echo "http { access_log off; keepalive_timeout 3600s; keepalive_requests 1000000; $(temp_paths "$WORK/backend")"
    # The \n is nginx's: it ends the body with a newline.
    # shellcheck disable=SC2028
    echo "  server { listen $BACKEND; location / { return 200 \"strait bench backend: a fixed body of exactly one hundred bytes, keep-alive on, no access log......\n\"; }"
    echo "           location = /16k { root $WORK/backend/www; } } }"
} >"$WORK/backend/nginx.conf"
taskset -c "$LOAD_CORE" nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)

{
    common_nginx "$WORK/nginx"
    echo "http { access_log off; keepalive_requests 1000000; $(temp_paths "$WORK/nginx")"
    echo "  upstream backend { server $BACKEND; keepalive 64; }"
    echo "  server { listen $NGINX_ADDR ssl; ssl_certificate $WORK/leaf.crt; ssl_certificate_key $WORK/leaf.key;"
    echo "           ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache shared:SSL:10m;"
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
    address: $STRAIT
    tls:
      certificates: [{cert_file: $WORK/leaf.crt, key_file: $WORK/leaf.key}]
access_log: {enabled: false}
services: [{name: bench, path_prefix: /, upstream: backend}]
upstreams: [{name: backend, nodes: [{address: $BACKEND}], keepalive: {max_idle: 64}}]
EOF
taskset -c "$PROXY_CORE" "$STRAIT_BIN" run --config "$WORK/strait.yaml" --workers 1 >"$WORK/strait.log" 2>&1 &
STRAIT_PID=$!
PIDS+=("$STRAIT_PID")

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    option http-keep-alive
frontend bench
    bind $HAPROXY ssl crt $WORK/haproxy.pem
    default_backend backend
backend backend
    http-reuse always
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    server s1 $BACKEND
EOF
taskset -c "$PROXY_CORE" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")

declare -A ADDR=([strait]=$STRAIT [nginx]=$NGINX_ADDR [haproxy]=$HAPROXY)
declare -A PID=([strait]=$STRAIT_PID [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID)
ready() {
    local deadline=$((SECONDS + 15))
    until curl -sf --cacert "$WORK/ca.pem" --resolve "bench.test:${1##*:}:${1%:*}" "https://bench.test:${1##*:}/" -o /dev/null; do
        ((SECONDS < deadline)) || die "$1 does not answer over HTTPS; logs: $(tail -n 5 "$WORK"/*.log 2>/dev/null)"
        sleep 0.2
    done
}
for c in strait nginx haproxy; do ready "${ADDR[$c]}"; done

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
# measure ROUND KIND CONTENDER URL [wrk args...]
measure() {
    local round=$1 kind=$2 c=$3 url=$4
    shift 4
    local before after out req
    taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d1s "$@" "$url" >/dev/null
    before=$(ticks "${PID[$c]}")
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$@" "$url")
    after=$(ticks "${PID[$c]}")
    req=$(awk '/ requests in /{print $1}' <<<"$out")
    local rps
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    awk -v r="$round" -v k="$kind" -v c="$c" -v t=$((after - before)) -v n="$req" -v hz="$HZ" -v rps="$rps" \
        'BEGIN {printf "%s %s %s %.2f %s\n", r, k, c, t * 1e6 / hz / n, rps}' >>"$ROWS"
    tail -n1 "$ROWS" >&2
}

for r in $(seq 1 "$ROUNDS"); do
    for c in strait nginx haproxy; do
        a=${ADDR[$c]}
        measure "$r" keepalive-100 "$c" "https://$a/"
        measure "$r" keepalive-16k "$c" "https://$a/16k"
        measure "$r" handshake "$c" "https://$a/" -H "Connection: close"
    done
done

echo
echo "TLS termination, $ROUNDS rounds of wrk -t1 -c$CONNECTIONS -d$DURATION, ECDSA P-256, $(nginx -v 2>&1 | sed 's/.*\///'), $(haproxy -v | head -n1 | awk '{print $3}'), $(uname -r)"
echo "CPU us per request (per new connection for handshake): median; ratio to nginx: median of per-round ratios"
python3 - "$ROWS" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
kinds = ["keepalive-100", "keepalive-16k", "handshake"]
print(f"{'kind':15} {'proxy':8} {'cpu_us':>8} {'req/s':>10} {'cpu/nginx':>10} {'req/s/nginx':>12}")
for k in kinds:
    for c in ["strait", "nginx", "haproxy"]:
        mine = {r[0]: r for r in rows if r[1] == k and r[2] == c}
        ref = {r[0]: r for r in rows if r[1] == k and r[2] == "nginx"}
        cpu = statistics.median(float(r[3]) for r in mine.values())
        rps = statistics.median(float(r[4]) for r in mine.values())
        ratio = statistics.median(float(mine[x][3]) / float(ref[x][3]) for x in mine)
        rr = statistics.median(float(mine[x][4]) / float(ref[x][4]) for x in mine)
        print(f"{k:15} {c:8} {cpu:8.2f} {rps:10.0f} {ratio:10.3f} {rr:12.3f}")
EOF

# Memory per idle TLS connection: RSS before and after IDLE_CONNS open, handshaken,
# idle connections (a python client holds them).
rss() {
    local t=0 p
    for p in $(pids_of "$1"); do t=$((t + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status"))); done
    echo "$t"
}
echo
echo "memory per idle TLS connection ($IDLE_CONNS connections, after one request each)"
for c in strait nginx haproxy; do
    a=${ADDR[$c]}
    before=$(rss "${PID[$c]}")
    python3 - "$a" "$IDLE_CONNS" "$WORK/ca.pem" >"$WORK/idle.out" 2>&1 <<'EOF' &
import socket, ssl, sys, time
host, port = sys.argv[1].rsplit(":", 1)
ctx = ssl.create_default_context(cafile=sys.argv[3])
held = []
for _ in range(int(sys.argv[2])):
    s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname="bench.test")
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    s.recv(4096)
    held.append(s)
print("ready", flush=True)
time.sleep(30)
EOF
    holder=$!
    deadline=$((SECONDS + 60))
    until grep -q ready "$WORK/idle.out" 2>/dev/null; do
        ((SECONDS < deadline)) || die "idle connections to $c: $(cat "$WORK/idle.out")"
        sleep 0.5
    done
    after=$(rss "${PID[$c]}")
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    awk -v c="$c" -v b="$before" -v a="$after" -v n="$IDLE_CONNS" 'BEGIN {printf "%-8s %7.1f KiB per connection (RSS %d -> %d KiB)\n", c, (a - b) / n, b, a}'
    sleep 1
done
