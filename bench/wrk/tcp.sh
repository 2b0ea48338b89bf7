#!/usr/bin/env bash
# Plain TCP through strait (`protocol: tcp`) and HAProxy (`mode tcp`), same backend, same
# cores, same number of worker threads: one large stream each way and many short
# connections. Installs haproxy (apt, as run.sh does for nginx), builds strait and the
# bench in release, then runs the `tcp-bench` binary (bench/src/bin/tcp_bench.rs), which
# does the rest: backend, proxies, load, CPU times, report. See bench/README.md, "TCP".
#
# Usage: bench/wrk/tcp.sh [tcp-bench options]     (as root, or with sudo for apt-get)
#        bench/wrk/tcp.sh --help
#        bench/wrk/tcp.sh --rounds 5 --stream-mib 4096 --duration 5s --clients 32
# Output: stdout, and bench/results/tcp-<timestamp>.txt (+ configs and logs alongside).
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages haproxy:haproxy taskset:util-linux getconf:libc-bin

(cd "$ROOT" && cargo build --release -p strait -p strait-bench --bin strait --bin tcp-bench)

# The idle phase holds 2 descriptors per connection in this process.
ulimit -n "$(ulimit -Hn)"
# The binary finds `strait` beside itself, pins itself (load + backend) to --load-core and
# the proxies to --proxy-cpus.
exec "$TARGET_DIR/release/tcp-bench" "$@"
