#!/usr/bin/env bash
# `make test`: start the local stack, run the whole suite. In CI the stack is stopped after.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/opsmantik stack up || exit 1
.venv/bin/opsmantik migrate || exit 1
make --no-print-directory lint || exit 1
# OPSMANTIK_CHAOS=1: include the chaos suite's CI subset (tests/chaos/test_chaos_ci.py, < 10 min),
# which fails on any lost acknowledged event.
OPSMANTIK_CHAOS=1 .venv/bin/pytest -q -p no:cacheprovider --durations=20 "$@"
rc=$?
if [ "${CI:-}" = "true" ]; then
    .venv/bin/opsmantik stack down || true
fi
exit $rc
