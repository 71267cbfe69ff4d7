"""imbalance_analysis: cell voltage spread, SOC imbalance via the OCV curve, imbalance alert.

Algorithm
---------
Per sample (vectorised over the chunk), over the finite cells (NaN = missing cell; a sample
needs >= 2 finite cells, otherwise it has no spread):

* spread ``dV = max - min`` cell voltage [V].
* Alert ``cell_imbalance`` (pack-level, channels ``cell_imbalance:warning`` and
  ``cell_imbalance:critical``): raise condition ``dV > spread_<level>_v``, clear condition
  ``dV < spread_<level>_v - spread_hysteresis_v``, through `twin_stream.alerting.debounce`
  (leaky counters in event time and samples: ``raise_debounce_s`` and ``raise_samples`` /
  ``clear_debounce_s`` and ``clear_samples``). The spread is measured on every sample, under
  load too (the alert is about the cells, whatever the cause: capacity, SOC or resistance
  mismatch). ``cell`` = the culprit at the deciding sample: the finite cell furthest from
  the median of the finite cells, high or low (ties: the lowest index), so a high cell or a
  cell stuck high is named rather than a healthy low one; ``value`` = the spread there,
  ``threshold`` = the level. ``cell`` is 0-based; the message says ``cell #25 (index 24)
  at 3.781 V, 0.110 V below the median 3.891 V``.
* Rest: a sample rests when ``|I| < rest_current_a``. The start of the current rest period
  is kept in the state, so rest spans chunk boundaries; a gap (``chunk.gap``) or a sample
  under load ends it (a rest period never spans a gap).

At the first sample of every ``estimate_interval_s`` slot of event time (`cadence_rows`):

* ``voltage_spread`` [V], confidence null;
* ``relative_spread_pct`` [%] = dV / mean finite cell voltage * 100, confidence null;
* ``soc_imbalance`` [% SOC] = SOC(v_max) - SOC(v_min), the cells' voltages read as OCV on
  the spec's chemistry curve (`OcvTable.soc_from_ocv`), only when the pack has rested for
  at least ``min_rest_s``. Its confidence = slope factor x rest factor, in [0, 1]:

  - slope factor = min(1, s / ``slope_ref_mv_per_pct``), with s the smaller dOCV/dSOC
    [mV per % SOC] at the two cells' SOCs (`OcvTable.slope_at_soc`): a voltage error e turns
    into an SOC error e / s at each end, so the flatter end rules. On the LFP plateau
    (0.3-0.5 mV/%) this is <= 0.1; in NMC's mid range (8-9 mV/%) it is 1.
  - rest factor = min(1, t_rest / ``full_rest_s``): the cell voltage relaxes towards OCV
    over tens of minutes to hours, so a reading after 10 min deserves less trust than after
    1 h (reference/domain.md: full equilibrium takes 2-5 h; 1 h is the usual compromise).

State (JSON): ``{"version": 1, "channels": {key: [raise_ms, active, clear_ms, raise_n,
clear_n, tally]},
"last_slot": int | null, "rest_start": int | null}`` (rest_start = epoch ms of the first
sample of the ongoing rest period, null when not resting).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.alerting import cadence_rows, debounce
from twin_stream.chunk import Chunk
from twin_stream.sdk.contract import ContractError, Model, State, register_model
from twin_stream.outputs import Alert, Estimate, Output
from twin_stream.spec import BatterySpec

FloatArray = npt.NDArray[np.float64]

STATE_VERSION = 1
_SEVERITIES = ("warning", "critical")
_KEYS = tuple(f"cell_imbalance:{sev}" for sev in _SEVERITIES)


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


@register_model("imbalance_analysis")
class ImbalanceAnalysis(Model):
    """Voltage spread, OCV-based SOC imbalance with confidence, and the imbalance alert."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        warn, crit, hyst = p["spread_warning_v"], p["spread_critical_v"], p["spread_hysteresis_v"]
        if not crit > warn:
            raise ContractError(
                f"imbalance_analysis.spread_critical_v: {crit!r} must be above "
                f"spread_warning_v {warn!r}"
            )
        if not hyst < warn:
            raise ContractError(
                f"imbalance_analysis.spread_hysteresis_v: {hyst!r} must be below "
                f"spread_warning_v {warn!r}"
            )
        self._levels = np.array([warn, crit], dtype=np.float64)
        self._hyst = float(hyst)
        self._raise_ms = _ms(p["raise_debounce_s"])
        self._clear_ms = _ms(p["clear_debounce_s"])
        self._raise_n = int(p["raise_samples"])
        self._clear_n = int(p["clear_samples"])
        self._interval_ms = max(1, _ms(p["estimate_interval_s"]))
        self._rest_current = float(p["rest_current_a"])
        self._min_rest_ms = _ms(p["min_rest_s"])
        self._full_rest_ms = max(1, _ms(p["full_rest_s"]))
        self._slope_ref = float(p["slope_ref_mv_per_pct"])

    def initial_state(self) -> State:
        return {
            "version": STATE_VERSION,
            "channels": {},
            "last_slot": None,
            "rest_start": None,
            "named": {},
        }

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        if state.get("version") != STATE_VERSION:
            raise ContractError(
                f"imbalance_analysis: state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        channels: dict[str, list[int]] = {k: list(v) for k, v in state["channels"].items()}
        # the cell each raised level named: its clear names the same cell (an episode is one
        # (code, cell) from raise to clear for whoever pairs them, e.g. the dashboard)
        named: dict[str, int] = dict(state.get("named") or {})
        last_slot: int | None = state["last_slot"]
        carried_rest: int | None = state["rest_start"]
        n = len(chunk)
        if n == 0:
            return [], {
                "version": STATE_VERSION,
                "channels": channels,
                "last_slot": last_slot,
                "rest_start": carried_rest,
            }
        ts = chunk.ts
        cells = chunk.cells

        # rest periods: a run of resting samples, broken by load or by a gap
        resting = np.abs(chunk.current) < self._rest_current
        prev_resting = np.empty(n, dtype=np.bool_)
        prev_resting[0] = carried_rest is not None
        prev_resting[1:] = resting[:-1]
        new_run = resting & (chunk.gap | ~prev_resting)
        last_new = np.maximum.accumulate(np.where(new_run, np.arange(n), -1))
        carried = 0 if carried_rest is None else carried_rest
        rest_start = np.where(last_new >= 0, ts[np.maximum(last_new, 0)], carried)
        new_rest = int(rest_start[-1]) if resting[-1] else None

        # spread on every sample (NaN where fewer than two finite cells)
        outputs: list[tuple[tuple[int, ...], Output]] = []
        finite = np.isfinite(cells)
        count = finite.sum(axis=1)
        if cells.shape[1] >= 2:
            vmax = np.fmax.reduce(cells, axis=1)
            vmin = np.fmin.reduce(cells, axis=1)
            spread = np.where(count >= 2, vmax - vmin, np.nan)
        else:
            vmax = vmin = spread = np.full(n, np.nan)

        if channels or bool((spread > self._levels[0]).any()):
            raise_m = spread[:, None] > self._levels[None, :]
            clear_m = spread[:, None] < (self._levels - self._hyst)[None, :]
            events = debounce(
                chunk.integrable_dt_ms,
                raise_m,
                clear_m,
                _KEYS,
                channels,
                self._raise_ms,
                self._clear_ms,
                self._raise_n,
                self._clear_n,
            )
            for row, j, raised, _ in events:
                # same sample: raises by rising severity, clears by falling severity
                key = (row, 0, 1 if raised else 0, j if raised else -j)
                alert = self._alert(chunk, row, j, raised, spread, named.pop(_KEYS[j], None))
                if raised and alert.cell is not None:
                    named[_KEYS[j]] = alert.cell
                outputs.append((key, alert))

        rows, new_slot = cadence_rows(ts, last_slot, self._interval_ms)
        rows = rows[np.isfinite(spread[rows])]
        if rows.size:
            sel_spread = spread[rows]
            mean = np.where(finite[rows], cells[rows], 0.0).sum(axis=1) / count[rows]
            rel = np.divide(
                sel_spread * 100.0, mean, out=np.full_like(mean, np.nan), where=mean > 0.0
            ).tolist()
            spread_list = sel_spread.tolist()
            rest_ms = ts[rows] - rest_start[rows]
            at_rest = resting[rows] & (rest_ms >= self._min_rest_ms)
            soc_val: list[float] = []
            conf: list[float] = []
            if at_rest.any():
                ocv = self.spec.chemistry.ocv
                soc_hi = ocv.soc_from_ocv(vmax[rows])
                soc_lo = ocv.soc_from_ocv(vmin[rows])
                slope_mv = 1000.0 * np.minimum(ocv.slope_at_soc(soc_hi), ocv.slope_at_soc(soc_lo))
                slope_f = np.clip(slope_mv / self._slope_ref, 0.0, 1.0)
                rest_f = np.clip(rest_ms / self._full_rest_ms, 0.0, 1.0)
                soc_val = (soc_hi - soc_lo).tolist()
                conf = (slope_f * rest_f).tolist()
            name = self.name
            for i, r in enumerate(rows.tolist()):
                t = int(ts[r])
                dv = spread_list[i]
                outputs.append(((r, 1, 0), Estimate(t, name, "voltage_spread", dv, "V", None)))
                if rel[i] == rel[i]:  # not NaN (mean cell voltage > 0)
                    outputs.append(
                        ((r, 1, 1), Estimate(t, name, "relative_spread_pct", rel[i], "%", None))
                    )
                if at_rest[i]:
                    outputs.append(
                        ((r, 1, 2), Estimate(t, name, "soc_imbalance", soc_val[i], "%", conf[i]))
                    )

        outputs.sort(key=lambda item: item[0])
        new_state: State = {
            "version": STATE_VERSION,
            "channels": channels,
            "last_slot": new_slot,
            "rest_start": new_rest,
            "named": named,
        }
        return [out for _, out in outputs], new_state

    def _alert(
        self,
        chunk: Chunk,
        row: int,
        level: int,
        raised: bool,
        spread: FloatArray,
        cell: int | None = None,
    ) -> Alert:
        """The alert at `row`; it names the culprit now, or `cell` (the raise's, on a clear)."""
        cells = chunk.cells[row]
        idx, median = culprit(cells)
        if cell is not None and not raised:
            idx = cell
        v = float(cells[idx])
        off = v - median
        where = f"{'above' if off >= 0 else 'below'} the median {median:.3f} V"
        who = f"cell #{idx + 1} (index {idx}) at {v:.3f} V, {abs(off):.3f} V {where}"
        value = float(spread[row])
        threshold = float(self._levels[level])
        sev = _SEVERITIES[level]
        if raised:
            message = f"cell spread {value:.3f} V above the {sev} limit {threshold:g} V: {who}"
        else:
            message = (
                f"cell spread back at {value:.3f} V, below the {sev} limit {threshold:g} V minus "
                f"hysteresis {self._hyst:g} V ({who}): cleared"
            )
        return Alert(
            ts=int(chunk.ts[row]),
            model=self.name,
            code="cell_imbalance",
            severity=sev,
            status="raised" if raised else "cleared",
            cell=idx,
            value=value,
            threshold=threshold,
            unit="V",
            message=message,
        )


def culprit(cells: FloatArray) -> tuple[int, float]:
    """(index, median): the finite cell furthest from the median of the finite cells, high
    or low; ties go to the lowest index. Needs at least one finite cell."""
    finite = np.isfinite(cells)
    median = float(np.median(cells[finite]))
    dist = np.where(finite, np.abs(cells - median), -1.0)
    return int(np.argmax(dist)), median
