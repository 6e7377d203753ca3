"""/status.json: the snapshot in the shape of the common hosted status-page summary API
(Atlassian Statuspage's /api/v2/summary.json: page, status, components, incidents,
scheduled_maintenances), so existing status aggregators and widgets read it unchanged.
One extension, `slo`, carries the month's SLO figures; nothing per site is ever in it."""

from __future__ import annotations

from datetime import datetime

import orjson

from opsmantik.config import Settings
from opsmantik.status.components import COMPONENT_IDS
from opsmantik.status.model import Incident, Maintenance, Snapshot

PAGE_ID = "opsmantik"


def _ts(d: datetime | None) -> str | None:
    return None if d is None else d.isoformat()


def _component_refs(ids: list[str], snap: Snapshot) -> list[dict[str, object]]:
    by = {c.id: c for c in snap.components}
    return [{"id": i, "name": by[i].name, "status": by[i].status} for i in ids if i in by]


def incident(i: Incident, snap: Snapshot, settings: Settings) -> dict[str, object]:
    monitoring = next((u.created_at for u in reversed(i.updates) if u.status == "monitoring"), None)
    return {
        "id": str(i.id),
        "name": i.name,
        "status": i.status,
        "impact": i.impact,
        "created_at": _ts(i.created_at),
        "updated_at": _ts(i.updated_at),
        "started_at": _ts(i.created_at),
        "monitoring_at": _ts(monitoring),
        "resolved_at": _ts(i.resolved_at),
        "shortlink": f"{settings.status_page_url}#incident-{i.id}",
        "page_id": PAGE_ID,
        "incident_updates": [
            {
                "id": str(u.id),
                "incident_id": str(i.id),
                "status": u.status,
                "body": u.body,
                "created_at": _ts(u.created_at),
                "updated_at": _ts(u.created_at),
                "display_at": _ts(u.created_at),
                "affected_components": _component_refs(i.components, snap),
            }
            for u in i.updates
        ],
        "components": _component_refs(i.components, snap),
    }


def maintenance(m: Maintenance, snap: Snapshot, settings: Settings) -> dict[str, object]:
    return {
        "id": f"maintenance-{m.id}",
        "name": m.reason,
        "status": m.status(snap.updated_at),
        "impact": "maintenance",
        "created_at": _ts(m.created_at),
        "updated_at": _ts(m.created_at),
        "started_at": _ts(m.starts_at),
        "monitoring_at": None,
        "resolved_at": None,
        "scheduled_for": _ts(m.starts_at),
        "scheduled_until": _ts(m.ends_at),
        "shortlink": f"{settings.status_page_url}#maintenance-{m.id}",
        "page_id": PAGE_ID,
        "incident_updates": [],
        "components": _component_refs(list(COMPONENT_IDS), snap),
    }


def summary(snap: Snapshot, settings: Settings) -> dict[str, object]:
    return {
        "page": {
            "id": PAGE_ID,
            "name": settings.status_page_name,
            "url": settings.status_page_url,
            "time_zone": "Etc/UTC",
            "updated_at": _ts(snap.updated_at),
        },
        "status": {"indicator": snap.indicator, "description": snap.description},
        "components": [
            {
                "id": c.id,
                "name": c.name,
                "status": c.status,
                "description": c.description,
                "position": n + 1,
                "showcase": True,
                "only_show_if_degraded": False,
                "group": False,
                "group_id": None,
                "page_id": PAGE_ID,
                "start_date": None,
                "created_at": None,
                "updated_at": _ts(snap.updated_at),
                "uptime_90d": snap.uptime_90d(c.id),
            }
            for n, c in enumerate(snap.components)
        ],
        "incidents": [incident(i, snap, settings) for i in snap.active_incidents],
        "scheduled_maintenances": [
            maintenance(m, snap, settings)
            for m in snap.maintenances
            if m.status(snap.updated_at) != "completed"
        ],
        "slo": {
            "month": snap.month,
            "figures_at": _ts(snap.figures_at),
            "objectives": [
                {
                    "id": f.id,
                    "name": f.name,
                    "value": f.value,
                    "value_text": f.value_text,
                    "target": f.target_text,
                    "met": f.met,
                    "description": f.sentence,
                }
                for f in snap.slo
            ],
        },
    }


def render(snap: Snapshot, settings: Settings) -> bytes:
    return orjson.dumps(summary(snap, settings))
