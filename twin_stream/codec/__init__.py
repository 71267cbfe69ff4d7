"""The one record codec: telemetry in (bytes, text, objects, files) -> validated records as
columns and dead letters; outputs -> wire records.

- `rules`: the telemetry rules (`schemas.telemetry`) in their fast form: `Row`, `lean_row`,
  degrade-not-drop, bounded `DeadLetter`s;
- `decoder`: `Decoder`, the tiers in order: `jsonscan` (compiled, into columns), `fastjson`
  (simdjson), then msgspec/pydantic per message for the precise reason;
- `columnar`: whole blocks into `records.Records` (the telemetry shape as columns, defined
  once), Arrow tables (Parquet, CSV) validated per column;
- `files`: the recorded-file readers and writers; `wire`: output records.

Tiers import `rules` and `records` only, never this package, so there is no import circle.
"""

from twin_stream.codec.decoder import Decoder
from twin_stream.codec.rules import (
    DEFAULT_MAX_DEAD_PER_MESSAGE,
    ERROR_MAX_CHARS,
    NAN,
    NO_MARKERS,
    RAW_HEAD_CHARS,
    DeadLetter,
    Markers,
    Row,
    dead_letter,
    degrade_array,
    degrade_scalar,
    lean_row,
    lean_row_json,
    reason,
    undecodable,
)
from twin_stream.codec.wire import dumps, iso_ms, iter_dumps, output_record

__all__ = [
    "DEFAULT_MAX_DEAD_PER_MESSAGE",
    "ERROR_MAX_CHARS",
    "NAN",
    "NO_MARKERS",
    "RAW_HEAD_CHARS",
    "DeadLetter",
    "Decoder",
    "Markers",
    "Row",
    "dead_letter",
    "degrade_array",
    "degrade_scalar",
    "dumps",
    "iso_ms",
    "iter_dumps",
    "lean_row",
    "lean_row_json",
    "output_record",
    "reason",
    "undecodable",
]
