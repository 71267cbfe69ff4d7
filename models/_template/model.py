"""template_model: peak |current| per estimate interval and a debounced over-current alert.

A kernel model in full: parameters become one float row (`param_row`), the state is declared
in model.json, and `_loop` is a plain per-record loop compiled by numba. Copy it with
`twin-stream models new NAME`.
"""

from __future__ import annotations

import numpy as np

from twin_stream import sdk

OVER_CURRENT, PEAK_CURRENT = 0, 1  # output codes: their order in model.json


@sdk.kernel
def _loop(slot, ts, dt_ms, gap, current, P, peak, islot, channel, out, start):  # type: ignore[no-untyped-def]
    n = start
    w = 0
    for i in range(start, ts.size):
        if not sdk.room(out, w, 2):
            return i, w
        s = slot[i]
        limit, raise_ms, interval = P[s, 0], int(P[s, 1]), int(P[s, 2])
        a = abs(current[i])
        k = ts[i] // interval
        if islot[s] >= 0 and k != islot[s]:  # a new interval: report the last one's peak
            w = sdk.estimate(out, w, i, PEAK_CURRENT, peak[s], np.nan)
            peak[s] = 0.0
        islot[s] = k
        peak[s] = max(peak[s], a)
        dt = 0 if gap[i] else dt_ms[i]  # the time of a gap is not time over the limit
        ev = sdk.debounce_step(channel[s], dt, a > limit, a <= limit, False, 0, raise_ms, 0, 1, 1)
        if ev != sdk.NONE:
            w = sdk.alert(out, w, i, OVER_CURRENT, ev == sdk.RAISE, -1, a, limit, -1)
        n = i + 1
    return n, w


@sdk.register_model
class TemplateModel(sdk.KernelModel):
    def param_row(self) -> np.ndarray:
        p = self.params
        return np.array([p["limit_a"], p["raise_s"] * 1000.0, p["estimate_interval_s"] * 1000.0])

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        return _loop(  # type: ignore[no-any-return]
            blk.slot,
            blk.ts,
            blk.dt_ms,
            blk.gap,
            blk.current,
            params,
            state["peak"],
            state["slot"],
            state["channel"],
            out,
            start,
        )
