"""FleetView and the live pages: fleet rows from hand-made records, ring buffers, bounds,
the alerts feed, the DOM hooks of the dashboard's contract, and the memory bound."""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import pytest

from twin_stream.view import FleetView, alerts_page, battery_page, fleet_page, format_ts
from twin_stream.view.fleet import parse_ts

T0 = parse_ts("2026-01-01T00:00:00.000Z")


def ts(s: float) -> str:
    return format_ts(T0 + int(s * 1000))


def est(bid: str, t: float, name: str, value: float, model: str = "m", **kw: Any) -> dict:
    return {"battery_id": bid, "ts": ts(t), "model": model, "name": name, "value": value,
            "unit": "", "confidence": kw.pop("confidence", None), **kw}  # fmt: skip


def alert(bid: str, t: float, code: str, severity: str, status: str, cell: int | None = 1) -> dict:
    return {"battery_id": bid, "ts": ts(t), "model": "m", "code": code, "severity": severity,
            "status": status, "cell": cell, "value": 4.3, "threshold": 4.2, "unit": "V",
            "message": f"{code} {severity} {status}"}  # fmt: skip


def test_ts_round_trip() -> None:
    assert format_ts(parse_ts("2026-03-04T05:06:07.089Z")) == "2026-03-04T05:06:07.089Z"


def test_fleet_row_values() -> None:
    v = FleetView()
    v.add_estimate(est("b1", 0, "min_cell_voltage", 3.700, "voltage_monitor"))
    v.add_estimate(est("b1", 0, "max_cell_voltage", 3.750, "voltage_monitor"))
    v.add_estimate(est("b1", 60, "min_cell_voltage", 3.600, "voltage_monitor"))
    # the newest pair is incomplete: the spread stays that of ts 0
    assert v.row("b1")["cell_spread_mv"] == pytest.approx(50.0)
    v.add_estimate(est("b1", 60, "max_cell_voltage", 3.683, "voltage_monitor"))
    v.add_estimate(est("b1", 60, "soc_ocv", 55.5, "soc", confidence=0.8))
    v.add_estimate(est("b1", 60, "equivalent_cycles", 1.25, "eq"))
    v.add_estimate(est("b1", 60, "max_temperature", 31.5, "voltage_monitor"))
    v.add_estimate(est("b1", 30, "max_temperature", 99.0, "voltage_monitor"))  # older: not latest
    row = v.row("b1")
    assert row is not None
    assert set(row) == {"battery_id", "soc", "soc_confidence", "soc_uncertainty",
                        "equivalent_cycles", "cell_spread_mv", "max_temperature",
                        "alerts_active", "last_seen", "stale"}  # fmt: skip
    assert row["cell_spread_mv"] == pytest.approx(83.0)
    assert (row["soc"], row["soc_confidence"], row["soc_uncertainty"]) == (55.5, 0.8, None)
    assert row["equivalent_cycles"] == 1.25
    assert row["max_temperature"] == 31.5
    assert row["last_seen"] == ts(60)
    assert row["alerts_active"] == {"info": 0, "warning": 0, "critical": 0}
    assert row["stale"] is False
    v.add_estimate(est("b1", 120, "soc_ocv", 54.0, "soc", confidence=0.9, uncertainty=2.5))
    assert v.row("b1")["soc_uncertainty"] == 2.5


def test_alerts_active_escalation_and_stale() -> None:
    v = FleetView()
    v.add_alert(alert("b1", 10, "cell_over_voltage", "warning", "raised", 5))
    v.add_alert(alert("b1", 11, "cell_over_voltage", "critical", "raised", 5))
    v.add_alert(alert("b1", 12, "cell_over_voltage", "warning", "raised", 6))
    v.add_alert(alert("b1", 13, "cell_over_temperature", "info", "raised", None))
    assert v.row("b1")["alerts_active"] == {"info": 1, "warning": 1, "critical": 1}
    v.add_alert(alert("b1", 20, "cell_over_voltage", "critical", "cleared", 5))
    assert v.row("b1")["alerts_active"] == {"info": 1, "warning": 2, "critical": 0}
    v.add_alert(alert("b1", 21, "cell_over_voltage", "warning", "cleared", 5))
    v.add_alert(alert("b1", 22, "cell_over_voltage", "warning", "cleared", 6))
    assert v.row("b1")["alerts_active"] == {"info": 1, "warning": 0, "critical": 0}
    assert v.row("b1")["stale"] is False
    v.add_alert(alert("b1", 30, "telemetry_stale", "warning", "raised", None))
    assert v.row("b1")["stale"] is True
    # the stale alert carries the worker's wall clock: last seen stays the battery's last record
    assert v.row("b1")["last_seen"] == ts(22)
    v.add_alert(alert("b1", 40, "telemetry_stale", "warning", "cleared", None))
    assert v.row("b1")["stale"] is False
    hist = v.battery("b1").alert_history  # newest first
    assert [(h["code"], h["cell"]) for h in hist] == [
        ("telemetry_stale", None), ("cell_over_temperature", None),
        ("cell_over_voltage", 6), ("cell_over_voltage", 5),
    ]  # fmt: skip
    ep = hist[3]  # one episode for the escalation, at its highest severity
    assert (ep["severity"], ep["raised_ts"], ep["cleared_ts"]) == ("critical", ts(10), ts(21))
    assert hist[1]["cleared_ts"] is None


def test_clear_without_raise_is_ignored() -> None:
    v = FleetView()
    v.add_alert(alert("b1", 10, "cell_over_voltage", "warning", "cleared"))
    assert v.row("b1")["alerts_active"]["warning"] == 0
    assert v.battery("b1").alert_history == []


def test_ring_keeps_newest_n_oldest_first() -> None:
    v = FleetView(points_per_series=5)
    for i in range(12):
        v.add_estimate(est("b1", i, "equivalent_cycles", float(i)))
        v.add_estimate(est("b1", i, "throughput_ah", 10.0 * i))
    ts_ms, vals = v.battery("b1").series["equivalent_cycles"]
    assert vals == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ts_ms == [T0 + i * 1000 for i in range(7, 12)]
    assert v.battery("b1").series["throughput_ah"][1] == [70.0, 80.0, 90.0, 100.0, 110.0]
    v.add_estimate(est("b1", 2, "equivalent_cycles", -1.0))  # older than the ring: dropped
    assert v.battery("b1").series["equivalent_cycles"][1][0] == 7.0
    assert v.dropped_points == 1


def test_span_mode_covers_the_whole_run() -> None:
    v = FleetView(points_per_series=8, keep="span")
    for i in range(100):
        v.add_estimate(est("b1", i, "x", float(i)))
        v.add_estimate(est("b1", i, "y", float(-i)))
    _, vals = v.battery("b1").series["x"]
    assert 4 <= len(vals) <= 8 and vals[0] == 0.0 and vals[-1] > 80
    assert vals == sorted(vals)
    assert v.battery("b1").series["y"][1] == [-x for x in vals]


def test_unknown_names_are_series() -> None:
    v = FleetView()
    v.add_estimate(est("b1", 0, "something_new", 1.5, "future_model"))
    assert v.battery("b1").series["something_new"] == ([T0], [1.5])


def test_eviction_beyond_max_batteries() -> None:
    v = FleetView(max_batteries=3)
    for b in ("a", "b", "c"):
        v.add_estimate(est(b, 0, "equivalent_cycles", 1.0))
    v.add_estimate(est("a", 1, "equivalent_cycles", 2.0))  # a is now the most recent
    v.add_estimate(est("d", 1, "equivalent_cycles", 1.0))
    assert [r["battery_id"] for r in v.fleet_rows()] == ["a", "c", "d"]
    assert v.evictions == 1 and v.battery("b") is None and v.row("b") is None


def test_version_and_changed_since() -> None:
    v = FleetView()
    v.add_estimate(est("a", 0, "equivalent_cycles", 1.0))
    mark = v.version
    v.add_estimate(est("b", 0, "equivalent_cycles", 1.0))
    v.add_alert(alert("c", 0, "x", "info", "raised"))
    assert v.version == mark + 2
    assert v.changed_since(mark) == ["b", "c"]
    assert v.changed_since(0) == ["a", "b", "c"]


def test_alerts_filter_order_and_cap() -> None:
    v = FleetView(alerts_kept=4)
    v.add_alert(alert("a", 1, "cell_over_voltage", "warning", "raised"))
    v.add_alert(alert("b", 5, "cell_over_voltage", "critical", "raised"))
    v.add_alert(alert("a", 3, "cell_imbalance", "warning", "raised"))
    v.add_alert(alert("b", 4, "cell_imbalance", "warning", "raised"))
    assert [a["ts"] for a in v.alerts()] == [ts(5), ts(4), ts(3), ts(1)]
    assert [a["battery_id"] for a in v.alerts(code="cell_imbalance")] == ["b", "a"]
    assert [a["ts"] for a in v.alerts(severity="critical")] == [ts(5)]
    assert [a["ts"] for a in v.alerts(battery="a", severity="warning")] == [ts(3), ts(1)]
    assert len(v.alerts(limit=2)) == 2
    v.add_alert(alert("c", 6, "x", "info", "raised"))  # cap 4: the first one goes
    assert ts(1) not in [a["ts"] for a in v.alerts()]
    assert v.alerts()[0]["battery_id"] == "c"


def _fed_view() -> FleetView:
    v = FleetView()
    for i in range(30):
        for name, val in (
            ("min_cell_voltage", 3.6 + i / 1000),
            ("max_cell_voltage", 3.7),
            ("mean_cell_voltage", 3.65),
            ("max_temperature", 30.0 + i / 10),
        ):
            v.add_estimate(est("bat-1", i * 60, name, val, "voltage_monitor"))  # fmt: skip
        v.add_estimate(est("bat-1", i * 60, "equivalent_cycles", i / 100, "eq_cycles"))
        v.add_estimate(est("bat-1", i * 60 + 7, "soc_ocv", 50 + i, "soc", confidence=0.5))
        v.add_estimate(est("bat-2", i * 60, "equivalent_cycles", i / 50, "eq_cycles"))
    v.add_alert(alert("bat-1", 600, "cell_over_voltage", "critical", "raised", 3))
    v.add_alert(alert("bat-2", 900, "telemetry_stale", "warning", "raised", None))
    return v


def test_fleet_page_hooks() -> None:
    html = fleet_page(_fed_view(), live=True)
    assert '<table id="fleet">' in html and 'id="fleet-filter"' in html
    for col in ("soc", "equivalent_cycles", "cell_spread_mv", "max_temperature", "alerts",
                "last_seen", "stale"):  # fmt: skip
        assert f'<th data-sort="{col}">' in html
        assert len(re.findall(f'data-col="{col}"', html)) == 2
    assert 'data-battery="bat-1"' in html and 'data-battery="bat-2"' in html
    assert 'EventSource("/events")' in html and 'href="/battery/bat-1"' in html
    assert "EventSource" in fleet_page(_fed_view(), live=False)  # the script is shared ...
    assert 'data-live="0"' in fleet_page(_fed_view(), live=False)  # ... but off when not live


def test_battery_page_hooks() -> None:
    html = battery_page(_fed_view(), "bat-1", live=True)
    for series in ("cells", "soc", "cycles", "temperature"):
        svg = re.search(f'<svg class="chart" data-series="{series}".*?</svg>', html)
        assert svg is not None, series
        assert '<path class="line"' in svg.group(0)
        assert 'class="alert-marker"' in svg.group(0)
    assert '<table id="alert-history"' in html and "cell_over_voltage" in html
    assert "not (or no longer) in the view" in battery_page(_fed_view(), "nope", live=True)


def test_alerts_page_hooks_and_filters() -> None:
    v = _fed_view()
    html = alerts_page(v, code=None, severity=None, battery=None, live=True)
    assert '<table id="alerts"' in html
    assert (
        '<tr data-code="cell_over_voltage" data-severity="critical" data-battery="bat-1">' in html
    )
    assert 'data-battery="bat-2"' in html
    html = alerts_page(v, code="telemetry_stale", severity=None, battery=None, live=True)
    assert 'data-code="cell_over_voltage"' not in html and 'data-code="telemetry_stale"' in html


def test_pages_escape_values() -> None:
    v = FleetView()
    v.add_alert({**alert("b<1>", 0, "x", "info", "raised"), "message": "<script>x</script>"})
    for html in (fleet_page(v, live=True), alerts_page(v, code=None, severity=None, battery=None,
                 live=True), battery_page(v, "b<1>", live=True)):  # fmt: skip
        assert "<script>x</script>" not in html and "b<1>" not in html


ALL_SERIES = {
    "eq_cycles": ("equivalent_cycles", "throughput_ah"),
    "voltage_monitor": (
        "min_cell_voltage", "max_cell_voltage", "mean_cell_voltage", "max_temperature",
    ),
    "imbalance_analysis": ("voltage_spread", "relative_spread_pct", "soc_imbalance"),
    "soc_ocv_estimation": ("soc_ocv", "available_energy"),
    "engine": ("data_gap",),
}  # fmt: skip
MEMORY_BOUND = 320 * 2**20  # measured ~280 MiB: rings ~215, 10 episodes x 10,000 ~50


def _fill(v: FleetView, bid: str, pts: int, *, fast: bool) -> None:
    """Every known series of `bid` full, each model at its own times, with confidence and
    uncertainty. `fast`: one point per series through add_estimate (which allocates the rings
    at full size), then the rings' rows written directly (same memory, 30x fewer calls)."""
    for k, (model, names) in enumerate(ALL_SERIES.items()):
        for i in range(1 if fast else pts):
            for name in names:
                v.add_estimate(est(bid, i * 60 + k, name, 1.0 + i, model, confidence=0.5,
                                   uncertainty=1.5))  # fmt: skip
        if fast:
            ring = v._bats[bid].rings[model]
            ring.ts[:] = range(0, pts * 60_000, 60_000)
            ring.cols[:] = 1.0
            ring.count, ring.head, ring.newest = pts, 0, ring.base + (pts - 1) * 60_000
    for j in range(v.history_per_battery):
        v.add_alert(alert(bid, 20_000 + j, f"code_{j % 5}", "warning", "raised", j))


def test_fast_fill_matches_real_fill() -> None:
    slow, fast = FleetView(points_per_series=20), FleetView(points_per_series=20)
    _fill(slow, "b", 20, fast=False)
    _fill(fast, "b", 20, fast=True)
    assert slow.memory_bytes() == fast.memory_bytes()
    s_bv, f_bv = slow.battery("b"), fast.battery("b")
    assert {n: len(p[1]) for n, p in s_bv.series.items()} == {
        n: len(p[1]) for n, p in f_bv.series.items()
    }


def test_memory_bound_for_10000_full_batteries() -> None:
    """10,000 batteries, every known series full (240 points), 50 alert episodes each, and a
    full alert feed: memory_bytes() and what tracemalloc sees both under the bound."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    v = FleetView()
    n_bat, pts = 10_000, v.points_per_series
    bids = [f"bat-{i:05d}" for i in range(n_bat)]
    _fill(v, bids[0], pts, fast=False)
    for bid in bids[1:]:
        _fill(v, bid, pts, fast=True)
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    estimate = v.memory_bytes()
    print(f"\nFleetView 10,000 batteries full: memory_bytes {estimate / 2**20:.1f} MiB, "
          f"tracemalloc {traced / 2**20:.1f} MiB")  # fmt: skip
    assert len(v) == n_bat and v.evictions == 0 and len(v.alerts(limit=10**6)) == v.alerts_kept
    for bid in (bids[0], bids[-1]):
        bv = v.battery(bid)
        assert all(len(bv.series[n][1]) == pts for names in ALL_SERIES.values() for n in names)
        assert len(bv.alert_history) == v.history_per_battery
    assert estimate <= MEMORY_BOUND
    assert traced <= MEMORY_BOUND
    assert abs(estimate - traced) <= 0.25 * traced  # the estimate is honest
