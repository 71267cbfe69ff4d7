"""The Faust app, built from settings.

Topics: the input (raw bytes, keyed by battery_id) and the outputs (alerts, estimates, dead
letters; keyed by battery_id, same partition count, so co-partitioned with the input). The
`battery-state` table (changelog-backed; RocksDB via rocksdict by default) holds each
battery's engine state, when it was last seen, and whether its `telemetry_stale` raise is
out. The ingest task takes input records in chunks straight from faust's fetch loop
(`ChunkFeed`: faust's per-event delivery cost more than all our work), so decoding, the
engine, the table write and faust's bookkeeping are paid once per battery per chunk; with
`exactly_once` (default) outputs, state and offsets commit together: each chunk is one unit
for faust's commits and rebalances, outputs go out through the transactional producer of
their input partition. The workarounds this needs on faust-streaming 0.15.3 are in
`agents.faust_compat`, one module each (what it fixes, how it was seen, and a version guard:
it refuses to import on a faust/aiokafka it was not verified with). Tested against a real
broker with kill -9, restarts and hand-overs in tests/integration/test_live_*.py;
measured by bench/live.py.

Hardening (`agents.health` for the probe and endpoints): no input can stop the worker (the
decoder turns any failure into one bounded dead letter); a record that arrives on another
input partition than its key's murmur2 hash (a producer with librdkafka's crc32 default)
would fork its battery's state over two table partitions: it is counted and re-sent to the
right partition within the chunk's transaction (or dead-lettered, `worker.misrouted`);
`/twin/health/live/` and `/twin/health/ready/` turn red when the broker does not answer;
`/metrics` is the Prometheus exposition; faust's table views are off; shutdown is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import faust
import numpy as np
import orjson
from aiokafka.partitioner import murmur2
from faust.types import TP

from agents.faust_compat import (
    ChunkFeed,
    ChunkPoisoned,
    ChunkTransactions,
    InputGapFiller,
    current_event,
    partition_event,
    patch_recovery_highwaters,
    persist_changelog_offsets_on_commit,
    reset_local_state_on_assign,
)
from agents.health import (
    CHUNK_RECORDS_BUCKETS,
    INPUT_AGE_BUCKETS,
    SECONDS_BUCKETS,
    BrokerMonitor,
    Histogram,
    lag,
    liveness,
    prometheus_text,
    readiness,
)
from agents.stale import StaleTracker, stale_alert
from twin_stream.codec import DeadLetter, Decoder, dead_letter
from twin_stream.codec.columnar import decode_messages
from twin_stream.config.settings import Settings
from twin_stream.engine import Engine, blob
from twin_stream.kafka_io import client_options
from twin_stream.sdk.chunk import group_by

log = logging.getLogger("twin_stream.agents")

TABLE = "battery-state"
_partition = operator.attrgetter("partition")
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
    feed: ChunkFeed | None = None
    monitor: BrokerMonitor | None = None
    unkeyed: int = 0  # records whose battery_id is not their message key (dead letters)
    misrouted: int = 0  # records on another partition than their key's murmur2 hash
    rerouted: int = 0  # ... of which re-sent to the right partition (worker.misrouted)
    log_suppressed: Any = None  # the rate-limit log filter (twin_stream.config.logs), if installed
    started: float = field(default_factory=time.monotonic)
    chunks: int = 0  # chunks processed, and the input events they held
    chunk_events: int = 0
    input_age_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    # Prometheus histograms (agents.health.Histogram) and alerts sent by (code, severity, status)
    chunk_records: Histogram = field(default_factory=lambda: Histogram(CHUNK_RECORDS_BUCKETS))
    chunk_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS_BUCKETS))
    chunk_commit_wait: Histogram = field(default_factory=lambda: Histogram(SECONDS_BUCKETS))
    input_age: Histogram = field(default_factory=lambda: Histogram(INPUT_AGE_BUCKETS))
    alerts_sent: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    alerts_total: int = 0
    urgent: set[int] = field(default_factory=set)  # partitions the current chunk commits

    def count_alert(self, alert: dict[str, Any]) -> None:
        """An alert record sent: counted by code, severity and status (`twin_alerts_sent`)."""
        self.alerts_sent[(str(alert["code"]), str(alert["severity"]), str(alert["status"]))] += 1
        self.alerts_total += 1

    async def raise_stale(self, due: list[tuple[str, int, float]]) -> None:
        """Raise `telemetry_stale` for batteries silent too long (`StaleTracker.due`).

        The alert and a `stale` mark on the battery's table entry commit together, in the
        transaction of its input partition, committed at once (nothing else would commit a
        silent partition): after a restart the raise is neither repeated nor left without
        its clear (the mark says it is out; the next record clears it)."""
        assert self.txn is not None and self.gaps is not None
        t, w = self.settings.topics, self.settings.worker
        parts = {p for _, p, _ in due}
        async with self.txn.chunk(commit=parts) as txn:
            for p in parts:
                if p not in txn.position and txn.owns(p):
                    txn.position[p] = await self.gaps.start_offset(p)
            for bid, p, silent in due:
                if not txn.owns(p):
                    continue  # moved meanwhile: its new owner watches it
                key = bid.encode()
                with current_event(partition_event(self.app, t.input, p, key)):
                    stored = self.table.get(key)
                    if stored:
                        self.table[key] = mark_stale(stored)
                alert = stale_alert(bid, True, silent, w.stale_after_s)
                await txn.send(t.alerts, key, orjson.dumps(alert), source_partition=p)
                self.count_alert(alert)

    def metrics(self) -> dict[str, Any]:
        m: dict[str, Any] = dict(self.engine.metrics.as_dict())
        dead_misrouted = self.misrouted - self.rerouted
        m["dead_letters"] += self.unkeyed + dead_misrouted
        m["unkeyed"] = self.unkeyed
        m["misrouted"] = self.misrouted
        m["rerouted"] = self.rerouted
        m["misrouted_dead_letters"] = dead_misrouted
        if self.log_suppressed is not None:
            m["log_lines_suppressed"] = self.log_suppressed.suppressed
        if self.monitor is not None:
            m["consumer_lag"] = {str(p): n for p, n in self.lag().items()}
            live = self.live()
            m["health"] = {**live.checks, "live": live.ok}
        m["stale_batteries"] = len(self.stale.stale)
        m["tracked_batteries"] = len(self.stale.last_seen)
        if self.txn is not None:
            m["seconds"] = {k: round(v, 3) for k, v in self.txn.waited.items()}
        m["chunks"] = self.chunks
        if self.gaps is not None:  # input records faust skipped, read from the broker
            m["input_refetched"] = self.gaps.filled
        if self.input_age_ms:  # how old input records are when their chunk starts
            ages = sorted(self.input_age_ms)
            m["input_age_ms"] = {
                "p50": round(ages[len(ages) // 2]),
                "p99": round(ages[int(len(ages) * 0.99)]),
                "max": round(ages[-1]),
            }
        m["events_per_chunk"] = round(self.chunk_events / self.chunks, 1) if self.chunks else 0
        m["chunk_records"] = self.chunk_records.as_dict()
        m["chunk_seconds"] = self.chunk_seconds.as_dict()
        m["chunk_commit_wait_seconds"] = self.chunk_commit_wait.as_dict()
        m["input_age_seconds"] = self.input_age.as_dict()
        m["alerts_sent"] = [
            {"code": c, "severity": s, "status": st, "count": n}
            for (c, s, st), n in sorted(self.alerts_sent.items())
        ]
        return m

    def lag(self) -> dict[int, int]:
        if self.monitor is None or self.txn is None:
            return {}
        return lag(self.monitor.end_offsets, self.txn.position)

    def live(self) -> Any:
        assert self.monitor is not None
        w = self.settings.worker
        last = self.txn.last_commit if self.txn is not None else None
        return liveness(
            self.monitor,
            sum(self.lag().values()),
            None if last is None else time.monotonic() - last,
            w.commit_stall_s,
            time.monotonic() - self.started,
        )

    async def hearing(self, partitions: set[int]) -> set[int]:
        """Input partitions this worker has read up to the broker's last stable offset (as of
        the last probe), while the broker answers and no rebalance runs."""
        monitor = self.monitor
        if monitor is None or not monitor.heard or self.app.rebalancing:
            return set()
        out: set[int] = set()
        for p in partitions:
            end = monitor.end_offsets.get(p)
            if end is None:
                continue
            try:  # the consumer's fetch position (past transaction markers too)
                pos = await asyncio.wait_for(
                    self.app.consumer.position(TP(self.settings.topics.input, p)), 1.0
                )
            except Exception:  # not known now (seeking, reconnecting): not hearing
                continue
            if pos is not None and pos >= end:
                out.add(p)
        return out

    def ready(self) -> Any:
        app = self.app
        assigned = len(
            [tp for tp in app.assignor.assigned_actives() if tp.topic == self.settings.topics.input]
        )
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        return readiness(self.live(), assigned, recovered, bool(app.rebalancing))

    async def process_records(self, records: list[Any]) -> None:
        """One chunk of input records (`ChunkFeed`): decode, group per battery, run the
        engine, write the table, send.

        The whole chunk is one unit for faust's commits (`ChunkTransactions`): its outputs,
        table writes and offsets commit together, or not at all."""
        assert self.txn is not None
        if records and records[0].timestamp:  # aiokafka: producer/broker time in ms
            age_ms = time.time() * 1000 - records[0].timestamp
            self.input_age_ms.append(age_ms)
            self.input_age.observe(max(0.0, age_ms / 1000))
        # a chunk that raised or cleared an alert commits at its end (the alert is readable
        # by read_committed consumers at once), not at faust's next commit tick
        self.urgent = set()
        try:
            t0 = time.monotonic()
            async with self.txn.chunk(commit=self.urgent) as txn:
                t1 = time.monotonic()
                self.chunk_commit_wait.observe(t1 - t0)
                await self._chunk(txn, records)
                self.chunk_seconds.observe(time.monotonic() - t1)
        except BaseException as exc:
            # unless the chunk completed, nothing may be committed any more (a cancelled
            # worker would otherwise commit its partial outputs with the next commit)
            self.txn.poison(exc)
            raise

    async def _chunk(self, txn: ChunkTransactions, records: list[Any]) -> None:
        """Keep each partition's records in offset order from its position on: records
        seen before (re-delivered after a rebalance) are skipped, records faust never
        delivered are read from the broker (`InputGapFiller`)."""
        assert self.gaps is not None
        by_partition = group_by(records, _partition)
        mine: list[Any] = []
        positions: dict[int, int] = {}
        for p, recs in by_partition.items():
            if not txn.owns(p):
                continue  # revoked meanwhile: its new owner reads it from the committed offset
            if p not in txn.position:  # new here: start at the committed offset
                txn.position[p] = await self.gaps.start_offset(p)
            expected = txn.position[p]
            if any(recs[i].offset >= recs[i + 1].offset for i in range(len(recs) - 1)):
                recs.sort(key=lambda r: r.offset)
            for rec in recs:
                offset = rec.offset
                if offset < expected:  # processed already (a rebalance delivers it again)
                    continue
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
                mine.append(rec)
                expected = offset + 1
            positions[p] = expected
        alerts_before = self.alerts_total
        await self._process(txn, mine)
        if self.alerts_total != alerts_before and self.settings.worker.commit_on_alert:
            self.urgent.update(positions)
        # what the next commit commits for these partitions (see ChunkTransactions.install)
        txn.position.update(positions)
        txn.mark_for_commit(positions)

    async def _process(self, txn: Sender, records: list[Any]) -> None:
        """Decode and process input records (anything with topic, partition, offset, key
        and value: aiokafka's records, faust's messages) and send what comes out."""
        self.chunks += 1
        self.chunk_events += len(records)
        self.chunk_records.observe(len(records))
        # one batch through the decoder into columns: the compiled scanner replay uses
        recs, origin, dead, dead_origin = decode_messages(
            self.decoder,
            [(m.value or b"", f"{m.topic}[{m.partition}]@{m.offset}") for m in records],
        )
        self.engine.count_invalid(dead)
        out_dead: list[tuple[DeadLetter, Any]] = [
            (d, records[i]) for d, i in zip(dead, dead_origin.tolist(), strict=True)
        ]
        # per battery once: its key bytes and home partition; per record: two comparisons
        n_parts = self.n_partitions()
        bids = recs.battery_id
        enc: dict[str, tuple[bytes, int]] = {}
        for bid in dict.fromkeys(bids):
            key = bid.encode()
            enc[bid] = (key, key_partition(key, n_parts))
        groups: dict[str, list[int]] = {}
        record_of: dict[str, Any] = {}  # a record of each battery: where its outputs go
        misrouted: list[tuple[_Rec, Any, int]] = []
        for i, (bid, o) in enumerate(zip(bids, origin.tolist(), strict=True)):
            m = records[o]
            key, want = enc[bid]
            if m.key != key:
                self.unkeyed += 1
                k = m.key.decode("utf-8", "replace") if m.key else None
                out_dead.append((_unkeyed(_Rec(bid, recs.raw[i], recs.source[i]), k), m))
                continue
            if m.partition != want:
                misrouted.append((_Rec(bid, recs.raw[i], recs.source[i]), m, want))
                continue
            g = groups.get(bid)
            if g is None:
                groups[bid] = [i]
                record_of[bid] = m
            else:
                g.append(i)
        t = self.settings.topics
        for r, rec, want in misrouted:
            await self._misrouted(txn, r, rec, want, out_dead)
        wall = time.time()
        table_event: dict[int, Any] = {}  # the table reads the partition of "the current event"
        engine = self.engine
        headers: dict[str, dict[str, Any] | None] = {}
        stored_of: dict[str, bytes | None] = {}
        order: list[int] = []
        for bid, group in groups.items():
            part = record_of[bid].partition
            key = enc[bid][0]
            ev = table_event.get(part)
            if ev is None:
                ev = table_event[part] = partition_event(self.app, t.input, part, key)
            with current_event(ev):
                stored = self.table.get(key)
            # the engine keeps the states of the batteries it ran: reloaded only when the
            # table holds another version (another worker ran it, or a transaction aborted)
            stored_of[bid] = stored
            try:
                headers[bid] = load_stored(engine, bid, stored)
            except Exception as exc:  # an unreadable state must not stop the fleet
                log.exception("unreadable state of %s", bid)
                why = f"internal error processing {bid}: {type(exc).__name__}: {exc}"
                engine.metrics.errors += len(group)
                out_dead.extend(
                    (dead_letter(why, recs.raw[i], recs.source[i]), record_of[bid]) for i in group
                )
                continue
            order.extend(group)

        def reload(battery_ids: Sequence[str]) -> None:  # a model bug: back to the table's
            for b in battery_ids:
                load_stored(engine, b, stored_of[b], force=True)

        res = engine.run(recs.take(np.array(sorted(order), dtype=np.int64)), reload)
        alerts: dict[str, list[dict[str, Any]]] = {}
        estimates: dict[str, list[dict[str, Any]]] = {}
        for bid, rec in res.alerts:
            alerts.setdefault(bid, []).append(rec)
        for bid, rec in res.estimates:
            estimates.setdefault(bid, []).append(rec)
        touched = [bid for bid in res.touched if bid in headers]
        blobs = engine.encode_states(touched, [{"seen": wall}] * len(touched))
        for bid, value in zip(touched, blobs, strict=True):
            stored_h = headers[bid]
            part = record_of[bid].partition
            key = enc[bid][0]
            ev = table_event[part]
            # back from silence: the raise may be known only from the table (a restart)
            was_stale = self.stale.seen(bid, part, wall) or bool(stored_h and stored_h.get("stale"))
            if was_stale:
                clear = stale_alert(bid, False, 0.0, self.settings.worker.stale_after_s)
                await txn.send(t.alerts, key, orjson.dumps(clear), source_partition=part)
                self.count_alert(clear)
            with current_event(ev):
                self.table[key] = value
            for out in alerts.get(bid, ()):
                await txn.send(t.alerts, key, orjson.dumps(out), source_partition=part)
                self.count_alert(out)
            for out in estimates.get(bid, ()):
                await txn.send(t.estimates, key, orjson.dumps(out), source_partition=part)
        out_dead.extend((d, record_of[bid] if bid else records[0]) for bid, d in res.dead)
        for d, rec in out_dead:
            dkey = rec.key if rec.key and len(rec.key) <= _MAX_KEY_BYTES else None
            await txn.send(
                t.deadletter,
                dkey,
                orjson.dumps(d.to_dict()),
                source_partition=rec.partition,
                partition=None if dkey else rec.partition,
            )

    def n_partitions(self) -> int:
        """Partitions of the input topic (the broker's count once probed)."""
        if self.monitor is not None and self.monitor.end_offsets:
            return len(self.monitor.end_offsets)
        return self.settings.topics.partitions

    async def _misrouted(
        self, txn: Sender, r: _Rec, rec: Any, want: int, out_dead: list[tuple[DeadLetter, Any]]
    ) -> None:
        """A record on another partition than its key hashes to: processing it here would
        give its battery a second state (the table is partitioned like the input)."""
        self.misrouted += 1
        if self.misrouted == 1 or self.misrouted % 10_000 == 0:
            log.warning(
                "%d records arrived on another partition than their key's murmur2 hash (first "
                "or latest: %s on %s[%d], belongs on %d): a producer partitions with another "
                "hash (librdkafka's default crc32: set partitioner=murmur2_random); %s",
                self.misrouted,
                r.battery_id,
                rec.topic,
                rec.partition,
                want,
                "re-sent to the right partition"
                if self.settings.worker.misrouted == "reroute"
                else "dead-lettered",
            )
        if self.settings.worker.misrouted == "reroute":
            raw = r.raw if isinstance(r.raw, bytes) else orjson.dumps(r.raw)
            await txn.send(
                self.settings.topics.input,
                r.battery_id.encode(),
                raw,
                source_partition=rec.partition,
                partition=want,
            )
            self.rerouted += 1
            return
        out_dead.append(
            (
                dead_letter(
                    f"misrouted: {r.battery_id} arrived on partition {rec.partition} but its "
                    f"key hashes (murmur2, Kafka's default partitioner) to partition {want}: "
                    "produce with a murmur2 partitioner (librdkafka: partitioner=murmur2_random)",
                    r.raw,
                    r.source,
                ),
                rec,
            )
        )


class Sender(Protocol):
    """Where a chunk's outputs go: `ChunkTransactions`, or faust's plain topic send."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        source_partition: int,
        partition: int | None = None,
    ) -> None: ...


@dataclass
class FaustSender:
    """Outputs through faust's own `Topic.send`, as a plain faust agent sends them (the
    per-event baseline of bench/live.py; see `build_app(per_event=True)`)."""

    topics: dict[str, Any]

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        source_partition: int,
        partition: int | None = None,
    ) -> None:
        await self.topics[topic].send(key=key, value=value, partition=partition)


_MAX_KEY_BYTES = 256  # a longer message key is no battery_id: its dead letter goes unkeyed


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, aiokafka: murmur2) gives `key`.
    Cached: aiokafka's murmur2 is pure Python, and every chunk asks it for every battery."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


class _Rec(NamedTuple):
    """What a dead letter or a re-send needs of a decoded record."""

    battery_id: str
    raw: Any
    source: str


def load_stored(
    engine: Engine, battery_id: str, stored: bytes | None, *, force: bool = False
) -> dict[str, Any] | None:
    """Bring the battery's stored state (a blob, `twin_stream.engine.blob`, or the JSON dict
    of an earlier release) into the engine unless its slot already holds that version (or
    `force`); returns the stored header (`seen`, `stale`, `version`) or None for a battery
    never seen."""
    if not stored:
        if force or not engine.resident(battery_id, None):
            engine.load_state(battery_id, None)
        return None
    if stored[:4] == blob.MAGIC:
        h = blob.header(stored)
        if force or not engine.resident(battery_id, h):
            engine.load_blob(battery_id, stored)
        return h
    legacy = orjson.loads(stored)  # {"engine": state dict, "seen": s, "stale": bool}
    state = legacy.get("engine")
    if force or not engine.resident(battery_id, state):
        engine.load_state(battery_id, state)
    return {**legacy, "version": (state or {}).get("version", 0)}


def mark_stale(stored: bytes) -> bytes:
    """The stored value with `stale` set (its telemetry_stale raise is out)."""
    if stored[:4] == blob.MAGIC:
        return blob.with_header(stored, stale=True)
    return orjson.dumps({**orjson.loads(stored), "stale": True})


def stored_header(stored: bytes | None) -> dict[str, Any] | None:
    """The header of a stored table value (blob or earlier JSON), None for none."""
    if not stored:
        return None
    if stored[:4] == blob.MAGIC:
        return blob.header(stored)
    return dict(orjson.loads(stored))


def _unkeyed(r: _Rec, key: str | None) -> DeadLetter:
    return dead_letter(
        f"battery_id {r.battery_id!r} does not match the message key {key!r}: "
        "key telemetry by battery_id",
        r.raw,
        r.source,
    )


def build_app(
    settings: Settings,
    *,
    data_dir: Path | None = None,
    web_port: int | None = None,
    per_event: bool = False,
) -> TwinApp:
    """The app, its topics, table, agent and timers. `per_event=True` builds the baseline of
    bench/live.py instead of the chunked agent: a plain faust agent that takes one event at a
    time (`stream.events()`) and sends with faust's `Topic.send`, doing the same work per
    event (decode, engine, table read and write, outputs); not for production (its outputs
    are not in the input's transaction, see `agents.faust_compat`)."""
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
        web_bind=w.web_bind,
        web_host="127.0.0.1" if w.web_bind in ("127.0.0.1", "0.0.0.0") else w.web_bind,
        web_tables_enabled=w.web_tables,
        web_router_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.2,
        # A worker killed without leaving the group holds its partitions until its session
        # times out: faust's 60 s made every crash restart wait a minute. Heartbeats come from
        # the consumer's own thread, so a busy agent does not miss them.
        broker_session_timeout=SESSION_TIMEOUT_S,
        stream_wait_empty=False,
        consumer_max_fetch_size=w.fetch_max_bytes_per_partition,
    )
    twin = TwinApp(
        settings=settings,
        app=app,
        engine=Engine(settings),
        decoder=Decoder.from_settings(settings),
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
        # keys: battery_id bytes as produced; values: a state blob (twin_stream.engine.blob:
        # a JSON header with the engine's part, "seen" (wall s) and "stale" (true while its
        # telemetry_stale raise is out), then every stage's packed state arrays); JSON dicts
        # {"engine": state, "seen", "stale"} of an earlier release are read too
        # key_type=bytes is what makes faust use the raw key serializer for the store and the
        # changelog; a Schema alone left it on json, and recovery failed on every record.
        key_type=bytes,
        value_type=bytes,
        schema=faust.Schema(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        ),
    )
    patch_recovery_highwaters()
    monitor = twin.monitor = BrokerMonitor(
        client_options(settings.kafka),
        t.input,
        broker_timeout_s=w.broker_timeout_s,
        probe_interval_s=min(2.0, w.broker_timeout_s / 4),
    )

    def deaf_for(seconds: float) -> None:
        # the broker is back after `seconds`: its first moments still counted as heard
        # (until the last answer was `fresh_s` old) were no battery's silence either
        held = {p for _, p in twin.stale.last_seen.values()}
        twin.stale.hold(held, min(seconds, monitor.fresh_s))

    monitor.on_reconnect = deaf_for
    if per_event:
        sender = FaustSender({getattr(t, n): topic for n, topic in twin.topics.items()})

        @app.agent(source, name="ingest")  # type: ignore[arg-type]
        async def ingest(stream: faust.Stream) -> None:
            async for event in stream.events():
                await twin._process(sender, [event.message])

    else:
        twin.txn = ChunkTransactions(app, t.input, twin.table)
        twin.gaps = InputGapFiller(app, client_options(settings.kafka), t.input)
        persist_changelog_offsets_on_commit(app, t.input)
        reset_local_state_on_assign(app, twin.table)
        feed = twin.feed = ChunkFeed(
            app, t.input, high_water=2 * w.take_max, fetch_max_wait_ms=w.fetch_max_wait_ms
        )
        app.topics.add(source)  # subscribed; its records reach `ingest` through the feed

        @app.task
        async def ingest() -> None:
            while not app.should_stop:
                records = await feed.take(w.take_max, w.take_within_s)
                try:
                    await twin.process_records(records)
                except Exception as exc:
                    # Part of the chunk may be sent: commit nothing more (the guard is
                    # poisoned) and stop; a restart reprocesses from the last committed offsets.
                    log.exception("chunk failed; stopping the worker")
                    await app.crash(exc)
                    raise

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
        if twin.txn is not None and twin.feed is not None:
            twin.feed.install()
            twin.txn.install()
            twin.txn.keep_positions(mine)

    @app.task
    async def probe_broker() -> None:
        await monitor.run(lambda: bool(app.should_stop))

    last_check = [time.time()]

    @app.timer(interval=min(1.0, w.stale_after_s / 4))
    async def stale_check() -> None:
        now = time.time()
        elapsed, last_check[0] = now - last_check[0], now
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == t.input}
        todo = unseeded & active
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if todo and recovered and not app.rebalancing:
            _seed_from_table(twin, todo)
            unseeded.difference_update(todo)
        # A battery is silent only while the twin hears its partition (broker answering,
        # its input read to the end): the time the twin was deaf -- a broker outage, the
        # rebalance after it, a backlog -- is nobody's silence.
        hearing = await twin.hearing(active)
        twin.stale.hold(active - hearing, elapsed)
        due = twin.stale.due(now, hearing)
        if not due:
            return
        if twin.txn is None:  # the per-event baseline: plain sends
            for bid, _, silent in due:
                await twin.topics["alerts"].send(
                    key=bid.encode(),
                    value=orjson.dumps(stale_alert(bid, True, silent, w.stale_after_s)),
                )
            return
        try:
            await twin.raise_stale(due)
        except ChunkPoisoned:
            return  # a chunk failed: the worker is stopping; the next owner raises them

    @app.page("/twin/metrics/")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.json(twin.metrics())

    @app.page("/metrics")
    async def prometheus_page(web: Any, request: Any) -> Any:
        return web.bytes(prometheus_text(twin.metrics()), content_type="text/plain; version=0.0.4")

    @app.page("/twin/health/live/")
    async def live_page(web: Any, request: Any) -> Any:
        h = twin.live()
        return web.json(h.as_dict(), status=200 if h.ok else 503)

    @app.page("/twin/health/ready/")
    async def ready_page(web: Any, request: Any) -> Any:
        h = twin.ready()
        return web.json(h.as_dict(), status=200 if h.ok else 503)

    @app.timer(interval=30.0)
    async def log_metrics() -> None:
        try:
            log.info("twin metrics %s", orjson.dumps(twin.metrics()).decode())
        except Exception:  # a report must never stop the worker
            log.exception("twin metrics could not be reported")

    del ingest, metrics_page, log_metrics, stale_check, forget_revoked, seed_assigned
    del probe_broker, prometheus_page, live_page, ready_page
    return twin


def _seed_from_table(twin: TwinApp, active: set[int]) -> None:
    """After a (re)start, batteries already silent are known only from the table."""
    if not active:
        return
    for key, value in list(twin.table.items()):
        stored = stored_header(value)
        if stored:
            seen = stored.get("seen")
            if seen is not None:
                p = twin.app.consumer.key_partition(twin.settings.topics.input, key)
                if p in active:
                    bid = key.decode()
                    if bid not in twin.stale.last_seen:
                        twin.stale.last_seen[bid] = (float(seen), int(p))
                        if stored.get("stale"):  # raised before the restart
                            twin.stale.stale.add(bid)


def _credentials(settings: Settings) -> Any:
    """faust's broker credentials for the configured security: SASL over TLS needs the TLS
    context in the SASL credentials (without it faust connects SASL_PLAINTEXT to a TLS
    listener and never bootstraps); the same context as the other clients
    (`kafka_io.ssl_context`)."""
    from twin_stream.kafka_io import secret, ssl_context

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    ctx = ssl_context(k)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=secret(k.sasl_password),
            mechanism=k.sasl_mechanism or "PLAIN",
            ssl_context=ctx,  # None for SASL_PLAINTEXT, which keeps its protocol
        )
    return faust.SSLCredentials(ctx)


def run_worker(
    settings: Settings,
    *,
    loglevel: str = "info",
    web_port: int | None = None,
    data_dir: Path | None = None,
    per_event: bool = False,
) -> None:
    """Run the worker in this process until stopped (SIGINT/SIGTERM)."""
    from faust.worker import Worker as FaustWorker

    from twin_stream.kafka_io import ensure_topics

    asyncio.run(ensure_topics(settings))
    from twin_stream.engine.warm import ensure_compiled

    ensure_compiled()  # a first start compiles the kernels on both cores, before joining
    twin = build_app(settings, data_dir=data_dir, web_port=web_port, per_event=per_event)
    w = settings.worker

    class Worker(FaustWorker):  # type: ignore[misc]
        # named Worker: faust logs "[^Worker]: Ready", which `twin-stream demo` waits for
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            if w.log_rate_limit_s > 0:  # an outage logged ~230 lines/s of reconnect errors
                from twin_stream.config.logs import install_rate_limit

                twin.log_suppressed = install_rate_limit(w.log_rate_limit_s)

        def _on_sigterm(self) -> None:
            _exit_after(w.shutdown_timeout_s, "SIGTERM")
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            _exit_after(w.shutdown_timeout_s, "SIGINT")
            super()._on_sigint()

    worker = Worker(twin.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


def _exit_after(timeout_s: float, why: str) -> None:
    """Bounded shutdown: faust's stop waits for the broker (62-126 s while it was down, more
    than the 30 s an orchestrator grants). Exiting without a clean stop is safe under
    exactly_once: open transactions are aborted, the next owner redoes the work."""

    def watchdog() -> None:
        time.sleep(timeout_s)
        log.error(
            "%s: the worker did not stop within worker.shutdown_timeout_s = %g s "
            "(broker unreachable?): exiting now; uncommitted work is redone after restart",
            why,
            timeout_s,
        )
        logging.shutdown()
        os._exit(3)

    threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()


__all__ = ["TP", "TwinApp", "build_app", "run_worker"]
