"""The operator dashboard: one server-rendered page that refreshes itself from JSON.

``GET /`` renders :func:`render_page`; its inline script polls ``GET /v1/dashboard``
(:func:`snapshot`, the same data) every :data:`POLL_MS` and redraws the table in place, so
a producer that goes offline shows as offline without a reload. No build step and no
external assets: the CSS and the script are inline, allowed by a hash in the
Content-Security-Policy (:data:`CSP`). The page shows ids, statuses and numbers only;
never a person or a record.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import time
from typing import TYPE_CHECKING, Final

import msgspec

from .stats import QueryStats

if TYPE_CHECKING:
    from .service import QueryService

__all__ = ["CSP", "POLL_MS", "Dashboard", "ProducerRow", "render_page", "snapshot"]

POLL_MS: Final = 1500
TITLE: Final = "samsvar — broker"


class ProducerRow(msgspec.Struct, frozen=True, kw_only=True):
    """One registered producer: presence and its last ``window_s`` seconds."""

    id: str
    name: str
    organisation: str
    online: bool
    changed_at: float | None
    """Wall-clock seconds of the last presence change the broker saw; None: never seen."""
    replies: int
    statuses: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    error_rate: float | None
    unreadable: int = 0
    """Records its answers said it could not read, over the window."""
    not_ready: list[str] = []
    """What its adapter announced at start-up it cannot do (it is online all the same)."""


class Dashboard(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /v1/dashboard`` returns and the page shows."""

    broker: str
    instance: str
    generated_at: float
    mqtt_connected: bool
    in_flight: int
    window_s: int
    span_s: float
    queries: QueryStats
    dropped_replies: dict[str, int]
    """Since start-up: replies the gatherer did not use, by reason."""
    producers: list[ProducerRow]


def snapshot(service: QueryService) -> Dashboard:
    """The dashboard's data as it stands now."""
    registry = service.registry
    stats = service.stats.snapshot(registry.producers)
    rows = []
    for p in registry.producers.values():
        state = service.presence.get(p.id)
        s = stats.producers[p.id]
        rows.append(ProducerRow(
            id=p.id, name=p.name, organisation=p.organisation.name,
            online=bool(state and state.online), changed_at=state.changed_at if state else None,
            replies=s.replies, statuses=s.statuses, p50_ms=s.p50_ms, p95_ms=s.p95_ms,
            error_rate=s.error_rate, unreadable=s.unreadable,
            not_ready=list(state.not_ready) if state and state.online else [],
        ))
    counters = service.gatherer.counters
    return Dashboard(
        broker=registry.broker.id, instance=service.config.instance, generated_at=time.time(),
        mqtt_connected=service.bus.connected.is_set(), in_flight=service.in_flight,
        window_s=stats.window_s, span_s=stats.span_s, queries=stats.queries,
        dropped_replies=dataclasses.asdict(counters),
        producers=rows,
    )


# -- the page ----------------------------------------------------------------------------

_CSS: Final = """
:root { --ok: #1a7f37; --bad: #c62828; --warn: #b26a00; --muted: #5f6b76; --line: #d8dee4; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 14px 24px; display: flex;
         align-items: baseline; gap: 16px; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; font-weight: 600; }
header .meta { color: #c9d1d9; font-size: 13px; }
main { padding: 18px 24px; max-width: 1400px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px;
        padding: 10px 14px; min-width: 110px; flex: 1 1 auto; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; background: #fff;
        border: 1px solid var(--line); border-radius: 6px; }
th, td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em;
     background: #f0f3f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
.status { font-weight: 600; white-space: nowrap; }
.status::before { content: "●"; margin-right: 6px; }
.online, .good { color: var(--ok); }
.offline, .bad { color: var(--bad); }
.warn { color: var(--warn); }
.muted, .small { color: var(--muted); }
.small { font-size: 12px; }
h2 { font-size: 15px; margin: 22px 0 8px; }
#stale { display: none; background: var(--bad); color: #fff; padding: 6px 24px; }
#stale.show { display: block; }
ul.reasons { margin: 0; padding-left: 20px; }
.notready { white-space: normal; font-weight: normal; max-width: 320px; }
"""

_SCRIPT: Final = """
(function () {
  "use strict";
  const POLL_MS = __POLL_MS__;
  const $ = (id) => document.getElementById(id);
  const ms = (v) => v === null ? "—" : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
  const pct = (v) => v === null ? "—" : (100 * v).toFixed(1) + " %";
  const rate = (v) => v.toFixed(2) + "/s";
  function clock(ts) {
    return new Date(ts * 1000).toLocaleTimeString("sv-SE", {hour12: false});
  }
  function ago(s) {
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function errorClass(r) {
    return r === null ? "num muted" : r >= 0.05 ? "num bad" : r > 0 ? "num warn" : "num good";
  }
  function render(d) {
    const q = d.queries;
    $("mqtt").textContent = d.mqtt_connected ? "connected" : "disconnected";
    $("mqtt").className = "value " + (d.mqtt_connected ? "good" : "bad");
    $("qps").textContent = rate(q.per_second);
    $("answered").textContent = q.answered + " (" + rate(q.answered_per_second) + ")";
    $("refused").textContent = q.refused + " (" + rate(q.refused_per_second) + ")";
    $("errors").textContent = q.error;
    $("errors").className = "value " + (q.error ? "bad" : "");
    $("latency").textContent = ms(q.p50_ms) + " / " + ms(q.p95_ms);
    $("commit").textContent = ms(q.access_log_p95_ms);
    $("inflight").textContent = d.in_flight;
    $("generated").textContent = clock(d.generated_at);
    const body = document.createElement("tbody");
    body.id = "producers";
    for (const p of d.producers) {
      const tr = document.createElement("tr");
      tr.dataset.producer = p.id;
      tr.dataset.online = p.online ? "true" : "false";
      const first = cell(tr, p.id);
      const name = document.createElement("div");
      name.className = "small";
      name.textContent = p.name;
      first.appendChild(name);
      cell(tr, p.organisation);
      const presence = cell(tr, p.online ? "online" : "offline",
                            "status " + (p.online ? "online" : "offline"));
      for (const reason of p.not_ready) {
        const note = document.createElement("div");
        note.className = "small warn notready";
        note.textContent = "not ready: " + reason;
        presence.appendChild(note);
      }
      cell(tr, p.changed_at === null ? "never seen"
               : clock(p.changed_at) + " (" + ago(d.generated_at - p.changed_at) + ")",
           p.changed_at === null ? "muted" : "");
      cell(tr, p.replies, "num");
      cell(tr, ms(p.p50_ms), "num");
      cell(tr, ms(p.p95_ms), "num");
      cell(tr, pct(p.error_rate), errorClass(p.error_rate));
      cell(tr, p.unreadable, p.unreadable ? "num warn" : "num muted");
      cell(tr, Object.entries(p.statuses).map(([k, v]) => k + " " + v).join(" · ") || "—",
           "small");
      body.appendChild(tr);
    }
    $("producers").replaceWith(body);
    const reasons = Object.entries(q.reasons);
    const list = document.createElement("ul");
    list.id = "reasons";
    list.className = "reasons";
    for (const [k, v] of reasons) {
      const li = document.createElement("li");
      li.textContent = k + ": " + v;
      list.appendChild(li);
    }
    if (!reasons.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "none";
      list.appendChild(li);
    }
    $("reasons").replaceWith(list);
  }
  async function poll() {
    try {
      const resp = await fetch("v1/dashboard", {cache: "no-store",
                                                headers: {"Accept": "application/json"}});
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      $("stale").classList.remove("show");
    } catch (e) {
      $("stale").textContent = "Cannot reach the broker (" + e.message + "): figures are stale.";
      $("stale").classList.add("show");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }
  setTimeout(poll, POLL_MS);
})();
""".replace("__POLL_MS__", str(POLL_MS))

_SCRIPT_HASH: Final = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP: Final = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""The page's Content-Security-Policy: its own inline script, and fetches to itself only."""


def _ms(v: float | None) -> str:
    return "—" if v is None else (f"{v:.1f} ms" if v < 10 else f"{round(v)} ms")


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _ago(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s ago"
    return f"{round(s / 60)} min ago" if s < 7200 else f"{round(s / 3600)} h ago"


def _error_class(rate: float | None) -> str:
    if rate is None:
        return "num muted"
    return "num bad" if rate >= 0.05 else "num warn" if rate > 0 else "num good"


def _row(p: ProducerRow, now: float) -> str:
    e = html.escape
    state = "online" if p.online else "offline"
    seen = ("never seen" if p.changed_at is None
            else f"{_clock(p.changed_at)} ({_ago(now - p.changed_at)})")
    statuses = " · ".join(f"{k} {v}" for k, v in p.statuses.items()) or "—"
    rate = "—" if p.error_rate is None else f"{100 * p.error_rate:.1f} %"
    notes = "".join(f'<div class="small warn notready">not ready: {e(r)}</div>'
                    for r in p.not_ready)
    return (
        f'<tr data-producer="{e(p.id)}" data-online="{str(p.online).lower()}">'
        f'<td>{e(p.id)}<div class="small">{e(p.name)}</div></td>'
        f"<td>{e(p.organisation)}</td>"
        f'<td class="status {state}">{state}{notes}</td>'
        f'<td{" class=muted" if p.changed_at is None else ""}>{e(seen)}</td>'
        f'<td class="num">{p.replies}</td>'
        f'<td class="num">{_ms(p.p50_ms)}</td><td class="num">{_ms(p.p95_ms)}</td>'
        f'<td class="{_error_class(p.error_rate)}">{rate}</td>'
        f'<td class="num {"warn" if p.unreadable else "muted"}">{p.unreadable}</td>'
        f'<td class="small">{e(statuses)}</td></tr>'
    )


def render_page(d: Dashboard) -> str:
    """The whole page, filled in with ``d``; its script keeps it current."""
    e = html.escape
    q = d.queries
    mqtt = "connected" if d.mqtt_connected else "disconnected"
    reasons = "".join(f"<li>{e(k)}: {v}</li>" for k, v in q.reasons.items()) or (
        '<li class="muted">none</li>')
    minutes = d.window_s // 60 if d.window_s % 60 == 0 else None
    window = f"{minutes} min" if minutes else f"{d.window_s} s"

    def card(label: str, ident: str, value: str, cls: str = "") -> str:
        return (f'<div class="card"><div class="label">{label}</div>'
                f'<div class="value {cls}" id="{ident}">{e(value)}</div></div>')

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(TITLE)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{e(TITLE)}</h1>
<span class="meta">{e(d.broker)} · instance {e(d.instance)} · rolling window {window}
· updated <span id="generated">{_clock(d.generated_at)}</span></span></header>
<div id="stale" role="status"></div>
<main>
<div class="cards">
{card("MQTT", "mqtt", mqtt, "good" if d.mqtt_connected else "bad")}
{card("Queries/s", "qps", f"{q.per_second:.2f}/s")}
{card("Answered", "answered", f"{q.answered} ({q.answered_per_second:.2f}/s)")}
{card("Refused", "refused", f"{q.refused} ({q.refused_per_second:.2f}/s)")}
{card("Errors", "errors", str(q.error), "bad" if q.error else "")}
{card("Answer p50 / p95", "latency", f"{_ms(q.p50_ms)} / {_ms(q.p95_ms)}")}
{card("Access log p95", "commit", _ms(q.access_log_p95_ms))}
{card("In flight", "inflight", str(d.in_flight))}
</div>
<h2>Producers</h2>
<table>
<thead><tr><th>Producer</th><th>Organisation</th><th>Presence</th><th>Last change</th>
<th class="num">Replies</th><th class="num">p50</th><th class="num">p95</th>
<th class="num">Error rate</th><th class="num">Unreadable</th><th>Statuses</th></tr></thead>
<tbody id="producers">
{"".join(_row(p, d.generated_at) for p in d.producers)}
</tbody>
</table>
<h2>Refusals and errors by reason</h2>
<ul class="reasons" id="reasons">{reasons}</ul>
<p class="small">Figures cover the last {window};
error rate = timeout or error among the questions a producer was asked;
unreadable = records a producer said it holds but could not read.
Metrics for Prometheus: <a href="metrics">/metrics</a>.</p>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
