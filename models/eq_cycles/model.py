"""eq_cycles: equivalent full cycles from the charge throughput, exact across chunk boundaries.

Job
---
Count equivalent full cycles (one full discharge plus one full charge of the effective
capacity) and the measured charge throughput of a battery, from its current and the SOH the
BMS reports, and emit both at an event-time cadence.

Algorithm
---------
    N = initial_cycles + sum_k( Q_k ) / (2 * C_nom * SOH_k / 100)

over the intervals k between consecutive samples (a, b = the currents at the interval's
ends, dt its length), vectorised over the chunk:

* Throughput of an interval: the exact integral of |I| over the straight line from a to b
  (trapezoid rule). Same sign (or a zero end): ``(|a| + |b|) / 2 * dt``. Opposite signs: the
  line crosses zero inside the interval and ``|I|`` integrates to ``(a^2 + b^2) /
  (2 |a - b|) * dt`` (e.g. 10 A then -10 A over 2 s is 10 A s, not 20 or 0); its discharge
  part is ``max(a,0)^2 + max(b,0)^2`` over the same denominator, the rest is charge.
* The previous sample (its current and last known SOH) is carried in the state, so the first
  interval of a chunk is integrated like any other (the upstream dropped it at every window
  edge).
* Gaps (``chunk.gap`` with ``dt_ms > 0``, i.e. longer than the engine's ``max_gap_seconds``)
  are not integrated: the current during them is unknown. Their number and total length are
  kept in the state (``gaps``, ``gap_ms``). The very first sample of a battery has no interval.
* SOH: per sample from ``chunk.soh``; NaN means "not reported" and carries the last reported
  value (kept in the state; 100 % if none ever came). ``SOH_eff = max(SOH, min_soh_percent)``
  (no division by zero, and a 0-1 fraction sent by mistake gives at most 100/min_soh times
  the cycles instead of 100x). The SOH of an interval is the mean of its two ends' SOH_eff.
* Efficiency (``efficiency_mode``):

  - ``none`` (default): ``Q_k`` = the interval's throughput, so N equals throughput /
    (2 C_eff) exactly (what the PyBaMM validation bound checks).
  - ``stored_charge``: count charge moved into and out of storage, as in the standard storage
    balance ``dE = eta_c * Q_in - Q_out / eta_d``: the charge part times
    ``charge_efficiency`` (only that much is stored), the discharge part divided by
    ``discharge_efficiency`` (the stored charge drawn to deliver it at the terminals). Over a
    closed cycle (back to the same SOC) stored-in equals stored-out, so both halves count the
    same and a cycle is one full swing of the store. The upstream multiplied both halves by
    eta < 1, which models nothing and just under-counts by 1-2 %. Example: 20 A discharge for
    99 h on 100 Ah is 1980 / 0.99 / 200 = 10.0 cycles (upstream: 9.801); 20 A charge for 99 h
    is 1980 * 0.98 / 200 = 9.702. With ``discharge_efficiency`` = 1 and ``charge_efficiency``
    = the round-trip coulombic efficiency, everything is referred to the delivered (rated)
    capacity instead (Plett-style coulomb counting).

Exact chunk invariance: every interval's throughput is rounded to an integer number of
femto-Ah and its cycles to an integer number of femto-cycles (1e-15; bias at most 5e-16 per
interval, i.e. < 2e-8 over a year at 1 Hz), and those integers are summed. Integer sums do
not depend on how the intervals are grouped, so any chunking gives bit-identical outputs and
state. Each total is kept as a whole part plus a femto remainder (both far below 2^53, safe
for any JSON codec, and unbounded over a battery's life). Outputs derive from the integers:
``N = initial_cycles + total_fc / 1e15`` (Python's int / int is correctly rounded).

Estimates, at the first sample of every ``estimate_interval_s`` slot of event time
(`cadence_rows`), value as of that sample: ``equivalent_cycles`` [cycles] and
``throughput_ah`` [Ah] (measured |I| throughput since the battery was first seen, no
efficiency weighting), confidence null.

Assumes ``chunk.current`` finite (the ingest dead-letters NaN/inf, the field is required).

State (JSON): ``{"version": 1, "prev_current": float | null, "soh": float | null,
"throughput_ah": int, "throughput_fah": int, "cycles": int, "cycles_fc": int, "gaps": int,
"gap_ms": int, "last_slot": int | null}`` (``prev_current`` null before the first sample;
``soh`` = last reported SOH or null; ``throughput_ah`` + ``throughput_fah`` / 1e15 = measured
throughput [Ah]; ``cycles`` + ``cycles_fc`` / 1e15 = accumulated cycles without N0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.alerting import cadence_rows
from twin_stream.chunk import Chunk
from twin_stream.contract import ContractError, Model, State, register_model
from twin_stream.outputs import Estimate, Output
from twin_stream.spec import BatterySpec

FloatArray = npt.NDArray[np.float64]

STATE_VERSION = 1
FEMTO = 10**15  # femto-cycles per cycle, femto-Ah per Ah
_FAH_PER_AMS = 1e15 / 3.6e6  # femto-Ah per ampere-millisecond
_SAFE_INT64 = 2.0**62  # above this a chunk's sum is done in Python ints


def _quantise(x: FloatArray) -> npt.NDArray[Any]:
    """Non-negative float quanta rounded to integers: int64, or Python ints if huge."""
    q = np.rint(x)
    if q.size == 0 or float(q.sum()) < _SAFE_INT64:
        return q.astype(np.int64)
    return np.array([int(v) for v in q.tolist()], dtype=object)


@register_model("eq_cycles")
class EqCycles(Model):
    """Equivalent full cycles and charge throughput, gap-aware and chunking-exact."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        if not spec.capacity_ah > 0:
            raise ContractError(f"eq_cycles: battery capacity_ah {spec.capacity_ah!r} must be > 0")
        self._interval_ms = max(1, round(p["estimate_interval_s"] * 1000.0))
        self._n0 = float(p["initial_cycles"])
        self._min_soh = float(p["min_soh_percent"])
        if p["efficiency_mode"] == "stored_charge":
            self._w_charge = float(p["charge_efficiency"])
            self._w_discharge = 1.0 / float(p["discharge_efficiency"])
        else:
            self._w_charge = self._w_discharge = 1.0
        # femto-cycles per (A ms x 100 / SOH_eff[%]):  A ms / 3.6e6 / (2 C) * 1e15
        self._fc_per_ams = 1e15 / 3.6e6 / (2.0 * float(spec.capacity_ah)) * 100.0

    def initial_state(self) -> State:
        return {
            "version": STATE_VERSION,
            "prev_current": None,
            "soh": None,
            "throughput_ah": 0,
            "throughput_fah": 0,
            "cycles": 0,
            "cycles_fc": 0,
            "gaps": 0,
            "gap_ms": 0,
            "last_slot": None,
        }

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        if state.get("version") != STATE_VERSION:
            raise ContractError(
                f"eq_cycles: state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        n = len(chunk)
        if n == 0:
            return [], dict(state)
        prev_current: float | None = state["prev_current"]
        carried_soh: float | None = state["soh"]
        cur = chunk.current
        dt = chunk.dt_ms

        # SOH per sample: reported value, else the last one reported (state), else 100
        soh_in = chunk.soh
        reported = np.isfinite(soh_in)
        soh_before = 100.0 if carried_soh is None else float(carried_soh)
        if reported.any():
            last = np.maximum.accumulate(np.where(reported, np.arange(n), -1))
            soh = np.where(last >= 0, soh_in[np.maximum(last, 0)], soh_before)
            new_soh: float | None = float(soh[-1])
        else:
            soh = np.full(n, soh_before)
            new_soh = carried_soh
        eff = np.maximum(soh, self._min_soh)
        eff_prev = np.empty(n)
        eff_prev[0] = max(soh_before, self._min_soh)
        eff_prev[1:] = eff[:-1]

        # intervals: (previous sample, this sample); not integrated over gaps or before the first
        a = np.empty(n)
        a[0] = 0.0 if prev_current is None else prev_current
        a[1:] = cur[:-1]
        b = cur
        use = ~chunk.gap
        if prev_current is None:
            use[0] = False
        dtf = np.where(use, dt, 0).astype(np.float64)
        pa, pb = np.maximum(a, 0.0), np.maximum(b, 0.0)
        na, nb = np.maximum(-a, 0.0), np.maximum(-b, 0.0)
        cross = (a * b) < 0.0
        if cross.any():
            den = np.where(cross, 2.0 * np.abs(a - b), 1.0)
            dis = np.where(cross, (pa * pa + pb * pb) / den, (pa + pb) * 0.5) * dtf
            chg = np.where(cross, (na * na + nb * nb) / den, (na + nb) * 0.5) * dtf
        else:
            dis = (pa + pb) * 0.5 * dtf
            chg = (na + nb) * 0.5 * dtf
        ams = dis + chg  # |I| integral of each interval [A ms]
        if self._w_charge == 1.0 and self._w_discharge == 1.0:
            weighted = ams
        else:
            weighted = self._w_discharge * dis + self._w_charge * chg
        soh_int = (eff_prev + eff) * 0.5
        fah = _quantise(ams * _FAH_PER_AMS)
        fc = _quantise(weighted * self._fc_per_ams / soh_int)

        gap_rows = chunk.gap & (dt > 0)
        n_gaps = int(np.count_nonzero(gap_rows))
        gap_ms = int(dt[gap_rows].sum()) if n_gaps else 0

        base_fah = int(state["throughput_ah"]) * FEMTO + int(state["throughput_fah"])
        base_fc = int(state["cycles"]) * FEMTO + int(state["cycles_fc"])
        outputs: list[Output] = []
        rows, new_slot = cadence_rows(chunk.ts, state["last_slot"], self._interval_ms)
        if rows.size:
            cum_fah = np.cumsum(fah)
            cum_fc = np.cumsum(fc)
            name = self.name
            ts = chunk.ts
            for r in rows.tolist():
                t = int(ts[r])
                cycles = self._n0 + (base_fc + int(cum_fc[r])) / FEMTO
                thr = (base_fah + int(cum_fah[r])) / FEMTO
                outputs.append(Estimate(t, name, "equivalent_cycles", cycles, "cycles", None))
                outputs.append(Estimate(t, name, "throughput_ah", thr, "Ah", None))

        cyc_whole, cyc_frac = divmod(base_fc + int(fc.sum()), FEMTO)
        ah_whole, ah_frac = divmod(base_fah + int(fah.sum()), FEMTO)
        new_state: State = {
            "version": STATE_VERSION,
            "prev_current": float(cur[-1]),
            "soh": new_soh,
            "throughput_ah": int(ah_whole),
            "throughput_fah": int(ah_frac),
            "cycles": int(cyc_whole),
            "cycles_fc": int(cyc_frac),
            "gaps": int(state["gaps"]) + n_gaps,
            "gap_ms": int(state["gap_ms"]) + gap_ms,
            "last_slot": new_slot,
        }
        return outputs, new_state
