"""HTML pages of a FleetView: the fleet table, one battery, the alerts feed, and the replay
report. Each page is one self-contained string: inline CSS, inline SVG charts
(`twin_stream.view.charts`) and a small inline script (fleet filter and sort; with
``live=True`` an ``EventSource("/events")`` that applies ``row`` and ``alert`` events in place,
without reloading). Nothing is loaded from elsewhere, so the pages work offline.

DOM hooks (the browser tests rely on them): ``<table id="fleet">`` rows
``<tr data-battery="ID">`` with cells ``data-col="soc|equivalent_cycles|cell_spread_mv|
max_temperature|alerts|last_seen|stale"``, ``<input id="fleet-filter">``, headers
``<th data-sort="col">``; ``<table id="alerts">`` rows ``<tr data-code data-severity
data-battery>``; charts ``<svg class="chart" data-series="cells|soc|cycles|temperature">`` with
``<circle class="alert-marker">``; ``<table id="alert-history">``; in the report one
``<section class="battery" id="battery-ID">`` per battery and ``<section id="fleet-summary">``.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from twin_stream.view.charts import Band, ChartSpec, Line, Marker, render
from twin_stream.view.fleet import SEVERITIES, BatteryView, FleetView, parse_ts

MAIN_CHARTS = ("cells", "soc", "cycles", "temperature")
_MAIN_NAMES = {
    "min_cell_voltage",
    "max_cell_voltage",
    "mean_cell_voltage",
    "soc_ocv",
    "equivalent_cycles",
    "max_temperature",
}
FLEET_COLUMNS = (
    ("battery_id", "battery"),
    ("soc", "SOC %"),
    ("equivalent_cycles", "cycles"),
    ("cell_spread_mv", "cell spread mV"),
    ("max_temperature", "max temp °C"),
    ("alerts", "active alerts"),
    ("last_seen", "last seen"),
    ("stale", "stale"),
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fff}
header{background:#1d3557;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff}header h1{font-size:18px;margin:0 16px 0 0}
main{padding:12px 16px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:left;white-space:nowrap}
th[data-sort]{cursor:pointer;user-select:none}th[data-sort]:hover{background:#eef}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.sev{display:inline-block;border-radius:8px;padding:0 6px;margin-right:3px;color:#fff;font-size:11px}
.sev-critical{background:#d62728}.sev-warning{background:#e0a100}.sev-info{background:#2b7bb9}
tr.stale td{color:#999}tr.flash{animation:flash 1.5s}
@keyframes flash{from{background:#fff3b0}to{background:transparent}}
.charts{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{border:1px solid #eee;background:#fff;max-width:100%;height:auto}
section.battery{border-top:2px solid #1d3557;margin-top:24px;padding-top:4px}
#live-status{font-size:12px;margin-left:auto}
input,select{font-size:13px;padding:2px 4px}
.muted{color:#888}
"""  # noqa: E501

_JS = r"""
(function(){
const body=document.body, live=body.dataset.live==="1";
const fmt=(v,d)=>(v===null||v===undefined)?"":Number(v).toFixed(d);
function cells(r){
  const soc=r.soc===null?"":fmt(r.soc,1)+(r.soc_uncertainty!==null&&r.soc_uncertainty!==undefined
    ?" ± "+fmt(r.soc_uncertainty,1):(r.soc_confidence!==null&&r.soc_confidence!==undefined
    ?" (conf "+fmt(r.soc_confidence,2)+")":""));
  let al="",tot=0;
  for(const s of ["critical","warning","info"]){const n=(r.alerts_active||{})[s]||0;tot+=n*(s==="critical"?1e6:s==="warning"?1e3:1);
    if(n)al+='<span class="sev sev-'+s+'">'+s+" "+n+"</span>";}
  return {soc:[soc,r.soc],equivalent_cycles:[fmt(r.equivalent_cycles,2),r.equivalent_cycles],
    cell_spread_mv:[fmt(r.cell_spread_mv,1),r.cell_spread_mv],
    max_temperature:[fmt(r.max_temperature,1),r.max_temperature],alerts:[al,tot,true],
    last_seen:[r.last_seen||"",r.last_seen],stale:[r.stale?"stale":"",r.stale?1:0]};
}
function fill(tr,r){
  const c=cells(r);
  for(const k in c){const td=tr.querySelector('[data-col="'+k+'"]');if(!td)continue;
    if(c[k][2])td.innerHTML=c[k][0];else td.textContent=c[k][0];
    td.dataset.value=(c[k][1]===null||c[k][1]===undefined)?"":String(c[k][1]);}
  tr.classList.toggle("stale",!!r.stale);
  tr.classList.remove("flash");void tr.offsetWidth;tr.classList.add("flash");
}
const fleet=document.getElementById("fleet");
let sortCol=null,sortDir=1,sortTimer=null;
function key(tr){const td=tr.querySelector('[data-col="'+sortCol+'"]');const v=td?td.dataset.value:"";
  if(v===undefined||v==="")return null;const n=Number(v);return isNaN(n)?v:n;}
function sortRows(){sortTimer=null;if(!fleet||!sortCol)return;const tb=fleet.tBodies[0];
  const rows=Array.from(tb.rows);rows.sort((a,b)=>{const x=key(a),y=key(b);if(x===y)return 0;
  if(x===null)return 1;if(y===null)return -1;return(x<y?-1:1)*sortDir;});
  for(const r of rows)tb.appendChild(r);}
const filt=document.getElementById("fleet-filter");
function match(tr){const q=filt?filt.value.trim().toLowerCase():"";return !q||tr.textContent.toLowerCase().includes(q);}
function applyFilter(){if(!fleet)return;for(const tr of fleet.tBodies[0].rows)tr.hidden=!match(tr);}
if(filt)filt.addEventListener("input",applyFilter);
if(fleet)for(const th of fleet.querySelectorAll("th[data-sort]"))th.addEventListener("click",()=>{
  const c=th.dataset.sort;sortDir=(sortCol===c)?-sortDir:1;sortCol=c;
  fleet.querySelectorAll("th[data-sort]").forEach(h=>h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort",sortDir>0?"ascending":"descending");sortRows();});
if(!live)return;
const status=document.getElementById("live-status");
const esc=s=>String(s===null||s===undefined?"":s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
function onRow(r){
  if(fleet){const tb=fleet.tBodies[0];let tr=tb.querySelector('tr[data-battery="'+CSS.escape(r.battery_id)+'"]');
    if(!tr){tr=document.createElement("tr");tr.dataset.battery=r.battery_id;
      tr.innerHTML='<td data-col="battery_id" data-value="'+esc(r.battery_id)+'"><a href="/battery/'+
        encodeURIComponent(r.battery_id)+'">'+esc(r.battery_id)+'</a></td>'+
        ["soc","equivalent_cycles","cell_spread_mv","max_temperature","alerts","last_seen","stale"].map(
        k=>'<td data-col="'+k+'"'+(k==="last_seen"||k==="alerts"||k==="stale"?"":' class="num"')+'></td>').join("");
      let before=null;for(const o of tb.rows){if(o.dataset.battery>r.battery_id){before=o;break;}}
      tb.insertBefore(tr,before);}
    fill(tr,r);tr.hidden=!match(tr);if(sortCol&&!sortTimer)sortTimer=setTimeout(sortRows,500);}
  const own=document.getElementById("battery-row");
  if(own&&own.dataset.battery===r.battery_id){fill(own,r);scheduleRefresh(5000);}
}
const alerts=document.getElementById("alerts");
function onAlert(a){
  if(alerts){const f=alerts.dataset;
    if((!f.filterCode||f.filterCode===a.code)&&(!f.filterSeverity||f.filterSeverity===a.severity)&&
       (!f.filterBattery||f.filterBattery===a.battery_id)){
      const tb=alerts.tBodies[0],tr=document.createElement("tr");
      tr.dataset.code=a.code;tr.dataset.severity=a.severity;tr.dataset.battery=a.battery_id;
      tr.innerHTML="<td>"+esc(a.ts)+'</td><td><a href="/battery/'+encodeURIComponent(a.battery_id)+'">'+
        esc(a.battery_id)+"</a></td><td>"+esc(a.code)+'</td><td><span class="sev sev-'+esc(a.severity)+'">'+
        esc(a.severity)+"</span></td><td>"+esc(a.status)+'</td><td class="num">'+esc(a.cell)+
        '</td><td class="num">'+esc(a.value)+"</td><td>"+esc(a.message)+"</td>";
      tb.insertBefore(tr,tb.firstChild);tr.classList.add("flash");
      while(tb.rows.length>500)tb.deleteRow(-1);}}
  const hist=document.getElementById("alert-history");
  if(hist&&hist.dataset.battery===a.battery_id){
    if(a.status==="raised"){const tb=hist.tBodies[0],tr=document.createElement("tr");
      tr.dataset.code=a.code;tr.dataset.severity=a.severity;tr.dataset.status="active";
      tr.innerHTML="<td>"+esc(a.code)+'</td><td><span class="sev sev-'+esc(a.severity)+'">'+esc(a.severity)+
        '</span></td><td class="num">'+esc(a.cell)+"</td><td>"+esc(a.ts)+'</td><td class="muted">active</td><td class="num">'+
        esc(a.value)+"</td><td>"+esc(a.message)+"</td>";
      tb.insertBefore(tr,tb.firstChild);tr.classList.add("flash");}
    scheduleRefresh(1000);}
}
let refreshTimer=null;
function scheduleRefresh(ms){if(refreshTimer)return;refreshTimer=setTimeout(()=>{refreshTimer=null;
  fetch(location.href,{cache:"no-store"}).then(r=>r.text()).then(html=>{
    const doc=new DOMParser().parseFromString(html,"text/html");
    for(const id of ["charts","alert-history","other-series"]){const o=document.getElementById(id),n=doc.getElementById(id);
      if(o&&n)o.replaceWith(n);}}).catch(()=>{});},ms);}
const es=new EventSource("/events");
es.addEventListener("row",e=>{try{onRow(JSON.parse(e.data));}catch(err){console.error(err);}});
es.addEventListener("alert",e=>{try{onAlert(JSON.parse(e.data));}catch(err){console.error(err);}});
es.onopen=()=>{if(status)status.textContent="● live";};
es.onerror=()=>{if(status)status.textContent="○ reconnecting";};
})();
"""  # noqa: E501


def _x(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def _num(v: Any) -> str:
    """A measured value for a table: 6 significant digits, no float noise."""
    return _x(v) if not isinstance(v, float) else f"{v:.6g}"


def _fmt(v: Any, digits: int) -> str:
    return "" if v is None else f"{float(v):.{digits}f}"


def _soc_text(row: Mapping[str, Any]) -> str:
    if row.get("soc") is None:
        return ""
    text = _fmt(row["soc"], 1)
    if row.get("soc_uncertainty") is not None:
        return f"{text} ± {_fmt(row['soc_uncertainty'], 1)}"
    if row.get("soc_confidence") is not None:
        return f"{text} (conf {_fmt(row['soc_confidence'], 2)})"
    return text


def _alert_badges(counts: Mapping[str, int]) -> tuple[str, int]:
    html, total = [], 0
    weight = {"critical": 1_000_000, "warning": 1_000, "info": 1}
    for sev in reversed(SEVERITIES):
        n = int(counts.get(sev, 0))
        total += n * weight[sev]
        if n:
            html.append(f'<span class="sev sev-{sev}">{sev} {n}</span>')
    return "".join(html), total


def _row_cells(row: Mapping[str, Any]) -> str:
    """The cells of a fleet row except the battery id (the same as the script's `cells`)."""
    badges, weight = _alert_badges(row.get("alerts_active") or {})
    cells = (
        ("soc", _x(_soc_text(row)), row.get("soc"), True),
        (
            "equivalent_cycles",
            _fmt(row.get("equivalent_cycles"), 2),
            row.get("equivalent_cycles"),
            True,
        ),
        ("cell_spread_mv", _fmt(row.get("cell_spread_mv"), 1), row.get("cell_spread_mv"), True),
        ("max_temperature", _fmt(row.get("max_temperature"), 1), row.get("max_temperature"), True),
        ("alerts", badges, weight, False),
        ("last_seen", _x(row.get("last_seen")), row.get("last_seen"), False),
        ("stale", "stale" if row.get("stale") else "", 1 if row.get("stale") else 0, False),
    )
    return "".join(
        f'<td data-col="{col}" data-value="{_x(value)}"{_NUM if num else ""}>{text}</td>'
        for col, text, value, num in cells
    )


_NUM = ' class="num"'


def _battery_href(battery_id: str, live: bool) -> str:
    return f"/battery/{quote(battery_id, safe='')}" if live else f"#battery-{_x(battery_id)}"


def _fleet_table(view: FleetView, *, live: bool) -> str:
    head = "".join(f'<th data-sort="{col}">{escape(label)}</th>' for col, label in FLEET_COLUMNS)
    rows = []
    for row in view.fleet_rows():
        bid = row["battery_id"]
        cls = ' class="stale"' if row.get("stale") else ""
        rows.append(
            f'<tr data-battery="{_x(bid)}"{cls}><td data-col="battery_id" data-value="{_x(bid)}">'
            f'<a href="{_battery_href(bid, live)}">{_x(bid)}</a></td>{_row_cells(row)}</tr>'
        )
    return (
        '<p><input id="fleet-filter" type="search" placeholder="filter batteries" '
        f'aria-label="filter batteries"> <span class="muted">{len(rows)} batteries</span></p>'
        f'<table id="fleet"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _page(title: str, body: str, *, live: bool, page: str) -> str:
    nav = (
        '<a href="/">fleet</a><a href="/alerts">alerts</a><span id="live-status">connecting</span>'
        if live
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f'<body data-live="{1 if live else 0}" data-page="{page}">'
        f"<header><h1>{escape(title)}</h1>{nav}</header><main>{body}</main>"
        f"<script>{_JS}</script></body></html>"
    )


def fleet_page(view: FleetView, *, live: bool) -> str:
    """The fleet table: one row per battery, sortable, filterable, updated by `row` events."""
    return _page("twin-stream fleet", _fleet_table(view, live=live), live=live, page="fleet")


# --- battery -----------------------------------------------------------------------------


def _markers(bv: BatteryView) -> list[Marker]:
    out = []
    for ep in bv.alert_history:
        if ep.get("raised_ts"):
            label = f"{ep['raised_ts']} {ep['severity']} {ep['code']}: {ep.get('message', '')}"
            out.append(Marker(parse_ts(ep["raised_ts"]), ep["severity"], label, ep["code"]))
    return out


def _aligned(
    a: tuple[list[int], list[float]], b: tuple[list[int], list[float]]
) -> tuple[list[int], list[float], list[float]]:
    bmap = dict(zip(*b, strict=True))
    ts, lo, hi = [], [], []
    for t, v in zip(*a, strict=True):
        if t in bmap:
            ts.append(t)
            lo.append(v)
            hi.append(bmap[t])
    return ts, lo, hi


def battery_charts(bv: BatteryView, *, max_points: int = 240, extra: bool = False) -> str:
    """The battery's charts (cells, soc, cycles, temperature; with `extra`, the other series)."""
    s = bv.series
    markers = _markers(bv)
    cells = ChartSpec("cells", "cell voltage min / mean / max", "V", markers=markers)
    if "min_cell_voltage" in s and "max_cell_voltage" in s:
        ts, lo, hi = _aligned(s["min_cell_voltage"], s["max_cell_voltage"])
        cells.bands.append(Band(ts, lo, hi, "min-max", "#1f77b4"))
    if "mean_cell_voltage" in s:
        cells.lines.append(Line(*s["mean_cell_voltage"], "mean", "#1f77b4"))
    soc = ChartSpec("soc", "SOC (OCV)", "%", markers=markers, y_range=(0.0, 100.0))
    if "soc_ocv" in s:
        ts, vals = s["soc_ocv"]
        unc = bv.uncertainty.get("soc_ocv")
        conf = bv.confidence.get("soc_ocv")
        if unc is not None:
            band = [(t, v, u) for t, v, u in zip(ts, vals, unc, strict=True) if u is not None]
            soc.bands.append(
                Band(
                    [b[0] for b in band],
                    [b[1] - b[2] for b in band],
                    [b[1] + b[2] for b in band],
                    "± uncertainty",
                    "#2ca02c",
                )
            )
        elif conf is not None:
            pts = [(t, c * 100) for t, c in zip(ts, conf, strict=True) if c is not None]
            soc.lines.append(
                Line([p[0] for p in pts], [p[1] for p in pts], "confidence x100", "#999", True)
            )
        soc.lines.append(Line(ts, vals, "SOC", "#2ca02c"))
    cycles = ChartSpec("cycles", "equivalent cycles", "", markers=markers)
    if "equivalent_cycles" in s:
        cycles.lines.append(Line(*s["equivalent_cycles"], "cycles", "#9467bd"))
    temp = ChartSpec("temperature", "max temperature", "°C", markers=markers)
    if "max_temperature" in s:
        temp.lines.append(Line(*s["max_temperature"], "max", "#d62728"))
    html = "".join(render(c, max_points=max_points) for c in (cells, soc, cycles, temp))
    out = f'<div class="charts" id="charts">{html}</div>'
    if extra:
        others = [
            render(
                ChartSpec(n, n, "", [Line(*s[n], n, "#555")], markers=markers),
                max_points=max_points,
            )
            for n in sorted(s)
            if n not in _MAIN_NAMES
        ]
        if others:
            out += (
                '<details id="other-series"><summary>other series</summary>'
                f'<div class="charts">{"".join(others)}</div></details>'
            )
    return out


def _history_table(bv: BatteryView, *, table_id: str | None) -> str:
    rows = []
    for ep in bv.alert_history:
        active = ep.get("cleared_ts") is None
        cleared = '<span class="muted">active</span>' if active else _x(ep["cleared_ts"])
        rows.append(
            f'<tr data-code="{_x(ep["code"])}" data-severity="{_x(ep["severity"])}" '
            f'data-status="{"active" if active else "cleared"}"><td>{_x(ep["code"])}</td>'
            f'<td><span class="sev sev-{_x(ep["severity"])}">{_x(ep["severity"])}</span></td>'
            f'<td class="num">{_x(ep.get("cell"))}</td><td>{_x(ep.get("raised_ts"))}</td>'
            f'<td>{cleared}</td><td class="num">{_num(ep.get("value"))}</td>'
            f"<td>{_x(ep.get('message'))}</td></tr>"
        )
    ident = f' id="{table_id}"' if table_id else ""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("code", "severity", "cell", "raised", "cleared", "value", "message")
    )
    return (
        f'<table{ident} class="alert-history" data-battery="{_x(bv.battery_id)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + ("" if rows else '<p class="muted">no alerts</p>')
    )


def _row_table(row: Mapping[str, Any], *, own: bool) -> str:
    head = "".join(f"<th>{escape(label)}</th>" for col, label in FLEET_COLUMNS[1:])
    ident = ' id="battery-row"' if own else ""
    return (
        f'<table class="battery-row"><thead><tr>{head}</tr></thead><tbody>'
        f'<tr{ident} data-battery="{_x(row["battery_id"])}">{_row_cells(row)}</tr></tbody></table>'
    )


def battery_page(view: FleetView, battery_id: str, *, live: bool) -> str:
    """One battery: its row, its charts with alert markers, its alert history."""
    bv = view.battery(battery_id)
    if bv is None:
        body = f"<p>battery <b>{_x(battery_id)}</b> is not (or no longer) in the view.</p>"
        return _page(f"battery {battery_id}", body, live=live, page="battery")
    body = (
        _row_table(bv.row, own=True)
        + "<h2>charts</h2>"
        + battery_charts(bv, extra=True)
        + "<h2>alert history</h2>"
        + _history_table(bv, table_id="alert-history")
    )
    return _page(f"battery {battery_id}", body, live=live, page="battery")


# --- alerts ------------------------------------------------------------------------------


def _options(choices: list[str], current: str | None, label: str) -> str:
    opts = [f'<option value="">all {label}</option>']
    for c in choices:
        sel = " selected" if c == current else ""
        opts.append(f'<option value="{_x(c)}"{sel}>{_x(c)}</option>')
    return "".join(opts)


def alerts_page(
    view: FleetView,
    *,
    code: str | None,
    severity: str | None,
    battery: str | None,
    live: bool,
) -> str:
    """The alert feed, newest first, filtered by code, severity and battery."""
    codes = sorted(set(view.alert_codes()) | ({code} if code else set()))
    form = (
        '<form method="get" action="/alerts" id="alert-filters">'
        f'<select name="code" aria-label="code">{_options(codes, code, "codes")}</select> '
        f'<select name="severity" aria-label="severity">'
        f"{_options(list(SEVERITIES), severity, 'severities')}</select> "
        f'<input name="battery" placeholder="battery" value="{_x(battery)}" aria-label="battery"> '
        '<button type="submit">filter</button></form>'
    )
    rows = []
    for a in view.alerts(code=code, severity=severity, battery=battery, limit=500):
        bid = str(a.get("battery_id", ""))
        sev = _x(a.get("severity"))
        rows.append(
            f'<tr data-code="{_x(a.get("code"))}" data-severity="{sev}" data-battery="{_x(bid)}">'
            f'<td>{_x(a.get("ts"))}</td><td><a href="{_battery_href(bid, live)}">{_x(bid)}</a></td>'
            f'<td>{_x(a.get("code"))}</td><td><span class="sev sev-{sev}">{sev}</span></td>'
            f'<td>{_x(a.get("status"))}</td><td class="num">{_x(a.get("cell"))}</td>'
            f'<td class="num">{_num(a.get("value"))}</td><td>{_x(a.get("message"))}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("ts", "battery", "code", "severity", "status", "cell", "value", "message")
    )
    table = (
        f'<table id="alerts" data-filter-code="{_x(code)}" data-filter-severity="{_x(severity)}" '
        f'data-filter-battery="{_x(battery)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _page("twin-stream alerts", form + table, live=live, page="alerts")


# --- report ------------------------------------------------------------------------------


def report_page(view: FleetView, summary: Mapping[str, Any], *, max_points: int = 240) -> str:
    """Every battery's views and a fleet summary in one self-contained file."""
    rows = view.fleet_rows()
    active = dict.fromkeys(SEVERITIES, 0)
    with_alerts = 0
    for r in rows:
        for sev, n in (r.get("alerts_active") or {}).items():
            active[sev] = active.get(sev, 0) + n
        with_alerts += any((r.get("alerts_active") or {}).values())
    facts = "".join(
        f'<tr><th>{_x(str(k).replace("_", " "))}</th><td class="num">{_x(v)}</td></tr>'
        for k, v in summary.items()
        if not isinstance(v, dict | list)
    )
    facts += (
        f'<tr><th>batteries in the report</th><td class="num">{len(rows)}</td></tr>'
        "<tr><th>batteries with active alerts at the end</th>"
        f'<td class="num">{with_alerts}</td></tr>'
        + "".join(
            f'<tr><th>active {sev} alerts at the end</th><td class="num">{n}</td></tr>'
            for sev, n in active.items()
        )
    )
    if view.evictions:
        facts += (
            "<tr><th>batteries left out (view bound)</th>"
            f'<td class="num">{view.evictions}</td></tr>'
        )
    parts = [
        '<section id="fleet-summary"><h2>fleet summary</h2>',
        f'<table class="summary">{facts}</table><h2>fleet</h2>',
        _fleet_table(view, live=False),
        "</section>",
    ]
    for r in rows:
        bv = view.battery(r["battery_id"])
        if bv is None:
            continue
        bid = _x(bv.battery_id)
        parts.append(
            f'<section class="battery" id="battery-{bid}"><h2>{bid} '
            '<a href="#fleet-summary" class="muted" style="font-size:12px">fleet</a></h2>'
            + _row_table(bv.row, own=False)
            + battery_charts(bv, max_points=max_points).replace(' id="charts"', "")
            + "<h3>alert history</h3>"
            + _history_table(bv, table_id=f"alert-history-{bid}")
            + "</section>"
        )
    return _page("twin-stream replay report", "".join(parts), live=False, page="report")
