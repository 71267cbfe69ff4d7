"""The lean validator and the pydantic schema are two implementations of one rule set: they
must agree on every record, and each refused record yields one precise dead letter."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.telemetry import Telemetry, parse_rfc3339_ms
from twin_stream.codec import Decoder, iso_ms, lean_row, lean_row_json, reason

GOOD = {
    "battery_id": "bus-17:pack.A",
    "ts": "2026-03-01T12:00:00.250+01:00",
    "current": -12.5,
    "voltage": 355.2,
    "cell_voltages": [3.7, 3.71, 3.69],
    "temperatures": [25.0, 26],
    "soc": 55.5,
    "soh": 97,
    "seq": 3,
}

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.floats(-5, 15), max_size=4),
    st.lists(st.text(max_size=2), max_size=2),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "1e3", "abc"]),
)


def schema_accepts(obj: object) -> bool:
    try:
        Telemetry.model_validate(obj)
    except ValidationError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), anything, max_size=9), st.booleans())
def test_lean_and_schema_agree_on_mutated_records(patch: dict, start_from_good: bool) -> None:
    obj = {**GOOD, **patch} if start_from_good else patch
    row = lean_row(obj)
    assert (row is not None) == schema_accepts(obj), obj
    if row is not None:
        rec = Telemetry.model_validate(obj)
        assert row.ts == rec.ts_ms
        assert row.current == rec.current
        # field rule: invalid channels and optional values become NaN, the record stays
        assert _floats(row.cells) == _degraded(rec.cell_voltages, 0.0, 10.0)
        assert _floats(row.temps) == _degraded(rec.temperatures, -100.0, 300.0)
        assert repr(row.soc) == _degraded([rec.soc], 0.0, 100.0)[0]  # type: ignore[index]
        soh = rec.soh if rec.soh is not None and rec.soh > 1.0 else None
        assert repr(row.soh) == _degraded([soh], 0.0, 100.0)[0]  # type: ignore[index]


def _degraded(values: list | None, lo: float, hi: float) -> list[str] | None:
    """What the codec must make of a channel list: out of range or null -> NaN (as repr)."""
    if values is None:
        return None
    return [repr(float(v)) if v is not None and lo <= v <= hi else "nan" for v in values]


def _floats(a) -> list[str] | None:
    return None if a is None else [repr(float(v)) for v in a]


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), anything, max_size=9), st.booleans())
def test_json_fast_path_agrees_with_schema(patch: dict, start_from_good: bool) -> None:
    obj = {**GOOD, **patch} if start_from_good else patch
    text = orjson.dumps(obj)
    row = lean_row_json(text)
    assert (row is not None) == schema_accepts(orjson.loads(text)), text
    if row is not None:
        assert _values(row) == _values(lean_row(orjson.loads(text)))
        assert row.degraded == lean_row(orjson.loads(text)).degraded  # type: ignore[union-attr]


def test_good_record_normalised() -> None:
    row = lean_row(GOOD)
    assert row is not None
    # 12:00:00.250+01:00 is 11:00:00.250Z
    assert row.ts == parse_rfc3339_ms("2026-03-01T11:00:00.250Z")
    assert iso_ms(row.ts) == "2026-03-01T11:00:00.250Z"
    assert math.isnan(lean_row({"battery_id": "b", "ts": 5, "current": 0}).voltage)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b'"a string"', "expected a JSON object"),
        (b"[]", "empty array"),
        (b'{"ts": 1, "current": 1}', "battery_id: field required"),
        (b'{"battery_id": "b 1", "ts": 1, "current": 1}', "battery_id: String should match"),
        (b'{"battery_id": "b", "current": 1}', "ts: field required"),
        (
            b'{"battery_id": "b", "ts": "2026-01-01", "current": 1}',
            "needs a date, a time and an offset",
        ),
        (b'{"battery_id": "b", "ts": 1.5, "current": 1}', "ts"),
        (
            b'{"battery_id": "b", "ts": 1, "current": "abc"}',
            "current: Input should be a valid number",
        ),
        (
            b'{"battery_id": "b", "ts": 1, "current": true}',
            "current: Input should be a valid number",
        ),
        (b'{"battery_id": "b", "ts": 1, "current": 1e9}', "current: Input should be less than"),
        (
            b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": []}',
            "cell_voltages: List should have at least 1 item",
        ),
        (
            b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [3.1, "x"]}',
            "cell_voltages.1",
        ),
        (b'{"battery_id": "b", "ts": 1, "current": 1, "seq": -1}', "seq"),
        (b'{"battery_id": "b", "ts": 1, "current": NaN}', "invalid JSON"),
    ],
)
def test_each_bad_message_gives_one_precise_dead_letter(message: bytes, expected: str) -> None:
    rows: list = []
    dead: list = []
    Decoder().decode(message, "t:1", rows, dead)
    assert rows == []
    assert len(dead) == 1
    assert expected in dead[0].error
    assert dead[0].source == "t:1"
    assert dead[0].raw  # the record as received is kept


def test_batched_array_keeps_good_records_around_a_bad_one() -> None:
    msg = orjson.dumps(
        [
            {"battery_id": "b", "ts": 1, "current": 1.0},
            {"battery_id": "b", "ts": 2, "current": "x"},
            {"battery_id": "b", "ts": 3, "current": 3.0},
        ]
    )
    rows: list = []
    dead: list = []
    Decoder().decode(msg, "topic[0]@7", rows, dead)
    assert [r.ts for r in rows] == [1, 3]
    assert [d.source for d in dead] == ["topic[0]@7[1]"]
    assert orjson.loads(dead[0].raw)["current"] == "x"


def test_oversized_message_is_dead_lettered() -> None:
    rows: list = []
    dead: list = []
    Decoder(max_bytes=1024).decode(b'{"x": "' + b"a" * 2000 + b'"}', "s", rows, dead)
    assert len(dead) == 1 and "exceeds max_message_bytes 1024" in dead[0].error


def test_field_map_renames_before_validation() -> None:
    rows: list = []
    dead: list = []
    dec = Decoder({"id": "battery_id", "I": "current", "time": "ts"})
    dec.decode(b'{"id": "b9", "time": 10, "I": -4.5}', "s", rows, dead)
    assert dead == [] and rows[0].battery_id == "b9" and rows[0].current == -4.5


def test_reason_for_valid_record_flags_disagreement() -> None:
    assert "please report" in reason(GOOD)


def _values(row) -> tuple:
    def arr(x):
        return None if x is None else [repr(float(v)) for v in x]

    return (
        row.battery_id,
        row.ts,
        row.current,
        repr(row.voltage),
        arr(row.cells),
        arr(row.temps),
        repr(row.soc),
        repr(row.soh),
    )


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(sorted(GOOD)), anything, max_size=9), st.booleans()
        ),
        min_size=1,
        max_size=6,
    )
)
def test_batch_fast_path_agrees_with_schema_and_keeps_order(batch) -> None:
    texts = [orjson.dumps({**GOOD, **p} if good else p) for p, good in batch]
    items = [(t, f"s:{i}") for i, t in enumerate(texts)]
    rows: list = []
    dead: list = []
    origin: list = []
    Decoder().decode_many(items, rows, dead, origin)
    expected = [i for i, t in enumerate(texts) if schema_accepts(orjson.loads(t))]
    assert origin == expected
    assert len(dead) == len(texts) - len(expected)
    for row, i in zip(rows, origin, strict=True):
        slow = lean_row(orjson.loads(texts[i]))
        assert _values(row) == _values(slow)


@pytest.mark.parametrize(
    "text",
    [
        b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [[3.1], 3.2]}',
        b'{"battery_id": "b", "ts": 1, "current": 1, "current": "x"}',
        b'{"battery_id": "b", "ts": 1, "current": 1, "temperatures": [20, true]}',
        b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [1e400]}',
    ],
)
def test_fast_path_never_accepts_what_the_schema_refuses(text: bytes) -> None:
    from twin_stream.codec.fastjson import FastDecoder

    assert FastDecoder().decode_batch([(text, "s")]) == [None]


def test_fast_path_takes_plain_records_and_leaves_extras_to_the_slow_path() -> None:
    from twin_stream.codec.fastjson import FastDecoder

    plain = orjson.dumps({k: v for k, v in GOOD.items()})
    extra = orjson.dumps({**GOOD, "gateway": "gw-1"})
    out = FastDecoder().decode_batch([(plain, "a"), (extra, "b")])
    assert out[0] is not None and out[1] is None
    rows: list = []
    Decoder().decode_many([(extra, "b")], rows, [])
    assert rows[0].battery_id == GOOD["battery_id"]  # the slow path accepts it


# -- field rule: one bad channel or field never hides a good one ---------------------------

DEGRADE = [
    # (record, cells, temps, voltage, soc, soh, degraded)
    ({"cell_voltages": [3.7, None, 3.71]}, [3.7, "nan", 3.71], None, "nan", "nan", "nan", 1),
    ({"cell_voltages": [65.535, 4.31, 3.7]}, ["nan", 4.31, 3.7], None, "nan", "nan", "nan", 1),
    ({"cell_voltages": [3.1, 11.0, -1]}, [3.1, "nan", "nan"], None, "nan", "nan", "nan", 2),
    ({"temperatures": [400, 25, None]}, None, ["nan", 25.0, "nan"], "nan", "nan", "nan", 2),
    ({"soh": 0, "soc": 102.3, "voltage": 355.0}, None, None, 355.0, "nan", "nan", 2),
    ({"soh": 0.97, "voltage": -3.0, "soc": 55.0}, None, None, "nan", 55.0, "nan", 2),
    ({"soh": 96.5, "temperatures": [-40.0, 21.5]}, None, ["nan", 21.5], "nan", "nan", 96.5, 1),
]
MARKERS = {"cell_voltages": [65.535], "temperatures": [-40.0]}


def _r(x) -> str:
    return repr(float(x)) if x != "nan" else "nan"


@pytest.mark.parametrize(("patch", "cells", "temps", "volt", "soc", "soh", "n"), DEGRADE)
def test_invalid_channels_and_optional_fields_degrade_not_drop(
    patch, cells, temps, volt, soc, soh, n
) -> None:
    rec = {"battery_id": "b", "ts": 1000, "current": -2.5, **patch}
    text = orjson.dumps(rec)
    fast: list = []
    slow: list = []
    dead: list = []
    # the batch fast path and the one-by-one slow path (an extra key forces it) agree
    Decoder(invalid_markers=MARKERS).decode_many([(text, "s")], fast, dead)
    Decoder(invalid_markers=MARKERS).decode_many(
        [(orjson.dumps({**rec, "gateway": "g"}), "s")], slow, dead
    )
    assert dead == []
    for row in (fast[0], slow[0]):
        assert row.current == -2.5 and row.degraded == n
        assert _floats(row.cells) == (None if cells is None else [_r(c) for c in cells])
        assert _floats(row.temps) == (None if temps is None else [_r(t) for t in temps])
        assert (repr(row.voltage), repr(row.soc), repr(row.soh)) == (_r(volt), _r(soc), _r(soh))


def test_wrong_types_and_required_fields_still_refuse_the_record() -> None:
    for bad in (
        {"battery_id": "b", "ts": 1, "current": 1e9},
        {"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [3.1, "x"]},
        {"battery_id": "b", "ts": 1, "current": 1, "soc": "55"},
        {"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": []},
    ):
        rows: list = []
        dead: list = []
        Decoder().decode_many([(orjson.dumps(bad), "s")], rows, dead)
        assert rows == [] and len(dead) == 1, bad
