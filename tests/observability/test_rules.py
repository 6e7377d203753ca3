"""The alerting rules, proven by promtool: they parse, every alert has a firing and a silent unit
test that pass, every alert carries a seed severity and a runbook section that exists."""

from __future__ import annotations

import re

import yaml

from tests.observability.promtool import PROM, ROOT, RULE_TESTS, RULES, promtool

RUNBOOK = ROOT / "docs" / "runbook.md"


def alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules_and_config() -> None:
    run = promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr
    run = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no rule unit tests"
    run = promtool("test", "rules", *map(str, RULE_TESTS))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_every_alert_has_a_firing_and_a_silent_test() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = set(alerts())
    assert names - fired == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a silent test"
    assert (fired | silent) - names == set(), "tests for alerts that do not exist"


def test_severities_and_runbook_sections() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", m.lower()).replace(" ", "-")
        for m in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("P0", "P1", "P2"), name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", (name, url)
        assert name.lower() in anchors, f"docs/runbook.md has no section '## {name}'"


def test_the_seed_p0s_are_there() -> None:
    a = alerts()
    p0 = {n: r["expr"] for n, r in a.items() if r["labels"]["severity"] == "P0"}
    assert any("opsmantik_audit_unaccounted_events" in e and "> 0" in e for e in p0.values())
    assert any("opsmantik_outbox_oldest_age_seconds" in e and "86400" in e for e in p0.values())
    assert a["OpsmantikAvailabilityFastBurn"]["labels"]["severity"] == "P0"
    assert a["OpsmantikBillingDriftHigh"]["labels"]["severity"] == "P1"
    # the three burn-rate windows of the multi-window pattern, for each SLO
    for slo in ("Availability", "Latency", "Freshness"):
        for tier, (long, short, factor) in {
            "FastBurn": ("1h", "5m", "14.4"),
            "SlowBurn": ("6h", "30m", "6"),
            "BudgetBurn": ("3d", "6h", "1"),
        }.items():
            expr = a[f"Opsmantik{slo}{tier}"]["expr"]
            assert f"ratio_rate{long} > ({factor} *" in expr and f"ratio_rate{short} > ({factor} *" in expr
