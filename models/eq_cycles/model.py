"""eq_cycles: equivalent full cycles, charge/discharge throughput and terminal energy.

Job
---
Count equivalent full cycles (one full discharge plus one full charge of the effective
capacity, SOH-scaled and on the nominal capacity), the measured charge and discharge
throughput and the terminal energy in and out of a battery, from its current, voltage and the
SOH the BMS reports, and emit them at an event-time cadence.

Algorithm
---------
    N = initial_cycles + sum_k( Q_k ) / (2 * C_nom * SOH_k / 100)

over the intervals k between consecutive samples of a battery (a, b = the currents at the
interval's ends, dt its length), in one compiled loop over the block's records: each record
closes the interval from its battery's previous sample (carried in the state) to itself.

* Throughput of an interval (``integration``):

  - ``trapezoid`` (default): ``(|a| + |b|) / 2 * dt``, the discharge part ``(max(a,0) +
    max(b,0)) / 2 * dt``, the rest charge. A sign change inside an interval of at most
    ``dense_dt_s`` (1.5 s) is integrated on the straight line through zero instead:
    ``(a^2 + b^2) / (2 |a - b|) * dt`` (10 A then -10 A over 1 s is 5 A s, not 10). That line
    is right only when the current really is linear between samples: at sparse sampling a
    sign change is a regen pulse or a step, not a ramp, and the line under-counts (issue 10:
    -3 % at 0.1 Hz, -0.5 % at 0.5 Hz on a regen drive), while the plain trapezoid is unbiased
    (field suite: within 0.5 % at 0.1-10 Hz). 10 A then -10 A over 10 s: 100 A s.
  - ``hold``: the previous sample's value over the interval, ``|a| * dt`` (a logger holding
    the latest frame); ``interval_average``: the later sample's, ``|b| * dt`` (a source whose
    value is the mean current of the interval before it).

  ``current_deadband_a``: currents with ``|I|`` below it count as 0 (before anything else).
* Energy: the same rule applied to V * I, V the pack voltage (else the sum of the battery's
  cells when every one is reported), clamped at 0; on a dense sign change, the exact integral
  of the product of the two straight lines on each side of the zero. An interval without a
  voltage at both ends adds no energy; energy estimates start at the battery's first sample
  with a voltage.
* Gaps (``gap`` with ``dt_ms > 0``: longer than max(``engine.max_gap_s``,
  ``engine.gap_factor`` x the battery's typical interval)) are not integrated; their number
  and total length are kept in the state (``gaps``, ``gap_ms``). The very first sample of a
  battery has no interval.
* SOH: per sample; NaN means "not reported" and carries the last reported value (kept in the
  state; 100 % if none ever came). ``SOH_eff = max(SOH, min_soh_percent)`` (no division by
  zero, and a 0-1 fraction sent by mistake gives at most 100/min_soh times the cycles instead
  of 100x). The SOH of an interval is the mean of its two ends' SOH_eff.
* Efficiency (``efficiency_mode``):

  - ``none`` (default): ``Q_k`` = the interval's throughput, so N equals throughput /
    (2 C_eff) exactly (what the PyBaMM validation bound checks).
  - ``stored_charge``: count charge moved into and out of storage, as in the standard storage
    balance ``dE = eta_c * Q_in - Q_out / eta_d``: the charge part times
    ``charge_efficiency``, the discharge part divided by ``discharge_efficiency``. Over a
    closed cycle stored-in equals stored-out, so both halves count the same. Example: 20 A
    discharge for 99 h on 100 Ah is 1980 / 0.99 / 200 = 10.0 cycles; 20 A charge for 99 h is
    1980 * 0.98 / 200 = 9.702.

Totals are float64 sums carried in the state, added to record by record: the sequence of
additions is the battery's sequence of intervals whatever the blocks are, so any chunking or
interleaving gives bit-identical outputs and state. Each sum is compensated (Neumaier: a second
float gathers the rounding error of every addition, the total is their sum): a plain sum of
356 400 one-second increments drifts by 6e-12 relative (99 h at 1 Hz), the compensated one stays
within an ulp or two of the exact sum, whatever the battery's age. ``throughput_ah`` is
computed as ``throughput_charge_ah + throughput_discharge_ah`` (plus ``unsplit_ah``, throughput
counted before the split existed, normally 0): the split sums to the total up to the rounding of
that one addition (exactly equal as floats when ``unsplit_ah`` is 0). The former implementation
summed integers of femto-units instead; the results agree to float rounding.

Estimates, at the first sample of every ``estimate_interval_s`` slot of event time (aligned to
the epoch), value as of that sample, confidence null: ``equivalent_cycles`` [cycles] (SOH-
scaled, efficiency-weighted), ``equivalent_cycles_nominal`` [cycles] (N0 + throughput / 2
C_nom), ``throughput_ah``, ``throughput_charge_ah``, ``throughput_discharge_ah`` [Ah] and, once
a voltage was seen, ``energy_charge_kwh``, ``energy_discharge_kwh`` [kWh].

Assumes the current finite (the ingest dead-letters NaN/inf, the field is required).

State: version 3, declared in model.json. `migrate` upgrades the dict states of the former
implementation: version 2 (femto-integer totals, whole + femto parts) carries every total;
version 1 (throughput and cycles only) carries those, the split and the energies count from
then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream import sdk
from twin_stream.sdk.contract import ContractError, State

FloatArray = npt.NDArray[np.float64]

# output codes: their order in model.json
(
    EQUIVALENT_CYCLES,
    THROUGHPUT,
    NOMINAL,
    THROUGHPUT_CHARGE,
    THROUGHPUT_DISCHARGE,
    ENERGY_CHARGE,
    ENERGY_DISCHARGE,
) = range(7)
TRAPEZOID, HOLD, INTERVAL_AVERAGE = 0, 1, 2
_MODES = {"trapezoid": TRAPEZOID, "hold": HOLD, "interval_average": INTERVAL_AVERAGE}
AMS_PER_AH = 3.6e6  # ampere-milliseconds per ampere-hour
WMS_PER_KWH = 3.6e9  # watt-milliseconds per kilowatt-hour
FEMTO = 10**15  # the former state's femto parts per unit
# parameter row: interval_ms, min_soh, mode, dense_ms, deadband, w_charge, w_discharge,
# cycles per (A ms x 100 / SOH_eff), 2 C_nom, initial cycles
P_INTERVAL, P_MIN_SOH, P_MODE, P_DENSE, P_DEADBAND, P_WC, P_WD, P_KC, P_TWO_C, P_N0 = range(10)


@sdk.kernel
def _add(total, comp, s, x):  # type: ignore[no-untyped-def]
    """total[s] += x, compensated (Neumaier): comp[s] gathers the rounding error."""
    a = total[s]
    t = a + x
    if abs(a) >= abs(x):
        comp[s] += (a - t) + x
    else:
        comp[s] += (x - t) + a
    total[s] = t


@sdk.kernel
def _loop(  # type: ignore[no-untyped-def]
    slot,
    ts,
    dt_ms,
    gap,
    current,
    voltage,
    cells,
    soh_in,
    n_cells,
    P,
    prev_i,
    prev_v,
    soh,
    charge,
    charge_c,
    discharge,
    discharge_c,
    unsplit,
    e_charge,
    e_charge_c,
    e_discharge,
    e_discharge_c,
    cycles,
    cycles_c,
    seen,
    gaps,
    gap_ms,
    last_slot,
    out,
    start,
):
    w = 0
    for i in range(start, ts.size):
        if not sdk.room(out, w, 7):
            return i, w
        s = slot[i]
        min_soh = P[s, P_MIN_SOH]
        b = current[i]
        if abs(b) < P[s, P_DEADBAND]:  # |I| below it is sensor noise or offset
            b = 0.0
        # SOH at both ends: reported, else the last reported, else 100
        before = soh[s] if not math.isnan(soh[s]) else 100.0
        if np.isfinite(soh_in[i]):
            soh[s] = soh_in[i]
        now = soh[s] if not math.isnan(soh[s]) else 100.0
        soh_int = (max(before, min_soh) + max(now, min_soh)) * 0.5
        # pack voltage: measured, else the sum of the cells (all of them valid)
        v = voltage[i]
        if not np.isfinite(v) and n_cells[s] > 0:
            v = 0.0
            for j in range(n_cells[s]):
                v += cells[i, j]
        v_ok = np.isfinite(v)
        vb = max(v, 0.0) if v_ok else 0.0

        a = prev_i[s]
        dt = dt_ms[i]
        if gap[i]:
            if dt > 0:
                gaps[s] += 1
                gap_ms[s] += dt
        elif not math.isnan(a):
            va_ok = not math.isnan(prev_v[s])
            va = prev_v[s] if va_ok else 0.0
            d = float(dt)
            pa, pb = max(a, 0.0), max(b, 0.0)
            na, nb = max(-a, 0.0), max(-b, 0.0)
            mode = int(P[s, P_MODE])
            if mode == HOLD:
                dis, chg, edis, echg = pa * d, na * d, va * pa * d, va * na * d
            elif mode == INTERVAL_AVERAGE:
                dis, chg, edis, echg = pb * d, nb * d, vb * pb * d, vb * nb * d
            elif a * b < 0.0 and dt <= P[s, P_DENSE]:
                # |I| on the straight line from a to b reaches 0 at the fraction
                # f = |a| / (|a| + |b|): a triangle of |a| over f dt, one of |b| over (1 - f) dt;
                # energy: the exact integral of the product of the two straight lines
                half = 0.5 * d
                aa, ab = abs(a), abs(b)
                f = aa / (aa + ab)
                vc = va + (vb - va) * f
                qa, qb = aa * f * half, ab * (1.0 - f) * half
                ea = aa * f * d * (2.0 * va + vc) / 6.0
                eb = ab * (1.0 - f) * d * (2.0 * vb + vc) / 6.0
                if a > 0.0:
                    dis, chg, edis, echg = qa, qb, ea, eb
                else:
                    dis, chg, edis, echg = qb, qa, eb, ea
            else:
                half = 0.5 * d
                dis = (pa + pb) * half
                chg = (na + nb) * half
                edis = (va * pa + vb * pb) * half
                echg = (va * na + vb * nb) * half
            _add(discharge, discharge_c, s, dis / AMS_PER_AH)
            _add(charge, charge_c, s, chg / AMS_PER_AH)
            if va_ok and v_ok:
                _add(e_discharge, e_discharge_c, s, edis / WMS_PER_KWH)
                _add(e_charge, e_charge_c, s, echg / WMS_PER_KWH)
            wc, wd = P[s, P_WC], P[s, P_WD]
            weighted = dis + chg if wc == 1.0 and wd == 1.0 else wd * dis + wc * chg
            _add(cycles, cycles_c, s, weighted * P[s, P_KC] / soh_int)
        prev_i[s] = b
        prev_v[s] = vb if v_ok else np.nan
        if v_ok:
            seen[s] = True

        k = float(ts[i] // np.int64(P[s, P_INTERVAL]))
        if last_slot[s] != k:  # the first sample of a slot (NaN: of the battery)
            last_slot[s] = k
            chg_ah = charge[s] + charge_c[s]
            dis_ah = discharge[s] + discharge_c[s]
            thr = chg_ah + dis_ah
            if unsplit[s] != 0.0:
                thr = unsplit[s] + thr
            n0 = P[s, P_N0]
            w = sdk.estimate(out, w, i, EQUIVALENT_CYCLES, n0 + (cycles[s] + cycles_c[s]), np.nan)
            w = sdk.estimate(out, w, i, NOMINAL, n0 + thr / P[s, P_TWO_C], np.nan)
            w = sdk.estimate(out, w, i, THROUGHPUT, thr, np.nan)
            w = sdk.estimate(out, w, i, THROUGHPUT_CHARGE, chg_ah, np.nan)
            w = sdk.estimate(out, w, i, THROUGHPUT_DISCHARGE, dis_ah, np.nan)
            if seen[s]:
                w = sdk.estimate(out, w, i, ENERGY_CHARGE, e_charge[s] + e_charge_c[s], np.nan)
                w = sdk.estimate(
                    out, w, i, ENERGY_DISCHARGE, e_discharge[s] + e_discharge_c[s], np.nan
                )
    return ts.size, w


def _total(state: Mapping[str, Any], whole: str, frac: str) -> tuple[int, float]:
    """A former femto-integer total: (femto units, value), the value as it was output."""
    q = int(state.get(whole) or 0) * FEMTO + int(state.get(frac) or 0)
    return q, q / FEMTO


@sdk.register_model
class EqCycles(sdk.KernelModel):
    """Equivalent full cycles, charge/discharge throughput and energy, gap-aware."""

    def __init__(self, params: Mapping[str, Any], spec: sdk.BatterySpec) -> None:
        super().__init__(params, spec)
        if not spec.capacity_ah > 0:
            raise ContractError(f"eq_cycles: battery capacity_ah {spec.capacity_ah!r} must be > 0")

    def param_row(self) -> FloatArray:
        p = self.params
        if p["efficiency_mode"] == "stored_charge":
            w_charge, w_discharge = float(p["charge_efficiency"]), 1.0 / p["discharge_efficiency"]
        else:
            w_charge = w_discharge = 1.0
        two_c = 2.0 * float(self.spec.capacity_ah)
        return np.array(
            [
                max(1, round(p["estimate_interval_s"] * 1000.0)),
                p["min_soh_percent"],
                _MODES[p["integration"]],
                round(float(p["dense_dt_s"]) * 1000.0),
                p["current_deadband_a"],
                w_charge,
                w_discharge,
                100.0 / AMS_PER_AH / two_c,
                two_c,
                p["initial_cycles"],
            ],
            dtype=np.float64,
        )

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        return len(self.manifest.outputs)

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        return _loop(  # type: ignore[no-any-return]
            blk.slot,
            blk.ts,
            blk.dt_ms,
            blk.gap,
            blk.current,
            blk.voltage,
            blk.cells,
            blk.soh,
            blk.n_cells,
            params,
            state["prev_current"],
            state["prev_voltage"],
            state["soh"],
            state["charge_ah"],
            state["charge_ah_comp"],
            state["discharge_ah"],
            state["discharge_ah_comp"],
            state["unsplit_ah"],
            state["energy_charge_kwh"],
            state["energy_charge_kwh_comp"],
            state["energy_discharge_kwh"],
            state["energy_discharge_kwh_comp"],
            state["cycles"],
            state["cycles_comp"],
            state["energy_seen"],
            state["gaps"],
            state["gap_ms"],
            state["last_slot"],
            out,
            start,
        )

    def migrate(self, state: State) -> State:
        """A dict state of the former implementation (version 1 or 2) as version 3."""
        version = state.get("version")
        if version not in (1, 2):
            return super().migrate(state)
        thr_q, thr = _total(state, "throughput_ah", "throughput_fah")
        e_chg = _total(state, "energy_charge_kwh", "energy_charge_fkwh")[1] if version == 2 else 0.0
        e_dis = _total(state, "energy_discharge_kwh", "energy_discharge_fkwh")[1]
        chg_q, chg = _total(state, "charge_ah", "charge_fah")
        dis_q, dis = _total(state, "discharge_ah", "discharge_fah")
        v2 = version == 2
        return {
            "version": self.state_spec.version,
            "prev_current": state.get("prev_current"),
            "prev_voltage": state.get("prev_voltage") if v2 else None,
            "soh": state.get("soh"),
            "charge_ah": chg if v2 else 0.0,
            "discharge_ah": dis if v2 else 0.0,
            # version 1 has no split: all of it; version 2: 0 (its split sums exactly)
            "unsplit_ah": (thr_q - chg_q - dis_q) / FEMTO if v2 else thr,
            "energy_charge_kwh": e_chg,
            "energy_discharge_kwh": e_dis if v2 else 0.0,
            "cycles": _total(state, "cycles", "cycles_fc")[1],
            "energy_seen": bool(state.get("energy_seen", False)) if v2 else False,
            "gaps": int(state.get("gaps") or 0),
            "gap_ms": int(state.get("gap_ms") or 0),
            "last_slot": state.get("last_slot"),
        }
