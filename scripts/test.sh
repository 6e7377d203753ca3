#!/usr/bin/env bash
# `make test`: start the local stack, run the whole suite. In CI the stack is stopped after.
#
# Three lanes at once, each its own pytest session (`--lane`, tests/support/lanes.py: the tests
# that start private stacks; tests/unit + most of tests/integration; everything else), then the
# `alone` lane by itself: per-second rates that hold only while the gateways have a core's
# headroom (three lanes on two cores take it away).
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
    lane() {  # NAME: the lane's tests, a line each, prefixed with its name
        "${PYTEST[@]}" -v --lane "$1" 2>&1 | sed -u "s/^/[$1] /"
        return "${PIPESTATUS[0]}"
    }
    lane own-stack &
    own=$!
    lane other &
    other=$!
    "${PYTEST[@]}" -q --lane main
    rc=$?
    for pid in $own $other; do
        wait "$pid"
        lane_rc=$?
        [ "$rc" -eq 0 ] && rc=$lane_rc
    done
    lane alone
    lane_rc=$?
    [ "$rc" -eq 0 ] && rc=$lane_rc
fi
if [ "${CI:-}" = "true" ]; then
    .venv/bin/opsmantik stack down || true
fi
exit $rc
