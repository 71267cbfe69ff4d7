"""The chunk: the columnar samples of one battery that the engine hands to the models at once.

A chunk is in event-time order, free of duplicates and late records, and carries what a model
needs to be exact across chunk boundaries: the interval before each sample (`dt_ms`) and
whether that interval is a gap that must not be integrated (`gap`). Missing optional values
are NaN; a battery without cell voltages has a `(n, 0)` cell matrix. `group_by` cuts a
block of records into per-key lists (per battery, per partition) in arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

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


def build_chunk(
    battery_id: str,
    ts: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    prev_ts: int | None,
    max_gap_ms: int,
    voltage: npt.ArrayLike | None = None,
    cells: npt.ArrayLike | None = None,
    temps: npt.ArrayLike | None = None,
    soc: npt.ArrayLike | None = None,
    soh: npt.ArrayLike | None = None,
) -> Chunk:
    """A chunk from columns, with `dt_ms` and `gap` derived from `prev_ts` (the battery's
    previous sample, None for its first) and `max_gap_ms`. Absent columns become NaN."""
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
    gap = dt > max_gap_ms
    if n and prev_ts is None:
        gap[0] = True
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
