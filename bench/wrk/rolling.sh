#!/usr/bin/env bash
# wrk through strait and nginx while the upstream's pods are rolled: installs wrk and nginx
# (apt, as run.sh does), builds strait and the bench in release, then runs the `rolling`
# binary (bench/src/bin/rolling.rs), which does the rest: pods, fake API server, proxies,
# rolls, report. See bench/README.md, "Rolling updates".
#
# Usage: bench/wrk/rolling.sh [rolling options]     (as root, or with sudo for apt-get)
#        bench/wrk/rolling.sh --help
#        bench/wrk/rolling.sh --rounds 3 --variants graceful,harsh,crash
# Output: stdout, and bench/results/rolling-<timestamp>.txt (+ raw output alongside).
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=bench/wrk/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages wrk:wrk nginx:nginx taskset:util-linux

(cd "$ROOT" && cargo build --release -p strait -p strait-bench --bin strait --bin rolling)

# The binary finds `strait` beside itself, pins itself, the pods and wrk to --load-core and
# the proxy to --proxy-core.
exec "$TARGET_DIR/release/rolling" "$@"
