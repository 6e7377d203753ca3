#!/usr/bin/env bash
# The chart checks' tools (tests/deploy, docs/operations.md "Kubernetes with the Helm chart"):
#  - helm, built into .local/bin from the Go module proxy (`go install helm.sh/helm/v3/cmd/helm`);
#  - the prometheus-operator CRDs of ServiceMonitor and PrometheusRule, from the same proxy (the
#    Go module github.com/prometheus-operator/prometheus-operator ships them under
#    example/prometheus-operator-crd/), copied to .local/crds/: kubernetes-validate has only the
#    core schemas, the tests validate the chart's CRD objects against these.
# Idempotent: nothing to do when .local/bin/helm reports HELM_VERSION and the CRDs are there.
# Needs Go (>= the version helm's go.mod asks for).
set -euo pipefail
HELM_VERSION=v3.21.4
HELM_K8S_MINOR=36  # helm v3.21.4 is built on k8s.io/client-go v0.36
PROM_OPERATOR_VERSION=v0.85.0
CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
cd "$(dirname "$0")/.."
BIN="$PWD/.local/bin"
CRD_DIR="$PWD/.local/crds/prometheus-operator-$PROM_OPERATOR_VERSION"

have_helm() {
    [ -x "$BIN/helm" ] && [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}
have_crds() {
    for f in "${CRDS[@]}"; do [ -s "$CRD_DIR/$f" ] || return 1; done
}
if have_helm && have_crds; then
    exit 0
fi
command -v go >/dev/null || { echo "go is needed to build helm $HELM_VERSION (apt-get install golang-go)" >&2; exit 1; }
# -mod=mod: a GOFLAGS of -mod=vendor/readonly from the environment would refuse the module download.
export GOFLAGS=-mod=mod
if ! have_helm; then
    mkdir -p "$BIN"
    echo "building helm $HELM_VERSION from the Go module proxy into $BIN (3.5-9 min on 2 shared cores from an empty Go cache)"
    # The ldflags of helm's own Makefile: without them `go install` reports "v3.21" and lint and
    # template assume Kubernetes v1.20 (the release binary: its client-go's, v0.36 → 1.36).
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in pkg/lint/rules pkg/chartutil; do
        ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    got="$("$BIN/helm" version --template '{{.Version}}')"
    [ "$got" = "$HELM_VERSION" ] || { echo "built helm reports $got, not $HELM_VERSION" >&2; exit 1; }
fi
if ! have_crds; then
    echo "fetching the prometheus-operator $PROM_OPERATOR_VERSION CRDs (Go module) into $CRD_DIR"
    dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$dir" ] || { echo "go mod download gave no module directory" >&2; exit 1; }
    mkdir -p "$CRD_DIR"
    for f in "${CRDS[@]}"; do
        install -m 0644 "$dir/example/prometheus-operator-crd/$f" "$CRD_DIR/$f"
    done
fi
