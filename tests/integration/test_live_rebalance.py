"""Scale-out and hand-over: two workers of one group split the input partitions (each tracks
some of the batteries); one is stopped (SIGTERM) while it is processing; the other takes its
batteries over with their state (from the changelog) and the final outputs equal the replay."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import (
    LiveRun,
    assert_same_outputs,
    final_estimates,
    replay_outputs,
    simulate_file,
    wait_for,
)

BATTERIES = 6


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name) as run:
        yield run


def test_two_workers_split_and_one_takes_over(live: LiveRun, tmp_path: Path) -> None:
    path = simulate_file(
        tmp_path / "fleet.jsonl",
        batteries=BATTERIES,
        cells=24,
        duration_s=2400,
        over_voltage=1,
        bad_records=3,
        duplicates=10,
    )
    want = replay_outputs(path, live.settings, tmp_path / "replay")
    lines = path.read_bytes().splitlines(keepends=True)
    cut = len(lines) // 4
    part1, part2 = tmp_path / "part1.jsonl", tmp_path / "part2.jsonl"
    part1.write_bytes(b"".join(lines[:cut]))
    part2.write_bytes(b"".join(lines[cut:]))

    live.publish(part1)
    a = live.start_worker("a")
    b = live.start_worker("b")
    t0 = time.monotonic()

    # the group splits the partitions: both workers track some batteries, none twice
    def split() -> tuple[dict, dict] | None:
        ma, mb = a.wait_metrics(), b.wait_metrics()
        if ma["tracked_batteries"] and mb["tracked_batteries"]:
            return ma, mb
        return None

    ma, mb = wait_for(split, 90, "both workers to own partitions", 0.5, live.tails)
    live.wait_input_committed(timeout=60)
    ma, mb = a.wait_metrics(), b.wait_metrics()
    assert ma["tracked_batteries"] + mb["tracked_batteries"] == BATTERIES, (ma, mb)
    print(
        f"split after {time.monotonic() - t0:.1f} s: a {ma['tracked_batteries']}, "
        f"b {mb['tracked_batteries']} batteries"
    )

    # the rest of the stream arrives while b works; b is stopped in the middle of it
    before = mb["records"]
    publisher = threading.Thread(target=live.publish, args=(part2,))
    publisher.start()
    try:
        wait_for(
            lambda: (b.metrics() or {}).get("records", 0) > before + 300,
            60,
            "b to process part of the rest",
            0.05,
            b.tail,
        )
        b.stop(timeout=60)
    finally:
        publisher.join(120)
    stopped_at = time.monotonic() - t0
    assert b.proc.returncode == 0, b.tail()

    live.wait_input_committed(timeout=120, expect_total=len(lines))
    live.wait_outputs_stable()
    got = live.outputs()
    print(f"b stopped at {stopped_at:.1f} s; done at {time.monotonic() - t0:.1f} s")
    assert a.alive(), a.tail()
    # a took b's batteries: known from the table once the hand-over's recovery is done (the
    # outputs above may all be committed before, when b processed the rest itself)
    wait_for(
        lambda: (a.metrics() or {}).get("tracked_batteries") == BATTERIES,
        30,
        "a to watch every battery",
        0.5,
        a.tail,
    )

    assert_same_outputs(got, want)
    assert final_estimates(got["estimates"], "equivalent_cycles") == final_estimates(
        want["estimates"], "equivalent_cycles"
    )
