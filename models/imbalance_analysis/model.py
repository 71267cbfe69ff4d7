"""imbalance_analysis: cell voltage spread, SOC imbalance via the OCV curve, imbalance alert.

Job
---
Watch the spread of a battery's cell voltages: alert when it stays too wide (naming the cell
to blame) and report at an event-time cadence the spread, the relative spread and, after a
long enough rest, the SOC imbalance the spread means on the chemistry's OCV curve.

Algorithm
---------
One compiled loop over the block's records (any number of batteries, interleaved); per record,
over the battery's finite cells (NaN = missing cell; a record needs >= 2 finite cells,
otherwise it has no spread):

* spread ``dV = max - min`` cell voltage [V].
* Alert ``cell_imbalance``, two debounce channels (warning, critical) per battery: raise
  condition ``dV > spread_<level>_v``, clear condition ``dV < spread_<level>_v -
  spread_hysteresis_v``, through `twin_stream.sdk.debounce_step` (leaky counters in event time
  and samples: ``raise_debounce_s`` and ``raise_samples`` / ``clear_debounce_s`` and
  ``clear_samples``; the interval of a record after a gap counts 0 ms). The spread is measured
  on every record, under load too (the alert is about the cells, whatever the cause).
  ``cell`` = the culprit at the deciding record: the finite cell furthest from the median of
  the finite cells, high or low (ties: the lowest index; the median by an insertion sort of
  the row's finite cells), so a high cell or a cell stuck high is named rather than a healthy
  low one. A clear names the cell its raise named (state ``named``), so whoever pairs raise
  and clear by (code, cell) closes the episode. ``value`` = the spread there, ``threshold`` =
  the level. On one record clears come first (critical, then warning), then raises (warning,
  then critical). The message says ``cell #25 (index 24) at 3.781 V, 0.110 V below the median
  3.891 V``: the kernel writes the named cell's voltage and the median into the alert row's
  CONF and AUX columns and `outputs` turns them into the message (the threshold follows from
  the row's severity).
* Rest: a record rests when ``|I| < rest_current_a``. The start of the current rest period is
  kept in the state, so rest spans blocks; a gap or a record under load ends it.

At the first record of every ``estimate_interval_s`` slot of event time (aligned to the epoch),
when it has a spread:

* ``voltage_spread`` [V], confidence null;
* ``relative_spread_pct`` [%] = dV / mean finite cell voltage * 100 (mean > 0), confidence null;
* ``soc_imbalance`` [% SOC] = SOC(v_max) - SOC(v_min), the cells' voltages read as OCV on the
  spec's chemistry curve (linear interpolation, clamped at the table's ends; the table is
  packed into the parameter row), only when the pack has rested for at least ``min_rest_s``.
  Its confidence = slope factor x rest factor, in [0, 1]:

  - slope factor = min(1, s / ``slope_ref_mv_per_pct``), with s the smaller dOCV/dSOC
    [mV per % SOC] of the curve's segments at the two cells' SOCs: a voltage error e turns
    into an SOC error e / s at each end, so the flatter end rules. On the LFP plateau
    (0.3-0.5 mV/%) this is <= 0.1; in NMC's mid range (8-9 mV/%) it is 1.
  - rest factor = min(1, t_rest / ``full_rest_s``): the cell voltage relaxes towards OCV over
    tens of minutes to hours (reference/domain.md: full equilibrium takes 2-5 h; 1 h is the
    usual compromise).

State: version 2, declared in model.json (``channels`` [warning, critical] x 7 integers,
``named`` per level, ``last_slot``, ``rest_start`` epoch ms or null). `migrate` upgrades the
former implementation's version 1 dict state (channels and named cells keyed by
``cell_imbalance:<level>``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream import sdk
from twin_stream.sdk.contract import ContractError, State
from twin_stream.sdk.emit import AUX, CODE, CONF, SEVERITY
from twin_stream.sdk.outputs import Alert, Output

FloatArray = npt.NDArray[np.float64]

# output codes: their order in model.json
CELL_IMBALANCE, VOLTAGE_SPREAD, RELATIVE_SPREAD, SOC_IMBALANCE = range(4)
_LEVELS = ("warning", "critical")  # channel j has severity j + 1 (sdk.emit: 1 warning, 2 crit.)
MAX_KNOTS = 256  # OCV table points the parameter row has room for
# parameter row: the scalars, then the OCV table (soc knots, voltage knots, MAX_KNOTS each)
(
    P_WARN,
    P_CRIT,
    P_HYST,
    P_RAISE_MS,
    P_CLEAR_MS,
    P_RAISE_N,
    P_CLEAR_N,
    P_INTERVAL,
    P_REST_A,
    P_MIN_REST,
    P_FULL_REST,
    P_SLOPE_REF,
    P_KNOTS,
    P_TABLE,
) = range(14)


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


@sdk.kernel
def _median(row, n, buf):  # type: ignore[no-untyped-def]
    """Median of the finite values of row[:n] (as np.median: the mean of the middle two for an
    even count), sorted into `buf` by insertion; NaN if none is finite."""
    m = 0
    for j in range(n):
        x = row[j]
        if not np.isfinite(x):
            continue
        k = m
        while k > 0 and buf[k - 1] > x:
            buf[k] = buf[k - 1]
            k -= 1
        buf[k] = x
        m += 1
    if m == 0:
        return np.nan
    h = m // 2
    if m % 2 == 1:
        return buf[h]
    return (buf[h - 1] + buf[h]) / 2.0


@sdk.kernel
def _culprit(row, n, buf):  # type: ignore[no-untyped-def]
    """(index, median): the finite cell of row[:n] furthest from the median of the finite
    cells, high or low; ties go to the lowest index."""
    med = _median(row, n, buf)
    best = -np.inf
    idx = 0
    for j in range(n):
        x = row[j]
        d = abs(x - med) if np.isfinite(x) else -1.0
        if d > best:
            best = d
            idx = j
    return idx, med


def culprit(cells: FloatArray) -> tuple[int, float]:
    """(index, median): the finite cell furthest from the median of the finite cells, high
    or low; ties go to the lowest index. Needs at least one finite cell."""
    row = np.ascontiguousarray(cells, dtype=np.float64)
    idx, med = _culprit(row, row.size, np.empty(max(1, row.size)))
    return int(idx), float(med)


@sdk.kernel
def _slope(P, s, n, soc):  # type: ignore[no-untyped-def]
    """dOCV/dSOC [V per %] of the table's segment at `soc` (the end segments beyond it)."""
    lo, hi = 0, n  # the number of knots <= soc (searchsorted side="right")
    while lo < hi:
        mid = (lo + hi) // 2
        if P[s, P_TABLE + mid] <= soc:
            lo = mid + 1
        else:
            hi = mid
    seg = min(max(lo - 1, 0), n - 2)
    k, v = P_TABLE + seg, P_TABLE + MAX_KNOTS + seg
    return (P[s, v + 1] - P[s, v]) / (P[s, k + 1] - P[s, k])


@sdk.kernel
def _event(out, w, i, j, raised, row, nc, buf, named, spread):  # type: ignore[no-untyped-def]
    """The alert of level j at record i: a raise names the culprit (and remembers it), a clear
    the cell its raise named. Row: AUX the median, CONF the named cell's voltage."""
    idx, med = _culprit(row, nc, buf)
    if raised:
        named[j] = idx
    else:
        if named[j] >= 0:
            idx = named[j]
        named[j] = -1
    return sdk.emit(
        out, w, i, CELL_IMBALANCE, 1 if raised else 0, idx, spread, med, row[idx], j + 1
    )


@sdk.kernel
def _loop(  # type: ignore[no-untyped-def]
    slot,
    ts,
    dt_ms,
    gap,
    current,
    cells,
    n_cells,
    P,
    channels,
    named,
    last_slot,
    rest_start,
    out,
    start,
):
    buf = np.empty(max(1, cells.shape[1]))
    w = 0
    for i in range(start, ts.size):
        if not sdk.room(out, w, 5):
            return i, w
        s = slot[i]
        nc = n_cells[s]
        # rest: a run of resting records, broken by load or by a gap
        resting = abs(current[i]) < P[s, P_REST_A]
        rest_ms = 0.0
        if resting:
            if gap[i] or math.isnan(rest_start[s]):
                rest_start[s] = float(ts[i])
            rest_ms = float(ts[i]) - rest_start[s]
        else:
            rest_start[s] = np.nan

        # spread over the finite cells (max/min skip NaN only, as np.fmax/np.fmin)
        vmax, vmin = -np.inf, np.inf
        seen = False
        count = 0
        total = 0.0
        for j in range(nc):
            x = cells[i, j]
            if math.isnan(x):
                continue
            if not seen or x > vmax:
                vmax = x
            if not seen or x < vmin:
                vmin = x
            seen = True
            if np.isfinite(x):
                count += 1
                total += x
        spread = vmax - vmin if nc >= 2 and count >= 2 else np.nan

        dt = 0 if gap[i] else dt_ms[i]
        hyst = P[s, P_HYST]
        raise_ms, clear_ms = int(P[s, P_RAISE_MS]), int(P[s, P_CLEAR_MS])
        raise_n, clear_n = int(P[s, P_RAISE_N]), int(P[s, P_CLEAR_N])
        warn, crit = P[s, P_WARN], P[s, P_CRIT]
        ch = channels[s]
        e0 = sdk.debounce_step(
            ch[0],
            dt,
            spread > warn,
            spread < warn - hyst,
            False,
            0,
            raise_ms,
            clear_ms,
            raise_n,
            clear_n,
        )
        e1 = sdk.debounce_step(
            ch[1],
            dt,
            spread > crit,
            spread < crit - hyst,
            False,
            0,
            raise_ms,
            clear_ms,
            raise_n,
            clear_n,
        )
        if e0 != sdk.NONE or e1 != sdk.NONE:
            # clears by falling severity, then raises by rising severity
            if e1 == sdk.CLEAR:
                w = _event(out, w, i, 1, False, cells[i], nc, buf, named[s], spread)
            if e0 == sdk.CLEAR:
                w = _event(out, w, i, 0, False, cells[i], nc, buf, named[s], spread)
            if e0 == sdk.RAISE:
                w = _event(out, w, i, 0, True, cells[i], nc, buf, named[s], spread)
            if e1 == sdk.RAISE:
                w = _event(out, w, i, 1, True, cells[i], nc, buf, named[s], spread)

        k = float(ts[i] // np.int64(P[s, P_INTERVAL]))
        if last_slot[s] != k:  # the first record of a slot (NaN: of the battery)
            last_slot[s] = k
            if np.isfinite(spread):
                w = sdk.estimate(out, w, i, VOLTAGE_SPREAD, spread, np.nan)
                mean = total / count
                if mean > 0.0:
                    w = sdk.estimate(out, w, i, RELATIVE_SPREAD, spread * 100.0 / mean, np.nan)
                if resting and rest_ms >= P[s, P_MIN_REST]:
                    n = int(P[s, P_KNOTS])
                    socs = P[s, P_TABLE : P_TABLE + n]
                    volts = P[s, P_TABLE + MAX_KNOTS : P_TABLE + MAX_KNOTS + n]
                    soc_hi = np.interp(vmax, volts, socs)
                    soc_lo = np.interp(vmin, volts, socs)
                    slope_mv = 1000.0 * min(_slope(P, s, n, soc_hi), _slope(P, s, n, soc_lo))
                    slope_f = min(max(slope_mv / P[s, P_SLOPE_REF], 0.0), 1.0)
                    rest_f = min(max(rest_ms / P[s, P_FULL_REST], 0.0), 1.0)
                    w = sdk.emit(
                        out,
                        w,
                        i,
                        SOC_IMBALANCE,
                        -1,
                        -1,
                        soc_hi - soc_lo,
                        np.nan,
                        slope_f * rest_f,
                        -1,
                    )
    return ts.size, w


@sdk.register_model
class ImbalanceAnalysis(sdk.KernelModel):
    """Voltage spread, OCV-based SOC imbalance with confidence, and the imbalance alert."""

    def __init__(self, params: Mapping[str, Any], spec: sdk.BatterySpec) -> None:
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
        if len(spec.chemistry.ocv.soc) > MAX_KNOTS:
            raise ContractError(
                f"imbalance_analysis: the OCV table of {spec.key!r} has "
                f"{len(spec.chemistry.ocv.soc)} points, more than {MAX_KNOTS}"
            )
        self._levels = (float(warn), float(crit))
        self._hyst = float(hyst)

    def param_row(self) -> FloatArray:
        p = self.params
        ocv = self.spec.chemistry.ocv
        row = np.zeros(P_TABLE + 2 * MAX_KNOTS)
        row[:P_TABLE] = [
            p["spread_warning_v"],
            p["spread_critical_v"],
            p["spread_hysteresis_v"],
            _ms(p["raise_debounce_s"]),
            _ms(p["clear_debounce_s"]),
            p["raise_samples"],
            p["clear_samples"],
            max(1, _ms(p["estimate_interval_s"])),
            p["rest_current_a"],
            _ms(p["min_rest_s"]),
            max(1, _ms(p["full_rest_s"])),
            p["slope_ref_mv_per_pct"],
            len(ocv.soc),
        ]
        row[P_TABLE : P_TABLE + len(ocv.soc)] = ocv.soc
        row[P_TABLE + MAX_KNOTS : P_TABLE + MAX_KNOTS + len(ocv.voltage)] = ocv.voltage
        return row

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        return 5

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        return _loop(  # type: ignore[no-any-return]
            blk.slot,
            blk.ts,
            blk.dt_ms,
            blk.gap,
            blk.current,
            blk.cells,
            blk.n_cells,
            params,
            state["channels"],
            state["named"],
            state["last_slot"],
            state["rest_start"],
            out,
            start,
        )

    def outputs(self, rows: FloatArray, ts: npt.NDArray[np.int64]) -> list[Output]:
        """As the base class; alert rows carry the named cell's voltage (CONF) and the median
        (AUX) for the message, the threshold follows from the level (SEVERITY)."""
        is_alert = rows[:, CODE] == CELL_IMBALANCE
        if not is_alert.any():
            return super().outputs(rows, ts)
        fixed = rows.copy()
        level = rows[is_alert, SEVERITY].astype(np.int64) - 1
        fixed[is_alert, AUX] = np.asarray(self._levels)[level]
        fixed[is_alert, CONF] = np.nan
        res = super().outputs(fixed, ts)
        for k in np.flatnonzero(is_alert).tolist():
            a = res[k]
            assert isinstance(a, Alert)
            msg = self._message(a, float(rows[k, CONF]), float(rows[k, AUX]))
            res[k] = dataclasses.replace(a, message=msg)
        return res

    def _message(self, a: Alert, v: float, median: float) -> str:
        off = v - median
        where = f"{'above' if off >= 0 else 'below'} the median {median:.3f} V"
        who = f"cell #{(a.cell or 0) + 1} (index {a.cell}) at {v:.3f} V, {abs(off):.3f} V {where}"
        if a.status == "raised":
            return (
                f"cell spread {a.value:.3f} V above the {a.severity} limit {a.threshold:g} V: {who}"
            )
        return (
            f"cell spread back at {a.value:.3f} V, below the {a.severity} limit {a.threshold:g} V "
            f"minus hysteresis {self._hyst:g} V ({who}): cleared"
        )

    def migrate(self, state: State) -> State:
        """The former implementation's version 1 dict state as version 2."""
        if state.get("version") != 1:
            return super().migrate(state)
        old_channels: Mapping[str, Any] = state.get("channels") or {}
        old_named: Mapping[str, Any] = state.get("named") or {}
        channels, named = [], []
        for level in _LEVELS:
            ch = [int(x) for x in old_channels.get(f"cell_imbalance:{level}", ())][:6]
            channels.append(ch + [0] * (sdk.CHANNEL - len(ch)))
            cell = old_named.get(f"cell_imbalance:{level}")
            named.append(-1 if cell is None else int(cell))
        return {
            "version": self.state_spec.version,
            "channels": channels,
            "named": named,
            "last_slot": state.get("last_slot"),
            "rest_start": state.get("rest_start"),
        }
