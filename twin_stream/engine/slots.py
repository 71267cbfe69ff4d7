"""What the engine itself keeps per battery slot, as arrays (the models keep theirs in
`twin_stream.sdk.state.StateArrays`): the frontier, the locked channel counts, the recent
intervals, the current sign, counters and the state version."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.engine.admit import NO_TS, WINDOW
from twin_stream.sdk.state import contiguous

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
COUNTERS = ("records", "duplicates", "late", "future", "gaps")
NAMES = (
    "last_ts",
    "max_ts",
    "lock_cells",
    "lock_temps",
    "history",
    "hcount",
    "counters",
    "versions",
)  # fmt: skip  (what a failed block restores; `sign` never changes)


class SlotArrays:
    """One row per battery slot; grows geometrically."""

    def __init__(self, n: int = 16) -> None:
        self.size = 0
        self.last_ts: IntArray = np.empty(0, dtype=np.int64)
        self.max_ts: IntArray = np.empty(0, dtype=np.int64)
        self.lock_cells: IntArray = np.empty(0, dtype=np.int64)
        self.lock_temps: IntArray = np.empty(0, dtype=np.int64)
        self.history: IntArray = np.empty((0, WINDOW), dtype=np.int64)
        self.hcount: IntArray = np.empty(0, dtype=np.int64)
        self.sign: FloatArray = np.empty(0)
        self.counters: IntArray = np.empty((0, len(COUNTERS)), dtype=np.int64)
        self.versions: IntArray = np.empty(0, dtype=np.int64)
        self.grow(n)

    def grow(self, n: int) -> None:
        k = self.size

        def grown(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
            out[:k] = a[:k]
            return out

        self.last_ts = grown(self.last_ts, NO_TS)
        self.max_ts = grown(self.max_ts, NO_TS)
        self.lock_cells = grown(self.lock_cells, -1)
        self.lock_temps = grown(self.lock_temps, -1)
        self.history = grown(self.history, 0)
        self.hcount = grown(self.hcount, 0)
        self.sign = grown(self.sign, 1.0)
        self.counters = grown(self.counters, 0)
        self.versions = grown(self.versions, 0)
        self.size = n

    def reset(self, s: int) -> None:
        self.last_ts[s] = self.max_ts[s] = NO_TS
        self.lock_cells[s] = self.lock_temps[s] = -1
        self.hcount[s] = 0
        self.counters[s] = 0
        self.versions[s] = 0

    def snapshot(self, slots: IntArray) -> dict[str, npt.NDArray[Any]]:
        run = contiguous(slots)
        if run is not None:
            return {name: getattr(self, name)[run].copy() for name in NAMES}
        return {name: getattr(self, name)[slots] for name in NAMES}  # a gather copies

    def restore(self, slots: IntArray, snap: dict[str, npt.NDArray[Any]]) -> None:
        for name in NAMES:
            getattr(self, name)[slots] = snap[name]
