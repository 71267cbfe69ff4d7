"""The one record codec: bytes/text/objects in -> validated rows, outputs -> wire records.

Validation has two implementations of the same rules (`schemas.telemetry.Telemetry`):
`lean_row` is the hot path (plain Python type and range checks, about a microsecond), and
pydantic is consulted only for a record the lean check refused, to give its precise reason.
Tests hold the two to agreement. Every refused record becomes exactly one `DeadLetter`,
except where one message holds more than `max_dead_per_message` refused records: those past
the cap are summed up in one dead letter that says how many (`DeadLetter.records`), so a
small message cannot flood the dead-letter topic.

Field rule: one bad channel or field never hides a good one. A `null` channel in
`cell_voltages`/`temperatures`, a channel out of its range or equal to one of the source's
invalid markers (`input.invalid_markers`, e.g. 65.535 V = J1939 "not available"), and an
optional field out of range (`soh` 0 or a 0-1 fraction, `soc` 102.3, `voltage`) are removed
from that record (NaN), not the record: `Row.degraded` counts what was removed, the engine
counts degraded records. Required fields (battery_id, ts, current) stay required, and a
value of the wrong type still refuses the record (it is malformed, not out of range).

Nothing a message holds may stop the decoder (Kafka Streams' deserialisation-exception
handler): any exception while decoding one message -- simdjson's BIGINT/DEPTH errors, a
RecursionError on deep nesting, a bug -- makes that message one dead letter, and decoding
goes on. Dead letters are bounded: the offending bytes' head (`RAW_HEAD_CHARS`), their size
and SHA-256, so a record near the producer's size limit cannot make an unsendable one.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError

from schemas.telemetry import LIMITS, VALID_RANGES, Telemetry, parse_rfc3339_ms

NAN = math.nan
FloatArray = npt.NDArray[np.float64]
_ID = re.compile(LIMITS["battery_id_pattern"])
_TS_MIN, _TS_MAX = int(LIMITS["ts_min_ms"]), int(LIMITS["ts_max_ms"])
_I_MAX = float(LIMITS["current_abs_max_a"])
_N_MAX = int(LIMITS["array_max_items"])


class Row(NamedTuple):
    """A validated sample; optional scalars are NaN when absent, arrays None."""

    battery_id: str
    ts: int
    current: float
    voltage: float
    cells: list[float] | FloatArray | None
    temps: list[float] | FloatArray | None
    soc: float
    soh: float
    raw: Any  # the record as received (dict or text), kept only by reference for dead letters
    source: str
    degraded: int = 0  # channels and optional fields removed as invalid (NaN) from this record


Markers = Mapping[str, Sequence[float]]
"""Invalid-marker values per field (`cell_voltages`, `temperatures`, `voltage`, `soc`, `soh`)."""
NO_MARKERS: Markers = {}
_RANGES = VALID_RANGES  # closed ranges; soh's low end is open


def degrade_array(a: FloatArray, field: str, markers: Markers) -> int:
    """Set the invalid channels of `a` (NaN, out of range, a marker) to NaN in place; returns
    how many channels were invalid."""
    lo, hi = _RANGES[field]
    bad = ~((a >= lo) & (a <= hi))
    marks = markers.get(field)
    if marks:
        bad |= np.isin(a, marks)
    n = int(np.count_nonzero(bad))
    if n:
        a[bad] = NAN
    return n


def degrade_scalar(x: float | None, field: str, markers: Markers) -> tuple[float, int]:
    """(value, 0) if valid, (NaN, 0) if absent, (NaN, 1) if out of range or a marker."""
    if x is None:
        return NAN, 0
    lo, hi = _RANGES[field]
    ok = (lo < x <= hi) if field == "soh" else (lo <= x <= hi)
    if ok and x not in markers.get(field, ()):
        return x, 0
    return NAN, 1


RAW_HEAD_CHARS = 1024  # of the refused record kept in a dead letter
ERROR_MAX_CHARS = 500
DEFAULT_MAX_DEAD_PER_MESSAGE = 10


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused record: why, its head as text, and its size and hash as received."""

    error: str
    raw: str  # at most RAW_HEAD_CHARS characters of the record as received
    source: str
    raw_bytes: int = 0  # size of the record as received
    raw_sha256: str = ""  # of the record as received, to find the original
    records: int = 1  # refused records this dead letter stands for (>1: a summary)

    @property
    def truncated(self) -> bool:
        return len(self.raw.encode()) < self.raw_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "raw": self.raw,
            "source": self.source,
            "raw_bytes": self.raw_bytes,
            "raw_sha256": self.raw_sha256,
            "truncated": self.truncated,
            "records": self.records,
        }


class _Wire(msgspec.Struct):
    """The telemetry rules of `schemas.telemetry.Telemetry` as a msgspec struct: parsed and
    type-checked in C. What msgspec cannot say (RFC 3339 with offset) and the ranges of
    channels and optional fields (which degrade, not refuse) are done in `_finish`. Unknown
    fields are ignored, as in the schema."""

    battery_id: Annotated[str, msgspec.Meta(pattern=LIMITS["battery_id_pattern"])]
    ts: Annotated[int, msgspec.Meta(ge=_TS_MIN, le=_TS_MAX)] | str
    current: Annotated[float, msgspec.Meta(ge=-_I_MAX, le=_I_MAX)]
    voltage: float | None = None
    cell_voltages: (
        Annotated[list[float | None], msgspec.Meta(min_length=1, max_length=_N_MAX)] | None
    ) = None
    temperatures: (
        Annotated[list[float | None], msgspec.Meta(min_length=1, max_length=_N_MAX)] | None
    ) = None
    soc: float | None = None
    soh: float | None = None
    seq: Annotated[int, msgspec.Meta(ge=0)] | None = None


_JSON_ONE = msgspec.json.Decoder(_Wire)


def _finish(w: _Wire, raw: Any, source: str, markers: Markers) -> Row | None:
    ts = w.ts
    if type(ts) is str:
        try:
            ts = parse_rfc3339_ms(ts)
        except ValueError:
            return None
        if not _TS_MIN <= ts <= _TS_MAX:
            return None
    for x in (w.voltage, w.soc, w.soh):  # NaN/inf is malformed (the schema), not out of range
        if x is not None and not math.isfinite(x):
            return None
    volt, d_v = degrade_scalar(w.voltage, "voltage", markers)
    soc, d_soc = degrade_scalar(w.soc, "soc", markers)
    soh, d_soh = degrade_scalar(w.soh, "soh", markers)
    degraded = d_v + d_soc + d_soh
    cells = temps = None
    if w.cell_voltages is not None:
        cells = np.array(w.cell_voltages, dtype=np.float64)  # None -> NaN
        degraded += degrade_array(cells, "cell_voltages", markers)
    if w.temperatures is not None:
        temps = np.array(w.temperatures, dtype=np.float64)
        degraded += degrade_array(temps, "temperatures", markers)
    return Row(
        w.battery_id,
        ts,  # type: ignore[arg-type]
        w.current,
        volt,
        cells,
        temps,
        soc,
        soh,
        raw,
        source,
        degraded,
    )


def lean_row(obj: Any, source: str = "", markers: Markers = NO_MARKERS) -> Row | None:
    """The telemetry rules of `schemas.telemetry`, fast; None when the record is invalid.
    Invalid channels and optional fields are removed (NaN) and counted in `Row.degraded`."""
    if type(obj) is not dict:
        return None
    try:
        w = msgspec.convert(obj, _Wire)
    except msgspec.ValidationError:
        return None
    return _finish(w, obj, source, markers)


def lean_row_json(data: bytes | str, source: str = "", markers: Markers = NO_MARKERS) -> Row | None:
    """`lean_row` straight from the JSON text of one object; None if invalid or not one."""
    try:
        w = _JSON_ONE.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return _finish(w, data, source, markers)


def reason(obj: Any) -> str:
    """The precise reason a record is invalid, from the pydantic model (slow path only)."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    try:
        Telemetry.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = (
            ".".join(
                str(p)
                for p in err["loc"]
                if not str(p).startswith(("function-after", "int", "str"))
            )
            or "record"
        )
        if err["type"] == "missing":
            return f"{loc}: field required"
        msg = err["msg"].removeprefix("Value error, ")
        return f"{loc}: {msg} (got {_short(err.get('input'))})"
    return "record refused by the lean validator but accepted by the schema (please report)"


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _raw_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", errors="surrogateescape")
    try:
        return orjson.dumps(raw, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):
        return repr(raw)[: RAW_HEAD_CHARS * 4].encode("utf-8", errors="replace")


def dead_letter(error: str, raw: Any, source: str, records: int = 1) -> DeadLetter:
    """The dead letter of `raw`, bounded: error and record head cut, size and hash kept."""
    data = _raw_bytes(raw)
    head = data[: RAW_HEAD_CHARS * 4].decode("utf-8", errors="replace")[:RAW_HEAD_CHARS]
    if len(error) > ERROR_MAX_CHARS:
        error = error[: ERROR_MAX_CHARS - 3] + "..."
    return DeadLetter(error, head, source, len(data), hashlib.sha256(data).hexdigest(), records)


def undecodable(exc: BaseException, raw: Any, source: str) -> DeadLetter:
    """The dead letter of a message whose decoding raised: it must never stop the worker."""
    return dead_letter(f"undecodable message: {type(exc).__name__}: {exc}", raw, source)
