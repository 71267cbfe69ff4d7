"""`ChunkFeed`: the input records go from faust's fetch loop to the chunk task in bulk.

What faust does: it hands every record to its agents one by one: the fetch loop converts
each to a faust message and awaits `wait_first(callback(message), suspend_flow.wait())` per
record (four tasks and an `asyncio.wait` each), then come the conductor, the topic queue and
the stream's per-event machinery. Measured (bench/live.py's fleet, 96 cells): faust delivered
about 5,500 records/s to `take_events` however large the chunks, while our work per record was
43 us. The feed takes the input topic's records out of the map faust's fetch loop gets
(`Consumer._wait_next_records`, whose only caller is that loop) as aiokafka records, in bulk;
every other topic (changelogs during recovery) keeps faust's path. faust's per-record acks
are not needed for the input: the committed offset is the agent's position (see
`agents.faust_compat.transactions`). While a rebalance suspends the flow faust drops what it
fetched, and so does the feed; records still in the feed from before are skipped by
`ChunkTransactions.owns` and the position, and any offset it misses is read by
`agents.faust_compat.gaps.InputGapFiller`. With faust's 1 MiB fetch per partition the fetch
itself was the next limit (~10k records/s); `worker.fetch_max_bytes_per_partition` raises it
(8 MiB).

faust also hard-codes a 1.5 s long poll: a fetch for partitions with no new data held up the
next fetch of the busy ones by up to 1.5 s (seen: input 1.7 s old at chunk start); `install`
sets aiokafka's fetcher's `_fetch_max_wait_ms` (`worker.fetch_max_wait_ms`, 50 ms).

Leans on: faust's `Consumer._wait_next_records`, `_read_offset`, `flow_active`,
`suspend_flow`, `_thread._ensure_consumer()`; aiokafka's `AIOKafkaConsumer._fetcher` and its
`_fetch_max_wait_ms` (when that is missing the feed logs a warning and goes on without it).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.feed (ChunkFeed)",
    leans_on="faust's Consumer._wait_next_records/_read_offset/suspend_flow",
)
require(
    "aiokafka",
    ">=0.12,<0.15",
    workaround="agents.faust_compat.feed (ChunkFeed)",
    leans_on="aiokafka's AIOKafkaConsumer._fetcher._fetch_max_wait_ms and its ConsumerRecords",
)

log = logging.getLogger("twin_stream.agents")


class ChunkFeed:
    """Input records from faust's fetch loop, taken in chunks (see the module doc)."""

    def __init__(self, app: Any, topic: str, high_water: int, fetch_max_wait_ms: int = 50) -> None:
        self.app = app
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.high_water = high_water  # records held before the fetch loop waits
        self.records: list[Any] = []  # aiokafka ConsumerRecords, in fetch order
        self.arrived = asyncio.Event()
        self.enough = asyncio.Event()
        self.want = 1
        self.fed = 0
        self._installed = False

    def install(self) -> None:
        """Divert the input topic where faust's fetch loop gets its records; idempotent.
        Call when partitions are assigned (before any input record is fetched), not
        earlier: creating faust's consumer before the worker runs caches
        `App.in_transaction` as False (a cached property), and the app would run without
        transactions."""
        if self._installed:
            return
        self._installed = True
        consumer = self.app.consumer
        # faust hard-codes a 1.5 s long poll; a fetch for partitions with no new data
        # (those with records still buffered are left out of the request) then held up the
        # next fetch of the busy ones by up to 1.5 s (seen: input 1.7 s old at chunk start)
        fetcher = getattr(consumer._thread._ensure_consumer(), "_fetcher", None)
        if hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = self.fetch_max_wait_ms  # type: ignore[union-attr]
        else:
            log.warning("aiokafka's fetcher changed: worker.fetch_max_wait_ms is not applied")
        original = consumer._wait_next_records
        topic, records_out = self.topic, self.records
        read_offset = consumer._read_offset

        async def _wait_next_records(timeout: float) -> tuple[Any, Any]:
            records, active = await original(timeout)
            # with flow suspended (a rebalance) faust drops what it fetched: so do we
            if records and consumer.flow_active and not consumer.should_stop:
                for tp in [tp for tp in records if tp.topic == topic]:
                    recs = records.pop(tp)
                    if recs and (active is None or tp in active):
                        self.put(recs)
                        read_offset[tp] = recs[-1].offset
                while len(records_out) >= self.high_water and not (
                    consumer.suspend_flow.is_set() or consumer.should_stop
                ):
                    await asyncio.sleep(0.005)  # backpressure: the chunk task is behind
            return records, active

        consumer._wait_next_records = _wait_next_records

    def put(self, records: list[Any]) -> None:
        self.records.extend(records)
        self.fed += len(records)
        self.arrived.set()
        if len(self.records) >= self.want:
            self.enough.set()

    async def take(self, max_n: int, within: float) -> list[Any]:
        """Up to `max_n` records: waits for the first, then up to `within` s for more."""
        while not self.records:
            self.arrived.clear()
            await self.arrived.wait()
        if len(self.records) < max_n:
            self.want = max_n
            self.enough.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.enough.wait(), within)
        chunk = self.records[:max_n]
        del self.records[:max_n]
        return chunk
