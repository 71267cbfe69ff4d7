"""The chunk: the columnar samples of one battery that the engine hands to the models at once.

A chunk is in event-time order, free of duplicates and late records, and carries what a model
needs to be exact across chunk boundaries: the interval before each sample (`dt_ms`) and
whether that interval is a gap that must not be integrated (`gap`). Missing optional values
are NaN; a battery without cell voltages has a `(n, 0)` cell matrix. `group_by` cuts a
block of records into per-key lists (per battery, per partition) in arrival order.

Gaps are judged against each battery's own sampling: an interval is a gap when it is longer
than max(max_gap, gap_factor x the battery's typical interval), the typical interval being the
lower median of the last `INTERVAL_WINDOW` intervals before it and itself (`typical_intervals`,
integer ms, record by record, so it does not depend on chunk boundaries). One hole in a steady
stream never makes itself typical (it is at most one of 16); a battery that really changes its
rate is judged by the new rate after 8 intervals. A 1/min source with seconds of jitter
integrates fully; a 10 min hole in it is still a gap. With gap_factor 0 the absolute max_gap
alone decides (the rule before issue 10).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

INTERVAL_WINDOW = 15  # previous intervals that, with the current one, give the typical interval

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items per key, each list in the items' order, keys in order of first appearance."""
    groups: dict[K, list[T]] = {}
    for item in items:
        k = key(item)
        g = groups.get(k)
        if g is None:
            groups[k] = [item]
        else:
            g.append(item)
    return groups


@dataclass(frozen=True, slots=True)
class Chunk:
    battery_id: str
    ts: IntArray  # epoch milliseconds, strictly increasing
    current: FloatArray  # A, positive = discharge
    voltage: FloatArray  # V pack terminal voltage, NaN where absent
    cells: FloatArray  # (n, n_cells) V, NaN where absent
    temps: FloatArray  # (n, n_temps) degC, NaN where absent
    soc: FloatArray  # % as reported by the BMS, NaN where absent
    soh: FloatArray  # % as reported by the BMS, NaN where absent
    dt_ms: IntArray  # interval since the previous sample of this battery; 0 for the first
    gap: BoolArray  # True where the interval before the sample is not to be integrated

    def __len__(self) -> int:
        return int(self.ts.size)

    def slice(self, start: int, stop: int) -> Chunk:
        """Rows start..stop as a chunk of their own (views, no copy)."""
        return Chunk(
            self.battery_id,
            self.ts[start:stop],
            self.current[start:stop],
            self.voltage[start:stop],
            self.cells[start:stop],
            self.temps[start:stop],
            self.soc[start:stop],
            self.soh[start:stop],
            self.dt_ms[start:stop],
            self.gap[start:stop],
        )

    @property
    def integrable_dt_ms(self) -> IntArray:
        """dt_ms with gaps (and the very first sample) set to 0: the intervals to integrate."""
        return np.where(self.gap, 0, self.dt_ms)


def typical_intervals(history: Sequence[int], dt: IntArray) -> IntArray:
    """The typical interval [ms] for each interval of `dt` (ms, all > 0): the lower median of
    that interval and the up to `INTERVAL_WINDOW` intervals before it, `history` (oldest first,
    the battery's last intervals before `dt`) continued by `dt` itself."""
    w = INTERVAL_WINDOW
    hist = np.asarray(list(history)[-w:], dtype=np.int64)
    vals = np.concatenate([hist, np.asarray(dt, dtype=np.int64)])
    n, h = int(dt.size), int(hist.size)
    out = np.empty(n, dtype=np.int64)
    k0 = 0
    while k0 < n and h + k0 < w:  # a young battery: shorter windows, at most w of them
        win = np.sort(vals[: h + k0 + 1])
        out[k0] = win[(win.size - 1) // 2]
        k0 += 1
    if k0 < n:
        windows = np.lib.stride_tricks.sliding_window_view(vals[h + k0 - w :], w + 1)
        out[k0:] = np.partition(windows, w // 2, axis=1)[:, w // 2]
    return out


def gap_mask(
    dt: IntArray, *, first: bool, max_gap_ms: int, gap_factor: float, history: Sequence[int]
) -> tuple[npt.NDArray[np.bool_], list[int]]:
    """Which intervals of `dt` (a chunk's dt_ms; `first`: its row 0 is the battery's first
    sample, whose 0 is no interval) are gaps, and the battery's interval history after them
    (the last `INTERVAL_WINDOW` intervals, to keep in its state)."""
    gap = dt > max_gap_ms
    iv = dt[1:] if first else dt
    if gap_factor > 0 and iv.size:
        typical = typical_intervals(history, iv)
        limit = np.maximum(max_gap_ms, np.floor(gap_factor * typical.astype(np.float64)))
        g = iv > limit
        if first:
            gap[1:] = g
        else:
            gap = g
    if first and dt.size:
        gap[0] = True
    return gap, next_intervals(history, dt, first=first)


def next_intervals(history: Sequence[int], dt: IntArray, *, first: bool) -> list[int]:
    """The battery's last `INTERVAL_WINDOW` intervals [ms] after a chunk's `dt` (`first`: its
    row 0 is the battery's first sample, no interval)."""
    iv = dt[1:] if first else dt
    hist = [*list(history)[-INTERVAL_WINDOW:], *iv[-INTERVAL_WINDOW:].tolist()]
    return [int(x) for x in hist[-INTERVAL_WINDOW:]]


def build_chunk(
    battery_id: str,
    ts: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    prev_ts: int | None,
    max_gap_ms: int,
    gap_factor: float = 0.0,
    intervals: Sequence[int] = (),
    voltage: npt.ArrayLike | None = None,
    cells: npt.ArrayLike | None = None,
    temps: npt.ArrayLike | None = None,
    soc: npt.ArrayLike | None = None,
    soh: npt.ArrayLike | None = None,
) -> Chunk:
    """A chunk from columns, with `dt_ms` and `gap` derived from `prev_ts` (the battery's
    previous sample, None for its first), `max_gap_ms` and, when `gap_factor` > 0, the
    battery's typical interval (`gap_mask`; `intervals`: its last intervals before this chunk,
    oldest first). Absent columns become NaN."""
    t = np.asarray(ts, dtype=np.int64)
    n = t.size

    def col(x: npt.ArrayLike | None) -> FloatArray:
        return np.full(n, np.nan) if x is None else np.asarray(x, dtype=np.float64).reshape(n)

    def mat(x: npt.ArrayLike | None) -> FloatArray:
        return np.empty((n, 0)) if x is None else np.asarray(x, dtype=np.float64).reshape(n, -1)

    dt = np.empty(n, dtype=np.int64)
    if n:
        dt[0] = 0 if prev_ts is None else t[0] - prev_ts
        dt[1:] = np.diff(t)
    gap, _ = gap_mask(
        dt,
        first=prev_ts is None,
        max_gap_ms=max_gap_ms,
        gap_factor=gap_factor,
        history=intervals,
    )
    return Chunk(
        battery_id,
        t,
        col(current),
        col(voltage),
        mat(cells),
        mat(temps),
        col(soc),
        col(soh),
        dt,
        gap,
    )
