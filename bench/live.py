"""Live benchmark: end-to-end throughput of one worker and alert latency, on the real local
Kafka broker with exactly-once on, against a plain per-event faust agent measured in the
same run.

    python bench/live.py                         # starts its own broker
    python bench/live.py --bootstrap 127.0.0.1:9092 --batteries 100 --duration 300

Throughput: a simulated fleet (96 cells, 32 temperatures) is published first, then a worker
is started and timed from its first processed record until every record is accounted for
(processed + dead letters + duplicates, read from the worker's /twin/metrics/). Latency: with
the worker running, records are produced at half the measured throughput, stamped with the
wall clock as event time; a few batteries flip one cell over the warning limit every few
seconds (debounce 0), and a read_committed consumer of the alerts topic measures
arrival - event time for every alert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from twin_stream.settings import Settings
from twin_stream.simulate import SimConfig, simulate, write_records


def metrics(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/metrics/", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def start_worker(env: dict[str, str], port: int, data: Path, log: Path, per_event: bool):
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
    return subprocess.Popen(
        args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
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
    from twin_stream.settings import load_settings

    return load_settings(environ={k: v for k, v in env.items() if k.startswith("TWIN_")})


def throughput(bootstrap: str, data: Path, n: int, per_event: bool, tmp: Path) -> float:
    from twin_stream.kafka_io import ensure_topics, publish

    tag = ("base-" if per_event else "twin-") + uuid.uuid4().hex[:6]
    env = env_for(bootstrap, tag)
    s = settings_of(env)
    asyncio.run(ensure_topics(s))
    asyncio.run(publish(data, s))
    port = 6100 + (1 if per_event else 0)
    proc = start_worker(env, port, tmp / tag, tmp / f"{tag}.log", per_event)
    t_first = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            m = metrics(port)
            if m:
                done = m["processed"] + m["dead_letters"] + m["duplicates"]
                if done and t_first is None:
                    t_first, n_first = time.monotonic(), done
                if done >= n:
                    return (done - n_first) / (time.monotonic() - t_first)
            time.sleep(0.05)
        raise TimeoutError(f"worker did not finish; see {tmp / (tag + '.log')}")
    finally:
        stop(proc)


async def latency(bootstrap: str, rate: float, seconds: float, tmp: Path) -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from twin_stream.kafka_io import client_options, ensure_topics

    tag = "lat-" + uuid.uuid4().hex[:6]
    env = env_for(
        bootstrap,
        tag,
        {
            "TWIN_MODELS__PARAMS": json.dumps(
                {"voltage_monitor": {"raise_debounce_s": 0, "clear_debounce_s": 0}}
            ),
        },
    )
    s = settings_of(env)
    await ensure_topics(s)
    proc = start_worker(env, 6102, tmp / tag, tmp / f"{tag}.log", False)
    producer = AIOKafkaProducer(**client_options(s.kafka), linger_ms=2)
    consumer = AIOKafkaConsumer(
        s.topics.alerts,
        **client_options(s.kafka),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    lat: list[float] = []

    async def consume() -> None:
        async for msg in consumer:
            a = orjson.loads(msg.value)
            if a["code"] == "cell_over_voltage":
                from schemas.telemetry import parse_rfc3339_ms

                lat.append(time.time() * 1000 - parse_rfc3339_ms(a["ts"]))

    task = asyncio.create_task(consume())
    try:
        while metrics(6102) is None:
            await asyncio.sleep(0.2)
        await asyncio.sleep(8)  # partitions assigned, producers ready
        n_bat = 100
        cells = [3.7] * 96
        temps = [25.0] * 32
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic() - t0
            due = int(now * rate)
            while sent < due:
                b = sent % n_bat
                over = b < 5 and int(now) % 4 >= 2  # 5 batteries flip every 2 s
                cv = list(cells)
                if over:
                    cv[7] = 4.3
                rec = {
                    "battery_id": f"lat-{b:03d}",
                    "ts": int(time.time() * 1000),
                    "current": 10.0,
                    "cell_voltages": cv,
                    "temperatures": temps,
                }
                await producer.send(
                    s.topics.input, orjson.dumps(rec), key=rec["battery_id"].encode()
                )
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
        await asyncio.sleep(3)
    finally:
        task.cancel()
        await producer.stop()
        await consumer.stop()
        stop(proc)
    return lat


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bootstrap")
    ap.add_argument("--batteries", type=int, default=100)
    ap.add_argument("--duration", type=float, default=300, help="simulated seconds")
    ap.add_argument("--latency-seconds", type=float, default=60)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="twin-live-"))
    own = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from twin_stream.broker import up

        own = tmp / "broker"
        bootstrap = up(data_dir=own / "data", run_dir=own).bootstrap
    try:
        sim = simulate(
            SimConfig(
                batteries=args.batteries,
                cells=96,
                temperatures=32,
                duration_s=args.duration,
                seed=5,
            )
        )
        data = tmp / "fleet.jsonl"
        n = write_records(sim.records, data)
        del sim
        twin = throughput(bootstrap, data, n, False, tmp)
        base = throughput(bootstrap, data, n, True, tmp)
        print(
            f"throughput, one worker, exactly_once: {twin:,.0f} records/s "
            f"(per-event faust agent: {base:,.0f} records/s; ratio {twin / base:.1f}x)"
        )
        lat = asyncio.run(latency(bootstrap, twin / 2, args.latency_seconds, tmp))
        if lat:
            print(
                f"alert latency at {twin / 2:,.0f} records/s: p50 {pct(lat, 50):.0f} ms, "
                f"p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms over {len(lat)} alerts "
                f"(mean {statistics.mean(lat):.0f} ms)"
            )
        else:
            print("no alert arrived: see the worker logs in", tmp)
    finally:
        if own is not None:
            from twin_stream.broker import down

            down(run_dir=own)


if __name__ == "__main__":
    main()
