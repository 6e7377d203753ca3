#!/usr/bin/env bash
# Install wrk (Debian's package), the load generator of the bench (`make bench`) and of its smoke
# test in `make test` (tests/bench/test_bench_smoke.py), when missing.
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing: wrk; install with: sudo apt-get install -y --no-install-recommends wrk" >&2
    exit 1
fi
echo "installing wrk from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends wrk \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends wrk; }
