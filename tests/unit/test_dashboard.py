"""The dashboard's server without a broker: routes, and the server-sent events' batching and
catch-up (what a reconnecting browser, or a page rendered just before its first connection,
receives), on the real FleetView."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from twin_stream.config.settings import Settings
from twin_stream.dashboard.consumer import Feed
from twin_stream.dashboard.server import SEEN_COOKIE, Client, Hub, make_app
from twin_stream.view.fleet import FleetView


def est(bid: str, second: int, name: str = "soc_ocv", value: float = 50.0) -> dict[str, Any]:
    return {
        "battery_id": bid,
        "ts": f"2026-01-01T00:00:{second:02d}.000Z",
        "model": "soc_ocv_estimation",
        "name": name,
        "value": value,
        "unit": "%",
        "confidence": 0.8,
    }


def alert(bid: str, second: int, status: str = "raised") -> dict[str, Any]:
    return {
        "battery_id": bid,
        "ts": f"2026-01-01T00:00:{second:02d}.000Z",
        "model": "voltage_monitor",
        "code": "cell_over_voltage",
        "severity": "critical",
        "status": status,
        "cell": 3,
        "value": 4.31,
        "threshold": 4.25,
        "unit": "V",
        "message": "cell 3 over voltage",
    }


def feed(view: FleetView, hub: Hub, kind: str, rec: dict[str, Any]) -> None:
    view.add(kind, rec)  # type: ignore[arg-type]
    hub.on_record(kind, rec)  # type: ignore[arg-type]


def drain(c: Client) -> bytes:
    out = []
    while not c.queue.empty():
        chunk = c.queue.get_nowait()
        assert chunk is not None
        out.append(chunk)
    return b"".join(out)


def events(raw: bytes) -> list[tuple[str, str]]:
    got = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            got.append((fields["event"], fields["data"]))
    return got


def test_a_tick_sends_each_changed_row_once_then_the_new_alerts() -> None:
    view = FleetView()
    hub = Hub(view)
    client = hub.catch_up(None)
    for s in range(10):  # ten changes of one battery in one tick
        feed(view, hub, "estimate", est("b1", s, value=50 + s))
    feed(view, hub, "alert", alert("b1", 9))
    hub.flush()
    got = events(drain(client))
    assert [e for e, _ in got] == ["alert", "row"], got
    assert '"battery_id":"b1"' in got[1][1] and '"cell_over_voltage"' in got[0][1]
    hub.flush()  # nothing new: nothing sent
    assert drain(client) == b""


def test_reconnect_with_last_event_id_gets_what_it_missed_once() -> None:
    view = FleetView()
    hub = Hub(view)
    feed(view, hub, "estimate", est("b1", 1))
    feed(view, hub, "estimate", est("b2", 1))
    feed(view, hub, "alert", alert("b1", 1))
    hub.flush()
    seen = (view.version, hub.flushed_seq)  # what the page had when its stream broke
    feed(view, hub, "estimate", est("b2", 2))
    feed(view, hub, "alert", alert("b2", 2))
    hub.flush()
    back = hub.catch_up(seen)
    got = events(drain(back))
    assert [e for e, _ in got] == ["alert", "row"], got
    assert '"b2"' in got[0][1] and '"b2"' in got[1][1]
    # an alert received but not yet flushed reaches it once, with the next tick
    feed(view, hub, "alert", alert("b1", 3, "cleared"))
    hub.flush()
    assert [e for e, _ in events(drain(back))] == ["alert", "row"]


def test_a_page_rendered_before_a_tick_does_not_get_its_alerts_twice() -> None:
    view = FleetView()
    hub = Hub(view)
    feed(view, hub, "alert", alert("b1", 1))  # not flushed yet; the page already shows it
    v, s = hub.seen().split(".")
    client = hub.catch_up((int(v), int(s)))
    hub.flush()
    assert [e for e, _ in events(drain(client))] == ["row"]


def test_a_stalled_client_is_dropped_not_buffered_without_end() -> None:
    view = FleetView()
    hub = Hub(view)
    client = hub.catch_up(None)
    for s in range(400):
        feed(view, hub, "estimate", est("b1", s % 60, value=float(s)))
        hub.flush()
    assert client.dropped and client.queue.qsize() <= client.queue.maxsize


async def test_routes() -> None:
    settings = Settings()
    view = FleetView(max_batteries=10, points_per_series=20)
    hub = Hub(view)
    for s in range(5):
        feed(view, hub, "estimate", est("b1", s))
        feed(view, hub, "estimate", est("b1", s, name="max_cell_voltage", value=4.1))
    feed(view, hub, "alert", alert("b1", 4))
    hub.flush()
    app = make_app(settings, view, Feed(settings, view, hub.on_record), hub)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/healthz")
        assert r.status == 503  # the feed never connected
        health = await r.json()
        assert health["view"]["batteries"] == 1 and health["view"]["memory_bytes"] > 0
        r = await client.get("/")
        assert r.status == 200 and 'data-battery="b1"' in await r.text()
        assert SEEN_COOKIE in r.cookies
        assert r.headers["Cache-Control"] == "no-store"
        r = await client.get("/battery/b1")
        assert r.status == 200 and 'class="chart"' in await r.text()
        r = await client.get("/battery/nope<script>")
        assert r.status == 404 and "<script>" not in await r.text()
        r = await client.get("/alerts", params={"code": "cell_over_voltage"})
        assert r.status == 200 and 'data-code="cell_over_voltage"' in await r.text()
        rows = await (await client.get("/api/fleet")).json()
        assert [x["battery_id"] for x in rows] == ["b1"]
        r = await client.get("/api/alerts", params={"severity": "info"})
        assert await r.json() == []
        assert (await client.get("/api/alerts", params={"limit": "x"})).status == 400

        # the event stream: catch-up from Last-Event-ID, then live ticks
        r = await client.get("/events", headers={"Last-Event-ID": "0.0"})
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        assert first.startswith(b"retry:") or b"event:" in first
        buf = b""
        while b"event: row" not in buf:
            buf += await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        feed(view, hub, "alert", alert("b1", 5, "cleared"))
        hub.flush()
        buf = b""
        while b"event: alert" not in buf:
            buf += await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        assert b'"status":"cleared"' in buf
        r.close()
