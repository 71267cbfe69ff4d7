"""Silence detection on the live worker: a battery that stops sending gets `telemetry_stale`
raised within stale_after_s (+ the check period + a margin), once, while a battery that keeps
sending does not; the alert is cleared when the silent battery sends again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from live_helpers import LiveRun, RawProducer, wait_for

STALE_AFTER_S = 3.0
CHECK_PERIOD_S = min(1.0, STALE_AFTER_S / 4)  # agents/app.py: the stale_check timer
MARGIN_S = 2.5  # polling the alerts topic, commit interval, a loaded CI machine


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    overrides = {"TWIN_WORKER__STALE_AFTER_S": str(STALE_AFTER_S)}
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name, overrides) as run:
        yield run


def record(bid: str) -> bytes:
    return orjson.dumps(
        {
            "battery_id": bid,
            "ts": int(time.time() * 1000),
            "current": 10.0,
            "voltage": 44.4,
            "cell_voltages": [3.70] * 12,
        }
    )


def stale_alerts(live: LiveRun, bid: str, status: str) -> list[dict]:
    return [
        a
        for a in live.read("alerts")
        if a["code"] == "telemetry_stale" and a["battery_id"] == bid and a["status"] == status
    ]


def test_silent_battery_is_stale_then_cleared(live: LiveRun) -> None:
    live.ensure_topics()
    worker = live.start_worker("w")
    worker.wait_metrics()
    producer = RawProducer(live.bootstrap, live.topics["input"])
    try:
        for _ in range(2):
            producer.send(b"quiet", record("quiet"))
            producer.send(b"chatty", record("chatty"))
            time.sleep(0.2)

        def both_seen() -> bool:
            assert worker.alive(), worker.tail()
            return (worker.metrics() or {}).get("tracked_batteries") == 2

        wait_for(both_seen, 60, "the worker to see both batteries", on_timeout=worker.tail)
        quiet_since = time.monotonic()  # the worker has seen "quiet" for the last time

        # "chatty" keeps sending; "quiet" is silent
        raised: list[dict] = []
        deadline = quiet_since + STALE_AFTER_S + CHECK_PERIOD_S + MARGIN_S + 5
        while not raised and time.monotonic() < deadline:
            producer.send(b"chatty", record("chatty"))
            time.sleep(0.25)
            raised = stale_alerts(live, "quiet", "raised")
        took = time.monotonic() - quiet_since
        assert raised, f"no telemetry_stale after {took:.1f} s\n{worker.tail()}"
        print(f"telemetry_stale raised {took:.1f} s after the last record")
        assert took <= STALE_AFTER_S + CHECK_PERIOD_S + MARGIN_S, took
        a = raised[0]
        assert a["model"] == "agents" and a["severity"] == "warning", a
        assert a["value"] >= STALE_AFTER_S and a["threshold"] == STALE_AFTER_S and a["unit"] == "s"
        assert (worker.metrics() or {}).get("stale_batteries") == 1

        # more silence raises nothing more; the chatty battery is never stale
        for _ in range(8):
            producer.send(b"chatty", record("chatty"))
            time.sleep(0.25)
        assert len(stale_alerts(live, "quiet", "raised")) == 1
        assert stale_alerts(live, "chatty", "raised") == []

        # "quiet" sends again: cleared, once
        back = time.monotonic()
        producer.send(b"quiet", record("quiet"))
        cleared = wait_for(
            lambda: stale_alerts(live, "quiet", "cleared"),
            10,
            "telemetry_stale cleared",
            on_timeout=worker.tail,
        )
        print(f"cleared {time.monotonic() - back:.1f} s after the battery came back")
        assert len(cleared) == 1 and cleared[0]["value"] == 0.0, cleared
        assert (worker.metrics() or {}).get("stale_batteries") == 0
        assert worker.alive(), worker.tail()
    finally:
        producer.close()


def test_stale_raise_survives_kill_9(live: LiveRun) -> None:
    """The raise commits with a mark in the table: a worker killed while a battery is silent
    does not raise it again after its restart, and the clear still comes, once."""
    live.ensure_topics()
    data_dir = live.base / "worker-data"
    worker = live.start_worker("w1", data_dir=data_dir)
    worker.wait_metrics()
    producer = RawProducer(live.bootstrap, live.topics["input"])
    try:
        producer.send(b"quiet", record("quiet"))
        deadline = time.monotonic() + 60
        while not stale_alerts(live, "quiet", "raised"):
            assert time.monotonic() < deadline, worker.tail()
            producer.send(b"chatty", record("chatty"))
            time.sleep(0.25)
        worker.kill()
        worker.proc.wait(10)

        again = live.start_worker("w2", data_dir=data_dir)
        again.wait_metrics()

        def chatty_seen() -> bool:
            producer.send(b"chatty", record("chatty"))
            assert again.alive(), again.tail()
            return (again.metrics(timeout=0.5) or {}).get("tracked_batteries") == 2

        wait_for(chatty_seen, 90, "the restarted worker to know both batteries", 0.25, again.tail)
        for _ in range(int((STALE_AFTER_S + CHECK_PERIOD_S + MARGIN_S) / 0.25)):
            producer.send(b"chatty", record("chatty"))
            time.sleep(0.25)
        assert len(stale_alerts(live, "quiet", "raised")) == 1, again.tail()
        assert (again.metrics() or {}).get("stale_batteries") == 1

        producer.send(b"quiet", record("quiet"))
        wait_for(
            lambda: stale_alerts(live, "quiet", "cleared"), 15, "the clear", on_timeout=again.tail
        )
        time.sleep(1.0)
        assert len(stale_alerts(live, "quiet", "cleared")) == 1
        assert stale_alerts(live, "chatty", "raised") == []
    finally:
        producer.close()
