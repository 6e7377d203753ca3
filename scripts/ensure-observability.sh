#!/usr/bin/env bash
# Install Debian's headless Chromium (status-page browser test) and Prometheus (promtool: rule
# checks and unit tests; a real Prometheus scraping the stack for the dashboard test) when missing.
# Grafana is not in Debian's archive and its own apt repository is not reachable from CI here, so
# the dashboard is checked against Prometheus instead (docs/operations.md says what that leaves out).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing: ${missing[*]}; install with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
# Debian's prometheus package may start a system service on :9090 (not with no init running);
# the tests start their own Prometheus on a port of their own, so the two never collide.
