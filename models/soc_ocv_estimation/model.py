"""soc_ocv_estimation: SOC from the open-circuit voltage at rest, and the available energy.

Job
---
When a battery has rested long enough for its voltage to approach the open-circuit voltage,
read its SOC on the chemistry's OCV curve, with a confidence, and derive the energy it can
still deliver. Complements the BMS's coulomb-counted SOC, which drifts.

Algorithm
---------
* Voltage used, per sample: the mean of the finite cell voltages; if a sample has none, the
  pack voltage divided by the cells in series (``spec.cells_in_series``, else the battery's
  cell count). Neither: NaN, no estimate from that sample.
* Rest: a sample rests when ``|I| < min(rest_current_a, rest_c_rate * capacity_ah)`` (the
  relative bound follows the TI practice of rejecting OCV at |I| >= C/18, made stricter; it
  matters for small cells, whose 0.5 A is a large C-rate). A rest period is a run of resting
  samples; a sample under load or a data gap (``chunk.gap``: nothing is known about the time
  in between) ends it, and the next resting sample starts a new one. Rest time at a sample =
  its ts - the ts of the first sample of the run.
* Settledness, in event time and chunk-invariant: the first valid (finite voltage) sample of
  a rest is the anchor (t_a, v_a). The first valid sample with ``ts >= t_a +
  settle_window_s`` measures ``dV/dt = (v - v_a) / (ts - t_a)`` [mV/min] and becomes the new
  anchor. The last measured |dV/dt| holds until the next measurement; before the first one the
  voltage counts as not settled. Measuring across a window instead of between samples keeps
  sample noise (a few mV) from masquerading as drift, and one relaxation slope stays visible.
  Settled: ``|dV/dt| < settle_dvdt_mv_per_min``.
* A sample qualifies when it rests, its rest time is ``>= min_rest_s``, it is settled and it
  has a voltage. Estimates are emitted at the first qualifying sample of a rest period, and
  then at the first qualifying sample of every ``estimate_interval_s`` slot of event time
  while the rest lasts (`cadence_rows` over the qualifying samples).
* ``soc_ocv`` [%] = OCV^-1(v) on ``spec.chemistry.ocv`` (clamped to the table's ends).
* Confidence, in [0, 1], the product of three factors (each a way the reading can be off):

  - slope factor = min(1, dOCV/dSOC / ``slope_ref_mv_per_pct``) at that SOC
    (`OcvTable.slope_at_soc`): a voltage error e becomes an SOC error e / slope. On the LFP
    plateau (~0.4-0.5 mV/%: +/-2 mV is +/-5 % SOC) this is ~0.1; in NMC's mid range
    (8-9 mV/%) it is 1.
  - rest factor = min(1, rest time / ``full_rest_s``): relaxation towards true OCV takes tens
    of minutes to hours (2-5 h to full equilibrium, TI), so 10 min of rest earns 1/6 and 1 h
    full trust — the same rule as imbalance_analysis.
  - settle factor = 1 - |dV/dt| / ``settle_dvdt_mv_per_min`` (in (0, 1] once settled): the
    remaining relaxation offset is roughly tau x dV/dt, so a still-drifting voltage earns less.

* ``available_energy`` [kWh] = C_nom * SOH/100 * cells * integral_0^SOC OCV(s) ds / 100 / 1000
  (`OcvTable.energy_wh_per_ah(0, SOC)`, exact for the piecewise-linear curve; SOH = the last
  reported value carried in the state, 100 % if never reported; cells as above). It follows
  the curve's shape, unlike SOC x C x V_nom. Same confidence as the SOC it derives from.

Not modelled: LFP charge/discharge hysteresis (the plateau's low confidence covers most of
it), temperature dependence of OCV, and extrapolation of relaxation (Pei et al. 2014).

Cost: vectorised over the chunk; the only Python loop walks the settle windows of the rest
periods that can matter (those reaching ``min_rest_s``, and the one still going at the end
of the chunk), i.e. one iteration per ``settle_window_s`` of rest, never per sample.

State (JSON): ``{"version": 1, "rest_start": int | null, "anchor_ts": int | null,
"anchor_v": float | null, "dvdt": float | null, "emitted": bool, "last_slot": int | null,
"soh": float | null}``: the ongoing rest period's start (null when not resting), its settle
anchor and last measured dV/dt [mV/min], whether it has emitted yet, the slot of the last
emission, and the last reported SOH.
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
_MV_PER_MIN_PER_V_PER_MS = 1000.0 * 60_000.0


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


@register_model("soc_ocv_estimation")
class SocOcvEstimation(Model):
    """SOC read on the OCV curve at settled rest, with confidence, and available energy."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        rest_a = float(p["rest_current_a"])
        if p["rest_c_rate"] > 0:
            rest_a = min(rest_a, float(p["rest_c_rate"]) * float(spec.capacity_ah))
        self._rest_a = rest_a
        self._interval_ms = max(1, _ms(p["estimate_interval_s"]))
        self._min_rest_ms = _ms(p["min_rest_s"])
        self._window_ms = max(1, _ms(p["settle_window_s"]))
        self._dvdt_max = float(p["settle_dvdt_mv_per_min"])
        self._full_rest_ms = max(1, _ms(p["full_rest_s"]))
        self._slope_ref = float(p["slope_ref_mv_per_pct"])

    def initial_state(self) -> State:
        return {
            "version": STATE_VERSION,
            "rest_start": None,
            "anchor_ts": None,
            "anchor_v": None,
            "dvdt": None,
            "emitted": False,
            "last_slot": None,
            "soh": None,
        }

    def _cell_voltage(self, chunk: Chunk) -> tuple[FloatArray, int]:
        """Per-sample voltage read as a cell's OCV (NaN where none), and the cell count."""
        cells = chunk.cells
        n_cells = self.spec.cells_in_series or cells.shape[1]
        if cells.shape[1]:
            finite = np.isfinite(cells)
            count = finite.sum(axis=1)
            total = np.where(finite, cells, 0.0).sum(axis=1)
            v = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            if n_cells and not bool(count.all()):
                v = np.where(count > 0, v, chunk.voltage / n_cells)
            return v, n_cells
        if n_cells:
            return chunk.voltage / n_cells, n_cells
        return np.full(len(chunk), np.nan), 0

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        if state.get("version") != STATE_VERSION:
            raise ContractError(
                f"soc_ocv_estimation: state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        n = len(chunk)
        if n == 0:
            return [], dict(state)
        ts = chunk.ts
        soh_in = chunk.soh
        reported = np.isfinite(soh_in)
        carried_soh: float | None = state["soh"]
        new_soh = float(soh_in[np.flatnonzero(reported)[-1]]) if reported.any() else carried_soh
        last_slot: int | None = state["last_slot"]
        carried_rest: int | None = state["rest_start"]

        resting = np.abs(chunk.current) < self._rest_a
        if not resting.any():
            return [], {**self.initial_state(), "last_slot": last_slot, "soh": new_soh}

        # rest periods: runs of resting samples, broken by load or a gap; run 0 = carried
        idx = np.arange(n)
        prev_resting = np.empty(n, dtype=np.bool_)
        prev_resting[0] = carried_rest is not None
        prev_resting[1:] = resting[:-1]
        new_run = resting & (chunk.gap | ~prev_resting)
        run_id = np.cumsum(new_run)
        last_new = np.maximum.accumulate(np.where(new_run, idx, -1))
        carried = 0 if carried_rest is None else carried_rest
        rest_start = np.where(last_new >= 0, ts[np.maximum(last_new, 0)], carried)
        rest_ms = ts - rest_start

        v, n_cells = self._cell_voltage(chunk)

        # settledness: walk the settle windows of the runs that matter
        starts = np.flatnonzero(new_run | (resting & (idx == 0)))
        cont_next = np.zeros(n, dtype=np.bool_)
        cont_next[:-1] = resting[1:] & ~new_run[1:]
        ends = np.flatnonzero(resting & ~cont_next)
        mark = np.zeros(n, dtype=np.bool_)
        mark_val = np.full(n, np.nan)
        mark[starts] = True
        carried_run = bool(resting[0] and not new_run[0])
        if carried_run and state["dvdt"] is not None:
            mark_val[0] = float(state["dvdt"])
        needed = (rest_ms[ends] >= self._min_rest_ms) | (ends == n - 1)
        anchor: tuple[int, float] | None = None
        last_dvdt: float | None = None
        for s, e in zip(starts[needed].tolist(), ends[needed].tolist(), strict=True):
            if s == 0 and carried_run and state["anchor_ts"] is not None:
                a_t, a_v = int(state["anchor_ts"]), float(state["anchor_v"])
                dvdt: float | None = state["dvdt"]
            else:
                a_t, a_v, dvdt = -1, 0.0, None
            valid = s + np.flatnonzero(np.isfinite(v[s : e + 1]))
            if a_t < 0 and valid.size:
                a_t, a_v = int(ts[valid[0]]), float(v[valid[0]])
            if a_t >= 0:
                tv = ts[valid]
                while True:
                    j = int(np.searchsorted(tv, a_t + self._window_ms, side="left"))
                    if j >= tv.size:
                        break
                    row = int(valid[j])
                    t, vj = int(tv[j]), float(v[row])
                    dvdt = (vj - a_v) / (t - a_t) * _MV_PER_MIN_PER_V_PER_MS
                    mark[row] = True
                    mark_val[row] = dvdt
                    a_t, a_v = t, vj
            if e == n - 1:
                anchor = (a_t, a_v) if a_t >= 0 else None
                last_dvdt = dvdt
        last_mark = np.maximum.accumulate(np.where(mark, idx, -1))
        dvdt_row = np.where(last_mark >= 0, mark_val[np.maximum(last_mark, 0)], np.nan)

        qualified = (
            resting
            & (rest_ms >= self._min_rest_ms)
            & np.isfinite(v)
            & (np.abs(dvdt_row) < self._dvdt_max)
        )
        q = np.flatnonzero(qualified)
        carried_emitted = bool(carried_run and state["emitted"])
        outputs: list[Output] = []
        emitted_last = carried_emitted and bool(run_id[-1] == 0)
        if q.size:
            emit = np.zeros(q.size, dtype=np.bool_)
            slot_rows, last_slot = cadence_rows(ts[q], last_slot, self._interval_ms)
            emit[slot_rows] = True
            qrun = run_id[q]
            emit[0] |= not (carried_emitted and qrun[0] == 0)
            emit[1:] |= qrun[1:] != qrun[:-1]
            rows = q[emit]
            if resting[-1]:
                emitted_last = emitted_last or bool((run_id[rows] == run_id[-1]).any())
            outputs = self._estimates(
                chunk, rows, v[rows], rest_ms[rows], dvdt_row[rows], reported, carried_soh, n_cells
            )

        end_rest = bool(resting[-1])
        new_state: State = {
            "version": STATE_VERSION,
            "rest_start": int(rest_start[-1]) if end_rest else None,
            "anchor_ts": anchor[0] if end_rest and anchor else None,
            "anchor_v": anchor[1] if end_rest and anchor else None,
            "dvdt": last_dvdt if end_rest else None,
            "emitted": bool(end_rest and emitted_last),
            "last_slot": last_slot,
            "soh": new_soh,
        }
        return outputs, new_state

    def _estimates(
        self,
        chunk: Chunk,
        rows: npt.NDArray[np.int64],
        v: FloatArray,
        rest_ms: npt.NDArray[np.int64],
        dvdt: FloatArray,
        reported: npt.NDArray[np.bool_],
        carried_soh: float | None,
        n_cells: int,
    ) -> list[Output]:
        ocv = self.spec.chemistry.ocv
        soc = ocv.soc_from_ocv(v)
        slope_mv = 1000.0 * ocv.slope_at_soc(soc)
        slope_f = np.clip(slope_mv / self._slope_ref, 0.0, 1.0)
        rest_f = np.clip(rest_ms / self._full_rest_ms, 0.0, 1.0)
        settle_f = np.clip(1.0 - np.abs(dvdt) / self._dvdt_max, 0.0, 1.0)
        conf = slope_f * rest_f * settle_f
        # SOH as of each row: last reported at or before it, else carried, else 100
        last_rep = np.maximum.accumulate(np.where(reported, np.arange(reported.size), -1))[rows]
        soh_before = 100.0 if carried_soh is None else carried_soh
        soh = np.where(last_rep >= 0, chunk.soh[np.maximum(last_rep, 0)], soh_before)
        cap_ah = float(self.spec.capacity_ah) * soh / 100.0
        kwh = cap_ah * n_cells * ocv.energy_wh_per_ah(0.0, soc) / 1000.0
        name = self.name
        out: list[Output] = []
        for i, r in enumerate(rows.tolist()):
            t = int(chunk.ts[r])
            c = float(conf[i])
            out.append(Estimate(t, name, "soc_ocv", float(soc[i]), "%", c))
            out.append(Estimate(t, name, "available_energy", float(kwh[i]), "kWh", c))
        return out
