"""The live dashboard's web server (aiohttp, already installed with faust: no second web
framework for three pages and an event stream).

Routes (bound to ``dashboard.bind``, 127.0.0.1 unless configured; no authentication):

=====================  ===============================================================
``/``                  the fleet: one row per battery, sortable, filterable, live
``/battery/{id}``      one battery's charts and alert history, live
``/alerts``            the alert feed; query ``code``, ``severity``, ``battery`` filter it
``/events``            server-sent events: ``event: row`` (a fleet row, JSON) and
                       ``event: alert`` (an alert record, JSON)
``/healthz``           JSON: the feed's state and ``memory_bytes`` of the view; 503 while
                       the broker cannot be read
``/api/fleet``         JSON: the fleet rows (for scripts)
``/api/alerts``        JSON: the alerts, newest first (same filters, ``limit`` <= 5000)
=====================  ===============================================================

Live updates: the pages are rendered from the view (``twin_stream.view.pages``) and then
follow ``/events``. Every ``TICK_S`` (200 ms) the :class:`Hub` asks the view which batteries'
rows changed since the last tick (``FleetView.changed_since``) and sends each changed row
once, serialised once for all clients, then the alerts that arrived meanwhile. A battery
that changes 50 times in a tick costs one row. Each tick's last event carries the id
``<view version>.<alert sequence>``: a browser that reconnects (EventSource does so by
itself) sends it back as ``Last-Event-ID`` and receives the rows changed and the alerts
missed since, so a page never needs reloading. The first connection of a page has no such
id; the page's own response set the cookie ``twin_seen`` to the same pair, so the events
between rendering and connecting are not lost either. A client that falls more than
``CLIENT_QUEUE`` ticks behind is disconnected and catches up the same way when it
reconnects.

Memory: the view is bounded (``dashboard.max_batteries`` batteries x
``dashboard.points_per_series`` points per series, plus ``alerts_kept`` alerts);
``/healthz`` reports ``FleetView.memory_bytes()`` of the current view and per battery.
Measured full (10,000 batteries x the 11 estimate series of today's models x 240 points,
plus 5,000 alerts): ``memory_bytes`` 203 MB, tracemalloc 195 MB (about 20 KB a battery);
rendering the fleet page then takes 0.5 s and a tick where every row changed 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from twin_stream.config.settings import Settings
from twin_stream.dashboard.consumer import Feed, Kind
from twin_stream.view.fleet import FleetView
from twin_stream.view.pages import alerts_page, battery_page, fleet_page

log = logging.getLogger("twin_stream.dashboard")

TICK_S = 0.2
"""How often changed rows and new alerts are sent to the browsers."""
CLIENT_QUEUE = 300
"""Ticks a client may fall behind (a stalled tab) before it is disconnected."""
ALERTS_REPLAYED = 2000
"""Recent alerts kept to resend to a client that reconnects."""
KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies and the browser from closing an idle stream."""
SEEN_COOKIE = "twin_seen"

VIEW = web.AppKey("view", FleetView)
FEED = web.AppKey("feed", Feed)
HUB: web.AppKey[Hub] = web.AppKey("hub")
SETTINGS = web.AppKey("settings", Settings)
STARTED = web.AppKey("started", float)


def _frame(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _id_frame(version: int, seq: int) -> bytes:
    return f"id: {version}.{seq}\n\n".encode()  # no data: sets lastEventId only


def _parse_seen(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    v, _, s = text.partition(".")
    try:
        return int(v), int(s or 0)
    except ValueError:
        return None


@dataclass(eq=False)
class Client:
    """One open ``/events`` stream."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    min_alert_seq: int = 0
    """Alerts up to this sequence number are already on the client's page."""
    dropped: bool = False

    def push(self, chunk: bytes | None) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:  # too slow: disconnect; it reconnects and catches up
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class Hub:
    """Fans the view's changes out to the ``/events`` clients, one batch per tick."""

    def __init__(self, view: FleetView) -> None:
        self.view = view
        self.clients: set[Client] = set()
        self.alert_seq = 0
        """Alerts received so far (the sequence number of the newest)."""
        self.flushed_seq = 0
        self.sent_version = view.version
        self.pending: list[tuple[int, bytes]] = []
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=ALERTS_REPLAYED)
        self.ticks = 0
        self.rows_sent = 0

    def on_record(self, kind: Kind, rec: Mapping[str, Any]) -> None:
        if kind != "alert":
            return
        self.alert_seq += 1
        item = (self.alert_seq, _frame("alert", rec))
        self.pending.append(item)
        self.recent.append(item)

    def seen(self) -> str:
        """The position a page rendered now shows: ``<view version>.<alert sequence>``."""
        return f"{self.view.version}.{self.alert_seq}"

    def _rows(self, since: int) -> bytes:
        out = []
        for bid in self.view.changed_since(since):
            row = self.view.row(bid)
            if row is not None:
                out.append(_frame("row", row))
        self.rows_sent += len(out)
        return b"".join(out)

    def flush(self) -> None:
        """Send the rows changed and the alerts received since the last flush."""
        self.ticks += 1
        version = self.view.version
        rows = b""
        if version != self.sent_version:
            rows = self._rows(self.sent_version)
            self.sent_version = version
        alerts, self.pending = self.pending, []
        self.flushed_seq = self.alert_seq
        if not rows and not alerts:
            return
        tail = _id_frame(version, self.flushed_seq)
        for c in list(self.clients):
            mine = b"".join(f for seq, f in alerts if seq > c.min_alert_seq)
            c.push(mine + rows + tail)

    def catch_up(self, seen: tuple[int, int] | None) -> Client:
        """A new client; given what its page shows (`seen`), what it missed is queued."""
        client = Client()
        version, seq = self.view.version, self.flushed_seq
        if seen is not None:
            v_seen, s_seen = seen
            client.min_alert_seq = min(s_seen, self.alert_seq)
            rows = self._rows(0 if v_seen > version else v_seen)
            missed = [f for s, f in self.recent if s_seen < s <= seq]
            if rows or missed:
                client.push(b"".join(missed) + rows + _id_frame(version, seq))
        else:
            client.min_alert_seq = self.alert_seq
        self.clients.add(client)
        return client

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(asyncio.QueueFull):
                c.queue.put_nowait(None)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
            self.flush()


# --------------------------------------------------------------------------- handlers

_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # self-contained pages: inline CSS, JS and SVG, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self' 'unsafe-inline' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


def _page(request: web.Request, html: str, status: int = 200) -> web.Response:
    resp = web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=_HTML_HEADERS
    )
    # what this page shows, for its first /events connection (see the module's doc)
    resp.set_cookie(
        SEEN_COOKIE, request.app[HUB].seen(), path="/", samesite="Strict", httponly=True
    )
    return resp


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _filters(request: web.Request) -> dict[str, str | None]:
    q = request.query
    return {k: (q.get(k) or "").strip() or None for k in ("code", "severity", "battery")}


async def fleet(request: web.Request) -> web.Response:
    return _page(request, fleet_page(request.app[VIEW], live=True))


async def battery(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    bid = request.match_info["battery_id"]
    if view.battery(bid) is None:
        from html import escape

        return web.Response(
            text=f"<!doctype html><title>unknown battery</title><p>No battery "
            f"<b>{escape(bid)}</b> in the view (yet). <a href='/'>The fleet</a></p>",
            status=404,
            content_type="text/html",
            headers=_HTML_HEADERS,
        )
    return _page(request, battery_page(view, bid, live=True))


async def alerts(request: web.Request) -> web.Response:
    return _page(request, alerts_page(request.app[VIEW], live=True, **_filters(request)))


async def api_fleet(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].fleet_rows())


async def api_alerts(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(5000, int(request.query.get("limit", "500"))))
    except ValueError:
        return _json({"error": "limit: an integer"}, 400)
    return _json(request.app[VIEW].alerts(limit=limit, **_filters(request)))


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    view, feed, hub, cfg = app[VIEW], app[FEED], app[HUB], app[SETTINGS]
    status = await feed.status()
    memory = view.memory_bytes()
    body = {
        "status": "ok" if feed.connected else "waiting for the broker",
        "uptime_s": round(time.monotonic() - app[STARTED], 1),
        "feed": status,
        "topics": {"alerts": cfg.topics.alerts, "estimates": cfg.topics.estimates},
        "view": {
            "batteries": len(view),
            "max_batteries": cfg.dashboard.max_batteries,
            "points_per_series": cfg.dashboard.points_per_series,
            "version": view.version,
            "memory_bytes": memory,
            "memory_bytes_per_battery": memory // len(view) if len(view) else None,
        },
        "events": {"clients": len(hub.clients), "rows_sent": hub.rows_sent, "ticks": hub.ticks},
    }
    return _json(body, 200 if feed.connected else 503)


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    seen = _parse_seen(request.headers.get("Last-Event-ID")) or _parse_seen(
        request.cookies.get(SEEN_COOKIE)
    )
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    client = hub.catch_up(seen)
    try:
        await resp.write(b"retry: 2000\n: twin-stream dashboard events\n\n")
        while True:
            try:
                chunk = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                chunk = b": keepalive\n\n"
            if chunk is None:  # dropped (too slow) or the server stops
                break
            await resp.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.clients.discard(client)
    return resp


# --------------------------------------------------------------------------- the app


def make_app(settings: Settings, view: FleetView, feed: Feed, hub: Hub) -> web.Application:
    """The aiohttp application (without the feed and the hub's ticks: see :class:`Dashboard`)."""
    app = web.Application()
    app[VIEW] = view
    app[FEED] = feed
    app[HUB] = hub
    app[SETTINGS] = settings
    app[STARTED] = time.monotonic()
    app.router.add_get("/", fleet)
    app.router.add_get("/battery/{battery_id}", battery)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/fleet", api_fleet)
    app.router.add_get("/api/alerts", api_alerts)
    return app


class Dashboard:
    """The dashboard in a running event loop: ``await start()``, ``url``, ``await close()``.

    `twin-stream dashboard` runs one until a signal; `twin-stream demo` runs one beside its
    own work, in the same loop."""

    def __init__(self, settings: Settings, *, bind: str | None = None, port: int | None = None):
        d = settings.dashboard
        self.settings = settings
        self.bind = d.bind if bind is None else bind
        self.port = d.port if port is None else port
        self.view = FleetView(max_batteries=d.max_batteries, points_per_series=d.points_per_series)
        self.hub = Hub(self.view)
        self.feed = Feed(settings, self.view, self.hub.on_record)
        self.app = make_app(settings, self.view, self.feed, self.hub)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = self.bind if self.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Listen (raises OSError if the address is taken), then start reading the topics."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.bind, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:  # an OS-chosen port: say which
            self.port = int(runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self.feed.run(self._stop), name="dashboard-feed"),
            asyncio.create_task(self.hub.run(self._stop), name="dashboard-hub"),
        ]

    def failed(self) -> BaseException | None:
        """The exception that ended the feed or the ticks, if one did."""
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None

    async def close(self) -> None:
        self._stop.set()
        self.hub.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve(
    settings: Settings,
    *,
    bind: str | None = None,
    port: int | None = None,
    on_ready: Callable[[Dashboard], None] | None = None,
) -> None:
    """Run a dashboard until SIGINT or SIGTERM."""
    dash = Dashboard(settings, bind=bind, port=port)
    await dash.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(dash)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            exc = dash.failed()
            if exc is not None:
                raise exc
    finally:
        await dash.close()


def run_dashboard(
    settings: Settings,
    *,
    bind: str | None = None,
    port: int | None = None,
    on_ready: Callable[[Dashboard], None] | None = None,
) -> None:
    """`twin-stream dashboard`: serve until SIGINT/SIGTERM."""
    asyncio.run(serve(settings, bind=bind, port=port, on_ready=on_ready))


__all__ = ["Dashboard", "Hub", "make_app", "run_dashboard", "serve"]
