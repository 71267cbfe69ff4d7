"""One debounce/hysteresis mechanism for every alert (foxBMS' leaky occurrence counter, in
event time and in samples), and the estimate cadence helper.

A channel (e.g. "cell_over_voltage:warning:17") has two leaky counters per direction, both
integers: a time counter in milliseconds of event time and a sample counter.

* Idle (not raised): a sample whose raise condition holds adds its interval `dt` to the time
  counter (clamped to `raise_ms`) and 1 to the sample counter (clamped to `raise_samples`);
  any other sample subtracts `dt` and 1 (clamped at 0), unless it is a *hold* sample (below).
  The channel raises at the first sample where BOTH counters are full: the violation has
  held, leakily, for `raise_ms` of event time AND over at least `raise_samples` samples
  (net of good ones). Time alone lets one sample of a sparse source (0.1 Hz: dt = 10 s)
  fill a 5 s counter; samples alone let a 10 Hz burst of 0.3 s raise; both are needed.
* Raised: the same on the clear condition, with `clear_ms` and `clear_samples`; the caller
  builds the clear condition with hysteresis (value < limit - hysteresis).
* Hold (optional mask): a sample where the caller says the condition is paused neither
  adds nor leaks, in either direction (a latched condition's pulse gaps: regen comes and
  goes while the pack stays cold). It applies only where the sample's raise (idle) or clear
  (raised) condition does not hold.
* Tally (optional integer weight per sample): added to the channel's tally on every sample
  whose raise condition holds, from the first such sample of an episode until the channel
  clears (or leaks back to idle without raising); each event carries the tally at that
  sample (an exposure figure, e.g. mA*ms charged below a temperature limit).

Gaps (dt = 0) add and leak no time, but a sample is a sample. NaN values are the caller's
business: a comparison with NaN is false, so such a sample counts as "condition not held"
and leaks. With `raise_samples` = 1 and no hold mask this is the time-only counter it
replaces. Everything is integer, so the result does not depend on where chunks are cut.

Cost: channels all idle and without any violating sample cost one vectorised test per
chunk; only channels in play are walked sample by sample.

Conventions: events come out sorted by (row, column), so a caller that lists a quantity's
columns in rising severity gets escalations in that order (and re-sorts clears if it wants
them falling). A channel whose key is not in `keys` is left as it is (the engine locks cell
and sensor counts per battery, so keys do not change).

Channel state (JSON list of ints): [raise_ms, active 0/1, clear_ms, raise_n, clear_n,
tally]; idle channels without tally are absent. Shorter lists (state written before the
sample counters existed) are read with zeros for the missing entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

BoolMatrix = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
IntMatrix = npt.NDArray[np.int64]

ChannelState = list[int]
_WIDTH = 6


class Event(NamedTuple):
    """A channel raised or cleared at `row` (of the chunk) in `column` (of `keys`)."""

    row: int
    column: int
    raised: bool
    tally: int = 0


def debounce(
    dt_ms: IntArray,
    raise_cond: BoolMatrix,
    clear_cond: BoolMatrix,
    keys: Sequence[str],
    channels: dict[str, Any],
    raise_ms: int,
    clear_ms: int,
    raise_samples: int = 1,
    clear_samples: int = 1,
    *,
    hold: BoolMatrix | None = None,
    tally: IntMatrix | None = None,
) -> list[Event]:
    """Advance the channels over a chunk; returns events in (row, column) order.

    `raise_cond`/`clear_cond` (and `hold`, `tally` if given) are (n, k) with column j
    belonging to `keys[j]`; `dt_ms` is the integrable interval before each row (0 after a
    gap). `channels` is updated in place. `raise_samples`/`clear_samples` >= 1.
    """
    n, k = raise_cond.shape
    if n == 0 or k == 0:
        return []
    r_n = max(1, int(raise_samples))
    c_n = max(1, int(clear_samples))
    in_play = np.asarray(np.any(raise_cond, axis=0), dtype=bool)
    if channels:
        column = {key: j for j, key in enumerate(keys)} if len(channels) > 4 else None
        for key in channels:
            j = column.get(key) if column is not None else _index(keys, key)
            if j is not None:
                in_play[j] = True
    events: list[Event] = []
    dts = dt_ms.tolist()
    for j in np.flatnonzero(in_play).tolist():
        key = keys[j]
        st = list(channels.get(key, ()))
        st += [0] * (_WIDTH - len(st))
        acc, active, clr, acc_n, clr_n, tal = st[:_WIDTH]
        rc = raise_cond[:, j].tolist()
        cc = clear_cond[:, j].tolist()
        hc = hold[:, j].tolist() if hold is not None else None
        wc = tally[:, j].tolist() if tally is not None else None
        for i in range(n):
            dt = dts[i]
            if rc[i] and wc is not None:
                tal += wc[i]
            if not active:
                if rc[i]:
                    acc = min(acc + dt, raise_ms)
                    acc_n = min(acc_n + 1, r_n)
                    if acc >= raise_ms and acc_n >= r_n:
                        active, acc, clr, acc_n, clr_n = 1, 0, 0, 0, 0
                        events.append(Event(i, j, True, tal))
                elif hc is not None and hc[i]:
                    pass
                elif acc or acc_n:
                    acc = max(acc - dt, 0)
                    acc_n = max(acc_n - 1, 0)
                    if not acc and not acc_n:
                        tal = 0  # leaked back to idle: the episode never was
            elif cc[i]:
                clr = min(clr + dt, clear_ms)
                clr_n = min(clr_n + 1, c_n)
                if clr >= clear_ms and clr_n >= c_n:
                    events.append(Event(i, j, False, tal))
                    active, acc, clr, acc_n, clr_n, tal = 0, 0, 0, 0, 0, 0
            elif hc is not None and hc[i]:
                pass
            elif clr or clr_n:
                clr = max(clr - dt, 0)
                clr_n = max(clr_n - 1, 0)
        if not active and not acc and not acc_n:
            tal = 0
        if acc or active or clr or acc_n or clr_n or tal:
            channels[key] = [acc, active, clr, acc_n, clr_n, tal]
        else:
            channels.pop(key, None)
    events.sort(key=lambda e: (e.row, e.column))
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
