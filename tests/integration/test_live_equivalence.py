"""Live == replay: a simulated fleet published to Kafka and processed by one real worker gives
exactly the alerts, estimates and dead letters that `replay` gives for the same file -- with
the production defaults (exactly_once, RocksDB) and with at_least_once on the memory store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import LiveRun, assert_same_outputs, replay_outputs, simulate_file, wait_for

MODES = {
    "exactly_once-rocksdb": {},
    "at_least_once-memory": {
        "TWIN_WORKER__PROCESSING_GUARANTEE": "at_least_once",
        "TWIN_WORKER__STORE": "memory://",
    },
}


@pytest.fixture(params=list(MODES))
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    overrides = MODES[request.param]
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name, overrides) as run:
        yield run


def test_live_worker_gives_the_replay_outputs(live: LiveRun, tmp_path: Path) -> None:
    path = simulate_file(
        tmp_path / "fleet.jsonl",
        batteries=6,
        cells=24,
        duration_s=1200,
        over_voltage=1,
        bad_records=5,
        duplicates=20,
    )
    want = replay_outputs(path, live.settings, tmp_path / "replay")
    assert want["alerts"] and want["estimates"] and want["deadletter"]

    n = live.publish(path)
    worker = live.start_worker("w1")
    worker.wait_metrics(timeout=60)

    # every published record is processed, dead-lettered or counted as a duplicate
    def done() -> dict | None:
        assert worker.alive(), worker.tail()
        m = worker.metrics()
        if m and m["processed"] + m["dead_letters"] + m["duplicates"] >= n:
            return m
        return None

    t0 = time.monotonic()
    m = wait_for(done, 90, f"the worker to account for {n} records", on_timeout=worker.tail)
    assert m["processed"] + m["dead_letters"] + m["duplicates"] == n, m
    assert m["errors"] == 0, m
    live.wait_input_committed(timeout=30)
    live.wait_outputs_stable()
    got = live.outputs()
    print(f"processed {n} records in {time.monotonic() - t0:.1f} s after the worker started")

    assert m["alerts"] == len(want["alerts"]) and m["estimates"] == len(want["estimates"]), m
    assert_same_outputs(got, want)
    assert worker.alive()
