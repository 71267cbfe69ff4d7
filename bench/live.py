"""Live benchmark: end-to-end throughput of one worker and alert latency, on the real local
Kafka broker with exactly-once on, against a plain per-event faust agent measured in the
same run.

    python bench/live.py                         # starts its own broker
    python bench/live.py --bootstrap 127.0.0.1:9092 --batteries 100 --duration 1200
    python bench/live.py --profile               # adds a py-spy profile (pip install py-spy)

Throughput: a simulated fleet (96 cells, 32 temperatures; 100 batteries x 1200 s at 1 Hz) is
published first, then a worker is started and timed from its first processed record until
every record is accounted for (processed + dead letters + duplicates, from the worker's
/twin/metrics/). The baseline is the same worker built with `--per-event`: one faust event
at a time through `stream.events()`, sent with faust's `Topic.send`, doing the same work.
A second fleet, 2000 batteries at 1 Hz, measures the shape where a chunk holds about one
record per battery (per-battery costs are then paid per record).

Latency: with a worker running, a separate process produces at half the measured throughput
(100 batteries, the wall clock as event time); every tenth battery flips one cell over the
warning limit every 2 s (debounce 0), and another process, a read_committed consumer of the
alerts topic, takes arrival - event time of every raise: produce, fetch, chunk, transaction
commit and the consumer's fetch all included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from twin_stream.config.settings import Settings
from twin_stream.devtools.simulate import SimConfig, simulate, write_records


def fleet_file(path: Path, batteries: int, duration_s: float) -> tuple[Path, int]:
    sim = simulate(
        SimConfig(batteries=batteries, cells=96, temperatures=32, duration_s=duration_s, seed=5)
    )
    return path, write_records(sim.records, path)


def metrics(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/metrics/", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def start_worker(
    env: dict[str, str],
    port: int,
    data: Path,
    log: Path,
    per_event: bool,
    profile: Path | None = None,
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "twin_stream.cli",
        "worker",
        "--web-port",
        str(port),
        "--data-dir",
        str(data),
        "-l",
        "warning",
    ]
    if per_event:
        args.append("--per-event")
    if profile is not None:  # sampled by py-spy (pip install py-spy), collapsed stacks
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
        args = [*spy, "--rate", "200", "--nonblocking", "-o", str(profile), "--", *args]
    return subprocess.Popen(
        args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the worker's process group (SIGINT when py-spy wraps it: it then writes out)."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def env_for(bootstrap: str, tag: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TWIN_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TWIN_WORKER__APP_ID": f"bench-{tag}",
            "TWIN_TOPICS__INPUT": f"bench-{tag}.telemetry",
            "TWIN_TOPICS__ALERTS": f"bench-{tag}.alerts",
            "TWIN_TOPICS__ESTIMATES": f"bench-{tag}.estimates",
            "TWIN_TOPICS__DEADLETTER": f"bench-{tag}.deadletter",
            "TWIN_WORKER__STALE_AFTER_S": "3600",
        }
    )
    env.update(extra or {})
    return env


def settings_of(env: dict[str, str]) -> Settings:
    from twin_stream.config.settings import load_settings

    return load_settings(environ={k: v for k, v in env.items() if k.startswith("TWIN_")})


def throughput(
    bootstrap: str,
    data: Path,
    n: int,
    per_event: bool,
    tmp: Path,
    profile: Path | None = None,
    count: int | None = None,
    bare: list[float] | None = None,
) -> float:
    """Records/s of one worker on `data` (n records) published beforehand, from its first
    processed record until `count` (default n) are accounted for. With `bare` (a list), a
    bare aiokafka consumer that only reads the same topic is timed first and its records/s
    appended there (the ceiling of any Kafka consumer in Python on this machine)."""
    from twin_stream.kafka_io import ensure_topics, publish

    tag = ("base-" if per_event else "twin-") + uuid.uuid4().hex[:6]
    env = env_for(bootstrap, tag)
    s = settings_of(env)
    asyncio.run(ensure_topics(s))
    asyncio.run(publish(data, s))
    if bare is not None:
        bare.append(asyncio.run(bare_consumer(bootstrap, s.topics.input, count or n)))
    port = free_port()
    proc = start_worker(env, port, tmp / tag, tmp / f"{tag}.log", per_event, profile)
    t_idle: float | None = None  # the last poll that saw nothing processed yet
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            m = metrics(port)
            if m:
                done = m["processed"] + m["dead_letters"] + m["duplicates"]
                if not done:
                    t_idle = time.monotonic()
                elif done >= (count or n) and t_idle is not None:
                    # timed from the last poll before the first record (within 20 ms of
                    # it): one large chunk may hold everything
                    return done / (time.monotonic() - t_idle)
            time.sleep(0.02)
        raise TimeoutError(f"worker did not finish; see {tmp / (tag + '.log')}")
    finally:
        stop(proc, signal.SIGINT if profile else signal.SIGTERM)


def watch_alerts(bootstrap: str, topic: str, out: str, ready: Any, stop_at: float) -> None:
    """In its own process (the producer must not delay it): for every over-voltage alert on
    the topic (read_committed), its arrival wall time minus its event time, in ms, to `out`."""
    from aiokafka import AIOKafkaConsumer

    from schemas.telemetry import parse_rfc3339_ms

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        ready.set()
        lat: list[float] = []
        try:
            while time.time() < stop_at:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time() * 1000
                for msgs in batch.values():
                    for msg in msgs:
                        a = orjson.loads(msg.value)
                        if a["code"] == "cell_over_voltage" and a["status"] == "raised":
                            lat.append(now - parse_rfc3339_ms(a["ts"]))
        finally:
            await consumer.stop()
            Path(out).write_bytes(orjson.dumps(lat))

    asyncio.run(run())


def latency(bootstrap: str, rate: float, seconds: float, tmp: Path) -> tuple[list[float], float]:
    """Produce at `rate` records/s for `seconds` (event time = wall clock at send) into a
    running worker; 5 % of the batteries flip one cell over the limit every 2 s."""
    import multiprocessing

    from twin_stream.kafka_io import ensure_topics

    tag = "lat-" + uuid.uuid4().hex[:6]
    params = {
        "voltage_monitor": {
            "raise_debounce_s": 0,
            "clear_debounce_s": 0,
            "raise_samples": 1,  # the first sample over the limit raises: pipeline latency
            "clear_samples": 1,
        }
    }
    env = env_for(bootstrap, tag, {"TWIN_MODELS__PARAMS": json.dumps(params)})
    s = settings_of(env)
    asyncio.run(ensure_topics(s))
    port = free_port()
    proc = start_worker(env, port, tmp / tag, tmp / f"{tag}.log", False)
    out = tmp / f"{tag}.latency.json"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    try:
        while metrics(port) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited; see {tmp / (tag + '.log')}")
            time.sleep(0.2)
        time.sleep(8)  # partitions assigned, producers ready
        stop_at = time.time() + seconds + 10
        watcher = ctx.Process(
            target=watch_alerts, args=(bootstrap, s.topics.alerts, str(out), ready, stop_at)
        )
        watcher.start()
        ready.wait(60)
        sent_rate = asyncio.run(produce_live(s, rate, seconds))
        watcher.join(seconds + 60)
        m = metrics(port) or {}
        print(
            "  worker:",
            {k: m.get(k) for k in ("records", "duplicates", "chunks", "events_per_chunk")},
            "seconds",
            m.get("seconds"),
            "input age at chunk start",
            m.get("input_age_ms"),
        )
    finally:
        stop(proc)
    return (list(orjson.loads(out.read_bytes())) if out.exists() else []), sent_rate


async def produce_live(s: Settings, rate: float, seconds: float) -> float:
    """Produce for `seconds` at `rate` records/s; returns the rate achieved. Records are
    pre-serialised (only ts changes): on a 2-core machine the load generator competes with
    the worker and the broker for CPU."""
    from aiokafka import AIOKafkaProducer

    from twin_stream.kafka_io import client_options

    producer = AIOKafkaProducer(**client_options(s.kafka), linger_ms=2)
    await producer.start()
    topic = s.topics.input
    n_bat = 100  # the throughput run's fleet
    keys = [f"lat-{b:04d}".encode() for b in range(n_bat)]
    temps = orjson.dumps([25.0] * 32)
    cells = [3.7] * 96

    def tail(cv: list[float]) -> bytes:
        return (
            b',"current":10.0,"cell_voltages":'
            + orjson.dumps(cv)
            + b',"temperatures":'
            + temps
            + b"}"
        )

    normal, over_limit = tail(cells), tail([*cells[:7], 4.3, *cells[8:]])
    heads = [b'{"battery_id":"' + k + b'","ts":' for k in keys]
    try:
        t0 = time.monotonic()
        sent = 0
        while (now := time.monotonic() - t0) < seconds:
            due = int(now * rate)
            over = int(now) % 4 >= 2
            while sent < due:
                b = sent % n_bat
                ts = str(int(time.time() * 1000)).encode()
                value = heads[b] + ts + (over_limit if over and b % 10 == 0 else normal)
                await producer.send(topic, value, key=keys[b])
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        return sent / (time.monotonic() - t0)
    finally:
        await producer.stop()


def profile_summary(path: Path, top: int = 25) -> str:
    """Inclusive and self share of samples per function, from py-spy's collapsed stacks."""
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return "no samples"
    rows = [f"{total} samples; top by inclusive share (self share in brackets)"]
    for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"{100 * n / total:5.1f}% [{100 * own.get(f, 0) / total:4.1f}%] {f}")
    rows.append("top by self share")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"{100 * n / total:5.1f}% {f}")
    return "\n".join(rows)


def _frame(f: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    name, _, where = f.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    parent = where.rsplit("/", 2)[-2] if where.count("/") >= 2 else ""
    return f"{name} ({parent}/{file})" if parent else f"{name} ({file})"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def bare_consumer(bootstrap: str, topic: str, n: int) -> float:
    """Records/s of a plain aiokafka consumer reading `n` records of `topic` from the start
    (read_committed, values not even decoded): what reading alone costs here."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    await c.start()
    try:
        seen = timed = 0
        t0: float | None = None
        while seen < n:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            k = sum(len(v) for v in batch.values())
            seen += k
            if k and t0 is None:
                t0 = time.monotonic()  # timed from the first batch on, which is not counted
                continue
            timed += k
        assert t0 is not None
        return timed / (time.monotonic() - t0)
    finally:
        await c.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bootstrap")
    ap.add_argument("--batteries", type=int, default=100)
    ap.add_argument("--duration", type=float, default=1200, help="simulated seconds")
    ap.add_argument("--latency-seconds", type=float, default=60)
    ap.add_argument("--latency-rates", help="records/s to measure latency at, e.g. 4000,8000")
    ap.add_argument("--skip-throughput", action="store_true", help="latency only (needs rates)")
    ap.add_argument(
        "--fleet-batteries",
        type=int,
        default=2000,
        help="also measure a fleet of this many batteries at 1 Hz (0: skip)",
    )
    ap.add_argument("--profile", action="store_true", help="sample the chunked worker with py-spy")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="twin-live-"))
    own = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from twin_stream.devtools.broker import up

        own = tmp / "broker"
        bootstrap = up(data_dir=own / "data", run_dir=own).bootstrap
    try:
        twin = 0.0
        if args.skip_throughput:
            args.fleet_batteries, args.profile = 0, False
        data, n = fleet_file(tmp / "fleet.jsonl", args.batteries, args.duration)
        bare: list[float] = []
        if not args.skip_throughput:
            twin = throughput(bootstrap, data, n, False, tmp, bare=bare)
            print(
                f"bare aiokafka consumer (read_committed, no decoding): {bare[0]:,.0f} records/s;"
                f" the twin reaches {twin / bare[0]:.0%} of it"
            )
        # the baseline on the first records only: it is ~30x slower
        if not args.skip_throughput:
            base = throughput(bootstrap, data, n, True, tmp, count=min(n, 30_000))
            print(
                f"throughput, one worker, exactly_once, {args.batteries} batteries: "
                f"{twin:,.0f} records/s (per-event faust agent: {base:,.0f} records/s; "
                f"ratio {twin / base:.1f}x)"
            )
        if args.fleet_batteries:
            many, m = fleet_file(tmp / "many.jsonl", args.fleet_batteries, n / args.fleet_batteries)
            rate = throughput(bootstrap, many, m, False, tmp)
            print(
                f"throughput, {args.fleet_batteries} batteries at 1 Hz (about one record per "
                f"battery per chunk): {rate:,.0f} records/s"
                + (f"; fleet shape / pack shape {rate / twin:.2f}x" if twin else "")
            )
        if args.profile:  # a separate run: the sampler costs CPU on a small machine
            prof = tmp / "worker.pyspy.txt"
            rate = throughput(bootstrap, data, n, False, tmp, prof)
            print(f"profiled run: {rate:,.0f} records/s\n{profile_summary(prof)}")
        rates = [float(r) for r in args.latency_rates.split(",")] if args.latency_rates else []
        for rate in rates or [twin / 2]:
            lat, sent_rate = latency(bootstrap, rate, args.latency_seconds, tmp)
            if lat:
                print(
                    f"alert latency at {sent_rate:,.0f} records/s (asked {rate:,.0f}): "
                    f"p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms, "
                    f"max {max(lat):.0f} ms over {len(lat)} alerts"
                )
            else:
                print("no alert arrived: see the worker logs in", tmp)
    finally:
        if own is not None:
            from twin_stream.devtools.broker import down

            down(run_dir=own)


if __name__ == "__main__":
    main()
