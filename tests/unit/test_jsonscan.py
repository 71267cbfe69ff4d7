"""The compiled JSON scanner's pieces: numbers bit for bit as orjson/simdjson read them, RFC
3339 timestamps as `parse_rfc3339_ms` reads them, and the fast path really taken (the
equivalence with the per-record decoder is in test_columnar.py)."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
import simdjson

from schemas.telemetry import parse_rfc3339_ms
from twin_stream.codec import Decoder
from twin_stream.codec.jsonscan import _BAD, _NULL, _NUM, _number, _rfc3339

EDGE = [
    "0",
    "-0",
    "0.0",
    "-0.0",
    "0e5",
    "1",
    "-1",
    "1e22",
    "1e23",
    "1e-22",
    "1e-23",
    "5e-324",
    "4.9e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1e308",
    "1e309",
    "1e999",
    "-1e999",
    "0.1",
    "0.2",
    "0.3",
    "3.7",
    "3.932",
    "-12.5",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "900719925474099.3",
    "90071992547409.93e2",
    "123456789012345678",
    "1234567890123456789",
    "0.12345678901234567",
    "1.2345678901234567",
    "12345678901234567e-17",
    "3.70000000000000000000",
    "0.000000000000000000001",
    "1E5",
    "1e+5",
    "1E-5",
    "2.5e-7",
    "7e22",
    "7e-22",
    "100000000000000000000000",
    "00.1",
    "01",
    "1.",
    ".5",
    "+1",
    "1e",
    "1e+",
    "-",
    "--1",
    "1.5.3",
    "0x10",
    "Infinity",
    "NaN",
    "null",
    "nul",
]


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _scan_number(text: str) -> tuple[int, float]:
    data = text.encode() + b","
    buf = np.frombuffer(data, dtype=np.uint8)
    buf.flags.writeable = False
    kind, value, p = _number(buf, 0, len(data))
    if p != len(text):  # a token left behind (1.5.3): the message's grammar refuses it
        return _BAD, 0.0
    return int(kind), float(value)


def _reference(text: str) -> float | None:
    """What orjson and simdjson read (None: not a JSON number); they must agree."""
    try:
        a = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(a) is bool or a is None:
        return None
    try:
        b = simdjson.Parser().parse(text.encode())
    except (RuntimeError, ValueError):  # simdjson refuses integers beyond 64 bits
        return float(a)
    assert isinstance(b, int | float)
    assert _bits(float(a)) == _bits(float(b)), text
    return float(a)


def _check(text: str) -> int:
    kind, value = _scan_number(text)
    if kind == _NULL:
        assert text == "null"
        return kind
    want = _reference(text)
    if kind == _NUM:
        assert want is not None, text
        assert _bits(value) == _bits(want), (text, value, want)
        assert value != 0 or not np.signbit(value)  # -0 never taken
    return kind


@pytest.mark.parametrize("text", EDGE)
def test_edge_numbers_are_read_bit_for_bit_or_left_to_the_slow_path(text: str) -> None:
    _check(text)


def test_edge_numbers_the_fast_path_takes() -> None:
    taken = {t for t in EDGE if _scan_number(t)[0] == _NUM}
    assert {"0", "0.0", "1e22", "1e-22", "0.1", "3.932", "9007199254740992", "1E5"} <= taken
    assert not taken & {"-0", "-0.0", "1e23", "5e-324", "9007199254740993", "1e999", "01"}


def test_random_numbers_bit_for_bit() -> None:
    rnd = random.Random(7)
    fast = 0
    texts = []
    for _ in range(20_000):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 17)))
        digits = digits.lstrip("0") or "0"
        cut = rnd.randint(0, len(digits))
        text = digits[:cut] + ("." + digits[cut:] if cut < len(digits) else "")
        if text.startswith("."):
            text = "0" + text
        if rnd.random() < 0.3:
            text += rnd.choice("eE") + rnd.choice(["", "+", "-"]) + str(rnd.randint(0, 30))
        if rnd.random() < 0.5:
            text = "-" + text
        texts.append(text)
    texts += [repr(rnd.uniform(-1e3, 1e3)) for _ in range(5000)]  # 17 significant digits
    texts += [f"{rnd.uniform(0, 10):.{rnd.randint(0, 6)}f}" for _ in range(5000)]
    for text in texts:
        fast += _check(text) == _NUM
    assert fast > len(texts) // 2


def _scan_ts(text: str) -> tuple[bool, int]:
    data = text.encode() + b'"'
    buf = np.frombuffer(data, dtype=np.uint8)
    buf.flags.writeable = False
    ok, ms, p = _rfc3339(buf, 0, len(data))
    if ok:
        assert p == len(data)
    return bool(ok), int(ms)


def _codec_ts(text: str) -> int | None:
    try:
        return parse_rfc3339_ms(text)
    except ValueError:
        return None


def test_rfc3339_like_the_codec() -> None:
    rnd = random.Random(3)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    taken = 0
    texts = [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.5+01:00",
        "2026-03-01T12:00:00.250+01:00",
        "2024-02-29T23:59:59.999999999-12:30",
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+01:60",
        "2026-01-01t00:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00Z",
        "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00z",
        "2026-01-01",
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "1900-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "9999-12-31T23:59:59.999999+00:01",
    ]
    for _ in range(3000):
        dt = epoch + timedelta(milliseconds=rnd.randint(-(10**11), 4 * 10**13))
        frac = rnd.choice(["", "." + "".join(rnd.choice("0123456789") for _ in range(9))])
        frac = frac[: rnd.randint(0, 10)] if frac else ""
        off = rnd.choice(["Z", f"+{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}", "-05:30"])
        texts.append(dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + off)
    for text in texts:
        ok, ms = _scan_ts(text)
        want = _codec_ts(text)
        if ok:
            taken += 1
            assert want == ms, text
    assert taken > len(texts) * 0.8


def test_the_scanner_takes_plain_records() -> None:
    recs = [
        {
            "battery_id": f"bat-{i % 13:04d}",
            "ts": 1767225600000 + i if i % 2 else "2026-01-01T00:00:00.125+01:00",
            "current": -12.5 + i,
            "voltage": 355.0 if i % 3 else None,
            "cell_voltages": [round(3.7 + 0.001 * j, 3) for j in range(96)],
            "temperatures": [25.5, None, 26.0],
            "soc": 50.0,
            "soh": 99.5,
            "seq": i,
        }
        for i in range(200)
    ]
    msgs = [orjson.dumps(r) for r in recs] + [
        b' {"battery_id" : "b1",\t"ts":1, "current":0}\r\n',  # JSON whitespace
    ]
    dec = Decoder()
    lens = np.array([len(m) for m in msgs], dtype=np.int64)
    ends = np.cumsum(lens + 1) - 1
    got = dec.scanner.messages(b"\n".join(msgs), ends - lens, ends)
    assert got.ok.all()
    assert got.records.battery_id[:14] == [f"bat-{i % 13:04d}" for i in range(14)]
    assert got.records.cells.shape == (201, 96)
    assert got.records.degraded[:200].tolist() == [1] * 200  # the null temperature
