"""Hardening on the real broker: poison messages never stop the worker and the records after
them are processed exactly; a battery produced with two partitioners keeps one state; the
worker's Prometheus and health endpoints answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from live_helpers import (
    LiveRun,
    assert_same_outputs,
    replay_outputs,
    simulate_file,
    split_file,
    wait_for,
)

from agents.app import key_partition


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name) as run:
        yield run


def http(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_poison_messages_never_stop_the_worker(live: LiveRun, tmp_path: Path) -> None:
    good = simulate_file(tmp_path / "good.jsonl", batteries=3, cells=16, duration_s=300)
    first, second = split_file(good, 2)
    want = replay_outputs(good, live.settings, tmp_path / "replay")
    assert want["deadletter"] == []
    victim = orjson.loads(good.read_bytes().splitlines()[0])["battery_id"]
    key = victim.encode()
    now_ish = orjson.loads(first.read_bytes().splitlines()[-1])["ts"]
    poison: list[tuple[bytes | None, bytes, str, int]] = [  # key, value, reason, records
        (key, b'{"battery_id":"x","ts":123456789012345678901234567890,"current":1}', "ts", 1),
        (
            key,
            b'{"battery_id":"x","ts":1,"current":1,"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
            "invalid JSON",
            1,
        ),
        (key, b"[" * 100_000 + b"]" * 100_000, "invalid JSON", 1),
        (key, b'{"battery_id":"' + b"x" * 800_000 + b'","ts":1,"current":1}', "battery_id", 1),
        (key, orjson.dumps([1] * 10_000), "expected a JSON object", 10_000),
        (key, b'{"battery_id":"b\xff\xfe","ts":1,"current":1}', "invalid JSON", 1),
        (b"k" * 5000, b"\xff" * 300, "invalid JSON", 1),  # a huge key too
        # far future for a real battery: refused, its next records are processed as usual
        (
            key,
            orjson.dumps({"battery_id": victim, "ts": 32_503_679_999_000, "current": 1.0}),
            "future",
            1,
        ),
        # far past for the same battery: late (its frontier is well after it)
        (
            key,
            orjson.dumps({"battery_id": victim, "ts": now_ish - 86_400_000, "current": 1.0}),
            "late",
            1,
        ),
    ]
    live.ensure_topics()
    worker = live.start_worker("w")
    worker.wait_metrics()
    n1 = live.publish(first)
    worker.wait_processed(n1, "the first half")
    live.publish_raw([(k, v) for k, v, _, _ in poison])
    n2 = live.publish(second)
    n_dead_records = sum(n for *_, n in poison)

    def done() -> dict | None:
        assert worker.alive(), worker.tail()
        m = worker.metrics() or {}
        return (
            m if m.get("processed", 0) >= n1 + n2 and m["dead_letters"] >= n_dead_records else None
        )

    m = wait_for(done, 90, "everything processed", on_timeout=worker.tail)
    live.wait_input_committed(timeout=30)
    live.wait_outputs_stable()
    assert worker.alive(), worker.tail()
    assert m["errors"] == 0 and m["future"] == 1 and m["late"] == 1, m
    assert m["dead_letters"] == n_dead_records, m
    got = live.outputs()
    dead = got["deadletter"]
    got["deadletter"] = []
    assert_same_outputs(got, want)  # the good records around the poison: exactly replay's
    # one dead letter per poison message (the 10,000-element array: 10 + one summary)
    assert len(dead) == len(poison) - 1 + 11, [d["error"][:60] for d in dead]
    assert sum(d["records"] for d in dead) == n_dead_records
    for _, value, reason, _ in poison:
        assert any(reason in d["error"] and d["raw_bytes"] in (len(value), 1) for d in dead), (
            reason,
            [d["error"][:80] for d in dead],
        )
    assert max(len(orjson.dumps(d)) for d in dead) < 4096


def _crc32_partitioner(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    """librdkafka's default (`consistent_random`): CRC32 of the key modulo the partitions."""
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


def _produce_crc32(bootstrap: str, topic: str, path: Path) -> int:
    from aiokafka import AIOKafkaProducer

    async def go() -> int:
        p = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", partitioner=_crc32_partitioner
        )
        await p.start()
        try:
            futs = []
            for line in path.read_bytes().splitlines():
                bid = orjson.loads(line)["battery_id"].encode()
                futs.append(await p.send(topic, value=line, key=bid))
            await asyncio.gather(*futs)
        finally:
            await p.stop()
        return len(futs)

    return asyncio.run(go())


def test_a_second_partitioner_does_not_fork_a_batterys_state(live: LiveRun, tmp_path: Path) -> None:
    good = simulate_file(tmp_path / "fleet.jsonl", batteries=12, cells=8, duration_s=240)
    first, second = split_file(good, 2)
    want = replay_outputs(good, live.settings, tmp_path / "replay")
    parts = live.settings.topics.partitions
    lines = first.read_bytes().splitlines()
    expected_misrouted = 0
    for line in lines:
        k = orjson.loads(line)["battery_id"].encode()
        if zlib.crc32(k) % parts != key_partition(k, parts):
            expected_misrouted += 1
    assert expected_misrouted > 0  # the fleet must have batteries the two hashes disagree on

    live.ensure_topics()
    worker = live.start_worker("w")
    worker.wait_metrics()
    n1 = _produce_crc32(live.bootstrap, live.topics["input"], first)  # kcat, Go, confluent-kafka
    worker.wait_processed(n1, "the crc32-partitioned half (re-sent to its murmur2 partitions)")
    n2 = live.publish(second)  # aiokafka: murmur2, as Java clients
    worker.wait_processed(n1 + n2, "the second half")
    live.wait_input_committed(timeout=30)
    live.wait_outputs_stable()
    m = worker.metrics() or {}
    assert m["misrouted"] == expected_misrouted == m["rerouted"], m
    assert m["dead_letters"] == 0 and m["late"] == 0 and m["duplicates"] == 0, m
    assert_same_outputs(live.outputs(), want)  # one state per battery: replay's outputs
    assert "partitioner=murmur2_random" in worker.log_text()

    # the Prometheus exposition and the health endpoints of the same worker
    status, body = http(worker.port, "/metrics")
    text = body.decode()
    assert status == 200
    assert f"twin_processed_total {float(n1 + n2)}" in text
    assert 'twin_dead_letters_total{reason="misrouted"} 0.0' in text
    assert f"twin_rerouted_total {float(expected_misrouted)}" in text
    assert "twin_broker_connected 1.0" in text
    status, body = http(worker.port, "/twin/health/live/")
    assert status == 200, body
    status, body = http(worker.port, "/twin/health/ready/")
    assert status == 200 and json.loads(body)["assigned_partitions"] == parts, body
    # faust's table views (every battery's state, unauthenticated) are off by default
    status, _ = http(worker.port, "/table/battery-state/")
    assert status == 404


def _cli(live: LiveRun, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env.update(live.env)
    return subprocess.run(
        [sys.executable, "-m", "twin_stream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_state_tool_shows_and_repairs_a_batterys_frontier(live: LiveRun, tmp_path: Path) -> None:
    fleet = simulate_file(tmp_path / "fleet.jsonl", batteries=2, cells=4, duration_s=120)
    records = [orjson.loads(line) for line in fleet.read_bytes().splitlines()]
    bid = records[0]["battery_id"]
    mine = tmp_path / "mine.jsonl"
    mine.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records if r["battery_id"] == bid))
    last_ts = max(r["ts"] for r in records if r["battery_id"] == bid)
    live.ensure_topics()
    worker = live.start_worker("w")
    worker.wait_metrics()
    n = live.publish(fleet)
    worker.wait_processed(n, "the fleet")
    live.wait_input_committed(timeout=30)

    refused = _cli(live, "state", "reset", bid, "--frontier")
    assert refused.returncode == 2 and "stop the workers first" in refused.stderr, refused
    assert worker.stop() == 0, worker.tail()

    shown = _cli(live, "state", "show", bid)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["engine"]["last_ts"] == last_ts
    fixed = _cli(live, "state", "reset", bid, "--frontier")
    assert fixed.returncode == 0, fixed.stderr
    engine = json.loads(_cli(live, "state", "show", bid).stdout)["engine"]
    assert engine["last_ts"] is None and engine["models"]  # the models' state is kept

    # the restarted worker loads the repair: the battery's records are taken again
    worker = live.start_worker("w2")
    worker.wait_metrics()
    again = live.publish(mine)
    worker.wait_processed(again, "the battery's records after the repair")
    m = worker.metrics() or {}
    assert m["processed"] == again and m["late"] == 0 and m["duplicates"] == 0, m
    other = _cli(live, "state", "show", "no-such-battery")
    assert other.returncode == 1 and "no stored state" in other.stderr
