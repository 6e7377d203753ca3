"""One typed settings object, read from the environment and validated at start.

Every setting has a safe default that matches the local stack (`opsmantik stack up`),
so `make run` works with no environment at all. `Settings.from_env()` gathers every
problem before failing, so a misconfigured deployment is fixed in one pass.

The fields are grouped by concern (Kafka, database, gateway, API keys, worker, relay, audit,
billing, status page, usage alerts, local stack). Each is declared with `setting()`, which keeps its default,
its check (bounds, choices, format), a relation to another field where one exists, and its doc
on the field itself: reading one line tells what a variable accepts, and a field cannot be added
without saying so (tests/unit/test_config.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from opsmantik.errors import UsageError

LOCAL_PG_PORT = 15432
LOCAL_KAFKA_PORT = 19092
LOCAL_DATABASE_URL = f"postgresql://opsmantik@127.0.0.1:{LOCAL_PG_PORT}/opsmantik"
LOCAL_KAFKA_BOOTSTRAP = f"127.0.0.1:{LOCAL_KAFKA_PORT}"
# The MAC secret of API keys on a local stack only: production sets OPSMANTIK_KEY_SECRET to 32+
# random bytes (docs/runbook.md "API key secret"); the gateway logs a warning while this one is used.
LOCAL_KEY_SECRET = "opsmantik-local-dev-key-secret-not-for-production"

# The alerts' signing master secret on a local stack only (docs/alerts.md "Secrets").
LOCAL_ALERTS_SECRET = "opsmantik-local-dev-alerts-secret-not-for-production"

# The issue asks for retries "for at least 24 hours"; only a time-compressed test goes below it.
RETRY_FOR_MIN_S = 86400.0
PREFIX = "OPSMANTIK_"

T = TypeVar("T", int, float, str)
# A value → what is wrong with it (the text after the variable's name), or None when it is valid.
Check = Callable[[Any], str | None]


def parse_quantity_pointers(raw: str) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """OPSMANTIK_CLOUDEVENTS_QUANTITY → {type: the pointer's reference tokens}, and every problem."""
    name = "OPSMANTIK_CLOUDEVENTS_QUANTITY"
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return {}, [f"{name}: not JSON ({exc})"]
    if not isinstance(doc, dict):
        example = '{"prompt": "/tokens"}'
        return {}, [f"{name}: must be a JSON object of CloudEvent type → JSON pointer, like {example}"]
    pointers: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for kind, pointer in doc.items():
        if not 1 <= len(kind) <= 64 or "\x00" in kind:
            problems.append(f"{name}: type {kind[:80]!r} must be 1-64 characters without NUL, or *")
        elif not isinstance(pointer, str) or not pointer.startswith("/"):
            problems.append(f"{name}: {kind!r}: {pointer!r} is not a JSON pointer into data (RFC 6901: /a/b)")
        elif re.search(r"~(?![01])", pointer):
            problems.append(f"{name}: {kind!r}: {pointer!r}: `~` must be followed by 0 or 1 (RFC 6901)")
        else:
            tokens = pointer[1:].split("/")
            pointers[kind] = tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)
    return pointers, problems


class SettingsError(UsageError, ValueError):  # exit 2 (services/opsmantik/errors.py)
    """Raised with every invalid setting listed, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------- field rules


@dataclass(frozen=True)
class Relation:
    """A rule between this field and another: `holds(settings)` or the problem is listed."""

    holds: Callable[[Any], bool]
    problem: str


@dataclass(frozen=True)
class Rule:
    """How one setting is checked and documented; kept in its dataclass field's metadata."""

    concern: str
    doc: str
    check: Check
    relation: Relation | None = None


def setting(
    default: T,
    concern: str,
    doc: str,
    check: Check | None = None,
    *,
    relation: Relation | None = None,
    secret: bool = False,
) -> T:
    """A Settings field: the default, its concern, its doc, its check; `secret` keeps it out of repr.

    The value is parsed with the default's type (int, float or str)."""
    rule = Rule(concern, doc, check or (lambda _value: None), relation)
    return field(default=default, repr=not secret, metadata={"rule": rule})


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low}"


def above(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low}"


def between(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def port(*, ephemeral: bool = False, off: bool = False) -> Check:
    """1-65535; with `ephemeral` also 0 (a free port, logged); with `off` also 0 and -1 (not served)."""
    if off:
        low, extra = -1, ", 0 (ephemeral) or -1 (off)"
    else:
        low, extra = (0, " or 0 (ephemeral)") if ephemeral else (1, "")
    return lambda v: None if low <= v <= 65535 else f"{v} is not a port{extra}"


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"{v!r} must be one of {', '.join(choices)}"


def not_empty(v: str) -> str | None:
    return None if v else "must not be empty"


def _db_host(part: str) -> tuple[str, int] | None:
    """`host`, `host:port` or `[v6]:port`; None when the port is not a number."""
    host, colon, port = part.rpartition(":")
    if not colon or "]" in port:  # no port (a bare IPv6 literal's colons are inside [])
        host, port = part, "5432"
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def _db_netloc_hosts(v: str) -> list[str]:
    return urlsplit(v).netloc.rpartition("@")[2].split(",")


def database_hosts(v: str) -> list[tuple[str, int]]:
    """host:port of each host of a (multi-host) libpq URL, `postgresql://u@h1:p1,h2:p2/db`
    (urlsplit's .port fails on more than one); a host without a port is on 5432."""
    return [h for part in _db_netloc_hosts(v) if (h := _db_host(part))]


def database_url(v: str) -> str | None:
    url = urlsplit(v)
    if url.scheme not in ("postgresql", "postgres") or not url.hostname:
        return f"expected postgresql://user@host:port[,host:port...]/db, got scheme {url.scheme!r}"
    bad = [part for part in _db_netloc_hosts(v) if _db_host(part) is None]
    return "; ".join(f"{b!r} is not host[:port]" for b in bad) or None


def bootstrap(v: str) -> str | None:
    """host:port[,host:port...]; every bad entry named."""
    bad = [p for p in v.split(",") if not _host_port(p.strip())]
    return "; ".join(f"{p!r} is not host:port" for p in bad) or None


def _host_port(part: str) -> bool:
    host, _, number = part.rpartition(":")
    return bool(host) and number.isdigit()


def jvm_heap(v: str) -> str | None:
    if re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", v):
        return None
    return f"{v!r} is not a JVM heap size like 768m or 2g"


def secret_length(*, optional: bool) -> Check:
    """At least 16 characters (empty allowed when `optional`); the value is never echoed."""

    def check(v: str) -> str | None:
        if (optional and not v) or len(v) >= 16:
            return None
        if optional:
            return "must be empty or at least 16 characters"
        return "must be at least 16 characters (32 random bytes in production)"

    return check


def quantity_pointers(v: str) -> str | None:
    problems = parse_quantity_pointers(v)[1]  # each already names the variable
    return "\n".join(p.removeprefix("OPSMANTIK_CLOUDEVENTS_QUANTITY: ") for p in problems) or None


# ---------------------------------------------------------------- the settings


@dataclass(frozen=True)
class Settings:
    """Environment variable = OPSMANTIK_ + the field name upper-cased."""

    # ---- Kafka: the broker and the topics `migrate` creates (docs/scaling.md)
    kafka_bootstrap: str = setting(
        LOCAL_KAFKA_BOOTSTRAP, "kafka", "brokers, host:port[,host:port...]", bootstrap
    )
    topic: str = setting("opsmantik.ingest.v1", "kafka", "the ingest topic", not_empty)
    billable_topic: str = setting("opsmantik.billable.v1", "kafka", "the worker's billable rows", not_empty)
    topic_partitions: int = setting(6, "kafka", "partitions of the topics `migrate` creates", at_least(1))
    replication_factor: int = setting(
        0, "kafka", "0 = from the cluster: RF = min(3, brokers); set it to pin a value", at_least(0)
    )
    min_insync_replicas: int = setting(
        0,
        "kafka",
        "0 = from the cluster: RF - 1 (at least 1); set it to pin a value",
        at_least(0),
        relation=Relation(
            lambda s: s.replication_factor <= 0 or s.min_insync_replicas <= s.replication_factor,
            "must be <= OPSMANTIK_REPLICATION_FACTOR",
        ),
    )
    # services/opsmantik/kafka/settings.py: "request" (site + the request's first event id) spreads a
    # site's requests over every partition, a batch on one; "event" spreads every event; "site" keeps
    # a site on one partition, in order.
    partition_key: str = setting(
        "request", "kafka", "message key of the ingest topic", one_of("request", "event", "site")
    )

    # ---- Database: one Postgres for ledger, outbox, keys and billing
    database_url: str = setting(  # may hold a password: out of repr
        LOCAL_DATABASE_URL, "database", "postgresql://user@host:port/db", database_url, secret=True
    )
    db_pool_min: int = setting(1, "database", "connections each process keeps open", at_least(1))
    db_pool_max: int = setting(
        10,
        "database",
        "connections each process may open",
        at_least(1),
        relation=Relation(lambda s: s.db_pool_min <= s.db_pool_max, "must be >= OPSMANTIK_DB_POOL_MIN"),
    )

    # ---- Gateway: HTTP limits, the broker breaker, usage and rate sharing (docs/gateway.md)
    gateway_host: str = setting("127.0.0.1", "gateway", "address the gateway listens on")
    gateway_port: int = setting(8080, "gateway", "port the gateway listens on", port())
    max_body_bytes: int = setting(1024 * 1024, "gateway", "largest request body accepted", at_least(1))
    max_batch_events: int = setting(1000, "gateway", "most events in one request", at_least(1))
    delivery_timeout_ms: int = setting(
        250, "gateway", "the breaker opens when the broker cannot ack within this", at_least(1)
    )
    usage_refresh_s: float = setting(1.0, "gateway", "how often the usage cache is reloaded", above(0))
    usage_stale_s: float = setting(
        10.0, "gateway", "usage cache older than this → events `degraded`", above(0)
    )
    # Gateways share each site's rate: every gateway heartbeats into gateway_instances and takes
    # rate/N, N = gateways heard from within gateway_dead_after_s (docs/scaling.md).
    gateway_heartbeat_s: float = setting(1.0, "gateway", "heartbeat into gateway_instances", above(0))
    gateway_dead_after_s: float = setting(
        3.0,
        "gateway",
        "a gateway not heard from this long no longer takes a share",
        relation=Relation(
            lambda s: s.gateway_dead_after_s > s.gateway_heartbeat_s,
            "must be > OPSMANTIK_GATEWAY_HEARTBEAT_S",
        ),
    )
    # POST /api/v1/events (docs/cloudevents.md): unmapped types count 1.
    cloudevents_quantity: str = setting(
        "{}",
        "gateway",
        'JSON object: CloudEvent type (or "*") → RFC 6901 pointer into `data` to the quantity',
        quantity_pointers,
    )

    # ---- API keys: the MAC secret, caches, the unknown-key budget, the auth-failure delay
    # Keys carry a MAC under key_secret (services/opsmantik/sites.py): a forged key is refused in
    # memory; the previous secret still verifies during a rotation. Never logged (repr=False).
    key_secret: str = setting(
        LOCAL_KEY_SECRET, "keys", "MAC secret of API keys", secret_length(optional=False), secret=True
    )
    key_secret_previous: str = setting(
        "", "keys", "the secret being rotated out", secret_length(optional=True), secret=True
    )
    key_cache_ttl_s: float = setting(60.0, "keys", "how long a known key is cached", above(0))
    unknown_key_ttl_s: float = setting(5.0, "keys", "how long an unknown key is cached", above(0))
    # Keys issued before the MAC (no tag): "on" = looked up within a per-gateway-process budget of
    # unknown-key lookups (token bucket), "off" = refused in memory once every key is reissued.
    legacy_keys: str = setting(
        "on", "keys", "keys without a MAC are looked up (on) or refused (off)", one_of("on", "off")
    )
    unknown_key_lookups_per_s: float = setting(20.0, "keys", "unknown-key lookups a second", above(0))
    unknown_key_lookup_burst: int = setting(40, "keys", "unknown-key lookups in a burst", at_least(1))
    # Past this many refused keys a second (per gateway process), each refusal is answered after
    # auth_failure_delay_s (0 = never delayed): a flood is slowed to what a sleep costs.
    auth_failures_undelayed_per_s: float = setting(
        50.0, "keys", "refusals a second answered at once", above(0)
    )
    auth_failure_delay_s: float = setting(
        0.25, "keys", "delay of each refusal past that rate", between(0, 10)
    )

    # ---- Worker: the ledger consumer (docs/worker.md)
    worker_group: str = setting("opsmantik-worker", "worker", "the worker's consumer group", not_empty)
    worker_batch: int = setting(2000, "worker", "most records in one ledger transaction", at_least(1))
    worker_metrics_port: int = setting(
        9101, "worker", "/metrics and /healthz; 0 = an ephemeral port (logged), -1 = off", port(off=True)
    )
    worker_retry_max_s: float = setting(
        60.0, "worker", "a DB/publish failure is retried this long, then exit non-zero", above(0)
    )
    worker_watchdog_s: float = setting(
        30.0, "worker", "committed offset still while lag grows this long → restart", above(0)
    )
    reconcile_interval_s: float = setting(300.0, "worker", "the periodic reconcile (drift metric)", above(0))
    # Faust keeps nothing the ledger needs there (tables are not used).
    worker_data_dir: str = setting(
        "",
        "worker",
        "Faust's data directory; empty = a private temporary one; `opsmantik run` uses .local/faust",
    )
    metrics_host: str = setting(
        "127.0.0.1", "worker", "where worker and relay serve /metrics (0.0.0.0 in containers)"
    )

    # ---- Relay: drains the Postgres outbox into Kafka
    relay_batch: int = setting(1000, "relay", "outbox rows published per round", at_least(1))
    relay_idle_s: float = setting(0.2, "relay", "pause when the outbox is empty", above(0))
    relay_metrics_port: int = setting(
        9102, "relay", "0 = an ephemeral port (logged, on /healthz), -1 = off", port(off=True)
    )

    # ---- Capture audit (services/opsmantik/audit/): its own consumer group, behind the worker's
    audit_group: str = setting(
        "opsmantik-audit",
        "audit",
        "the audit's consumer group",
        not_empty,
        relation=Relation(
            lambda s: s.audit_group != s.worker_group, "must differ from OPSMANTIK_WORKER_GROUP"
        ),
    )
    audit_metrics_port: int = setting(
        9103, "audit", "0 = an ephemeral port, written to the log", port(ephemeral=True)
    )
    audit_interval_s: float = setting(2.0, "audit", "--follow: pause between cycles once caught up", above(0))
    audit_wait_s: float = setting(
        15.0, "audit", "--month: longest wait for the worker to commit what the topic holds", at_least(0)
    )

    # ---- Billing: month close, archive, dispute exports, SLA (docs/billing.md)
    archive_location: str = setting(
        ".local/archive", "billing", "opsmantik archive: a directory or an fsspec URL"
    )
    billing_close_grace_days: float = setting(
        3.0, "billing", "a month closes no earlier than this long after it ends", at_least(0)
    )
    billing_close_lock_timeout_s: float = setting(
        60.0, "billing", "close waits this long for in-flight worker batches", above(0)
    )
    export_max_per_site: int = setting(
        2, "billing", "concurrent dispute exports per site; beyond → 429 Retry-After", at_least(1)
    )
    export_max_total: int = setting(
        4, "billing", "concurrent exports per gateway = its own export pool's size", at_least(1)
    )
    sla_loss_audit: str = setting(
        "on",
        "billing",
        "sla-report asks `opsmantik audit` about data loss; off = dead letters only",
        one_of("on", "off"),
    )

    # ---- Status page (services/opsmantik/status/): a snapshot refreshed in the background
    status_refresh_s: float = setting(
        5.0, "status", "live signals → component states (one refresh)", above(0)
    )
    status_slo_refresh_s: float = setting(
        60.0, "status", "month SLO figures, 90-day rollups, incidents, maintenance", above(0)
    )
    status_window_s: float = setting(
        300.0, "status", "the window of the rate signals (5xx ratio, lag)", above(0)
    )
    status_probe_timeout_s: float = setting(1.0, "status", "broker probe and each status query", above(0))
    status_page_name: str = setting("OpsMantik", "status", "the page's title", not_empty)
    status_page_url: str = setting("https://status.opsmantik.com", "status", "the page's public address")
    # The customer's dashboard (docs/dashboard.md): portal-token URLs start with this address.
    dashboard_base_url: str = setting(
        "http://127.0.0.1:8080", "status", "the gateway's public address in portal-token URLs", not_empty
    )

    # ---- Usage alerts and their dispatcher (docs/alerts.md)
    alerts_allow_http: int = setting(
        0, "alerts", "1: http:// webhook URLs are accepted (development only; https otherwise)", between(0, 1)
    )
    alerts_allow_private: int = setting(
        0,
        "alerts",
        "1: webhook URLs may reach private, loopback and link-local addresses (development only)",
        between(0, 1),
    )
    alerts_signing_secret: str = setting(
        LOCAL_ALERTS_SECRET,
        "alerts",
        "derives each rule's whsec_ secret (HMAC with the rule id and a salt); 32+ random bytes",
        secret_length(optional=False),
        secret=True,
    )
    dispatcher_concurrency: int = setting(16, "alerts", "webhooks in flight per dispatcher", at_least(1))
    dispatcher_timeout_s: float = setting(
        5.0, "alerts", "one delivery attempt: connect, send and read the answer", above(0)
    )
    dispatcher_backoff_base_s: float = setting(
        5.0, "alerts", "first retry delay (doubles, jittered)", above(0)
    )
    dispatcher_backoff_cap_s: float = setting(
        3600.0,
        "alerts",
        "longest retry delay",
        above(0),
        relation=Relation(
            lambda s: s.dispatcher_backoff_cap_s >= s.dispatcher_backoff_base_s,
            "must be >= OPSMANTIK_DISPATCHER_BACKOFF_BASE_S",
        ),
    )
    dispatcher_retry_for_s: float = setting(
        86400.0,
        "alerts",
        "a webhook still failing this long after its first attempt is parked; at least 86400 (24 h)",
        above(0),
        relation=Relation(
            lambda s: s.dispatcher_retry_for_s >= RETRY_FOR_MIN_S or s.dispatcher_short_retry_for_tests == 1,
            f"must be >= {RETRY_FOR_MIN_S:g} (24 h) unless OPSMANTIK_DISPATCHER_SHORT_RETRY_FOR_TESTS=1",
        ),
    )
    dispatcher_short_retry_for_tests: int = setting(
        0,
        "alerts",
        "1: OPSMANTIK_DISPATCHER_RETRY_FOR_S may be under 24 h (time-compressed tests only)",
        between(0, 1),
    )
    dispatcher_idle_s: float = setting(0.2, "alerts", "pause when nothing is due", above(0))
    dispatcher_metrics_port: int = setting(
        9104, "alerts", "the dispatcher's /metrics; 0 = an ephemeral port (logged), -1 = off", port(off=True)
    )

    # ---- Local stack (`opsmantik stack up`, `make run`)
    kafka_heap: str = setting("768m", "stack", "the broker JVM's -Xms/-Xmx", jvm_heap)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every OPSMANTIK_* variable parsed and checked; SettingsError lists every problem."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind: type = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                problems.append(f"{name}={raw!r}: expected {kind.__name__}")
        settings = cls(**values)  # type: ignore[arg-type]
        problems.extend(settings.validate())
        if problems:
            raise SettingsError(problems)
        return settings

    def validate(self) -> list[str]:
        """Every field's check, then every relation; each problem names its variable."""
        problems: list[str] = []
        for f in fields(self):
            rule = rule_of(f.name)
            problem = rule.check(getattr(self, f.name))
            if problem:
                problems.extend(_line(f.name, text) for text in problem.split("\n"))
        for f in fields(self):
            relation = rule_of(f.name).relation
            if relation and not relation.holds(self):
                problems.append(_line(f.name, relation.problem))
        return problems


def _line(name: str, text: str) -> str:
    """OPSMANTIK_X must be ... / OPSMANTIK_X: 'v' is not ...: the variable first, always."""
    return f"{PREFIX}{name.upper()}{' ' if text.startswith('must') else ': '}{text}"


def rule_of(name: str) -> Rule:
    """The rule a Settings field was declared with."""
    return cast(Rule, {f.name: f for f in fields(Settings)}[name].metadata["rule"])
