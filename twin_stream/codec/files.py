"""Recorded files in and out: JSON Lines, CSV and Parquet readers, and a JSON Lines writer.
Format follows the file suffix.

`RecordReader.blocks` yields raw records with their source (`file:line`, `file:row N`) for the
per-record decoder; `RecordReader.records` yields decoded columns (`Records`) and dead letters,
the same ones, fast: JSON Lines as byte blocks through the compiled scanner
(`twin_stream.codec.jsonscan`, no Python per line), Parquet and
CSV as Arrow columns validated whole (`twin_stream.codec.columnar.validate`), only the rows it does
not accept going through the per-record decoder, as dicts like those `blocks` yields.

CSV: one column per field, arrays as JSON text (`"[3.7, 3.71]"`), or the wide layout: one
column per channel, `cell_1 ... cell_N` and `temp_1 ... temp_M` (names after
`input.field_map`), a record's array running to its last non-empty channel column (an empty
column before that is a null channel, invalid; no non-empty column: no array). Text becomes
an integer where it is one, a float where it parses, otherwise stays text (so validation
names it); empty is absent.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import pyarrow as pa

    from twin_stream.codec import DeadLetter, Decoder
    from twin_stream.codec.records import Records

FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_INT = re.compile(r"^-?\d+$")
_ARRAY_COLUMNS = ("cell_voltages", "temperatures")
_WIDE = re.compile(r"^(cell|temp)_([1-9][0-9]{0,3})$")
_WIDE_FIELD = {"cell": "cell_voltages", "temp": "temperatures"}
# text the vectorised CSV path converts itself (else the per-record rules decide)
_NUM_RE2 = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_INT_RE2 = r"^-?[0-9]{1,18}$"
_NUM = r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"
_ARRAY_RE2 = rf"^\[\s*(null|{_NUM})\s*(,\s*(null|{_NUM})\s*)*\]$"


class InputError(ValueError):
    """A file that cannot be read as telemetry at all (missing, unknown format, unreadable)."""


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}"
        )
    return "jsonl" if suffix in (".jsonl", ".ndjson", ".json") else suffix[1:]


class RecordReader:
    """Iterates a recorded file in blocks of (payload, source) or of decoded `Records`; tracks
    progress in `done` out of `total` (bytes for text formats, rows for Parquet).
    `field_map` (source name -> logical name) is used to find a wide CSV's channel columns
    in `blocks`; `records` takes it from its decoder."""

    def __init__(self, path: Path, field_map: Mapping[str, str] | None = None) -> None:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        self.path = path
        self.field_map = dict(field_map or {})
        self.format = file_format(path)
        self.done = 0
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                self._pq = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
            self.total = self._pq.metadata.num_rows
        else:
            self.total = path.stat().st_size

    def blocks(self, size: int) -> Iterator[list[tuple[Any, str]]]:
        if self.format == "jsonl":
            yield from self._jsonl(size)
        elif self.format == "csv":
            yield from self._csv(size)
        else:
            yield from self._parquet(size)

    def _jsonl(self, size: int) -> Iterator[list[tuple[Any, str]]]:
        name = self.path.name
        block: list[tuple[Any, str]] = []
        with self.path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                self.done += len(line)
                line = line.strip()
                if not line:
                    continue
                block.append((line, f"{name}:{lineno}"))
                if len(block) >= size:
                    yield block
                    block = []
        if block:
            yield block

    def _csv(self, size: int) -> Iterator[list[tuple[Any, str]]]:
        name = self.path.name
        block: list[tuple[Any, str]] = []
        with self.path.open("r", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "battery_id" not in reader.fieldnames:
                raise InputError(
                    f"{self.path}: CSV header must name the telemetry columns "
                    "(battery_id, ts, current, ...)"
                )
            wide = _wide_columns(reader.fieldnames, self.field_map)
            for i, rec in enumerate(reader, 2):
                block.append((_typed_csv_row(rec, wide, self.field_map), f"{name}:{i}"))
                if len(block) >= size:
                    self.done = _tell(f, self.done)
                    yield block
                    block = []
        self.done = self.total
        if block:
            yield block

    def _parquet(self, size: int) -> Iterator[list[tuple[Any, str]]]:
        name = self.path.name
        n = 0
        for batch in self._pq.iter_batches(batch_size=size):
            recs = batch.to_pylist()
            yield [
                ({k: v for k, v in r.items() if v is not None}, f"{name}:row {n + i}")
                for i, r in enumerate(recs)
            ]
            n += len(recs)
            self.done = n

    # --- decoded columns ---------------------------------------------------------------

    def records(
        self, size: int, decoder: Decoder | None = None
    ) -> Iterator[tuple[Records, list[DeadLetter]]]:
        """Blocks of about `size` records decoded into columns, with their dead letters: the
        records and dead letters `decoder.decode_many` makes of `blocks(size)`, in order
        (JSON Lines: the same blocks)."""
        from twin_stream.codec import Decoder

        dec = decoder if decoder is not None else Decoder()
        if self.format == "jsonl":
            if dec.field_map:
                for items in self._jsonl(size):
                    yield dec.decode_records(items)
            else:
                yield from self._jsonl_records(size, dec)
        elif self.format == "parquet":
            yield from self._parquet_records(size, dec)
        else:
            yield from self._csv_records(size, dec)

    def _jsonl_records(self, size: int, dec: Decoder) -> Iterator[tuple[Records, list[DeadLetter]]]:
        """JSON Lines in byte blocks cut at a newline, each meant to hold `size` lines (bytes
        per line measured as it goes), scanned whole by the compiled scanner: blocks of
        exactly `size` non-blank lines, like `blocks`. Each block is read into a fresh
        buffer (the records' `raw` refer to it) after what the last one left; a block that
        turns out short of lines is read further and scanned again."""
        from twin_stream.codec.columnar import decode_lines

        name = self.path.name
        scanner = dec.scanner
        data = bytearray()
        pos = end = 0  # data[pos:end]: read, not yet decoded
        base = 0  # file offset of data[0]
        line0 = 0  # newlines before data[pos]
        per_line = 0.0  # bytes per line, measured
        eof = False
        with self.path.open("rb") as f:
            while True:
                want = int(size * per_line * 1.05) + (1 << 16) if per_line else 1 << 20
                if not eof and end - pos < want:
                    fresh = bytearray(want)
                    left = end - pos
                    fresh[:left] = data[pos:end]
                    got_bytes = f.readinto(memoryview(fresh)[left:])
                    eof = got_bytes < want - left
                    base += pos
                    data, pos, end = fresh, 0, left + got_bytes
                    if not per_line and end:
                        per_line = end / max(1, data.count(b"\n", 0, end))
                        continue
                stop = end if eof else data.rfind(b"\n", pos, end) + 1
                if stop <= pos:
                    if eof:
                        break
                    per_line = max(per_line * 2, 1.0)  # a line longer than the block
                    continue
                got = scanner.lines(data, pos, stop, size)
                if got.n < size and not eof:
                    per_line = max(per_line, (stop - pos) / max(1, got.n)) * 1.1
                    continue  # short of lines: read further, scan again
                if got.n:
                    per_line = (got.pos - pos) / got.n
                    yield decode_lines(dec, got, data, name, line0)
                line0 += got.newlines
                pos = got.pos
                self.done = base + pos
                if eof and pos >= end:
                    break

    def _slow_records(self, size: int, dec: Decoder) -> Iterator[tuple[Records, list[DeadLetter]]]:
        from twin_stream.codec.records import Records

        for items in self.blocks(size):
            rows: list[Any] = []
            dead: list[DeadLetter] = []
            dec.decode_many(items, rows, dead)
            yield Records.from_rows(rows), dead

    def _parquet_records(
        self, size: int, dec: Decoder
    ) -> Iterator[tuple[Records, list[DeadLetter]]]:
        import pyarrow as pa

        from twin_stream.codec.columnar import decode_table

        name = self.path.name
        n0 = 0
        for batch in self._pq.iter_batches(batch_size=size):
            tbl = pa.Table.from_batches([batch])
            start = n0

            def payloads(rows: Any, tbl: pa.Table = tbl) -> list[Any]:
                recs = tbl.take(rows).to_pylist()
                return [{k: v for k, v in r.items() if v is not None} for r in recs]

            def source(i: int, start: int = start) -> str:
                return f"{name}:row {start + i}"

            yield decode_table(dec, _columns(tbl, dec.field_map), source, payloads)
            n0 += tbl.num_rows
            self.done = n0

    def _csv_records(self, size: int, dec: Decoder) -> Iterator[tuple[Records, list[DeadLetter]]]:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        from twin_stream.codec.columnar import decode_table

        with self.path.open("r", encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        if not header or "battery_id" not in header:
            raise InputError(
                f"{self.path}: CSV header must name the telemetry columns "
                "(battery_id, ts, current, ...)"
            )
        try:
            if len(set(header)) != len(header):
                raise ValueError("duplicate column names")
            tbl = pcsv.read_csv(
                self.path,
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in header}, strings_can_be_null=False
                ),
            )
            if tbl.column_names != header:
                raise ValueError("columns")
        except Exception:  # ragged rows, odd quoting...: the per-record reader decides
            yield from self._slow_records(size, dec)
            return
        name = self.path.name
        fm = dec.field_map
        wide = _wide_columns(header, fm)
        for start in range(0, tbl.num_rows, size):
            part = tbl.slice(start, size)

            def payloads(rows: Any, part: pa.Table = part) -> list[Any]:
                return [_typed_csv_row(r, wide, fm) for r in part.take(rows).to_pylist()]

            def source(i: int, start: int = start) -> str:
                return f"{name}:{start + i + 2}"

            yield decode_table(dec, _csv_columns(part, fm, wide), source, payloads)
            self.done = self.total * min(start + size, tbl.num_rows) // max(tbl.num_rows, 1)
        self.done = self.total


def _columns(tbl: pa.Table, field_map: Mapping[str, str]) -> Any:
    """The table's columns by logical name; a name two columns map to: none (one by one)."""
    from twin_stream.codec.columnar import Columns

    by_name: dict[str, list[str]] = {}
    for col in tbl.column_names:
        by_name.setdefault(field_map.get(col, col), []).append(col)
    cols = Columns.of_table(tbl)
    if any(len(v) > 1 for v in by_name.values()):
        return Columns(tbl.num_rows, lambda name: None)
    return Columns(tbl.num_rows, lambda name: cols.get(by_name.get(name, [name])[0]))


def _csv_columns(
    tbl: pa.Table, field_map: Mapping[str, str], wide: Mapping[str, list[tuple[int, str]]]
) -> Any:
    """A CSV table of text as typed columns: text the strict patterns take is converted,
    a row with other text in a field gets a null `battery_id` (so it goes one by one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas.telemetry import parse_rfc3339_ms
    from twin_stream.codec.columnar import Columns

    n = tbl.num_rows
    by_name: dict[str, list[str]] = {}
    for col in tbl.column_names:
        by_name.setdefault(field_map.get(col, col), []).append(col)
    if any(len(v) > 1 for v in by_name.values()) or (wide and any(f in by_name for f in wide)):
        return Columns(n, lambda name: None)
    odd = np.zeros(n, bool)  # text the vectorised path does not convert
    out: dict[str, pa.Array] = {}

    def text(name: str) -> pa.Array | None:
        cols = by_name.get(name)
        return None if not cols else tbl.column(cols[0]).combine_chunks()

    def match(arr: pa.Array, pattern: str) -> Any:
        return np.asarray(
            pc.match_substring_regex(arr, pattern).to_numpy(zero_copy_only=False), dtype=bool
        )

    def number(arr: pa.Array, pattern: str, typ: pa.DataType) -> pa.Array:
        """Text the pattern takes, converted; null elsewhere (other text: `odd`)."""
        nonlocal odd
        empty = np.asarray(pc.equal(arr, "").to_numpy(zero_copy_only=False), dtype=bool)
        good = match(arr, pattern)
        odd |= ~empty & ~good
        vals = pc.cast(pc.if_else(pa.array(good), arr, "0"), typ).to_numpy(zero_copy_only=False)
        return pa.array(vals, mask=~good)

    for name in ("ts", "seq"):  # ts first: `odd` is its own there
        arr = text(name)
        if arr is None:
            continue
        out[name] = number(arr, _INT_RE2, pa.int64())
        if name == "ts" and odd.any():  # RFC 3339 text: the codec's own parser, row by row
            vals = out[name].fill_null(-1).to_numpy(zero_copy_only=False).copy()
            texts = arr.to_pylist()
            for i in np.flatnonzero(odd).tolist():
                try:
                    vals[i] = parse_rfc3339_ms(texts[i])
                    odd[i] = False
                except ValueError:
                    pass
            out[name] = pa.array(vals, mask=vals == -1)
    for name in ("current", "voltage", "soc", "soh"):
        arr = text(name)
        if arr is not None:
            out[name] = number(arr, _NUM_RE2, pa.float64())
    bid = text("battery_id")
    if bid is not None:
        out["battery_id"] = pc.if_else(pa.array(pc.equal(bid, "")), None, bid)
    for field in _ARRAY_COLUMNS:
        if field in wide:
            out[field] = _wide_array(tbl, wide[field], odd)
            continue
        arr = text(field)
        if arr is None:
            continue
        empty = np.asarray(pc.equal(arr, "").to_numpy(zero_copy_only=False), dtype=bool)
        good = match(arr, _ARRAY_RE2)
        odd |= ~empty & ~good
        out[field] = _json_arrays(arr, good)
        odd |= (
            ~empty
            & good
            & ~np.asarray(out[field].is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        )
    if "battery_id" in out and odd.any():
        out["battery_id"] = pc.if_else(pa.array(odd), None, out["battery_id"])
    return Columns(n, out.get)


def _wide_array(tbl: pa.Table, chans: list[tuple[int, str]], odd: Any) -> pa.Array:
    """Channel columns to a list<double> array: to each row's last non-empty channel."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = tbl.num_rows
    width = chans[-1][0] + 1
    mat = np.full((n, width), np.nan)
    present = np.zeros((n, width), bool)
    for k, col in chans:
        arr = tbl.column(col).combine_chunks()
        empty = np.asarray(pc.equal(arr, "").to_numpy(zero_copy_only=False), dtype=bool)
        good = np.asarray(
            pc.match_substring_regex(arr, _NUM_RE2).to_numpy(zero_copy_only=False), dtype=bool
        )
        odd |= ~empty & ~good
        mat[:, k] = pc.cast(pc.if_else(pa.array(~good), "0", arr), pa.float64()).to_numpy(
            zero_copy_only=False
        )
        mat[~good, k] = np.nan
        present[:, k] = good
    rev = present[:, ::-1]
    lens = np.where(present.any(axis=1), width - rev.argmax(axis=1), 0)
    keep = np.arange(width)[None, :] < lens[:, None]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(mat[keep]), mask=pa.array(lens == 0)
    )


def _json_arrays(arr: pa.Array, good: Any) -> pa.Array:
    """JSON array texts (screened by `_ARRAY_RE2`) to list<double>; null where not good."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    text = pc.if_else(pa.array(good), arr, "null")
    lines = pc.binary_join_element_wise('{"c":', text, "}\n", "")
    offs = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2].slice(int(offs[0]), int(offs[-1] - offs[0]))
    try:
        tbl = pj.read_json(
            pa.BufferReader(data),
            parse_options=pj.ParseOptions(
                explicit_schema=pa.schema([("c", pa.list_(pa.float64()))])
            ),
        )
        if tbl.num_rows == len(arr):
            return tbl.column("c").combine_chunks()
    except Exception:  # e.g. 1e999: those rows one by one
        pass
    return pa.nulls(len(arr), pa.list_(pa.float64()))


def _tell(f: IO[str], fallback: int) -> int:
    try:
        return f.buffer.tell()  # type: ignore[attr-defined,no-any-return]
    except (OSError, AttributeError):
        return fallback


def _wide_columns(
    names: Sequence[str] | None, field_map: Mapping[str, str]
) -> dict[str, list[tuple[int, str]]]:
    """A wide CSV's channel columns: field -> [(channel index, column name)], by index."""
    out: dict[str, list[tuple[int, str]]] = {}
    for col in names or ():
        m = _WIDE.match(field_map.get(col, col))
        if m:
            out.setdefault(_WIDE_FIELD[m.group(1)], []).append((int(m.group(2)) - 1, col))
    for chans in out.values():
        chans.sort()
    return out


def _csv_value(key: str, text: str) -> Any:
    if _INT.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text
    return value if key != "ts" else text


def _typed_csv_row(
    rec: Mapping[str | None, Any],
    wide: Mapping[str, list[tuple[int, str]]] | None = None,
    field_map: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """CSV text to JSON-like values: numbers where they parse, arrays from JSON, empty = absent.
    What does not parse stays text, so validation names the field and the value. `wide`:
    the channel columns of the wide layout, made into arrays. Fields are known by their
    logical names (after `field_map`); keys stay as in the file."""
    fm = field_map or {}
    out: dict[str, Any] = {}
    skip: set[str] = set()
    for field, chans in (wide or {}).items():
        values: list[Any] = []
        for k, col in chans:
            skip.add(col)
            text = rec.get(col)
            if text is not None and text != "":
                values.extend([None] * (k - len(values)))
                values.append(_csv_value(col, text))
        if values:
            out[field] = values
    for key, text in rec.items():
        if key is None or text is None or text == "" or key in skip:
            continue
        field = fm.get(key, key)
        if field == "battery_id":
            out[key] = text
        elif field in _ARRAY_COLUMNS:
            try:
                out[key] = orjson.loads(text)
            except orjson.JSONDecodeError:
                out[key] = text
        else:
            out[key] = _csv_value(field, text)
    return out


class JsonlWriter:
    """Appends records as JSON Lines, buffered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._f = path.open("wb")

    def write_all(self, records: list[dict[str, Any]]) -> None:
        if records:
            self._f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            self.count += len(records)

    def close(self) -> None:
        self._f.close()
