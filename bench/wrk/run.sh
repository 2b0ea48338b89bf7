#!/usr/bin/env bash
# strait against other reverse proxies: same backend, same core, alternating runs.
#
# One backend (nginx, keep-alive, pinned to the load core) serves two payloads: `GET /`
# answers `return 200` with a 100-byte body, `GET /16k` a static file of 16384 bytes. In
# front of it the contenders, each started once, each on its own 127.0.0.x address, all
# pinned to the proxy core (`taskset -c PROXY_CORE`); wrk pinned to the load core.
#
# Contenders (PROXIES; measured in this order within each round):
#   strait         `strait run --workers 1`, `driver: STRAIT_DRIVER` (auto = io_uring here)
#   strait-legacy  the same config with `driver: legacy` (epoll), on its own address
#   strait-lr      the strait config with `balance: least_request` (its pick and in-flight
#                  bookkeeping against round-robin's), on its own address
#   strait-filters the strait config with a route carrying 3 filters (a request header set,
#                  a response header set and one removed, a prefix rewrite), on its own address
#   strait-noid    the strait config with `http.request_id: {enabled: false}` (the request
#                  id every other strait contender generates, sends and returns)
#   nginx          worker_processes 1, upstream keepalive; the reference of the ratios
#   haproxy        HAProxy (Debian's 2.6), nbthread 1, `haproxy -db` (one process, in the
#                  foreground), http-reuse always
#   floor          target/release/floor (bench/src/bin/floor.rs): reads each request head,
#                  forwards it unchanged over a pooled keep-alive upstream connection, relays
#                  the response; strait's runtime on driver STRAIT_DRIVER, nothing else: the
#                  least a proxy on that runtime can cost
# All keep connections to the backend alive; strait, nginx and haproxy also do the same
# header work (Host kept, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host set).
#
# MODE=wrk (default): for each round, for each payload, for each contender: a warm-up wrk
#   run, then `wrk --latency`, and the proxy's CPU time over the measured run (utime+stime
#   from /proc/PID/stat, all threads; nginx: master + worker) divided by the requests wrk
#   completed. Per payload it reports every run, the medians per contender (req/s, p50,
#   p99, CPU us/request and its user and system parts), the ratios contender/nginx taken
#   within each round with their median, and CPU/request over the floor's when the floor
#   ran. nginx must be in PROXIES in this mode.
# MODE=ops: for each payload and contender, one short wrk run under `perf trace -s` (system
#   calls and their errors per request, all threads of the proxy; nginx: master + worker)
#   and one under `perf record` of io_uring tracepoints (ring operations per request, by
#   opcode for submit_req and poll_arm).
# MODE=callgrind: user-space instructions per request, strait and nginx only (see below).
#
# Usage: bench/wrk/run.sh            (as root, or with sudo available for apt-get)
# Env:   MODE=wrk | ops | callgrind
#        PROXIES="strait strait-legacy nginx haproxy floor"   (wrk and ops modes; or strait-lr)
#        PAYLOADS="100 16k"                                    (wrk and ops modes)
#        DURATION=10s CONNECTIONS=50 ROUNDS=5 WARMUP=2s THREADS=1   (wrk mode)
#        OPS_DURATION=5s OPS_CONNECTIONS=8 OPS_WARMUP=1s            (ops mode)
#        CG_REQUESTS=20000 CG_CONNECTIONS=8                         (callgrind mode)
#        CG_STRAIT=strait | strait-filters | strait-noid   (callgrind mode: which strait config)
#        PROXY_CORE=0 LOAD_CORE=1
#        STRAIT_DRIVER=auto | io_uring | legacy    (strait and floor; strait-legacy: legacy)
#        BACKEND=127.0.0.31:28080 STRAIT=127.0.0.32:28081 NGINX=127.0.0.33:28082
#        HAPROXY=127.0.0.34:28084 STRAIT_LEGACY=127.0.0.35:28085 FLOOR=127.0.0.36:28086
#        STRAIT_LR=127.0.0.37:28087 STRAIT_FILTERS=127.0.0.38:28088 STRAIT_NOID=127.0.0.39:28089
#        SKIP_BUILD=1              (no cargo build: use target/release/{strait,floor} as is)
# Output: stdout, and bench/results/<mode>-<timestamp>.txt (+ raw output, configs and logs
# in bench/results/<mode>-<timestamp>/).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-1}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
MODE=${MODE:-wrk}
PROXIES=${PROXIES:-strait strait-legacy nginx haproxy floor}
PAYLOADS=${PAYLOADS:-100 16k}
OPS_DURATION=${OPS_DURATION:-5s}
OPS_CONNECTIONS=${OPS_CONNECTIONS:-8}
OPS_WARMUP=${OPS_WARMUP:-1s}
CG_REQUESTS=${CG_REQUESTS:-20000}
CG_CONNECTIONS=${CG_CONNECTIONS:-8}
CG_STRAIT=${CG_STRAIT:-strait}
BACKEND=${BACKEND:-127.0.0.31:28080}
STRAIT=${STRAIT:-127.0.0.32:28081}
NGINX=${NGINX:-127.0.0.33:28082}
HAPROXY=${HAPROXY:-127.0.0.34:28084}
STRAIT_LEGACY=${STRAIT_LEGACY:-127.0.0.35:28085}
FLOOR=${FLOOR:-127.0.0.36:28086}
STRAIT_LR=${STRAIT_LR:-127.0.0.37:28087}
STRAIT_FILTERS=${STRAIT_FILTERS:-127.0.0.38:28088}
STRAIT_NOID=${STRAIT_NOID:-127.0.0.39:28089}
STRAIT_DRIVER=${STRAIT_DRIVER:-auto}
SKIP_BUILD=${SKIP_BUILD:-}

export PATH="$PATH:/usr/sbin:/sbin"
# nginx reads NGINX from its environment (inherited sockets, for binary upgrades).
export -n NGINX
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=$ROOT/bench/results
STAMP=$(date +%Y%m%d-%H%M%S)

# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for a in "$BACKEND" "$STRAIT" "$NGINX" "$HAPROXY" "$STRAIT_LEGACY" "$FLOOR" "$STRAIT_LR" "$STRAIT_FILTERS" "$STRAIT_NOID"; do
    [[ $a =~ ^127\.0\.0\.[0-9]{1,3}:[0-9]+$ ]] || die "address $a is not 127.0.0.x:port (requests stay on loopback)"
done
[[ $(printf '%s\n' "$BACKEND" "$STRAIT" "$NGINX" "$HAPROXY" "$STRAIT_LEGACY" "$FLOOR" "$STRAIT_LR" "$STRAIT_FILTERS" "$STRAIT_NOID" | sort -u | wc -l) == 9 ]] ||
    die "BACKEND, STRAIT, NGINX, HAPROXY, STRAIT_LEGACY, FLOOR, STRAIT_LR, STRAIT_FILTERS and STRAIT_NOID must be nine different addresses"
[[ $MODE == wrk || $MODE == callgrind || $MODE == ops ]] || die "MODE must be wrk, callgrind or ops, not $MODE"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $STRAIT_DRIVER == auto || $STRAIT_DRIVER == io_uring || $STRAIT_DRIVER == legacy ]] ||
    die "STRAIT_DRIVER must be auto, io_uring or legacy, not $STRAIT_DRIVER"

read -r -a CONTENDERS <<<"$PROXIES"
read -r -a PAYLOAD_LIST <<<"$PAYLOADS"
((${#CONTENDERS[@]})) || die "PROXIES is empty"
((${#PAYLOAD_LIST[@]})) || die "PAYLOADS is empty"
declare -A SEEN=()
for c in "${CONTENDERS[@]}"; do
    case $c in
    strait | strait-legacy | strait-lr | strait-filters | strait-noid | nginx | haproxy | floor) ;;
    *) die "unknown contender '$c' in PROXIES (known: strait strait-legacy strait-lr strait-filters strait-noid nginx haproxy floor)" ;;
    esac
    [[ -z ${SEEN[$c]:-} ]] || die "contender $c twice in PROXIES"
    SEEN[$c]=1
done
for p in "${PAYLOAD_LIST[@]}"; do
    [[ $p == 100 || $p == 16k ]] || die "unknown payload '$p' in PAYLOADS (known: 100 16k)"
done
if [[ $MODE == wrk && -z ${SEEN[nginx]:-} ]]; then
    die "PROXIES must include nginx in wrk mode: the ratios are to nginx"
fi

# Whether $1 is one of this run's contenders.
in_proxies() { [[ -n ${SEEN[$1]:-} ]]; }

# The path and the body size of each payload.
payload_path() {
    case $1 in
    100) echo / ;;
    16k) echo /16k ;;
    esac
}
payload_bytes() {
    case $1 in
    100) echo 100 ;;
    16k) echo 16384 ;;
    esac
}

# --- packages -------------------------------------------------------------------------

ensure_packages wrk:wrk nginx:nginx taskset:util-linux haproxy:haproxy curl:curl
if [[ $MODE == callgrind ]]; then
    ensure_packages valgrind:valgrind
fi
if [[ $MODE == ops ]]; then
    ensure_packages perf:linux-perf
fi

# --- build ----------------------------------------------------------------------------

STRAIT_BIN=$TARGET_DIR/release/strait
FIXED_LOAD=$TARGET_DIR/release/fixed-load
FLOOR_BIN=$TARGET_DIR/release/floor
if [[ -z $SKIP_BUILD ]]; then
    (cd "$ROOT" && cargo build --release -p strait)
    if [[ $MODE != callgrind ]] && in_proxies floor; then
        (cd "$ROOT" && cargo build --release -p strait-bench --bin floor)
    fi
    if [[ $MODE == callgrind ]]; then
        (cd "$ROOT" && cargo build --release -p strait-bench --bin fixed-load)
    fi
fi
[[ -x $STRAIT_BIN ]] || die "missing $STRAIT_BIN"
if [[ $MODE != callgrind ]] && in_proxies floor; then
    [[ -x $FLOOR_BIN ]] || die "missing $FLOOR_BIN"
fi

# --- processes and clean-up -----------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strait-bench.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# Waits until `ip:port` answers `GET /` with a 2xx; $2 = seconds. The request is keep-alive
# (no `Connection: close`, which the proxies would forward: the floor would then pool an
# upstream connection the backend closes); only the status line is read.
wait_ready() {
    local ip=${1%:*} port=${1##*:} deadline=$((SECONDS + ${2:-10})) line
    while ((SECONDS < deadline)); do
        if { exec 3<>"/dev/tcp/$ip/$port"; } 2>/dev/null; then
            printf 'GET / HTTP/1.1\r\nHost: bench\r\n\r\n' >&3
            line=
            IFS= read -r -t "${2:-10}" line <&3 || true
            exec 3<&- 3>&-
            line=${line%$'\r'}
            if [[ $line == HTTP/1.?\ 2* ]]; then
                return 0
            fi
            echo "run.sh: $1 answered: ${line:-nothing}" >&2
        fi
        sleep 0.2
    done
    die "$1 did not answer 2xx within ${2:-10}s"
}

# Dies when something already listens on `ip:port`: wait_ready would take its answers for
# those of the process about to start there.
check_free() {
    if { exec 3<>"/dev/tcp/${1%:*}/${1##*:}"; } 2>/dev/null; then
        exec 3<&- 3>&-
        die "$1 is already in use (another bench still running?); choose other addresses"
    fi
}

# The nginx directives every instance shares: own prefix, temp paths and pid file.
nginx_common() {
    local dir=$1
    cat <<EOF
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
EOF
}

# $2 = client-side keep-alive timeout.
nginx_http_common() {
    local dir=$1
    cat <<EOF
    access_log off;
    default_type text/plain;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_timeout ${2:-75s};
    keepalive_requests 1000000;
EOF
}

# 99 characters: with the newline nginx adds, a body of exactly 100 bytes.
BODY='strait bench backend: a fixed body of exactly one hundred bytes, keep-alive on, no access log......'

# The backend keeps idle connections for an hour: the floor's pool has no idle timeout,
# and in wrk mode a contender idles for the other contenders' runs (minutes), longer than
# nginx's usual 75s. strait and nginx close their idle upstream connections after 30s.
start_backend() {
    local dir=$WORK/backend got
    check_free "$BACKEND"
    mkdir -p "$dir/www"
    head -c 16384 /dev/zero | tr '\0' 'x' >"$dir/www/16k"
    # nginx's worker runs as nobody (the master is root): it must reach the file.
    chmod 755 "$WORK" "$dir" "$dir/www"
    chmod 644 "$dir/www/16k"
    {
        echo "worker_processes 1;"
        echo "daemon off;"
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir" 3600s
        echo "    server {"
        echo "        listen $BACKEND;"
        # The \n is nginx's: it ends the body with a newline.
        # shellcheck disable=SC2028
        echo "        location / { return 200 \"$BODY\n\"; }"
        echo "        location = /16k { root $dir/www; open_file_cache max=16 inactive=1h; }"
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
    taskset -c "$LOAD_CORE" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
    PIDS+=($!)
    wait_ready "$BACKEND"
    got=$(curl -s --noproxy '*' "http://$BACKEND/16k" | wc -c)
    [[ $got == 16384 ]] || die "backend: GET /16k gave $got bytes, not 16384"
}

# $1 = extra top-level directives (callgrind mode runs nginx as a single process).
write_nginx_proxy_conf() {
    local dir=$WORK/nginx-proxy
    mkdir -p "$dir"
    {
        echo "worker_processes 1;"
        echo "daemon off;"
        echo "${1:-}"
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    upstream backend {
        server $BACKEND;
        keepalive 64;
        keepalive_requests 1000;
        keepalive_timeout 30s;
    }
    server {
        listen $NGINX;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same header work strait does: Host preserved, X-Forwarded-* set.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    echo "$dir"
}

# $1 = name of the config ($WORK/$1.yaml), $2 = listen address, $3 = driver, $4 = balance.
write_strait_conf() {
    local name=${1:-strait} addr=${2:-$STRAIT} driver=${3:-$STRAIT_DRIVER} balance=${4:-round_robin}
    local routes="" request_id=""
    if [[ $name == strait-filters ]]; then
        routes="    routes:
      - name: filtered
        path: /
        request_headers: {set: {X-Env: bench}}
        response_headers: {set: {X-Frame-Options: DENY}, remove: [X-Debug]}
        rewrite: {prefix: /}"
    fi
    if [[ $name == strait-noid ]]; then
        request_id="http: {request_id: {enabled: false}}"
    fi
    cat >"$WORK/$name.yaml" <<EOF
workers: 1
driver: $driver
admin: {listen: "127.0.0.1:0"}
listeners:
  - name: http
    address: $addr
access_log:
  enabled: false
$request_id
services:
  - name: bench
    path_prefix: /
    upstream: backend
$routes
upstreams:
  - name: backend
    balance: $balance
    nodes:
      - address: $BACKEND
    keepalive:
      max_idle: 64
      idle_timeout: 30s
      max_requests: 1000
EOF
    "$STRAIT_BIN" check "$WORK/$name.yaml" >/dev/null
    echo "$WORK/$name.yaml"
}

# maxconn 20000, unless the hard limit on open files is below the 2 * maxconn + a few that
# HAProxy then needs (it cannot raise that limit, and refuses to start).
write_haproxy_conf() {
    local maxconn=20000 hard
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard / 2 - 64 < maxconn)); then
        maxconn=$((hard / 2 - 64))
    fi
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn
    # No log directive: nothing is logged.

defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
    option http-keep-alive

frontend bench
    bind $HAPROXY
    default_backend backend

backend backend
    # Keep-alive to the backend, idle connections shared between clients.
    http-reuse always
    # The same header work strait does: Host preserved (HAProxy leaves it), X-Forwarded-* set.
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    server s1 $BACKEND
EOF
    haproxy -c -q -f "$WORK/haproxy.cfg" >&2 || die "haproxy rejects $WORK/haproxy.cfg"
    echo "$WORK/haproxy.cfg"
}

# The PID and its children (nginx: master + worker).
family() {
    echo "$1"
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
}

# "utime stime" in clock ticks, summed over the given PIDs (all threads included).
cpu_ticks() {
    local u=0 s=0 pid t
    for pid in "$@"; do
        read -r -a t <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
        # After the comm field the list starts at field 3 (state): utime is 14, stime 15.
        u=$((u + t[11]))
        s=$((s + t[12]))
    done
    echo "$u $s"
}

# wrk's latency string (e.g. 812.00us, 1.23ms, 2.01s) → microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.1f", n * m
    }'
}

# "requests errors" from a wrk output file (errors: non-2xx plus socket errors).
wrk_counts() {
    awk '/ requests in / {n = $1}
         /Non-2xx or 3xx responses:/ {e += $NF}
         /Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10}
         END {print n + 0, e + 0}' "$1"
}

machine_header() {
    echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- proxy discovery 2>/dev/null || echo ' (+ uncommitted changes in proxy/ or discovery/)')"
    echo "cpu:      $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
    echo "kernel:   $(uname -r)"
    echo "nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    if command -v haproxy >/dev/null; then
        echo "haproxy:  $(haproxy -v 2>/dev/null | head -n1)"
    fi
    echo "wrk:      $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
    echo "loadavg:  $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
}

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$MODE-$STAMP.txt
RAW=$RESULTS_DIR/$MODE-$STAMP
mkdir -p "$RAW"
CLK_TCK=$(getconf CLK_TCK)

# --- contenders (wrk and ops modes) -----------------------------------------------------

declare -A C_ADDR=([strait]=$STRAIT [strait-legacy]=$STRAIT_LEGACY [nginx]=$NGINX
    [haproxy]=$HAPROXY [floor]=$FLOOR [strait-lr]=$STRAIT_LR [strait-filters]=$STRAIT_FILTERS
    [strait-noid]=$STRAIT_NOID)
declare -A C_PID=() C_LOG=()

alive() {
    kill -0 "$1" 2>/dev/null || die "$2 (pid $1) exited; its log: $(tail -n 20 "$3" 2>/dev/null)"
}

# Starts contender $1 pinned to the proxy core, waits until it answers, and checks that
# every payload comes through it whole.
start_contender() {
    local name=$1 conf dir p code size
    check_free "${C_ADDR[$name]}"
    case $name in
    strait | strait-legacy | strait-lr | strait-filters | strait-noid)
        case $name in
        strait) conf=$(write_strait_conf strait "$STRAIT" "$STRAIT_DRIVER") ;;
        strait-legacy) conf=$(write_strait_conf strait-legacy "$STRAIT_LEGACY" legacy) ;;
        strait-lr) conf=$(write_strait_conf strait-lr "$STRAIT_LR" "$STRAIT_DRIVER" least_request) ;;
        strait-filters) conf=$(write_strait_conf strait-filters "$STRAIT_FILTERS" "$STRAIT_DRIVER") ;;
        strait-noid) conf=$(write_strait_conf strait-noid "$STRAIT_NOID" "$STRAIT_DRIVER") ;;
        esac
        C_LOG[$name]=$WORK/$name.log
        taskset -c "$PROXY_CORE" "$STRAIT_BIN" run --config "$conf" --workers 1 >"${C_LOG[$name]}" 2>&1 &
        ;;
    nginx)
        dir=$(write_nginx_proxy_conf)
        C_LOG[$name]=$dir/error.log
        taskset -c "$PROXY_CORE" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
        ;;
    haproxy)
        conf=$(write_haproxy_conf)
        C_LOG[$name]=$WORK/haproxy.log
        # -db: foreground, no master process: the PID started is the one that serves.
        taskset -c "$PROXY_CORE" haproxy -db -f "$conf" >"${C_LOG[$name]}" 2>&1 &
        ;;
    floor)
        C_LOG[$name]=$WORK/floor.log
        taskset -c "$PROXY_CORE" "$FLOOR_BIN" "$FLOOR" "$BACKEND" "$STRAIT_DRIVER" >"${C_LOG[$name]}" 2>&1 &
        ;;
    esac
    C_PID[$name]=$!
    PIDS+=("${C_PID[$name]}")
    wait_ready "${C_ADDR[$name]}"
    for p in "${PAYLOAD_LIST[@]}"; do
        read -r code size <<<"$(curl -s --noproxy '*' -o /dev/null -w '%{http_code} %{size_download}' \
            "http://${C_ADDR[$name]}$(payload_path "$p")" || true)"
        [[ $code == 200 && $size == "$(payload_bytes "$p")" ]] ||
            die "$name: GET $(payload_path "$p") gave status ${code:-none}, ${size:-0} bytes (want 200, $(payload_bytes "$p"))"
    done
}

start_contenders() {
    local name
    for name in "${CONTENDERS[@]}"; do
        start_contender "$name"
    done
}

# The PIDs whose CPU time and system calls count for contender $1.
measured_pids() {
    if [[ $1 == nginx ]]; then
        family "${C_PID[nginx]}"
    else
        echo "${C_PID[$1]}"
    fi
}

# The configs and logs of the contenders, next to the results.
keep_configs() {
    local name
    cp "$WORK/backend/nginx.conf" "$RAW/nginx-backend.conf"
    for name in "${CONTENDERS[@]}"; do
        cp "${C_LOG[$name]}" "$RAW/$name.log"
        case $name in
        strait | strait-legacy | strait-lr | strait-filters | strait-noid) cp "$WORK/$name.yaml" "$RAW/$name.yaml" ;;
        nginx) cp "$WORK/nginx-proxy/nginx.conf" "$RAW/nginx-proxy.conf" ;;
        haproxy) cp "$WORK/haproxy.cfg" "$RAW/haproxy.cfg" ;;
        esac
    done
}

# One line per strait-runtime contender: the driver its log reports.
driver_lines() {
    local name
    for name in strait strait-legacy strait-lr strait-filters strait-noid floor; do
        in_proxies "$name" || continue
        printf '%-14s %s\n' "$name:" "$(sed 's/\x1b\[[0-9;]*m//g' "${C_LOG[$name]}" | grep -o 'driver=[A-Za-z_]*' | sort -u | tr '\n' ' ')"
    done
    echo "               (config driver of strait and floor: $STRAIT_DRIVER)"
}

contenders_line() {
    echo "proxies:  ${CONTENDERS[*]}; all taskset -c $PROXY_CORE: strait --workers 1, nginx worker_processes 1, haproxy nbthread 1 (-db), floor one thread"
}

# --- wrk mode ---------------------------------------------------------------------------

median() {
    sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Runs wrk against $4 (payload $2, contender $3) and measures PIDs $5...; appends a row to
# $WORK/rows. Row: round payload proxy rps p50_us p99_us cpu_us_per_req proxy_cpu_pct
# requests errors usr_us sys_us
measure() {
    local round=$1 payload=$2 name=$3 addr=$4
    shift 4
    local url raw before after du ds requests rps p50 p99 secs errors cpu_us pct
    url=http://$addr$(payload_path "$payload")
    raw=$RAW/$name-$payload-round$round.txt
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
    before=$(cpu_ticks "$@")
    echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$raw"
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >>"$raw"
    after=$(cpu_ticks "$@")
    read -r requests errors <<<"$(wrk_counts "$raw")"
    ((requests > 0)) || die "$name: no requests completed; see $raw"
    secs=$(awk '/ requests in / {sub(/s,$/, "", $4); print $4 + 0}' "$raw")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$raw")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$raw")")
    read -r du ds <<<"$(awk -v a="$after" -v b="$before" 'BEGIN {split(a, x, " "); split(b, y, " "); print x[1] - y[1], x[2] - y[2]}')"
    per_req() { awk -v d="$1" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}'; }
    cpu_us=$(per_req $((du + ds)))
    pct=$(awk -v d=$((du + ds)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN {printf "%.0f", d / hz / s * 100}')
    echo "$round $payload $name $rps $p50 $p99 $cpu_us $pct $requests $errors $(per_req "$du") $(per_req "$ds")" >>"$WORK/rows"
    if ((errors > 0)); then
        echo "run.sh: $name $payload round $round: $errors errors (non-2xx or socket); see $raw" >&2
    fi
    if ((pct < 10)); then
        echo "run.sh: $name $payload round $round: the measured PIDs ($*) used only $pct% of a core: not the serving process?" >&2
    fi
    printf '  %-13s %-4s round %d: %10s req/s  p50 %8s us  p99 %8s us  cpu %6s us/req  (%s%% of a core)  errors %s\n' \
        "$name" "$payload" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$pct" "$errors" >&2
}

# Per-round ratios contender $2 / contender $3 for payload $1:
# "round cpu/req req/s p50 p99 usr/req sys/req".
ratio_rows() {
    awk -v p="$1" -v n="$2" -v b="$3" '
        function q(x, y) { return y > 0 ? sprintf("%.3f", x / y) : "nan" }
        $2 == p && $3 == n {a[$1] = $0}
        $2 == p && $3 == b {c[$1] = $0}
        END {
            for (r = 1; r in a; r++) {
                if (!(r in c)) continue
                split(a[r], x, " "); split(c[r], y, " ")
                print r, q(x[7], y[7]), q(x[4], y[4]), q(x[5], y[5]), q(x[6], y[6]), q(x[11], y[11]), q(x[12], y[12])
            }
        }' "$WORK/rows"
}

wrk_report() {
    local payload name col others=() i
    echo "reverse proxies: ${CONTENDERS[*]} (wrk mode)"
    machine_header
    echo "load:     taskset -c $LOAD_CORE wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), backend nginx on core $LOAD_CORE"
    contenders_line
    driver_lines
    echo "CLK_TCK:  $CLK_TCK"
    for name in "${CONTENDERS[@]}"; do
        [[ $name == floor ]] || others+=("$name")
    done
    for payload in "${PAYLOAD_LIST[@]}"; do
        echo
        echo "=== payload $payload: GET $(payload_path "$payload"), $(payload_bytes "$payload")-byte body ==="
        echo
        printf '%-5s %-7s %-13s %12s %10s %10s %12s %8s %8s %8s %10s %7s\n' \
            round payload proxy req/s p50_us p99_us cpu_us/req usr_us sys_us cpu_% requests errors
        awk -v p="$payload" '$2 == p' "$WORK/rows" |
            while read -r round pl name rps p50 p99 cpu pct req err usr sys; do
                printf '%-5s %-7s %-13s %12s %10s %10s %12s %8s %8s %8s %10s %7s\n' \
                    "$round" "$pl" "$name" "$rps" "$p50" "$p99" "$cpu" "$usr" "$sys" "$pct" "$req" "$err"
            done
        echo
        echo "medians over $ROUNDS rounds"
        printf '%-13s %12s %10s %10s %12s %8s %8s\n' proxy req/s p50_us p99_us cpu_us/req usr_us sys_us
        for name in "${CONTENDERS[@]}"; do
            printf '%-13s' "$name"
            for col in 4 5 6 7 11 12; do
                printf ' %*s' $((col == 4 || col == 7 ? 12 : col >= 11 ? 8 : 10)) \
                    "$(awk -v p="$payload" -v n="$name" -v c="$col" '$2 == p && $3 == n {print $c}' "$WORK/rows" | median)"
            done
            echo
        done
        echo
        echo "ratios to nginx (contender/nginx), each from the same round, then their median"
        echo "(target for strait: cpu <= 0.60, req/s >= 1.00, p99 <= 1.00)"
        printf '%-13s %-7s %9s %9s %9s %9s %9s %9s\n' proxy round cpu/req req/s p50 p99 usr/req sys/req
        for name in "${CONTENDERS[@]}"; do
            [[ $name != nginx ]] || continue
            ratio_rows "$payload" "$name" nginx >"$WORK/ratios"
            while read -r -a f; do
                printf '%-13s %-7s %9s %9s %9s %9s %9s %9s\n' "$name" "${f[@]}"
            done <"$WORK/ratios"
            printf '%-13s %-7s' "$name" median
            for col in 2 3 4 5 6 7; do
                printf ' %9s' "$(awk -v c="$col" '{print $c}' "$WORK/ratios" | median)"
            done
            echo
        done
        if in_proxies floor; then
            echo
            echo "CPU per request over the floor's (contender/floor), each from the same round, then their median"
            printf '%-7s' round
            printf ' %13s' "${others[@]}"
            echo
            : >"$WORK/floor-ratios"
            for ((r = 1; r <= ROUNDS; r++)); do
                printf '%-7s' "$r"
                for name in "${others[@]}"; do
                    printf ' %13s' "$(ratio_rows "$payload" "$name" floor | awk -v r="$r" '$1 == r {print $2}')"
                done
                echo
            done | tee "$WORK/floor-ratios"
            printf '%-7s' median
            for ((i = 2; i <= ${#others[@]} + 1; i++)); do
                printf ' %13s' "$(awk -v c="$i" '{print $c}' "$WORK/floor-ratios" | median)"
            done
            echo
        fi
    done
    echo
    echo "raw wrk output, configs and logs: $RAW/"
}

run_wrk_mode() {
    local r payload name pids
    start_backend
    start_contenders
    : >"$WORK/rows"
    echo "running $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP)" \
        "over payloads ${PAYLOAD_LIST[*]} and contenders ${CONTENDERS[*]} ..." >&2
    for ((r = 1; r <= ROUNDS; r++)); do
        for payload in "${PAYLOAD_LIST[@]}"; do
            for name in "${CONTENDERS[@]}"; do
                alive "${C_PID[$name]}" "$name" "${C_LOG[$name]}"
                mapfile -t pids < <(measured_pids "$name")
                measure "$r" "$payload" "$name" "${C_ADDR[$name]}" "${pids[@]}"
            done
        done
    done
    for name in "${CONTENDERS[@]}"; do
        alive "${C_PID[$name]}" "$name" "${C_LOG[$name]}"
    done
    keep_configs
    wrk_report | tee "$OUT"
}

# --- ops mode ---------------------------------------------------------------------------
# Per request: system calls (perf trace -s, with errno counts) and io_uring operations
# (perf record of io_uring tracepoints), each from its own wrk run of OPS_DURATION. Both
# count what happens in the proxy's threads only (perf -p): all threads of the process;
# nginx: master + worker.

RING_EVENTS=io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run,io_uring:io_uring_complete

# Appends to $WORK/ops, tab-separated: payload proxy kind key requests count errors, where
# kind is sys or ring, and errors (sys) is "EAGAIN=12 ECONNRESET=1" or "-". Each
# (payload, proxy, kind) also gets a row with key @requests.
ops_measure() {
    local payload=$1 name=$2 url base list tids requests errors pids
    url=http://${C_ADDR[$name]}$(payload_path "$payload")
    base=$RAW/ops-$name-$payload
    alive "${C_PID[$name]}" "$name" "${C_LOG[$name]}"
    mapfile -t pids < <(measured_pids "$name")
    list=$(IFS=,; echo "${pids[*]}")
    tids=$(for p in "${pids[@]}"; do ls "/proc/$p/task"; done | paste -sd,)
    taskset -c "$LOAD_CORE" wrk -t1 -c"$OPS_CONNECTIONS" -d"$OPS_WARMUP" "$url" >/dev/null

    # System calls.
    perf trace -s --errno-summary -p "$list" -- \
        taskset -c "$LOAD_CORE" wrk -t1 -c"$OPS_CONNECTIONS" -d"$OPS_DURATION" "$url" \
        >"$base-trace-wrk.txt" 2>"$base-trace.txt"
    read -r requests errors <<<"$(wrk_counts "$base-trace-wrk.txt")"
    ((requests > 0)) || die "$name $payload: no requests under perf trace; see $base-trace-wrk.txt"
    ((errors == 0)) || echo "run.sh: $name $payload: $errors wrk errors under perf trace" >&2
    if grep -qi 'lost' "$base-trace.txt"; then
        echo "run.sh: $name $payload: perf trace lost events, the counts are low; see $base-trace.txt" >&2
    fi
    printf '%s\t%s\tsys\t@requests\t%s\t0\t-\n' "$payload" "$name" "$requests" >>"$WORK/ops"
    # perf trace -s prints a table per thread, headed "comm (tid), N events, P%"; only the
    # threads of the measured PIDs count, summed by system call.
    awk -v tids="$tids" -v p="$payload" -v n="$name" -v req="$requests" '
        BEGIN { m = split(tids, t, ","); for (i = 1; i <= m; i++) want[t[i]] = 1 }
        /\([0-9]+\), [0-9]+ events/ {
            s = $0; sub(/\), [0-9]+ events.*/, "", s); sub(/.*\(/, "", s)
            on = (s in want); cur = ""; next
        }
        !on { next }
        /^[ \t]*[A-Z][A-Z0-9_]*: [0-9]+[ \t]*$/ {
            if (cur != "") { e = $1; sub(/:$/, "", e); en[cur, e] += $2 }
            next
        }
        NF >= 7 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { cur = $1; calls[cur] += $2; errs[cur] += $3; next }
        END {
            for (k in en) { split(k, kk, SUBSEP); spec[kk[1]] = spec[kk[1]] (spec[kk[1]] == "" ? "" : " ") kk[2] "=" en[k] }
            for (s in calls) {
                sp = spec[s]
                if (sp == "" && errs[s] > 0) sp = "errors=" errs[s]
                if (sp == "") sp = "-"
                printf "%s\t%s\tsys\t%s\t%s\t%d\t%s\n", p, n, s, req, calls[s], sp
            }
        }' "$base-trace.txt" >>"$WORK/ops"

    # io_uring operations.
    perf record -q -o "$WORK/ring.data" -e "$RING_EVENTS" -p "$list" -- \
        taskset -c "$LOAD_CORE" wrk -t1 -c"$OPS_CONNECTIONS" -d"$OPS_DURATION" "$url" \
        >"$base-ring-wrk.txt" 2>"$base-ring-perf.txt"
    read -r requests errors <<<"$(wrk_counts "$base-ring-wrk.txt")"
    ((requests > 0)) || die "$name $payload: no requests under perf record; see $base-ring-wrk.txt"
    ((errors == 0)) || echo "run.sh: $name $payload: $errors wrk errors under perf record" >&2
    printf '%s\t%s\tring\t@requests\t%s\t0\t-\n' "$payload" "$name" "$requests" >>"$WORK/ops"
    perf script -i "$WORK/ring.data" 2>/dev/null | awk -v p="$payload" -v n="$name" -v req="$requests" '
        {
            ev = ""
            for (i = 1; i <= NF; i++) if ($i ~ /^io_uring:io_uring_/) { ev = $i; break }
            if (ev == "") next
            sub(/^io_uring:io_uring_/, "", ev); sub(/:$/, "", ev)
            key = ev
            if (ev == "submit_req" || ev == "poll_arm")
                for (j = i + 1; j < NF; j++) if ($j == "opcode") { op = $(j + 1); sub(/,$/, "", op); key = ev " " op; break }
            c[key]++
        }
        END { for (k in c) printf "%s\t%s\tring\t%s\t%s\t%d\t-\n", p, n, k, req, c[k] }' >>"$WORK/ops"
    rm -f "$WORK/ring.data"
    printf '  %-13s %-4s %9s requests traced, %9s recorded\n' "$name" "$payload" \
        "$(wrk_counts "$base-trace-wrk.txt" | cut -d' ' -f1)" "$requests" >&2
}

# Table of kind $2 (sys or ring) for payload $1, one column per contender $3...: the count
# per request, errors per request by errno in parentheses. Rows in which every contender
# is under 0.005 per request are left out (counted at the bottom).
ops_table() {
    local payload=$1 kind=$2
    shift 2
    awk -F'\t' -v p="$payload" -v k="$kind" -v cols="$*" '
        # "-" for none, "<0.01" for some.
        function f(v) { return v == 0 ? "-" : v < 0.005 ? "<0.01" : sprintf("%.2f", v) }
        BEGIN { nc = split(cols, c, " ") }
        $1 == p && $3 == k {
            if ($4 == "@requests") { req[$2] = $5; next }
            n[$4, $2] += $6; keys[$4] = 1; tot[$2] += $6
            if ($7 != "-") e[$4, $2] = $7
        }
        END {
            line = "1e18\t" (k == "sys" ? "system call" : "io_uring event")
            for (i = 1; i <= nc; i++) line = line "\t" c[i]
            print line
            line = "1e17\trequests"
            for (i = 1; i <= nc; i++) line = line "\t" req[c[i]]
            print line
            for (key in keys) {
                max = 0; line = ""
                for (i = 1; i <= nc; i++) {
                    r = req[c[i]]
                    v = r > 0 ? n[key, c[i]] / r : 0
                    if (v > max) max = v
                    cell = f(v)
                    if ((key, c[i]) in e) {
                        m = split(e[key, c[i]], es, " "); s = ""
                        for (j = 1; j <= m; j++) {
                            split(es[j], kv, "=")
                            s = s (j > 1 ? ", " : "") f(kv[2] / r) " " kv[1]
                        }
                        cell = cell " (" s ")"
                    }
                    line = line "\t" cell
                }
                if (max >= 0.005) printf "%.6f\t%s%s\n", max, key, line
                else omitted++
            }
            line = "-1\ttotal"
            for (i = 1; i <= nc; i++) line = line "\t" f(req[c[i]] > 0 ? tot[c[i]] / req[c[i]] : 0)
            print line
            if (omitted) print "-2\t(" omitted " rows under 0.005 per request for every contender left out)"
        }' "$WORK/ops" | sort -t "$(printf '\t')" -k1,1gr -k2,2 | cut -f2- | awk -F'\t' '
        { rows[NR] = $0; if (NF > 1) for (i = 1; i <= NF; i++) if (length($i) > w[i]) w[i] = length($i) }
        END {
            for (r = 1; r <= NR; r++) {
                nf = split(rows[r], f, "\t")
                line = sprintf("%-*s", w[1], f[1])
                for (i = 2; i <= nf; i++) line = line sprintf("  %*s", w[i], f[i])
                print line
            }
        }'
}

ops_report() {
    local payload name ring=() none=()
    echo "reverse proxies: ${CONTENDERS[*]} (ops mode: system calls and io_uring operations per request)"
    machine_header
    echo "perf:     $(perf version 2>/dev/null)"
    echo "load:     taskset -c $LOAD_CORE wrk -t1 -c$OPS_CONNECTIONS -d$OPS_DURATION (warm-up $OPS_WARMUP), backend nginx on core $LOAD_CORE"
    echo "counted:  perf trace -s --errno-summary -p PIDS (one run), perf record -e io_uring:* -p PIDS (another run);"
    echo "          all threads of the proxy (nginx: master + worker), only what runs in them"
    contenders_line
    driver_lines
    for payload in "${PAYLOAD_LIST[@]}"; do
        echo
        echo "=== payload $payload: GET $(payload_path "$payload"), $(payload_bytes "$payload")-byte body ==="
        echo
        echo "system calls per request (errors per request by errno in parentheses; - none, <0.01 some)"
        ops_table "$payload" sys "${CONTENDERS[@]}"
        ring=()
        none=()
        for name in "${CONTENDERS[@]}"; do
            if awk -F'\t' -v p="$payload" -v n="$name" '$1 == p && $2 == n && $3 == "ring" && $4 != "@requests" {s += $6} END {exit !(s > 0)}' "$WORK/ops"; then
                ring+=("$name")
            else
                none+=("$name")
            fi
        done
        echo
        echo "io_uring operations per request (submit_req and poll_arm by opcode)"
        if ((${#ring[@]})); then
            ops_table "$payload" ring "${ring[@]}"
        fi
        if ((${#none[@]})); then
            echo "no io_uring: ${none[*]}"
        fi
    done
    echo
    echo "raw perf and wrk output, configs and logs: $RAW/"
}

run_ops_mode() {
    local payload name
    start_backend
    start_contenders
    : >"$WORK/ops"
    echo "ops: wrk -t1 -c$OPS_CONNECTIONS -d$OPS_DURATION twice per payload and contender (perf trace, perf record) ..." >&2
    for payload in "${PAYLOAD_LIST[@]}"; do
        for name in "${CONTENDERS[@]}"; do
            ops_measure "$payload" "$name"
        done
    done
    keep_configs
    cp "$WORK/ops" "$RAW/ops.tsv"
    ops_report | tee "$OUT"
}

# --- callgrind mode ---------------------------------------------------------------------
# Instructions (user space only: callgrind does not see the kernel) per request. Each proxy
# runs twice under callgrind, once serving CG_REQUESTS/4 requests and once 5*CG_REQUESTS/4,
# over the same CG_CONNECTIONS connections; the difference of the two totals divided by
# CG_REQUESTS is the steady-state cost, with start-up, connection set-up and shutdown
# cancelled out. nginx runs with `master_process off` (one process) so callgrind sees the
# process that serves.

# $1 = name, $2 = addr, $3 = requests, then the command. Sets CG_IR to the total Ir.
CG_IR=
callgrind_run() {
    local name=$1 addr=$2 n=$3
    shift 3
    local out=$WORK/cg-$name-$n.out pid ir
    taskset -c "$PROXY_CORE" valgrind --tool=callgrind --callgrind-out-file="$out" "$@" \
        2>"$WORK/cg-$name-$n.log" &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$addr" 120
    taskset -c "$LOAD_CORE" "$FIXED_LOAD" "$addr" "$CG_CONNECTIONS" "$n" >"$WORK/cg-$name-$n.load" ||
        die "$name: fixed-load failed: $(cat "$WORK/cg-$name-$n.load")"
    stop "$pid"
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    [[ -n $ir ]] || die "$name: no callgrind totals in $out; log: $(tail -n 20 "$WORK/cg-$name-$n.log")"
    cp "$out" "$RAW/" 2>/dev/null || true
    CG_IR=$ir
}

run_callgrind_mode() {
    [[ -x $FIXED_LOAD ]] || die "missing $FIXED_LOAD"
    start_backend
    local sconf ndir small big s1 s2 n1 n2
    sconf=$(write_strait_conf "$CG_STRAIT" "$STRAIT")
    ndir=$(write_nginx_proxy_conf "master_process off;")
    small=$((CG_REQUESTS / 4))
    big=$((small + CG_REQUESTS))
    echo "callgrind: $small and $big requests over $CG_CONNECTIONS connections, each proxy ..." >&2
    # The first wait_ready request of each run is also counted; it cancels in the difference.
    callgrind_run strait "$STRAIT" "$small" "$STRAIT_BIN" run --config "$sconf" --workers 1
    s1=$CG_IR
    callgrind_run strait "$STRAIT" "$big" "$STRAIT_BIN" run --config "$sconf" --workers 1
    s2=$CG_IR
    callgrind_run nginx "$NGINX" "$small" nginx -p "$ndir" -c "$ndir/nginx.conf" -e "$ndir/error.log"
    n1=$CG_IR
    callgrind_run nginx "$NGINX" "$big" nginx -p "$ndir" -c "$ndir/nginx.conf" -e "$ndir/error.log"
    n2=$CG_IR
    sed 's/\x1b\[[0-9;]*m//g' "$WORK"/cg-strait-*.log | grep -o 'driver=[A-Za-z_]*' | sort -u >"$RAW/strait-driver.txt" || true
    {
        echo "strait vs nginx reverse proxy (callgrind mode: user-space instructions per request)"
        echo "strait config: $CG_STRAIT"
        machine_header
        echo "load:     fixed-load, $CG_CONNECTIONS keep-alive connections; runs of $small and $big requests"
        echo "strait driver under valgrind: $(tr '\n' ' ' 2>/dev/null <"$RAW/strait-driver.txt")"
        echo
        printf '%-6s %16s %16s %12s\n' proxy "Ir($small)" "Ir($big)" Ir/request
        awk -v a="$s1" -v b="$s2" -v n="$CG_REQUESTS" 'BEGIN {printf "%-6s %16d %16d %12.0f\n", "strait", a, b, (b - a) / n}'
        awk -v a="$n1" -v b="$n2" -v n="$CG_REQUESTS" 'BEGIN {printf "%-6s %16d %16d %12.0f\n", "nginx", a, b, (b - a) / n}'
        awk -v s1="$s1" -v s2="$s2" -v n1="$n1" -v n2="$n2" 'BEGIN {printf "ratio strait/nginx: %.3f\n", (s2 - s1) / (n2 - n1)}'
    } | tee "$OUT"
}

case $MODE in
wrk) run_wrk_mode ;;
ops) run_ops_mode ;;
callgrind) run_callgrind_mode ;;
esac
echo "results: $OUT" >&2
