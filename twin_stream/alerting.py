"""One debounce/hysteresis mechanism for every alert (foxBMS' leaky occurrence counter, in
event time), and the estimate cadence helper.

A channel (e.g. "cell_over_voltage:warning:17") is raised when its raise condition has held,
leakily, for `raise_ms` of event time: the counter grows by each violating sample's interval
and shrinks by each good one's, clamped to [0, raise_ms]. An active channel clears the same
way on its clear condition (the caller builds it with hysteresis: value < limit - hysteresis)
after `clear_ms`. Gaps add no time. Noise sitting at a limit therefore raises once and clears
once. Channels all idle and without any violating sample cost one vectorised test per chunk;
only channels in play are walked sample by sample. Counters are integer milliseconds, so the
result does not depend on where chunks are cut.

Conventions: events come out sorted by (row, column), so a caller that lists a quantity's
columns in rising severity gets escalations in that order (and re-sorts clears if it wants
them falling). A gap neither adds nor resets time. A channel whose key is not in `keys` is
left as it is (the engine locks cell and sensor counts per battery, so keys do not change).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

BoolMatrix = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# state of a channel: [raise counter ms, active 0/1, clear counter ms]; idle channels absent.
ChannelState = list[int]


def debounce(
    dt_ms: IntArray,
    raise_cond: BoolMatrix,
    clear_cond: BoolMatrix,
    keys: Sequence[str],
    channels: dict[str, Any],
    raise_ms: int,
    clear_ms: int,
) -> list[tuple[int, int, bool]]:
    """Advance the channels over a chunk; returns events (row, column, raised?) in row order.

    `raise_cond`/`clear_cond` are (n, k) with column j belonging to `keys[j]`; `dt_ms` is the
    integrable interval before each row (0 after a gap). `channels` is updated in place.
    """
    n, k = raise_cond.shape
    if n == 0 or k == 0:
        return []
    in_play = np.asarray(np.any(raise_cond, axis=0), dtype=bool)
    if channels:
        column = {key: j for j, key in enumerate(keys)} if len(channels) > 4 else None
        for key in channels:
            j = column.get(key) if column is not None else _index(keys, key)
            if j is not None:
                in_play[j] = True
    events: list[tuple[int, int, bool]] = []
    dts = dt_ms.tolist()
    for j in np.flatnonzero(in_play).tolist():
        key = keys[j]
        acc, active, clr = channels.get(key, (0, 0, 0))
        rc = raise_cond[:, j].tolist()
        cc = clear_cond[:, j].tolist()
        for i in range(n):
            dt = dts[i]
            if not active:
                if rc[i]:
                    acc = min(acc + dt, raise_ms)
                    if acc >= raise_ms:
                        active, acc, clr = 1, 0, 0
                        events.append((i, j, True))
                elif acc:
                    acc = max(acc - dt, 0)
            elif cc[i]:
                clr = min(clr + dt, clear_ms)
                if clr >= clear_ms:
                    active, acc, clr = 0, 0, 0
                    events.append((i, j, False))
            elif clr:
                clr = max(clr - dt, 0)
        if acc or active or clr:
            channels[key] = [acc, active, clr]
        else:
            channels.pop(key, None)
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _index(keys: Sequence[str], key: str) -> int | None:
    try:
        return list(keys).index(key) if not isinstance(keys, list) else keys.index(key)
    except ValueError:
        return None


def cadence_rows(
    ts: IntArray, last_slot: int | None, interval_ms: int
) -> tuple[IntArray, int | None]:
    """Rows where event time enters a new slot of `interval_ms` (aligned to the epoch).

    The first sample of a battery is a slot entry too. Returns the rows and the slot of the
    last row, which the caller keeps in its state.
    """
    if ts.size == 0:
        return np.empty(0, dtype=np.int64), last_slot
    slots = ts // interval_ms
    prev = np.empty_like(slots)
    prev[0] = -(2**62) if last_slot is None else last_slot
    prev[1:] = slots[:-1]
    return np.flatnonzero(slots != prev).astype(np.int64), int(slots[-1])
