"""The status page as server-rendered HTML: readable without JavaScript, light and dark
(prefers-color-scheme), usable at phone width (the uptime bars show 30 days there, 90 on wider
screens). Every state is written in words, never in colour alone."""

from __future__ import annotations

from datetime import datetime
from html import escape
from importlib import resources

from opsmantik.config import Settings
from opsmantik.status.components import STATE_WORDS
from opsmantik.status.model import DayBar, Incident, Maintenance, Snapshot

CSS = resources.files("opsmantik.status").joinpath("page.css").read_text(encoding="utf-8")


def _t(d: datetime) -> str:
    return d.strftime("%d %b %Y, %H:%M UTC")


def _bar(b: DayBar) -> str:
    cls = "none" if b.uptime is None else b.worst
    return f'<span class="b-{cls}" title="{escape(b.title)}"></span>'


def _component(snap: Snapshot, c) -> str:  # type: ignore[no-untyped-def]
    bars = snap.bars.get(c.id, [])
    up = snap.uptime_90d(c.id)
    up_text = "no data yet" if up is None else f"{escape(_pct2(up))} uptime"
    return (
        f'<div class="card" id="component-{c.id}"><div class="row">'
        f'<span class="name">{escape(c.name)}</span>'
        f'<span class="state s-{c.status}">{STATE_WORDS[c.status]}</span></div>'
        f'<div class="muted">{escape(c.description)}. Now: {escape(c.reason)}.</div>'
        f'<div class="bars" role="img" aria-label="{escape(c.name)}: daily uptime, last 90 days">'
        f"{''.join(_bar(b) for b in bars)}</div>"
        f'<div class="axis muted"><span><span class="d90">90 days ago</span><span class="d30">30 days ago'
        f"</span></span><span>{up_text}</span><span>Today</span></div></div>"
    )


def _pct2(x: float) -> str:
    from opsmantik.status.figures import pct

    return pct(x, 2)


def _incident(i: Incident) -> str:
    updates = "".join(
        f'<p class="update"><b>{escape(u.status)}</b> — {escape(u.body)} '
        f'<span class="muted">{_t(u.created_at)}</span></p>'
        for u in i.updates
    )
    when = f"Resolved {_t(i.resolved_at)}" if i.resolved_at else f"Since {_t(i.created_at)}"
    return (
        f'<div class="card" id="incident-{i.id}"><div class="row">'
        f'<span class="name">{escape(i.name)}</span>'
        f'<span class="muted">{escape(i.impact)} impact · {when}</span></div>{updates}</div>'
    )


def _maintenance(m: Maintenance, now: datetime) -> str:
    status = {"scheduled": "Scheduled", "in_progress": "In progress", "completed": "Completed"}[m.status(now)]
    return (
        f'<div class="card" id="maintenance-{m.id}"><div class="row">'
        f'<span class="name">{escape(m.reason)}</span>'
        f'<span class="state s-under_maintenance">{status}</span></div>'
        f'<div class="muted">{_t(m.starts_at)} to {_t(m.ends_at)}</div></div>'
    )


def render(snap: Snapshot, settings: Settings) -> str:
    now = snap.updated_at
    active = snap.active_incidents
    maint = [m for m in snap.maintenances if m.status(now) != "completed"]
    past_maint = [m for m in snap.maintenances if m.status(now) == "completed"]
    slo_rows = "".join(
        f'<tr id="slo-{f.id}"><td class="name">{escape(f.name)}</td><td>{escape(f.value_text)}</td>'
        f'<td class="target">{escape(f.target_text)}</td>'
        f'<td class="{"met" if f.met else "missed"}">{"Met" if f.met else "Missed"}</td></tr>'
        f'<tr><td colspan="4" class="muted">{escape(f.sentence)}</td></tr>'
        for f in snap.slo
    )
    figures_note = (
        "Figures are being gathered." if snap.figures_at is None else f"Figures as of {_t(snap.figures_at)}."
    )
    stale = (
        ""
        if snap.db_reachable
        else (
            '<p class="muted">Some figures could not be refreshed just now; '
            "the last known ones are shown.</p>"
        )
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{escape(settings.status_page_name)} status: {escape(snap.description)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{escape(settings.status_page_name)} status</h1>",
        f'<div class="banner i-{snap.indicator}" id="overall" role="status">{escape(snap.description)}</div>',
        f'<p class="muted">Updated {_t(now)}. This page refreshes itself on the server every '
        f"{settings.status_refresh_s:g} s; reload to see the latest.</p>{stale}",
    ]
    if active:
        parts.append("<h2>Active incidents</h2>" + "".join(_incident(i) for i in active))
    if maint:
        parts.append("<h2>Scheduled maintenance</h2>" + "".join(_maintenance(m, now) for m in maint))
    parts.append("<h2>Components</h2>" + "".join(_component(snap, c) for c in snap.components))
    parts.append(
        f"<h2>Service level objectives, {escape(snap.month)}</h2>"
        '<table><tr><th>Objective</th><th>This month</th><th class="target">Target</th>'
        "<th>Status</th></tr>"
        f"{slo_rows}</table><p class=muted>{figures_note}</p>"
    )
    parts.append("<h2>Past incidents</h2>")
    past = snap.past_incidents
    parts.append(
        "".join(_incident(i) for i in past)
        if past
        else '<p class="muted">No incidents reported in the last 14 days.</p>'
    )
    if past_maint:
        parts.append("<h2>Completed maintenance</h2>" + "".join(_maintenance(m, now) for m in past_maint))
    parts.append(
        '<p class="muted">Machine-readable: <a href="/status.json">/status.json</a>.</p></main></body></html>'
    )
    return "".join(parts)
