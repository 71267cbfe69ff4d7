"""voltage_monitor: levelled cell-voltage, temperature and current alerts, in event time.

Algorithm
---------
One compiled loop over the records of a block (any number of batteries, each record reading
and writing the state row of its battery's slot); per record, in this order:

Limits are data: the levels (warning, critical, ...) and hysteresis of `cell_voltage`,
`temperature`, `charge_temperature`, `pack_current` and `charge_current` come from the battery
spec's chemistry (`spec.limits`), never from this code; `param_row` packs them (at most one
level per severity, so three per side) with the debounce parameters into the model's row.
Each (code, level, cell or sensor) is one alert channel, a row of the state arrays stepped by
`sdk.debounce_step`, the platform's one leaky-counter debounce (foxBMS-style up/down counters
in event time AND in samples, integers; the same rule as `twin_stream.sdk.alerting.debounce`):

* raise condition of an over-limit channel: ``value > limit``; clear condition:
  ``value < limit - hysteresis`` (mirrored for under-limit channels). A channel raises once
  its raise condition has held, leakily, for ``raise_debounce_s`` of event time and over at
  least ``raise_samples`` samples; it clears after ``clear_debounce_s`` and
  ``clear_samples`` of its clear condition. At 1 Hz and the defaults (2 s, 2 samples) a
  cell stepping over a limit raises on its second violating sample, one second after the
  first; at 0.1 Hz a single-sample glitch (whose 10 s interval alone fills the time counter)
  does not raise, two samples do. Noise sitting at a limit raises once and clears once.
* Each level is its own channel, so crossing the critical limit while the warning is active
  raises the critical alert (escalation), and on the way down the critical alert clears
  before the warning one (events of one sample are ordered: raises by rising severity,
  clears by falling severity).
* NaN values (an invalid or missing cell or sensor) compare false both ways: they never
  violate and never clear. They count as "condition not held", so a half-built counter
  leaks away.
* Cell numbering: ``cell`` is the 0-based index into ``cell_voltages`` (or
  ``temperatures``); messages say both, ``cell #18 (index 17)`` (#: 1-based, series order).
* Temperature: per-sensor over/under-temperature alerts (`cell_over_temperature`,
  `cell_under_temperature`, ``cell`` = sensor index) with their own, slower debounce.
* Pack current (`pack_over_current`): the signed C-rate ``I / capacity_ah`` against
  ``pack_current`` (over levels: discharge, under levels: charge, negative C-rates), pack
  level, one channel per side and level; value and threshold in A.
* Latched charge conditions, pack level, one channel per level:
  ``charge_under_temperature`` (coldest valid sensor below ``charge_temperature.under``),
  ``charge_over_temperature`` (hottest above ``charge_temperature.over``, if defined) and
  ``charge_over_current`` (charge C-rate ``-I / capacity_ah`` above the ``charge_current``
  level times its temperature derating at the coldest valid sensor; below the derating's
  first breakpoint it does not apply, charging there is charge_under_temperature's; with no
  valid sensor the warmest band's factor applies). A sample *violates* when the pack is
  charging (``current < -charge_current_a``; + = discharge) and the signal is beyond the
  level. Regen charges in pulses, so the condition is latched for ``charge_latch_s``:

  - raise: violating samples fill the debounce counters (``temperature_*`` debounce for the
    temperature codes, ``current_*`` for the current); samples within ``charge_latch_s`` of
    the last violating sample (state ``latch``) that do not violate themselves (the pulse
    gaps) *hold* the counters (neither add nor leak), later ones leak. Pulses of 3 s every
    20 s raise on the second pulse; a single sample does not raise.
  - clear: no violating sample for ``charge_latch_s`` (with a valid signal), or, for the
    temperature codes, the signal back inside the limit with hysteresis; then the clear
    debounce. Pulses in the gaps hold the clear counter.
  - exposure: the charge moved in violating samples, ``sum(-I * dt)`` over the episode's
    violating samples (integer mA*ms in the channel's tally, the sample's current over the
    interval before it), from the first violating sample of the episode to the clear; it is
    in the raise and clear messages and, for the charge-temperature codes' first level, an
    estimate (``charge_below_limit_ah`` / ``charge_above_limit_ah``) at each raise and clear.

  ``cell`` of these alerts is the coldest (hottest for charge_over_temperature) valid sensor.
* Temperature compensation (``temperature_coefficient_mv_per_degc``, off by default): every
  cell-voltage limit of a sample shifts by ``coefficient * (T_mean - T_ref)``,
  with ``T_mean`` the mean of that sample's finite temperature sensors and ``T_ref`` =
  ``temperature_reference_degc`` (25 degC). A sample without any temperature is not shifted.
  Lead-acid practice is about -3 mV/degC per cell; leave it at 0 for Li-ion.
* Estimates ``min_cell_voltage`` / ``max_cell_voltage`` / ``mean_cell_voltage`` (V) and
  ``max_temperature`` at the first sample of every ``estimate_interval_s`` slot of event
  time (epoch-aligned; state ``last_slot``), if ``emit_cell_voltage_estimates``.

Outputs of one record come in this order: alerts by code (cell over/under voltage, sensor
over/under temperature, pack discharge then charge current, then the latched codes), within
a code by cell, clears (falling severity) before raises (rising severity); then the estimates.
Means are summed as numpy sums them (pairwise), so they equal version 1.1's to the bit.

Cost: in the common case (everything inside limits, no channel in play) a record compares
each cell and sensor with the loosest level of its side and touches no channel: ``busy``
counts the channels of each per-cell/per-sensor code that are not idle (all zeros), and
only while it is non-zero are all of that code's channels stepped.

Alert messages quote more than an output row's value and threshold (the pack current, the
exposure, the C-rates, the coldest sensor's reading); the kernel writes that context into
`EXTRA` columns after the SDK's, and `outputs` words the messages from them.

State (version 2): per code an int64 array of debounce channels (``[cells, 3 levels, 7]``,
``[temps, 3, 7]``, ``[2 sides, 3, 7]`` or ``[3, 7]``; levels in the chemistry's order),
``busy``, ``latch`` (last violating ts per latched code and level) and ``last_slot``.
`migrate` reads version 1 (``{"channels": {code: {"<code>:<severity>:<index>": [...]}}, "last_slot",
"latch": {code: [ts | null per level]}}``) with every counter, tally and latch carried.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from twin_stream import sdk
from twin_stream.battery.chemistry import LimitLevel, LimitSet
from twin_stream.sdk.emit import AUX, CELL, CODE, ROW, SEVERITY, STATUS, VALUE
from twin_stream.sdk.outputs import SEVERITIES

FloatArray = npt.NDArray[np.float64]

# output codes: their order in model.json
(COV, CUV, COT, CUT, CH_UT, CH_OT, CH_OC, POC) = range(8)
(VMIN, VMAX, VMEAN, TMAX, BELOW_AH, ABOVE_AH) = range(8, 14)

LEVELS = 3  # at most one level per severity and side
NO_TS = -(2**62)  # latch / last_slot: none
_MAS_PER_AH = 3_600_000_000  # mA*ms in one Ah
MAX_BREAKS = 16  # derating breakpoints a parameter row holds

# level sets, each SET_W wide in the parameter row: [n, hysteresis, thresholds[3], ranks[3]]
S_OV, S_UV, S_OT, S_UT, S_DIS, S_CHG, S_CUT, S_COT, S_COC = range(9)
SET_W = 2 + 2 * LEVELS
# parameter row: debounce [raise_ms, clear_ms, raise_n, clear_n] per kind (cells, temps,
# current), then scalars, the level sets, the derating [n, from_degc[16], factor[16]]
P_LATCH, P_INTERVAL, P_EMIT, P_CHARGE_A, P_COEF, P_TREF, P_CAP = range(12, 19)
P_SETS = 19
P_DER = P_SETS + 9 * SET_W
P_WIDTH = P_DER + 1 + 2 * MAX_BREAKS
KIND_CELLS, KIND_TEMPS, KIND_CURRENT = 0, 1, 2

X0 = sdk.OUT_COLUMNS  # extra output columns: message context, see `outputs`
EXTRA = 4


# ------------------------------------------------------------------------------ kernels
@sdk.kernel
def _fin(x):  # type: ignore[no-untyped-def]
    return x if math.isfinite(x) else 0.0


@sdk.kernel
def _block_sum(a, lo, n):  # type: ignore[no-untyped-def]
    """numpy's pairwise sum of n <= 128 values (non-finite ones as 0)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += _fin(a[lo + i])
        return res
    r = np.empty(8)
    for j in range(8):
        r[j] = _fin(a[lo + j])
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += _fin(a[lo + i + j])
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += _fin(a[lo + i])
        i += 1
    return res


@sdk.kernel
def _finite_sum(a, n):  # type: ignore[no-untyped-def]
    """Sum of the finite values of a[:n], bit for bit as numpy's `sum`: pairwise, halves
    rounded down to a multiple of 8 down to blocks of at most 128 (numba's cache cannot hold
    a recursive function, hence the explicit stack)."""
    if n <= 128:
        return _block_sum(a, 0, n)
    lo_s = np.empty(64, np.int64)
    n_s = np.empty(64, np.int64)
    stage = np.empty(64, np.int64)  # 0: sum the left half next, 1: the right, 2: combine
    left = np.empty(64)
    sp = 0
    lo_s[0] = 0
    n_s[0] = n
    stage[0] = 0
    ret = 0.0
    while sp >= 0:
        lo = lo_s[sp]
        m = n_s[sp]
        if m <= 128:
            ret = _block_sum(a, lo, m)
            sp -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[sp] == 0:
            stage[sp] = 1
            sp += 1
            lo_s[sp] = lo
            n_s[sp] = half
            stage[sp] = 0
        elif stage[sp] == 1:
            left[sp] = ret
            stage[sp] = 2
            sp += 1
            lo_s[sp] = lo + half
            n_s[sp] = m - half
            stage[sp] = 0
        else:
            ret = left[sp] + ret
            sp -= 1
    return ret


@sdk.kernel
def _put(out, w, row, code, raised, cell, value, thr, rank, x0, x1, x2, x3):  # type: ignore[no-untyped-def]
    w = sdk.alert(out, w, row, code, raised, cell, value, thr, rank)
    out[w - 1, X0] = x0
    out[w - 1, X0 + 1] = x1
    out[w - 1, X0 + 2] = x2
    out[w - 1, X0 + 3] = x3
    return w


@sdk.kernel
def _put_estimate(out, w, row, code, value):  # type: ignore[no-untyped-def]
    w = sdk.estimate(out, w, row, code, value, np.nan)
    for k in range(EXTRA):
        out[w - 1, X0 + k] = np.nan
    return w


@sdk.kernel
def _event_order(P, s, base, ev, order):  # type: ignore[no-untyped-def]
    """The levels with an event, in emission order: clears by falling severity, then raises
    by rising severity. Returns how many."""
    n = int(P[s, base])
    k = 0
    for r in range(2, -1, -1):
        for lv in range(n):
            if ev[lv] == sdk.CLEAR and P[s, base + 2 + LEVELS + lv] == r:
                order[k] = lv
                k += 1
    for r in range(3):
        for lv in range(n):
            if ev[lv] == sdk.RAISE and P[s, base + 2 + LEVELS + lv] == r:
                order[k] = lv
                k += 1
    return k


@sdk.kernel
def _step_levels(chs, s, c, P, base, over, v, shift, has_shift, dt, kind, ev):  # type: ignore[no-untyped-def]
    """Step the level channels chs[s, c, level] of one value; events to ev. Returns (any
    event, change of the number of channels not idle)."""
    n = int(P[s, base])
    h = P[s, base + 1]
    d = 4 * kind
    hit = False
    busy = 0
    for lv in range(n):
        thr = P[s, base + 2 + lv]
        if has_shift:
            thr = thr + shift
        if over:
            rc = v > thr
            cc = v < thr - h
        else:
            rc = v < thr
            cc = v > thr + h
        # idle: all zeros (what the step leaves of a channel at rest; event tallies are
        # zeroed once read)
        idle = chs[s, c, lv, 1] == 0 and chs[s, c, lv, 0] == 0 and chs[s, c, lv, 3] == 0
        idle = idle and chs[s, c, lv, 5] == 0
        ev[lv] = sdk.NONE
        if idle and not rc:
            continue  # idle and no raise condition: what the step would say
        ch = chs[s, c, lv]
        e = sdk.debounce_step(
            ch, dt, rc, cc, False, 0, int(P[s, d]), int(P[s, d + 1]), int(P[s, d + 2]),
            int(P[s, d + 3]),
        )  # fmt: skip
        ev[lv] = e
        if e != sdk.NONE:
            hit = True
        now_idle = ch[1] == 0 and ch[0] == 0 and ch[3] == 0 and ch[5] == 0
        busy += (1 if idle else 0) - (1 if now_idle else 0)
    return hit, busy


@sdk.kernel
def _loop(  # type: ignore[no-untyped-def]
    slot, ts, dt_ms, gap, current, cells, temps, n_cells, n_temps, P,
    cov, cuv, cot, cut, busy, poc, ch_ut, ch_ot, ch_oc, latch, last_slot, out, start,
):  # fmt: skip
    ev = np.zeros(LEVELS, np.int64)
    order = np.zeros(LEVELS, np.int64)
    lat_ev = np.zeros(2, np.int64)  # level-0 events of charge_under/over_temperature
    lat_tally = np.zeros(2, np.int64)
    w = 0
    for i in range(start, ts.size):
        s = slot[i]
        nc = n_cells[s]
        nt = n_temps[s]
        if not sdk.room(out, w, 6 * (nc + nt) + 21):
            return i, w
        dt = 0 if gap[i] else dt_ms[i]
        cur = current[i]
        cap = P[s, P_CAP]
        # sensors: coldest / hottest reading (NaN skipped, as np.fmin/fmax), first coldest /
        # hottest finite sensor, finite count
        tmin = np.nan
        tmax = np.nan
        icold = -1
        ihot = -1
        nfin = 0
        for j in range(nt):
            x = temps[i, j]
            if x == x:
                if not tmin <= x:
                    tmin = x
                if not tmax >= x:
                    tmax = x
                if math.isfinite(x):
                    nfin += 1
                    if icold < 0 or x < temps[i, icold]:
                        icold = j
                    if ihot < 0 or x > temps[i, ihot]:
                        ihot = j
        has_shift = P[s, P_COEF] != 0.0 and nt > 0
        shift = 0.0
        if has_shift and nfin > 0:
            mean = _finite_sum(temps[i], nt) / nfin
            shift = P[s, P_COEF] * (mean - P[s, P_TREF])

        # per-cell and per-sensor levels
        for grp in range(4):
            base = P_SETS + grp * SET_W
            if P[s, base] == 0:
                continue
            over = grp in (S_OV, S_OT)
            if grp < 2:
                chs = cov if grp == S_OV else cuv
                vals = cells[i]
                count = nc
                kind = KIND_CELLS
                shifted = has_shift
            else:
                chs = cot if grp == S_OT else cut
                vals = temps[i]
                count = nt
                kind = KIND_TEMPS
                shifted = False
            # the loosest level: a cell beyond none of them, its channels all idle, is done
            loosest = np.inf if over else -np.inf
            for lv in range(int(P[s, base])):
                thr = P[s, base + 2 + lv]
                if shifted:
                    thr = thr + shift
                loosest = min(loosest, thr) if over else max(loosest, thr)
            quiet = busy[s, grp] == 0
            for c in range(count):
                v = vals[c]
                if quiet and not (v > loosest if over else v < loosest):
                    continue
                hit, moved = _step_levels(chs, s, c, P, base, over, v, shift, shifted, dt, kind, ev)
                busy[s, grp] += moved
                if not hit:
                    continue
                for q in range(_event_order(P, s, base, ev, order)):
                    lv = order[q]
                    thr = P[s, base + 2 + lv]
                    if shifted:
                        thr = thr + shift
                    rank = int(P[s, base + 2 + LEVELS + lv])
                    w = _put(
                        out, w, i, COV + grp, ev[lv] == sdk.RAISE, c, v, thr, rank,
                        np.nan, np.nan, np.nan, np.nan,
                    )  # fmt: skip

        # pack current, discharge then charge side
        crate = cur / cap
        for side in range(2):
            base = P_SETS + (S_DIS + side) * SET_W
            if P[s, base] == 0:
                continue
            hit, _ = _step_levels(
                poc, s, side, P, base, side == 0, crate, 0.0, False, dt, KIND_CURRENT, ev
            )
            if not hit:
                continue
            for q in range(_event_order(P, s, base, ev, order)):
                lv = order[q]
                thr = P[s, base + 2 + lv]
                rank = int(P[s, base + 2 + LEVELS + lv])
                w = _put(
                    out, w, i, POC, ev[lv] == sdk.RAISE, -1, crate * cap, thr * cap, rank,
                    float(side), crate, thr, np.nan,
                )  # fmt: skip

        # latched charge conditions
        charge = -cur
        if charge < 0.0:
            charge = 0.0  # as np.maximum: NaN stays NaN
        charging = cur < -P[s, P_CHARGE_A]
        latch_ms = int(P[s, P_LATCH])
        lat_ev[0] = sdk.NONE
        lat_ev[1] = sdk.NONE
        for L in range(3):
            base = P_SETS + (S_CUT + L) * SET_W
            n_lv = int(P[s, base])
            if n_lv == 0 or (L < 2 and nt == 0):
                continue
            h = P[s, base + 1]
            over = L > 0
            if L == 0:
                chs2 = ch_ut
                sig = tmin
                kind = KIND_TEMPS
            elif L == 1:
                chs2 = ch_ot
                sig = tmax
                kind = KIND_TEMPS
            else:
                chs2 = ch_oc
                sig = charge / cap
                kind = KIND_CURRENT
            factor = 1.0
            derated = False
            nb = int(P[s, P_DER])
            if L == 2 and nb > 0:
                derated = True
                if nfin > 0:
                    factor = np.nan  # below the first breakpoint: does not apply
                    if math.isfinite(tmin):
                        for b in range(nb):
                            if P[s, P_DER + 1 + b] <= tmin:
                                factor = P[s, P_DER + 1 + MAX_BREAKS + b]
                else:
                    factor = P[s, P_DER + MAX_BREAKS + nb]  # no reading: the warmest band
            known = math.isfinite(sig)
            d = 4 * kind
            hit = False
            for lv in range(n_lv):
                thr = P[s, base + 2 + lv]
                if derated:
                    thr = factor * thr
                beyond = sig > thr if over else sig < thr
                viol = beyond and charging
                if viol:
                    latch[s, L, lv] = ts[i]
                last = latch[s, L, lv]
                recent = last != NO_TS and ts[i] - last <= latch_ms
                clr = not recent and known
                if L < 2:
                    back = sig < thr - h if over else sig > thr + h
                    clr = clr or back
                if not recent:
                    latch[s, L, lv] = NO_TS
                ev[lv] = sdk.NONE
                if not viol:
                    idle = chs2[s, lv, 1] == 0 and chs2[s, lv, 0] == 0 and chs2[s, lv, 3] == 0
                    if idle and chs2[s, lv, 5] == 0:
                        continue  # idle and no raise condition: what the step would say
                hold = recent and not viol and not clr
                weight = int(np.rint(charge * 1000.0)) * dt if viol else 0
                e = sdk.debounce_step(
                    chs2[s, lv], dt, viol, clr, hold, weight, int(P[s, d]), int(P[s, d + 1]),
                    int(P[s, d + 2]), int(P[s, d + 3]),
                )  # fmt: skip
                ev[lv] = e
                if e != sdk.NONE:
                    hit = True
            if not hit:
                continue
            sensor = ihot if L == 1 else icold
            if L < 2 and ev[0] != sdk.NONE:
                lat_ev[L] = ev[0]
                lat_tally[L] = chs2[s, 0, sdk.TALLY]
            for q in range(_event_order(P, s, base, ev, order)):
                lv = order[q]
                thr = P[s, base + 2 + lv]
                if derated:
                    thr = factor * thr
                rank = int(P[s, base + 2 + LEVELS + lv])
                tally = float(chs2[s, lv, sdk.TALLY])
                chs2[s, lv, sdk.TALLY] = 0  # read: an idle channel is all zeros
                raised = ev[lv] == sdk.RAISE
                if L < 2:
                    w = _put(
                        out, w, i, CH_UT + L, raised, sensor, sig, thr, rank,
                        cur, tally, np.nan, np.nan,
                    )  # fmt: skip
                else:
                    t_s = temps[i, sensor] if sensor >= 0 else np.nan
                    w = _put(
                        out, w, i, CH_OC, raised, sensor, sig * cap, thr * cap, rank,
                        sig, tally, t_s, thr,
                    )  # fmt: skip

        # estimates at the first sample of each interval
        k = ts[i] // int(P[s, P_INTERVAL])
        entry = k != last_slot[s]
        last_slot[s] = k
        if entry and P[s, P_EMIT] != 0.0:
            if nc > 0:
                vmin = np.nan
                vmax = np.nan
                nfc = 0
                for c in range(nc):
                    x = cells[i, c]
                    if x == x:
                        if not vmin <= x:
                            vmin = x
                        if not vmax >= x:
                            vmax = x
                        if math.isfinite(x):
                            nfc += 1
                if vmin == vmin:
                    vmean = _finite_sum(cells[i], nc) / nfc if nfc > 0 else np.nan
                    w = _put_estimate(out, w, i, VMIN, vmin)
                    w = _put_estimate(out, w, i, VMAX, vmax)
                    w = _put_estimate(out, w, i, VMEAN, vmean)
            if tmax == tmax:
                w = _put_estimate(out, w, i, TMAX, tmax)
        for L in range(2):
            if lat_ev[L] != sdk.NONE:
                w = _put_estimate(out, w, i, BELOW_AH + L, lat_tally[L] / _MAS_PER_AH)
    return ts.size, w


# ------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class _Levels:
    """The levels of one set resolved from the chemistry: thresholds, severities, hysteresis."""

    thresholds: tuple[float, ...]
    severities: tuple[str, ...]
    ranks: tuple[int, ...]
    hysteresis: float


# level set (S_*) -> (limit key, side, message subject, value format)
_SETS: tuple[tuple[str, str, str, str], ...] = (
    ("cell_voltage", "over", "cell", ".3f"),
    ("cell_voltage", "under", "cell", ".3f"),
    ("temperature", "over", "sensor", ".1f"),
    ("temperature", "under", "sensor", ".1f"),
    ("pack_current", "over", "pack", ".1f"),
    ("pack_current", "under", "pack", ".1f"),
    ("charge_temperature", "under", "", ""),
    ("charge_temperature", "over", "", ""),
    ("charge_current", "over", "", ""),
)
# version-1 channel key prefixes -> (state field, side index or None, level set)
_V1_PREFIXES: dict[str, tuple[str, int | None, int]] = {
    "cell_over_voltage": ("cell_over_voltage", None, S_OV),
    "cell_under_voltage": ("cell_under_voltage", None, S_UV),
    "cell_over_temperature": ("cell_over_temperature", None, S_OT),
    "cell_under_temperature": ("cell_under_temperature", None, S_UT),
    "pack_over_current:discharge": ("pack_over_current", 0, S_DIS),
    "pack_over_current:charge": ("pack_over_current", 1, S_CHG),
}
_V1_LATCHED = ("charge_under_temperature", "charge_over_temperature", "charge_over_current")
_CODES = (  # alert codes by output code (model.json's order)
    "cell_over_voltage",
    "cell_under_voltage",
    "cell_over_temperature",
    "cell_under_temperature",
    *_V1_LATCHED,
    "pack_over_current",
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def numbered(subject: str, idx: int) -> str:
    """Unambiguous channel name: ``cell #18 (index 17)`` (# is 1-based, index 0-based)."""
    return f"{subject} #{idx + 1} (index {idx})"


def _resolve_levels(limit: LimitSet, side: str, hysteresis: float | None, where: str) -> _Levels:
    levels: tuple[LimitLevel, ...] = limit.over if side == "over" else limit.under
    severities = tuple(lv.severity for lv in levels)
    for sev in severities:
        if sev not in SEVERITIES:
            known = ", ".join(SEVERITIES)
            raise sdk.ContractError(f"{where}: unknown severity {sev!r} (known: {known})")
    if len(set(severities)) != len(severities):
        raise sdk.ContractError(
            f"{where}: each severity may appear once per side, got {severities}"
        )
    hyst = limit.hysteresis if hysteresis is None else hysteresis
    if hyst < 0:
        raise sdk.ContractError(f"{where}: hysteresis must be >= 0, got {hyst}")
    return _Levels(
        thresholds=tuple(float(lv.threshold) for lv in levels),
        severities=severities,
        ranks=tuple(SEVERITIES.index(s) for s in severities),
        hysteresis=float(hyst),
    )


@sdk.register_model
class VoltageMonitor(sdk.KernelModel):
    """Levelled cell-voltage, temperature and current alerts with debounce and hysteresis."""

    extra_columns: ClassVar[int] = EXTRA

    def __init__(self, params: Mapping[str, Any], spec: sdk.BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        self._latch_ms = _ms(p["charge_latch_s"])
        self._capacity = float(spec.capacity_ah)
        v_hyst = float(p["voltage_hysteresis_v"])
        t_hyst = float(p["temperature_hysteresis_degc"])
        overrides: dict[str, float | None] = {
            "cell_voltage": v_hyst if v_hyst >= 0 else None,
            "temperature": t_hyst if t_hyst >= 0 else None,
            "charge_temperature": t_hyst if t_hyst >= 0 else None,
        }
        # per level set; None where the chemistry has no such levels
        self._levels: list[_Levels | None] = []
        for key, side, _, _ in _SETS:
            limit = spec.limits.get(key)
            lv = None
            if limit is not None:
                where = f"{spec.chemistry.name}.limits.{key}.{side}"
                lv = _resolve_levels(limit, side, overrides.get(key), where)
            self._levels.append(lv if lv is not None and lv.thresholds else None)
        der = spec.limits["charge_current"].derating if "charge_current" in spec.limits else None
        if der is not None and len(der.from_degc) > MAX_BREAKS:
            raise sdk.ContractError(
                f"{spec.chemistry.name}.limits.charge_current.derating: at most {MAX_BREAKS} "
                f"breakpoints, got {len(der.from_degc)}"
            )
        self._derating = der
        self._row = self._param_row()

    def _param_row(self) -> FloatArray:
        p = self.params
        row = np.zeros(P_WIDTH)
        for k, pre in enumerate(("", "temperature_", "current_")):
            row[4 * k] = _ms(p[f"{pre}raise_debounce_s"])
            row[4 * k + 1] = _ms(p[f"{pre}clear_debounce_s"])
            row[4 * k + 2] = int(p[f"{pre}raise_samples"])
            row[4 * k + 3] = int(p[f"{pre}clear_samples"])
        row[P_LATCH] = self._latch_ms
        row[P_INTERVAL] = max(1, _ms(p["estimate_interval_s"]))
        row[P_EMIT] = 1.0 if p["emit_cell_voltage_estimates"] else 0.0
        row[P_CHARGE_A] = float(p["charge_current_a"])
        row[P_COEF] = float(p["temperature_coefficient_mv_per_degc"]) / 1000.0
        row[P_TREF] = float(p["temperature_reference_degc"])
        row[P_CAP] = self._capacity
        for k, lv in enumerate(self._levels):
            if lv is None:
                continue
            base = P_SETS + k * SET_W
            n = len(lv.thresholds)
            row[base] = n
            row[base + 1] = lv.hysteresis
            row[base + 2 : base + 2 + n] = lv.thresholds
            row[base + 2 + LEVELS : base + 2 + LEVELS + n] = lv.ranks
        if self._derating is not None:
            nb = len(self._derating.from_degc)
            row[P_DER] = nb
            row[P_DER + 1 : P_DER + 1 + nb] = self._derating.from_degc
            row[P_DER + 1 + MAX_BREAKS : P_DER + 1 + MAX_BREAKS + nb] = self._derating.factor
        return row

    def param_row(self) -> FloatArray:
        return self._row

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        return 6 * (n_cells + n_temps) + 21

    def run(self, blk, params, state, out, start):  # type: ignore[no-untyped-def]
        return _loop(  # type: ignore[no-any-return]
            blk.slot,
            blk.ts,
            blk.dt_ms,
            blk.gap,
            blk.current,
            blk.cells,
            blk.temps,
            blk.n_cells,
            blk.n_temps,
            params,
            state["cell_over_voltage"],
            state["cell_under_voltage"],
            state["cell_over_temperature"],
            state["cell_under_temperature"],
            state["busy"],
            state["pack_over_current"],
            state["charge_under_temperature"],
            state["charge_over_temperature"],
            state["charge_over_current"],
            state["latch"],
            state["last_slot"],
            out,
            start,
        )

    # -- state of version 1 ------------------------------------------------------------
    def migrate(self, state: sdk.State) -> sdk.State:
        """Version 1 (dict channels keyed "<code>:<severity>:<index>") -> arrays; channels of
        severities the chemistry no longer has are dropped."""
        if state.get("version") != 1:
            raise sdk.ContractError(
                f"voltage_monitor: state version {state.get('version')!r} is not "
                f"{self.state_spec.version} and not 1 (the only version it migrates)"
            )
        new = sdk.StateArrays(self.state_spec).to_dict(0, 0, 0)
        per_index: dict[str, dict[int, list[list[int]]]] = {}

        def level_of(k: int, sev: str) -> int | None:
            lv = self._levels[k]
            if lv is None or sev not in lv.severities:
                return None
            return lv.severities.index(sev)

        for chans in state.get("channels", {}).values():
            for key, values in chans.items():
                ch = [*([int(x) for x in values] + [0] * sdk.CHANNEL)[: sdk.CHANNEL - 1], 0]
                if key.count(":") == 1:  # a latched code: "<code>:<severity>"
                    code, sev = key.split(":")
                    if code not in _V1_LATCHED:
                        continue
                    lvl = level_of(S_CUT + _V1_LATCHED.index(code), sev)
                    if lvl is not None:
                        new[code][lvl] = ch
                    continue
                prefix, sev, idx = key.rsplit(":", 2)
                if prefix not in _V1_PREFIXES:
                    continue
                field, side, k = _V1_PREFIXES[prefix]
                lvl = level_of(k, sev)
                if lvl is None:
                    continue
                if side is not None:
                    new[field][side][lvl] = ch
                    continue
                rows = per_index.setdefault(field, {})
                rows.setdefault(int(idx), [[0] * sdk.CHANNEL for _ in range(LEVELS)])[lvl] = ch
        for field, rows in per_index.items():
            count = max(rows) + 1
            empty = [[0] * sdk.CHANNEL for _ in range(LEVELS)]
            new[field] = [rows.get(i, empty) for i in range(count)]
        for code, last in state.get("latch", {}).items():
            if code in _V1_LATCHED:
                row = new["latch"][_V1_LATCHED.index(code)]
                for lvl, t in enumerate(list(last)[:LEVELS]):
                    row[lvl] = NO_TS if t is None else int(t)
        slot = state.get("last_slot")
        new["last_slot"] = NO_TS if slot is None else int(slot)
        new["busy"] = [
            sum(1 for row in new[f] for ch in row if ch[0] or ch[1] or ch[3] or ch[5])
            for f in _CODES[:4]
        ]
        return new

    # -- outputs -------------------------------------------------------------------------
    def outputs(self, rows: FloatArray, ts: npt.NDArray[np.int64]) -> list[sdk.Output]:
        """Emitted rows as alerts (messages worded from the extra columns) and estimates."""
        names = list(self.manifest.outputs)
        specs = list(self.manifest.outputs.values())
        res: list[sdk.Output] = []
        for r in rows.tolist():
            code = int(r[CODE])
            t = int(ts[int(r[ROW])])
            if specs[code].kind == "estimate":
                res.append(
                    sdk.Estimate(t, self.name, names[code], r[VALUE], specs[code].unit, None)
                )
                continue
            res.append(self._alert(t, code, r))
        return res

    def _alert(self, t: int, code: int, r: list[float]) -> sdk.Alert:
        raised = r[STATUS] == 1
        cell = int(r[CELL])
        sev = SEVERITIES[int(r[SEVERITY])]
        value, threshold = r[VALUE], r[AUX]
        x = r[X0 : X0 + EXTRA]
        if code <= CUT:
            message, unit = self._cell_message(code, raised, cell, sev, value, threshold)
        elif code == POC:
            message, unit = self._pack_message(int(x[0]), raised, sev, x[1], x[2]), "A"
        elif code == CH_OC:
            message, unit = self._charge_current_message(raised, cell, sev, *x), "A"
        else:
            message = self._charge_temp_message(
                code == CH_OT, raised, cell, sev, value, threshold, x[0], x[1]
            )
            unit = "degC"
        return sdk.Alert(
            ts=t,
            model=self.name,
            code=_CODES[code],
            severity=sev,
            status="raised" if raised else "cleared",
            cell=None if cell < 0 else cell,
            value=value,
            threshold=threshold,
            unit=unit,
            message=message,
        )

    # -- messages (as version 1.1 worded them) ---------------------------------------------
    def _cell_message(
        self, code: int, raised: bool, cell: int, sev: str, value: float, threshold: float
    ) -> tuple[str, str]:
        key, side, subject, fmt = _SETS[code]
        lv = self._levels[code]
        assert lv is not None
        unit = self.spec.limits[key].unit
        name = numbered(subject, cell)
        v = format(value, fmt)
        over = side == "over"
        if raised:
            where = "above" if over else "below"
            return f"{name} at {v} {unit} {where} the {sev} limit {threshold:g} {unit}", unit
        where, sign = ("below", "minus") if over else ("above", "plus")
        message = (
            f"{name} back at {v} {unit}, {where} the {sev} limit "
            f"{threshold:g} {unit} {sign} hysteresis {lv.hysteresis:g} {unit}: cleared"
        )
        return message, unit

    def _pack_message(self, side: int, raised: bool, sev: str, c_val: float, c_thr: float) -> str:
        lv = self._levels[S_DIS + side]
        assert lv is not None
        cap = self._capacity
        value, threshold = c_val * cap, c_thr * cap
        what = "discharge" if side == 0 else "charge"
        v = f"{abs(value):.1f} A ({abs(c_val):.2f}C)"
        lim = f"{sev} {what}-current limit {abs(threshold):.1f} A ({abs(c_thr):g}C)"
        if raised:
            return f"pack {what} current {v} above the {lim}"
        h = lv.hysteresis * cap
        return (
            f"pack {what} current back at {v}, below the {lim} minus hysteresis {h:.1f} A: cleared"
        )

    def _charge_temp_message(
        self,
        over: bool,
        raised: bool,
        sensor: int,
        sev: str,
        sig: float,
        thr: float,
        current: float,
        tally: float,
    ) -> str:
        lv = self._levels[S_COT if over else S_CUT]
        assert lv is not None
        ah = tally / _MAS_PER_AH
        latch_s = f"{self._latch_ms / 1000.0:g} s"
        which = "hottest" if over else "coldest"
        where = numbered("sensor", sensor) if sensor >= 0 else "no sensor"
        limit = f"{sev} charge-temperature limit {thr:g} degC"
        side = "above" if over else "below"
        if raised:
            return (
                f"charging at {-current:.1f} A while the {which} {where} reads "
                f"{sig:.1f} degC, {side} the {limit}; {ah:.3f} Ah charged {side} it so "
                f"far (latched: clears after {latch_s} without such charging or with the "
                f"sensor back past the limit by the hysteresis {lv.hysteresis:g} degC)"
            )
        back = sig < thr - lv.hysteresis if over else sig > thr + lv.hysteresis
        why = (
            f"{which} {where} back at {sig:.1f} degC"
            if back
            else f"no charging {side} the limit for {latch_s} ({which} {where} at {sig:.1f} degC)"
        )
        return f"{limit}: {why}; {ah:.3f} Ah charged {side} it in this episode: cleared"

    def _charge_current_message(
        self,
        raised: bool,
        sensor: int,
        sev: str,
        sig: float,
        tally: float,
        temp: float,
        thr: float,
    ) -> str:
        cap = self._capacity
        ah = tally / _MAS_PER_AH
        latch_s = f"{self._latch_ms / 1000.0:g} s"
        value, threshold = sig * cap, thr * cap
        at = (
            f"at the coldest {numbered('sensor', sensor)} {temp:.1f} degC"
            if sensor >= 0
            else "without a temperature reading"
        )
        limit = f"{sev} charge-current limit {threshold:.1f} A ({thr:.2f}C {at})"
        if raised:
            return (
                f"charge current {value:.1f} A ({sig:.2f}C) above the {limit}; {ah:.3f} Ah "
                f"charged above it so far (latched: clears after {latch_s} without such "
                f"charging)"
            )
        return (
            f"no charging above the {limit} for {latch_s}; {ah:.3f} Ah charged above it "
            f"in this episode: cleared"
        )
