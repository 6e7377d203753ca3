#!/usr/bin/env bash
# `make test`: start the local stack, run the whole suite. In CI the stack is stopped after.
#
# Two lanes at once: the tests on the shared local stack, and beside them the tests marked
# `own_stack`, each of which starts a private Kafka + Postgres on free ports (chaos subset, engine
# kills, database-loss drills). They share nothing but the machine, and most of the second lane's
# time is spent waiting on engines, so the suite takes about the longer lane's time, not the sum.
# With arguments (`bash scripts/test.sh tests/unit -k x`): one pytest with those arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/opsmantik stack up || exit 1
.venv/bin/opsmantik migrate || exit 1
make --no-print-directory lint || exit 1
# OPSMANTIK_CHAOS=1: include the chaos suite's CI subset (tests/chaos/test_chaos_ci.py), which fails
# on any lost acknowledged event.
export OPSMANTIK_CHAOS=1
PYTEST=(.venv/bin/pytest -p no:cacheprovider --durations=20)

if [ $# -gt 0 ]; then
    "${PYTEST[@]}" -q "$@"
    rc=$?
else
    own_lane() {  # a line per test, prefixed, so both lanes show their progress in one log
        "${PYTEST[@]}" -v -m own_stack 2>&1 | sed -u 's/^/[own-stack] /'
        return "${PIPESTATUS[0]}"
    }
    own_lane &
    own=$!
    "${PYTEST[@]}" -q -m "not own_stack"
    rc=$?
    wait $own
    own_rc=$?
    [ "$rc" -eq 0 ] && rc=$own_rc
fi
if [ "${CI:-}" = "true" ]; then
    .venv/bin/opsmantik stack down || true
fi
exit $rc
