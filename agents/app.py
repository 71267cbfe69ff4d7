"""The Faust app, built from settings.

Topics: the input (raw bytes, keyed by battery_id) and the outputs (alerts, estimates, dead
letters; keyed by battery_id, same partition count, so co-partitioned with the input). The
`battery-state` table (changelog-backed; RocksDB via rocksdict by default) holds each
battery's engine state plus when it was last seen. The ingest agent takes events in chunks
(`take_events`) so the engine, the table write and faust's bookkeeping are paid once per
battery per chunk; with `exactly_once` (default) outputs, state and offsets commit together:
each chunk is one unit for faust's commits and rebalances, outputs go out through the
transactional producer of their input partition, and the workarounds this needs on
faust-streaming 0.15.3 are in `agents.faust_compat` (each with what it fixes and how it was
seen). Tested against a real broker with kill -9, restarts and hand-overs in
tests/integration/test_live_*.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from agents.faust_compat import (
    ChunkTransactions,
    InputGapFiller,
    current_event,
    patch_recovery_highwaters,
    persist_changelog_offsets_on_commit,
    reset_local_state_on_assign,
)
from agents.stale import StaleTracker, stale_alert
from twin_stream.codec import DeadLetter, Decoder, Row, dead_letter
from twin_stream.engine import Engine
from twin_stream.kafka_io import client_options
from twin_stream.settings import Settings

log = logging.getLogger("twin_stream.agents")

TABLE = "battery-state"
SESSION_TIMEOUT_S = 10.0


@dataclass
class TwinApp:
    """The app and what its agent closes over; `metrics()` is served at /twin/metrics/."""

    settings: Settings
    app: faust.App
    engine: Engine
    decoder: Decoder
    stale: StaleTracker
    topics: dict[str, Any] = field(default_factory=dict)
    table: Any = None
    txn: ChunkTransactions | None = None
    gaps: InputGapFiller | None = None
    unkeyed: int = 0

    def metrics(self) -> dict[str, Any]:
        m = self.engine.metrics.as_dict()
        m["dead_letters"] += self.unkeyed
        m["stale_batteries"] = len(self.stale.stale)
        m["tracked_batteries"] = len(self.stale.last_seen)
        return m

    async def process_events(self, events: list[Any]) -> None:
        """One chunk of events: decode, group per battery, run the engine, write, send.

        The whole chunk is one unit for faust's commits (`ChunkTransactions`): its outputs,
        table writes and offsets commit together, or not at all."""
        assert self.txn is not None
        try:
            async with self.txn.chunk() as txn:
                await self._chunk(txn, events)
        except BaseException as exc:
            # take_events acks every event of the chunk when we leave it, whatever way:
            # unless the chunk completed, nothing may be committed any more (a cancelled
            # worker would otherwise commit offsets of records it never processed)
            self.txn.poison(exc)
            raise

    async def _chunk(self, txn: ChunkTransactions, events: list[Any]) -> None:
        assert self.gaps is not None
        owned = {p: txn.owns(p) for p in {ev.message.partition for ev in events}}
        by_partition: dict[int, list[Any]] = {}
        again = []
        for ev in events:
            msg = ev.message
            if not owned[msg.partition]:
                # revoked meanwhile: its new owner reads it again from the committed
                # offset; must not count as acked here (take_events acks every event it
                # handed out, and a stale ack could commit past unprocessed records)
                msg.acked = True  # no offset bookkeeping for it
                continue
            if msg.partition not in txn.position:  # new here: start at the committed offset
                txn.position[msg.partition] = await self.gaps.start_offset(msg.partition)
            if txn.seen(msg.partition, msg.offset):
                again.append(ev)  # delivered again (after a rebalance): already processed
            else:
                by_partition.setdefault(msg.partition, []).append(ev)
        mine: list[Any] = []
        for p, evs in by_partition.items():
            evs.sort(key=lambda e: e.message.offset)
            expected = txn.position[p]
            for ev in evs:
                offset = ev.message.offset
                if offset > expected:  # records faust did not hand us: read them
                    missing = await self.gaps.fetch(p, expected, offset)
                    if missing:
                        log.warning(
                            "input %s[%d]: read %d records at offsets %d..%d that faust skipped",
                            self.settings.topics.input,
                            p,
                            len(missing),
                            expected,
                            offset - 1,
                        )
                    mine.extend(missing)
                mine.append(ev)
                expected = offset + 1
            txn.position[p] = expected
        await self._process(txn, mine)
        for ev in mine + again:  # acked inside the guard: the next commit covers them
            ev.ack()

    async def _process(self, txn: ChunkTransactions, events: list[Any]) -> None:
        rows: list[Row] = []
        dead: list[tuple[DeadLetter, Any]] = []
        event_of: dict[str, Any] = {}
        wall = time.time()
        for ev in events:
            msg = ev.message
            source = f"{msg.topic}[{msg.partition}]@{msg.offset}"
            key = msg.key.decode("utf-8", "replace") if msg.key else None
            start = len(rows)
            bad: list[DeadLetter] = []
            self.decoder.decode(msg.value or b"", source, rows, bad)
            self.engine.count_invalid(len(bad))
            dead.extend((d, ev) for d in bad)
            if len(rows) > start:
                mine = []
                for r in rows[start:]:
                    if r.battery_id != key:
                        self.unkeyed += 1
                        dead.append(
                            (
                                dead_letter(
                                    f"battery_id {r.battery_id!r} does not match the message key "
                                    f"{key!r}: key telemetry by battery_id",
                                    r.raw,
                                    r.source,
                                ),
                                ev,
                            )
                        )
                    else:
                        mine.append(r)
                        event_of[r.battery_id] = ev
                rows[start:] = mine
        groups: dict[str, list[Row]] = {}
        for r in rows:
            g = groups.get(r.battery_id)
            if g is None:
                groups[r.battery_id] = [r]
            else:
                g.append(r)
        t = self.settings.topics
        for bid, group in groups.items():
            ev = event_of[bid]
            part = ev.message.partition
            key = bid.encode()
            with current_event(ev):  # the store reads the event's partition
                stored = self.table.get(key)
            state = stored["engine"] if stored else None
            res = self.engine.process(bid, group, state)
            if self.stale.seen(bid, part, wall):
                await txn.send(
                    t.alerts,
                    key,
                    orjson.dumps(stale_alert(bid, False, 0.0, self.settings.worker.stale_after_s)),
                    source_partition=part,
                )
            with current_event(ev):
                self.table[key] = {"engine": res.state, "seen": wall}
            for rec in res.alerts:
                await txn.send(t.alerts, key, orjson.dumps(rec), source_partition=part)
            for rec in res.estimates:
                await txn.send(t.estimates, key, orjson.dumps(rec), source_partition=part)
            dead.extend((d, ev) for d in res.dead)
        for d, ev in dead:
            msg = ev.message
            await txn.send(
                t.deadletter,
                msg.key,
                orjson.dumps(d.to_dict()),
                source_partition=msg.partition,
                partition=None if msg.key else msg.partition,
            )


def build_app(
    settings: Settings, *, data_dir: Path | None = None, web_port: int | None = None
) -> TwinApp:
    w, t = settings.worker, settings.topics
    app = faust.App(
        w.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store=w.store,
        processing_guarantee=w.processing_guarantee,
        topic_partitions=t.partitions,
        topic_replication_factor=t.replication_factor,
        table_standby_replicas=w.standby_replicas,
        datadir=str(data_dir or Path(w.data_dir)),
        web_port=web_port or w.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.2,
        # A worker killed without leaving the group holds its partitions until its session
        # times out: faust's 60 s made every crash restart wait a minute. Heartbeats come from
        # the consumer's own thread, so a busy agent does not miss them.
        broker_session_timeout=SESSION_TIMEOUT_S,
        stream_wait_empty=False,
    )
    twin = TwinApp(
        settings=settings,
        app=app,
        engine=Engine(settings),
        decoder=Decoder(settings.input.field_map, settings.engine.max_message_bytes),
        stale=StaleTracker(w.stale_after_s),
    )

    def raw_topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=t.partitions,
        )

    source = raw_topic(t.input)
    twin.topics = {n: raw_topic(getattr(t, n)) for n in ("alerts", "estimates", "deadletter")}
    twin.table = app.Table(
        TABLE,
        default=None,
        partitions=t.partitions,
        # keys: battery_id bytes as produced; values: {"engine": state, "seen": wall s}, JSON
        # key_type=bytes is what makes faust use the raw key serializer for the store and the
        # changelog; a Schema alone left it on json, and recovery failed on every record.
        key_type=bytes,
        schema=faust.Schema(key_type=bytes, key_serializer="raw", value_serializer="json"),
    )
    twin.txn = ChunkTransactions(app, t.input, twin.table)
    twin.gaps = InputGapFiller(app, client_options(settings.kafka), t.input)
    patch_recovery_highwaters()
    persist_changelog_offsets_on_commit(app, t.input)
    reset_local_state_on_assign(app, twin.table)

    @app.agent(source, name="ingest")  # type: ignore[arg-type]
    async def ingest(stream: faust.Stream) -> None:
        async for events in stream.take_events(w.take_max, within=w.take_within_s):
            try:
                await twin.process_events(list(events))
            except Exception as exc:
                # Part of the chunk may be sent: commit nothing more (the guard is poisoned)
                # and stop; a restart reprocesses from the last committed offsets.
                log.exception("chunk failed; stopping the worker")
                await app.crash(exc)
                raise

    stale_producer: dict[str, Any] = {}
    unseeded: set[int] = set()  # input partitions whose silent batteries are not known yet

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # the new owner watches these batteries now (and `tracked_batteries` says so)
        gone = {tp.partition for tp in revoked if tp.topic == t.input}
        twin.stale.forget_partitions(gone)
        unseeded.difference_update(gone)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def seed_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        # batteries of a partition that moved here may be silent already: seed them from the
        # table once its recovery is done (stale_check)
        mine = {tp.partition for tp in assigned if tp.topic == t.input}
        unseeded.update(mine)
        assert twin.txn is not None
        twin.txn.install()
        twin.txn.keep_positions(mine)

    @app.timer(interval=min(1.0, w.stale_after_s / 4))
    async def stale_check() -> None:
        # Sent outside the transaction: a silent partition commits nothing, and the alert
        # must not wait for input that is not coming.
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == t.input}
        todo = unseeded & active
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if todo and recovered and not app.rebalancing:
            _seed_from_table(twin, todo)
            unseeded.difference_update(todo)
        due = twin.stale.due(time.time(), active)
        if not due:
            return
        producer = stale_producer.get("p")
        if producer is None:
            from aiokafka import AIOKafkaProducer

            producer = stale_producer["p"] = AIOKafkaProducer(**client_options(settings.kafka))
            await producer.start()
        for bid, silent in due:
            await producer.send_and_wait(
                t.alerts,
                key=bid.encode(),
                value=orjson.dumps(stale_alert(bid, True, silent, w.stale_after_s)),
            )

    @app.page("/twin/metrics/")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.json(twin.metrics())

    @app.timer(interval=30.0)
    async def log_metrics() -> None:
        log.info("twin metrics %s", orjson.dumps(twin.metrics()).decode())

    del ingest, metrics_page, log_metrics, stale_check, forget_revoked, seed_assigned
    return twin


def _seed_from_table(twin: TwinApp, active: set[int]) -> None:
    """After a (re)start, batteries already silent are known only from the table."""
    if not active:
        return
    for key, stored in list(twin.table.items()):
        if stored:
            seen = stored.get("seen")
            if seen is not None:
                p = twin.app.consumer.key_partition(twin.settings.topics.input, key)
                if p in active:
                    twin.stale.last_seen.setdefault(key.decode(), (float(seen), int(p)))


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password,
            mechanism=k.sasl_mechanism or "PLAIN",
        )
    import ssl

    return faust.SSLCredentials(ssl.create_default_context(cafile=k.ssl_cafile))


def run_worker(
    settings: Settings,
    *,
    loglevel: str = "info",
    web_port: int | None = None,
    data_dir: Path | None = None,
) -> None:
    """Run the worker in this process until stopped (SIGINT/SIGTERM)."""
    import asyncio

    from faust.worker import Worker

    from twin_stream.kafka_io import ensure_topics

    asyncio.run(ensure_topics(settings))
    twin = build_app(settings, data_dir=data_dir, web_port=web_port)
    worker = Worker(twin.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


__all__ = ["TP", "TwinApp", "build_app", "run_worker"]
