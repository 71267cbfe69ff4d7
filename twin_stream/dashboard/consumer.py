"""The dashboard's feed: the alerts and estimates topics, committed records only, into a
:class:`~twin_stream.view.fleet.FleetView`.

The consumer has no group and commits nothing: every dashboard reads both topics from the
beginning (``auto_offset_reset="earliest"``) and then follows them, so one started late shows
the current picture, and any number of dashboards can run side by side without taking
partitions from each other. ``read_committed``: only what the workers' transactions
committed is shown (an aborted chunk's outputs never appear, and its redo appears once).

The broker may be away when the dashboard starts or go away later: the feed retries, and
says why it waits in :attr:`Feed.error` (which ``/healthz`` reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson

from twin_stream.config.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from twin_stream.view.fleet import FleetView

log = logging.getLogger("twin_stream.dashboard")

Kind = Literal["alert", "estimate"]
Listener = Callable[[Kind, Mapping[str, Any]], None]

RETRY_S = 5.0
"""Wait before reconnecting after the broker could not be reached."""
BATCH = 1000
"""Records taken per fetch; the event loop (pages, server-sent events) runs between them."""


class Feed:
    """Reads the output topics into `view`; `listener` hears every record after the view."""

    def __init__(
        self, settings: Settings, view: FleetView, listener: Listener | None = None
    ) -> None:
        self.settings = settings
        self.view = view
        self.listener = listener
        self.records = 0
        self.alerts = 0
        self.estimates = 0
        self.skipped = 0
        """Messages that are not a JSON object (never written by the worker)."""
        self.connected = False
        self.error: str | None = "not started"
        self.last_record: float | None = None
        """time.time() of the last record taken."""
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[tuple[str, int], int] = {}

    # -- state for /healthz
    async def behind(self) -> int | None:
        """Committed records on the topics not read yet (None before the first fetch)."""
        c = self._consumer
        if c is None:
            return None
        total = 0
        try:
            for tp in c.assignment():
                end = c.last_stable_offset(tp)
                if end is None:
                    return None
                # the position, not the last record + 1: transaction markers take offsets
                total += max(0, end - await asyncio.wait_for(c.position(tp), 1.0))
        except Exception:  # reassigning, or the broker is away: no figure now
            return None
        return total

    async def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "error": self.error,
            "records": self.records,
            "alerts": self.alerts,
            "estimates": self.estimates,
            "skipped": self.skipped,
            "behind": await self.behind(),
            "last_record_age_s": (
                None if self.last_record is None else round(time.time() - self.last_record, 3)
            ),
        }

    # -- the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; reconnects after broker trouble."""
        from twin_stream.kafka_io import KafkaAccessError, ensure_topics

        while not stop.is_set():
            try:
                # the topics exist with the configured partitions before the first metadata
                # request (a consumer's request would auto-create them with the broker's)
                await ensure_topics(self.settings, timeout_s=15.0)
                await self._consume(stop)
            except asyncio.CancelledError:
                raise
            except KafkaAccessError as exc:
                self.error = str(exc)
            except Exception as exc:  # broker trouble: say it, wait, retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("dashboard feed: %s (retrying in %g s)", self.error, RETRY_S)
            self.connected = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)

    async def _consume(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer

        from twin_stream.kafka_io import client_options

        t = self.settings.topics
        consumer = AIOKafkaConsumer(
            t.alerts,
            t.estimates,
            **client_options(self.settings.kafka),
            group_id=None,  # no group, no commits: every dashboard reads everything
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            metadata_max_age_ms=30_000,
        )
        await consumer.start()
        self._consumer = consumer
        self.connected = True
        self.error = None
        kinds: dict[str, Kind] = {t.alerts: "alert", t.estimates: "estimate"}
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=250, max_records=BATCH)
                for tp, msgs in batches.items():
                    kind = kinds.get(tp.topic)
                    if kind is None:
                        continue
                    key = (tp.topic, tp.partition)
                    seen = self._next.get(key, 0)  # after a reconnect: not twice
                    for m in msgs:
                        if m.offset >= seen:
                            self._take(kind, m.value)
                    if msgs:
                        self._next[key] = max(seen, msgs[-1].offset + 1)
                await asyncio.sleep(0)  # let the server answer between batches
        finally:
            self._consumer = None
            await consumer.stop()

    def _take(self, kind: Kind, value: bytes | None) -> None:
        try:
            rec = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            self.skipped += 1
            return
        try:
            self.view.add(kind, rec)
        except Exception:  # a record the view cannot take must not stop the feed
            self.skipped += 1
            log.exception("dashboard: the view refused a %s record", kind)
            return
        self.records += 1
        self.last_record = time.time()
        if kind == "alert":
            self.alerts += 1
        else:
            self.estimates += 1
        if self.listener is not None:
            self.listener(kind, rec)


__all__ = ["Feed"]
