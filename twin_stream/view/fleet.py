"""FleetView: a bounded in-memory picture of a fleet, fed alert and estimate records one by
one (the live dashboard, from the topics) or from a replay's files (the report).

What it holds, and its bounds:

- per battery, the estimate series in compact ring buffers: the series a model emits at the
  same timestamps share one ring of timestamps (``uint32`` milliseconds from a per-ring base,
  re-based when needed) and one ``float32`` column per series name; a ``float16`` column holds
  the confidence (and the uncertainty) of the series that have one. Rings are allocated on
  first use with ``points_per_series`` rows; a battery keeps at most ``max_series`` names and
  ``max_groups`` rings (unknown names are generic series; beyond the caps they are counted in
  ``dropped_points``, never an error);
- per battery, its latest values (the fleet row), the active alerts and at most
  ``history_per_battery`` alert episodes (newest kept);
- at most ``max_batteries`` batteries: beyond it the least recently updated battery is
  evicted (``evictions`` counts them);
- the ``alerts_kept`` newest alert records, as received, for the alerts feed.

``keep="span"`` (the replay report) makes each ring cover the whole run instead of its newest
rows: when full it keeps every other row and from then on takes one new row in two (then four,
...), so a long replay is down-sampled evenly to at most ``points_per_series`` points.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

SEVERITIES = ("info", "warning", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
STALE_CODE = "telemetry_stale"
_U32 = 1 << 32
# the series whose confidence / uncertainty is kept (the pages draw SOC's band)
_EXTRA_NAMES = frozenset({"soc_ocv"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ts(ts: str) -> int:
    """RFC 3339 (``2026-01-01T00:00:00.000Z``, or any offset) to epoch milliseconds."""
    if ts.endswith("Z"):
        ts = ts[:-1] + "+00:00"
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_ts(ts_ms: int) -> str:
    """Epoch milliseconds to RFC 3339 UTC with milliseconds, as on the wire."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


class _Ring:
    """Rows of one model's estimates of one battery: a timestamp per row and a column per name.

    Rows are in event-time order; a record with the timestamp of an existing row fills that
    row, a newer one opens a row (overwriting the oldest when full, or thinning in span mode),
    an older one without a row is dropped (counted by the caller)."""

    __slots__ = (
        "_seen",
        "_skip",
        "base",
        "cap",
        "cols",
        "conf",
        "count",
        "head",
        "names",
        "newest",
        "span",
        "stride",
        "ts",
        "unc",
    )

    def __init__(self, cap: int, span: bool) -> None:
        self.cap = cap
        self.span = span
        self.ts = np.zeros(cap, dtype=np.uint32)
        self.cols = np.full((cap, 0), np.nan, dtype=np.float32)
        self.conf: npt.NDArray[np.float16] | None = None
        self.unc: npt.NDArray[np.float16] | None = None
        self.names: dict[str, int] = {}
        self.base = 0
        self.count = 0
        self.head = 0  # next row to write
        self.newest = -1  # newest row's ts (ms), -1 when empty
        self.stride = 1  # span mode: one new row in `stride` is kept
        self._seen = 0  # span mode: rows offered since the last thinning
        self._skip = -1  # span mode: ts of the row being skipped

    def column(self, name: str) -> int:
        idx = self.names.get(name)
        if idx is None:
            idx = len(self.names)
            grown = np.full((self.cap, idx + 1), np.nan, dtype=np.float32)
            grown[:, :idx] = self.cols
            self.cols = grown
            if self.conf is not None:
                self.conf = _grow16(self.conf, self.cap, idx + 1)
            if self.unc is not None:
                self.unc = _grow16(self.unc, self.cap, idx + 1)
            self.names[name] = idx
        return idx

    def _row_for(self, ts_ms: int) -> int | None:
        if ts_ms == self._skip:
            return None
        if self.count and ts_ms == self.newest:
            return (self.head - 1) % self.cap
        if self.count == 0 or ts_ms > self.newest:
            return self._open(ts_ms)
        if ts_ms < self.base:
            return None
        hits = np.flatnonzero(self.ts[: self.count] == np.uint32(ts_ms - self.base))
        return int(hits[0]) if hits.size else None

    def _open(self, ts_ms: int) -> int | None:
        if self.span:
            self._seen += 1
            if (self._seen - 1) % self.stride:
                self._skip = ts_ms  # the row is skipped, and its other names with it
                return None
            if self.count == self.cap:
                keep = np.arange(0, self.cap, 2)
                n = keep.size
                self.ts[:n] = self.ts[keep]
                self.cols[:n] = self.cols[keep]
                self.cols[n:] = np.nan
                for extra in (self.conf, self.unc):
                    if extra is not None:
                        extra[:n] = extra[keep]
                        extra[n:] = np.nan
                self.count = self.head = n
                self.stride *= 2
                self._seen = 1
        if self.count == 0:
            self.base = ts_ms
        elif ts_ms - self.base >= _U32:
            self._rebase(ts_ms)
        row = self.head
        self.ts[row] = ts_ms - self.base
        self.cols[row] = np.nan
        if self.conf is not None:
            self.conf[row] = np.nan
        if self.unc is not None:
            self.unc[row] = np.nan
        self.head = (row + 1) % self.cap
        self.count = min(self.count + 1, self.cap)
        self.newest = ts_ms
        return row

    def _rebase(self, ts_ms: int) -> None:
        order = self._order()
        absolute = self.ts[order].astype(np.int64) + self.base
        keep = order[absolute > ts_ms - _U32 + 1]
        new_base = int(absolute[absolute > ts_ms - _U32 + 1].min()) if keep.size else ts_ms
        ts = np.zeros(self.cap, dtype=np.uint32)
        cols = np.full_like(self.cols, np.nan)
        n = keep.size
        ts[:n] = (self.ts[keep].astype(np.int64) + self.base - new_base).astype(np.uint32)
        cols[:n] = self.cols[keep]
        for attr in ("conf", "unc"):
            old = getattr(self, attr)
            if old is not None:
                new = np.full_like(old, np.nan)
                new[:n] = old[keep]
                setattr(self, attr, new)
        self.ts, self.cols, self.base = ts, cols, new_base
        self.count = n
        self.head = n % self.cap

    def _order(self) -> npt.NDArray[np.intp]:
        """Row indices oldest first."""
        if self.count < self.cap:
            return np.arange(self.count)
        return (np.arange(self.cap) + self.head) % self.cap

    def put(
        self, name: str, ts_ms: int, value: float, conf: float | None, unc: float | None
    ) -> bool:
        """Store one point; False when it was dropped (older than the ring, or thinned)."""
        col = self.column(name)
        row = self._row_for(ts_ms)
        if row is None:
            return False
        self.cols[row, col] = value
        if conf is not None and name in _EXTRA_NAMES:
            if self.conf is None:
                self.conf = np.full((self.cap, len(self.names)), np.nan, dtype=np.float16)
            self.conf[row, col] = conf
        if unc is not None and name in _EXTRA_NAMES:
            if self.unc is None:
                self.unc = np.full((self.cap, len(self.names)), np.nan, dtype=np.float16)
            self.unc[row, col] = unc
        return True

    def series(self, name: str) -> tuple[list[int], list[float]]:
        ts, vals, _, _ = self.series_full(name)
        return ts, vals

    def series_full(
        self, name: str
    ) -> tuple[list[int], list[float], list[float | None], list[float | None]]:
        """(ts ms, values, confidences, uncertainties) of one name, oldest first."""
        col = self.names[name]
        order = self._order()
        vals = self.cols[order, col]
        ok = ~np.isnan(vals)
        rows = order[ok]
        ts = (self.ts[rows].astype(np.int64) + self.base).tolist()
        values = [float(v) for v in vals[ok].astype(np.float64)]
        return ts, values, _extra(self.conf, rows, col), _extra(self.unc, rows, col)

    def nbytes(self) -> int:
        n = self.ts.nbytes + self.cols.nbytes + 3 * 112 + 120
        for extra in (self.conf, self.unc):
            if extra is not None:
                n += extra.nbytes + 112
        return n + sys.getsizeof(self.names) + sum(sys.getsizeof(k) for k in self.names)


def _grow16(arr: npt.NDArray[np.float16], cap: int, ncols: int) -> npt.NDArray[np.float16]:
    grown = np.full((cap, ncols), np.nan, dtype=np.float16)
    grown[:, : arr.shape[1]] = arr
    return grown


def _extra(
    arr: npt.NDArray[np.float16] | None, rows: npt.NDArray[np.intp], col: int
) -> list[float | None]:
    if arr is None:
        return [None] * rows.size
    return [None if np.isnan(v) else round(float(v), 4) for v in arr[rows, col]]


class _Episode:
    """One alert episode of a (code, cell): first raise until every raised level cleared."""

    __slots__ = (
        "cell",
        "cleared_ms",
        "code",
        "levels",
        "message",
        "model",
        "raised_ms",
        "severity",
        "value",
    )

    def __init__(self, rec: Mapping[str, Any], ts_ms: int | None) -> None:
        self.code: str = sys.intern(str(rec.get("code", "")))
        self.model: str = sys.intern(str(rec.get("model", "")))
        self.cell: int | None = rec.get("cell")
        self.severity: str = sys.intern(str(rec.get("severity", "info")))
        self.raised_ms = ts_ms
        self.cleared_ms: int | None = None
        self.value = float(rec.get("value", 0.0) or 0.0)
        self.message: str = str(rec.get("message", ""))[:300]
        self.levels: set[str] | None = None  # raised, not yet cleared

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "cell": self.cell,
            "raised_ts": None if self.raised_ms is None else format_ts(self.raised_ms),
            "cleared_ts": None if self.cleared_ms is None else format_ts(self.cleared_ms),
            "value": self.value,
            "message": self.message,
            "model": self.model,
        }

    def nbytes(self) -> int:
        return (
            120
            + sys.getsizeof(self.message)
            + 3 * 32
            + (0 if self.levels is None else sys.getsizeof(self.levels))
        )


class _Battery:
    __slots__ = (
        "active",
        "battery_id",
        "cycles",
        "history",
        "last_ms",
        "max_t",
        "maxv",
        "minv",
        "rings",
        "soc",
        "spread",
        "version",
    )

    def __init__(self, battery_id: str) -> None:
        self.battery_id = battery_id
        self.rings: dict[str, _Ring] = {}
        self.last_ms = -1
        self.version = 0
        # latest values: (ts ms, value[, extra])
        self.soc: tuple[int, float, float | None, float | None] | None = None
        self.cycles: tuple[int, float] | None = None
        self.max_t: tuple[int, float] | None = None
        self.minv: tuple[int, float] | None = None
        self.maxv: tuple[int, float] | None = None
        self.spread: tuple[int, float] | None = None
        self.active: dict[tuple[str, Any], _Episode] = {}
        self.history: list[_Episode] = []  # oldest first

    def n_series(self) -> int:
        return sum(len(r.names) for r in self.rings.values())

    def nbytes(self) -> int:
        n = 200 + 8 * 60 + sys.getsizeof(self.rings) + sys.getsizeof(self.active)
        n += sys.getsizeof(self.history) + sys.getsizeof(self.battery_id)
        n += sum(r.nbytes() + sys.getsizeof(k) for k, r in self.rings.items())
        n += sum(e.nbytes() for e in self.history)
        return n + sum(e.nbytes() for k, e in self.active.items() if e not in self.history)


def _newer(old: tuple[int, float] | None, ts_ms: int) -> bool:
    return old is None or ts_ms >= old[0]


@dataclass
class BatteryView:
    """One battery as the pages show it."""

    battery_id: str
    series: dict[str, tuple[list[int], list[float]]]
    alert_history: list[dict[str, Any]]
    row: dict[str, Any]
    # added: the confidence / uncertainty of the series that carry them, aligned with `series`
    confidence: dict[str, list[float | None]] = field(default_factory=dict)
    uncertainty: dict[str, list[float | None]] = field(default_factory=dict)


class FleetView:
    """Bounded in-memory picture of a fleet, fed record by record (live) or from files (report)."""

    def __init__(
        self,
        *,
        max_batteries: int = 10_000,
        points_per_series: int = 240,
        alerts_kept: int = 5_000,
        history_per_battery: int = 10,
        max_series: int = 32,
        max_groups: int = 8,
        keep: Literal["newest", "span"] = "newest",
    ) -> None:
        if min(max_batteries, points_per_series, alerts_kept, history_per_battery) < 1:
            raise ValueError("FleetView bounds must be >= 1")
        self.max_batteries = max_batteries
        self.points_per_series = points_per_series
        self.alerts_kept = alerts_kept
        self.history_per_battery = history_per_battery
        self.max_series = max_series
        self.max_groups = max_groups
        self.keep = keep
        self.version = 0
        self.evictions = 0
        self.dropped_points = 0
        self.invalid_records = 0
        self._bats: dict[str, _Battery] = {}  # least recently updated first
        self._alerts: deque[dict[str, Any]] = deque(maxlen=alerts_kept)

    # --- feeding ----------------------------------------------------------------------------

    def _battery(self, rec: Mapping[str, Any]) -> tuple[_Battery, int] | None:
        try:
            bid = str(rec["battery_id"])
            ts_ms = parse_ts(str(rec["ts"]))
        except (KeyError, ValueError, TypeError):
            self.invalid_records += 1
            return None
        bat = self._bats.pop(bid, None)
        if bat is None:
            bat = _Battery(sys.intern(bid))
            while len(self._bats) >= self.max_batteries:
                del self._bats[next(iter(self._bats))]
                self.evictions += 1
        self._bats[bid] = bat  # most recently updated last
        # the worker's telemetry_stale alerts carry its wall clock, not the battery's time
        if ts_ms > bat.last_ms and rec.get("code") != "telemetry_stale":
            bat.last_ms = ts_ms
        self.version += 1
        bat.version = self.version
        return bat, ts_ms

    def add(self, kind: Literal["alert", "estimate"], rec: Mapping[str, Any]) -> None:
        """Feed one record of either kind."""
        if kind == "alert":
            self.add_alert(rec)
        elif kind == "estimate":
            self.add_estimate(rec)
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def add_estimate(self, rec: Mapping[str, Any]) -> None:
        """Feed one estimate record (wire dict)."""
        got = self._battery(rec)
        if got is None:
            return
        bat, ts_ms = got
        name = str(rec.get("name", ""))
        try:
            value = float(rec["value"])
        except (KeyError, TypeError, ValueError):
            self.invalid_records += 1
            return
        conf = _opt_float(rec.get("confidence"))
        unc = _opt_float(rec.get("uncertainty"))
        if name == "soc_ocv" and (bat.soc is None or ts_ms >= bat.soc[0]):
            bat.soc = (ts_ms, value, conf, unc)
        elif name == "equivalent_cycles" and _newer(bat.cycles, ts_ms):
            bat.cycles = (ts_ms, value)
        elif name == "max_temperature" and _newer(bat.max_t, ts_ms):
            bat.max_t = (ts_ms, value)
        elif name in ("min_cell_voltage", "max_cell_voltage"):
            if name == "min_cell_voltage" and _newer(bat.minv, ts_ms):
                bat.minv = (ts_ms, value)
            elif name == "max_cell_voltage" and _newer(bat.maxv, ts_ms):
                bat.maxv = (ts_ms, value)
            lo, hi = bat.minv, bat.maxv
            if lo and hi and lo[0] == hi[0] and _newer(bat.spread, lo[0]):
                bat.spread = (lo[0], round((hi[1] - lo[1]) * 1000.0, 3))
        group = sys.intern(str(rec.get("model", "")))
        ring = bat.rings.get(group)
        if ring is None:
            if len(bat.rings) >= self.max_groups:
                self.dropped_points += 1
                return
            ring = bat.rings[group] = _Ring(self.points_per_series, self.keep == "span")
        if name not in ring.names and bat.n_series() >= self.max_series:
            self.dropped_points += 1
            return
        if not ring.put(sys.intern(name), ts_ms, value, conf, unc):
            self.dropped_points += 1

    def add_alert(self, rec: Mapping[str, Any]) -> None:
        """Feed one alert record (wire dict): the feed, the active set and the history."""
        got = self._battery(rec)
        if got is None:
            return
        bat, ts_ms = got
        self._alerts.append(dict(rec))
        key = (str(rec.get("code", "")), rec.get("cell"))
        severity = str(rec.get("severity", "info"))
        ep = bat.active.get(key)
        if rec.get("status") == "cleared":
            if ep is None or ep.levels is None:
                return  # a clear without its raise (view started later): nothing active
            ep.levels.discard(severity)
            if ep.levels:
                return
            ep.cleared_ms = ts_ms
            ep.levels = None
            del bat.active[key]
            return
        if ep is None:
            ep = _Episode(rec, ts_ms)
            ep.levels = {severity}
            bat.active[key] = ep
            bat.history.append(ep)
            if len(bat.history) > self.history_per_battery:
                del bat.history[0]
            return
        assert ep.levels is not None
        ep.levels.add(severity)
        if _RANK.get(severity, 0) >= _RANK.get(ep.severity, 0):
            ep.severity = sys.intern(severity)
            ep.value = float(rec.get("value", ep.value) or 0.0)
            ep.message = str(rec.get("message", ""))[:300]

    # --- reading ----------------------------------------------------------------------------

    def changed_since(self, version: int) -> list[str]:
        """Battery ids whose row changed after `version` (all tracked ones when it is 0)."""
        return sorted(b for b, bat in self._bats.items() if bat.version > version)

    def battery_ids(self) -> list[str]:
        return sorted(self._bats)

    def __len__(self) -> int:
        return len(self._bats)

    def _row(self, bat: _Battery) -> dict[str, Any]:
        counts = dict.fromkeys(SEVERITIES, 0)
        stale = False
        for (code, _cell), ep in bat.active.items():
            assert ep.levels is not None
            top = max(ep.levels, key=lambda s: _RANK.get(s, 0))
            counts[top] = counts.get(top, 0) + 1
            stale = stale or code == STALE_CODE
        soc = bat.soc
        return {
            "battery_id": bat.battery_id,
            "soc": None if soc is None else soc[1],
            "soc_confidence": None if soc is None else soc[2],
            "soc_uncertainty": None if soc is None else soc[3],
            "equivalent_cycles": None if bat.cycles is None else bat.cycles[1],
            "cell_spread_mv": None if bat.spread is None else bat.spread[1],
            "max_temperature": None if bat.max_t is None else bat.max_t[1],
            "alerts_active": counts,
            "last_seen": None if bat.last_ms < 0 else format_ts(bat.last_ms),
            "stale": stale,
        }

    def fleet_rows(self) -> list[dict[str, Any]]:
        """One row per battery, sorted by battery_id."""
        return [self._row(self._bats[b]) for b in sorted(self._bats)]

    def row(self, battery_id: str) -> dict[str, Any] | None:
        bat = self._bats.get(battery_id)
        return None if bat is None else self._row(bat)

    def battery(self, battery_id: str) -> BatteryView | None:
        bat = self._bats.get(battery_id)
        if bat is None:
            return None
        series: dict[str, tuple[list[int], list[float]]] = {}
        conf: dict[str, list[float | None]] = {}
        unc: dict[str, list[float | None]] = {}
        for ring in bat.rings.values():
            for name in ring.names:
                ts, vals, c, u = ring.series_full(name)
                series[name] = (ts, vals)
                if any(x is not None for x in c):
                    conf[name] = c
                if any(x is not None for x in u):
                    unc[name] = u
        history = [ep.as_dict() for ep in reversed(bat.history)]
        return BatteryView(bat.battery_id, series, history, self._row(bat), conf, unc)

    def alerts(
        self,
        *,
        code: str | None = None,
        severity: str | None = None,
        battery: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """The kept alert records matching the filters, newest first (by ts, then arrival)."""
        picked = [
            (i, a)
            for i, a in enumerate(self._alerts)
            if (not code or a.get("code") == code)
            and (not severity or a.get("severity") == severity)
            and (not battery or a.get("battery_id") == battery)
        ]
        picked.sort(key=lambda p: (str(p[1].get("ts", "")), p[0]), reverse=True)
        return [a for _, a in picked[: max(0, limit)]]

    def alert_codes(self) -> list[str]:
        """The codes seen in the kept feed (for filter choices)."""
        return sorted({str(a.get("code", "")) for a in self._alerts})

    def memory_bytes(self) -> int:
        """An estimate of what the view holds: ring arrays, per-battery objects, episodes and
        the alert feed (dict and values of each kept record)."""
        n = sys.getsizeof(self._bats) + sum(b.nbytes() for b in self._bats.values())
        n += sys.getsizeof(self._alerts)
        for a in self._alerts:
            n += sys.getsizeof(a) + sum(
                sys.getsizeof(v) for v in a.values() if not isinstance(v, bool | int) or v > 256
            )
        return n


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f else None
