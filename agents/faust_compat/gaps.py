"""`InputGapFiller`: input records faust skipped are read from the broker and processed.

What faust does: records it fetched but never handed to the agent around a rebalance or
restart are then counted as acked (its "gap" logic for transaction markers,
`Consumer._add_gap`), and their offsets committed: lost input (seen: 26 records of a battery
lost after a hand-over, `add_gap 936..961` right after the seek to 935). The agent knows
where each partition continues (`agents.faust_compat.transactions`: the committed offset is
the agent's own position, not faust's acked-list-plus-gaps arithmetic); any offset it is
not handed is read here and processed in order (see the class).

Leans on: faust's fetch loop and its gap accounting only as the behaviour worked around (no
faust internal is touched here); aiokafka's public consumer API (`committed`,
`beginning_offsets`, `seek`, `getmany` with isolation_level=read_committed).
"""

from __future__ import annotations

from typing import Any

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.gaps (InputGapFiller)",
    leans_on="faust's fetch loop counting undelivered offsets as acked gaps (Consumer._add_gap)",
)


class InputGapFiller:
    """Reads input records that faust skipped, straight from the broker.

    Around a rebalance faust resumes the new partitions before it seeks them to the committed
    offsets, and its fetch loop treats any jump in offsets as a gap of transaction markers
    (`Consumer._add_gap`), which it then counts as acked: records fetched in that window
    never reached the agent, yet their offsets were committed (seen: 26 records of a battery
    lost after a hand-over, `add_gap 936..961` right after the seek to 935). The agent knows
    where each partition must continue (`ChunkTransactions.position`, or the group's
    committed offset for a partition new to this worker); any offset it does not see is read
    here (read_committed) and processed in order. Real holes (transaction markers of a
    transactional producer, deleted records) come back empty and are skipped."""

    def __init__(self, app: Any, kafka_options: dict[str, Any], topic: str) -> None:
        self.app = app
        self.options = kafka_options
        self.topic = topic
        self._consumer: Any = None
        self.filled = 0

    async def _client(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            c = AIOKafkaConsumer(
                **self.options,
                group_id=self.app.conf.id,  # only to read the group's committed offsets
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
            )
            await c.start()
            self._consumer = c
        return self._consumer

    async def start_offset(self, partition: int) -> int:
        """Where a partition new to this worker continues: the group's committed offset."""
        from aiokafka import TopicPartition

        c = await self._client()
        tp = TopicPartition(self.topic, partition)
        committed = await c.committed(tp)
        if committed is None or committed < 0:
            committed = (await c.beginning_offsets([tp]))[tp]
        return int(committed)

    async def fetch(self, partition: int, start: int, end: int, timeout_s: float = 30.0) -> list:
        """The records of [start, end) of an input partition (aiokafka ConsumerRecords)."""
        import time

        from aiokafka import TopicPartition

        c = await self._client()
        tp = TopicPartition(self.topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        events = []
        deadline = time.monotonic() + timeout_s
        while await c.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic}[{partition}] {start}..{end}")
            batch = await c.getmany(tp, timeout_ms=500, max_records=max(1, end - start))
            for rec in batch.get(tp, []):
                if start <= rec.offset < end:
                    events.append(rec)
        self.filled += len(events)
        return events
