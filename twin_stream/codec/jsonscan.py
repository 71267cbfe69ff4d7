"""A compiled scanner that decodes many JSON telemetry messages, held in one byte buffer,
straight into columns (`Records`), without a Python object per message or per number.

It is an optimisation with a fallback, never a second rule book (like `twin_stream.codec.fastjson`):
the scanner *accepts* a message only when it is certain what `Decoder.decode_many` makes of
it (one valid record), and marks every other message "slow": those go through the
per-message decoder, which decides and gives dead letters their reasons. So the output is the
one of `decode_many` + `Records.from_rows`, in the same order.

The kernel (`scan`) walks the buffer once. Messages are either given by offsets (Kafka
messages joined by newlines) or found in the kernel (a JSON Lines block: lines split on
`\\n`, stripped of the ASCII whitespace `bytes.strip` removes, blank lines skipped, line
numbers counted). Each message is parsed by a strict recursive-descent reader of the flat
telemetry object:

- `{`, then `"key": value` pairs separated by commas, then `}`, JSON whitespace (space, tab,
  CR, LF) anywhere between tokens, nothing after. Keys are the nine telemetry fields without
  escapes; an unknown or duplicate key, an escape, a control or non-ASCII byte in a string
  -> slow.
- battery_id: a string matching `^[A-Za-z0-9._:-]{1,128}$` (checked byte by byte), and
  hashed into a table of the block's distinct ids, so Python decodes each distinct id once.
- ts: a plain integer of at most 18 digits, or the RFC 3339 text
  `YYYY-MM-DDTHH:MM:SS[.f+](Z|+hh:mm|-hh:mm)`, converted like
  `schemas.telemetry.parse_rfc3339_ms` (calendar checked, fraction truncated to
  microseconds, then to milliseconds); in 1970..3000, else slow.
- numbers: the JSON grammar, digits accumulated exactly into an integer significand m and a
  decimal exponent e; Clinger's fast path: when m <= 2^53 and |e| <= 22 the double
  m*10^e or m/10^e is one correctly rounded operation on exact operands, hence bit for bit
  what orjson/simdjson/msgspec give. Anything else (more significant digits, |e| > 22,
  -0 whose sign the codec reads differently for integers and floats) -> slow.
- current: a number with |current| <= current_abs_max_a; seq: null or a non-negative
  integer; voltage/soc/soh: null or a number; cell_voltages/temperatures: null or an array
  of 1..array_max_items numbers/nulls. Any other type -> slow.

The field rule is applied in the kernel with the codec's own comparisons
(`codec.degrade_scalar`/`degrade_array`): an optional value or a channel that is null, out
of its range (soh's low end open) or equal to an invalid marker becomes NaN and is counted
in `degraded`. Channel matrices are preallocated `width` wide; a longer array marks the row
"wide" and the block is scanned again with the width it needs (the scanner remembers
widths, so this happens about once per run).

Compiled like `twin_stream.sdk.kernel` (numba `njit`, cached, no GIL) but without numba's
runtime (`_nrt=False`): the scanner allocates nothing, and with the runtime every helper call
reference-counts its array arguments with atomic instructions -- measured as more than half
of the scan's time. About 1 us per 96-cell record (~700 MB/s) on one core; the Python around
it (`Scanner`) is per block, not per record: distinct ids are decoded once, the accepted rows
taken as slices of the output arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from twin_stream.codec.records import Records
from twin_stream.codec.rules import _I_MAX, _N_MAX, _RANGES, _TS_MAX, _TS_MIN

# The kernel allocates nothing: compiled without numba's runtime (NRT), array arguments are
# not reference counted. With it, every helper call and every array variable costs an atomic
# increment and decrement (measured: half the time of the scan).
_jit = numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)  # type: ignore[call-overload]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
U8Array = npt.NDArray[np.uint8]

OK, SLOW, WIDE = 0, 1, 2  # row status
_NUM, _NULL, _BAD = 0, 1, 2  # what _number read

_P10 = np.array([10.0**k for k in range(23)], dtype=np.float64)  # exact doubles
_TWO53 = 1 << 53
_KEY_NAMES = (
    "battery_id",
    "ts",
    "current",
    "voltage",
    "soc",
    "soh",
    "seq",
    "cell_voltages",
    "temperatures",
)
_KEYS = np.zeros((len(_KEY_NAMES), 16), dtype=np.uint8)
_KEY_LEN = np.array([len(k) for k in _KEY_NAMES], dtype=np.int64)
for _k, _name in enumerate(_KEY_NAMES):
    _KEYS[_k, : len(_name)] = np.frombuffer(_name.encode(), dtype=np.uint8)
_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
# limits handed to the kernel, in this order
_LIM = np.array(
    [
        _I_MAX,
        *_RANGES["voltage"],
        *_RANGES["soc"],
        *_RANGES["soh"],
        *_RANGES["cell_voltages"],
        *_RANGES["temperatures"],
    ],
    dtype=np.float64,
)
_ID_MAX = 128  # LIMITS["battery_id_max_length"], as in the pattern


# --- the kernel ----------------------------------------------------------------------------


@_jit
def _ws(buf, p, e):  # type: ignore[no-untyped-def]
    """Index of the first non-whitespace byte at or after p (JSON whitespace)."""
    while p < e:
        c = buf[p]
        if c != 32 and c != 9 and c != 10 and c != 13:
            break
        p += 1
    return p


@_jit
def _is_null(buf, p, e):  # type: ignore[no-untyped-def]
    return (
        p + 4 <= e
        and buf[p] == 110
        and buf[p + 1] == 117
        and buf[p + 2] == 108
        and buf[p + 3] == 108
    )


@_jit
def _number(buf, p, e):  # type: ignore[no-untyped-def]
    """(kind, value, next p): a JSON number (kind _NUM), null (_NULL) or not readable
    exactly by the fast path (_BAD). At most 18 digits in all (no overflow), m <= 2^53."""
    if p >= e:
        return _BAD, 0.0, p
    c = buf[p]
    neg = c == 45  # -
    if neg:
        p += 1
        if p >= e:
            return _BAD, 0.0, p
        c = buf[p]
    d = np.int64(c) - 48
    if d < 0 or d > 9:
        if not neg and c == 110 and _is_null(buf, p, e):
            return _NULL, np.nan, p + 4
        return _BAD, 0.0, p
    q = p
    m = d
    p += 1
    if d == 0:  # a leading zero stands alone
        if p < e and buf[p] >= 48 and buf[p] <= 57:
            return _BAD, 0.0, p
    else:
        end = min(e, q + 18)
        while p < end:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                break
            m = m * 10 + d
            p += 1
    c = buf[p] if p < e else 0
    if c >= 48 and c <= 57:
        return _BAD, 0.0, p  # more than 18 digits
    frac = 0
    if c == 46:  # .
        p += 1
        f0 = p
        end = min(e, f0 + 18 - (f0 - 1 - q))
        while p < end:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                break
            m = m * 10 + d
            p += 1
        frac = p - f0
        c = buf[p] if p < e else 0
        if frac == 0 or (c >= 48 and c <= 57):
            return _BAD, 0.0, p
    ex = np.int64(0)
    if c == 101 or c == 69:  # e E
        p += 1
        eneg = False
        if p < e and (buf[p] == 43 or buf[p] == 45):
            eneg = buf[p] == 45
            p += 1
        e0 = p
        end = min(e, e0 + 4)
        while p < end:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                break
            ex = ex * 10 + d
            p += 1
        if p == e0 or (p < e and buf[p] >= 48 and buf[p] <= 57):
            return _BAD, 0.0, p
        if eneg:
            ex = -ex
    if m > _TWO53:
        return _BAD, 0.0, p
    if m == 0:
        if neg:
            return _BAD, 0.0, p  # -0: an integer 0 to the codec, -0.0 as a float
        return _NUM, 0.0, p
    e10 = ex - frac
    if 0 <= e10 <= 22:
        v = np.float64(m) * _P10[e10]
    elif -22 <= e10 < 0:
        v = np.float64(m) / _P10[-e10]
    else:
        return _BAD, 0.0, p
    return _NUM, -v if neg else v, p


@_jit
def _uint(buf, p, e):  # type: ignore[no-untyped-def]
    """(ok, value, next p): a plain JSON integer >= 0 of at most 18 digits."""
    if p >= e or buf[p] < 48 or buf[p] > 57:
        return False, np.int64(0), p
    q = p
    v = np.int64(0)
    end = min(e, q + 18)
    while p < end and buf[p] >= 48 and buf[p] <= 57:
        v = v * 10 + (np.int64(buf[p]) - 48)
        p += 1
    if p < e and buf[p] >= 48 and buf[p] <= 57:
        return False, np.int64(0), p  # more than 18 digits
    if p - q > 1 and buf[q] == 48:
        return False, np.int64(0), p  # a leading zero
    if p < e and (buf[p] == 46 or buf[p] == 101 or buf[p] == 69):
        return False, np.int64(0), p  # 1.0, 1e3: a float to the codec
    return True, v, p


@_jit
def _digits(buf, p, n):  # type: ignore[no-untyped-def]
    """The n decimal digits at p as an integer, -1 if one is not a digit."""
    v = np.int64(0)
    for k in range(n):
        c = buf[p + k]
        if c < 48 or c > 57:
            return np.int64(-1)
        v = v * 10 + (np.int64(c) - 48)
    return v


@_jit
def _rfc3339(buf, p, e):  # type: ignore[no-untyped-def]
    """(ok, epoch ms, p after the closing quote) of `YYYY-MM-DDTHH:MM:SS[.f+](Z|+hh:mm)"`
    starting at p (after the opening quote)."""
    if p + 20 > e:
        return False, np.int64(0), p
    y = _digits(buf, p, 4)
    mo = _digits(buf, p + 5, 2)
    d = _digits(buf, p + 8, 2)
    h = _digits(buf, p + 11, 2)
    mi = _digits(buf, p + 14, 2)
    s = _digits(buf, p + 17, 2)
    if (
        buf[p + 4] != 45
        or buf[p + 7] != 45
        or buf[p + 10] != 84
        or buf[p + 13] != 58
        or buf[p + 16] != 58
    ):
        return False, np.int64(0), p
    if y < 1 or mo < 1 or mo > 12 or d < 1 or h < 0 or h > 23 or mi < 0 or mi > 59:
        return False, np.int64(0), p
    if s < 0 or s > 59:
        return False, np.int64(0), p
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    dim = _DAYS[mo] + (1 if (mo == 2 and leap) else 0)
    if d > dim:
        return False, np.int64(0), p
    p += 19
    us = np.int64(0)
    if p < e and buf[p] == 46:  # fraction: any number of digits, microseconds kept
        p += 1
        nd = 0
        while p < e and buf[p] >= 48 and buf[p] <= 57:
            if nd < 6:
                us = us * 10 + (np.int64(buf[p]) - 48)
            nd += 1
            p += 1
        if nd == 0:
            return False, np.int64(0), p
        for _ in range(nd, 6):
            us *= 10
    off = np.int64(0)
    if p < e and buf[p] == 90:  # Z
        p += 1
    elif p + 6 <= e and (buf[p] == 43 or buf[p] == 45) and buf[p + 3] == 58:
        oh = _digits(buf, p + 1, 2)
        om = _digits(buf, p + 4, 2)
        if oh < 0 or oh > 23 or om < 0 or om > 59:
            return False, np.int64(0), p
        off = oh * 3600 + om * 60
        if buf[p] == 45:
            off = -off
        p += 6
    else:
        return False, np.int64(0), p
    if p >= e or buf[p] != 34:
        return False, np.int64(0), p
    # days from civil (proleptic Gregorian), H. Hinnant's algorithm
    yy = y - 1 if mo <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    mp = mo - 3 if mo > 2 else mo + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    sec = days * 86400 + h * 3600 + mi * 60 + s - off
    return True, sec * 1000 + us // 1000, p + 1


@_jit
def _key(buf, p, e):  # type: ignore[no-untyped-def]
    """(field index or -1, p after the closing quote) of the key string at p (after `"`)."""
    q = p
    while p < e and buf[p] != 34:
        c = buf[p]
        if c == 92 or c < 32:
            return -1, p
        p += 1
    if p >= e:
        return -1, p
    n = p - q
    for k in range(_KEY_LEN.size):
        if _KEY_LEN[k] == n:
            same = True
            for j in range(n):
                if buf[q + j] != _KEYS[k, j]:
                    same = False
                    break
            if same:
                return k, p + 1
    return -1, p + 1


@_jit
def _marked(x, marks):  # type: ignore[no-untyped-def]
    for j in range(marks.size):  # noqa: SIM110 (compiled: no generator)
        if x == marks[j]:
            return True
    return False


@_jit
def _array(buf, p, e, out, row, width, lo, hi, marks):  # type: ignore[no-untyped-def]
    """Reads `[...]` of numbers/nulls at p into out[row, :width] (invalid channels NaN).
    Returns (count (-1: not readable), degraded, next p)."""
    p = _ws(buf, p + 1, e)
    if p < e and buf[p] == 93:  # [] is refused: the slow path says why
        return -1, 0, p
    n = 0
    deg = 0
    while True:
        kind, v, p = _number(buf, p, e)
        if kind == _BAD:
            return -1, 0, p
        if kind == _NULL or not (v >= lo and v <= hi) or (marks.size and _marked(v, marks)):
            v = np.nan
            deg += 1
        if n < width:
            out[row, n] = v
        n += 1
        if n > _N_MAX or p >= e:
            return -1, 0, p
        c = buf[p]
        if c <= 32:
            p = _ws(buf, p, e)
            if p >= e:
                return -1, 0, p
            c = buf[p]
        if c == 44:  # ,
            p += 1
            if p < e and buf[p] <= 32:
                p = _ws(buf, p, e)
        elif c == 93:  # ]
            break
        else:
            return -1, 0, p
    for j in range(n, width):
        out[row, j] = np.nan
    return n, deg, p + 1


@_jit
def _intern(buf, s, e, tab, ids):  # type: ignore[no-untyped-def]
    """The id number of buf[s:e] in the open-addressing table `tab` (-1: empty slot); new
    ids are appended to `ids` (start, end), ids[0, 0] holding the count."""
    h = np.int64(e - s)
    for j in range(s, e):
        h = (h * 257 + np.int64(buf[j])) % 2147483647
    mask = tab.size - 1
    slot = h & mask
    while tab[slot] >= 0:
        u = tab[slot]
        a, b = ids[u + 1, 0], ids[u + 1, 1]
        if b - a == e - s:
            same = True
            for j in range(e - s):
                if buf[a + j] != buf[s + j]:
                    same = False
                    break
            if same:
                return u
        slot = (slot + 1) & mask
    u = ids[0, 0]
    ids[0, 0] = u + 1
    ids[u + 1, 0] = s
    ids[u + 1, 1] = e
    tab[slot] = u
    return u


@_jit
def _message(  # type: ignore[no-untyped-def]
    buf, p, e, r, lim, mv, msoc, msoh, mc, mt, tab, ids, uid, ts, cur, sc, cells, nc, temps, nt, deg
):
    """Parses buf[p:e] as one telemetry object into row r; returns OK, SLOW or WIDE."""
    p = _ws(buf, p, e)
    if p >= e or buf[p] != 123:  # {
        return SLOW
    p = _ws(buf, p + 1, e)
    seen = 0
    d = 0
    sc[0, r] = np.nan
    sc[1, r] = np.nan
    sc[2, r] = np.nan
    nc[r] = -1
    nt[r] = -1
    status = OK
    while True:
        if p >= e or buf[p] != 34:
            return SLOW
        k, p = _key(buf, p + 1, e)
        if k < 0 or (seen >> k) & 1:
            return SLOW
        seen |= 1 << k
        p = _ws(buf, p, e)
        if p >= e or buf[p] != 58:  # :
            return SLOW
        p = _ws(buf, p + 1, e)
        if p >= e:
            return SLOW
        if k == 0:  # battery_id
            if buf[p] != 34:
                return SLOW
            q = p + 1
            p = q
            while p < e and buf[p] != 34:
                c = buf[p]
                if not (
                    (c >= 97 and c <= 122)
                    or (c >= 65 and c <= 90)
                    or (c >= 48 and c <= 58)
                    or c == 46
                    or c == 95
                    or c == 45
                ):
                    return SLOW  # outside the pattern (or an escape): refused or unsure
                p += 1
            if p >= e or p == q or p - q > _ID_MAX:
                return SLOW
            uid[r] = _intern(buf, q, p, tab, ids)
            p += 1
        elif k == 1:  # ts
            if buf[p] == 34:
                ok, t, p = _rfc3339(buf, p + 1, e)
            else:
                ok, t, p = _uint(buf, p, e)
            if not ok or t < _TS_MIN or t > _TS_MAX:
                return SLOW
            ts[r] = t
        elif k <= 5:  # current, voltage, soc, soh
            kind, v, p = _number(buf, p, e)
            if kind == _BAD:
                return SLOW
            if k == 2:
                if kind != _NUM or not (abs(v) <= lim[0]):
                    return SLOW
                cur[r] = v
            elif kind == _NUM:
                lo = lim[2 * k - 5]
                hi = lim[2 * k - 4]
                marks = mv if k == 3 else (msoc if k == 4 else msoh)
                good = (lo < v and v <= hi) if k == 5 else (lo <= v and v <= hi)
                if good and not (marks.size and _marked(v, marks)):
                    sc[k - 3, r] = v
                else:
                    d += 1
        elif k == 6:  # seq
            if _is_null(buf, p, e):
                p += 4
            else:
                ok, t, p = _uint(buf, p, e)
                if not ok:
                    return SLOW
        else:  # cell_voltages, temperatures
            if _is_null(buf, p, e):
                p += 4
            elif buf[p] == 91:  # [
                out = cells if k == 7 else temps
                c0 = 7 if k == 7 else 9
                n, dd, p = _array(
                    buf, p, e, out, r, out.shape[1], lim[c0], lim[c0 + 1], mc if k == 7 else mt
                )
                if n < 0:
                    return SLOW
                if k == 7:
                    nc[r] = n
                else:
                    nt[r] = n
                if n > out.shape[1]:
                    status = WIDE
                d += dd
            else:
                return SLOW
        p = _ws(buf, p, e)
        if p >= e:
            return SLOW
        if buf[p] == 44:  # ,
            p = _ws(buf, p + 1, e)
        elif buf[p] == 125:  # }
            break
        else:
            return SLOW
    if _ws(buf, p + 1, e) != e or (seen & 7) != 7:
        return SLOW  # trailing bytes, or a required field missing
    if nc[r] < 0:
        for j in range(cells.shape[1]):
            cells[r, j] = np.nan
    if nt[r] < 0:
        for j in range(temps.shape[1]):
            temps[r, j] = np.nan
    deg[r] = d
    return status


@_jit
def _space(c):  # type: ignore[no-untyped-def]
    """What `bytes.strip()` removes: space, \\t, \\n, \\r, \\v, \\f."""
    return c == 32 or (c >= 9 and c <= 13)


@_jit
def scan(  # type: ignore[no-untyped-def]
    buf,
    pos,
    stop,
    lines,
    starts,
    ends,
    line,
    max_bytes,
    lim,
    mv,
    msoc,
    msoh,
    mc,
    mt,
    status,
    tab,
    ids,
    uid,
    ts,
    cur,
    sc,
    cells,
    nc,
    temps,
    nt,
    deg,
):
    """Decodes messages of `buf` into rows 0.. of the output arrays.

    `lines` True: JSON Lines from `pos` to `stop` (a line ends at `\\n` or at `stop`),
    stripped, blank lines skipped, at most `status.size` rows; `starts`/`ends`/`line`
    receive each row's stripped bounds and its line number counted from 0 at `pos`.
    `lines` False: the messages are buf[starts[i]:ends[i]] for i < status.size.
    Returns (rows, position after the last line read, newlines passed)."""
    cap = status.size
    tab[:] = -1
    ids[0, 0] = 0
    r = 0
    nl = 0
    p = pos
    while r < cap:
        if lines:
            if p >= stop:
                break
            q = p
            while q < stop and buf[q] != 10:
                q += 1
            a = p
            b = q
            p = q + 1 if q < stop else q
            this = nl
            if q < stop:
                nl += 1
            while a < b and _space(buf[a]):
                a += 1
            while b > a and _space(buf[b - 1]):
                b -= 1
            if a == b:
                continue
            starts[r] = a
            ends[r] = b
            line[r] = this
        else:
            a = starts[r]
            b = ends[r]
        if b - a > max_bytes:
            status[r] = SLOW
        else:
            status[r] = _message(
                buf,
                a,
                b,
                r,
                lim,
                mv,
                msoc,
                msoh,
                mc,
                mt,
                tab,
                ids,
                uid,
                ts,
                cur,
                sc,
                cells,
                nc,
                temps,
                nt,
                deg,
            )
        r += 1
    return r, p, nl


# --- the Python side -----------------------------------------------------------------------


@dataclass
class Scan:
    """What one `Scanner` call found: `n` messages (rows), which are accepted (`ok`), their
    bounds in the buffer, line numbers (JSON Lines, from 0 at the start position), the
    accepted rows as `Records` (raw/source empty), and, for JSON Lines, where reading
    stopped (`pos`) and how many newlines it passed (`newlines`)."""

    n: int
    ok: BoolArray
    starts: IntArray
    ends: IntArray
    line: IntArray
    records: Records
    pos: int
    newlines: int


class Scanner:
    """Runs `scan` over byte buffers with a decoder's limits and invalid markers."""

    def __init__(self, max_bytes: int, markers: Mapping[str, Sequence[float]]) -> None:
        self.max_bytes = int(max_bytes)

        def marks(name: str) -> FloatArray:
            return np.array([float(x) for x in markers.get(name, ())], dtype=np.float64)

        self.marks = tuple(
            marks(n) for n in ("voltage", "soc", "soh", "cell_voltages", "temperatures")
        )
        self.width = [0, 0]  # channel matrix widths last needed (cells, temperatures)

    def lines(self, data: bytes | bytearray, pos: int, stop: int, limit: int) -> Scan:
        """At most `limit` non-blank lines of data[pos:stop] (cut at a newline or the end)."""
        cap = limit if limit <= 1 << 17 else min(limit, data.count(b"\n", pos, stop) + 1)
        cap = max(cap, 1)
        z = np.zeros(cap, np.int64)
        return self._run(data, pos, stop, True, z, z.copy(), cap)

    def messages(self, data: bytes, starts: IntArray, ends: IntArray) -> Scan:
        """The messages data[starts[i]:ends[i]]."""
        return self._run(data, 0, len(data), False, starts, ends, int(starts.size))

    def _run(
        self,
        data: bytes | bytearray,
        pos: int,
        stop: int,
        lines: bool,
        starts: IntArray,
        ends: IntArray,
        cap: int,
    ) -> Scan:
        buf = np.frombuffer(data, dtype=np.uint8)
        buf.flags.writeable = False  # one compiled signature for bytes and bytearray
        tab = np.empty(max(64, 1 << (2 * cap).bit_length()), np.int64)
        ids = np.empty((cap + 1, 2), np.int64)
        status = np.empty(cap, np.int8)
        uid = np.empty(cap, np.int64)
        ts = np.empty(cap, np.int64)
        cur = np.empty(cap, np.float64)
        sc = np.empty((3, cap), np.float64)  # voltage, soc, soh
        nc = np.empty(cap, np.int64)
        nt = np.empty(cap, np.int64)
        deg = np.empty(cap, np.int64)
        line = np.empty(cap, np.int64) if lines else np.zeros(0, np.int64)
        while True:
            wc = self.width[0] or 128
            wt = self.width[1] or 16
            cells = np.empty((cap, wc), np.float64)
            temps = np.empty((cap, wt), np.float64)
            n, p, nl = scan(
                buf,
                pos,
                stop,
                lines,
                starts,
                ends,
                line,
                self.max_bytes,
                _LIM,
                *self.marks,
                status,
                tab,
                ids,
                uid,
                ts,
                cur,
                sc,
                cells,
                nc,
                temps,
                nt,
                deg,
            )
            st = status[:n]
            if not (st == WIDE).any():
                break
            wide = st == WIDE
            self.width[0] = max(wc, int(nc[:n][wide].max()))
            self.width[1] = max(wt, int(nt[:n][wide].max()))
        ok = st == OK
        k = int(ids[0, 0])
        names = [bytes(data[a:b]).decode("ascii") for a, b in ids[1 : k + 1].tolist()]
        acc = None if ok.all() else np.flatnonzero(ok)
        nc_a = nc[:n] if acc is None else nc[acc]
        nt_a = nt[:n] if acc is None else nt[acc]
        w_c = max(int(nc_a.max()) if nc_a.size else 0, 0)
        w_t = max(int(nt_a.max()) if nt_a.size else 0, 0)
        if w_c:
            self.width[0] = w_c
        if w_t:
            self.width[1] = w_t

        def rows(a: Any, width: int | None = None) -> Any:
            a = a[:n] if acc is None else a[acc]
            if width is not None and a.shape[1] != width:
                a = np.ascontiguousarray(a[:, :width])
            return a

        id_of = np.array(names, dtype=object) if names else np.zeros(0, dtype=object)
        rec = Records(
            id_of[rows(uid)].tolist(),
            rows(ts),
            rows(cur),
            rows(sc[0]),
            rows(sc[1]),
            rows(sc[2]),
            rows(cells, w_c),
            nc_a,
            rows(temps, w_t),
            nt_a,
            rows(deg),
            [],
            [],
        )
        return Scan(n, ok, starts[:n], ends[:n], line[:n], rec, int(p), int(nl))
