#!/usr/bin/env bash
# Install Debian's PostgreSQL server when it is missing (the stack runs its own cluster).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server is not installed and this is not root." >&2
    echo "Install it with: sudo apt-get install -y postgresql" >&2
    exit 1
fi
echo "installing PostgreSQL from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q postgresql
# Debian starts its own cluster on 5432; ours uses .local/postgres on 15432, so they never collide.
