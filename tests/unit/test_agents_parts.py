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
