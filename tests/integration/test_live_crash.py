"""Exactly-once under kill -9: a worker killed at random points of a stream (seeded) and
restarted each time -- with its data dir kept, and once with the data dir wiped so the state
must come back from the changelog -- ends with exactly the outputs of an uninterrupted replay
(read_committed): no alert or estimate lost or doubled, and the same equivalent cycles per
battery (no cycle counted twice).

The CI version kills 3 times; the `heavy` one kills 7 times on a longer stream."""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import (
    LiveRun,
    Worker,
    assert_same_outputs,
    final_estimates,
    replay_outputs,
    simulate_file,
    wait_for,
)

# Small chunks, so that a stream of a few thousand records spans many chunks and commits and
# a kill lands between them (the default chunk would swallow the whole stream at once).
CHUNK = {"TWIN_WORKER__TAKE_MAX": "200"}


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name, CHUNK) as run:
        yield run


def kill_restart_run(
    live: LiveRun,
    tmp_path: Path,
    *,
    plan: list[tuple[str, str]],
    seed: int,
    batteries: int,
    duration_s: float,
) -> None:
    """`plan`: one (data dir "kept" | "wiped", kill "early" | "random") per incarnation.
    An early kill lands right after the first records of the incarnation, usually before its
    first commit: the local store then holds writes of a transaction that will be aborted."""
    path = simulate_file(
        tmp_path / "fleet.jsonl",
        batteries=batteries,
        cells=24,
        duration_s=duration_s,
        over_voltage=1,
        bad_records=3,
        duplicates=10,
    )
    want = replay_outputs(path, live.settings, tmp_path / "replay")
    n = live.publish(path)
    rng = random.Random(seed)
    data_dir = tmp_path / "worker-data"
    t0 = time.monotonic()
    log: list[str] = []
    committed_before = 0
    for i, (how, when) in enumerate(plan):
        if how == "wiped":
            shutil.rmtree(data_dir, ignore_errors=True)
        w = live.start_worker(f"crash{i}", data_dir=data_dir)
        # kill after a random number of records processed by this incarnation; a "random"
        # kill also waits for a commit of this incarnation, so the next one resumes mid-stream
        at = 1 if when == "early" else rng.randint(n // 20, n // (2 * len(plan)))

        def reached(
            w: Worker = w,
            at: int = at,
            early: bool = when == "early",
            before: int = committed_before,
        ) -> dict | None:
            assert w.alive(), w.tail()
            m = w.metrics(timeout=0.5)
            if not m or m["records"] < at:
                return None
            return m if early or live.input_progress()[0] > before else None

        m = wait_for(reached, 90, f"worker {i} to process {at} records", 0.02, w.tail)
        w.kill(signal.SIGKILL)
        w.proc.wait(10)
        committed, end = live.input_progress()
        committed_before = committed
        log.append(
            f"kill {i} ({how} dir, {when}) after {m['records']} records "
            f"at {time.monotonic() - t0:.1f} s; committed {committed}/{end}"
        )
        assert committed < end, "the stream ended before the kill; use a longer one\n" + "\n".join(
            log
        )
    final = live.start_worker("final", data_dir=data_dir)
    live.wait_input_committed(timeout=120, expect_total=n)
    live.wait_outputs_stable()
    got = live.outputs()
    print("\n".join(log), f"\ndone at {time.monotonic() - t0:.1f} s")
    assert final.alive(), final.tail()

    assert_same_outputs(got, want)
    assert final_estimates(got["estimates"], "equivalent_cycles") == final_estimates(
        want["estimates"], "equivalent_cycles"
    )


def test_kill_9_and_restart_gives_the_replay_outputs(live: LiveRun, tmp_path: Path) -> None:
    kill_restart_run(
        live,
        tmp_path,
        plan=[("kept", "early"), ("kept", "random"), ("wiped", "random")],
        seed=20260101,
        batteries=6,
        duration_s=2400,
    )


@pytest.mark.heavy
def test_kill_9_many_times_gives_the_replay_outputs(live: LiveRun, tmp_path: Path) -> None:
    kill_restart_run(
        live,
        tmp_path,
        plan=[
            ("kept", "random"),
            ("kept", "early"),
            ("kept", "random"),
            ("wiped", "random"),
            ("kept", "early"),
            ("wiped", "early"),
            ("kept", "random"),
        ],
        seed=7,
        batteries=8,
        duration_s=3600 * 2,
    )
