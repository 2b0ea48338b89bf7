#!/usr/bin/env bash
# strait vs nginx as a reverse proxy, same backend, same core, alternating runs.
#
# One backend (nginx, `return 200` with a ~100-byte body, keep-alive) pinned to the load
# core; in front of it strait (`--workers 1`) and nginx (`worker_processes 1`, upstream
# keepalive) both pinned to the proxy core; wrk pinned to the load core. Runs alternate
# strait, nginx, strait, nginx... so slow drifts in machine load hit both alike. For each
# run: req/s, p50, p99 (wrk --latency) and the proxy's CPU time per request (utime+stime
# from /proc/PID/stat over the run, divided by the requests wrk completed). Ratios are
# strait/nginx from the same round. See bench/README.md.
#
# Usage: bench/wrk/run.sh            (as root, or with sudo available for apt-get)
# Env:   DURATION=10s CONNECTIONS=50 ROUNDS=3 WARMUP=2s THREADS=1
#        PROXY_CORE=0 LOAD_CORE=1
#        MODE=wrk | callgrind        (callgrind: instructions per request, see below)
#        CG_REQUESTS=20000 CG_CONNECTIONS=8   (callgrind mode)
#        STRAIT_DRIVER=auto | io_uring | legacy
#        BACKEND=127.0.0.31:28080 STRAIT=127.0.0.32:28081 NGINX=127.0.0.33:28082
# Output: stdout, and bench/results/<mode>-<timestamp>.txt (+ raw wrk output alongside).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-1}
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
MODE=${MODE:-wrk}
CG_REQUESTS=${CG_REQUESTS:-20000}
CG_CONNECTIONS=${CG_CONNECTIONS:-8}
BACKEND=${BACKEND:-127.0.0.31:28080}
STRAIT=${STRAIT:-127.0.0.32:28081}
NGINX=${NGINX:-127.0.0.33:28082}
STRAIT_DRIVER=${STRAIT_DRIVER:-auto}

export PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=$ROOT/bench/results
STAMP=$(date +%Y%m%d-%H%M%S)

# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for a in "$BACKEND" "$STRAIT" "$NGINX"; do
    [[ $a =~ ^127\.0\.0\.[0-9]{1,3}:[0-9]+$ ]] || die "address $a is not 127.0.0.x:port (requests stay on loopback)"
done
[[ $MODE == wrk || $MODE == callgrind ]] || die "MODE must be wrk or callgrind, not $MODE"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

# --- packages -------------------------------------------------------------------------

ensure_packages wrk:wrk nginx:nginx taskset:util-linux
if [[ $MODE == callgrind ]]; then
    ensure_packages valgrind:valgrind
fi

# --- build ----------------------------------------------------------------------------

(cd "$ROOT" && cargo build --release -p strait)
STRAIT_BIN=$TARGET_DIR/release/strait
if [[ $MODE == callgrind ]]; then
    (cd "$ROOT" && cargo build --release -p strait-bench --bin fixed-load)
fi
FIXED_LOAD=$TARGET_DIR/release/fixed-load

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

# Waits until `ip:port` answers `GET /` with a 2xx; $2 = seconds.
wait_ready() {
    local ip=${1%:*} port=${1##*:} deadline=$((SECONDS + ${2:-10})) line
    while ((SECONDS < deadline)); do
        if { exec 3<>"/dev/tcp/$ip/$port"; } 2>/dev/null; then
            printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
            line=$(head -n1 <&3 || true)
            exec 3<&- 3>&-
            if [[ $line == HTTP/1.?\ 2* ]]; then
                return 0
            fi
            echo "run.sh: $1 answered: ${line:-nothing}" >&2
        fi
        sleep 0.2
    done
    die "$1 did not answer 2xx within ${2:-10}s"
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
    keepalive_timeout 75s;
    keepalive_requests 1000000;
EOF
}

# 100 bytes including the newline.
BODY='strait bench backend: a fixed body of exactly one hundred bytes, keep-alive on, no access log.......'

start_backend() {
    local dir=$WORK/backend
    mkdir -p "$dir"
    {
        echo "worker_processes 1;"
        echo "daemon off;"
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        echo "    server { listen $BACKEND; location / { return 200 \"$BODY\n\"; } }"
        echo "}"
    } >"$dir/nginx.conf"
    taskset -c "$LOAD_CORE" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
    PIDS+=($!)
    wait_ready "$BACKEND"
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

write_strait_conf() {
    cat >"$WORK/strait.yaml" <<EOF
workers: 1
driver: $STRAIT_DRIVER
admin: {listen: "127.0.0.1:0"}
listeners:
  - name: http
    address: $STRAIT
access_log:
  enabled: false
services:
  - name: bench
    path_prefix: /
    upstream: backend
upstreams:
  - name: backend
    nodes:
      - address: $BACKEND
    keepalive:
      max_idle: 64
      idle_timeout: 30s
      max_requests: 1000
EOF
    "$STRAIT_BIN" check "$WORK/strait.yaml" >/dev/null
    echo "$WORK/strait.yaml"
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

machine_header() {
    echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- proxy discovery 2>/dev/null || echo ' (+ uncommitted changes in proxy/ or discovery/)')"
    echo "cpu:      $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
    echo "kernel:   $(uname -r)"
    echo "nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk:      $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
    echo "loadavg:  $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
}

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$MODE-$STAMP.txt
RAW=$RESULTS_DIR/$MODE-$STAMP
mkdir -p "$RAW"
CLK_TCK=$(getconf CLK_TCK)

# --- wrk mode ---------------------------------------------------------------------------

median() {
    sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Runs wrk against $2 and measures PIDs $3...; appends a row to $WORK/rows.
# Row: round proxy rps p50_us p99_us cpu_us_per_req proxy_cpu_pct requests errors usr_us sys_us
measure() {
    local round=$1 name=$2 addr=$3
    shift 3
    local raw=$RAW/$name-round$round.txt before after du ds requests rps p50 p99 secs non2xx sockerr errors cpu_us pct
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://$addr/" >/dev/null
    before=$(cpu_ticks "$@")
    echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$raw"
    taskset -c "$LOAD_CORE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://$addr/" >>"$raw"
    after=$(cpu_ticks "$@")
    requests=$(awk '/ requests in / {print $1}' "$raw")
    secs=$(awk '/ requests in / {sub(/s,$/, "", $4); print $4 + 0}' "$raw")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$raw")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$raw")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$raw")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$raw")
    sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$raw")
    errors=$((${non2xx:-0} + ${sockerr:-0}))
    read -r du ds <<<"$(awk -v a="$after" -v b="$before" 'BEGIN {split(a, x, " "); split(b, y, " "); print x[1] - y[1], x[2] - y[2]}')"
    per_req() { awk -v d="$1" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}'; }
    cpu_us=$(per_req $((du + ds)))
    pct=$(awk -v d=$((du + ds)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN {printf "%.0f", d / hz / s * 100}')
    echo "$round $name $rps $p50 $p99 $cpu_us $pct $requests $errors $(per_req "$du") $(per_req "$ds")" >>"$WORK/rows"
    if ((errors > 0)); then
        echo "run.sh: $name round $round: $errors errors (non-2xx ${non2xx:-0}, socket ${sockerr:-0}); see $raw" >&2
    fi
    printf '  %-6s round %d: %10s req/s  p50 %8s us  p99 %8s us  cpu %6s us/req  (%s%% of a core)  errors %s\n' \
        "$name" "$round" "$rps" "$p50" "$p99" "$cpu_us" "$pct" "$errors" >&2
}

alive() {
    kill -0 "$1" 2>/dev/null || die "$2 (pid $1) exited; its log: $(tail -n 20 "$3" 2>/dev/null)"
}

run_wrk_mode() {
    start_backend
    local sconf ndir spid npid nfam
    sconf=$(write_strait_conf)
    taskset -c "$PROXY_CORE" "$STRAIT_BIN" run --config "$sconf" --workers 1 \
        >"$WORK/strait.log" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    wait_ready "$STRAIT"
    ndir=$(write_nginx_proxy_conf)
    taskset -c "$PROXY_CORE" nginx -p "$ndir" -c "$ndir/nginx.conf" -e "$ndir/error.log" &
    npid=$!
    PIDS+=("$npid")
    wait_ready "$NGINX"

    : >"$WORK/rows"
    echo "running $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP) ..." >&2
    for ((r = 1; r <= ROUNDS; r++)); do
        alive "$spid" strait "$WORK/strait.log"
        measure "$r" strait "$STRAIT" "$spid"
        alive "$npid" nginx "$ndir/error.log"
        mapfile -t nfam < <(family "$npid")
        measure "$r" nginx "$NGINX" "${nfam[@]}"
    done
    alive "$spid" strait "$WORK/strait.log"
    cp "$WORK/strait.log" "$RAW/strait.log"
    cp "$ndir/error.log" "$RAW/nginx-proxy-error.log"
    cp "$WORK/strait.yaml" "$RAW/strait.yaml"
    cp "$ndir/nginx.conf" "$RAW/nginx-proxy.conf"
    cp "$WORK/backend/nginx.conf" "$RAW/nginx-backend.conf"

    {
        echo "strait vs nginx reverse proxy (wrk mode)"
        machine_header
        echo "load:     taskset -c $LOAD_CORE wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP), backend nginx on core $LOAD_CORE"
        echo "strait:   $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/strait.log" | grep -o 'driver=[A-Za-z_]*' | sort -u | tr '\n' ' ')(config driver: $STRAIT_DRIVER)"
    echo "proxies:  strait --workers 1 / nginx worker_processes 1, both taskset -c $PROXY_CORE; CLK_TCK=$CLK_TCK"
        echo
        printf '%-5s %-6s %12s %10s %10s %12s %8s %8s %8s %10s %7s\n' \
            round proxy req/s p50_us p99_us cpu_us/req usr_us sys_us cpu_% requests errors
        while read -r round name rps p50 p99 cpu pct req err usr sys; do
            printf '%-5s %-6s %12s %10s %10s %12s %8s %8s %8s %10s %7s\n' \
                "$round" "$name" "$rps" "$p50" "$p99" "$cpu" "$usr" "$sys" "$pct" "$req" "$err"
        done <"$WORK/rows"
        echo
        echo "medians over $ROUNDS rounds"
        printf '%-6s %12s %10s %10s %12s %8s %8s\n' proxy req/s p50_us p99_us cpu_us/req usr_us sys_us
        for name in strait nginx; do
            printf '%-6s' "$name"
            for col in 3 4 5 6 10 11; do
                printf ' %*s' $((col == 3 || col == 6 ? 12 : col >= 10 ? 8 : 10)) \
                    "$(awk -v n="$name" -v c="$col" '$2 == n {print $c}' "$WORK/rows" | median)"
            done
            echo
        done
        echo
        echo "ratios strait/nginx, each from the same round (target: cpu <= 0.60, req/s >= 1.00, p99 <= 1.00)"
        printf '%-7s %10s %10s %10s %10s %10s %10s\n' round cpu/req req/s p50 p99 usr/req sys/req
        awk 'function q(x, y) { return y > 0 ? x / y : "nan" }
             $2 == "strait" {s[$1] = $0} $2 == "nginx" {n[$1] = $0}
             END {
                 for (r = 1; r in s; r++) {
                     split(s[r], a, " "); split(n[r], b, " ")
                     printf "%-7s %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", r, q(a[6], b[6]), q(a[3], b[3]),
                         q(a[4], b[4]), q(a[5], b[5]), q(a[10], b[10]), q(a[11], b[11])
                 }
             }' "$WORK/rows" | tee "$WORK/ratios"
        printf '%-7s' median
        for col in 2 3 4 5 6 7; do
            printf ' %10s' "$(awk -v c="$col" '{print $c}' "$WORK/ratios" | median)"
        done
        echo
        echo
        echo "raw wrk output: $RAW/"
    } | tee "$OUT"
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
    sconf=$(write_strait_conf)
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
        machine_header
        echo "load:     fixed-load, $CG_CONNECTIONS keep-alive connections; runs of $small and $big requests"
        echo "strait driver under valgrind: $(cat "$RAW/strait-driver.txt" 2>/dev/null | tr '\n' ' ')"
        echo
        printf '%-6s %16s %16s %12s\n' proxy "Ir($small)" "Ir($big)" Ir/request
        awk -v a="$s1" -v b="$s2" -v n="$CG_REQUESTS" 'BEGIN {printf "%-6s %16d %16d %12.0f\n", "strait", a, b, (b - a) / n}'
        awk -v a="$n1" -v b="$n2" -v n="$CG_REQUESTS" 'BEGIN {printf "%-6s %16d %16d %12.0f\n", "nginx", a, b, (b - a) / n}'
        awk -v s1="$s1" -v s2="$s2" -v n1="$n1" -v n2="$n2" 'BEGIN {printf "ratio strait/nginx: %.3f\n", (s2 - s1) / (n2 - n1)}'
    } | tee "$OUT"
}

if [[ $MODE == wrk ]]; then
    run_wrk_mode
else
    run_callgrind_mode
fi
echo "results: $OUT" >&2
