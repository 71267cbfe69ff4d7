"""Columns straight from the decoders: `Decoder.decode_records` and `RecordReader.records`
give exactly what `decode_many` + `Records.from_rows` give (records, dead letters, order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.test_codec import DEGRADE, GOOD, MARKERS
from tests.unit.test_poison import POISON
from twin_stream.codec import Decoder, Row
from twin_stream.codec.files import RecordReader
from twin_stream.codec.records import Records
from twin_stream.devtools.simulate import write_records

OK = b'{"battery_id":"b1","ts":1767225600000,"current":1.5,"cell_voltages":[3.7,3.71]}'
CORPUS: dict[str, Any] = {
    **{f"poison_{k}": v for k, v in POISON.items()},
    "good": orjson.dumps(GOOD),
    "good_int_ts": orjson.dumps({**GOOD, "ts": 1767225600000}),
    "not_json": b"{not json",
    "string": b'"a string"',
    "empty_array": b"[]",
    "no_id": b'{"ts": 1, "current": 1}',
    "bad_id": b'{"battery_id": "b 1", "ts": 1, "current": 1}',
    "id_newline": b'{"battery_id": "b1\\n", "ts": 1, "current": 1}',
    "id_number": b'{"battery_id": 17, "ts": 1, "current": 1}',
    "no_ts": b'{"battery_id": "b", "current": 1}',
    "date_ts": b'{"battery_id": "b", "ts": "2026-01-01", "current": 1}',
    "zulu_ts": b'{"battery_id": "b", "ts": "2026-01-01T00:00:00Z", "current": 1}',
    "float_ts": b'{"battery_id": "b", "ts": 1.5, "current": 1}',
    "integral_float_ts": b'{"battery_id": "b", "ts": 1.0, "current": 1}',
    "neg_ts": b'{"battery_id": "b", "ts": -1, "current": 1}',
    "str_current": b'{"battery_id": "b", "ts": 1, "current": "abc"}',
    "bool_current": b'{"battery_id": "b", "ts": 1, "current": true}',
    "null_current": b'{"battery_id": "b", "ts": 1, "current": null}',
    "big_current": b'{"battery_id": "b", "ts": 1, "current": 1e9}',
    "neg_zero": b'{"battery_id": "b", "ts": 1, "current": -0, "cell_voltages": [-0, 3]}',
    "empty_cells": b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": []}',
    "str_cell": b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [3.1, "x"]}',
    "nested_cell": b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [[3.1], 3.2]}',
    "bool_temp": b'{"battery_id": "b", "ts": 1, "current": 1, "temperatures": [20, true]}',
    "inf_cell": b'{"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [1e400]}',
    "too_many_cells": orjson.dumps(
        {"battery_id": "b", "ts": 1, "current": 1, "cell_voltages": [3.0] * 1025}
    ),
    "neg_seq": b'{"battery_id": "b", "ts": 1, "current": 1, "seq": -1}',
    "float_seq": b'{"battery_id": "b", "ts": 1, "current": 1, "seq": 1.5}',
    "big_seq": b'{"battery_id":"b1","ts":1,"current":1.0,"seq":123456789012345678901234567890}',
    "nan": b'{"battery_id": "b", "ts": 1, "current": NaN}',
    "nan_voltage": b'{"battery_id": "b", "ts": 1, "current": 1, "voltage": NaN}',
    "inf_soc": b'{"battery_id": "b", "ts": 1, "current": 1, "soc": -Infinity}',
    "big_voltage": b'{"battery_id":"b","ts":1,"current":1,"voltage":123456789012345678901234567}',
    "dup_key": b'{"battery_id": "b", "ts": 1, "current": 1, "current": "x"}',
    "dup_key_ok": b'{"battery_id": "b", "ts": 1, "current": 1, "current": 2}',
    "extra": orjson.dumps({**GOOD, "gateway": "gw-1"}),
    "extra_null": b'{"battery_id": "b", "ts": 1, "current": 1, "gw": null}',
    "extra_obj": b'{"battery_id": "b", "ts": 1, "current": 1, "gw": {"a": [1, 2]}}',
    "array_msg": orjson.dumps(
        [{"battery_id": "b", "ts": 1, "current": 1.0}, {"x": 1}, orjson.loads(OK)]
    ),
    "two_objects": OK + b" " + OK,
    "newline_inside": b'{"battery_id": "b",\n "ts": 1, "current": 1}',
    "tab_in_id": b'{"battery_id": "a\tb", "ts": 1, "current": 1}',
    "control_in_key": b'{"battery_id": "b", "ts": 1, "current": 1, "k\tx": null}',
    "bom": b'\xef\xbb\xbf{"battery_id": "b", "ts": 1, "current": 1}',
    "escaped_key": b'{"battery\\u005fid": "b", "ts": 1, "current": 1}',
    "trailing": OK + b" x",
    "whitespace": b"   ",
    "empty": b"",
    "text_payload": OK.decode(),
    "dict_payload": {"battery_id": "b", "ts": 1, "current": 1.0},
    "bad_dict_payload": {"battery_id": "b", "ts": 1, "current": "x"},
    "oversized": b'{"battery_id": "b", "ts": 1, "current": 1, "x": "' + b"a" * 1100 + b'"}',
}
for _i, (_patch, *_rest) in enumerate(DEGRADE):
    CORPUS[f"degrade_{_i}"] = orjson.dumps(
        {"battery_id": "b", "ts": 1000, "current": -2.5, **_patch}
    )


def assert_same(a: Records, b: Records) -> None:
    assert a.battery_id == b.battery_id
    assert list(a.raw) == list(b.raw)
    assert list(a.source) == list(b.source)
    for f in ("ts", "current", "voltage", "soc", "soh", "cells", "n_cells", "temps", "n_temps"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.shape == y.shape and x.dtype == y.dtype, f
        assert np.array_equal(x, y, equal_nan=True), f
        assert np.array_equal(np.signbit(x), np.signbit(y)), f
    assert a.degraded.tolist() == b.degraded.tolist()


def reference(dec: Decoder, items: list[tuple[Any, str]]) -> tuple[Records, list]:
    rows: list[Row] = []
    dead: list = []
    dec.decode_many(items, rows, dead)
    return Records.from_rows(rows), dead


def check(dec: Decoder, items: list[tuple[Any, str]]) -> Records:
    got, dead = dec.decode_records(items)  # the scanner
    want, want_dead = reference(dec, items)
    assert_same(got, want)
    assert dead == want_dead
    plain, plain_dead = dec.decode_records(items, scan=False)
    assert_same(plain, want)
    assert plain_dead == want_dead
    return got


def _items(*payloads: Any) -> list[tuple[Any, str]]:
    return [(p, f"s:{i}") for i, p in enumerate(payloads)]


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_decode_records_equals_decode_many(kind: str) -> None:
    dec = Decoder(
        max_bytes=1 << 20 if not kind.startswith("over") else 1000, invalid_markers=MARKERS
    )
    # alone, between good records, and in a block big enough to be cut in halves
    check(dec, _items(CORPUS[kind]))
    check(dec, _items(OK, CORPUS[kind], OK))
    check(dec, _items(*([OK] * 40 + [CORPUS[kind]] + [OK] * 23)))


def test_the_whole_corpus_in_one_block_keeps_order() -> None:
    dec = Decoder(invalid_markers=MARKERS)
    payloads = [v for _, v in sorted(CORPUS.items())] * 3
    got = check(dec, _items(*payloads))
    assert len(got) > 20


def test_bulk_path_takes_plain_records() -> None:
    recs = [
        {
            "battery_id": f"b{i % 7}",
            "ts": i,
            "current": 0.5 * i,
            "voltage": 355.0,
            "cell_voltages": [3.7 + 0.001 * j for j in range(96)],
            "temperatures": [25.0, None],
            "soc": 50.0,
            "soh": 0.9 if i % 5 == 0 else 99.0,
            "seq": i,
        }
        for i in range(500)
    ]
    got = check(Decoder(), _items(*[orjson.dumps(r) for r in recs]))
    assert got.cells.shape == (500, 96) and got.degraded.sum() == 500 + 100


def test_rfc3339_records_in_bulk() -> None:
    items = _items(*[orjson.dumps({**GOOD, "seq": i}) for i in range(100)])
    assert len(check(Decoder(), items)) == 100


# --- files ------------------------------------------------------------------------------------

FILE_RECORDS: list[Any] = [
    {
        "battery_id": "b1",
        "ts": 1000 + i,
        "current": 1.5 - i,
        "voltage": 355.5,
        "cell_voltages": [3.7, 3.71, None, 65.535][: 1 + i % 4],
        "temperatures": [25.0, 400.0],
        "soc": 55.0,
        "soh": 0.5 if i % 3 else 97.0,
        "seq": i,
    }
    for i in range(30)
] + [
    {"battery_id": "b2", "ts": 2000, "current": 1e9},
    {"battery_id": "b 2", "ts": 2001, "current": 1.0},
    {"battery_id": "b2", "ts": 2002, "current": 1.0, "cell_voltages": []},
    {"battery_id": "b2", "ts": 2003, "current": 1.0, "seq": -3},
    {"battery_id": "b2", "ts": 2004},
    {"battery_id": "b2", "ts": "2026-01-01T00:00:00.5+01:00", "current": 2.0, "soc": 120.0},
    {"battery_id": "b3", "ts": 2005, "current": -7.25, "cell_voltages": [4.1, 4.2, 4.0]},
]


def _decoded(path: Path, size: int = 8) -> tuple[Records, list]:
    dec = Decoder(invalid_markers=MARKERS)
    parts, dead = [], []
    for rec, d in RecordReader(path).records(size, dec):
        parts.append(rec)
        dead.extend(d)
    return Records.concat(parts), dead


def _strip(dead: list) -> list:
    return [(d.error.split(" (got")[0], d.source.split(":")[-1]) for d in dead]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_file_records_equal_the_per_record_path(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    write_records(FILE_RECORDS, path)
    dec = Decoder(invalid_markers=MARKERS)
    got, dead = _decoded(path)
    want_parts, want_dead = [], []
    for items in RecordReader(path).blocks(8):
        r, d = reference(dec, items)
        want_parts.append(r)
        want_dead.extend(d)
    assert_same(got, Records.concat(want_parts))
    assert dead == want_dead


def _values(r: Records) -> tuple:
    return (
        r.battery_id,
        r.ts.tolist(),
        r.current.tolist(),
        r.degraded.tolist(),
        np.nan_to_num(r.cells, nan=-9).tolist(),
        r.n_cells.tolist(),
        r.n_temps.tolist(),
        np.nan_to_num(r.temps, nan=-9).tolist(),
        np.nan_to_num(r.soh, nan=-9).tolist(),
    )


def test_parquet_and_csv_decode_like_the_jsonl_of_the_same_records(tmp_path: Path) -> None:
    recs = [r for r in FILE_RECORDS if isinstance(r.get("ts"), int)]
    out = {}
    for suffix in (".jsonl", ".parquet", ".csv"):
        path = tmp_path / f"t{suffix}"
        write_records(recs, path)
        out[suffix] = _decoded(path)
    for suffix in (".parquet", ".csv"):
        assert _values(out[suffix][0]) == _values(out[".jsonl"][0])
        assert [d.error for d in out[suffix][1]] == [d.error for d in out[".jsonl"][1]]


def _wide_csv(path: Path, recs: list[dict[str, Any]], names: dict[str, str]) -> None:
    n_c = max(len(r.get("cell_voltages") or ()) for r in recs)
    n_t = max(len(r.get("temperatures") or ()) for r in recs)
    scalars = ["battery_id", "ts", "current", "voltage", "soc", "soh", "seq"]
    header = scalars + [f"cell_{k + 1}" for k in range(n_c)] + [f"temp_{k + 1}" for k in range(n_t)]

    def text(v: Any) -> str:
        return "" if v is None else str(v)

    lines = [",".join(names.get(h, h) for h in header)]
    for r in recs:
        cells = list(r.get("cell_voltages") or ()) + [None] * n_c
        temps = list(r.get("temperatures") or ()) + [None] * n_t
        lines.append(
            ",".join(
                [text(r.get(s)) for s in scalars]
                + [text(c) for c in cells[:n_c]]
                + [text(t) for t in temps[:n_t]]
            )
        )
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("renamed", [False, True])
def test_wide_csv_decodes_like_the_jsonl(tmp_path: Path, renamed: bool) -> None:
    # a wide row's array runs to its last non-empty channel: a trailing null is not sent
    recs = [
        {**r, "cell_voltages": [c for c in r["cell_voltages"]] if r.get("cell_voltages") else None}
        for r in FILE_RECORDS
        if isinstance(r.get("ts"), int)
        and r.get("cell_voltages") != []
        and (not r.get("cell_voltages") or r["cell_voltages"][-1] is not None)
    ]
    names = {"current": "I", "cell_1": "V01", "cell_2": "V02", "temp_1": "T1"} if renamed else {}
    fm = {v: k for k, v in names.items()}
    wide = tmp_path / "w.csv"
    _wide_csv(wide, recs, names)
    jsonl = tmp_path / "w.jsonl"
    write_records(recs, jsonl)
    dec = Decoder(fm, invalid_markers=MARKERS)
    got = Records.concat([r for r, _ in RecordReader(wide).records(8, dec)])
    want = Records.concat(
        [r for r, _ in RecordReader(jsonl).records(8, Decoder(invalid_markers=MARKERS))]
    )
    assert _values(got) == _values(want)
    # and the per-record reader (blocks) agrees
    slow: list = []
    for items in RecordReader(wide, fm).blocks(8):
        r, _ = reference(dec, items)
        slow.append(r)
    assert _values(Records.concat(slow)) == _values(want)


# --- JSON Lines through the scanner -------------------------------------------------------------


def _reference_file(path: Path, size: int) -> tuple[Records, list]:
    dec = Decoder(invalid_markers=MARKERS)
    parts, dead = [], []
    for items in RecordReader(path).blocks(size):
        r, d = reference(dec, items)
        parts.append(r)
        dead.extend(d)
    return Records.concat(parts), dead


def _blocks_equal(path: Path, size: int) -> list[int]:
    """records(size) equals blocks(size) + decode_many block by block; returns block sizes."""
    dec = Decoder(invalid_markers=MARKERS)
    reader = RecordReader(path)
    got = list(reader.records(size, dec))
    assert reader.done == reader.total
    want = [reference(dec, items) for items in RecordReader(path).blocks(size)]
    assert len(got) == len(want)
    for (r, d), (wr, wd) in zip(got, want, strict=True):
        assert_same(r, wr)
        assert d == wd
    return [len(r) + len(d) for r, d in got]


def test_jsonl_crlf_blank_lines_and_a_last_line_without_newline(tmp_path: Path) -> None:
    lines = [orjson.dumps(r) for r in FILE_RECORDS]
    body = b""
    for i, line in enumerate(lines):
        body += line + (b"\r\n" if i % 2 else b"\n")
        if i % 5 == 0:
            body += b"\n  \r\n\t\n"  # blank lines: no record, but counted in line numbers
        if i % 7 == 0:
            body += b"\x0c" + OK + b" \x0b\r\n"  # what bytes.strip() removes, around a record
    body += b"{not json\r\n" + CORPUS["neg_zero"] + b"\n" + lines[0]  # no final newline
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(body)
    for size in (1, 3, 8, 1000):
        _blocks_equal(path, size)
    got, dead = _decoded(path)
    want, want_dead = _reference_file(path, 8)
    assert_same(got, want)
    assert dead == want_dead
    newlines = body.count(b"\n")
    assert dead[-1].source == f"crlf.jsonl:{newlines - 1}"  # {not json
    assert list(got.source)[-1] == f"crlf.jsonl:{newlines + 1}"


def test_jsonl_in_many_read_blocks_with_lines_of_changing_length(tmp_path: Path) -> None:
    # short lines past the first read (1 MB), then long ones: blocks read short of lines are
    # read further and scanned again; then arrays wider than the scanner has seen
    rnd = np.random.default_rng(5)
    recs: list[Any] = []
    for i in range(20_000):
        cells = 0 if i < 16_000 else (96 if i < 18_000 else int(rnd.integers(1, 300)))
        rec: dict[str, Any] = {"battery_id": f"b{i % 2500}", "ts": 1000 + i, "current": 1.5}
        if cells:
            rec["cell_voltages"] = np.round(rnd.uniform(3, 4, cells), 4).tolist()
            rec["current"] = float(rnd.normal())  # 17 digits: mostly the slow path
            rec["soh"] = 0.5 if i % 11 == 0 else 97.0
        recs.append(rec)
        if i % 997 == 7:
            recs.append({"battery_id": "bad id", "ts": 1, "current": 1.0})
    path = tmp_path / "big.jsonl"
    write_records(recs, path)
    assert path.stat().st_size > 2 << 20
    sizes = _blocks_equal(path, 1500)
    assert sizes[:-1] == [1500] * (len(sizes) - 1)


def test_jsonl_with_a_field_map_goes_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "fm.jsonl"
    write_records(
        [{"id": "b1", "ts": 1, "current": 1.0}, {"battery_id": "b2", "ts": 2, "current": 2.0}],
        path,
    )
    dec = Decoder({"id": "battery_id"})
    got = Records.concat([r for r, _ in RecordReader(path).records(8, dec)])
    assert got.battery_id == ["b1", "b2"]


def test_kafka_messages_of_growing_width_and_distinct_ids() -> None:
    dec = Decoder(invalid_markers=MARKERS)
    for width in (3, 200, 50, 1024):
        items = _items(
            *[
                orjson.dumps(
                    {
                        "battery_id": f"id-{i}",
                        "ts": i,
                        "current": 1.25,
                        "cell_voltages": [3.5] * (width if i == 150 else 1 + (i * 7) % width),
                    }
                )
                for i in range(300)
            ]
        )
        got = check(dec, items)
        assert got.cells.shape == (300, width)
