"""Kafka clients outside the Faust worker: connection options from settings, topic creation,
`publish` (a recorded file into the input topic, keyed by battery_id) and `record` (a topic to
JSON Lines). The worker itself lives in `agents/`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from twin_stream.io import RecordReader
from twin_stream.settings import KafkaSettings, Settings


def client_options(k: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection keyword arguments for the configured security."""
    opts: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=k.ssl_cafile)
    if k.security_protocol.startswith("SASL"):
        opts.update(
            sasl_mechanism=k.sasl_mechanism or "PLAIN",
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    return opts


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the input and output topics with the configured partitions if missing."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    t = settings.topics
    admin = AIOKafkaAdminClient(
        **client_options(settings.kafka), request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, t.partitions, t.replication_factor)
            for name in (t.input, t.alerts, t.estimates, t.deadletter)
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


def _object_of(payload: Any) -> Any:
    """The record of a payload (text parsed as JSON; None if it is not JSON)."""
    if isinstance(payload, bytes | str):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
    return payload


def _key_of(obj: Any) -> bytes | None:
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    bid = obj.get("battery_id") if isinstance(obj, dict) else None
    return bid.encode() if isinstance(bid, str) else None


def _ts_of(obj: Any) -> int | None:
    from twin_stream.codec import lean_row

    row = lean_row(obj) if isinstance(obj, dict) else None
    return row.ts if row is not None else None


async def publish(
    path: Path,
    settings: Settings,
    *,
    speed: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    topic: str | None = None,
) -> int:
    """Send every record of `path` to the input topic keyed by battery_id, in file order.

    `speed` None sends as fast as possible; X replays at X times real time (event time).
    Records that are not valid JSON are sent too (unkeyed): the worker dead-letters them."""
    from aiokafka import AIOKafkaProducer

    reader = RecordReader(path)
    producer = AIOKafkaProducer(
        **client_options(settings.kafka),
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    name = topic or settings.topics.input
    sent = 0
    t0_wall = time.monotonic()
    t0_event: int | None = None
    try:
        for block in reader.blocks(5000):
            futures = []
            for payload, _ in block:
                obj = _object_of(payload)  # parsed once, for the key and the pacing
                if speed is not None:
                    ts = _ts_of(obj)
                    if ts is not None:
                        if t0_event is None:
                            t0_event = ts
                        wait = (ts - t0_event) / 1000 / speed - (time.monotonic() - t0_wall)
                        if wait > 0:
                            await asyncio.sleep(wait)
                value = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                futures.append(await producer.send(name, value=value, key=_key_of(obj)))
            await asyncio.gather(*futures)
            sent += len(block)
            if progress is not None:
                progress(reader.done, reader.total)
    finally:
        await producer.stop()
    return sent


async def record(
    topic: str,
    out: Path,
    settings: Settings,
    *,
    idle_s: float = 5.0,
    max_records: int | None = None,
    on_record: Callable[[int], None] | None = None,
) -> int:
    """Copy a topic from the beginning to JSON Lines (read_committed), until it has been idle
    for `idle_s` seconds or `max_records` were written. Values that are JSON objects are
    written as they are; others as {"raw": text}."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    n = 0
    try:
        with out.open("wb") as f:
            while max_records is None or n < max_records:
                batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=5000)
                if not batches:
                    break
                for msgs in batches.values():
                    for m in msgs:
                        v = m.value or b""
                        try:
                            orjson.loads(v)
                            f.write(v.rstrip(b"\n") + b"\n")
                        except orjson.JSONDecodeError:
                            f.write(orjson.dumps({"raw": v.decode("utf-8", "replace")}) + b"\n")
                        n += 1
                if on_record is not None:
                    on_record(n)
    finally:
        await consumer.stop()
    return n
