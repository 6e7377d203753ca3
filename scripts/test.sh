#!/usr/bin/env bash
# `make test`: start the local stack, run the whole suite. In CI the stack is stopped after.
#
# Three lanes at once, each its own pytest session: the tests marked `own_stack` (each starts a
# private Kafka + Postgres on free ports: chaos subset, engine kills, database-loss drills), and the
# rest split in two, tests/unit + tests/integration but its test_a* modules (alerts, archive, audit:
# minutes of them) and everything else. The two shared-stack lanes
# meet on the local stack but nowhere else: each session makes a database, topics and a worker group
# of its own (tests/support/environment.py). Most of the time goes to waiting on processes and
# engines, so the suite takes about its longest lane's time, not the sum. Then, alone, the tests
# marked `alone`: a latency under attack against none, a site's rate per second across gateways;
# they hold only while the gateways have a core's headroom (three lanes on two cores take it away).
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
    lane() {  # NAME ARGS...: a line per test, prefixed with the lane's name
        local name=$1
        shift
        "${PYTEST[@]}" -v "$@" 2>&1 | sed -u "s/^/[$name] /"
        return "${PIPESTATUS[0]}"
    }
    lane own-stack -m "own_stack and not alone" &
    own=$!
    lane other -m "not own_stack and not alone" --ignore=tests/unit --ignore-glob='tests/integration/test_[!a]*' &
    other=$!
    "${PYTEST[@]}" -q -m "not own_stack and not alone" tests/integration tests/unit \
        --ignore-glob='tests/integration/test_a*'
    rc=$?
    for pid in $own $other; do
        wait "$pid"
        lane_rc=$?
        [ "$rc" -eq 0 ] && rc=$lane_rc
    done
    lane alone -m alone
    lane_rc=$?
    [ "$rc" -eq 0 ] && rc=$lane_rc
fi
if [ "${CI:-}" = "true" ]; then
    .venv/bin/opsmantik stack down || true
fi
exit $rc
