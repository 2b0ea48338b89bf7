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

die() {
    echo "rolling.sh: $*" >&2
    exit 1
}

SUDO=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install wrk and nginx yourself"
    SUDO=(sudo)
fi

ensure_packages() {
    local missing=() cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    echo "installing: ${missing[*]}" >&2
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}

ensure_packages wrk:wrk nginx:nginx taskset:util-linux

(cd "$ROOT" && cargo build --release -p strait -p strait-bench --bin strait --bin rolling)

# The binary finds `strait` beside itself, pins itself, the pods and wrk to --load-core and
# the proxy to --proxy-core.
exec "$TARGET_DIR/release/rolling" "$@"
