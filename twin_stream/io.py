"""Recorded files in and out: JSON Lines, CSV and Parquet readers yielding raw records with
their source (`file:line`), and a JSON Lines writer. Format follows the file suffix."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

FORMATS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_INT = re.compile(r"^-?\d+$")
_ARRAY_COLUMNS = ("cell_voltages", "temperatures")


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
    """Iterates a recorded file in blocks of (payload, source); tracks progress in `done`
    out of `total` (bytes for text formats, rows for Parquet)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        self.path = path
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
            for i, rec in enumerate(reader, 2):
                block.append((_typed_csv_row(rec), f"{name}:{i}"))
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


def _tell(f: IO[str], fallback: int) -> int:
    try:
        return f.buffer.tell()  # type: ignore[attr-defined,no-any-return]
    except (OSError, AttributeError):
        return fallback


def _typed_csv_row(rec: dict[str, str | None]) -> dict[str, Any]:
    """CSV text to JSON-like values: numbers where they parse, arrays from JSON, empty = absent.
    What does not parse stays text, so validation names the field and the value."""
    out: dict[str, Any] = {}
    for key, text in rec.items():
        if key is None or text is None or text == "":
            continue
        if key == "battery_id":
            out[key] = text
        elif key in _ARRAY_COLUMNS:
            try:
                out[key] = orjson.loads(text)
            except orjson.JSONDecodeError:
                out[key] = text
        elif _INT.match(text):
            out[key] = int(text)
        else:
            try:
                value = float(text)
                out[key] = value if key != "ts" else text
            except ValueError:
                out[key] = text
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
