"""The fast path of the codec: many telemetry messages decoded with simdjson, arrays straight
into numpy (no Python float per cell), ranges checked for the whole batch at once.

It is an optimisation with a fallback, never a second rule book: a message takes the fast path
only if it is one JSON object whose keys are all telemetry fields (no extras, no duplicates),
whose only arrays are `cell_voltages`/`temperatures` of numbers (and nulls), and whose every
value has the type `codec.lean_row` wants. Invalid channels and optional fields degrade here
as there (`codec.degrade_array`/`degrade_scalar`: NaN, counted in `Row.degraded`), for the
whole batch at once. Everything else, and every failure, goes to the slow path (msgspec, then
pydantic for the reason), which decides. Tests hold the two to agreement with the schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from schemas.telemetry import parse_rfc3339_ms
from twin_stream.codec.rules import (
    _I_MAX,
    _ID,
    _N_MAX,
    _TS_MAX,
    _TS_MIN,
    NAN,
    NO_MARKERS,
    Markers,
    Row,
    degrade_scalar,
)
from twin_stream.codec.rules import _RANGES as RANGES

_OPTIONAL = ("voltage", "soc", "soh")
_OPT_RANGES = [RANGES[name] for name in _OPTIONAL]
_ARRAYS = ("cell_voltages", "temperatures")
_Array = simdjson.Array
_Object = simdjson.Object


class FastDecoder:
    """Decodes a batch of (bytes, source); returns rows and the items left for the slow path."""

    def __init__(self, max_bytes: int = 1 << 20, markers: Markers = NO_MARKERS) -> None:
        self._parser = simdjson.Parser()
        self.max_bytes = max_bytes
        self.markers = markers

    def decode_batch(self, items: list[tuple[bytes, str]]) -> list[Row | None]:
        """One entry per item, in order: its row, or None where the slow path must decide."""
        out: list[Row | None] = []
        cand: list[list[Any]] = []
        where: list[int] = []
        for data, source in items:
            rec = self._one(data)
            if rec is None:
                out.append(None)
            else:
                where.append(len(out))
                out.append(None)
                cand.append([*rec, data, source])
        if cand:
            _degrade_column(cand, 4, "cell_voltages", self.markers)
            _degrade_column(cand, 5, "temperatures", self.markers)
            for i, c in enumerate(cand):
                out[where[i]] = Row(*c[:8], c[9], c[10], c[8])  # type: ignore[call-arg]
        return out

    def _one(self, data: bytes) -> tuple[Any, ...] | None:
        if len(data) > self.max_bytes:
            return None
        doc = None
        try:
            doc = self._parser.parse(data)
            if type(doc) is not _Object:
                return None
            return _fields(doc, data, self.markers)
        except Exception:  # BIGINT/DEPTH errors too: the slow path decides
            return None
        finally:
            del doc  # the parser refuses to parse again while a document is referenced


def _fields(doc: Any, data: bytes, markers: Markers) -> tuple[Any, ...] | None:
    """(battery_id, ts, current, voltage, cells, temps, soc, soh, degraded) or None."""
    get = doc.__getitem__  # .get(key, default) costs ~1 us even for present keys
    bid = get("battery_id")
    if type(bid) is not str or _ID.fullmatch(bid) is None:
        return None
    ts = get("ts")
    if type(ts) is str:
        try:
            ts = parse_rfc3339_ms(ts)
        except ValueError:
            return None
    elif type(ts) is not int:
        return None
    if not _TS_MIN <= ts <= _TS_MAX:
        return None
    cur = get("current")
    if (type(cur) is not float and type(cur) is not int) or not -_I_MAX <= cur <= _I_MAX:
        return None
    cur = float(cur)
    found = 3
    degraded = 0
    opt = [NAN, NAN, NAN]  # voltage, soc, soh
    for k, name in enumerate(_OPTIONAL):
        try:
            x = get(name)
        except KeyError:
            continue
        found += 1
        if x is not None:
            t = type(x)
            if t is not float and t is not int:
                return None  # the wrong type: malformed, the slow path says why
            lo, hi = _OPT_RANGES[k]
            if lo < x <= hi and not markers.get(name):  # the common case, without a call
                opt[k] = float(x)
            else:
                opt[k], bad = degrade_scalar(float(x), name, markers)
                degraded += bad
    volt, soc, soh = opt
    try:
        x = get("seq")
        found += 1
        if x is not None and (type(x) is not int or x < 0):
            return None
    except KeyError:
        pass
    arrays = 0
    found_arrays: list[np.ndarray | None] = [None, None]  # cells, temperatures
    for k, name in enumerate(_ARRAYS):
        try:
            x = get(name)
        except KeyError:
            continue
        found += 1
        if x is not None:
            a = _numbers(x)
            if a is None:
                return None
            found_arrays[k] = a
            arrays += 1
    cells, temps = found_arrays
    # every key a telemetry field (no extras, no duplicate keys), no nested arrays
    if len(doc) != found or data.count(b"[") != arrays:
        return None
    return bid, ts, cur, volt, cells, temps, soc, soh, degraded


def _numbers(x: Any) -> np.ndarray | None:
    """The array's numbers as float64 (null -> NaN); None if it holds anything else."""
    if type(x) is not _Array:
        return None
    n = len(x)
    if not 0 < n <= _N_MAX:
        return None
    try:
        a = np.frombuffer(x.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # nulls (invalid channels) or other types
        items = x.as_list()
        if any(v is not None and type(v) is not float and type(v) is not int for v in items):
            return None
        return np.array(items, dtype=np.float64)
    return a if a.size == n else None


def _degrade_column(cand: list[list[Any]], col: int, field: str, markers: Markers) -> None:
    """Invalid channels (NaN, out of range, markers) of column `col` -> NaN, for the whole
    batch at once; each candidate's count is added to its `degraded` (index 8)."""
    idx = [i for i, c in enumerate(cand) if c[col] is not None]
    if not idx:
        return
    arrays = [cand[i][col] for i in idx]
    flat = np.concatenate(arrays)
    lo, hi = RANGES[field]
    bad = ~((flat >= lo) & (flat <= hi))
    marks = markers.get(field)
    if marks:
        bad |= np.isin(flat, marks)
    if not bad.any():
        return
    starts = np.zeros(len(arrays), dtype=np.int64)
    np.cumsum([a.size for a in arrays[:-1]], out=starts[1:])
    counts = np.add.reduceat(bad, starts)
    for j in np.flatnonzero(counts).tolist():
        c = cand[idx[j]]
        a = np.array(c[col], dtype=np.float64)  # simdjson's buffer is read-only: a copy
        a[bad[starts[j] : starts[j] + a.size]] = NAN
        c[col] = a
        c[8] += int(counts[j])
