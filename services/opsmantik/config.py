"""One typed settings object, read from the environment and validated at start.

Every setting has a safe default that matches the local stack (`opsmantik stack up`),
so `make run` works with no environment at all. `Settings.from_env()` gathers every
problem before failing, so a misconfigured deployment is fixed in one pass.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

LOCAL_PG_PORT = 15432
LOCAL_KAFKA_PORT = 19092
LOCAL_DATABASE_URL = f"postgresql://opsmantik@127.0.0.1:{LOCAL_PG_PORT}/opsmantik"
LOCAL_KAFKA_BOOTSTRAP = f"127.0.0.1:{LOCAL_KAFKA_PORT}"
# The MAC secret of API keys on a local stack only: production sets OPSMANTIK_KEY_SECRET to 32+
# random bytes (docs/runbook.md "API key secret"); the gateway logs a warning while this one is used.
LOCAL_KEY_SECRET = "opsmantik-local-dev-key-secret-not-for-production"


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


class SettingsError(ValueError):
    """Raised with every invalid setting listed, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Settings:
    """Environment variable = OPSMANTIK_ + the field name upper-cased."""

    database_url: str = LOCAL_DATABASE_URL
    kafka_bootstrap: str = LOCAL_KAFKA_BOOTSTRAP
    topic: str = "opsmantik.ingest.v1"
    billable_topic: str = "opsmantik.billable.v1"
    topic_partitions: int = 6
    # Replication of the topics `migrate` creates: 0 = from the cluster, RF = min(3, brokers) and
    # min ISR = RF - 1 (at least 1); set them to pin a value (docs/scaling.md).
    replication_factor: int = 0
    min_insync_replicas: int = 0
    # Message key of the ingest topic (services/opsmantik/kafka/settings.py): "request" (site + the
    # request's first
    # event id) spreads a site's requests over every partition, a batch on one; "event" spreads
    # every event; "site" keeps a site on one partition, in order (docs/scaling.md).
    partition_key: str = "request"
    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    max_body_bytes: int = 1024 * 1024
    max_batch_events: int = 1000
    delivery_timeout_ms: int = 250  # breaker opens when the broker cannot ack within this
    key_cache_ttl_s: float = 60.0
    unknown_key_ttl_s: float = 5.0
    # API keys carry a MAC under this secret (services/opsmantik/sites.py): a forged key is refused
    # in memory. The previous secret still verifies during a rotation. Never logged (repr=False).
    key_secret: str = field(default=LOCAL_KEY_SECRET, repr=False)
    key_secret_previous: str = field(default="", repr=False)
    # Keys issued before the MAC (no tag): "on" = looked up within a per-gateway-process budget of
    # unknown-key lookups (token bucket), "off" = refused in memory once every key is reissued.
    legacy_keys: str = "on"
    unknown_key_lookups_per_s: float = 20.0
    unknown_key_lookup_burst: int = 40
    # Past this many refused keys a second (per gateway process), each refusal is answered after
    # auth_failure_delay_s (0 = never delayed): a flood is slowed to what a sleep costs.
    auth_failures_undelayed_per_s: float = 50.0
    auth_failure_delay_s: float = 0.25
    usage_refresh_s: float = 1.0
    usage_stale_s: float = 10.0  # cache older than this → events are `degraded`
    # Gateways share each site's rate: every gateway heartbeats into gateway_instances and takes
    # rate/N, N = gateways heard from within gateway_dead_after_s (docs/scaling.md).
    gateway_heartbeat_s: float = 1.0
    gateway_dead_after_s: float = 3.0
    # POST /api/v1/events (docs/cloudevents.md): a JSON object, CloudEvent type (or "*" for every
    # other type) → RFC 6901 JSON pointer into `data` to the event's quantity; unmapped types count 1.
    cloudevents_quantity: str = "{}"
    # Worker
    worker_group: str = "opsmantik-worker"
    worker_batch: int = 2000
    worker_metrics_port: int = 9101  # /metrics and /healthz; 0 = an ephemeral port (logged), -1 = off
    worker_retry_max_s: float = 60.0  # a DB/publish failure retried this long, then exit non-zero
    worker_watchdog_s: float = 30.0  # committed offset still while lag grows this long → restart
    reconcile_interval_s: float = 300.0  # worker's periodic reconcile (drift metric)
    # Faust's data directory (it keeps nothing the ledger needs: tables are not used). Empty: a
    # private temporary directory, removed at exit; `opsmantik run` uses .local/faust.
    worker_data_dir: str = ""
    # Relay
    relay_batch: int = 1000
    relay_idle_s: float = 0.2
    relay_metrics_port: int = 9102  # 0 = an ephemeral port (logged, on /healthz), -1 = off
    metrics_host: str = "127.0.0.1"  # where worker and relay serve /metrics (0.0.0.0 in containers)
    # Capture audit (services/opsmantik/audit/): its own consumer group, behind the worker group
    audit_group: str = "opsmantik-audit"
    audit_metrics_port: int = 9103  # 0 = an ephemeral port, written to the log
    audit_interval_s: float = 2.0  # --follow: pause between cycles once caught up
    audit_wait_s: float = 15.0  # --month: longest wait for the worker to commit what the topic holds
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Local stack (`opsmantik stack up`, `make run`)
    kafka_heap: str = "768m"  # the broker JVM's -Xms/-Xmx
    # Billing (docs/billing.md)
    archive_location: str = ".local/archive"  # opsmantik archive: a directory or an fsspec URL
    billing_close_grace_days: float = 3.0  # a month closes no earlier than this long after it ends
    billing_close_lock_timeout_s: float = 60.0  # close waits this long for in-flight worker batches
    export_max_per_site: int = 2  # concurrent dispute exports per site; beyond → 429 Retry-After
    export_max_total: int = 4  # concurrent exports per gateway = its own export pool's size
    sla_loss_audit: str = "on"  # sla-report asks `opsmantik audit` about data loss; off = dead letters only
    # Status page (services/opsmantik/status/): a snapshot refreshed in the background, on its own connection
    status_refresh_s: float = 5.0  # live signals → component states (the page's "one refresh")
    status_slo_refresh_s: float = 60.0  # month SLO figures, 90-day rollups, incidents, maintenance
    status_window_s: float = 300.0  # the window of the rate signals (5xx ratio, lag)
    status_probe_timeout_s: float = 1.0  # broker probe and each status query
    status_page_name: str = "OpsMantik"
    status_page_url: str = "https://status.opsmantik.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        for f in fields(cls):
            name = "OPSMANTIK_" + f.name.upper()
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
        problems: list[str] = []
        url = urlsplit(self.database_url)
        if url.scheme not in ("postgresql", "postgres") or not url.hostname:
            problems.append(
                f"OPSMANTIK_DATABASE_URL: expected postgresql://user@host:port/db, got scheme {url.scheme!r}"
            )
        for part in self.kafka_bootstrap.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                problems.append(f"OPSMANTIK_KAFKA_BOOTSTRAP: {part!r} is not host:port")
        if not self.topic or not self.billable_topic:
            problems.append("OPSMANTIK_TOPIC and OPSMANTIK_BILLABLE_TOPIC must not be empty")
        if self.topic_partitions < 1:
            problems.append("OPSMANTIK_TOPIC_PARTITIONS must be >= 1")
        if not 0 < self.gateway_port < 65536:
            problems.append(f"OPSMANTIK_GATEWAY_PORT: {self.gateway_port} is not a port")
        for name in (
            "max_body_bytes",
            "max_batch_events",
            "delivery_timeout_ms",
            "worker_batch",
            "relay_batch",
            "db_pool_min",
            "db_pool_max",
            "export_max_per_site",
            "export_max_total",
            "unknown_key_lookup_burst",
        ):
            if getattr(self, name) < 1:
                problems.append(f"OPSMANTIK_{name.upper()} must be >= 1")
        for name in (
            "key_cache_ttl_s",
            "unknown_key_ttl_s",
            "usage_refresh_s",
            "usage_stale_s",
            "relay_idle_s",
            "worker_retry_max_s",
            "gateway_heartbeat_s",
            "worker_watchdog_s",
            "reconcile_interval_s",
            "billing_close_lock_timeout_s",
            "status_refresh_s",
            "status_slo_refresh_s",
            "status_window_s",
            "status_probe_timeout_s",
            "audit_interval_s",
            "unknown_key_lookups_per_s",
            "auth_failures_undelayed_per_s",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"OPSMANTIK_{name.upper()} must be > 0")
        for name in ("worker_metrics_port", "relay_metrics_port"):
            if not -1 <= getattr(self, name) < 65536:
                problems.append(f"OPSMANTIK_{name.upper()} must be a port, 0 (ephemeral) or -1 (off)")
        if self.replication_factor < 0 or self.min_insync_replicas < 0:
            problems.append(
                "OPSMANTIK_REPLICATION_FACTOR and OPSMANTIK_MIN_INSYNC_REPLICAS must be "
                ">= 0 (0 = from the cluster's size)"
            )
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            problems.append("OPSMANTIK_MIN_INSYNC_REPLICAS must be <= OPSMANTIK_REPLICATION_FACTOR")
        if self.partition_key not in ("request", "event", "site"):
            problems.append(f"OPSMANTIK_PARTITION_KEY: {self.partition_key!r} is not request, event or site")
        if self.gateway_dead_after_s <= self.gateway_heartbeat_s:
            problems.append("OPSMANTIK_GATEWAY_DEAD_AFTER_S must be > OPSMANTIK_GATEWAY_HEARTBEAT_S")
        if not 0 <= self.audit_metrics_port < 65536:
            problems.append("OPSMANTIK_AUDIT_METRICS_PORT must be a port or 0 (ephemeral)")
        if self.audit_wait_s < 0:
            problems.append("OPSMANTIK_AUDIT_WAIT_S must be >= 0")
        if not self.audit_group or self.audit_group == self.worker_group:
            problems.append("OPSMANTIK_AUDIT_GROUP must be set and differ from OPSMANTIK_WORKER_GROUP")
        if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", self.kafka_heap):
            problems.append(
                f"OPSMANTIK_KAFKA_HEAP: {self.kafka_heap!r} is not a JVM heap size like 768m or 2g"
            )
        if self.sla_loss_audit not in ("on", "off"):
            problems.append("OPSMANTIK_SLA_LOSS_AUDIT must be on or off")
        if self.billing_close_grace_days < 0:
            problems.append("OPSMANTIK_BILLING_CLOSE_GRACE_DAYS must be >= 0")
        if not self.status_page_name:
            problems.append("OPSMANTIK_STATUS_PAGE_NAME must not be empty")
        problems.extend(parse_quantity_pointers(self.cloudevents_quantity)[1])
        if len(self.key_secret) < 16:
            problems.append(
                "OPSMANTIK_KEY_SECRET must be at least 16 characters (32 random bytes in production)"
            )
        if self.key_secret_previous and len(self.key_secret_previous) < 16:
            problems.append("OPSMANTIK_KEY_SECRET_PREVIOUS must be empty or at least 16 characters")
        if not 0 <= self.auth_failure_delay_s <= 10:
            problems.append("OPSMANTIK_AUTH_FAILURE_DELAY_S must be between 0 and 10")
        if self.legacy_keys not in ("on", "off"):
            problems.append("OPSMANTIK_LEGACY_KEYS must be on or off")
        if self.db_pool_min > self.db_pool_max:
            problems.append("OPSMANTIK_DB_POOL_MIN must be <= OPSMANTIK_DB_POOL_MAX")
        return problems
