"""`twin-stream publish` without a broker: a one-line summary of what was sent; on a failure,
how many records the broker acknowledged and the exact `--skip` to resume with (the
acknowledged prefix of the file, since acknowledgements resolve out of order)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from typer.testing import CliRunner

from twin_stream import kafka_io
from twin_stream.cli import app
from twin_stream.config.settings import load_settings
from twin_stream.kafka_io import PublishStats, _settle, count_records, publish

N = 20


@pytest.fixture
def file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.jsonl"
    lines = [
        orjson.dumps({"battery_id": f"b{i % 3}", "ts": 1_700_000_000_000 + 1000 * i, "seq": i})
        for i in range(N - 1)
    ]
    lines.insert(5, b"{not json")  # sent too, unkeyed
    path.write_bytes(b"\n".join(lines) + b"\n\n")  # a blank line is not a record
    return path


def seq(value: bytes) -> int | None:
    try:
        return int(orjson.loads(value)["seq"])
    except orjson.JSONDecodeError:
        return None


class FakeProducer:
    """AIOKafkaProducer's surface used by publish: every send is acknowledged at once except
    those whose 0-based send index is in `fail` (an error) or `hang` (never resolves)."""

    fail: ClassVar[frozenset[int]] = frozenset()
    hang: ClassVar[frozenset[int]] = frozenset()
    made: ClassVar[list[FakeProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.stopped = False
        type(self).made.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None) -> asyncio.Future[Any]:
        i = len(self.sent)
        self.sent.append((topic, value, key))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if i in self.fail:
            fut.set_exception(RuntimeError("NotEnoughReplicas"))
        elif i not in self.hang:
            fut.set_result(object())
        return fut


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import aiokafka

    class Fake(FakeProducer):
        made: ClassVar[list[FakeProducer]] = []

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Fake)

    async def no_topics(settings: Any, timeout_s: float = 30.0) -> None:
        return None

    monkeypatch.setattr(kafka_io, "ensure_topics", no_topics)
    return Fake


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["publish", *args, "--no-progress"])


def test_count_records_counts_what_publish_sends(file: Path) -> None:
    assert count_records(file) == N
    assert count_records(file.with_name("missing.jsonl")) is None


def test_unreachable_broker_fails_fast_with_nothing_acknowledged(
    file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWIN_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    t0 = time.monotonic()
    r = invoke(str(file), "--timeout", "1")
    assert time.monotonic() - t0 < 15
    assert r.exit_code == 2, r.output
    line = " ".join(r.stderr.split())
    assert "127.0.0.1:1" in line
    assert f"0 of {N} records acknowledged" in line
    assert f"resume with: twin-stream publish {file} --skip 0" in line
    assert "Traceback" not in r.output

    r = invoke(str(file), "--timeout", "1", "--skip", "7", "--topic", "other")
    assert r.exit_code == 2
    line = " ".join(r.stderr.split())
    assert f"7 of {N} records acknowledged (the first 7 skipped)" in line
    assert "--skip 7 --topic other" in line


def test_publish_itself_keeps_its_counts_when_the_broker_is_unreachable(file: Path) -> None:
    settings = load_settings(environ={"TWIN_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    stats = PublishStats()
    with pytest.raises(Exception, match="bootstrap"):
        asyncio.run(publish(file, settings, timeout_s=1, skip=4, stats=stats))
    assert (stats.sent, stats.acked, stats.resume_at, stats.skipped) == (0, 0, 4, 4)


def test_success_prints_a_summary(file: Path, fake: type[FakeProducer]) -> None:
    r = invoke(str(file))
    assert r.exit_code == 0, r.output
    assert f"published {N} records (1 unkeyed, " in r.stdout
    assert "records/s" in r.stdout
    assert len(r.stdout.strip().splitlines()) == 1
    (producer,) = fake.made
    assert producer.stopped
    assert producer.options["acks"] == "all" and producer.options["enable_idempotence"]
    assert [seq(v) for _, v, _ in producer.sent][:7] == [0, 1, 2, 3, 4, None, 5]


def test_skip_leaves_out_the_first_records(file: Path, fake: type[FakeProducer]) -> None:
    r = invoke(str(file), "--skip", "6")
    assert r.exit_code == 0, r.output
    assert f"published {N - 6} records (0 unkeyed" in r.stdout
    assert "the first 6 skipped" in r.stdout
    (producer,) = fake.made
    assert [seq(v) for _, v, _ in producer.sent] == list(range(5, N - 1))

    r = invoke(str(file), "--skip", str(N + 5))  # past the end: nothing to send
    assert r.exit_code == 0, r.output
    assert "published 0 records" in r.stdout
    assert invoke(str(file), "--skip", "-1").exit_code != 0


def test_a_failure_mid_file_resumes_after_the_acknowledged_prefix(
    file: Path, fake: type[FakeProducer]
) -> None:
    fake.fail = frozenset({9})  # the 10th send fails; the others, later too, are acknowledged
    r = invoke(str(file), "--skip", "2", "--speed", "1000")
    assert r.exit_code == 2
    line = " ".join(r.stderr.split())
    assert "RuntimeError: NotEnoughReplicas" in line
    resume_at = 2 + 9
    assert (
        f"{resume_at} of {N} records acknowledged (the first 2 skipped; "
        f"{N - resume_at - 1} more past that point, sent again on resume)"
    ) in line
    assert f"resume with: twin-stream publish {file} --skip {resume_at} --speed 1000" in line


def test_unresolved_sends_do_not_count(file: Path, fake: type[FakeProducer]) -> None:
    fake.fail, fake.hang = frozenset({15}), frozenset({3})
    stats = PublishStats()
    settings = load_settings(environ={})
    with pytest.raises(RuntimeError):
        asyncio.run(publish(file, settings, stats=stats))
    assert stats.sent == N
    assert stats.acked == N - 2
    assert stats.resume_at == 3


def test_settle_counts_the_acknowledged_prefix() -> None:
    async def run() -> PublishStats:
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(6)]
        for i in (0, 1, 3, 5):  # out of order: 2 and 4 not (yet) acknowledged
            futs[i].set_result(None)
        futs[4].set_exception(RuntimeError("x"))
        stats = PublishStats(skipped=10, resume_at=10)
        inflight = [(f, i == 1, 100) for i, f in enumerate(futs)]
        _settle(inflight, stats)
        assert inflight == []
        futs[2].cancel()
        return stats

    stats = asyncio.run(run())
    assert (stats.acked, stats.unkeyed, stats.bytes, stats.resume_at) == (4, 1, 400, 12)
