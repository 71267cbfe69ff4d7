"""Inspect and repair one battery's stored state: `twin-stream state show|reset`.

The live state of a battery is the last record of its key in the table's changelog topic
(`{app_id}-battery-state-changelog`, partitioned like the input); a worker that takes the
partition rebuilds its local store from that topic. So a repair is one record written there
while no worker of the group runs: `reset --frontier` forgets the event-time frontier (a
far-future timestamp accepted before event time was bounded by the clock made every later
record late), `reset --all` deletes the battery's state (a tombstone; it starts afresh).
Workers store compact blobs (`twin_stream.engine.blob`), shown here expanded to the state
dict; a repair is written as that dict in JSON, which workers read as well. Replay state
files (`replay --state F`) are plain JSON and repaired the same way with `--file F`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson

from twin_stream.config.settings import Settings
from twin_stream.engine import Engine, blob
from twin_stream.kafka_io import client_options

TABLE = "battery-state"  # agents.app.TABLE (the platform does not import agents)


class StateToolError(RuntimeError):
    """One line for the user: what is wrong and what to do."""


def changelog_topic(settings: Settings) -> str:
    return f"{settings.worker.app_id}-{TABLE}-changelog"


def key_partition(key: bytes, n_partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the worker's changelog writes use."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def stored_dict(settings: Settings, battery_id: str, value: bytes) -> dict[str, Any]:
    """A table value as `{"engine": state dict, "seen": s, "stale": bool}`: a state blob
    (what workers write) expanded through an engine of these settings, or the JSON dict of
    an earlier release (and of a repair: workers read both)."""
    if value[:4] != blob.MAGIC:
        return dict(orjson.loads(value))
    engine = Engine(settings)
    h = engine.load_blob(battery_id, value)
    out: dict[str, Any] = {"engine": engine.dump_state(battery_id), "seen": h.get("seen")}
    if "stale" in h:
        out["stale"] = h["stale"]
    return out


def forget_frontier(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored table value with the engine's event-time frontier cleared: the next record
    of the battery is taken whatever its time (the models' state is kept)."""
    engine = dict(stored.get("engine") or {})
    if not engine:
        raise StateToolError("the stored value has no engine state")
    engine["last_ts"] = None
    engine["max_ts"] = None
    engine["buffer"] = []
    engine["version"] = int(engine.get("version", 0)) + 1
    return {**stored, "engine": engine}


# -- replay state files --------------------------------------------------------------------
def file_show(path: Path, battery_id: str) -> dict[str, Any]:
    states = _read_file(path)
    if battery_id not in states:
        raise StateToolError(f"{path}: no state for {battery_id!r} ({len(states)} batteries)")
    return {"engine": states[battery_id]}


def file_reset(path: Path, battery_id: str, everything: bool) -> None:
    states = _read_file(path)
    if battery_id not in states:
        raise StateToolError(f"{path}: no state for {battery_id!r}")
    if everything:
        del states[battery_id]
    else:
        states[battery_id] = forget_frontier({"engine": states[battery_id]})["engine"]
    path.write_text(json.dumps(states), encoding="utf-8")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StateToolError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise StateToolError(f"{path}: not a state file (JSON): {exc}") from None
    if not isinstance(data, dict):
        raise StateToolError(f"{path}: not a state file (a JSON object per battery)")
    return data


# -- the live table's changelog ------------------------------------------------------------
async def topic_show(
    settings: Settings, battery_id: str, timeout_s: float = 30.0
) -> dict[str, Any] | None:
    """The battery's current stored value (None: no state, or deleted)."""
    found = await _latest(settings, battery_id.encode(), timeout_s)
    return None if found is None else found[0]


async def topic_reset(
    settings: Settings,
    battery_id: str,
    everything: bool,
    *,
    force: bool = False,
    timeout_s: float = 30.0,
) -> dict[str, Any] | None:
    """Write the repaired value (or a tombstone) to the changelog; returns what was written.
    Refused while the group has members: a running worker would overwrite it."""
    from aiokafka import AIOKafkaProducer

    if not force:
        members = await _group_members(settings, timeout_s)
        if members:
            raise StateToolError(
                f"consumer group {settings.worker.app_id!r} has {members} active member(s): "
                "stop the workers first (a running worker would overwrite the repair), "
                "or --force"
            )
    key = battery_id.encode()
    found = await _latest(settings, key, timeout_s)
    if found is None:
        raise StateToolError(f"no stored state for {battery_id!r} in {changelog_topic(settings)}")
    stored, partition = found
    new = None if everything else forget_frontier(stored)
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all")
    await producer.start()
    try:
        value = None if new is None else orjson.dumps(new)
        await producer.send_and_wait(changelog_topic(settings), value, key, partition)
    finally:
        await producer.stop()
    return new


async def _latest(
    settings: Settings, key: bytes, timeout_s: float
) -> tuple[dict[str, Any], int] | None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = changelog_topic(settings)
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise StateToolError(
                f"no changelog topic {topic!r}: has a worker with app_id "
                f"{settings.worker.app_id!r} run against this broker?"
            )
        tp = TopicPartition(topic, key_partition(key, len(parts)))
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        latest: bytes | None = None
        seen = False
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise StateToolError(f"timed out reading {topic}[{tp.partition}]")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for rec in batch.get(tp, []):
                if rec.key == key:
                    latest, seen = rec.value, True
        if not seen or latest is None:
            return None
        return stored_dict(settings, key.decode(), latest), tp.partition
    finally:
        await consumer.stop()


async def _group_members(settings: Settings, timeout_s: float) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **client_options(settings.kafka), request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.worker.app_id])
    finally:
        await admin.close()
    n = 0
    for resp in described:
        for group in getattr(resp, "groups", []):
            members = group[5] if len(group) > 5 else []
            n += len(members)
    return n


def run(coro: Any) -> Any:
    return asyncio.run(coro)
