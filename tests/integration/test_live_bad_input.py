"""Bad input on the live topic becomes dead letters with a reason, and the worker lives on:
not JSON, empty/tombstone, wrong types, missing fields, non-finite numbers, too large,
unkeyed or wrongly keyed telemetry, a gateway batch with one bad element. Good telemetry
published afterwards is processed exactly as replay processes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from live_helpers import (
    LiveRun,
    assert_same_outputs,
    replay_outputs,
    simulate_file,
    wait_for,
)

MAX_BYTES = 4000


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveRun]:
    overrides = {"TWIN_ENGINE__MAX_MESSAGE_BYTES": str(MAX_BYTES)}
    with LiveRun(kafka_bootstrap, tmp_path / "live", request.node.name, overrides) as run:
        yield run


def rec(bid: str, ts: object, **fields: object) -> dict:
    return {"battery_id": bid, "ts": ts, "current": 1.5, "voltage": 3.7, **fields}


# (key, value, what the dead letter's error must contain); one dead letter each
BAD: list[tuple[bytes | None, bytes | None, str]] = [
    (None, b"this is not json", "invalid JSON"),
    (b"bad-1", None, "invalid JSON"),  # a tombstone
    (b"bad-1", b"{not json either", "invalid JSON"),
    (b"bad-1", b"", "invalid JSON"),
    (b"bad-1", b"\xff\xfe\x00garbage", "invalid JSON"),
    (b"bad-1", b"42", "expected a JSON object"),
    (b"bad-1", orjson.dumps(rec("bad-1", 1000, current="abc")), "current"),
    (b"bad-1", orjson.dumps(rec("bad-1", "yesterday")), "ts"),
    (b"bad-1", orjson.dumps({"battery_id": "bad-1", "ts": 1000}), "current"),
    (b"bad-1", b'{"battery_id":"bad-1","ts":1000,"current":NaN}', "invalid JSON"),
    (b"bad-1", orjson.dumps(rec("bad-1", 1000, soc="150")), "soc"),  # wrong type (150 degrades)
    (b"bad-1", orjson.dumps(rec("bad-1", 1000, cell_voltages=[3.7] * 2000)), "max_message_bytes"),
    # well-formed telemetry, but not keyed by its battery_id
    (None, orjson.dumps(rec("bad-2", 1000)), "does not match the message key"),
    (b"someone-else", orjson.dumps(rec("bad-2", 1000)), "does not match the message key"),
]
# a gateway batch: the first element is good, the second is dead-lettered
BATCH = orjson.dumps([rec("bad-3", 1000), rec("bad-3", 2000, current=None)])


def test_bad_input_becomes_dead_letters_and_the_worker_goes_on(
    live: LiveRun, tmp_path: Path
) -> None:
    good = simulate_file(tmp_path / "good.jsonl", batteries=3, cells=16, duration_s=600)
    want = replay_outputs(good, live.settings, tmp_path / "replay")
    assert want["deadletter"] == []

    live.ensure_topics()
    worker = live.start_worker("w")
    worker.wait_metrics()
    live.publish_raw([(k, v) for k, v, _ in BAD] + [(b"bad-3", BATCH)])
    n_dead = len(BAD) + 1

    def dead_seen() -> dict | None:
        assert worker.alive(), worker.tail()
        m = worker.metrics()
        return m if m and m["dead_letters"] >= n_dead else None

    m = wait_for(dead_seen, 60, f"{n_dead} dead letters", on_timeout=worker.tail)
    assert m["dead_letters"] == n_dead and m["errors"] == 0, m

    # the worker goes on with good telemetry
    n_good = live.publish(good)
    wait_for(
        lambda: (worker.metrics() or {}).get("processed", 0) >= n_good + 1,
        60,
        "the good records to be processed",
        on_timeout=worker.tail,
    )
    live.wait_input_committed(timeout=30)
    live.wait_outputs_stable()
    got = live.outputs()
    assert worker.alive(), worker.tail()

    # every bad message is one dead letter with its reason and its raw payload
    dead = list(got["deadletter"])
    for key, value, reason in [*BAD, (b"bad-3", BATCH, "current")]:
        raw_ok = (value or b"").decode("utf-8", "replace")
        want_key = key.decode() if key else None
        match = [
            d
            for d in dead
            if reason in d["error"]
            and (d["raw"] == raw_ok or d["raw"] in raw_ok)
            and d["_key"] == want_key
        ]
        assert match, f"no dead letter for {raw_ok[:60]!r} with {reason!r}; got {dead}"
        d = match[0]
        dead.remove(d)
        assert d["source"].startswith(live.topics["input"] + "["), d
    assert dead == [], f"unexpected dead letters: {dead}"

    # the good element of the batch was processed; the good fleet gives replay's outputs
    assert any(e["battery_id"] == "bad-3" for e in got["estimates"])
    fleet = {
        n: [r for r in got[n] if not str(r.get("battery_id") or "").startswith("bad-")]
        for n in ("alerts", "estimates")
    }
    fleet["deadletter"] = []
    assert_same_outputs(fleet, want)
