// The usage dashboard's script: reads the portal token from the page's address, polls the
// summary every second (one cheap read), and reloads the charts, top groups and dead letters
// when the usage changed (or every 15 s). Charts are SVG drawn here; every text from the server
// goes in through textContent, never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const POLL_MS = 1000;
const DETAILS_MS = 15000;
const SVG = "http://www.w3.org/2000/svg";
const fmt = new Intl.NumberFormat();
let lastUpdated = null;
let lastDetails = 0;
let detailsBusy = false;

const $ = (id) => document.getElementById(id);

async function get(path, params) {
  const q = new URLSearchParams(params || {});
  const r = await fetch(`/dashboard/api/${path}${q.toString() ? "?" + q : ""}`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
    cache: "no-store",
  });
  if (r.status === 401) throw Object.assign(new Error("expired"), { status: 401 });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}

function setNumber(id, value) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = value === null || value === undefined ? "–" : fmt.format(value);
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const when = new Date(iso).toLocaleTimeString();
  return s < 60 ? `${when} (${s} s ago)` : s < 3600 ? `${when} (${Math.round(s / 60)} min ago)` : new Date(iso).toLocaleString();
}

function live(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

function showSummary(s) {
  $("site-name").textContent = s.site_name;
  document.title = `${s.site_name}: usage`;
  $("month").textContent = s.month;
  setNumber("events", s.usage.events);
  setNumber("quantity", s.usage.quantity);
  setNumber("overlimit", s.usage.overlimit_events);
  const used = s.usage.events;
  const scale = Math.max(s.hard_cap || 0, s.monthly_quota || 0, used, 1);
  const fill = $("quota-fill");
  fill.style.width = `${Math.min(100, (100 * used) / scale)}%`;
  fill.className = "fill" + (s.hard_cap && used >= s.hard_cap ? " bad" : s.monthly_quota !== null && used > s.monthly_quota ? " warn" : "");
  $("quota-text").textContent = s.monthly_quota === null ? "No monthly quota"
    : `${fmt.format(used)} of ${fmt.format(s.monthly_quota)} quota (${s.monthly_quota ? Math.round((100 * used) / s.monthly_quota) : 100} %)`;
  $("cap-text").textContent = s.hard_cap === null ? "no hard cap" : `hard cap ${fmt.format(s.hard_cap)}`;
  const cap = $("cap-mark");
  cap.hidden = s.hard_cap === null;
  if (s.hard_cap !== null) cap.style.left = `calc(${Math.min(100, (100 * s.hard_cap) / scale)}% - 3px)`;
  const f = s.freshness;
  $("updated-at").textContent = ago(f.usage_updated_at);
  $("lag").textContent = f.ledger_events_5m ? `${(f.ledger_lag_max_ms / 1000).toFixed(2)} s` : "no events";
  $("outbox").textContent = `${fmt.format(f.outbox_pending)} events`;
  $("as-of").textContent = new Date(s.as_of).toLocaleTimeString();
  $("expires").textContent = new Date(s.token_expires_at).toLocaleString();
  const behind = f.ledger_lag_max_ms >= 5000 || f.outbox_pending > 0;
  live(behind ? "behind" : "fresh", behind ? "Live · figures are catching up" : "Live · within seconds");
}

// Drawn at the element's own width (no stretched text); redrawn when the window resizes.
function chart(el, data) {
  el.chartData = data;
  const w = Math.max(200, Math.round(el.clientWidth || 600)), h = 150, top = 14, bottom = 18;
  const max = Math.max(1, ...data.map((d) => Number(d.value) || 0));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  const step = w / Math.max(1, data.length);
  const every = Math.ceil(data.length / Math.max(4, Math.floor(w / 50)));
  data.forEach((d, i) => {
    const v = Number(d.value) || 0;
    const bh = ((h - top - bottom) * Math.max(0, v)) / max;
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", (i * step + step * 0.12).toFixed(1));
    r.setAttribute("width", (step * 0.76).toFixed(1));
    r.setAttribute("y", (h - bottom - bh).toFixed(1));
    r.setAttribute("height", bh.toFixed(1));
    const t = document.createElementNS(SVG, "title");
    t.textContent = `${d.label}: ${fmt.format(v)}`;
    r.appendChild(t);
    svg.appendChild(r);
    if (i % every === 0) {
      const l = document.createElementNS(SVG, "text");
      l.setAttribute("x", Math.min(w - 8, Math.max(8, i * step + step / 2)).toFixed(1));
      l.setAttribute("y", String(h - 4));
      l.setAttribute("text-anchor", "middle");
      l.textContent = d.label;
      svg.appendChild(l);
    }
  });
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0"); axis.setAttribute("x2", String(w));
  axis.setAttribute("y1", String(h - bottom)); axis.setAttribute("y2", String(h - bottom));
  svg.appendChild(axis);
  const maxText = document.createElementNS(SVG, "text");
  maxText.setAttribute("x", "2"); maxText.setAttribute("y", "10");
  maxText.textContent = `max ${fmt.format(max)}`;
  svg.appendChild(maxText);
  el.replaceChildren(svg);
  el.dataset.total = String(data.reduce((a, d) => a + (Number(d.value) || 0), 0));
}

function rows(tbody, items, cells) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    cells(item).forEach(([text, cls, share]) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      if (share !== undefined) {
        const bar = document.createElement("span");
        bar.className = "share";
        bar.style.width = `${share}%`;
        td.appendChild(bar);
      }
      tr.appendChild(td);
    });
    return tr;
  }));
}

async function loadMeters() {
  const meters = await get("meters");
  const sel = $("meter");
  sel.replaceChildren(...meters.map((m) => new Option(`${m.slug} (${m.aggregation.toLowerCase()})`, m.slug)));
  // The invoice's own count first, whatever other meters the operator defined.
  if (meters.some((m) => m.slug === "events")) sel.value = "events";
  sel.dataset.groups = JSON.stringify(Object.fromEntries(meters.map((m) => [m.slug, m.groups])));
  sel.onchange = () => { setGroups(); details(); };
  $("group").onchange = details;
  setGroups();
}

function setGroups() {
  const groups = JSON.parse($("meter").dataset.groups || "{}")[$("meter").value] || ["subject"];
  $("group").replaceChildren(...groups.map((g) => new Option(g, g)));
}

async function details() {
  if (detailsBusy) return;
  detailsBusy = true;
  lastDetails = Date.now();
  try {
    const meter = $("meter").value || "events";
    const [series, topGroups, dead] = await Promise.all([
      get("series", { meter, tz: TZ }),
      get("top", { meter, tz: TZ, group: $("group").value || "subject" }),
      get("dead-letters", { limit: 20 }),
    ]);
    $("tz").textContent = `(${series.tz})`;
    chart($("chart-month"), series.month.data);
    chart($("chart-today"), series.today.data);
    const max = Math.max(1, ...topGroups.top.map((r) => Number(r.value) || 0));
    rows($("top").tBodies[0], topGroups.top, (r) => [
      [r.group === null ? "(none)" : String(r.group), "", (100 * (Number(r.value) || 0)) / max],
      [fmt.format(r.value ?? 0), "num"],
    ]);
    $("top-empty").hidden = topGroups.top.length > 0;
    rows($("dead-letters").tBodies[0], dead.events, (e) => [
      [e.event_id], [e.reason], [new Date(e.dead_lettered_at).toLocaleString()],
    ]);
    $("dl-empty").hidden = dead.events.length > 0;
  } catch (e) {
    lastDetails = 0; // a failed load is retried at the next poll, not DETAILS_MS later
    throw e;
  } finally {
    detailsBusy = false;
  }
}

async function tick() {
  try {
    const s = await get("summary");
    showSummary(s);
    const changed = s.freshness.usage_updated_at !== lastUpdated;
    lastUpdated = s.freshness.usage_updated_at;
    if (changed || Date.now() - lastDetails > DETAILS_MS) details().catch(fail);
  } catch (e) {
    fail(e);
  }
}

function fail(e) {
  if (e && e.status === 401) {
    live("error", "This link has expired or was revoked");
    clearInterval(timer);
  } else {
    live("error", "Cannot reach the figures; retrying");
  }
}

let timer = null;
async function start() {
  try {
    await loadMeters();
  } catch (e) {
    fail(e);
    if (e && e.status === 401) return;
  }
  await tick();
  timer = setInterval(tick, POLL_MS);
}

window.addEventListener("resize", () => {
  for (const id of ["chart-month", "chart-today"]) if ($(id).chartData) chart($(id), $(id).chartData);
});

start();
