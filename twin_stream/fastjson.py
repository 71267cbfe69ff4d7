"""The fast path of the codec: many telemetry messages decoded with simdjson, arrays straight
into numpy (no Python float per cell), ranges checked for the whole batch at once.

It is an optimisation with a fallback, never a second rule book: a message takes the fast path
only if it is one JSON object whose keys are all telemetry fields (no extras, no duplicates),
whose only arrays are `cell_voltages`/`temperatures` of plain numbers, and whose every value
passes the same checks as `codec.lean_row`. Everything else, and every failure, goes to the
slow path (msgspec, then pydantic for the reason), which decides. Tests hold the two to
agreement with the pydantic schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from schemas.telemetry import parse_rfc3339_ms
from twin_stream.codec import (
    _CELL_MAX,
    _I_MAX,
    _ID,
    _N_MAX,
    _SOH_FRAC,
    _T_MAX,
    _T_MIN,
    _TS_MAX,
    _TS_MIN,
    _V_MAX,
    NAN,
    Row,
)

_OPTIONAL = (("voltage", 0.0, _V_MAX), ("soc", 0.0, 100.0), ("soh", _SOH_FRAC, 100.0))
_Array = simdjson.Array
_Object = simdjson.Object


def _scalar(x: Any, lo: float, hi: float) -> float | None:
    t = type(x)
    if (t is float or t is int) and lo <= x <= hi:
        return float(x)
    return None


class FastDecoder:
    """Decodes a batch of (bytes, source); returns rows and the items left for the slow path."""

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self._parser = simdjson.Parser()
        self.max_bytes = max_bytes

    def decode_batch(self, items: list[tuple[bytes, str]]) -> list[Row | None]:
        """One entry per item, in order: its row, or None where the slow path must decide."""
        out: list[Row | None] = []
        cand: list[tuple[Any, ...]] = []
        where: list[int] = []
        for data, source in items:
            rec = self._one(data)
            if rec is None:
                out.append(None)
            else:
                where.append(len(out))
                out.append(None)
                cand.append((*rec, data, source))
        if cand:
            bad = _range_failures(cand, 4, 0.0, _CELL_MAX) | _range_failures(
                cand, 5, _T_MIN, _T_MAX
            )
            for i, c in enumerate(cand):
                if i not in bad:
                    out[where[i]] = Row(*c)
        return out

    def _one(self, data: bytes) -> tuple[Any, ...] | None:
        if len(data) > self.max_bytes:
            return None
        doc = None
        try:
            doc = self._parser.parse(data)
            if type(doc) is not _Object:
                return None
            return _fields(doc, data)
        except Exception:  # BIGINT/DEPTH errors too: the slow path decides
            return None
        finally:
            del doc  # the parser refuses to parse again while a document is referenced


def _fields(doc: Any, data: bytes) -> tuple[Any, ...] | None:
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
    cur = _scalar(get("current"), -_I_MAX, _I_MAX)
    if cur is None:
        return None
    found = 3
    opt = [NAN, NAN, NAN]  # voltage, soc, soh
    for k, (name, lo, hi) in enumerate(_OPTIONAL):
        try:
            x = get(name)
        except KeyError:
            continue
        found += 1
        if x is not None:
            v = _scalar(x, lo, hi)
            if v is None or (k == 2 and v <= _SOH_FRAC):
                return None
            opt[k] = v
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
    for k, name in enumerate(("cell_voltages", "temperatures")):
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
    return bid, ts, cur, volt, cells, temps, soc, soh


def _numbers(x: Any) -> np.ndarray | None:
    if type(x) is not _Array:
        return None
    n = len(x)
    if not 0 < n <= _N_MAX:
        return None
    a = np.frombuffer(x.as_buffer(of_type="d"), dtype=np.float64)
    return a if a.size == n else None


def _range_failures(cand: list[tuple[Any, ...]], col: int, lo: float, hi: float) -> set[int]:
    """Indices of candidates whose array in column `col` has a value outside [lo, hi]."""
    idx = [i for i, c in enumerate(cand) if c[col] is not None]
    if not idx:
        return set()
    arrays = [cand[i][col] for i in idx]
    flat = np.concatenate(arrays)
    starts = np.zeros(len(arrays), dtype=np.int64)
    np.cumsum([a.size for a in arrays[:-1]], out=starts[1:])
    ok = (np.minimum.reduceat(flat, starts) >= lo) & (np.maximum.reduceat(flat, starts) <= hi)
    return {idx[j] for j in np.flatnonzero(~ok).tolist()}
