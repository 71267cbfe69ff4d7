"""One debounce/hysteresis step for every alert, compiled: foxBMS' leaky occurrence counter in
event time and in samples (the same rule as `twin_stream.sdk.alerting.debounce`, per sample).

A channel is an int64 array of `CHANNEL` entries: [raise_ms, active, clear_ms, raise_n,
clear_n, tally, event_tally]. Per sample (dt = its integrable interval in ms, 0 after a gap):

* idle: raise condition -> +dt (to raise_ms) and +1 (to raise_samples); raises when both
  are full. Otherwise -dt and -1 (to 0), unless `hold` (paused: neither adds nor leaks);
* raised: the same on the clear condition with clear_ms / clear_samples;
* tally: `weight` is added on every sample whose raise condition holds, from the first such
  sample of an episode until it clears (or leaks back to idle without raising).

Returns NONE, RAISE or CLEAR; the caller emits the event, whose tally is `ch[TALLY]`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from twin_stream.sdk.jit import kernel

CHANNEL = 7
TALLY = 6  # the tally at the last raise or clear
NONE, RAISE, CLEAR = 0, 1, 2


@kernel
def step(
    ch: npt.NDArray[np.int64],
    dt: int,
    raise_cond: bool,
    clear_cond: bool,
    hold: bool,
    weight: int,
    raise_ms: int,
    clear_ms: int,
    raise_samples: int,
    clear_samples: int,
) -> int:
    """Advance one channel by one sample; returns NONE, RAISE or CLEAR."""
    r_n = max(1, raise_samples)
    c_n = max(1, clear_samples)
    if ch[1] == 0 and ch[0] == 0 and ch[3] == 0 and not raise_cond:
        ch[5] = 0  # idle and empty: any finished episode's tally is gone
        return NONE
    if raise_cond:
        ch[5] += weight
    if ch[1] == 0:
        if raise_cond:
            ch[0] = min(ch[0] + dt, raise_ms)
            ch[3] = min(ch[3] + 1, r_n)
            if ch[0] >= raise_ms and ch[3] >= r_n:
                ch[1] = 1
                ch[0] = 0
                ch[2] = 0
                ch[3] = 0
                ch[4] = 0
                ch[6] = ch[5]
                return RAISE
        elif hold:
            pass
        elif ch[0] != 0 or ch[3] != 0:
            ch[0] = max(ch[0] - dt, 0)
            ch[3] = max(ch[3] - 1, 0)
            if ch[0] == 0 and ch[3] == 0:
                ch[5] = 0
        return NONE
    if clear_cond:
        ch[2] = min(ch[2] + dt, clear_ms)
        ch[4] = min(ch[4] + 1, c_n)
        if ch[2] >= clear_ms and ch[4] >= c_n:
            ch[0] = 0
            ch[1] = 0
            ch[2] = 0
            ch[3] = 0
            ch[4] = 0
            ch[6] = ch[5]
            ch[5] = 0
            return CLEAR
        return NONE
    if hold:
        return NONE
    if ch[2] != 0 or ch[4] != 0:
        ch[2] = max(ch[2] - dt, 0)
        ch[4] = max(ch[4] - 1, 0)
    return NONE
