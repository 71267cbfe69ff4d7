"""Admission of records in event time, per battery, for a whole block at once (compiled).

Decided record by record in arrival order, so that it does not depend on how arrivals are
batched: a record more than the clock skew ahead of the machine's clock is `FUTURE`; one whose
ts equals the battery's frontier (its last admitted sample) is a `DUPLICATE`, one older is
`LATE`; one whose cell or sensor count differs from the count the battery's first such record
locked is `BAD_CELLS`/`BAD_TEMPS`. The rest are admitted, with the interval since the battery's
previous sample (`dt`, 0 for its first sample ever).

`gaps` then marks the intervals not to integrate: longer than max(max_gap, gap_factor x the
battery's typical interval), the typical interval being the lower median of the interval and
the up to `WINDOW` intervals before it (integer ms, record by record: chunking-invariant), and
the first sample of a battery. One hole in a steady stream never makes itself typical; a
battery that really changes its rate is judged by the new rate after 8 intervals.

With allowed lateness > 0 records wait in a per-battery reorder buffer (`Reorder`) first.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import numpy.typing as npt

from twin_stream.sdk.jit import kernel

OK, DUPLICATE, LATE, FUTURE, BAD_CELLS, BAD_TEMPS = range(6)
NO_TS = np.iinfo(np.int64).min  # "no sample yet" in frontier arrays
WINDOW = 15  # previous intervals that, with the current one, give the typical interval

IntArray = npt.NDArray[np.int64]


@kernel
def admit(  # type: ignore[no-untyped-def]
    slot,
    ts,
    rec_cells,
    rec_temps,
    last_ts,
    max_ts,
    lock_cells,
    lock_temps,
    future_limit,
    status,
    dt,
):
    """Decide each record (see the module docstring); updates the per-slot frontier arrays."""
    for i in range(ts.size):
        s = slot[i]
        t = ts[i]
        if t > future_limit:
            status[i] = FUTURE
            continue
        f = last_ts[s]
        if f != NO_TS and t <= f:
            status[i] = DUPLICATE if t == f else LATE
            continue
        nc = rec_cells[i]
        if nc >= 0:
            if lock_cells[s] < 0:
                lock_cells[s] = nc
            elif nc != lock_cells[s]:
                status[i] = BAD_CELLS
                continue
        nt = rec_temps[i]
        if nt >= 0:
            if lock_temps[s] < 0:
                lock_temps[s] = nt
            elif nt != lock_temps[s]:
                status[i] = BAD_TEMPS
                continue
        if max_ts[s] == NO_TS or t > max_ts[s]:
            max_ts[s] = t
        dt[i] = 0 if f == NO_TS else t - f
        last_ts[s] = t
        status[i] = OK


@kernel
def gaps(slot, dt, first, history, count, max_gap_ms, gap_factor, gap):  # type: ignore[no-untyped-def]
    """Mark gaps of admitted records in order; `history[s]` holds the battery's last WINDOW
    intervals, oldest first, `count[s]` how many are valid."""
    win = np.empty(WINDOW + 1, dtype=np.int64)
    for i in range(dt.size):
        s = slot[i]
        if first[i]:
            gap[i] = True
            continue
        d = dt[i]
        c = count[s]
        limit = max_gap_ms
        if gap_factor > 0.0:
            # the lower median of the last c intervals and this one: insertion sort in place
            # (at most 16 values; no allocation per record)
            for k in range(c + 1):
                v = d if k == c else history[s, WINDOW - c + k]
                j = k
                while j > 0 and win[j - 1] > v:
                    win[j] = win[j - 1]
                    j -= 1
                win[j] = v
            typical = win[c // 2]
            limit = max(max_gap_ms, math.floor(gap_factor * typical))
        gap[i] = d > limit
        for k in range(WINDOW - 1):  # shift in the new interval
            history[s, k] = history[s, k + 1]
        history[s, WINDOW - 1] = d
        if c < WINDOW:
            count[s] = c + 1


class Reorder:
    """Per-battery reorder buffer for allowed lateness L > 0: a record is released once its
    ts <= max_ts - L (max_ts the newest ts seen), or early when the buffer is full (counted).
    Works on record indices of the call plus buffered records carried between calls."""

    def __init__(self, lateness_ms: int, max_buffered: int) -> None:
        self.lateness_ms = lateness_ms
        self.max_buffered = max_buffered

    def release(
        self,
        buffered: list[tuple[int, int]],
        arrivals: list[tuple[int, int]],
        frontier: int | None,
        max_ts: int | None,
    ) -> tuple[list[int], list[tuple[int, int]], list[int], list[int], int | None, int | None, int]:
        """`buffered`/`arrivals`: (ts, key) of waiting and newly arriving records (keys are
        the caller's handles). Returns (released keys in ts order, still buffered, duplicate
        keys, late keys, frontier, max_ts, forced releases)."""
        heap = list(buffered)
        heapq.heapify(heap)
        pending = {t for t, _ in heap}
        released: list[int] = []
        dups: list[int] = []
        late: list[int] = []
        forced = 0
        for t, key in arrivals:
            if frontier is not None and t <= frontier:
                (dups if t == frontier else late).append(key)
                continue
            if t in pending:
                dups.append(key)
                continue
            if max_ts is None or t > max_ts:
                max_ts = t
            heapq.heappush(heap, (t, key))
            pending.add(t)
            watermark = max_ts - self.lateness_ms
            while heap and (heap[0][0] <= watermark or len(heap) > self.max_buffered):
                if heap[0][0] > watermark:
                    forced += 1
                t0, k0 = heapq.heappop(heap)
                pending.discard(t0)
                released.append(k0)
                frontier = t0
        return released, sorted(heap), dups, late, frontier, max_ts, forced
