"""The block: columnar samples of many batteries, the unit of work of the engine and kernels.

A block holds records of any number of batteries as columns. Each record belongs to a battery
*slot* (a small integer the engine gives each battery it serves; state arrays and parameter
rows are indexed by it). Within one slot the records are in event-time order, free of
duplicates and late records; records of different batteries may interleave in any way, so a
kernel is a plain loop over the records that reads and writes the state row of each record's
slot. That loop is chunking-invariant by construction: cutting the records into blocks
anywhere, or interleaving the batteries differently, gives the same per-battery results.

Per record: `dt_ms` is the interval since the battery's previous sample (0 for its first
sample ever) and `gap` says that interval must not be integrated (longer than the battery's
gap limit, or the first sample). Missing optional values are NaN. `cells` and `temps` are 2-D,
as wide as the widest battery of the block; a battery's own counts are `n_cells[slot]` and
`n_temps[slot]` (columns beyond are NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Block:
    slot: IntArray  # battery slot of each record
    ts: IntArray  # epoch milliseconds
    dt_ms: IntArray  # interval since the battery's previous sample; 0 for its first
    gap: BoolArray  # the interval before the record is not to be integrated
    current: FloatArray  # A, positive = discharge (sign convention already applied)
    voltage: FloatArray  # V pack terminal voltage, NaN where absent
    cells: FloatArray  # (n, width) V, NaN where absent
    temps: FloatArray  # (n, width) degC, NaN where absent
    soc: FloatArray  # % as reported by the BMS, NaN where absent
    soh: FloatArray  # % as reported by the BMS, NaN where absent
    n_cells: IntArray  # per slot: the battery's cell count (0: none reported)
    n_temps: IntArray  # per slot: the battery's temperature sensor count

    def __len__(self) -> int:
        return int(self.ts.size)

    def take(self, index: npt.ArrayLike) -> Block:
        """The records at `index` (a mask or indices), in that order."""
        i = np.asarray(index)
        return Block(
            self.slot[i],
            self.ts[i],
            self.dt_ms[i],
            self.gap[i],
            self.current[i],
            self.voltage[i],
            self.cells[i],
            self.temps[i],
            self.soc[i],
            self.soh[i],
            self.n_cells,
            self.n_temps,
        )

    def with_cells(self, cells: FloatArray) -> Block:
        """The same block with other cell readings (plausibility masks some out)."""
        return Block(
            self.slot,
            self.ts,
            self.dt_ms,
            self.gap,
            self.current,
            self.voltage,
            cells,
            self.temps,
            self.soc,
            self.soh,
            self.n_cells,
            self.n_temps,
        )


def single_battery_block(
    ts: IntArray,
    dt_ms: IntArray,
    gap: BoolArray,
    current: FloatArray,
    voltage: FloatArray,
    cells: FloatArray,
    temps: FloatArray,
    soc: FloatArray,
    soh: FloatArray,
) -> Block:
    """A block of one battery in slot 0 (what a `Chunk` becomes)."""
    n = int(ts.size)
    n_cells = cells.shape[1] if cells.ndim == 2 else 0
    n_temps = temps.shape[1] if temps.ndim == 2 else 0
    return Block(
        np.zeros(n, dtype=np.int64),
        np.ascontiguousarray(ts, dtype=np.int64),
        np.ascontiguousarray(dt_ms, dtype=np.int64),
        np.ascontiguousarray(gap, dtype=np.bool_),
        np.ascontiguousarray(current, dtype=np.float64),
        np.ascontiguousarray(voltage, dtype=np.float64),
        _matrix(cells, n),
        _matrix(temps, n),
        np.ascontiguousarray(soc, dtype=np.float64),
        np.ascontiguousarray(soh, dtype=np.float64),
        np.array([n_cells], dtype=np.int64),
        np.array([n_temps], dtype=np.int64),
    )


def _matrix(x: FloatArray, n: int) -> FloatArray:
    """(n, width) float64, also for n = 0 (where reshape(n, -1) cannot infer the width)."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 2:
        return a
    return a.reshape(n, -1) if n else a.reshape(0, 0)
