"""Poison input: no message may stop the decoder or the engine, dead letters stay bounded and
say what they stand for, and event time is bounded by the wall clock."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from schemas.outputs import DeadLetterRecord
from twin_stream.codec import RAW_HEAD_CHARS, Decoder
from twin_stream.codec import decoder as decoder_module
from twin_stream.config.settings import Settings
from twin_stream.engine import Engine

GOOD = b'{"battery_id":"b1","ts":1767225600000,"current":1.5}'
POISON = {
    "bigint_ts": b'{"battery_id":"b1","ts":123456789012345678901234567890,"current":1.0}',
    "bigint_current": b'{"battery_id":"b1","ts":1767225600000,'
    b'"current":123456789012345678901234567}',
    "deep_field": b'{"battery_id":"b1","ts":1767225600000,"current":1.0,"x":'
    + b"[" * 1100
    + b"]" * 1100
    + b"}",
    "deep_array": b"[" * 5000 + b"]" * 5000,
    "deep_object": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "non_utf8": b'{"battery_id":"b\xff\xfe","ts":1767225600000,"current":1.0}',
    "huge_invalid": b'{"battery_id":"b1","ts":1767225600000,"current":"' + b"x" * 800_000 + b'"}',
}


@pytest.mark.parametrize("kind", sorted(POISON))
def test_poison_is_one_bounded_dead_letter_and_the_next_record_goes_on(kind: str) -> None:
    data = POISON[kind]
    rows: list = []
    dead: list = []
    origin: list = []
    Decoder().decode_many([(GOOD, "s:0"), (data, "s:1"), (GOOD, "s:2")], rows, dead, origin)
    assert origin == [0, 2]  # the records around the poison are decoded
    assert len(dead) == 1
    d = dead[0]
    assert d.source == "s:1" and d.records == 1
    assert d.raw_bytes == len(data)
    assert d.raw_sha256 == hashlib.sha256(data).hexdigest()
    assert len(d.raw) <= RAW_HEAD_CHARS
    assert d.truncated == (len(data) > RAW_HEAD_CHARS)
    wire = orjson.dumps(d.to_dict())
    assert len(wire) < 4096  # always sendable, whatever came in
    DeadLetterRecord.model_validate_json(wire)


def test_seq_wider_than_64_bits_does_not_hide_a_valid_record() -> None:
    data = b'{"battery_id":"b1","ts":1767225600000,"current":1.0,'
    data += b'"seq":123456789012345678901234567890}'
    rows: list = []
    dead: list = []
    Decoder().decode_many([(data, "s")], rows, dead)
    assert dead == [] and rows[0].current == 1.0


def test_an_array_of_many_invalid_records_gives_a_capped_count_of_dead_letters() -> None:
    items = [1] * 9_995 + [orjson.loads(GOOD)] + [2] * 4
    data = orjson.dumps(items)
    rows: list = []
    dead: list = []
    dec = Decoder(max_dead_per_message=10)
    dec.decode_many([(data, "t[0]@5")], rows, dead)
    assert [r.current for r in rows] == [1.5]  # the one good record is kept
    assert len(dead) == 11
    assert [d.records for d in dead] == [1] * 10 + [9_989]
    assert sum(d.records for d in dead) == 9_999  # every refused record is counted
    assert dead[-1].source == "t[0]@5[10:]"
    assert "9989 more refused records" in dead[-1].error
    engine = Engine(Settings())
    engine.count_invalid(dead)
    assert engine.metrics.invalid == 9_999 and engine.metrics.dead_letters == 9_999


def test_an_exception_anywhere_in_decoding_is_one_dead_letter(monkeypatch) -> None:
    def boom(obj, source="", markers=None):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(decoder_module, "lean_row", boom)  # where the decoder looks it up
    rows: list = []
    dead: list = []
    Decoder().decode_many([({"battery_id": "b"}, "s:0"), (GOOD, "s:1")], rows, dead)
    assert [d.error for d in dead] == ["undecodable message: ZeroDivisionError: a bug"]
    assert len(rows) == 1


def test_error_text_is_capped() -> None:
    from twin_stream.codec import ERROR_MAX_CHARS, dead_letter

    d = dead_letter("e" * 10_000, b"x", "s")
    assert len(d.error) == ERROR_MAX_CHARS and d.error.endswith("...")


# -- event time bounded by the wall clock --------------------------------------------------

NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _rows(*ts_ms: int) -> list:
    rows: list = []
    dead: list = []
    Decoder().decode_many(
        [
            (orjson.dumps({"battery_id": "b1", "ts": t, "current": 10.0}), f"s:{i}")
            for i, t in enumerate(ts_ms)
        ],
        rows,
        dead,
    )
    assert dead == []
    return rows


def test_a_far_future_record_is_a_dead_letter_and_never_the_frontier() -> None:
    engine = Engine(Settings.model_validate({"engine": {"max_clock_skew_s": 60}}), lambda: NOW_S)
    t0 = int(NOW_S * 1000) - 10_000
    year_3000 = 32_503_680_000_000
    res = engine.process("b1", _rows(t0, year_3000, t0 + 1000, t0 + 2000), None)
    assert res.state["last_ts"] == t0 + 2000  # the real records after it are processed
    assert engine.metrics.future == 1 and engine.metrics.late == 0
    assert engine.metrics.processed == 3
    assert len(res.dead) == 1 and res.dead[0].error.startswith("future: ts 3000-01-01")
    assert "engine.max_clock_skew_s = 60" in res.dead[0].error
    assert engine.metrics.dead_letters == 1


def test_within_the_skew_allowance_is_accepted() -> None:
    engine = Engine(Settings.model_validate({"engine": {"max_clock_skew_s": 60}}), lambda: NOW_S)
    now = int(NOW_S * 1000)
    res = engine.process("b1", _rows(now + 59_000, now + 61_000), None)
    assert res.state["last_ts"] == now + 59_000
    assert engine.metrics.future == 1


def test_a_stored_frontier_from_the_future_is_reset_once() -> None:
    settings = Settings.model_validate({"engine": {"max_clock_skew_s": 60}})
    t0 = int(NOW_S * 1000) - 10_000
    broken = Engine(settings, lambda: 40_000_000_000.0)  # a clock far ahead accepted it
    state = broken.process("b1", _rows(32_503_680_000_000), None).state
    assert state["last_ts"] == 32_503_680_000_000
    engine = Engine(settings, lambda: NOW_S)
    res = engine.process("b1", _rows(t0, t0 + 1000), state)
    assert engine.metrics.frontier_resets == 1
    assert engine.metrics.late == 0 and res.state["last_ts"] == t0 + 1000
    engine.process("b1", _rows(t0 + 2000), res.state)
    assert engine.metrics.frontier_resets == 1  # the repaired state is not reset again


def test_a_model_that_cannot_be_built_dead_letters_its_records_and_the_engine_goes_on(
    monkeypatch,
) -> None:
    from models.eq_cycles.model import EqCycles

    engine = Engine(Settings())
    original = EqCycles.__init__

    def broken(self, *args, **kwargs):
        raise KeyError("a parameter the code expects")

    monkeypatch.setattr(EqCycles, "__init__", broken)
    t0 = int(NOW_S * 1000) - 10_000
    res = engine.process("b1", _rows(t0, t0 + 1000), None)
    assert engine.metrics.errors == 2 and len(res.dead) == 2
    assert "internal error processing b1: KeyError" in res.dead[0].error
    monkeypatch.setattr(EqCycles, "__init__", original)  # the fix is deployed
    engine = Engine(Settings())
    again = engine.process("b1", _rows(t0, t0 + 1000), res.state)
    assert again.dead == [] and engine.metrics.processed == 2
