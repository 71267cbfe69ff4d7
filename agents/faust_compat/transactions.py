"""`ChunkTransactions`: one chunk of input is one atomic unit of work under `exactly_once`.

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
- The committed offsets: the offset committed for an input partition is the agent's own
  position (next record to process, `ChunkTransactions.position`), not faust's
  acked-list-plus-gaps arithmetic (`Consumer._new_offset`), which around a restart committed
  an offset BEHIND the state it committed in the same transaction (seen after 7 kills: the
  restored state of a battery six minutes ahead of the input, hundreds of "late" dead
  letters), or ahead of it. Records faust counted as acked without delivering them are read
  by `agents.faust_compat.gaps.InputGapFiller`.

Leans on: faust's `Consumer.commit`, `on_partitions_revoked`, `_new_offset`, `_acked`,
`_acked_index`, `_gap` and `_commit_offsets`, `TransactionManager.on_rebalance`,
`App.rebalancing`, the table's `send_changelog`, and `producer.send(...,
transactional_id=...)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

from faust.types import TP

from agents.faust_compat._guard import require

require(
    "faust-streaming",
    ">=0.15.3,<0.16",
    workaround="agents.faust_compat.transactions (ChunkTransactions)",
    leans_on=(
        "faust's Consumer.commit/on_partitions_revoked/_new_offset/_acked/_gap/"
        "_commit_offsets, TransactionManager.on_rebalance and producer.send(transactional_id=)"
    ),
)

log = logging.getLogger("twin_stream.agents")


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
