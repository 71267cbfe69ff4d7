"""Helpers of the live tests (``test_live_*.py``): real worker processes against the real broker.

Every test gets its own :class:`LiveRun`: a unique prefix for the app id (= consumer group and
transactional ids) and the four topics, so tests never see each other's data, and a folder for
the workers' data dirs and logs. Workers are ``python -m twin_stream.cli worker`` subprocesses,
configured through ``TWIN_`` environment overrides, each with its own web port and data dir;
the run kills every worker it started when it ends (the test fixture's finalizer), so a failed
test leaves no process behind.

Completion is read from the broker, not guessed from sleeps: the consumer group's committed
offsets of the input topic (committed inside the workers' transactions) reach the end offsets,
and no transaction is open on the output topics (last stable offset == high watermark); then
the outputs are drained with ``read_committed``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from twin_stream.config.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


# -- waiting ---------------------------------------------------------------------------------
def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- one worker process ----------------------------------------------------------------------
@dataclass
class Worker:
    """A `twin-stream worker` subprocess; logs to `log`, metrics on `port`."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The worker's /twin/metrics/ JSON, or None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.port}/twin/metrics/"
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None

    def wait_metrics(self, timeout: float = 60.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.alive(), f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}"
            return self.metrics()

        return wait_for(check, timeout, f"{self.name} to serve metrics", on_timeout=self.tail)

    def wait_processed(self, n: int, what: str, timeout: float = 60.0) -> dict[str, Any]:
        """Until the worker's `processed` counter reaches `n`; returns its metrics."""

        def reached() -> dict[str, Any] | None:
            m = self.metrics() or {}
            return m if m.get("processed", 0) >= n else None

        return wait_for(reached, timeout, what, on_timeout=self.tail)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        return self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log {self.log})"
        return f"--- last {lines} lines of {self.log}:\n" + "\n".join(text[-lines:])

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


# -- one test's world ------------------------------------------------------------------------
class LiveRun:
    """Unique topics / app id for one test, its workers, and broker-side checks."""

    def __init__(
        self, bootstrap: str, base: Path, name: str, overrides: Mapping[str, Any] | None = None
    ) -> None:
        safe = "".join(c if c.isalnum() else "-" for c in name)[:40].strip("-")
        self.prefix = f"live-{safe}-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {
            "TWIN_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TWIN_WORKER__APP_ID": self.prefix,
            "TWIN_TOPICS__INPUT": f"{self.prefix}.telemetry",
            "TWIN_TOPICS__ALERTS": f"{self.prefix}.alerts",
            "TWIN_TOPICS__ESTIMATES": f"{self.prefix}.estimates",
            "TWIN_TOPICS__DEADLETTER": f"{self.prefix}.deadletter",
            # no wall-clock alerts unless a test asks for them (replay has none)
            "TWIN_WORKER__STALE_AFTER_S": "3600",
        }
        for key, value in (overrides or {}).items():
            self.env[key] = value if isinstance(value, str) else json.dumps(value)
        self.settings: Settings = load_settings(environ=self.env)
        self.workers: list[Worker] = []
        self._n = 0

    # context manager: always kill what we started
    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            if w.alive():
                w.kill(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(10)

    @property
    def topics(self) -> dict[str, str]:
        t = self.settings.topics
        return {
            "input": t.input,
            "alerts": t.alerts,
            "estimates": t.estimates,
            "deadletter": t.deadletter,
        }

    # -- workers
    def start_worker(
        self, name: str, data_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Worker:
        self._n += 1
        port = free_port()
        data_dir = data_dir or self.base / f"data-{name}"
        log = self.base / f"worker-{name}-{self._n}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
        full_env.update(self.env)
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["TWIN_DEBUG"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "twin_stream.cli",
            "worker",
            "--web-port",
            str(port),
            "--data-dir",
            str(data_dir),
            "-l",
            "info",
        ]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # our signals only, not the terminal's
            )
        w = Worker(name, proc, port, data_dir, log)
        self.workers.append(w)
        return w

    def tails(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    # -- broker side
    def ensure_topics(self) -> None:
        from twin_stream.kafka_io import ensure_topics

        asyncio.run(ensure_topics(self.settings))

    def publish(self, path: Path) -> int:
        from twin_stream.kafka_io import ensure_topics, publish

        async def go() -> int:
            await ensure_topics(self.settings)
            return await publish(path, self.settings)

        return asyncio.run(go())

    def publish_raw(self, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Send (key, value) pairs as they are (bad input tests)."""
        from aiokafka import AIOKafkaProducer

        async def go() -> int:
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await p.start()
            n = 0
            try:
                for key, value in messages:
                    await p.send_and_wait(self.settings.topics.input, value=value, key=key)
                    n += 1
            finally:
                await p.stop()
            return n

        return asyncio.run(go())

    def input_progress(self) -> tuple[int, int]:
        """(committed offsets of the app's group summed, end offsets summed) of the input."""
        return asyncio.run(_input_progress(self.bootstrap, self.settings))

    def wait_input_committed(self, timeout: float, expect_total: int | None = None) -> None:
        """Until the group's committed input offsets reach the end of the input topic."""

        def check() -> bool:
            committed, end = self.input_progress()
            if expect_total is not None and end < expect_total:
                return False
            return end > 0 and committed == end

        wait_for(
            check,
            timeout,
            "every input record to be committed by the workers",
            interval=0.5,
            on_timeout=lambda: f"progress {self.input_progress()}\n{self.tails()}",
        )

    def wait_outputs_stable(self, timeout: float = 30.0) -> None:
        """Until no transaction is open on an output topic (LSO == high watermark)."""
        topics = [self.topics[n] for n in ("alerts", "estimates", "deadletter")]
        wait_for(
            lambda: asyncio.run(_stable(self.bootstrap, topics, self.settings.topics.partitions)),
            timeout,
            "the output topics to have no open transaction",
            interval=0.5,
        )

    def read(self, name: str, isolation_level: str = "read_committed") -> list[dict[str, Any]]:
        """Every record of output `name` (alerts, estimates, deadletter), parsed, with
        `_key` and `_partition` added."""
        msgs = asyncio.run(
            drain(
                self.bootstrap,
                self.topics[name],
                self.settings.topics.partitions,
                isolation_level,
            )
        )
        out = []
        for key, value, partition in msgs:
            rec = dict(orjson.loads(value))
            rec["_key"] = key.decode() if key is not None else None
            rec["_partition"] = partition
            out.append(rec)
        return out

    def outputs(self) -> dict[str, list[dict[str, Any]]]:
        return {n: self.read(n) for n in ("alerts", "estimates", "deadletter")}


class RawProducer:
    """A producer on its own event-loop thread, for tests that send while they poll."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import threading

        from aiokafka import AIOKafkaProducer

        self.topic = topic
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> AIOKafkaProducer:
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await p.start()
            return p

        self.producer = self._run(start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def send(self, key: bytes | None, value: bytes | None) -> None:
        self._run(self.producer.send_and_wait(self.topic, value=value, key=key))

    def close(self) -> None:
        try:
            self._run(self.producer.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


async def _input_progress(bootstrap: str, settings: Settings) -> tuple[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    t = settings.topics
    tps = [TopicPartition(t.input, p) for p in range(t.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.worker.app_id)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    committed = sum(max(0, offsets[tp].offset) for tp in tps if tp in offsets)
    return committed, sum(end.values())


async def _stable(bootstrap: str, topics: list[str], partitions: int) -> bool:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    ends = []
    for iso in ("read_committed", "read_uncommitted"):
        c = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level=iso, enable_auto_commit=False
        )
        await c.start()
        try:
            ends.append(await c.end_offsets(tps))
        finally:
            await c.stop()
    return ends[0] == ends[1]


async def drain(
    bootstrap: str, topic: str, partitions: int, isolation_level: str = "read_committed"
) -> list[tuple[bytes | None, bytes, int]]:
    """Read `topic` from the beginning to its end offsets (the LSO with read_committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes, int]] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"timed out draining {topic}"
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for msgs in batch.values():
                out.extend((m.key, m.value or b"", m.partition) for m in msgs)
        return out
    finally:
        await consumer.stop()


# -- expected outputs and comparison --------------------------------------------------------
def replay_outputs(path: Path, settings: Settings, out_dir: Path) -> dict[str, list[dict]]:
    from twin_stream.replay import replay

    replay(path, out_dir, settings)
    names = {"alerts": "alerts.jsonl", "estimates": "estimates.jsonl"}
    names["deadletter"] = "deadletter.jsonl"
    return {
        n: [orjson.loads(line) for line in (out_dir / f).read_bytes().splitlines()]
        for n, f in names.items()
    }


def _canon(rec: Mapping[str, Any], drop: Iterable[str] = ()) -> str:
    skip = {"_key", "_partition", *drop}
    return json.dumps({k: v for k, v in rec.items() if k not in skip}, sort_keys=True)


def multiset(records: Iterable[Mapping[str, Any]], drop: Iterable[str] = ()) -> collections.Counter:
    drop = tuple(drop)
    return collections.Counter(_canon(r, drop) for r in records)


def dead_letter_multiset(records: Iterable[Mapping[str, Any]]) -> collections.Counter:
    """Dead letters compared on error + raw (their source is file:line vs topic[p]@offset)."""
    return collections.Counter((r["error"], r["raw"]) for r in records)


def diff(got: collections.Counter, want: collections.Counter, limit: int = 5) -> str:
    missing = want - got
    extra = got - want
    lines = [
        f"got {sum(got.values())}, want {sum(want.values())}: "
        f"{sum(missing.values())} missing, {sum(extra.values())} extra (or doubled)"
    ]
    lines += [f"  missing x{n}: {r}" for r, n in list(missing.items())[:limit]]
    lines += [f"  extra   x{n}: {r}" for r, n in list(extra.items())[:limit]]
    return "\n".join(lines)


def not_stale(alerts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [a for a in alerts if a.get("code") != "telemetry_stale"]


def assert_same_outputs(
    got: Mapping[str, list[dict[str, Any]]], want: Mapping[str, list[dict[str, Any]]]
) -> None:
    """Live outputs (read_committed) equal replay's, as multisets; keys are battery_id."""
    problems = []
    a_got, a_want = multiset(not_stale(got["alerts"])), multiset(want["alerts"])
    if a_got != a_want:
        problems.append("alerts: " + diff(a_got, a_want))
    e_got, e_want = multiset(got["estimates"]), multiset(want["estimates"])
    if e_got != e_want:
        problems.append("estimates: " + diff(e_got, e_want))
    d_got, d_want = (
        dead_letter_multiset(got["deadletter"]),
        dead_letter_multiset(want["deadletter"]),
    )
    if d_got != d_want:
        problems.append("dead letters: " + diff(d_got, d_want))
    for name in ("alerts", "estimates"):
        bad = [r for r in got[name] if r["_key"] != r["battery_id"]]
        if bad:
            problems.append(f"{name}: {len(bad)} records not keyed by battery_id, e.g. {bad[0]}")
    assert not problems, "live outputs differ from replay:\n" + "\n".join(problems)


def final_estimates(records: Iterable[Mapping[str, Any]], name: str) -> dict[str, float]:
    """The last (by event time) value of estimate `name` per battery."""
    last: dict[str, tuple[str, float]] = {}
    for r in records:
        if r["name"] == name:
            prev = last.get(r["battery_id"])
            if prev is None or r["ts"] >= prev[0]:
                last[r["battery_id"]] = (r["ts"], r["value"])
    return {b: v for b, (_, v) in sorted(last.items())}


def simulate_file(
    path: Path, *, batteries: int, cells: int, duration_s: float, **faults: int
) -> Path:
    from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate, write_records

    sim = simulate(
        SimConfig(
            batteries=batteries,
            cells=cells,
            temperatures=4,
            duration_s=duration_s,
            seed=11,
            faults=FaultSpec(**faults),
        )
    )
    write_records(sim.records, path)
    return path


def split_file(path: Path, parts: int) -> list[Path]:
    """`path` cut into `parts` files of consecutive lines (the last takes the remainder)."""
    lines = path.read_bytes().splitlines(keepends=True)
    n = len(lines) // parts
    out = []
    for i in range(parts):
        p = path.with_name(f"{path.stem}-{i}.jsonl")
        p.write_bytes(b"".join(lines[i * n : None if i == parts - 1 else (i + 1) * n]))
        out.append(p)
    return out
