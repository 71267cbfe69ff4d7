"""The local broker really does Kafka transactions (the app runs exactly-once).

The tests go through aiokafka, the client faust uses.  The second one checks a
fact only the broker's transaction coordinator can decide: records of an
ABORTED transaction are in the log (a read_uncommitted consumer sees them) but
a read_committed consumer never gets them.  The last one kills a broker of its
own with ``kill -9`` and checks that ``up`` brings it back on the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from twin_stream.devtools.broker import down, status, up

PARTITIONS = 3
TIMEOUT_S = 60.0


async def _create_topic(bootstrap: str, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    return topic


def _txn_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"twin-test-{uuid.uuid4().hex[:10]}",
        request_timeout_ms=30_000,
    )


async def _drain(bootstrap: str, topic: str, isolation_level: str) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning up to its end offsets (LSO for read_committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"twin-test-{uuid.uuid4().hex[:10]}",
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + TIMEOUT_S
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"timed out draining {topic}"
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for msgs in batch.values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


async def test_transaction_roundtrip_read_committed(kafka_bootstrap: str) -> None:
    topic = await _create_topic(kafka_bootstrap, "twin-test-txn")
    sent = {f"battery-{i:03d}": {"seq": i, "v": round(3.0 + i / 1000, 3)} for i in range(100)}

    producer = _txn_producer(kafka_bootstrap)
    await producer.start()
    try:
        async with producer.transaction():
            for key, value in sent.items():
                await producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
    finally:
        await producer.stop()

    records = await _drain(kafka_bootstrap, topic, "read_committed")
    got = {r.key.decode(): json.loads(r.value) for r in records if r.key and r.value}
    assert len(records) == 100
    assert got == sent
    # keyed partitioning: spread over partitions, and within one, in send order
    by_partition: dict[int, list[int]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(json.loads(r.value)["seq"])
    assert len(by_partition) > 1
    assert all(seqs == sorted(seqs) for seqs in by_partition.values())


async def test_aborted_transaction_invisible_to_read_committed(kafka_bootstrap: str) -> None:
    topic = await _create_topic(kafka_bootstrap, "twin-test-abort")

    producer = _txn_producer(kafka_bootstrap)
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(10):
                await producer.send(topic, key=b"k%d" % i, value=b"committed-1")
        await producer.begin_transaction()
        for i in range(10):
            await producer.send(topic, key=b"k%d" % i, value=b"aborted")
        await producer.flush()  # really written to the partition logs before the abort
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(10):
                await producer.send(topic, key=b"k%d" % i, value=b"committed-2")
    finally:
        await producer.stop()

    committed = await _drain(kafka_bootstrap, topic, "read_committed")
    everything = await _drain(kafka_bootstrap, topic, "read_uncommitted")

    assert sorted(r.value for r in committed) == [b"committed-1"] * 10 + [b"committed-2"] * 10
    assert not any(r.value == b"aborted" for r in committed)
    # The aborted records are in the log: only the broker's abort marker hides them.
    assert sum(r.value == b"aborted" for r in everything) == 10
    assert len(everything) == 30


async def test_kill_9_then_up_restarts_on_the_same_port(tmp_path: Path) -> None:
    """A broker that died (kill -9) comes back from `up` on its old port and controller port,
    even after its stale state file is gone; a producer that kept the old bootstrap address
    produces again by itself, and a consumer of that address reads before and after."""
    run_dir = tmp_path / "run"
    first = await asyncio.to_thread(up, run_dir=run_dir)
    producer: AIOKafkaProducer | None = None
    try:
        topic = await _create_topic(first.bootstrap, "twin-test-restart")
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(topic, key=b"k", value=b"before")

        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while status(run_dir=run_dir) is not None:  # also removes the stale state file
            assert time.monotonic() < deadline, "the killed broker did not go away"
            await asyncio.sleep(0.1)
        assert not (run_dir / "broker.json").exists()

        second = await asyncio.to_thread(up, run_dir=run_dir)
        assert second.pid != first.pid
        assert (second.bootstrap, second.port, second.controller_port, second.data_dir) == (
            first.bootstrap,
            first.port,
            first.controller_port,
            first.data_dir,
        )

        async with asyncio.timeout(TIMEOUT_S):  # the old producer reconnects by itself
            await producer.send_and_wait(topic, key=b"k", value=b"after")
        records = await _drain(first.bootstrap, topic, "read_committed")
        assert sorted(r.value for r in records) == [b"after", b"before"]
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        await asyncio.to_thread(down, run_dir=run_dir)
