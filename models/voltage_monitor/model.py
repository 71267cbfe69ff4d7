"""voltage_monitor: levelled per-cell voltage and per-sensor temperature alerts, in event time.

Algorithm
---------
Limits are data: the levels (warning, critical, ...) and hysteresis of `cell_voltage`,
`temperature` and `charge_temperature` come from the battery spec's chemistry
(`spec.limits`), never from this code. Each (code, level, cell or sensor) is one alert
channel with a stable key such as ``"cell_over_voltage:critical:17"``; every channel goes
through `twin_stream.alerting.debounce`, the platform's one leaky-counter debounce in event
time (foxBMS-style up/down counter, integer milliseconds):

* raise condition of an over-limit channel: ``value > limit``; clear condition:
  ``value < limit - hysteresis`` (mirrored for under-limit channels). A channel raises after
  its raise condition has held, leakily, for ``raise_debounce_s`` of event time and clears
  after its clear condition has held for ``clear_debounce_s``. At 1 Hz and the default 2 s, a
  cell stepping over a limit raises on its second violating sample, one second after the
  first. Noise sitting at a limit raises once and clears once (no alert storm).
* Each level is its own channel, so crossing the critical limit while the warning is active
  raises the critical alert (escalation), and on the way down the critical alert clears
  before the warning one (events of one sample are ordered: raises by rising severity,
  clears by falling severity).
* NaN values (a missing cell or sensor) compare false both ways: they never violate and
  never clear. They count as "condition not held", so a half-built counter leaks away.
* Temperature: per-sensor over/under-temperature alerts (`cell_over_temperature`,
  `cell_under_temperature`, ``cell`` = sensor index) with their own, slower debounce, and
  ``charge_under_temperature`` (plus ``charge_over_temperature`` if the chemistry defines
  charge over-temperature levels): the chemistry's charge window, violated only while the
  pack is charging (``current < -charge_current_a``; + = discharge). Such an alert clears
  when the sensor is back inside the window (with hysteresis) or when charging has stopped,
  provided the sensor reads a value. This follows Li-ion practice (separate charge and
  discharge temperature windows, reference/domain.md) rather than compensating voltage
  thresholds.
* Optional lead-acid-style compensation: ``temperature_coefficient_mv_per_degc`` k (default
  0, i.e. off) shifts every cell-voltage limit of a sample by ``k * (T_mean - T_ref)`` mV,
  with ``T_mean`` the mean of that sample's finite temperature sensors and ``T_ref`` =
  ``temperature_reference_degc`` (25 degC). A sample without any temperature is not shifted.
  Lead-acid practice is about -3 mV/degC per cell (higher limits when cold); leave it at 0
  for Li-ion.
* Estimates ``min_cell_voltage`` / ``max_cell_voltage`` (V, confidence null) at the first
  sample of every ``estimate_interval_s`` slot of event time (`cadence_rows`), if
  ``emit_cell_voltage_estimates``: alerts are edge-triggered and say nothing about headroom,
  whereas the minute trend of the extreme cells shows a cell approaching a limit; it is what
  J1939 HVESS frames carry and costs two reductions over the cadence rows only.

Cost: in the common case (everything inside limits, no channel active) a chunk costs a
handful of vectorised comparisons against the loosest level of each group; only channels in
play are walked sample by sample inside `debounce`.

State (JSON): ``{"version": 1, "channels": {code: {key: [raise_ms, active, clear_ms]}},
"last_slot": int | null}``; idle channels are absent, so the state stays small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.alerting import cadence_rows, debounce
from twin_stream.chemistry import LimitLevel, LimitSet
from twin_stream.chunk import Chunk
from twin_stream.contract import ContractError, Model, State, register_model
from twin_stream.outputs import SEVERITIES, Alert, Estimate, Output
from twin_stream.spec import BatterySpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

STATE_VERSION = 1


@dataclass(frozen=True)
class _Group:
    """One alert code: which limit set and side it reads, and on which signal."""

    code: str
    limit_key: str  # key of spec.limits
    side: str  # "over" | "under"
    signal: str  # "cells" | "temps"
    subject: str  # word for the index in messages
    fmt: str  # value format in messages
    charging_only: bool = False


_GROUPS: tuple[_Group, ...] = (
    _Group("cell_over_voltage", "cell_voltage", "over", "cells", "cell", ".3f"),
    _Group("cell_under_voltage", "cell_voltage", "under", "cells", "cell", ".3f"),
    _Group("cell_over_temperature", "temperature", "over", "temps", "sensor", ".1f"),
    _Group("cell_under_temperature", "temperature", "under", "temps", "sensor", ".1f"),
    _Group(
        "charge_under_temperature",
        "charge_temperature",
        "under",
        "temps",
        "sensor",
        ".1f",
        charging_only=True,
    ),
    _Group(
        "charge_over_temperature",
        "charge_temperature",
        "over",
        "temps",
        "sensor",
        ".1f",
        charging_only=True,
    ),
)


@dataclass(frozen=True)
class _Levels:
    """The levels of one group resolved from the chemistry: thresholds, severities, hysteresis."""

    thresholds: FloatArray  # (L,)
    severities: tuple[str, ...]
    ranks: tuple[int, ...]
    hysteresis: float


@lru_cache(maxsize=256)
def _channel_keys(code: str, severities: tuple[str, ...], count: int) -> tuple[str, ...]:
    """Channel keys, level-major: column l * count + i is `code:severities[l]:i`."""
    return tuple(f"{code}:{sev}:{i}" for sev in severities for i in range(count))


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


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
    """Levelled cell-voltage and temperature alerts with debounce and hysteresis."""

    def __init__(self, params: Mapping[str, Any], spec: BatterySpec) -> None:
        super().__init__(params, spec)
        p = self.params
        self._raise_ms = {
            "cells": _ms(p["raise_debounce_s"]),
            "temps": _ms(p["temperature_raise_debounce_s"]),
        }
        self._clear_ms = {
            "cells": _ms(p["clear_debounce_s"]),
            "temps": _ms(p["temperature_clear_debounce_s"]),
        }
        self._interval_ms = max(1, _ms(p["estimate_interval_s"]))
        self._emit_estimates = bool(p["emit_cell_voltage_estimates"])
        self._charge_current = float(p["charge_current_a"])
        self._coef_v = float(p["temperature_coefficient_mv_per_degc"]) / 1000.0
        self._t_ref = float(p["temperature_reference_degc"])
        v_hyst = float(p["voltage_hysteresis_v"])
        t_hyst = float(p["temperature_hysteresis_degc"])
        overrides = {
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
            lv = _resolve_levels(limit, g.side, overrides[g.limit_key], where)
            if lv.thresholds.size:
                self._levels[g.code] = lv

    def initial_state(self) -> State:
        return {"version": STATE_VERSION, "channels": {}, "last_slot": None}

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
        last_slot: int | None = state["last_slot"]
        n = len(chunk)
        if n == 0:
            return [], {"version": STATE_VERSION, "channels": channels, "last_slot": last_slot}

        dt = chunk.integrable_dt_ms
        charging = chunk.current < -self._charge_current
        shift = self._voltage_shift(chunk.temps)
        ranked: list[tuple[tuple[int, ...], Output]] = []

        for order, g in enumerate(_GROUPS):
            lv = self._levels.get(g.code)
            if lv is None:
                continue
            values = chunk.cells if g.signal == "cells" else chunk.temps
            if values.shape[1] == 0:
                continue
            thr = lv.thresholds[None, :]
            if g.signal == "cells" and shift is not None:
                thr = thr + shift[:, None]
            chans = channels.setdefault(g.code, {})
            gate = charging if g.charging_only else None
            events = self._group_events(g, lv, values, thr, gate, chans, dt)
            if not chans:
                del channels[g.code]
            if not events:
                continue
            thr_rows = np.broadcast_to(thr, (n, lv.thresholds.size))
            n_idx = values.shape[1]
            for row, j, raised in events:
                level, idx = divmod(j, n_idx)
                rank = lv.ranks[level]
                alert = self._alert(
                    g,
                    lv,
                    level,
                    idx,
                    raised,
                    ts=int(chunk.ts[row]),
                    value=float(values[row, idx]),
                    threshold=float(thr_rows[row, level]),
                    current=float(chunk.current[row]),
                )
                # same sample: alerts before estimates, by group, cell; raises by rising
                # severity, clears by falling severity (critical clears before warning)
                key = (row, 0, order, idx, 1 if raised else 0, rank if raised else -rank)
                ranked.append((key, alert))

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
        new_state: State = {"version": STATE_VERSION, "channels": channels, "last_slot": new_slot}
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
        gate: BoolArray | None,
        chans: dict[str, list[int]],
        dt: IntArray,
    ) -> list[tuple[int, int, bool]]:
        """Debounce events (row, column, raised) of one group; column = level * n + index."""
        over = g.side == "over"
        # quick test against the loosest level: the common case stops here
        loosest = thr.min(axis=1) if over else thr.max(axis=1)
        quick = values > loosest[:, None] if over else values < loosest[:, None]
        if gate is not None:
            quick &= gate[:, None]
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
        if gate is not None:
            raise_c = raise_c & gate[:, None, None]
            clear_c = clear_c | ((~gate)[:, None, None] & np.isfinite(v3))
        k = lv.thresholds.size * count
        raise_m = np.broadcast_to(raise_c, (n, lv.thresholds.size, count)).reshape(n, k)
        clear_m = np.broadcast_to(clear_c, (n, lv.thresholds.size, count)).reshape(n, k)
        keys = _channel_keys(g.code, lv.severities, count)
        return debounce(
            dt, raise_m, clear_m, keys, chans, self._raise_ms[g.signal], self._clear_ms[g.signal]
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
        current: float,
    ) -> Alert:
        sev = lv.severities[level]
        unit = self.spec.limits[g.limit_key].unit
        over = g.side == "over"
        what = "charge-temperature limit" if g.charging_only else "limit"
        v = format(value, g.fmt)
        if raised:
            side = "above" if over else "below"
            message = (
                f"{g.subject} {idx} at {v} {unit} {side} the {sev} {what} {threshold:g} {unit}"
            )
            if g.charging_only:
                message += f" while charging at {-current:.1f} A"
        else:
            h = lv.hysteresis
            inside = value < threshold - h if over else value > threshold + h
            if g.charging_only and not inside:
                message = (
                    f"{g.subject} {idx} at {v} {unit}: charging stopped (current {current:.1f} A), "
                    f"{sev} {what} {threshold:g} {unit} cleared"
                )
            else:
                side, sign = ("below", "minus") if over else ("above", "plus")
                message = (
                    f"{g.subject} {idx} back at {v} {unit}, {side} the {sev} {what} "
                    f"{threshold:g} {unit} {sign} hysteresis {lv.hysteresis:g} {unit}: cleared"
                )
        return Alert(
            ts=ts,
            model=self.name,
            code=g.code,
            severity=sev,
            status="raised" if raised else "cleared",
            cell=idx,
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
