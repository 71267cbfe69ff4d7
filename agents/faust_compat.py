"""Where twin-stream leans on faust internals, kept in one file (faust-streaming 0.15.3).

1. `current_event` and `partition_event`: a table read/write needs "the current event" to
   pick its partition (the RocksDB store reads and writes the event's partition db, the
   changelog is sent to the event's partition); the chunk task has no faust event at all
   (point 7), so it sets faust's context variable to a stand-in event of the battery's input
   partition around each table access.

2. `ChunkTransactions`: one chunk of input is one atomic unit of work under `exactly_once`.
   What faust gets wrong for our agent shape, each seen on the real broker:

   - Sends to topics the worker does not consume went out NON-transactionally: faust's
     `TransactionManager.send` picks the transactional producer from
     `consumer.key_partition(topic, key)`, which returns None when the consumer's metadata
     does not know the topic (it only knows subscribed ones), and None means "the plain
     producer" (`isTransactional: false` in the broker's log segments). A killed worker then
     left its outputs committed while its offsets and state were rolled back: doubled alerts
     and estimates after a restart. We send outputs with the transactional producer of the
     INPUT partition the records came from (transactional id `{app}-{group}-{partition}`, the
     one whose transaction commits that partition's offsets and its changelog records).
   - faust commits on a timer (`broker_commit_interval`) that can fire while a chunk is half
     sent: the table write in one transaction and some outputs in the next. A lock is held
     for the whole of a chunk, and faust's `Consumer.commit` takes the same lock and first
     waits until every send of the finished chunks (outputs and the table's changelog
     records, which faust queues in a background buffer) is acknowledged (`settle`; done at
     commit time rather than per chunk, so the next chunk need not wait for the broker). A
     chunk that fails, or is cancelled at any point (also while waiting for the lock),
     "poisons" the guard: nothing is committed any more, and the open transactions are
     aborted when the next owner of the partitions starts (seen before the guard: a worker
     stopped with SIGTERM while a chunk waited committed, in its final commit, offsets of
     records it never processed -- a minute of one battery's samples missing after a
     hand-over).
   - A rebalance (eager: every partition is revoked) did not wait for a chunk in flight
     (`stream_wait_empty=False`), forgot the acked offsets, and afterwards seeked every
     partition back to its committed offset and re-applied its changelog, while the open
     transactions of the partitions the worker kept went on: the records read again after
     the rebalance were processed and sent a second time into the same transaction, which
     then committed both copies (seen: the survivor of a hand-over doubled estimates of its
     own batteries). Revocation now waits for the chunk in flight and commits before faust
     revokes; no chunk runs until the rebalance and its recovery are over; a record this
     process already processed (offset below its partition's position) is skipped.
     `TransactionManager.on_rebalance`, which stops the producers of revoked
     partitions, also waits for the lock.

3. `patch_recovery_highwaters`: under exactly_once faust takes the changelog "highwater" from
   `AIOKafkaConsumer.last_stable_offset(tp)`, which is only known after a fetch response for
   that partition: for a partition just assigned it is None, faust reads that as "empty
   changelog" and skips the recovery. The worker that took over a stopped worker's
   partitions then started those batteries from an empty state (seen: highwater -1 on every
   changelog partition, equivalent_cycles restarting at 0, records dead-lettered as late). We
   ask the broker instead: `end_offsets()` of a read_committed consumer is the last stable
   offset (ListOffsets with isolation_level=read_committed).

4. `persist_changelog_offsets_on_commit`: faust never advances the store's persisted
   changelog offset under exactly_once (`persist_offset_on_commit` is keyed by changelog
   partition, `TableManager.on_commit` looks it up by input partition), so every rebalance
   re-applied old changelog records over the local state of the partitions the worker keeps.

5. `reset_local_state_on_assign`: with `exactly_once`, the RocksDB store holds writes of
   transactions that were later aborted (the store is written at once; only the changelog is
   transactional). After a kill -9 the local store is therefore AHEAD of the committed
   changelog, and a battery's replayed records would be dropped as duplicates: lost outputs.
   Each newly assigned active partition's local data is discarded, so its state comes back
   from the (compacted, read_committed) changelog.

6. `InputGapFiller` and the committed offsets: records faust fetched but never handed to the
   agent around a rebalance or restart, and then counted as acked (its "gap" logic for
   transaction markers), are read from the broker and processed in order (see the class).
   The offset committed for an input partition is the agent's own position (next record to
   process), not faust's acked-list-plus-gaps arithmetic, which around a restart committed
   an offset BEHIND the state it committed in the same transaction (seen after 7 kills: the
   restored state of a battery six minutes ahead of the input, hundreds of "late" dead
   letters), or ahead of it.

7. `ChunkFeed`: the input records go from faust's fetch loop to the chunk task in bulk.
   faust hands every record to its agents one by one: the fetch loop converts each to a
   faust message and awaits `wait_first(callback(message), suspend_flow.wait())` per record
   (four tasks and an `asyncio.wait` each), then come the conductor, the topic queue and the
   stream's per-event machinery. Measured (bench/live.py's fleet, 96 cells): faust delivered
   about 5,500 records/s to `take_events` however large the chunks, while our work per
   record was 43 us. The feed takes the input topic's records out of the map faust's fetch
   loop gets (`Consumer._wait_next_records`, whose only caller is that loop) as aiokafka
   records, in bulk; every other topic (changelogs during recovery) keeps faust's path.
   faust's per-record acks are not needed for the input: the committed offset is the
   agent's position (point 6). While a rebalance suspends the flow faust drops what it
   fetched, and so does the feed; records still in the feed from before are skipped by
   `ChunkTransactions.owns` and the position, and any offset it misses is read by
   `InputGapFiller`. With faust's 1 MiB fetch per partition the fetch itself was the next
   limit (~10k records/s); `worker.fetch_max_bytes_per_partition` raises it (8 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, cast

from faust import streams
from faust.types import TP

log = logging.getLogger("twin_stream.agents")


@contextmanager
def current_event(event: Any) -> Iterator[None]:
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


class ChunkPoisoned(RuntimeError):
    """A previous chunk failed part-way: nothing may be committed any more."""


class ChunkTransactions:
    """Makes one chunk's outputs, table writes and offsets commit together (see module doc)."""

    def __init__(self, app: Any, input_topic: str, table: Any) -> None:
        self.app = app
        self.input_topic = input_topic
        self.table = table
        self.lock = asyncio.Lock()
        self.poisoned: BaseException | None = None
        self.pending: list[asyncio.Future[Any]] = []
        self.position: dict[int, int] = {}  # input partition -> next offset to process
        # seconds spent: waiting for faust's commits (the lock), in chunks, waiting for acks
        self.waited: dict[str, float] = {"commits": 0.0, "work": 0.0, "acks": 0.0}
        self.last_commit: float | None = None  # time.monotonic() of the last commit
        self._installed = False
        original_send_changelog = table.send_changelog

        def send_changelog(*args: Any, **kwargs: Any) -> Any:
            fut = original_send_changelog(*args, **kwargs)
            self.pending.append(fut)
            return fut

        table.send_changelog = send_changelog

    @property
    def transactional(self) -> bool:
        return bool(self.app.in_transaction)

    def install(self) -> None:
        """Wrap faust's commit and rebalance steps with our lock; idempotent. Called when
        partitions are first assigned (and at the first chunk, to be sure)."""
        if self._installed:
            return
        self._installed = True
        consumer = self.app.consumer
        original_commit = consumer.commit
        original_revoked = consumer.on_partitions_revoked

        async def commit(*args: Any, **kwargs: Any) -> bool:
            async with self.lock:
                if self.poisoned is not None:
                    log.warning("not committing: a chunk failed part-way (%r)", self.poisoned)
                    return False
                await self.settle()
                did = bool(await original_commit(*args, **kwargs))
                if did:
                    self.last_commit = time.monotonic()
                return did

        async def on_partitions_revoked(revoked: set[TP]) -> None:
            # A rebalance is a transaction boundary for every partition, kept ones included:
            # faust forgets the acked offsets here, and after the rebalance seeks every
            # partition back to its committed offset and re-applies its changelog, while the
            # open transactions of kept partitions go on. So: wait for the chunk in flight
            # and commit before faust revokes; no chunk runs until the rebalance (recovery
            # included) is over (`wait_rebalanced`); records below a partition's `position`
            # (read again: faust seeks back to the committed offset) are skipped.
            async with self.lock:
                if self.poisoned is None:
                    try:
                        await self.settle()
                        did = await original_commit()
                    except BaseException as exc:
                        self.poisoned = exc
                        raise
                    log.info("rebalance: committed before revocation (%s)", did)
            await original_revoked(revoked)

        original_new_offset = consumer._new_offset

        def _new_offset(tp: Any) -> int | None:
            # The offset to commit for an input partition is where this worker continues:
            # every record below it was processed (and acked) by a finished chunk. faust
            # derives it from its acked lists plus "gaps" it assumed were transaction markers,
            # which around a rebalance also covered records it never delivered (see
            # InputGapFiller): it committed offsets ahead of the state, or got stuck.
            if tp.topic != self.input_topic:
                return cast(int | None, original_new_offset(tp))
            consumer._acked[tp].clear()
            consumer._acked_index[tp].clear()
            consumer._gap.pop(tp, None)
            return self.position.get(tp.partition)

        consumer.commit = commit
        consumer.on_partitions_revoked = on_partitions_revoked
        consumer._new_offset = _new_offset
        if self.transactional:
            tm = consumer.transactions
            original_on_rebalance = tm.on_rebalance

            async def on_rebalance(*args: Any, **kwargs: Any) -> None:
                async with self.lock:
                    await original_on_rebalance(*args, **kwargs)

            tm.on_rebalance = on_rebalance

    async def wait_rebalanced(self, poll_s: float = 0.05) -> None:
        """Until the group is not rebalancing (faust sets the flag at revocation and clears
        it when recovery is done)."""
        while self.app.rebalancing and not self.app.should_stop:
            await asyncio.sleep(poll_s)

    def keep_positions(self, partitions: set[int]) -> None:
        """After an assignment: positions of partitions we lost are no longer ours."""
        self.position = {p: o for p, o in self.position.items() if p in partitions}

    def mark_for_commit(self, partitions: Iterable[int]) -> None:
        """faust's commit looks only at partitions in its acked lists (our `_new_offset`
        then gives the position): make sure each partition of a chunk is there."""
        from aiokafka import TopicPartition

        acked = self.app.consumer._acked
        for p in partitions:
            acked[TopicPartition(self.input_topic, p)]  # a defaultdict: creates the key

    def poison(self, exc: BaseException) -> None:
        if self.poisoned is None:
            self.poisoned = exc

    def owns(self, partition: int) -> bool:
        """Is the input partition (still) actively assigned to this worker?"""
        return TP(self.input_topic, partition) in self.app.consumer.assignment()

    def transactional_id(self, partition: int) -> str:
        group = self.app.assignor.group_for_topic(self.input_topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        source_partition: int,
        partition: int | None = None,
    ) -> None:
        """Send within the transaction of input partition `source_partition` (exactly_once)
        or plainly (at_least_once); `partition` None = by key. Acknowledged before the
        commit that covers it (`settle`)."""
        producer = self.app.producer
        if self.transactional:
            fut = await producer.send(
                topic,
                key,
                value,
                partition,
                None,
                None,
                transactional_id=self.transactional_id(source_partition),
            )
        else:
            fut = await producer.send(topic, key, value, partition, None, None)
        self.pending.append(fut)

    @asynccontextmanager
    async def chunk(self, commit: set[int] | None = None) -> AsyncIterator[ChunkTransactions]:
        """Hold faust's commits (and rebalance steps) off for one chunk, which runs only
        while the group is not rebalancing; its sends are acknowledged before the commit
        that covers them (`settle`). Any failure poisons the guard (see module doc).

        `commit`: input partitions whose transactions are committed at the end of this chunk,
        at their positions. For work that comes from no input record (the stale timer):
        faust commits a partition only when its offset moved, and a silent partition's does
        not."""
        self.install()
        t0 = time.monotonic()
        while True:
            await self.wait_rebalanced()
            await self.lock.acquire()
            if not self.app.rebalancing:
                break
            self.lock.release()  # a rebalance began meanwhile: let it revoke, then wait
        t1 = time.monotonic()
        self.waited["commits"] += t1 - t0
        try:
            if self.poisoned is not None:
                raise ChunkPoisoned(f"an earlier chunk failed: {self.poisoned!r}")
            yield self
            self.waited["work"] += time.monotonic() - t1
            if commit and self.transactional:
                await self.settle()
                await self._commit_positions(commit)
        except BaseException as exc:
            self.poison(exc)
            raise
        finally:
            self.lock.release()

    async def settle(self) -> None:
        """Wait until every send of the finished chunks is acknowledged (outputs, and the
        table's changelog records, which faust queues in a background buffer): a commit
        covers them. Done at commit time, not per chunk, so the next chunk need not wait for
        the broker's acks; any failure poisons the guard."""
        t0 = time.monotonic()
        try:
            while self.pending:  # the changelog buffer may add while we wait
                batch, self.pending = self.pending, []
                # asyncio.wait, not gather: a cancelled wait must not cancel the sends
                # (faust's own callbacks still complete them)
                await asyncio.wait(batch)
                for fut in batch:
                    fut.result()
        except BaseException as exc:
            self.poison(exc)
            raise
        finally:
            self.waited["acks"] += time.monotonic() - t0

    async def _commit_positions(self, partitions: set[int]) -> None:
        from aiokafka import TopicPartition

        offsets = {
            TopicPartition(self.input_topic, p): self.position[p]
            for p in partitions
            if p in self.position and self.owns(p)
        }
        if offsets:  # faust's own step: transactions, table offsets, its committed record
            await self.app.consumer._commit_offsets(offsets)
            self.last_commit = time.monotonic()


def partition_event(app: Any, topic: str, partition: int, key: bytes) -> Any:
    """A stand-in event for table access outside the agent (`current_event`): the table reads
    only its message's topic and partition; offset -1 is no input record."""
    import faust
    from faust.types import Message

    msg = Message(topic, partition, -1, 0.0, 0, {}, key, b"", None, tp=TP(topic, partition))
    return faust.Event(app, key, b"", {}, msg)


def patch_recovery_highwaters() -> None:
    """Ask the broker for the changelog highwaters (see module doc, point 3); idempotent."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_twin_patched", False):
        return

    async def _highwaters(self: Any, partitions: list[TP]) -> Any:
        # read_committed consumer under exactly_once: the last stable offsets
        return await self._ensure_consumer().end_offsets(partitions)

    thread_cls._highwaters = _highwaters  # type: ignore[method-assign]
    setattr(thread_cls, "_twin_patched", True)  # noqa: B010


def persist_changelog_offsets_on_commit(app: Any, input_topic: str) -> None:
    """faust-streaming 0.15.3 under exactly_once queues the changelog offset to persist under
    the CHANGELOG partition (`persist_offset_on_commit`) but, on commit, looks it up by the
    committed INPUT partitions (`TableManager.on_commit`): the store's persisted offset never
    moves, and every rebalance re-applies the changelog from an old offset over the local
    state of the partitions the worker keeps -- state of writes not yet committed goes back
    in time while their input is not read again. Map the input partitions to the changelog
    partitions of the same number (tables are co-partitioned with the input)."""
    tables = app.tables
    original = tables.on_commit

    def on_commit(offsets: Any) -> None:
        original(offsets)
        parts = {tp.partition for tp in offsets if tp.topic == input_topic}
        for table in tables.values():
            for topic in table.changelog_topic.topics:
                for p in parts:
                    tables.on_commit_tp(TP(topic, p))

    tables.on_commit = on_commit


def reset_local_state_on_assign(app: Any, table: Any) -> None:
    """Discard local RocksDB data of newly assigned active changelog partitions (see module
    doc, point 3); the memory store starts empty in every process anyway."""
    original = table.on_rebalance

    async def on_rebalance(
        assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        store = table.data
        if app.in_transaction and hasattr(store, "partition_path"):
            standbys = app.assignor.assigned_standbys()
            changelog = set(table.changelog_topic.topics)
            for tp in sorted(newly_assigned):
                if tp.topic in changelog and tp not in standbys:
                    _wipe_partition(store, tp.partition)
        await original(assigned, revoked, newly_assigned, generation_id)

    table.on_rebalance = on_rebalance


def _wipe_partition(store: Any, partition: int) -> None:
    db = store._dbs.get(partition)
    if db is not None:
        keys = list(db.keys())
        for k in keys:
            db.delete(k)
        log.info("discarded %d local keys of table partition %d", len(keys), partition)
    else:
        path = store.partition_path(partition)
        if path.exists():
            shutil.rmtree(path)
            log.info("discarded local table data %s", path)
    key_index = getattr(store, "_key_index", None)
    if key_index is not None:
        key_index.clear()


class ChunkFeed:
    """Input records from faust's fetch loop, taken in chunks (see module doc, point 7)."""

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
