# Shared by the harnesses (run.sh, rolling.sh, tcp.sh): fail with a message, and install the
# Debian packages a harness needs (as root, or with sudo). Sourced, not run.

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

SUDO=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install the packages yourself"
    SUDO=(sudo)
fi

# ensure_packages CMD:PACKAGE ...: installs PACKAGE when CMD is missing.
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
