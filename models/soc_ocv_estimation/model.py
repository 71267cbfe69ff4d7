"""soc_ocv_estimation: pack SOC (min, average, max) from the open-circuit voltage at rest, its
uncertainty, the available energy to the first cell's cut-off, the BMS SOC reconciliation and
the current-sensor offset learned at long rests.

Job
---
When a battery has rested long enough for its voltage to approach the open-circuit voltage,
read its cells' SOC on the chemistry's OCV curve (on the branch its last current direction
left it on), with a 1-sigma uncertainty, and derive the energy it can still deliver. Compare
the BMS's reported SOC with it, and learn the current sensor's zero at long rests.

Algorithm (one compiled loop over the records of a block, state per battery slot)
---------
* Voltages, per sample: the finite cell voltages (NaN = invalid or implausible, masked by the
  engine's plausibility layer); a battery without cell voltages: the pack voltage divided by
  the cells in series (one column). Each is I*R compensated: v + I x R(T), R = the
  chemistry's ``relaxation.resistance_ohm_ah`` / C_nom (a parasitic load's drop is removed).
* Rest: ``|I| <= rest_c_rate x C_nom`` (C-rate, not amperes: 0.5-2 A on a 280 Ah pack is
  C/560-C/140 and rests). A rest period is a run of resting samples; a sample under load, a
  missing current or a data gap (``gap``) ends it.
* Settle test on a regression slope: the rest is cut into windows of ``settle_window_s``
  event time from its first sample (a window closes at the first sample at or after its
  start + the window, which belongs to it; the next starts there). Per column the window
  keeps integer running sums (n, sum t, t^2, v, t v, v^2; t in ms from the window start, v in
  integer microvolts), updated per record: exact, so any chunking gives identical results.
  At a close, a least-squares line per column gives the voltage at the close, its standard
  error and the slope. Settled: |mean slope over the columns| < ``settle_dvdt_mv_per_min``.
* Temperature-aware relaxation: tau(T) = tau x A(T), R(T) = R x A(T), with A(T) =
  exp(k (1/T - 1/T_ref)) from the chemistry's ``relaxation`` data (T: mean of the valid
  temperature sensors, T_ref if none). The minimum rest is ``min_rest_s`` x A(T): 10 min at
  25 degC, ~31 min at -5 degC.
* A close qualifies when its rest time >= the minimum rest, it is settled and it has a
  voltage; estimates come at qualifying closes, at most one per ``estimate_interval_s`` slot.
* OCV per column = v_close + ``relaxation_extrapolation`` x tau(T) x slope (one-exponential
  extrapolation of the remaining relaxation, Pei et al. 2014).
* Hysteresis branch: the last current direction outside the rest band (charge +1,
  discharge -1) and the throughput since it began are kept in the state; the branch weight
  is h = d + (h0 - d) exp(-throughput / approach_soc_pct) (Plett's one-state model; h0 = h at
  the reversal). SOC = inverse of OCV(soc) + |h| x offset_d(soc) (chemistry
  ``ocv_hysteresis``: charge and discharge branches as offsets from the table).
* Uncertainty (1 sigma, % SOC): the voltage sigma is the root sum of squares of the fit's
  standard error (noise), ``voltage_accuracy_mv``, quantisation ``voltage_resolution_mv`` /
  sqrt(12), the relaxation residual tau(T) x sqrt((slope / 2)^2 + sigma_slope^2), the
  hysteresis half-width x (``hysteresis_residual`` + (1 - |h|) / 2) and 25 % of the I*R
  compensation. The SOC uncertainty is half the SOC interval that the branch curve maps
  [v - sigma, v + sigma] onto (the whole interval, not the slope at the estimate).
  Confidence = 1 / (1 + (sigma / ``confidence_ref_pct``)^2).
* Outputs at an emitting close: ``soc_ocv`` from the average of the columns' OCVs,
  ``soc_min`` / ``soc_max`` from the lowest / highest cell (foxBMS: min, average, max from
  min, average, max cell voltage), ``available_energy`` = C_nom x SOH x sum over cells of
  the integral of OCV from (SOC_c - SOC_min) to SOC_c (the charge the string delivers until
  its first cell reaches cut-off), scaled to the cells in series when some are masked.
* ``bms_soc_error`` = reported ``soc`` - ``soc_ocv`` at an emitting close where the BMS
  reports one; alert ``bms_soc_deviation`` (warning) through the debounce step over those
  comparisons: raised after ``bms_deviation_samples`` comparisons (net, leaky) with |error| >
  ``bms_deviation_pct`` and > 2 sigma, cleared after as many below bms_deviation_pct - 1.
* ``current_offset_a``: the mean measured current of a rest period once it has lasted
  ``offset_min_rest_s``, at the emitting closes (integer mA sums). The model only reports
  it (a real parasitic load reads as an offset: the twin cannot tell them apart).

Parameters, the OCV table (soc, voltage, cumulative energy) and the hysteresis branch knots
(soc, table OCV, charge and discharge offsets) are packed into one float row per instance
(`MAX_KNOTS` knots each). State (model.json): the rest and its window (start, integer sums
per cell, or one column for the pack voltage), the cadence slot, the last SOH, the hysteresis
direction / h0 / throughput (mA ms), the rest's current sums and the alert's debounce
channel. `migrate` takes the dict state of 2.0.0 (and 1.x, which starts afresh as before).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream import sdk
from twin_stream.battery.chemistry import ChemistryError, Relaxation, builtin_chemistries
from twin_stream.sdk.emit import AUX, CODE, CONF, ROW, VALUE
from twin_stream.sdk.outputs import Alert, Output

FloatArray = npt.NDArray[np.float64]

MIN_FIT_SAMPLES = 3
MA_MS_PER_AH = 3_600_000_000.0
MAX_KNOTS = 256  # OCV table points and hysteresis branch knots the parameter row holds
OUTPUTS_PER_RECORD = 7

# output codes: their order in model.json
SOC_OCV, AVAILABLE_ENERGY, SOC_MIN, SOC_MAX, BMS_SOC_ERROR, CURRENT_OFFSET, BMS_DEVIATION = range(7)

# the parameter row: scalars, then the table and the branch knots
(
    CAP,
    REST_A,
    INTERVAL_MS,
    MIN_REST_MS,
    WINDOW_MS,
    DVDT_MAX,
    ACC_V,
    QUANT_V,
    HYST_RES,
    EXTRAP,
    CONF_REF,
    BMS_THR,
    BMS_N,
    OFFSET_MIN_MS,
    I_QUANT,
    CELLS_IN_SERIES,
    TAU_S,
    ACT_K,
    T_REF_C,
    R_CELL,
    HALF_WIDTH,
    APPROACH,
    HAS_HYST,
    N_TAB,
    N_BR,
) = range(25)
HEAD = 25
TAB_S = HEAD
TAB_V = TAB_S + MAX_KNOTS
TAB_CUM = TAB_V + MAX_KNOTS
BR_S = TAB_CUM + MAX_KNOTS
BR_V = BR_S + MAX_KNOTS
BR_OC = BR_V + MAX_KNOTS
BR_OD = BR_OC + MAX_KNOTS
ROW_WIDTH = BR_OD + MAX_KNOTS


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


# -- compiled helpers ---------------------------------------------------------------------------


@sdk.kernel
def _factor(t, act_k, t_ref):  # type: ignore[no-untyped-def]
    """Arrhenius factor at temperature t [degC] (NaN: the reference, factor 1)."""
    if not np.isfinite(t):
        t = t_ref
    return np.exp(act_k * (1.0 / (t + 273.15) - 1.0 / (t_ref + 273.15)))


@sdk.kernel
def _h(direction, h0, q_run, cap, approach):  # type: ignore[no-untyped-def]
    """Hysteresis weight after `q_run` mA ms since the reversal to `direction`."""
    if direction == 0:
        return h0
    dsoc = q_run / MA_MS_PER_AH / cap * 100.0 if cap > 0 else 0.0
    return direction + (h0 - direction) * np.exp(-dsoc / approach)


@sdk.kernel
def _soc_sigma(v, sig, vk, sk):  # type: ignore[no-untyped-def]
    """SOC at v on the curve (voltage knots vk, soc knots sk) and half the SOC interval that
    [v - sig, v + sig] maps onto."""
    lo = np.interp(v - sig, vk, sk)
    mid = np.interp(v, vk, sk)
    hi = np.interp(v + sig, vk, sk)
    return mid, (hi - lo) / 2.0


@sdk.kernel
def _cumulative(x, s, v, cum):  # type: ignore[no-untyped-def]
    """Integral of the table's OCV from its first knot to soc x (trapezoids, exact)."""
    n = s.size
    x = min(max(x, s[0]), s[n - 1])
    seg = min(max(np.searchsorted(s, x, side="right") - 1, 0), n - 2)
    vx = np.interp(x, s, v)
    return cum[seg] + (x - s[seg]) * (v[seg] + vx) / 2.0


@sdk.kernel
def _string_wh_per_ah(soc_c, m, shift, sc, s, v, cum):  # type: ignore[no-untyped-def]
    """Wh per Ah of capacity the m cells deliver until the lowest reaches 0 % (cut-off), their
    SOCs shifted by `shift` (sc: scratch)."""
    lo = np.inf
    for c in range(m):
        sc[c] = min(max(soc_c[c] + shift, 0.0), 100.0)
        lo = min(lo, sc[c])
    total = 0.0
    for c in range(m):
        total += (_cumulative(sc[c], s, v, cum) - _cumulative(sc[c] - lo, s, v, cum)) / 100.0
    return total


@sdk.kernel
def _window_add(S, k, t, v_uv, vok):  # type: ignore[no-untyped-def]
    for c in range(k):
        if vok[c]:
            v = v_uv[c]
            S[c, 0] += 1
            S[c, 1] += t
            S[c, 2] += t * t
            S[c, 3] += v
            S[c, 4] += t * v
            S[c, 5] += v * v


@sdk.kernel
def _fit(S, k, t_end, vv, sf, sl):  # type: ignore[no-untyped-def]
    """Per column of the window sums S: the fitted voltage at t_end [uV], its standard error
    [uV] and the slope's standard error [uV/ms]; the good columns (>= 3 samples and a time
    spread) compacted into vv / sf / sl in column order. Returns (good columns, mean slope
    [uV/ms])."""
    dof = 0.0
    ssr_sum = 0.0
    m = 0
    slope_sum = 0.0
    for c in range(k):
        n = float(S[c, 0])
        if n < MIN_FIT_SAMPLES:
            continue
        st, stt, sv, stv, svv = (
            float(S[c, 1]),
            float(S[c, 2]),
            float(S[c, 3]),
            float(S[c, 4]),
            float(S[c, 5]),
        )
        sxx = stt - st * st / n
        if not sxx > 0:
            continue
        sxy = stv - st * sv / n
        syy = svv - sv * sv / n
        slope = sxy / sxx
        tbar = st / n
        vv[m] = sv / n + slope * (t_end - tbar)
        # residual variance pooled over the columns (one ADC, one noise level): a window of
        # a few samples still gives a usable noise estimate
        ssr_sum += max(syy - slope * sxy, 0.0)
        dof += n - 2.0
        sf[m] = 1.0 / n + (t_end - tbar) ** 2 / sxx  # scaled by s2 below
        sl[m] = sxx
        slope_sum += slope
        m += 1
    s2 = ssr_sum / dof if dof > 0 else 0.0
    for j in range(m):
        sf[j] = np.sqrt(s2 * sf[j])
        sl[j] = np.sqrt(s2 / sl[j])
    return m, (slope_sum / m if m > 0 else 0.0)


@sdk.kernel
def _curve(P, s, direction, weight, vk_buf):  # type: ignore[no-untyped-def]
    """(voltage knots, soc knots) of the branch curve a close reads on."""
    if P[s, HAS_HYST] == 0.0 or direction == 0 or weight == 0.0:
        nt = int(P[s, N_TAB])
        return P[s, TAB_V : TAB_V + nt], P[s, TAB_S : TAB_S + nt]
    nb = int(P[s, N_BR])
    off = BR_OC if direction > 0 else BR_OD
    for j in range(nb):
        vk_buf[j] = P[s, BR_V + j] + weight * P[s, off + j]
        if j > 0 and not vk_buf[j] > vk_buf[j - 1]:
            raise ChemistryError("ocv_hysteresis makes a branch non-monotonic")
    return vk_buf[:nb], P[s, BR_S : BR_S + nb]


# -- the loop -----------------------------------------------------------------------------------


@sdk.kernel
def _loop(  # type: ignore[no-untyped-def]
    slot,
    ts,
    dt_ms,
    gap,
    current,
    voltage,
    cells,
    temps,
    soc,
    soh,
    n_cells,
    n_temps,
    P,
    in_rest,
    rest_start,
    win_start,
    win_cols,
    win_sums,
    win_pack,
    last_slot,
    soh_st,
    hdir,
    h0,
    q_run,
    rest_i,
    bms_ch,
    out,
    start,
):
    width = max(cells.shape[1], 1)
    v_uv = np.zeros(width, dtype=np.int64)
    vok = np.zeros(width, dtype=np.bool_)
    vv = np.empty(width)
    sf = np.empty(width)
    sl = np.empty(width)
    socc = np.empty(width)
    sc = np.empty(width)
    vk_buf = np.empty(MAX_KNOTS)
    w = 0
    for i in range(start, ts.size):
        if not sdk.room(out, w, OUTPUTS_PER_RECORD):
            return i, w
        s = slot[i]
        cap = P[s, CAP]
        if np.isfinite(soh[i]):
            soh_st[s] = soh[i]
        cur = current[i]
        fin = np.isfinite(cur)
        resting = fin and abs(cur) <= P[s, REST_A]
        i_ma = np.int64(np.rint(cur * 1000.0)) if fin else np.int64(0)

        # hysteresis direction: charge (+1) / discharge (-1) outside the rest band
        if fin and not resting:
            d = 1 if cur < 0 else -1
            if d != hdir[s]:
                h0[s] = _h(hdir[s], h0[s], q_run[s], cap, P[s, APPROACH])
                hdir[s] = d
                q_run[s] = 0
            if not gap[i]:
                q_run[s] += abs(i_ma) * dt_ms[i]
        if not resting:
            in_rest[s] = False
            rest_i[s, 0] = 0
            rest_i[s, 1] = 0
            rest_i[s, 2] = 0
            continue

        # a rest: a new one after load, a gap or the battery's first sample
        new = gap[i] or not in_rest[s]
        if new:
            in_rest[s] = True
            rest_start[s] = ts[i]
            rest_i[s, 0] = 0
            rest_i[s, 1] = 0
            rest_i[s, 2] = 0
        rest_i[s, 0] += i_ma
        rest_i[s, 1] += i_ma * i_ma
        rest_i[s, 2] += 1

        # temperature factor (mean of the valid sensors)
        cnt = 0
        tsum = 0.0
        for c in range(min(n_temps[s], temps.shape[1])):
            x = temps[i, c]
            if np.isfinite(x):
                tsum += x
                cnt += 1
        fac = _factor(tsum / cnt if cnt > 0 else np.nan, P[s, ACT_K], P[s, T_REF_C])
        r_row = P[s, R_CELL] * fac

        # voltage columns, I*R compensated, in integer microvolts
        nc = n_cells[s]
        k = nc if nc > 0 else 1
        cis = P[s, CELLS_IN_SERIES]
        ir = cur * r_row
        for c in range(k):
            if nc > 0:
                vc = cells[i, c]
            elif cis > 0:
                vc = voltage[i] / cis
            else:
                vc = np.nan
            vc = vc + ir
            vok[c] = np.isfinite(vc)
            v_uv[c] = np.int64(np.rint(vc * 1e6)) if vok[c] else np.int64(0)
        S = win_sums[s] if nc > 0 else win_pack[s]
        if new or win_cols[s] != k:
            win_start[s] = ts[i]
            win_cols[s] = k
            S[:k, :] = 0
        ws = win_start[s]
        _window_add(S, k, ts[i] - ws, v_uv, vok)
        window_ms = np.int64(P[s, WINDOW_MS])
        if ts[i] < ws + window_ms:
            continue

        # the window closes here: does it qualify?
        t_end = ts[i] - ws
        rest_ms = ts[i] - rest_start[s]
        m = 0
        mean_slope = 0.0
        if rest_ms >= P[s, MIN_REST_MS] * fac:
            m, mean_slope = _fit(S, k, float(t_end), vv, sf, sl)
        win_start[s] = ts[i]
        S[:k, :] = 0
        if m == 0 or abs(mean_slope) * 60.0 >= P[s, DVDT_MAX]:
            continue
        cad = ts[i] // np.int64(P[s, INTERVAL_MS])
        if cad == last_slot[s]:
            continue
        last_slot[s] = cad

        # estimates at this close
        tau_s = P[s, TAU_S] * fac
        # one-exponential extrapolation of the remaining relaxation, with the mean slope (the
        # cells relax together; one cell's slope over a few samples is mostly noise)
        sl2 = 0.0
        for j in range(m):
            vv[j] = (vv[j] + P[s, EXTRAP] * tau_s * 1000.0 * mean_slope) / 1e6
            sf[j] = sf[j] / 1e6
            sl2 += sl[j] ** 2
        slope_v = mean_slope / 1000.0  # V/s
        sig_slope = np.sqrt(sl2) / m / 1000.0
        h = _h(hdir[s], h0[s], q_run[s], cap, P[s, APPROACH])
        weight = min(1.0, abs(h))
        direction = 1 if h > 0 else -1 if h < 0 else 0
        vk, sk = _curve(P, s, direction, weight, vk_buf)

        # voltage sigma common to every column (not averaged by the fit)
        relax = tau_s * np.hypot(0.5 * slope_v, sig_slope)
        hyst = P[s, HALF_WIDTH] * (P[s, HYST_RES] + 0.5 * (1.0 - weight))
        i_row = cur
        irs = 0.25 * abs(i_row) * r_row
        common = np.sqrt(P[s, ACC_V] ** 2 + P[s, QUANT_V] ** 2 + relax**2 + hyst**2 + irs**2)
        conf_ref = P[s, CONF_REF]

        v_sum = 0.0
        f2 = 0.0
        i_min = 0
        i_max = 0
        for j in range(m):
            v_sum += vv[j]
            f2 += sf[j] ** 2
            if vv[j] < vv[i_min]:
                i_min = j
            if vv[j] > vv[i_max]:
                i_max = j
        v_avg = v_sum / m
        sig_avg = np.sqrt(f2) / m
        soc_avg, u_avg = _soc_sigma(v_avg, np.hypot(common, sig_avg), vk, sk)
        # the lowest / highest of m noisy fits is biased by ~sqrt(2 ln m) of their noise
        ext = np.sqrt(1.0 + 2.0 * np.log(m))
        soc_min, u_min = _soc_sigma(vv[i_min], np.hypot(common, ext * sf[i_min]), vk, sk)
        soc_max, u_max = _soc_sigma(vv[i_max], np.hypot(common, ext * sf[i_max]), vk, sk)
        c_avg = 1.0 / (1.0 + (u_avg / conf_ref) ** 2)
        c_min = 1.0 / (1.0 + (u_min / conf_ref) ** 2)
        c_max = 1.0 / (1.0 + (u_max / conf_ref) ** 2)
        w = sdk.emit(out, w, i, SOC_OCV, sdk.ESTIMATE, -1, soc_avg, u_avg, c_avg, -1)
        w = sdk.emit(out, w, i, SOC_MIN, sdk.ESTIMATE, -1, soc_min, u_min, c_min, -1)
        w = sdk.emit(out, w, i, SOC_MAX, sdk.ESTIMATE, -1, soc_max, u_max, c_max, -1)

        # available energy: every cell discharges until the lowest reaches cut-off
        soh_now = soh_st[s] if np.isfinite(soh_st[s]) else 100.0
        cap_ah = cap * soh_now / 100.0
        for j in range(m):
            socc[j] = np.interp(vv[j], vk, sk)
        n_series = cis if cis > 0 else float(nc)
        scale = n_series / m if n_series != 0 else 0.0
        e_cap = cap_ah * scale / 1000.0
        nt = int(P[s, N_TAB])
        ts_, tv_, tc_ = (
            P[s, TAB_S : TAB_S + nt],
            P[s, TAB_V : TAB_V + nt],
            P[s, TAB_CUM : TAB_CUM + nt],
        )
        e_mid = e_cap * _string_wh_per_ah(socc, m, 0.0, sc, ts_, tv_, tc_)
        e_hi = _string_wh_per_ah(socc, m, u_min, sc, ts_, tv_, tc_)
        e_lo = _string_wh_per_ah(socc, m, -u_min, sc, ts_, tv_, tc_)
        u_e = e_cap * abs(e_hi - e_lo) / 2.0
        w = sdk.emit(out, w, i, AVAILABLE_ENERGY, sdk.ESTIMATE, -1, e_mid, u_e, c_min, -1)

        # the current offset: the mean current of a long rest
        nn = rest_i[s, 2]
        if rest_ms >= P[s, OFFSET_MIN_MS] and nn >= 2:
            r0 = float(rest_i[s, 0])
            var = max(rest_i[s, 1] - r0 * r0 / nn, 0.0) / (nn - 1) / 1e6
            u_i = np.sqrt(var / nn + P[s, I_QUANT] ** 2)
            w = sdk.emit(
                out, w, i, CURRENT_OFFSET, sdk.ESTIMATE, -1, r0 / nn / 1000.0, u_i, np.nan, -1
            )

        # the BMS's SOC against the twin's
        bms = soc[i]
        if np.isfinite(bms):
            err = bms - soc_avg
            w = sdk.emit(out, w, i, BMS_SOC_ERROR, sdk.ESTIMATE, -1, err, u_avg, c_avg, -1)
            thr = P[s, BMS_THR]
            n_db = int(P[s, BMS_N])
            ev = sdk.debounce_step(
                bms_ch[s],
                0,
                abs(err) > thr and abs(err) > 2.0 * u_avg,
                abs(err) < max(thr - 1.0, 0.0),
                False,
                0,
                0,
                0,
                n_db,
                n_db,
            )
            if ev != sdk.NONE:
                # CONF carries the BMS's SOC for the message (see `outputs`)
                w = sdk.emit(
                    out, w, i, BMS_DEVIATION, 1 if ev == sdk.RAISE else 0, -1, err, thr, bms, 1
                )
    return ts.size, w


@sdk.register_model
class SocOcvEstimation(sdk.KernelModel):
    """Pack SOC (min/avg/max) from OCV at settled rest with 1-sigma uncertainty, available
    energy to the first cell's cut-off, BMS SOC error and current-sensor offset."""

    def __init__(self, params: Mapping[str, Any], spec: sdk.BatterySpec) -> None:
        super().__init__(params, spec)
        self._row = self._build_row()

    def _build_row(self) -> FloatArray:
        p, spec = self.params, self.spec
        cap = float(spec.capacity_ah)
        chem = spec.chemistry
        # settings may rebuild the chemistry (an OCV table override) without these data:
        # take them from the built-in chemistry of that name
        base = builtin_chemistries().get(chem.name.upper())
        hyst = chem.hysteresis or (base.hysteresis if base else None)
        relax: Relaxation = chem.relaxation or (
            base.relaxation if base and base.relaxation else Relaxation()
        )
        row = np.zeros(ROW_WIDTH)
        row[CAP] = cap
        row[REST_A] = float(p["rest_c_rate"]) * cap
        row[INTERVAL_MS] = max(1, _ms(p["estimate_interval_s"]))
        row[MIN_REST_MS] = _ms(p["min_rest_s"])
        row[WINDOW_MS] = max(1, _ms(p["settle_window_s"]))
        row[DVDT_MAX] = float(p["settle_dvdt_mv_per_min"])
        row[ACC_V] = float(p["voltage_accuracy_mv"]) / 1000.0
        row[QUANT_V] = float(p["voltage_resolution_mv"]) / 1000.0 / math.sqrt(12.0)
        row[HYST_RES] = float(p["hysteresis_residual"])
        row[EXTRAP] = float(p["relaxation_extrapolation"])
        row[CONF_REF] = float(p["confidence_ref_pct"])
        row[BMS_THR] = float(p["bms_deviation_pct"])
        row[BMS_N] = int(p["bms_deviation_samples"])
        row[OFFSET_MIN_MS] = _ms(p["offset_min_rest_s"])
        row[I_QUANT] = float(p["current_resolution_a"]) / math.sqrt(12.0)
        row[CELLS_IN_SERIES] = spec.cells_in_series or 0
        row[TAU_S] = relax.tau_s
        row[ACT_K] = relax.activation_k
        row[T_REF_C] = relax.t_ref_c
        row[R_CELL] = relax.resistance_ohm_ah / cap if cap > 0 else 0.0
        row[HALF_WIDTH] = hyst.half_width_v() if hyst else 0.0
        row[APPROACH] = hyst.approach_soc_pct if hyst else 1.0
        ocv = chem.ocv
        s, v = ocv.soc_array, ocv.voltage_array
        if s.size > MAX_KNOTS:
            raise sdk.ContractError(
                f"soc_ocv_estimation: the OCV table of {chem.name} has {s.size} points, "
                f"at most {MAX_KNOTS} are supported"
            )
        row[N_TAB] = s.size
        row[TAB_S : TAB_S + s.size] = s
        row[TAB_V : TAB_V + s.size] = v
        row[TAB_CUM : TAB_CUM + s.size] = np.concatenate(
            [[0.0], np.cumsum(np.diff(s) * (v[1:] + v[:-1]) / 2.0)]
        )
        if hyst is not None:
            # the knots of OcvHysteresis.branch: the table's and the offsets' within the table
            b = np.union1d(s, np.asarray(hyst.soc, dtype=float))
            b = b[(b >= s[0]) & (b <= s[-1])]
            if b.size > MAX_KNOTS:
                raise sdk.ContractError(
                    f"soc_ocv_estimation: the hysteresis branch of {chem.name} has {b.size} "
                    f"knots, at most {MAX_KNOTS} are supported"
                )
            row[HAS_HYST] = 1.0
            row[N_BR] = b.size
            row[BR_S : BR_S + b.size] = b
            row[BR_V : BR_V + b.size] = ocv.ocv_from_soc(b)
            row[BR_OC : BR_OC + b.size] = hyst.offset(b, 1)
            row[BR_OD : BR_OD + b.size] = hyst.offset(b, -1)
        return row

    def param_row(self) -> FloatArray:
        return self._row

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        return OUTPUTS_PER_RECORD

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        return _loop(  # type: ignore[no-any-return]
            blk.slot,
            blk.ts,
            blk.dt_ms,
            blk.gap,
            blk.current,
            blk.voltage,
            blk.cells,
            blk.temps,
            blk.soc,
            blk.soh,
            blk.n_cells,
            blk.n_temps,
            params,
            state["in_rest"],
            state["rest_start"],
            state["win_start"],
            state["win_cols"],
            state["win_sums"],
            state["win_pack"],
            state["last_slot"],
            state["soh"],
            state["dir"],
            state["h0"],
            state["q_run"],
            state["rest_i"],
            state["bms"],
            out,
            start,
        )

    # -- alerts' messages: the BMS's and the twin's SOC and the twin's sigma -------------------

    def describe(self, code: str, raised: bool, cell: int, value: float, threshold: float) -> str:
        return ""  # worded by `outputs`, which has the record's soc_ocv estimate

    def outputs(self, rows: FloatArray, ts: npt.NDArray[np.int64]) -> list[Output]:
        res = super().outputs(rows, ts)
        if not any(isinstance(o, Alert) for o in res):
            return res
        twin: dict[int, tuple[float, float]] = {}
        for k, r in enumerate(rows.tolist()):
            if int(r[CODE]) == SOC_OCV:
                twin[int(r[ROW])] = (r[VALUE], r[AUX])
            o = res[k]
            if isinstance(o, Alert):
                soc_avg, sig = twin[int(r[ROW])]  # emitted before the alert, same record
                verb = "deviates from" if o.status == "raised" else "agrees again with"
                res[k] = dataclasses.replace(
                    o,
                    message=(
                        f"BMS SOC {r[CONF]:.1f} % {verb} the twin's rest SOC {soc_avg:.1f} % "
                        f"(+/- {sig:.1f} %): BMS minus twin {o.value:+.1f} % SOC, threshold "
                        f"{o.threshold:g} %"
                    ),
                )
        return res

    # -- stored states of earlier versions -------------------------------------------------------

    def migrate(self, state: sdk.State) -> sdk.State:
        """2.0.0's dict state (version 2) -> version 3; version 1 (1.x: only the current rest's
        start and last reading, nothing cumulative) starts afresh, as 2.0.0 did."""
        version = state.get("version")
        if version == 1:
            return self.initial_state()
        if version != 2:
            return super().migrate(state)
        new = self.initial_state()
        rest = state.get("rest_start")
        if rest is not None:
            new["in_rest"] = True
            new["rest_start"] = int(rest)
            new["rest_i"] = [int(x) for x in state.get("rest_i") or [0, 0, 0]]
            sums, ws = state.get("win_sums"), state.get("win_start")
            if sums is not None and ws is not None and len(sums[0]):
                cols = [[int(sums[j][c]) for j in range(6)] for c in range(len(sums[0]))]
                new["win_start"] = int(ws)
                new["win_cols"] = len(cols)
                new["win_sums"] = cols
                if len(cols) == 1:  # the pack voltage's column, or a battery of one cell
                    new["win_pack"] = cols
        if state.get("last_slot") is not None:
            new["last_slot"] = int(state["last_slot"])
        new["soh"] = state.get("soh")
        new["dir"] = int(state.get("dir", 0))
        new["h0"] = float(state.get("h0", 0.0))
        new["q_run"] = int(state.get("q_run", 0))
        ch = (state.get("bms") or {}).get("bms_soc_deviation")
        if ch:
            new["bms"] = [int(x) for x in ch][:6] + [0] * (7 - min(len(ch), 6))
        return new
