"""The broker-free parts of agents/: the stale tracker and the chunk feed's take()."""

from __future__ import annotations

import asyncio
import time

from agents.faust_compat import ChunkFeed
from agents.stale import StaleTracker, stale_alert


def test_stale_tracker_reports_each_silence_once_and_only_for_active_partitions() -> None:
    t = StaleTracker(stale_after_s=10.0)
    t.seen("a", 0, now=100.0)
    t.seen("b", 1, now=105.0)
    assert t.due(109.9, {0, 1}) == []
    assert t.due(110.0, {0, 1}) == [("a", 0, 10.0)]
    assert t.due(120.0, {0}) == []  # a: reported already; b: partition 1 is not ours now
    assert t.due(120.0, {0, 1}) == [("b", 1, 15.0)]
    assert t.seen("a", 0, now=121.0) is True  # was stale: the caller clears
    assert t.seen("a", 0, now=122.0) is False
    t.forget_partitions({1})
    assert set(t.last_seen) == {"a"} and t.stale == set()


def test_time_the_twin_was_deaf_is_no_batterys_silence() -> None:
    t = StaleTracker(stale_after_s=10.0)
    t.seen("a", 0, now=100.0)
    t.seen("b", 1, now=100.0)
    t.hold({0}, 30.0)  # partition 0 not heard for 30 s (outage, rebalance, backlog)
    t.hold({1}, 0.0)
    t.hold(set(), 99.0)
    assert t.due(135.0, {0, 1}) == [("b", 1, 35.0)]
    assert t.due(139.9, {0, 1}) == []
    assert t.due(140.0, {0, 1}) == [("a", 0, 10.0)]  # silent 10 s of heard time


def test_stale_alert_record() -> None:
    a = stale_alert("bat-1", True, 31.25, 30.0, now_ms=1_767_225_600_000)
    assert a["ts"] == "2026-01-01T00:00:00.000Z" and a["status"] == "raised"
    assert a["code"] == "telemetry_stale" and a["value"] == 31.25 and a["threshold"] == 30.0
    assert stale_alert("bat-1", False, 0.0, 30.0, now_ms=0)["status"] == "cleared"


def test_chunk_feed_take_returns_full_chunks_at_once_and_waits_within_for_more() -> None:
    async def run() -> None:
        feed = ChunkFeed(app=None, topic="in", high_water=100)
        feed.put(list(range(7)))
        t0 = time.monotonic()
        assert await feed.take(5, within=5.0) == [0, 1, 2, 3, 4]  # full: no wait
        assert time.monotonic() - t0 < 1.0
        # 2 left, fewer than max: waits up to `within` for more, returns what is there
        t0 = time.monotonic()
        assert await feed.take(5, within=0.2) == [5, 6]
        assert 0.15 <= time.monotonic() - t0 < 2.0
        # empty: waits for the first record, then returns as soon as the chunk is full
        waiter = asyncio.create_task(feed.take(3, within=5.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        feed.put([7])
        await asyncio.sleep(0.05)
        assert not waiter.done()  # within 5 s for more
        feed.put([8, 9, 10])
        assert await asyncio.wait_for(waiter, 1.0) == [7, 8, 9]
        assert feed.records == [10] and feed.fed == 11

    asyncio.run(run())


def test_build_app_leaves_faust_consumer_and_transactions_to_the_worker() -> None:
    """faust caches `App.in_transaction` (a cached property reading `in_worker`) the first
    time anything asks, e.g. when its consumer is created: done in `build_app`, before the
    worker runs, it cached False and the app silently ran without transactions."""
    from agents.app import build_app
    from twin_stream.config.settings import load_settings

    s = load_settings(
        environ={
            "TWIN_WORKER__FETCH_MAX_BYTES_PER_PARTITION": str(4 << 20),
            "TWIN_WORKER__FETCH_MAX_WAIT_MS": "75",
        }
    )
    twin = build_app(s)
    cached = twin.app.__dict__
    assert "in_transaction" not in cached and "consumer" not in cached
    assert twin.app.conf.consumer_max_fetch_size == 4 << 20
    assert twin.feed is not None and twin.feed.fetch_max_wait_ms == 75
    twin.app.in_worker = True  # what faust's Worker sets on start
    assert twin.app.in_transaction  # exactly_once is the default


def test_the_broker_counts_as_heard_only_while_its_last_answer_is_fresh() -> None:
    """Silence is counted only while the broker is heard: that ends one probe cycle after its
    last answer (5 s at a 2 s interval), long before liveness turns red (8 s), and the
    reconnect reports the whole deaf time."""
    from agents.health import BrokerMonitor

    now = [100.0]
    deaf: list[float] = []
    m = BrokerMonitor({}, "t", broker_timeout_s=8.0, probe_interval_s=2.0, clock=lambda: now[0])
    m.on_reconnect = deaf.append
    m.note(ok=True)
    now[0] = 104.9
    assert m.heard and m.connected
    now[0] = 105.1
    m.note(ok=False)
    assert not m.heard and m.connected
    now[0] = 109.0
    m.note(ok=False)
    assert not m.connected
    now[0] = 130.0
    m.note(ok=True)
    assert m.heard and deaf == [30.0]
