"""`twin-stream publish --skip N` on the real broker: exactly the records after the first N of
the file reach the topic, in file order, starting with record N+1."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from twin_stream.cli import app
from twin_stream.config.settings import load_settings
from twin_stream.devtools.simulate import SimConfig, simulate, write_records
from twin_stream.kafka_io import record

pytestmark = pytest.mark.integration

SKIP = 17


def test_publish_with_skip_sends_the_rest_of_the_file(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.jsonl"
    sim = simulate(SimConfig(batteries=2, cells=4, temperatures=1, duration_s=30, seed=3))
    n = write_records(sim.records, path)
    lines = [ln.strip() for ln in path.read_bytes().splitlines() if ln.strip()]
    assert len(lines) == n > SKIP

    topic = f"test.publish.{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("TWIN_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TWIN_TOPICS__INPUT", topic)
    monkeypatch.setenv("TWIN_TOPICS__PARTITIONS", "1")  # one partition: one order to check
    r = CliRunner().invoke(
        app, ["publish", str(path), "--skip", str(SKIP), "--timeout", "20", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert f"published {n - SKIP} records (0 unkeyed" in r.stdout
    assert f"the first {SKIP} skipped" in r.stdout

    out = tmp_path / "topic.jsonl"
    got = asyncio.run(record(topic, out, load_settings(), idle_s=3.0))
    assert got == n - SKIP
    on_topic = out.read_bytes().splitlines()
    assert orjson.loads(on_topic[0]) == orjson.loads(lines[SKIP])  # record N+1 of the file
    assert [orjson.loads(x) for x in on_topic] == [orjson.loads(x) for x in lines[SKIP:]]
