"""soc_ocv_estimation: pack SOC (min, average, max) from the open-circuit voltage at rest, its
uncertainty, the available energy to the first cell's cut-off, the BMS SOC reconciliation and
the current-sensor offset learned at long rests.

Job
---
When a battery has rested long enough for its voltage to approach the open-circuit voltage,
read its cells' SOC on the chemistry's OCV curve (on the branch its last current direction
left it on), with a 1-sigma uncertainty, and derive the energy it can still deliver. Compare
the BMS's reported SOC with it, and learn the current sensor's zero at long rests.

Algorithm
---------
* Voltages, per sample: the finite cell voltages (NaN = invalid or implausible, masked by the
  engine's plausibility layer); a battery without cell voltages: the pack voltage divided by
  the cells in series (one column). Each is I*R compensated: v + I x R(T), R = the
  chemistry's ``relaxation.resistance_ohm_ah`` / C_nom (a parasitic load's drop is removed).
* Rest: ``|I| <= rest_c_rate x C_nom`` (C-rate, not amperes: 0.5-2 A on a 280 Ah pack is
  C/560-C/140 and rests). A rest period is a run of resting samples; a sample under load or
  a data gap (``chunk.gap``) ends it.
* Settle test on a regression slope: the rest is cut into windows of ``settle_window_s``
  event time from its first sample (a window closes at the first sample at or after its
  start + the window, which belongs to it; the next starts there). Per column the window
  keeps integer running sums (n, sum t, t^2, v, t v, v^2; t in ms from the window start, v in
  integer microvolts), so a window spanning chunks gives bit-identical results. At a close,
  a least-squares line per column gives the voltage at the close, its standard error and the
  slope. Settled: |mean slope over the columns| < ``settle_dvdt_mv_per_min``.
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
  reports one; alert ``bms_soc_deviation`` (warning) through ``alerting.debounce`` over those
  comparisons: raised after ``bms_deviation_samples`` comparisons (net, leaky) with |error| >
  ``bms_deviation_pct`` and > 2 sigma, cleared after as many below bms_deviation_pct - 1.
* ``current_offset_a``: the mean measured current of a rest period once it has lasted
  ``offset_min_rest_s``, at the emitting closes (integer mA sums). The model only reports
  it (a real parasitic load reads as an offset: the twin cannot tell them apart).

State (JSON, integers where chunking must not matter): version, rest_start, the open
window (start ts and per-column integer sums), last_slot, soh, the hysteresis direction /
h0 / throughput (mA ms), the rest's current sums (mA, mA^2, n), the debounce channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.alerting import cadence_rows, debounce
from twin_stream.chemistry import OcvHysteresis, OcvTable, Relaxation, builtin_chemistries
from twin_stream.chunk import Chunk
from twin_stream.sdk.contract import ContractError, Model, State, register_model
from twin_stream.outputs import Alert, Estimate, Output
from twin_stream.spec import BatterySpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

STATE_VERSION = 2
MIN_FIT_SAMPLES = 3
MA_MS_PER_AH = 3_600_000_000.0
BMS_CHANNEL = "bms_soc_deviation"
_SUMS = 6  # n, t, tt, v, tv, vv


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def _soc_sigma(v: float, sig: float, vk: FloatArray, sk: FloatArray) -> tuple[float, float]:
    """SOC at v on the curve (voltage knots vk, soc knots sk) and half the SOC interval that
    [v - sig, v + sig] maps onto."""
    lo, mid, hi = np.interp([v - sig, v, v + sig], vk, sk)
    return float(mid), float(hi - lo) / 2.0


def _string_wh_per_ah(ocv: OcvTable, soc_c: FloatArray, shift: float) -> float:
    """Wh per Ah of capacity the cells deliver until the lowest reaches 0 % (cut-off), their
    SOCs shifted by `shift`."""
    sc = np.clip(soc_c + shift, 0.0, 100.0)
    return float(ocv.energy_wh_per_ah(sc - sc.min(), sc).sum())


@dataclass(frozen=True)
class _Close:
    """A window close that qualified: what the estimates at that row are made of."""

    row: int
    v: FloatArray  # per valid column, OCV estimate [V]
    sig_fit: FloatArray  # per valid column, standard error of the fitted voltage [V]
    slope: float  # mean slope [V/s]
    sig_slope: float  # [V/s]
    tau_s: float
    weight: float  # |h|
    direction: int  # sign of h


@register_model("soc_ocv_estimation")
class SocOcvEstimation(Model):
    """Pack SOC (min/avg/max) from OCV at settled rest with 1-sigma uncertainty, available
    energy to the first cell's cut-off, BMS SOC error and current-sensor offset."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        cap = float(spec.capacity_ah)
        self._cap = cap
        self._rest_a = float(p["rest_c_rate"]) * cap
        self._interval_ms = max(1, _ms(p["estimate_interval_s"]))
        self._min_rest_ms = _ms(p["min_rest_s"])
        self._window_ms = max(1, _ms(p["settle_window_s"]))
        self._dvdt_max = float(p["settle_dvdt_mv_per_min"])
        self._acc_v = float(p["voltage_accuracy_mv"]) / 1000.0
        self._quant_v = float(p["voltage_resolution_mv"]) / 1000.0 / math.sqrt(12.0)
        self._hyst_res = float(p["hysteresis_residual"])
        self._extrap = float(p["relaxation_extrapolation"])
        self._conf_ref = float(p["confidence_ref_pct"])
        self._bms_thr = float(p["bms_deviation_pct"])
        self._bms_n = int(p["bms_deviation_samples"])
        self._offset_min_ms = _ms(p["offset_min_rest_s"])
        self._i_quant = float(p["current_resolution_a"]) / math.sqrt(12.0)
        chem = spec.chemistry
        # settings may rebuild the chemistry (an OCV table override) without these data:
        # take them from the built-in chemistry of that name
        base = builtin_chemistries().get(chem.name.upper())
        hyst = chem.hysteresis or (base.hysteresis if base else None)
        self._hyst: OcvHysteresis | None = hyst
        self._relax: Relaxation = chem.relaxation or (
            base.relaxation if base and base.relaxation else Relaxation()
        )
        self._half_width = hyst.half_width_v() if hyst else 0.0
        self._approach = hyst.approach_soc_pct if hyst else 1.0
        self._r_cell = self._relax.resistance_ohm_ah / cap if cap > 0 else 0.0

    def initial_state(self) -> State:
        return {
            "version": STATE_VERSION,
            "rest_start": None,
            "win_start": None,
            "win_sums": None,
            "last_slot": None,
            "soh": None,
            "dir": 0,
            "h0": 0.0,
            "q_run": 0,
            "rest_i": [0, 0, 0],
            "bms": {},
        }

    # -- helpers --------------------------------------------------------------------------------

    def _columns(self, chunk: Chunk) -> tuple[FloatArray, int]:
        """(n, k) voltages read as cell OCVs (NaN where invalid), and the cells in series."""
        cells = chunk.cells
        n_cells = self.spec.cells_in_series or cells.shape[1]
        if cells.shape[1]:
            return cells, n_cells
        if n_cells:
            return (chunk.voltage / n_cells)[:, None], n_cells
        return np.full((len(chunk), 1), np.nan), 0

    def _h(self, direction: int, h0: float, q_run: int) -> float:
        if direction == 0:
            return h0
        dsoc = q_run / MA_MS_PER_AH / self._cap * 100.0 if self._cap > 0 else 0.0
        return direction + (h0 - direction) * math.exp(-dsoc / self._approach)

    @staticmethod
    def _block(t_rel: IntArray, v_uv: IntArray, ok: npt.NDArray[np.bool_]) -> IntArray:
        """Integer sums (6, k) of a block of rows."""
        t = np.where(ok, t_rel[:, None], 0)
        v = np.where(ok, v_uv, 0)
        return np.stack(
            [
                ok.sum(axis=0),
                t.sum(axis=0),
                (t * t).sum(axis=0),
                v.sum(axis=0),
                (t * v).sum(axis=0),
                (v * v).sum(axis=0),
            ]
        ).astype(np.int64)

    @staticmethod
    def _fit(sums: IntArray, t_end: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Per column: fitted voltage at t_end [uV], its standard error [uV], the slope
        [uV/ms] and its standard error; NaN where fewer than 3 samples or no time spread."""
        n, st, stt, sv, stv, svv = (sums[i].astype(np.float64) for i in range(_SUMS))
        with np.errstate(divide="ignore", invalid="ignore"):
            sxx = stt - st * st / n
            sxy = stv - st * sv / n
            syy = svv - sv * sv / n
            good = (n >= MIN_FIT_SAMPLES) & (sxx > 0)
            slope = np.where(good, sxy / sxx, np.nan)
            tbar = st / n
            v_end = sv / n + slope * (t_end - tbar)
            # residual variance pooled over the columns (one ADC, one noise level): a
            # window of a few samples still gives a usable noise estimate
            ssr = np.where(good, np.maximum(syy - slope * sxy, 0.0), 0.0)
            dof = float(np.where(good, n - 2.0, 0.0).sum())
            s2 = float(ssr.sum()) / dof if dof > 0 else 0.0
            se = np.sqrt(s2 * (1.0 / n + (t_end - tbar) ** 2 / sxx))
            se_slope = np.sqrt(s2 / sxx)
        return (
            np.where(good, v_end, np.nan),
            np.where(good, se, np.nan),
            slope,
            np.where(good, se_slope, np.nan),
        )

    # -- the chunk ------------------------------------------------------------------------------

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        if state.get("version") == 1:
            # version 1 held only the current rest's start and last reading (nothing
            # cumulative): a battery stored by the previous release starts its rest anew
            state = self.initial_state()
        if state.get("version") != STATE_VERSION:
            raise ContractError(
                f"soc_ocv_estimation: state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        n = len(chunk)
        if n == 0:
            return [], dict(state)
        ts = chunk.ts
        idx = np.arange(n)
        soh_in = chunk.soh
        reported = np.isfinite(soh_in)
        carried_soh: float | None = state["soh"]
        new_soh = float(soh_in[np.flatnonzero(reported)[-1]]) if reported.any() else carried_soh
        cur = chunk.current
        finite_i = np.isfinite(cur)
        resting = finite_i & (np.abs(np.where(finite_i, cur, 0.0)) <= self._rest_a)

        # temperature factor per row (mean of the valid sensors)
        temps = chunk.temps
        if temps.shape[1]:
            cnt = np.isfinite(temps).sum(axis=1)
            tsum = np.where(np.isfinite(temps), temps, 0.0).sum(axis=1)
            t_row = np.where(cnt > 0, tsum / np.maximum(cnt, 1), np.nan)
        else:
            t_row = np.full(n, np.nan)
        fac = self._relax.factor(t_row)

        # hysteresis direction: charge (+1) / discharge (-1) outside the rest band
        active = finite_i & ~resting
        d_row = np.where(active, np.where(cur < 0, 1, -1), 0).astype(np.int64)
        i_ma = np.where(finite_i, np.rint(np.where(finite_i, cur, 0.0) * 1000.0), 0.0).astype(
            np.int64
        )
        q_row = np.where(active, np.abs(i_ma) * chunk.integrable_dt_ms, 0).astype(np.int64)
        q_cum = np.cumsum(q_row)
        direction, h0, q_run = int(state["dir"]), float(state["h0"]), int(state["q_run"])
        act_rows = np.flatnonzero(active)
        prev_d = np.empty(act_rows.size, dtype=np.int64)
        if act_rows.size:
            prev_d[0] = direction
            prev_d[1:] = d_row[act_rows[:-1]]
        changes = act_rows[d_row[act_rows] != prev_d]
        # (row, dir, h0, q base) from each reversal on; rows before the first keep the carried
        seg_rows = [-1]
        seg_dir, seg_h0, seg_base = [direction], [h0], [q_run]  # q_run(r) = base + q_cum[r]
        for r in changes.tolist():
            q_before = seg_base[-1] + (int(q_cum[r - 1]) if r > 0 else 0)
            h_now = self._h(seg_dir[-1], seg_h0[-1], q_before)
            seg_rows.append(r)
            seg_dir.append(int(d_row[r]))
            seg_h0.append(h_now)
            seg_base.append(-(int(q_cum[r - 1]) if r > 0 else 0))
        seg_rows_a = np.asarray(seg_rows, dtype=np.int64)

        def hyst_at(r: int) -> float:
            k = int(np.searchsorted(seg_rows_a, r, side="right")) - 1
            return self._h(seg_dir[k], seg_h0[k], seg_base[k] + int(q_cum[r]))

        end_dir, end_h0 = seg_dir[-1], seg_h0[-1]
        end_q = seg_base[-1] + int(q_cum[-1])

        # rest periods: runs of resting samples broken by load or a gap; run 0 = carried
        carried_rest: int | None = state["rest_start"]
        prev_resting = np.empty(n, dtype=np.bool_)
        prev_resting[0] = carried_rest is not None
        prev_resting[1:] = resting[:-1]
        new_run = resting & (chunk.gap | ~prev_resting)
        last_new = np.maximum.accumulate(np.where(new_run, idx, -1))
        carried = 0 if carried_rest is None else carried_rest
        rest_start = np.where(last_new >= 0, ts[np.maximum(last_new, 0)], carried)
        rest_ms = ts - rest_start
        carried_run = bool(resting[0] and not new_run[0])

        # current sums over the rest (for the offset): cumulative from the run's start
        rest_i_carry = [int(x) for x in state["rest_i"]] if carried_run else [0, 0, 0]
        i_rest = np.where(resting, i_ma, 0)
        n_rest = (resting & finite_i).astype(np.int64)
        cum = [np.cumsum(i_rest), np.cumsum(i_rest * i_rest), np.cumsum(n_rest)]
        run_first = np.where(last_new >= 0, last_new, 0)

        def rest_i_at(r: int) -> list[int]:
            if last_new[r] < 0:  # the carried run
                return [rest_i_carry[j] + int(cum[j][r]) for j in range(3)]
            s = int(run_first[r])
            return [int(cum[j][r]) - (int(cum[j][s - 1]) if s > 0 else 0) for j in range(3)]

        # voltages, I*R compensated, in integer microvolts
        vcols, n_cells = self._columns(chunk)
        k = vcols.shape[1]
        r_row = self._r_cell * fac
        vcomp = vcols + (np.where(finite_i, cur, 0.0) * r_row)[:, None]
        vok = np.isfinite(vcomp)
        v_uv = np.where(vok, np.rint(np.where(vok, vcomp, 0.0) * 1e6), 0).astype(np.int64)

        starts = np.flatnonzero(new_run | (resting & (idx == 0)))
        cont_next = np.zeros(n, dtype=np.bool_)
        cont_next[:-1] = resting[1:] & ~new_run[1:]
        ends = np.flatnonzero(resting & ~cont_next)
        win_ws: int | None = None
        win_sums: IntArray | None = None
        closes: list[_Close] = []
        carried_sums = state["win_sums"]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if (
                s == 0
                and carried_run
                and state["win_start"] is not None
                and carried_sums is not None
                and len(carried_sums[0]) == k
            ):
                ws = int(state["win_start"])
                sums = np.asarray(carried_sums, dtype=np.int64)
            else:
                ws = int(ts[s])
                sums = np.zeros((_SUMS, k), dtype=np.int64)
            if int(ts[e]) < ws + self._window_ms and e != n - 1:
                continue  # too short to close a window, and not carried on
            pos = s
            while True:
                j = pos + int(np.searchsorted(ts[pos : e + 1], ws + self._window_ms, side="left"))
                last = min(j, e)
                if last >= pos:
                    sums = sums + self._block(
                        ts[pos : last + 1] - ws, v_uv[pos : last + 1], vok[pos : last + 1]
                    )
                if j > e:
                    break
                close = self._close(j, sums, int(ts[j]) - ws, fac[j], rest_ms[j], hyst_at(j))
                if close is not None:
                    closes.append(close)
                ws, sums, pos = int(ts[j]), np.zeros((_SUMS, k), dtype=np.int64), j + 1
                if pos > e:
                    break
            if e == n - 1:
                win_ws, win_sums = ws, sums

        outputs: list[Output] = []
        last_slot: int | None = state["last_slot"]
        bms_channels: dict[str, Any] = dict(state["bms"])
        if closes:
            cts = np.asarray([ts[c.row] for c in closes], dtype=np.int64)
            slot_rows, last_slot = cadence_rows(cts, last_slot, self._interval_ms)
            emit = [closes[i] for i in slot_rows.tolist()]
            outputs = self._estimates(
                chunk, emit, reported, carried_soh, n_cells, rest_ms, rest_i_at, bms_channels
            )

        end_rest = bool(resting[-1])
        new_state: State = {
            "version": STATE_VERSION,
            "rest_start": int(rest_start[-1]) if end_rest else None,
            "win_start": win_ws if end_rest else None,
            "win_sums": win_sums.tolist() if end_rest and win_sums is not None else None,
            "last_slot": last_slot,
            "soh": new_soh,
            "dir": end_dir,
            "h0": end_h0,
            "q_run": end_q,
            "rest_i": rest_i_at(n - 1) if end_rest else [0, 0, 0],
            "bms": bms_channels,
        }
        return outputs, new_state

    def _close(
        self, row: int, sums: IntArray, t_end: int, fac: float, rest_ms: int, h: float
    ) -> _Close | None:
        """The fit at a window close, if it qualifies (rest long enough, settled, a voltage)."""
        if rest_ms < self._min_rest_ms * fac:
            return None
        v_end, se, slope, se_slope = self._fit(sums, t_end)
        good = np.isfinite(v_end)
        if not good.any():
            return None
        m = int(good.sum())
        mean_slope = float(slope[good].mean())  # uV/ms = mV/s
        if abs(mean_slope) * 60.0 >= self._dvdt_max:
            return None
        tau_s = self._relax.tau_s * fac
        # one-exponential extrapolation of the remaining relaxation, with the mean slope (the
        # cells relax together; one cell's slope over a few samples is mostly noise)
        v_ocv = (v_end[good] + self._extrap * tau_s * 1000.0 * mean_slope) / 1e6
        return _Close(
            row=row,
            v=v_ocv,
            sig_fit=se[good] / 1e6,
            slope=mean_slope / 1000.0,  # V/s
            sig_slope=float(np.sqrt(np.sum(se_slope[good] ** 2)) / m) / 1000.0,
            tau_s=tau_s,
            weight=min(1.0, abs(h)),
            direction=1 if h > 0 else -1 if h < 0 else 0,
        )

    def _curve(self, c: _Close) -> tuple[FloatArray, FloatArray]:
        """(voltage knots, soc knots) of the branch curve the close reads on."""
        ocv = self.spec.chemistry.ocv
        if self._hyst is None or c.direction == 0 or c.weight == 0.0:
            return ocv.voltage_array, ocv.soc_array
        s, v = self._hyst.branch(ocv, c.weight, c.direction)
        return v, s

    def _sigma_common(self, c: _Close, i_row: float, r_row: float) -> float:
        """Voltage sigma [V] common to every column (not averaged by the fit)."""
        relax = c.tau_s * math.hypot(0.5 * c.slope, c.sig_slope)
        hyst = self._half_width * (self._hyst_res + 0.5 * (1.0 - c.weight))
        ir = 0.25 * abs(i_row) * r_row
        return math.sqrt(self._acc_v**2 + self._quant_v**2 + relax**2 + hyst**2 + ir**2)

    def _conf(self, sigma: float) -> float:
        return 1.0 / (1.0 + (sigma / self._conf_ref) ** 2)

    def _estimates(
        self,
        chunk: Chunk,
        closes: list[_Close],
        reported: npt.NDArray[np.bool_],
        carried_soh: float | None,
        n_cells: int,
        rest_ms: IntArray,
        rest_i_at: Any,
        bms_channels: dict[str, Any],
    ) -> list[Output]:
        ocv = self.spec.chemistry.ocv
        name = self.name
        out: list[Output] = []
        last_rep = np.maximum.accumulate(np.where(reported, np.arange(reported.size), -1))
        soh_before = 100.0 if carried_soh is None else carried_soh
        bms_rows: list[tuple[int, float, float, float]] = []  # row, error, sigma, twin soc
        cur = chunk.current
        for c in closes:
            r = c.row
            t = int(chunk.ts[r])
            vk, sk = self._curve(c)
            i_row = float(cur[r]) if np.isfinite(cur[r]) else 0.0
            r_row = self._r_cell * float(self._relax.factor(self._row_temp(chunk, r)))
            common = self._sigma_common(c, i_row, r_row)

            m = c.v.size
            v_avg = float(c.v.mean())
            sig_avg = float(np.sqrt(np.sum(c.sig_fit**2)) / m)
            soc_avg, u_avg = _soc_sigma(v_avg, math.hypot(common, sig_avg), vk, sk)
            i_min, i_max = int(np.argmin(c.v)), int(np.argmax(c.v))
            # the lowest / highest of m noisy fits is biased by ~sqrt(2 ln m) of their noise
            ext = math.sqrt(1.0 + 2.0 * math.log(m))
            sig_lo = math.hypot(common, ext * float(c.sig_fit[i_min]))
            soc_min, u_min = _soc_sigma(float(c.v[i_min]), sig_lo, vk, sk)
            sig_hi = math.hypot(common, ext * float(c.sig_fit[i_max]))
            soc_max, u_max = _soc_sigma(float(c.v[i_max]), sig_hi, vk, sk)
            out.append(Estimate(t, name, "soc_ocv", soc_avg, "%", self._conf(u_avg), u_avg))
            out.append(Estimate(t, name, "soc_min", soc_min, "%", self._conf(u_min), u_min))
            out.append(Estimate(t, name, "soc_max", soc_max, "%", self._conf(u_max), u_max))
            # available energy: every cell discharges until the lowest reaches cut-off
            lr = int(last_rep[r])
            soh = float(chunk.soh[lr]) if lr >= 0 else soh_before
            cap_ah = self._cap * soh / 100.0
            soc_c = np.interp(c.v, vk, sk)
            scale = (n_cells / m) if n_cells else 0.0

            e_cap = cap_ah * scale / 1000.0
            e_mid = e_cap * _string_wh_per_ah(ocv, soc_c, 0.0)
            u_e = (
                e_cap
                * abs(_string_wh_per_ah(ocv, soc_c, u_min) - _string_wh_per_ah(ocv, soc_c, -u_min))
                / 2.0
            )
            out.append(Estimate(t, name, "available_energy", e_mid, "kWh", self._conf(u_min), u_e))
            ri = rest_i_at(r)
            if int(rest_ms[r]) >= self._offset_min_ms and ri[2] >= 2:
                nn = ri[2]
                mean_ma = ri[0] / nn
                var = max(ri[1] - ri[0] * ri[0] / nn, 0.0) / (nn - 1) / 1e6
                u_i = math.sqrt(var / nn + self._i_quant**2)
                out.append(Estimate(t, name, "current_offset_a", mean_ma / 1000.0, "A", None, u_i))
            bms = float(chunk.soc[r])
            if math.isfinite(bms):
                err = bms - soc_avg
                out.append(Estimate(t, name, "bms_soc_error", err, "%", self._conf(u_avg), u_avg))
                bms_rows.append((r, err, u_avg, soc_avg))
        if bms_rows:
            out += self._bms_alerts(chunk, bms_rows, bms_channels)
        return out

    @staticmethod
    def _row_temp(chunk: Chunk, r: int) -> float:
        row = chunk.temps[r] if chunk.temps.shape[1] else np.empty(0)
        good = row[np.isfinite(row)]
        return float(good.mean()) if good.size else math.nan

    def _bms_alerts(
        self,
        chunk: Chunk,
        rows: list[tuple[int, float, float, float]],
        channels: dict[str, Any],
    ) -> list[Output]:
        err = np.asarray([x[1] for x in rows])
        sig = np.asarray([x[2] for x in rows])
        raise_c = ((np.abs(err) > self._bms_thr) & (np.abs(err) > 2.0 * sig))[:, None]
        clear_c = (np.abs(err) < max(self._bms_thr - 1.0, 0.0))[:, None]
        dt = np.zeros(len(rows), dtype=np.int64)
        events = debounce(
            dt, raise_c, clear_c, [BMS_CHANNEL], channels, 0, 0, self._bms_n, self._bms_n
        )
        out: list[Output] = []
        for ev in events:
            r, e, s, twin = rows[ev.row]
            bms = float(chunk.soc[r])
            verb = "deviates from" if ev.raised else "agrees again with"
            out.append(
                Alert(
                    ts=int(chunk.ts[r]),
                    model=self.name,
                    code=BMS_CHANNEL,
                    severity="warning",
                    status="raised" if ev.raised else "cleared",
                    cell=None,
                    value=e,
                    threshold=self._bms_thr,
                    unit="%",
                    message=(
                        f"BMS SOC {bms:.1f} % {verb} the twin's rest SOC {twin:.1f} % "
                        f"(+/- {s:.1f} %): BMS minus twin {e:+.1f} % SOC, threshold "
                        f"{self._bms_thr:g} %"
                    ),
                )
            )
        return out
