"""voltage_monitor: levelled, debounced cell-voltage and temperature alerts.

Expected timestamps are worked by hand from the leaky counter at 1 Hz: the first sample of a
battery has no interval (dt 0), every other sample adds 1000 ms while its condition holds.
With raise_debounce_s = 2 a violation starting at row r raises at row r + 1 (the counter reads
1000 at r and 2000 at r + 1); with clear_debounce_s = 5 a clear condition starting at row r
clears at row r + 4; the temperature debounce (5 s / 10 s) raises at r + 4 and clears at r + 9.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models.voltage_monitor.model as vm_module
from twin_stream.battery.chemistry import get_chemistry
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.chunk import Chunk, build_chunk
from twin_stream.sdk.contract import ContractError
from twin_stream.sdk.outputs import Alert, Estimate
from twin_stream.sdk.registry import discover_models

T0 = 60_000 * 28_333_334  # an epoch ms aligned to a 60 s slot: estimates at rows 0, 60, ...
MAX_GAP_MS = 10_000


def make_spec(chem: str = "NMC") -> BatterySpec:
    return BatterySpec(
        key=chem,
        chemistry=get_chemistry(chem),
        capacity_ah=100.0,
        cells_in_series=None,
        nominal_voltage=None,
    )


def make_model(chem: str = "NMC", **params: Any):
    cls = discover_models()["voltage_monitor"]
    return cls(cls.manifest.validate_params(params, "voltage_monitor"), make_spec(chem))


def make_chunk(cells=None, temps=None, current=None, n: int | None = None, ts=None) -> Chunk:
    if n is None:
        n = len(cells if cells is not None else temps)
    if ts is None:
        ts = T0 + 1000 * np.arange(n)
    if current is None:
        current = np.zeros(n)
    return build_chunk(
        "bat-1", ts, current, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, temps=temps
    )


def alerts(outputs) -> list[Alert]:
    return [o for o in outputs if isinstance(o, Alert)]


def brief(outputs) -> list[tuple[int, str, str, str, int | None]]:
    """(row, code, severity, status, cell) of every alert; row = (ts - T0) / 1000."""
    return [((a.ts - T0) // 1000, a.code, a.severity, a.status, a.cell) for a in alerts(outputs)]


def run(model, chunk: Chunk):
    return model.process(chunk, model.initial_state())


CHANNEL_FIELDS = (
    "cell_over_voltage",
    "cell_under_voltage",
    "cell_over_temperature",
    "cell_under_temperature",
    "busy",
    "pack_over_current",
    "charge_under_temperature",
    "charge_over_temperature",
    "charge_over_current",
)


def channels_idle(state) -> bool:
    """No channel raised, counting or carrying a tally (version 1's `channels == {}`)."""
    return all(not np.any(np.asarray(state[f])) for f in CHANNEL_FIELDS)


def latch_idle(state) -> bool:
    """No latched condition within its latch (version 1's `latch == {}`)."""
    return bool(np.all(np.asarray(state["latch"]) == vm_module.NO_TS))


# --------------------------------------------------------------------------- manifest


def test_manifest_defaults_and_errors():
    cls = discover_models()["voltage_monitor"]
    p = cls.manifest.validate_params({}, "m")
    assert p["raise_debounce_s"] == 2.0
    assert p["clear_debounce_s"] == 5.0
    assert p["temperature_raise_debounce_s"] == 5.0
    assert p["temperature_clear_debounce_s"] == 10.0
    assert p["charge_current_a"] == 1.0
    assert p["temperature_coefficient_mv_per_degc"] == 0.0
    assert p["estimate_interval_s"] == 60.0
    with pytest.raises(ContractError, match=r"m\.raise_debounce_ms"):
        cls.manifest.validate_params({"raise_debounce_ms": 1}, "m")
    with pytest.raises(ContractError, match=r"m\.raise_debounce_s.*below the minimum"):
        cls.manifest.validate_params({"raise_debounce_s": -1}, "m")


# --------------------------------------------------------------------------- voltage


def test_nmc_over_voltage_raise_escalate_clear_at_hand_worked_times():
    n = 80
    cells = np.full((n, 4), 3.90)
    cells[10:30, 2] = 4.23  # above warning 4.22, below critical 4.25
    cells[30:50, 2] = 4.26  # above critical
    cells[50:, 2] = 4.10  # below both limits minus hysteresis 0.03
    out, state = run(make_model("NMC"), make_chunk(cells))
    assert brief(out) == [
        (11, "cell_over_voltage", "warning", "raised", 2),
        (31, "cell_over_voltage", "critical", "raised", 2),
        (54, "cell_over_voltage", "critical", "cleared", 2),  # critical clears first
        (54, "cell_over_voltage", "warning", "cleared", 2),
    ]
    a = alerts(out)
    assert (a[0].value, a[0].threshold, a[0].unit) == (4.23, 4.22, "V")
    assert a[0].message == "cell #3 (index 2) at 4.230 V above the warning limit 4.22 V"
    assert (a[1].value, a[1].threshold) == (4.26, 4.25)
    assert a[1].message == "cell #3 (index 2) at 4.260 V above the critical limit 4.25 V"
    assert (a[2].value, a[2].threshold) == (4.10, 4.25)
    assert all(x.model == "voltage_monitor" for x in a)
    assert channels_idle(state)


def test_hysteresis_band_keeps_warning_while_critical_clears():
    n = 60
    cells = np.full((n, 3), 3.90)
    cells[5:20, 0] = 4.26  # warning raised at 6, critical at 6 (both counters start at 5)
    cells[20:40, 0] = 4.20  # < 4.25 - 0.03: critical clears at 24; 4.20 > 4.19: warning holds
    cells[40:, 0] = 4.18  # < 4.22 - 0.03: warning clears at 44
    out, _ = run(make_model("NMC"), make_chunk(cells))
    assert brief(out) == [
        (6, "cell_over_voltage", "warning", "raised", 0),
        (6, "cell_over_voltage", "critical", "raised", 0),
        (24, "cell_over_voltage", "critical", "cleared", 0),
        (44, "cell_over_voltage", "warning", "cleared", 0),
    ]


def test_single_spike_does_not_raise_and_counter_leaks():
    n = 30
    cells = np.full((n, 2), 3.9)
    cells[[5, 7, 9, 11], 1] = 4.30  # isolated 1-sample spikes: counter 1000 -> 0 -> 1000 ...
    out, state = run(make_model("NMC"), make_chunk(cells))
    assert alerts(out) == []
    assert channels_idle(state)


def test_gap_adds_no_debounce_time():
    n = 20
    ts = T0 + 1000 * np.arange(n)
    ts[10:] += 30_000  # 31 s between rows 9 and 10: a gap (> max_gap_ms 10 s)
    cells = np.full((n, 1), 3.9)
    cells[10:, 0] = 4.23  # violation starts on the sample after the gap, whose dt counts 0
    out, _ = run(make_model("NMC"), make_chunk(cells, ts=ts))
    assert [(a.ts - T0, a.status) for a in alerts(out)] == [(42_000, "raised")]  # row 12


def test_over_voltage_limits_follow_chemistry():
    n = 20
    cells = np.full((n, 2), 3.30)
    cells[3:, 1] = 3.62  # LFP warning limit 3.60; far below NMC's 4.22
    out_lfp, _ = run(make_model("LFP"), make_chunk(cells))
    out_nmc, _ = run(make_model("NMC"), make_chunk(cells))
    assert brief(out_lfp) == [(4, "cell_over_voltage", "warning", "raised", 1)]
    assert alerts(out_lfp)[0].threshold == 3.60
    assert alerts(out_nmc) == []


def test_under_voltage_levels_follow_chemistry():
    n = 30
    cells = np.full((n, 3), 3.30)
    cells[3:15, 0] = 2.70  # NMC warning 2.80; LFP warning is 2.50
    cells[15:, 0] = 2.40  # NMC critical 2.50; LFP warning 2.50 (critical 2.00)
    out_nmc, _ = run(make_model("NMC"), make_chunk(cells))
    out_lfp, _ = run(make_model("LFP"), make_chunk(cells))
    assert brief(out_nmc) == [
        (4, "cell_under_voltage", "warning", "raised", 0),
        (16, "cell_under_voltage", "critical", "raised", 0),
    ]
    assert (
        alerts(out_nmc)[1].message == "cell #1 (index 0) at 2.400 V below the critical limit 2.5 V"
    )
    assert brief(out_lfp) == [(16, "cell_under_voltage", "warning", "raised", 0)]


def test_noisy_signal_at_limit_raises_once_clears_once():
    rng = np.random.default_rng(20240611)
    hour = 3600
    n = hour + 120
    cells = np.full((n, 8), 4.00)
    cells[:hour, 5] = 4.22 + rng.normal(0.0, 0.005, hour)
    cells[hour:, 5] = 4.10
    # precondition of the hand-worked clear time: the noise never dipped under 4.19
    assert cells[:hour, 5].min() > 4.19 and cells[:hour, 5].max() < 4.25
    out, state = run(make_model("NMC"), make_chunk(cells))
    got = brief(out)
    assert [g[1:] for g in got] == [
        ("cell_over_voltage", "warning", "raised", 5),
        ("cell_over_voltage", "warning", "cleared", 5),
    ]
    assert got[0][0] < 30  # half the noisy samples violate: raised within seconds
    assert got[1][0] == hour + 4
    assert channels_idle(state)


def test_nan_cells_never_violate_and_never_clear():
    n = 60
    cells = np.full((n, 2), 3.9)
    cells[:, 1] = np.nan  # a missing cell: no alert ever
    cells[0:10, 0] = 4.23  # raised at 2 (row 0, the battery's first sample, adds no time)
    cells[10:40, 0] = np.nan  # missing for 30 s: no clear
    cells[40:, 0] = 4.10  # clears at 44
    out, _ = run(make_model("NMC"), make_chunk(cells))
    assert brief(out) == [
        (2, "cell_over_voltage", "warning", "raised", 0),
        (44, "cell_over_voltage", "warning", "cleared", 0),
    ]


def test_hysteresis_override():
    n = 40
    cells = np.full((n, 1), 3.9)
    cells[1:10, 0] = 4.23  # raised at 2
    cells[10:25, 0] = 4.15  # inside 4.22 - 0.03, but not inside 4.22 - 0.10
    cells[25:, 0] = 4.11  # inside 4.22 - 0.10 = 4.12: clears at 29
    out, _ = run(make_model("NMC", voltage_hysteresis_v=0.10), make_chunk(cells))
    assert brief(out) == [
        (2, "cell_over_voltage", "warning", "raised", 0),
        (29, "cell_over_voltage", "warning", "cleared", 0),
    ]
    out_default, _ = run(make_model("NMC"), make_chunk(cells))
    assert brief(out_default)[1] == (14, "cell_over_voltage", "warning", "cleared", 0)


def test_temperature_coefficient_shifts_voltage_limits():
    n = 20
    cells = np.full((n, 2), 3.9)
    cells[2:, 0] = 4.25  # above NMC's 4.22 warning at 25 degC
    cold = np.full((n, 2), 5.0)  # -3 mV/degC * (5 - 25) = +60 mV: limits 4.28 / 4.31
    model = make_model("NMC", temperature_coefficient_mv_per_degc=-3.0)
    out, _ = model.process(make_chunk(cells, temps=cold), model.initial_state())
    assert alerts(out) == []
    hot = np.full((n, 2), 45.0)  # -3 * (45 - 25) = -60 mV: warning 4.16, critical 4.19
    hot[:, 1] = np.nan  # the mean uses the finite sensors only
    out, _ = model.process(make_chunk(cells, temps=hot), model.initial_state())
    assert brief(out) == [
        (3, "cell_over_voltage", "warning", "raised", 0),
        (3, "cell_over_voltage", "critical", "raised", 0),
    ]
    assert alerts(out)[0].threshold == pytest.approx(4.16, abs=1e-12)
    assert alerts(out)[1].threshold == pytest.approx(4.19, abs=1e-12)
    # off by default: the same hot chunk at 4.21 V gives nothing
    cells[2:, 0] = 4.21
    out, _ = run(make_model("NMC"), make_chunk(cells, temps=hot))
    assert alerts(out) == []


# --------------------------------------------------------------------------- temperature


def test_over_temperature_per_sensor_with_temperature_debounce():
    n = 40
    temps = np.full((n, 3), 30.0)
    temps[10:, 1] = 56.0  # warning 55 degC: raised at 14 (5 s debounce)
    temps[25:, 1] = 51.0  # < 55 - 2: cleared at 34 (10 s)
    out, _ = run(make_model("NMC"), make_chunk(temps=temps))
    assert brief(out) == [
        (14, "cell_over_temperature", "warning", "raised", 1),
        (34, "cell_over_temperature", "warning", "cleared", 1),
    ]
    a = alerts(out)[0]
    assert (a.value, a.threshold, a.unit) == (56.0, 55.0, "degC")
    assert a.message == "sensor #2 (index 1) at 56.0 degC above the warning limit 55 degC"


def test_charge_under_temperature_only_while_charging():
    n = 90
    temps = np.full((n, 2), 20.0)
    temps[:, 0] = -5.0  # below the 0 degC charge limit; above the -20 degC discharge limit
    current = np.zeros(n)
    current[10:20] = -0.5  # trickle below charge_current_a: not charging
    current[30:60] = -20.0  # charging: 5 s and 3 samples -> raised at 34
    current[60:] = 30.0  # discharging: latched for 20 s after row 59, then 10 s -> 89
    model = make_model("LFP", charge_latch_s=20.0)
    out, state = run(model, make_chunk(temps=temps, current=current))
    assert brief(out) == [
        (34, "charge_under_temperature", "warning", "raised", 0),
        (89, "charge_under_temperature", "warning", "cleared", 0),
    ]
    raised, cleared = alerts(out)
    assert (raised.value, raised.threshold) == (-5.0, 0.0)
    assert raised.message.startswith(
        "charging at 20.0 A while the coldest sensor #1 (index 0) reads -5.0 degC, below the "
        "warning charge-temperature limit 0 degC; 0.028 Ah charged below it so far"
    )
    # 30 samples x 20 A x 1 s = 600 As = 0.1667 Ah
    assert "no charging below the limit for 20 s" in cleared.message
    assert "0.167 Ah charged below it in this episode: cleared" in cleared.message
    est = [o for o in out if isinstance(o, Estimate) and o.name == "charge_below_limit_ah"]
    assert [((e.ts - T0) // 1000, round(e.value, 6)) for e in est] == [
        (34, round(5 * 20 / 3600, 6)),
        (89, round(30 * 20 / 3600, 6)),
    ]
    assert channels_idle(state) and latch_idle(state)


def test_regen_pulses_below_zero_are_one_latched_episode_with_exposure():
    # LFP at -5 degC, 1 Hz: a 3 s regen pulse of 20 A every 20 s (rows 10-12, 30-32, ...,
    # 190-192), discharge in between. Raise: the counters (5 s, 3 samples) fill on violating
    # samples only and hold in the gaps: rows 10, 11, 12, 30 -> 4000 ms, row 31 -> 5000 ms:
    # raised at 31 with 5 x 20 As. Clear: the last violating row is 192, latched for 300 s
    # (rows up to 492), then 10 s and 3 samples of the clear condition: cleared at 502 with
    # 10 pulses x 3 samples x 20 A x 1 s = 600 As = 1/6 Ah.
    n = 520
    temps = np.full((n, 3), -5.0)
    temps[:, 2] = -4.0
    current = np.full(n, 40.0)
    for k in range(10):
        current[10 + 20 * k : 13 + 20 * k] = -20.0
    out, state = run(make_model("LFP"), make_chunk(temps=temps, current=current))
    assert brief(out) == [
        (31, "charge_under_temperature", "warning", "raised", 0),
        (502, "charge_under_temperature", "warning", "cleared", 0),
    ]
    est = [o for o in out if isinstance(o, Estimate) and o.name == "charge_below_limit_ah"]
    assert [round(e.value * 3600, 9) for e in est] == [100.0, 600.0]
    assert channels_idle(state)
    # without the latch (0 s) every pulse is too short to raise: nothing at all, because a
    # pulse (3 s) never fills the 5 s counter and the gaps leak it
    out0, _ = run(make_model("LFP", charge_latch_s=0.0), make_chunk(temps=temps, current=current))
    assert brief(out0) == []


def test_single_regen_sample_does_not_raise_but_accumulates_within_the_latch():
    n = 400
    temps = np.full((n, 1), -5.0)
    current = np.full(n, 30.0)
    current[[10, 100]] = -50.0  # two single samples 90 s apart: 2000 ms, 2 samples: no
    out, _ = run(make_model("LFP"), make_chunk(temps=temps, current=current))
    assert brief(out) == []
    current[[10, 100, 150, 200, 250]] = -50.0  # 5 s, 5 samples, each within the latch: raised
    out, _ = run(make_model("LFP"), make_chunk(temps=temps, current=current))
    assert brief(out)[0] == (250, "charge_under_temperature", "warning", "raised", 0)


def test_glitch_at_0_1_hz_needs_samples_not_only_time():
    # 0.1 Hz: one sample's 10 s interval fills the 2 s time counter on its own
    n = 14
    ts = T0 + 10_000 * np.arange(n)
    cells = np.full((n, 4), 3.90)
    cells[3, 1] = 4.30  # a single-sample glitch above warning and critical
    out, _ = run(make_model("NMC"), make_chunk(cells, ts=ts))
    assert alerts(out) == []  # before the sample count it raised warning and critical
    cells[7:10, 2] = 4.30  # three samples
    out, _ = run(make_model("NMC", raise_samples=3), make_chunk(cells, ts=ts))
    assert [((a.ts - T0) // 10_000, a.severity, a.status, a.cell) for a in alerts(out)] == [
        (9, "warning", "raised", 2),
        (9, "critical", "raised", 2),
        (11, "critical", "cleared", 2),
        (11, "warning", "cleared", 2),
    ]
    cells[9, 2] = 3.90  # only two samples: no raise with raise_samples=3, a raise with 2
    out, _ = run(make_model("NMC", raise_samples=3), make_chunk(cells, ts=ts))
    assert alerts(out) == []
    out, _ = run(make_model("NMC"), make_chunk(cells, ts=ts))
    assert [((a.ts - T0) // 10_000, a.status) for a in alerts(out)][:2] == [
        (8, "raised"),
        (8, "raised"),
    ]


@pytest.mark.parametrize(
    ("coldest", "amps", "expect"),
    [
        (-0.1, -60.0, []),  # below the table: charge_under_temperature's business
        (0.0, -19.0, []),  # 0.2C x 100 Ah = 20 A warning, 30 A critical from 0 degC
        (0.0, -21.0, ["warning"]),
        (9.9, -31.0, ["warning", "critical"]),
        (10.0, -31.0, []),  # 1C = 100 A warning, 150 A critical from 10 degC
        (10.0, -101.0, ["warning"]),
        (25.0, -151.0, ["warning", "critical"]),
        (None, -101.0, ["warning"]),  # no valid sensor: the warmest band's limit
    ],
)
def test_charge_over_current_at_the_derating_breakpoints(coldest, amps, expect):
    n = 30
    temps = np.full((n, 3), 30.0)
    temps[:, 1] = np.nan if coldest is None else coldest
    if coldest is None:
        temps[:] = np.nan
    current = np.full(n, amps)
    out, _ = run(make_model("LFP"), make_chunk(temps=temps, current=current))
    got = [a for a in alerts(out) if a.code == "charge_over_current"]
    # current debounce 2 s and 3 samples: rows 0 (dt 0), 1, 2 -> raised at row 2
    assert [(a.severity, (a.ts - T0) // 1000) for a in got] == [(s, 2) for s in expect]
    for a in got:
        assert a.unit == "A" and a.value == pytest.approx(-amps)
        assert a.cell == (None if coldest is None else 1)
    if got:
        lim = {"warning": 1.0, "critical": 1.5}[got[0].severity]
        factor = 1.0 if coldest is None or coldest >= 10 else 0.2
        assert got[0].threshold == pytest.approx(lim * factor * 100.0)
        assert "above the warning charge-current limit" in got[0].message


def test_pack_over_current_discharge_and_charge():
    n = 40
    current = np.zeros(n)
    current[5:15] = 310.0  # > 3C on 100 Ah: discharge warning at row 7
    current[25:35] = -210.0  # < -2C: charge warning at row 27
    temps = np.full((n, 1), 25.0)
    out, _ = run(make_model("NMC"), make_chunk(temps=temps, current=current))
    got = [a for a in alerts(out) if a.code == "pack_over_current"]
    assert [((a.ts - T0) // 1000, a.severity, a.status, a.cell) for a in got] == [
        (7, "warning", "raised", None),
        (19, "warning", "cleared", None),
        (27, "warning", "raised", None),
        (39, "warning", "cleared", None),
    ]
    assert got[0].message == (
        "pack discharge current 310.0 A (3.10C) above the warning discharge-current limit "
        "300.0 A (3C)"
    )
    assert (got[2].value, got[2].threshold) == (-210.0, -200.0)


def test_charge_under_temperature_clears_on_warming_and_nan_sensor_holds():
    n = 60
    temps = np.full((n, 2), -5.0)
    temps[:, 1] = np.nan
    temps[20:30, 0] = np.nan  # missing while charging: neither violates nor clears
    temps[30:, 0] = 2.5  # > 0 + 2 hysteresis: clears at 39 although still charging
    current = np.full(n, -20.0)
    out, _ = run(make_model("NMC"), make_chunk(temps=temps, current=current))
    assert brief(out) == [
        (5, "charge_under_temperature", "warning", "raised", 0),  # row 0 adds no time
        (39, "charge_under_temperature", "warning", "cleared", 0),
    ]


# --------------------------------------------------------------------------- estimates


def test_min_max_cell_voltage_estimates_at_cadence():
    n = 130
    cells = np.full((n, 3), 3.80)
    cells[:, 1] = 3.75
    cells[60, 2] = 3.95
    cells[120, :] = np.nan  # no reading at this slot entry: no estimate
    out, _ = run(make_model("NMC"), make_chunk(cells))
    est = [(o.ts - T0, o.name, o.value) for o in out if isinstance(o, Estimate)]
    assert est == [
        (0, "min_cell_voltage", 3.75),
        (0, "max_cell_voltage", 3.80),
        (0, "mean_cell_voltage", pytest.approx((3.80 + 3.75 + 3.80) / 3, abs=1e-12)),
        (60_000, "min_cell_voltage", 3.75),
        (60_000, "max_cell_voltage", 3.95),
        (60_000, "mean_cell_voltage", pytest.approx((3.80 + 3.75 + 3.95) / 3, abs=1e-12)),
    ]
    out, _ = run(make_model("NMC", emit_cell_voltage_estimates=False), make_chunk(cells))
    assert out == []


def test_hottest_sensor_estimate_at_cadence_ignores_missing_sensors():
    n = 61
    temps = np.full((n, 3), 25.0)
    temps[:, 2] = np.nan  # a dead sensor never hides the others
    temps[0, 1] = 31.5
    temps[60, 0] = 40.25
    out, _ = run(make_model("NMC"), make_chunk(temps=temps))
    hot = [(o.ts - T0, o.value) for o in out if isinstance(o, Estimate)]
    assert hot == [(0, 31.5), (60_000, 40.25)]
    assert {o.name for o in out if isinstance(o, Estimate)} == {"max_temperature"}


# --------------------------------------------------------------------------- contract


def test_common_case_touches_no_channel():
    # version 1 walked no sample here (a vectorised test per chunk); the per-record loop steps
    # every channel, which must stay idle and empty: all zeros
    n = 500
    cells = np.full((n, 96), 3.9)
    temps = np.full((n, 8), 25.0)
    out, state = run(make_model("NMC"), make_chunk(cells, temps=temps, current=np.full(n, -50.0)))
    assert all(isinstance(o, Estimate) for o in out)
    assert channels_idle(state) and latch_idle(state)
    assert np.asarray(state["cell_over_voltage"]).shape == (96, 3, 7)


def test_process_does_not_mutate_state_and_empty_chunk():
    model = make_model("NMC")
    cells = np.full((10, 1), 4.30)
    _, state = run(model, make_chunk(cells))
    assert not channels_idle(state)  # critical and warning active
    assert [c[1] for c in state["cell_over_voltage"][0][:2]] == [1, 1]
    frozen = copy.deepcopy(state)
    more = build_chunk(
        "bat-1",
        T0 + 1000 * np.arange(10, 20),
        np.zeros(10),
        prev_ts=T0 + 9000,
        max_gap_ms=MAX_GAP_MS,
        cells=np.full((10, 1), 4.0),
    )
    _, new_state = model.process(more, state)
    assert state == frozen
    assert channels_idle(new_state)
    out, same = model.process(more.slice(0, 0), state)
    assert out == [] and same == frozen


def test_bad_state_version_is_a_clear_error():
    model = make_model("NMC")
    with pytest.raises(ContractError, match="state version"):
        model.process(make_chunk(np.full((2, 1), 3.9)), {"version": 99})


# --------------------------------------------------------------------------- chunking

N_SEQ = 400


def violating_sequence() -> Chunk:
    rng = np.random.default_rng(7)
    n = N_SEQ
    ts = T0 + 1000 * np.arange(n)
    ts[200:] += 30_000  # a gap (> max_gap) in the middle: the counters add no time across it
    cells = 3.9 + rng.normal(0.0, 0.002, (n, 6))
    cells[20:120, 1] = 4.22 + rng.normal(0.0, 0.02, 100)  # warning + critical flicker
    cells[150:260, 4] = 2.79 + rng.normal(0.0, 0.01, 110)
    cells[::17, 3] = np.nan
    temps = 25.0 + rng.normal(0.0, 0.5, (n, 3))
    temps[50:300, 2] = -2.0 + rng.normal(0.0, 2.0, 250)
    temps[300:, 0] = 55.0 + rng.normal(0.0, 1.0, 100)
    current = np.where(np.arange(n) % 90 < 45, -15.0, 10.0)
    current[60:70] = 320.0  # pack over-current (3.2C)
    current[320:330] = -160.0  # charge over-current (1.6C at ~25 degC)
    current[340:343] = -160.0
    return build_chunk(
        "bat-1", ts, current, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, temps=temps
    )


def run_in_pieces(model, chunk: Chunk, cuts: list[int], via_json: bool = False):
    bounds = [0, *cuts, len(chunk)]
    state = model.initial_state()
    out: list = []
    for a, b in itertools.pairwise(bounds):
        o, state = model.process(chunk.slice(a, b), state)
        out.extend(o)
        if via_json:
            state = json.loads(json.dumps(state))
    return out, state


MODELS = {
    "default": {},
    "compensated": {"temperature_coefficient_mv_per_degc": -3.0, "estimate_interval_s": 7.0},
    "short_latch": {"charge_latch_s": 15.0, "raise_samples": 3, "temperature_raise_samples": 4},
}


@pytest.mark.parametrize("variant", sorted(MODELS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, N_SEQ - 1), max_size=25, unique=True).map(sorted))
def test_chunking_invariance(variant: str, cuts: list[int]):
    model = make_model("NMC", **MODELS[variant])
    chunk = violating_sequence()
    whole_out, whole_state = run_in_pieces(model, chunk, [])
    assert len(alerts(whole_out)) >= 6  # the sequence does exercise the channels
    codes = {a.code for a in alerts(whole_out)}
    assert {
        "cell_over_voltage",
        "cell_under_voltage",
        "charge_under_temperature",
        "pack_over_current",
        "charge_over_current",
    } <= codes
    out, state = run_in_pieces(model, chunk, cuts)
    assert out == whole_out
    assert state == whole_state


@given(cut=st.integers(1, N_SEQ - 1))
@settings(max_examples=30, deadline=None)
def test_state_json_round_trip_mid_way(cut: int):
    model = make_model("NMC")
    chunk = violating_sequence()
    whole_out, whole_state = run_in_pieces(model, chunk, [])
    out, state = run_in_pieces(model, chunk, [cut], via_json=True)
    assert out == whole_out
    assert state == whole_state


# --------------------------------------------------------------------------- kernel model


def battery_chunk(seed: int, n_cells: int, n_temps: int, n: int = 300) -> Chunk:
    """A battery of its own cell and sensor count, with violations of every kind."""
    rng = np.random.default_rng(seed)
    ts = T0 + 1000 * np.arange(n) + seed * 7
    ts[n // 2 :] += 20_000  # a gap
    cells = 3.9 + rng.normal(0.0, 0.002, (n, n_cells))
    if n_cells:
        c = seed % n_cells
        cells[20:90, c] = 4.22 + rng.normal(0.0, 0.02, 70)
        cells[120:200, (c + 1) % n_cells] = 2.6 + rng.normal(0.0, 0.2, 80)
        cells[::13, c] = np.nan
    temps = 25.0 + rng.normal(0.0, 0.5, (n, n_temps))
    if n_temps:
        temps[40:220, n_temps - 1] = -3.0 + rng.normal(0.0, 2.0, 180)
        temps[250:, 0] = 56.0 + rng.normal(0.0, 2.0, n - 250)
    current = np.where(np.arange(n) % 40 < 20, -25.0, 15.0)
    current[60:70] = 330.0
    current[230:240] = -170.0
    return build_chunk(
        f"bat-{seed}", ts, current, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, temps=temps
    )


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_check_model_batteries_of_different_cell_counts(variant: str):
    from twin_stream.sdk.testing import check_model

    chunks = [
        battery_chunk(1, 6, 3),
        battery_chunk(2, 16, 1),
        battery_chunk(3, 0, 2),
        battery_chunk(4, 1, 0),
        battery_chunk(5, 96, 8),
    ]
    model = make_model("LFP" if variant == "short_latch" else "NMC", **MODELS[variant])
    codes = {a.code for c in chunks for a in alerts(run(model, c)[0])}
    assert {"cell_over_voltage", "cell_under_voltage", "pack_over_current"} <= codes
    assert {"charge_under_temperature", "cell_over_temperature", "charge_over_current"} <= codes
    check_model(model, chunks, seed=11)


def v1_state() -> dict[str, Any]:
    """A state as voltage_monitor 1.1.0 wrote it (NMC, 20 cells): the warning of cell 17 and
    the charge-current side's critical raised, cell 2's under-voltage counter half built (a
    3-entry channel of the oldest format), charge_under_temperature raised and latched by a
    violating sample one second before the next chunk, with 0.1 Ah charged below 0 degC."""
    return {
        "version": 1,
        "channels": {
            "cell_over_voltage": {"cell_over_voltage:warning:17": [0, 1, 0, 0, 0, 0]},
            "cell_under_voltage": {"cell_under_voltage:warning:2": [1000, 0, 0]},
            "pack_over_current:charge": {"pack_over_current:charge:critical:0": [0, 1, 0, 0, 0, 0]},
            "charge_under_temperature": {
                "charge_under_temperature:warning": [0, 1, 0, 0, 0, 360_000_000]
            },
        },
        "last_slot": T0 // 60_000,
        "latch": {"charge_under_temperature": [T0 - 1000]},
    }


def test_v1_state_migrates_with_raised_alerts_still_raised():
    model = make_model("NMC")
    n = 320
    chunk = build_chunk(
        "bat-1",
        T0 + 1000 * np.arange(n),
        np.full(n, 30.0),  # discharging: no charge condition violates
        prev_ts=T0 - 1000,
        max_gap_ms=MAX_GAP_MS,
        cells=np.full((n, 20), 3.9),
        temps=np.full((n, 2), -5.0),
    )
    state = v1_state()
    frozen = copy.deepcopy(state)
    migrated = model.migrate(state)
    assert state == frozen
    assert migrated["version"] == 2
    assert migrated["cell_over_voltage"][17][0] == [0, 1, 0, 0, 0, 0, 0]  # warning: level 0
    assert migrated["pack_over_current"][1][1] == [0, 1, 0, 0, 0, 0, 0]  # charge, critical
    assert migrated["cell_under_voltage"][2][0] == [1000, 0, 0, 0, 0, 0, 0]
    assert migrated["latch"][0] == [T0 - 1000, vm_module.NO_TS, vm_module.NO_TS]
    assert migrated["last_slot"] == T0 // 60_000
    assert migrated["busy"] == [1, 1, 0, 0]  # channels not idle: cell 17's and cell 2's

    out, new_state = model.process(chunk, json.loads(json.dumps(state)))
    # cell 17 and the pack clear on the 5th sample of their clear condition (5 s); the
    # charge condition is held by its latch for 300 s after T0 - 1000, then clears after
    # 10 s and 3 samples of its clear condition: rows 300..309
    assert brief(out) == [
        (4, "cell_over_voltage", "warning", "cleared", 17),
        (4, "pack_over_current", "critical", "cleared", None),
        (309, "charge_under_temperature", "warning", "cleared", 0),
    ]
    a = alerts(out)
    assert a[0].message == (
        "cell #18 (index 17) back at 3.900 V, below the warning limit 4.22 V minus hysteresis "
        "0.03 V: cleared"
    )
    assert a[2].message.endswith("0.100 Ah charged below it in this episode: cleared")
    est = [(o.ts - T0, o.name, o.value) for o in out if isinstance(o, Estimate)]
    assert est[0][0] == 60_000  # the migrated slot: no estimate at T0 again
    assert (309_000, "charge_below_limit_ah", 0.1) in est
    assert channels_idle(new_state) and latch_idle(new_state)
    # the same through the one-battery API in pieces, with JSON between them
    state2: dict[str, Any] = v1_state()
    out2: list = []
    for a0, b0 in itertools.pairwise([0, 3, 150, n]):
        o, state2 = model.process(chunk.slice(a0, b0), json.loads(json.dumps(state2)))
        out2 += o
    assert out2 == out and state2 == new_state


def test_v1_state_of_other_severities_and_versions():
    model = make_model("LFP")
    state = v1_state()
    state["channels"]["cell_over_voltage"]["cell_over_voltage:info:3"] = [0, 1, 0, 0, 0, 0]
    migrated = model.migrate(state)  # LFP has no info level: that channel is dropped
    assert [row[0][1] for row in migrated["cell_over_voltage"]] == [0] * 17 + [1]
    with pytest.raises(ContractError, match="state version 3"):
        model.migrate({"version": 3})
