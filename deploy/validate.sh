#!/usr/bin/env bash
# Offline checks of deploy/: `./dev test` runs this as its "deploy manifests" step, and it
# runs alone the same way (deploy/validate.sh). No cluster is needed.
#
# 1. `kubectl kustomize` renders deploy/, deploy/examples/httpbin/ and deploy/ with the
#    host-network component;
# 2. deploy/validate.py checks every object against the Kubernetes OpenAPI schemas
#    (kubernetes-validate, strict), that the ClusterRole grants only list/watch on
#    endpointslices, endpoints and services, that the config in the ConfigMap passes
#    `strait check`, and that the DaemonSet, the config and the example agree (ports, probes,
#    grace period, the discovered Service); and that the optional deploy/rbac-tls-secrets.yaml
#    grants only get/list/watch on named Secrets to strait's service account, and the optional
#    deploy/rbac-node-zone.yaml only get on nodes.
#
# Installs what it needs: kubectl and python3-venv with apt when missing, kubernetes-validate
# with pip into a venv under target/ (kept between runs), and builds the strait binary with
# cargo unless STRAIT_BIN names one. Exits non-zero, saying why, on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are checked against: the API that discovery's
# k8s-openapi is built for (Cargo.toml, feature v1_33). The schemas ship in the package.
KUBERNETES_VERSION=1.33.0
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
VENV=target/deploy-venv

die() {
  echo "deploy/validate.sh: $*" >&2
  exit 1
}

apt_install() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "deploy/validate.sh: installing $*" >&2
  if ! { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }; then
    die "could not install $* with apt"
  fi
}

command -v kubectl >/dev/null || apt_install kubectl
command -v python3 >/dev/null || apt_install python3 python3-venv

if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" ||
    die "pip could not install $KUBERNETES_VALIDATE"
  echo "$KUBERNETES_VALIDATE" >"$VENV/.installed"
fi

if [ -n "${STRAIT_BIN:-}" ]; then
  strait=$STRAIT_BIN
else
  cargo build --quiet --locked -p strait --bin strait || die "cargo build -p strait failed"
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  strait=$target_dir/debug/strait
fi
[ -x "$strait" ] || die "no strait binary at $strait"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The host-network component applies to deploy/ from a kustomization outside it (kustomize
# refuses a cycle); kustomize wants relative paths.
mkdir -p "$work/host-network"
base=$(realpath --relative-to="$work/host-network" deploy)
printf 'resources: [%s]\ncomponents: [%s/host-network]\n' "$base" "$base" \
  >"$work/host-network/kustomization.yaml"

renders=()
render() {
  local name=$1 dir=$2
  kubectl kustomize "$dir" >"$work/$name.yaml" || die "kubectl kustomize $dir failed"
  renders+=("$name=$work/$name.yaml")
}
render gateway deploy
render gateway-host-network "$work/host-network"
render httpbin deploy/examples/httpbin
# The optional Role for TLS Secrets is applied on its own, not through kustomize.
renders+=("tls-secrets=deploy/rbac-tls-secrets.yaml")
renders+=("node-zone=deploy/rbac-node-zone.yaml")

"$VENV/bin/python" deploy/validate.py --strait "$strait" \
  --kubernetes-version "$KUBERNETES_VERSION" "${renders[@]}" ||
  die "deploy/ failed the checks above (FAIL lines)"
