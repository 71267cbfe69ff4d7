"""voltage_monitor: levelled cell-voltage, temperature and current alerts, in event time.

Algorithm
---------
Limits are data: the levels (warning, critical, ...) and hysteresis of `cell_voltage`,
`temperature`, `charge_temperature`, `pack_current` and `charge_current` come from the battery
spec's chemistry (`spec.limits`), never from this code. Each (code, level, cell or sensor)
is one alert channel with a stable key such as ``"cell_over_voltage:critical:17"``; every
channel goes through `twin_stream.sdk.alerting.debounce`, the platform's one leaky-counter
debounce (foxBMS-style up/down counters in event time AND in samples, integers):

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
  level, channels ``pack_over_current:<side>:<level>``; value and threshold in A.
* Latched charge conditions, pack level, one channel per level (``<code>:<level>``):
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
    the last violating sample that do not violate themselves (the pulse gaps) *hold* the
    counters (neither add nor leak), later ones leak. Pulses of 3 s every 20 s raise on the
    second pulse; a single sample does not raise.
  - clear: no violating sample for ``charge_latch_s`` (with a valid signal), or, for the
    temperature codes, the signal back inside the limit with hysteresis; then the clear
    debounce. Pulses in the gaps hold the clear counter.
  - exposure: the charge moved in violating samples, ``sum(-I * dt)`` over the episode's
    violating samples (integer mA*ms in the channel's tally, the sample's current over the
    interval before it), from the first violating sample of the episode to the clear; it is
    in the raise and clear messages and, for the charge-temperature codes' first level, an
    estimate ``charge_below_limit_ah`` / ``charge_above_limit_ah`` at the raise and the
    clear. ``cell`` = the coldest (hottest) sensor's index at the deciding sample.
* Optional lead-acid-style compensation: ``temperature_coefficient_mv_per_degc`` k (default
  0, i.e. off) shifts every cell-voltage limit of a sample by ``k * (T_mean - T_ref)`` mV,
  with ``T_mean`` the mean of that sample's finite temperature sensors and ``T_ref`` =
  ``temperature_reference_degc`` (25 degC). A sample without any temperature is not shifted.
  Lead-acid practice is about -3 mV/degC per cell; leave it at 0 for Li-ion.
* Estimates ``min_cell_voltage`` / ``max_cell_voltage`` / ``mean_cell_voltage`` (V) and
  ``max_temperature`` at the first sample of every ``estimate_interval_s`` slot of event
  time (`cadence_rows`), if ``emit_cell_voltage_estimates``.

Cost: in the common case (everything inside limits, no channel active) a chunk costs a
handful of vectorised comparisons against the loosest level of each group; only channels in
play are walked sample by sample inside `debounce`.

State (JSON): ``{"version": 1, "channels": {code: {key: [raise_ms, active, clear_ms,
raise_n, clear_n, tally]}}, "last_slot": int | null, "latch": {code: [last violating ts
per level or null]}}``; idle channels are absent, so the state stays small. (A version-1
state without ``latch`` or with 3-entry channels is read as it is: the missing entries are
zeros.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.battery.chemistry import LimitLevel, LimitSet
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.alerting import Event, cadence_rows, debounce
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.contract import ContractError, Model, State, register_model
from twin_stream.sdk.outputs import SEVERITIES, Alert, Estimate, Output

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

STATE_VERSION = 1
_MAS_PER_AH = 3_600_000_000  # mA*ms in one Ah


@dataclass(frozen=True)
class _Group:
    """One alert code: which limit set and side it reads, and on which signal."""

    code: str
    limit_key: str  # key of spec.limits
    side: str  # "over" | "under"
    signal: str  # "cells" | "temps" | "current"
    subject: str  # word for the index in messages
    fmt: str  # value format in messages
    key_prefix: str = ""  # channel key prefix; default: the code


_GROUPS: tuple[_Group, ...] = (
    _Group("cell_over_voltage", "cell_voltage", "over", "cells", "cell", ".3f"),
    _Group("cell_under_voltage", "cell_voltage", "under", "cells", "cell", ".3f"),
    _Group("cell_over_temperature", "temperature", "over", "temps", "sensor", ".1f"),
    _Group("cell_under_temperature", "temperature", "under", "temps", "sensor", ".1f"),
    _Group(
        "pack_over_current",
        "pack_current",
        "over",
        "current",
        "pack",
        ".1f",
        "pack_over_current:discharge",
    ),
    _Group(
        "pack_over_current",
        "pack_current",
        "under",
        "current",
        "pack",
        ".1f",
        "pack_over_current:charge",
    ),
)


@dataclass(frozen=True)
class _Latched:
    """A latched pack-level charge condition."""

    code: str
    limit_key: str
    side: str  # side of the limit set read
    signal: str  # "temps" (coldest / hottest sensor) | "current" (charge C-rate)
    estimate: str  # exposure estimate name ("" = none)


_LATCHED: tuple[_Latched, ...] = (
    _Latched(
        "charge_under_temperature", "charge_temperature", "under", "temps", "charge_below_limit_ah"
    ),
    _Latched(
        "charge_over_temperature", "charge_temperature", "over", "temps", "charge_above_limit_ah"
    ),
    _Latched("charge_over_current", "charge_current", "over", "current", ""),
)


@dataclass(frozen=True)
class _Levels:
    """The levels of one group resolved from the chemistry: thresholds, severities, hysteresis."""

    thresholds: FloatArray  # (L,)
    severities: tuple[str, ...]
    ranks: tuple[int, ...]
    hysteresis: float


@lru_cache(maxsize=256)
def _channel_keys(prefix: str, severities: tuple[str, ...], count: int) -> tuple[str, ...]:
    """Channel keys, level-major: column l * count + i is `prefix:severities[l]:i`."""
    return tuple(f"{prefix}:{sev}:{i}" for sev in severities for i in range(count))


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
            raise ContractError(f"{where}: unknown severity {sev!r} (known: {known})")
    if len(set(severities)) != len(severities):
        raise ContractError(f"{where}: each severity may appear once per side, got {severities}")
    hyst = limit.hysteresis if hysteresis is None else hysteresis
    if hyst < 0:
        raise ContractError(f"{where}: hysteresis must be >= 0, got {hyst}")
    return _Levels(
        thresholds=np.array([lv.threshold for lv in levels], dtype=np.float64),
        severities=severities,
        ranks=tuple(SEVERITIES.index(s) for s in severities),
        hysteresis=float(hyst),
    )


@register_model("voltage_monitor")
class VoltageMonitor(Model):
    """Levelled cell-voltage, temperature and current alerts with debounce and hysteresis."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        # debounce per kind of quantity: parameters "<prefix>raise_debounce_s" and so on
        prefix = {"cells": "", "temps": "temperature_", "current": "current_"}
        self._raise_ms = {k: _ms(p[f"{pre}raise_debounce_s"]) for k, pre in prefix.items()}
        self._clear_ms = {k: _ms(p[f"{pre}clear_debounce_s"]) for k, pre in prefix.items()}
        self._raise_n = {k: int(p[f"{pre}raise_samples"]) for k, pre in prefix.items()}
        self._clear_n = {k: int(p[f"{pre}clear_samples"]) for k, pre in prefix.items()}
        self._latch_ms = _ms(p["charge_latch_s"])
        self._interval_ms = max(1, _ms(p["estimate_interval_s"]))
        self._emit_estimates = bool(p["emit_cell_voltage_estimates"])
        self._charge_current = float(p["charge_current_a"])
        self._coef_v = float(p["temperature_coefficient_mv_per_degc"]) / 1000.0
        self._t_ref = float(p["temperature_reference_degc"])
        self._capacity = float(spec.capacity_ah)
        v_hyst = float(p["voltage_hysteresis_v"])
        t_hyst = float(p["temperature_hysteresis_degc"])
        overrides: dict[str, float | None] = {
            "cell_voltage": v_hyst if v_hyst >= 0 else None,
            "temperature": t_hyst if t_hyst >= 0 else None,
            "charge_temperature": t_hyst if t_hyst >= 0 else None,
        }
        self._levels: dict[str, _Levels] = {}
        for g in _GROUPS:
            limit = spec.limits.get(g.limit_key)
            if limit is None:
                continue
            where = f"{spec.chemistry.name}.limits.{g.limit_key}.{g.side}"
            lv = _resolve_levels(limit, g.side, overrides.get(g.limit_key), where)
            if lv.thresholds.size:
                self._levels[g.key_prefix or g.code] = lv
        self._latched: dict[str, _Levels] = {}
        for lt in _LATCHED:
            limit = spec.limits.get(lt.limit_key)
            if limit is None:
                continue
            where = f"{spec.chemistry.name}.limits.{lt.limit_key}.{lt.side}"
            lv = _resolve_levels(limit, lt.side, overrides.get(lt.limit_key), where)
            if lv.thresholds.size:
                self._latched[lt.code] = lv

    def initial_state(self) -> State:
        return {"version": STATE_VERSION, "channels": {}, "last_slot": None, "latch": {}}

    # ----------------------------------------------------------------------------------
    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        if state.get("version") != STATE_VERSION:
            raise ContractError(
                f"voltage_monitor: state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        channels: dict[str, dict[str, list[int]]] = {
            code: {key: list(cs) for key, cs in chans.items()}
            for code, chans in state["channels"].items()
        }
        latch: dict[str, list[int | None]] = {
            code: list(v) for code, v in state.get("latch", {}).items()
        }
        last_slot: int | None = state["last_slot"]
        n = len(chunk)
        if n == 0:
            return [], {
                "version": STATE_VERSION,
                "channels": channels,
                "last_slot": last_slot,
                "latch": latch,
            }

        dt = chunk.integrable_dt_ms
        charging = chunk.current < -self._charge_current
        shift = self._voltage_shift(chunk.temps)
        ranked: list[tuple[tuple[int, ...], Output]] = []
        c_rate = (chunk.current / self._capacity)[:, None]

        for order, g in enumerate(_GROUPS):
            prefix = g.key_prefix or g.code
            lv = self._levels.get(prefix)
            if lv is None:
                continue
            if g.signal == "current":
                values = c_rate
            else:
                values = chunk.cells if g.signal == "cells" else chunk.temps
            if values.shape[1] == 0:
                continue
            thr = lv.thresholds[None, :]
            if g.signal == "cells" and shift is not None:
                thr = thr + shift[:, None]
            chans = channels.setdefault(prefix, {})
            events = self._group_events(g, lv, values, thr, chans, dt)
            if not chans:
                del channels[prefix]
            if not events:
                continue
            thr_rows = np.broadcast_to(thr, (n, lv.thresholds.size))
            n_idx = values.shape[1]
            for ev in events:
                level, idx = divmod(ev.column, n_idx)
                rank = lv.ranks[level]
                row = ev.row
                alert = self._alert(
                    g,
                    lv,
                    level,
                    idx,
                    ev.raised,
                    ts=int(chunk.ts[row]),
                    value=float(values[row, idx]),
                    threshold=float(thr_rows[row, level]),
                )
                # same sample: alerts before estimates, by group, cell; raises by rising
                # severity, clears by falling severity (critical clears before warning)
                key = (row, 0, order, idx, 1 if ev.raised else 0, rank if ev.raised else -rank)
                ranked.append((key, alert))

        for k, lt in enumerate(_LATCHED):
            lv = self._latched.get(lt.code)
            if lv is None:
                continue
            ranked.extend(
                self._latched_outputs(len(_GROUPS) + k, lt, lv, chunk, charging, channels, latch)
            )

        rows, new_slot = cadence_rows(chunk.ts, last_slot, self._interval_ms)
        if self._emit_estimates and rows.size and chunk.cells.shape[1]:
            sel = chunk.cells[rows]
            vmin = np.fmin.reduce(sel, axis=1)
            vmax = np.fmax.reduce(sel, axis=1)
            vmean = _nanmean_rows(sel)
            name = self.name
            for r, lo, hi, mean in zip(
                rows.tolist(), vmin.tolist(), vmax.tolist(), vmean.tolist(), strict=True
            ):
                if lo != lo:  # NaN: no cell reading in this sample
                    continue
                ts = int(chunk.ts[r])
                ranked.append(((r, 1, 0), Estimate(ts, name, "min_cell_voltage", lo, "V", None)))
                ranked.append(((r, 1, 1), Estimate(ts, name, "max_cell_voltage", hi, "V", None)))
                ranked.append(((r, 1, 2), Estimate(ts, name, "mean_cell_voltage", mean, "V", None)))
        if self._emit_estimates and rows.size and chunk.temps.shape[1]:
            tmax = np.fmax.reduce(chunk.temps[rows], axis=1)
            name = self.name
            for r, hot in zip(rows.tolist(), tmax.tolist(), strict=True):
                if hot == hot:  # not NaN: some sensor read
                    est = Estimate(int(chunk.ts[r]), name, "max_temperature", hot, "degC", None)
                    ranked.append(((r, 1, 3), est))

        ranked.sort(key=lambda item: item[0])
        new_state: State = {
            "version": STATE_VERSION,
            "channels": channels,
            "last_slot": new_slot,
            "latch": latch,
        }
        return [out for _, out in ranked], new_state

    # ----------------------------------------------------------------------------------
    def _voltage_shift(self, temps: FloatArray) -> FloatArray | None:
        """Per-sample shift [V] of the cell-voltage limits, or None when compensation is off."""
        if self._coef_v == 0.0 or temps.shape[1] == 0:
            return None
        finite = np.isfinite(temps)
        count = finite.sum(axis=1)
        total = np.where(finite, temps, 0.0).sum(axis=1)
        mean = total / np.maximum(count, 1)
        shift: FloatArray = np.where(count > 0, self._coef_v * (mean - self._t_ref), 0.0)
        return shift

    def _group_events(
        self,
        g: _Group,
        lv: _Levels,
        values: FloatArray,
        thr: FloatArray,
        chans: dict[str, list[int]],
        dt: IntArray,
    ) -> list[Event]:
        """Debounce events of one group; column = level * n + index."""
        over = g.side == "over"
        # quick test against the loosest level: the common case stops here
        loosest = thr.min(axis=1) if over else thr.max(axis=1)
        quick = values > loosest[:, None] if over else values < loosest[:, None]
        if not chans and not quick.any():
            return []
        n, count = values.shape
        v3 = values[:, None, :]
        t3 = thr[:, :, None]
        if over:
            raise_c = v3 > t3
            clear_c = v3 < t3 - lv.hysteresis
        else:
            raise_c = v3 < t3
            clear_c = v3 > t3 + lv.hysteresis
        k = lv.thresholds.size * count
        raise_m = np.broadcast_to(raise_c, (n, lv.thresholds.size, count)).reshape(n, k)
        clear_m = np.broadcast_to(clear_c, (n, lv.thresholds.size, count)).reshape(n, k)
        keys = _channel_keys(g.key_prefix or g.code, lv.severities, count)
        s = g.signal
        return debounce(
            dt,
            raise_m,
            clear_m,
            keys,
            chans,
            self._raise_ms[s],
            self._clear_ms[s],
            self._raise_n[s],
            self._clear_n[s],
        )

    def _latched_outputs(
        self,
        order: int,
        lt: _Latched,
        lv: _Levels,
        chunk: Chunk,
        charging: BoolArray,
        channels: dict[str, dict[str, list[int]]],
        latch: dict[str, list[int | None]],
    ) -> list[tuple[tuple[int, ...], Output]]:
        n = len(chunk)
        n_lv = lv.thresholds.size
        temps = chunk.temps
        over = lt.side == "over"
        want_max = over and lt.signal == "temps"  # the sensor to name: hottest, else coldest
        has_t = temps.shape[1] > 0
        if lt.signal == "temps":
            if not has_t:
                return []
            # coldest (under) / hottest (over) valid sensor; NaN where none reads
            sig = np.fmax.reduce(temps, axis=1) if over else np.fmin.reduce(temps, axis=1)
            thr = np.broadcast_to(lv.thresholds[None, :], (n, n_lv))
        else:
            sig = np.maximum(-chunk.current, 0.0) / self._capacity  # charge C-rate
            derating = self.spec.limits[lt.limit_key].derating
            if derating is not None:
                if has_t:
                    factor = derating.factor_at(np.fmin.reduce(temps, axis=1))
                    no_reading = ~np.isfinite(temps).any(axis=1)
                    factor = np.where(no_reading, derating.factor[-1], factor)
                else:
                    factor = np.full(n, derating.factor[-1])
                thr = factor[:, None] * lv.thresholds[None, :]
            else:
                thr = np.broadcast_to(lv.thresholds[None, :], (n, n_lv))
        chans = channels.get(lt.code, {})
        last = list(latch.get(lt.code, [None] * n_lv))
        last += [None] * (n_lv - len(last))
        s2 = sig[:, None]
        with np.errstate(invalid="ignore"):
            beyond = s2 > thr if over else s2 < thr
        viol = beyond & charging[:, None]
        if not chans and not viol.any() and all(x is None for x in last):
            return []
        ts = chunk.ts
        # last violating ts up to each row (the carried one before the chunk)
        rows_idx = np.where(viol, np.arange(n)[:, None], -1)
        last_row = np.maximum.accumulate(rows_idx, axis=0)
        carried = np.array([-(2**62) if x is None else x for x in last], dtype=np.int64)
        last_ts = np.where(last_row >= 0, ts[np.maximum(last_row, 0)], carried[None, :])
        recent = (ts[:, None] - last_ts) <= self._latch_ms
        known = np.isfinite(sig)[:, None]
        clear = ~recent & known
        if lt.signal == "temps":
            h = lv.hysteresis
            with np.errstate(invalid="ignore"):
                back = s2 < thr - h if over else s2 > thr + h
            clear = clear | back
        hold = recent & ~viol & ~clear
        charge_ma = np.rint(np.maximum(-chunk.current, 0.0) * 1000.0).astype(np.int64)
        weight = np.where(viol, (charge_ma * chunk.integrable_dt_ms)[:, None], 0)
        keys = tuple(f"{lt.code}:{sev}" for sev in lv.severities)
        s = lt.signal
        events = debounce(
            chunk.integrable_dt_ms,
            viol,
            clear,
            keys,
            chans,
            self._raise_ms[s],
            self._clear_ms[s],
            self._raise_n[s],
            self._clear_n[s],
            hold=hold,
            tally=weight.astype(np.int64),
        )
        if chans:
            channels[lt.code] = chans
        else:
            channels.pop(lt.code, None)
        new_last = [
            int(last_ts[-1, j]) if last_ts[-1, j] > -(2**62) and recent[-1, j] else None
            for j in range(n_lv)
        ]
        if any(x is not None for x in new_last):
            latch[lt.code] = new_last
        else:
            latch.pop(lt.code, None)
        out: list[tuple[tuple[int, ...], Output]] = []
        for ev in events:
            row, level = ev.row, ev.column
            rank = lv.ranks[level]
            sensor = None
            t_row = temps[row] if has_t else np.empty(0)
            if t_row.size and np.isfinite(t_row).any():
                pick = np.where(np.isfinite(t_row), t_row, -np.inf if want_max else np.inf)
                sensor = int(np.argmax(pick) if want_max else np.argmin(pick))
            alert = self._latched_alert(
                lt, lv, level, ev, chunk, row, float(sig[row]), float(thr[row, level]), sensor
            )
            key = (row, 0, order, 0, 1 if ev.raised else 0, rank if ev.raised else -rank)
            out.append((key, alert))
            if lt.estimate and level == 0:
                est = Estimate(
                    int(ts[row]), self.name, lt.estimate, ev.tally / _MAS_PER_AH, "Ah", None
                )
                out.append(((row, 1, 10 + order, 1 if ev.raised else 0), est))
        return out

    def _latched_alert(
        self,
        lt: _Latched,
        lv: _Levels,
        level: int,
        ev: Event,
        chunk: Chunk,
        row: int,
        sig: float,
        thr: float,
        sensor: int | None,
    ) -> Alert:
        sev = lv.severities[level]
        over = lt.side == "over"
        current = float(chunk.current[row])
        ah = ev.tally / _MAS_PER_AH
        latch_s = f"{self._latch_ms / 1000.0:g} s"
        cap = self._capacity
        if lt.signal == "temps":
            unit = "degC"
            which = "hottest" if over else "coldest"
            where = numbered("sensor", sensor) if sensor is not None else "no sensor"
            limit = f"{sev} charge-temperature limit {thr:g} degC"
            side = "above" if over else "below"
            value, threshold = sig, thr
            if ev.raised:
                message = (
                    f"charging at {-current:.1f} A while the {which} {where} reads "
                    f"{sig:.1f} degC, {side} the {limit}; {ah:.3f} Ah charged {side} it so "
                    f"far (latched: clears after {latch_s} without such charging or with the "
                    f"sensor back past the limit by the hysteresis {lv.hysteresis:g} degC)"
                )
            else:
                back = sig < thr - lv.hysteresis if over else sig > thr + lv.hysteresis
                why = (
                    f"{which} {where} back at {sig:.1f} degC"
                    if back
                    else f"no charging {side} the limit for {latch_s} ({which} {where} at "
                    f"{sig:.1f} degC)"
                )
                message = f"{limit}: {why}; {ah:.3f} Ah charged {side} it in this episode: cleared"
        else:
            unit = "A"
            value, threshold = sig * cap, thr * cap
            t_row = chunk.temps[row] if chunk.temps.shape[1] else np.empty(0)
            at = (
                f"at the coldest {numbered('sensor', sensor)} {float(t_row[sensor]):.1f} degC"
                if sensor is not None
                else "without a temperature reading"
            )
            limit = f"{sev} charge-current limit {threshold:.1f} A ({thr:.2f}C {at})"
            if ev.raised:
                message = (
                    f"charge current {value:.1f} A ({sig:.2f}C) above the {limit}; {ah:.3f} Ah "
                    f"charged above it so far (latched: clears after {latch_s} without such "
                    f"charging)"
                )
            else:
                message = (
                    f"no charging above the {limit} for {latch_s}; {ah:.3f} Ah charged above it "
                    f"in this episode: cleared"
                )
        return Alert(
            ts=int(chunk.ts[row]),
            model=self.name,
            code=lt.code,
            severity=sev,
            status="raised" if ev.raised else "cleared",
            cell=sensor,
            value=value,
            threshold=threshold,
            unit=unit,
            message=message,
        )

    def _alert(
        self,
        g: _Group,
        lv: _Levels,
        level: int,
        idx: int,
        raised: bool,
        *,
        ts: int,
        value: float,
        threshold: float,
    ) -> Alert:
        sev = lv.severities[level]
        over = g.side == "over"
        cell: int | None = idx
        if g.signal == "current":
            cap = self._capacity
            c_val, c_thr = value, threshold
            value, threshold = value * cap, threshold * cap
            unit = "A"
            cell = None
            what = "discharge" if over else "charge"
            v = f"{abs(value):.1f} A ({abs(c_val):.2f}C)"
            lim = f"{sev} {what}-current limit {abs(threshold):.1f} A ({abs(c_thr):g}C)"
            if raised:
                message = f"pack {what} current {v} above the {lim}"
            else:
                h = lv.hysteresis * cap
                message = (
                    f"pack {what} current back at {v}, below the {lim} minus hysteresis "
                    f"{h:.1f} A: cleared"
                )
        else:
            unit = self.spec.limits[g.limit_key].unit
            name = numbered(g.subject, idx)
            v = format(value, g.fmt)
            if raised:
                side = "above" if over else "below"
                message = f"{name} at {v} {unit} {side} the {sev} limit {threshold:g} {unit}"
            else:
                side, sign = ("below", "minus") if over else ("above", "plus")
                message = (
                    f"{name} back at {v} {unit}, {side} the {sev} limit "
                    f"{threshold:g} {unit} {sign} hysteresis {lv.hysteresis:g} {unit}: cleared"
                )
        return Alert(
            ts=ts,
            model=self.name,
            code=g.code,
            severity=sev,
            status="raised" if raised else "cleared",
            cell=cell,
            value=value,
            threshold=threshold,
            unit=unit,
            message=message,
        )


def _nanmean_rows(m: FloatArray) -> FloatArray:
    """Mean of the finite values of each row (NaN where a row has none)."""
    finite = np.isfinite(m)
    count = finite.sum(axis=1)
    total = np.where(finite, m, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(count > 0, total / count, np.nan)
    return out
