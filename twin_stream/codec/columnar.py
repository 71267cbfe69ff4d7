"""Decoding straight into columns (`Records`): JSON messages and JSON Lines blocks through
the compiled scanner (`twin_stream.codec.jsonscan`), and Arrow tables (Parquet, CSV) validated as
whole columns.

It is an optimisation with a fallback, never a second rule book (like `twin_stream.codec.fastjson`):
each fast path accepts only the records it is sure of, and every other record goes through the
per-record decoder (`Decoder.decode_many` / `decode_object`: simdjson, then msgspec, then
pydantic for the reason), which decides and gives the dead letter its reason. The output is
the one of `decode_many` + `Records.from_rows`, in the same order: the two parts are merged by
each record's position (`merge_ordered`).

JSON (`decode_records`, `decode_lines`): the messages are one buffer (Kafka messages joined
by newlines with one `bytes.join`; a JSON Lines block as read from the file) scanned by
`jsonscan.Scanner`, which applies the field rule itself; `raw`/`source` of the accepted
records are `Lazy` (made only for a record that becomes a dead letter), line numbers of a
JSON Lines block come from the kernel.

Arrow tables (`validate`, `decode_table`): `validate` applies the rules of `codec.lean_row`
to whole columns with numpy/pyarrow.compute (battery_id pattern, ts an integer in range or an
RFC 3339 text, current a number in range, optional fields and channels out of range or equal
to a marker -> NaN and counted in `degraded`, arrays of 1..1024 numbers or nulls, seq a
non-negative integer), and returns which rows it accepts.

(An earlier bulk JSON path through `pyarrow.json.read_json` was removed: on 96-cell records it
was no faster than simdjson per record, its list<double> conversion dominating, and the
scanner is several times faster than both.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from schemas.telemetry import LIMITS, parse_rfc3339_ms
from twin_stream.codec.records import Lazy, Records
from twin_stream.codec.rules import (
    _I_MAX,
    _N_MAX,
    _RANGES,
    _TS_MAX,
    _TS_MIN,
    DeadLetter,
    Markers,
    Row,
)

if TYPE_CHECKING:
    from twin_stream.codec.decoder import Decoder
    from twin_stream.codec.jsonscan import Scan

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_ID_RE2 = LIMITS["battery_id_pattern"]


class Columns:
    """Columns of telemetry fields by logical name (None: absent), `n` rows."""

    def __init__(self, n: int, get: Callable[[str], pa.Array | None]) -> None:
        self.n = n
        self.get = get

    @staticmethod
    def of_table(tbl: pa.Table) -> Columns:
        names = set(tbl.column_names)

        def get(name: str) -> pa.Array | None:
            if name not in names:
                return None
            col = tbl.column(name)
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            return arr

        return Columns(tbl.num_rows, get)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _floats(arr: pa.Array) -> FloatArray:
    """A numeric Arrow array as a writable float64 array, null -> NaN."""
    return np.array(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _neg_zero(v: FloatArray) -> BoolArray:
    """-0.0: JSON `-0` is the integer 0 to the codec (0.0), Arrow reads -0.0: one by one."""
    return (v == 0) & np.signbit(v)


def _valid(arr: pa.Array) -> BoolArray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _scalar(
    arr: pa.Array | None, name: str, markers: Markers, n: int
) -> tuple[FloatArray, IntArray, BoolArray]:
    """An optional scalar: (values, degraded 0/1, row acceptable)."""
    if arr is None or pa.types.is_null(arr.type):
        return np.full(n, np.nan), np.zeros(n, np.int64), np.ones(n, bool)
    present = _valid(arr)
    if not _numeric(arr.type):
        return np.full(n, np.nan), np.zeros(n, np.int64), ~present
    v = _floats(arr)
    lo, hi = _RANGES[name]
    ok = ~_neg_zero(v)
    with np.errstate(invalid="ignore"):
        good = ((v > lo) if name == "soh" else (v >= lo)) & (v <= hi)
    marks = markers.get(name)
    if marks:
        good &= ~np.isin(v, marks)
    bad = present & ~good
    v[bad] = np.nan
    return v, bad.astype(np.int64), ok


def _channels(
    arr: pa.Array | None, name: str, markers: Markers, n: int
) -> tuple[FloatArray, IntArray, IntArray, BoolArray]:
    """A per-channel field: (matrix NaN-padded, counts (-1: absent), degraded, acceptable)."""
    absent = np.full(n, -1, np.int64)
    if arr is None or pa.types.is_null(arr.type):
        return np.full((n, 0), np.nan), absent, np.zeros(n, np.int64), np.ones(n, bool)
    t = arr.type
    listy = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    if not listy or not (_numeric(t.value_type) or pa.types.is_null(t.value_type)):
        return np.full((n, 0), np.nan), absent, np.zeros(n, np.int64), ~_valid(arr)
    lens = np.asarray(
        pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    ok = (lens == -1) | ((lens >= 1) & (lens <= _N_MAX))
    flat = pc.list_flatten(arr)
    v = _floats(flat) if _numeric(flat.type) else np.full(len(flat), np.nan)
    lo, hi = _RANGES[name]
    with np.errstate(invalid="ignore"):
        bad = ~((v >= lo) & (v <= hi))
    marks = markers.get(name)
    if marks:
        bad |= np.isin(v, marks)
    size = np.maximum(lens, 0)
    ends = np.cumsum(size)
    starts = ends - size
    if bad.any():
        cum = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
        degraded = cum[ends] - cum[starts]
    else:
        degraded = np.zeros(n, np.int64)
    nz = _neg_zero(v)
    if nz.any():
        cnz = np.concatenate([[0], np.cumsum(nz, dtype=np.int64)])
        ok &= cnz[ends] == cnz[starts]
    v[bad] = np.nan
    use = ok & (size > 0)
    width = int(size[use].max()) if use.any() else 0
    if use.all() and (size == width).all():
        mat = v.reshape(n, width)
    else:
        mat = np.full((n, width), np.nan)
        row_of = np.repeat(np.arange(n), size)
        col_of = np.arange(v.size) - np.repeat(starts, size)
        keep = use[row_of]
        mat[row_of[keep], col_of[keep]] = v[keep]
    return mat, lens, degraded, ok


def _ts(arr: pa.Array | None, n: int) -> tuple[IntArray, BoolArray]:
    if arr is None:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    present = _valid(arr)
    if pa.types.is_integer(arr.type):
        raw = arr.fill_null(0).to_numpy(zero_copy_only=False)
        ok = present & (raw >= _TS_MIN) & (raw <= _TS_MAX)
        return np.where(ok, raw, 0).astype(np.int64), ok
    ts = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        texts = arr.to_pylist()  # RFC 3339: parsed by the codec's own function
        for i in np.flatnonzero(present).tolist():
            try:
                ms = parse_rfc3339_ms(texts[i])
            except ValueError:
                continue
            if _TS_MIN <= ms <= _TS_MAX:
                ts[i] = ms
                ok[i] = True
    return ts, ok


def validate(cols: Columns, markers: Markers) -> tuple[Records, BoolArray]:
    """The accepted rows as `Records` (raw/source left empty) and the mask of accepted rows."""
    n = cols.n
    bid = cols.get("battery_id")
    if bid is None or not (pa.types.is_string(bid.type) or pa.types.is_large_string(bid.type)):
        return Records.empty(), np.zeros(n, bool)
    ok = np.asarray(
        pc.match_substring_regex(bid, _ID_RE2).fill_null(False).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    ts, ok_ts = _ts(cols.get("ts"), n)
    ok &= ok_ts
    cur_arr = cols.get("current")
    if cur_arr is None or not _numeric(cur_arr.type):
        return Records.empty(), np.zeros(n, bool)
    cur = _floats(cur_arr)
    with np.errstate(invalid="ignore"):
        ok &= (np.abs(cur) <= _I_MAX) & ~_neg_zero(cur)  # NaN (null) fails
    seq = cols.get("seq")
    if seq is not None and not pa.types.is_null(seq.type):
        present = _valid(seq)
        if pa.types.is_integer(seq.type):
            ok &= ~present | (seq.fill_null(0).to_numpy(zero_copy_only=False) >= 0)
        else:
            ok &= ~present
    degraded = np.zeros(n, np.int64)
    scalars = []
    for name in ("voltage", "soc", "soh"):
        v, d, o = _scalar(cols.get(name), name, markers, n)
        scalars.append(v)
        degraded += d
        ok &= o
    mats = []
    for name in ("cell_voltages", "temperatures"):
        m, c, d, o = _channels(cols.get(name), name, markers, n)
        mats.append((m, c))
        degraded += d
        ok &= o
    idx = np.flatnonzero(ok)
    keep = [bid.take(pa.array(idx)).to_pylist() if len(idx) < n else bid.to_pylist()]

    def rows(m: FloatArray, c: IntArray) -> tuple[FloatArray, IntArray]:
        c = c[idx]
        width = int(c.max()) if c.size and c.max() > 0 else 0
        return m[idx, :width] if len(idx) < n else m[:, :width], c

    (cells, n_cells), (temps, n_temps) = (rows(m, c) for m, c in mats)
    rec = Records(
        keep[0],
        ts[idx],
        cur[idx],
        scalars[0][idx],
        scalars[1][idx],
        scalars[2][idx],
        np.ascontiguousarray(cells),
        n_cells,
        np.ascontiguousarray(temps),
        n_temps,
        degraded[idx],
        [],
        [],
    )
    return rec, ok


# --- JSON through the scanner ----------------------------------------------------------------


def _slow(
    decoder: Decoder,
    items: list[tuple[Any, str]],
    where: IntArray,
    dead_origin: list[int] | None = None,
) -> tuple[list[tuple[Records, IntArray]], list[DeadLetter]]:
    """`items` (at positions `where`) one by one through `decode_many`; `dead_origin`, when
    given, receives each dead letter's item position."""
    dead: list[DeadLetter] = []
    if not items:
        return [], dead
    rows: list[Row] = []
    origin: list[int] = []
    d_origin: list[int] = []
    decoder.decode_many(items, rows, dead, origin, d_origin)
    if dead_origin is not None:
        dead_origin.extend(where[np.array(d_origin, dtype=np.int64)].tolist())
    if not rows:
        return [], dead
    return [(Records.from_rows(rows), where[np.array(origin, dtype=np.int64)])], dead


def decode_records(
    decoder: Decoder, items: list[tuple[Any, str]]
) -> tuple[Records, list[DeadLetter]]:
    """`decoder.decode_many(items)` + `Records.from_rows`, the bytes messages through the
    scanner (joined by newlines; the scanner reads each by its offsets)."""
    recs, _, dead, _ = decode_messages(decoder, items)
    return recs, dead


def decode_messages(
    decoder: Decoder, items: list[tuple[Any, str]]
) -> tuple[Records, IntArray, list[DeadLetter], IntArray]:
    """`decode_records`, plus the item each record and each dead letter came from (the
    agents route outputs and dead letters by their Kafka message)."""
    n = len(items)
    if n == 0:
        return Records.empty(), np.empty(0, np.int64), [], np.empty(0, np.int64)
    payloads = list(map(itemgetter(0), items))
    if decoder.field_map:  # renamed fields: one by one
        is_bytes = np.zeros(n, bool)
    elif set(map(type, payloads)) == {bytes}:
        is_bytes = np.ones(n, bool)
    else:
        is_bytes = np.fromiter((type(p) is bytes for p in payloads), dtype=bool, count=n)
    sel = np.flatnonzero(is_bytes)
    parts: list[tuple[Records, IntArray]] = []
    left = np.ones(n, bool)
    if sel.size:
        msgs = payloads if sel.size == n else [payloads[i] for i in sel.tolist()]
        lens = np.fromiter(map(len, msgs), dtype=np.int64, count=len(msgs))
        ends = np.cumsum(lens + 1) - 1
        starts = ends - lens
        got = decoder.scanner.messages(b"\n".join(msgs), starts, ends)
        acc = sel[got.ok]
        rec = got.records
        rec.raw = Lazy.of(payloads.__getitem__, acc)
        rec.source = Lazy.of(lambda i: items[i][1], acc)
        parts.append((rec, acc))
        left[acc] = False
    rest = np.flatnonzero(left)
    dead_origin: list[int] = []
    slow, dead = _slow(decoder, [items[i] for i in rest.tolist()], rest, dead_origin)
    recs, origin = merge_ordered_keys(parts + slow)
    return recs, origin, dead, np.array(dead_origin, dtype=np.int64)


def decode_lines(
    decoder: Decoder, got: Scan, data: bytes | bytearray, name: str, line0: int
) -> tuple[Records, list[DeadLetter]]:
    """The records and dead letters of a JSON Lines block `data` scanned into `got`
    (`Scanner.lines`); `line0`: newlines of the file before the scan's start. Sources are
    `name:line`, payloads the stripped lines, as `RecordReader.blocks` gives them."""
    starts, ends = got.starts, got.ends
    lineno = got.line + (line0 + 1)

    def raw(r: int) -> bytes:
        return bytes(data[starts[r] : ends[r]])

    def source(r: int) -> str:
        return f"{name}:{lineno[r]}"

    acc = np.flatnonzero(got.ok)
    rec = got.records
    rec.raw = Lazy.of(raw, acc)
    rec.source = Lazy.of(source, acc)
    rest = np.flatnonzero(~got.ok)
    slow, dead = _slow(decoder, [(raw(r), source(r)) for r in rest.tolist()], rest)
    return merge_ordered([(rec, acc), *slow]), dead


def decode_table(
    decoder: Decoder,
    cols: Columns,
    source: Callable[[int], str],
    payloads: Callable[[IntArray], list[Any]],
) -> tuple[Records, list[DeadLetter]]:
    """Columns of a file (Parquet, CSV) validated whole; the rows `validate` does not accept
    go through `decoder.decode_many` as the payloads (dicts) `payloads(rows)` gives. The
    accepted rows' `raw`/`source` are `Lazy`: made only for a dead letter."""
    n = cols.n
    try:
        rec, ok = validate(cols, decoder.markers)
    except Exception:  # anything unexpected in a column: every row one by one
        rec, ok = Records.empty(), np.zeros(n, bool)
    acc = np.flatnonzero(ok)
    rec.raw = Lazy.of(lambda i: payloads(np.array([i]))[0], acc)
    rec.source = Lazy.of(source, acc)
    parts = [(rec, acc)]
    dead: list[DeadLetter] = []
    left = np.flatnonzero(~ok)
    if left.size:
        rows: list[Row] = []
        origin: list[int] = []
        items = list(zip(payloads(left), map(source, left.tolist()), strict=True))
        decoder.decode_many(items, rows, dead, origin)
        parts.append((Records.from_rows(rows), left[np.array(origin, dtype=np.int64)]))
    return merge_ordered(parts), dead


def merge_ordered(parts: Sequence[tuple[Records, IntArray]]) -> Records:
    """Records of several parts into one, ordered by each row's key (stable)."""
    return merge_ordered_keys(parts)[0]


def merge_ordered_keys(parts: Sequence[tuple[Records, IntArray]]) -> tuple[Records, IntArray]:
    """`merge_ordered`, and the keys in the merged order."""
    parts = [(r, k) for r, k in parts if len(r)]
    if not parts:
        return Records.empty(), np.empty(0, np.int64)
    out = Records.concat([r for r, _ in parts])
    key = np.concatenate([k for _, k in parts])
    if len(parts) > 1 and (np.diff(key) < 0).any():
        order = np.argsort(key, kind="stable")
        out, key = out.take(order), key[order]
    return out, key
