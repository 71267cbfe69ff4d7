"""eq_cycles: hand-worked cycle counts, the integration modes (trapezoid, dense sign change,
hold, interval average), the charge/discharge split and energies, gaps, SOH handling, the
efficiency option, and exact invariance under chunking and restart from JSON state."""

from __future__ import annotations

import json
import math
from functools import cache
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.eq_cycles.model import EqCycles
from twin_stream.battery.chemistry import get_chemistry
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.chunk import build_chunk
from twin_stream.sdk.contract import ContractError
from twin_stream.sdk.outputs import Estimate

SPEC = BatterySpec(
    key="t",
    chemistry=get_chemistry("NMC"),
    capacity_ah=100.0,
    cells_in_series=None,
    nominal_voltage=None,
)
T0 = 1_700_000_400_000  # epoch ms, on a 10-minute boundary
MAX_GAP_MS = 60_000


def make(**params: object) -> EqCycles:
    return EqCycles(EqCycles.manifest.validate_params(params, "eq_cycles"), SPEC)


def run(m, ts, current, soh=None, cuts=(), roundtrip=False, voltage=None, cells=None):
    """Feed the samples in chunks cut at `cuts`; returns (outputs, final state)."""
    ts = np.asarray(ts, dtype=np.int64)
    volt = None if voltage is None else np.asarray(voltage, dtype=float)
    cell = None if cells is None else np.asarray(cells, dtype=float)
    current = np.asarray(current, dtype=float)
    state = m.initial_state()
    outs: list = []
    prev = None
    for lo, hi in pairwise([0, *cuts, len(ts)]):
        c = build_chunk(
            "b",
            ts[lo:hi],
            current[lo:hi],
            prev_ts=prev,
            max_gap_ms=MAX_GAP_MS,
            soh=None if soh is None else np.asarray(soh, dtype=float)[lo:hi],
            voltage=None if volt is None else volt[lo:hi],
            cells=None if cell is None else cell[lo:hi],
        )
        o, state = m.process(c, state)
        outs += o
        prev = int(ts[hi - 1])
        if roundtrip:
            state = json.loads(json.dumps(state))
    return outs, state


def cycles_of(state) -> float:
    return state["cycles"] + state["cycles_comp"]


def ah_of(state, key: str = "throughput") -> float:
    if key == "throughput":
        return state["unsplit_ah"] + (ah_of(state, "charge") + ah_of(state, "discharge"))
    return state[f"{key}_ah"] + state[f"{key}_ah_comp"]


def kwh_of(state, key: str) -> float:
    return state[f"{key}_kwh"] + state[f"{key}_kwh_comp"]


def last(outs, name: str) -> Estimate:
    return [o for o in outs if o.name == name][-1]


def seconds(n: int, start_s: int = 0) -> np.ndarray:
    return T0 + (start_s + np.arange(n, dtype=np.int64)) * 1000


# -- hand-worked numbers ---------------------------------------------------------------------


def test_20a_for_99h_on_100ah_is_9_9_cycles() -> None:
    ts = seconds(99 * 3600 + 1)
    outs, state = run(make(), ts, np.full(ts.size, 20.0))
    # 20 A x 99 h = 1980 Ah; / (2 x 100 Ah) = 9.9
    assert abs(cycles_of(state) - 9.9) < 1e-9
    assert abs(ah_of(state) - 1980.0) < 1e-9
    final = last(outs, "equivalent_cycles")
    assert final.ts == ts[-1] and abs(final.value - 9.9) < 1e-9
    assert final.unit == "cycles" and final.confidence is None
    thr = last(outs, "throughput_ah")
    assert abs(thr.value - 1980.0) < 1e-9 and thr.unit == "Ah"


def test_sine_50a_24h_period_is_3_8197_cycles_a_day() -> None:
    # mean |I| of a 50 A sine is 2*50/pi = 100/pi A -> 2400/pi Ah a day -> 12/pi cycles
    n = 86400
    t_s = np.arange(n + 1) + 0.5  # zero crossings fall inside intervals, not on samples
    current = 50.0 * np.sin(2 * math.pi * t_s / 86400.0)
    _, state = run(make(), seconds(n + 1), current)
    assert abs(cycles_of(state) - 12.0 / math.pi) < 1e-7
    assert abs(cycles_of(state) - 3.8197) < 1e-4


def a_s(state, key: str = "throughput") -> float:
    return ah_of(state, key) * 3600


def test_sign_change_trapezoid_by_default_straight_line_only_when_dense() -> None:
    # 10 A then -10 A over 10 s. Trapezoid of |I|: (10 + 10) / 2 x 10 = 100 A s, half of it
    # discharge (the 10 A end), half charge. The straight line through zero (only for
    # intervals <= dense_dt_s): two triangles of 10 A x 5 s / 2 = 50 A s, 25 + 25.
    ts, i = [T0, T0 + 10_000], [10.0, -10.0]
    _, trap = run(make(), ts, i)
    assert abs(a_s(trap) - 100.0) < 1e-9
    assert abs(a_s(trap, "discharge") - 50.0) < 1e-9 and abs(a_s(trap, "charge") - 50.0) < 1e-9
    _, dense = run(make(dense_dt_s=10.0), ts, i)
    assert abs(a_s(dense) - 50.0) < 1e-9
    assert abs(a_s(dense, "discharge") - 25.0) < 1e-9 and abs(a_s(dense, "charge") - 25.0) < 1e-9
    # the default dense_dt_s (1.5 s) covers 1 Hz: 10 A to -10 A over 1 s is 5 A s, not 10
    _, one_hz = run(make(), [T0, T0 + 1000], i)
    assert abs(a_s(one_hz) - 5.0) < 1e-9
    # asymmetric, dense: 30 A to -10 A over 4 s crosses at 3 s: 30*3/2 + 10*1/2 = 45 + 5 A s
    _, asym = run(make(dense_dt_s=4.0), [T0, T0 + 4000], [30.0, -10.0])
    assert abs(a_s(asym, "discharge") - 45.0) < 1e-9 and abs(a_s(asym, "charge") - 5.0) < 1e-9
    # the same, sparse: trapezoid 30*4/2 = 60 discharge, 10*4/2 = 20 charge
    _, asym = run(make(), [T0, T0 + 4000], [30.0, -10.0])
    assert abs(a_s(asym, "discharge") - 60.0) < 1e-9 and abs(a_s(asym, "charge") - 20.0) < 1e-9
    # same sign: plain trapezoid 10 -> 20 A over 2 s = 30 A s; a zero end: 20 -> 0 over 2 s = 20
    _, state = run(make(), [T0, T0 + 2000, T0 + 4000], [10.0, 20.0, 0.0])
    assert abs(a_s(state) - (30.0 + 20.0)) < 1e-9 and a_s(state, "charge") == 0.0


def test_hold_and_interval_average_modes() -> None:
    # 10 A, -20 A, 30 A at 0, 10, 30 s
    ts, i = [T0, T0 + 10_000, T0 + 30_000], [10.0, -20.0, 30.0]
    _, hold = run(make(integration="hold"), ts, i)  # 10 x 10 out, 20 x 20 in
    assert abs(a_s(hold, "discharge") - 100.0) < 1e-9 and abs(a_s(hold, "charge") - 400.0) < 1e-9
    _, avg = run(make(integration="interval_average"), ts, i)  # 20 x 10 in, 30 x 20 out
    assert abs(a_s(avg, "charge") - 200.0) < 1e-9 and abs(a_s(avg, "discharge") - 600.0) < 1e-9
    # hold never uses the straight line, whatever dense_dt_s
    _, hold = run(make(integration="hold", dense_dt_s=100.0), ts, i)
    assert abs(a_s(hold) - 500.0) < 1e-9


def test_split_sums_exactly_to_the_total_and_nominal_cycles() -> None:
    rng = np.random.default_rng(3)
    ts = seconds(5000)
    i = rng.normal(0.0, 40.0, ts.size)
    for params in ({}, {"dense_dt_s": 0.0}, {"integration": "hold"}, {"soh": 1}):
        soh = np.full(ts.size, 80.0) if params.pop("soh", None) else None
        outs, state = run(make(**params), ts, i, soh=soh, cuts=(17, 999))
        # the state keeps the parts only (nothing counted before the split): the total is
        # their sum, on every row exactly
        assert state["unsplit_ah"] == 0.0 and ah_of(state) > 0
        for r in [o.ts for o in outs if o.name == "throughput_ah"]:
            got = {o.name: o.value for o in outs if o.ts == r}
            assert (
                got["throughput_ah"] == got["throughput_charge_ah"] + got["throughput_discharge_ah"]
            )
            # nominal cycles: throughput / (2 x 100 Ah), whatever SOH says
            assert got["equivalent_cycles_nominal"] == pytest.approx(
                got["throughput_ah"] / 200.0, rel=1e-15, abs=1e-15
            )
        nominal = last(outs, "equivalent_cycles_nominal").value
        scaled = last(outs, "equivalent_cycles").value
        assert scaled == pytest.approx(nominal / (0.8 if soh is not None else 1.0), rel=1e-9)


def test_energy_from_pack_voltage_or_the_sum_of_cells() -> None:
    # 100 A out for 1 h at 400 V -> 40 kWh, then 50 A in for 1 h at 410 V -> 20.5 kWh
    ts = np.concatenate([seconds(3601), seconds(3600, start_s=3601)])
    i = np.where(np.arange(ts.size) <= 3600, 100.0, -50.0)
    v = np.where(i > 0, 400.0, 410.0)
    outs, state = run(make(dense_dt_s=0.0), ts, i, voltage=v, cuts=(5, 3600, 3602))
    # the interval 3600 -> 3601 s is the step: trapezoid 100 x 400 / 2 W s out, 50 x 410 / 2 in
    assert kwh_of(state, "energy_discharge") == pytest.approx(
        (3600 * 100 * 400 + 100 * 400 / 2) / 3.6e6, rel=1e-12
    )
    assert kwh_of(state, "energy_charge") == pytest.approx(
        (3599 * 50 * 410 + 50 * 410 / 2) / 3.6e6, rel=1e-12
    )
    assert last(outs, "energy_discharge_kwh").unit == "kWh"
    # no pack voltage: the sum of the cells (100 cells at 4.0 V = 400 V) gives the same
    cells = np.repeat((v / 100.0)[:, None], 100, axis=1)
    _, from_cells = run(make(dense_dt_s=0.0), ts, i, cells=cells, cuts=(7,))
    assert kwh_of(from_cells, "energy_discharge") == pytest.approx(
        kwh_of(state, "energy_discharge"), rel=1e-12
    )
    # neither: no energy estimate at all (the throughput ones are there)
    outs, bare = run(make(), ts, i)
    assert not [o for o in outs if o.name.startswith("energy_")]
    assert [o for o in outs if o.name == "throughput_charge_ah"]
    assert bare["energy_seen"] is False


def test_energy_of_a_dense_sign_change_is_the_exact_product_integral() -> None:
    # 10 A at 400 V to -10 A at 420 V over 1 s: I = 10 (1 - 2u), V = 400 + 20 u, u in [0, 1]
    # out: int_0^0.5 10 (1 - 2u)(400 + 20u) du = 10 [400u - 390u^2 - 40u^3/3]_0^0.5 = 1008.33 W s
    # in:  int_0.5^1 10 (2u - 1)(400 + 20u) du = 1041.67 W s
    _, st_ = run(make(), [T0, T0 + 1000], [10.0, -10.0], voltage=[400.0, 420.0])
    assert kwh_of(st_, "energy_discharge") * 3.6e6 == pytest.approx(1000.0 + 25.0 / 3.0, rel=1e-9)
    assert kwh_of(st_, "energy_charge") * 3.6e6 == pytest.approx(1025.0 + 50.0 / 3.0, rel=1e-9)


def test_version_1_state_is_upgraded() -> None:
    ts = seconds(3601)
    # a version 1 state (throughput and cycles only, femto-integer) after 9 s at 36 A:
    # 324 A s = 0.09 Ah = 0.00045 cycles
    v1 = {
        "version": 1,
        "prev_current": 36.0,
        "soh": None,
        "throughput_ah": 0,
        "throughput_fah": 90_000_000_000_000,
        "cycles": 0,
        "cycles_fc": 450_000_000_000,
        "gaps": 0,
        "gap_ms": 0,
        "last_slot": int(ts[9]) // 60_000,
    }
    m = make()
    c = build_chunk(
        "b", ts[10:], np.full(ts.size - 10, 36.0), prev_ts=int(ts[9]), max_gap_ms=MAX_GAP_MS
    )
    _, up = m.process(c, v1)
    assert up["version"] == 3 and abs(ah_of(up) - 36.0) < 1e-9  # the total carries on
    assert abs(ah_of(up, "discharge") - 36.0 * 3591 / 3600) < 1e-9  # the split since then
    assert abs(cycles_of(up) - 36.0 / 200.0) < 1e-12


def test_version_2_state_carries_every_total() -> None:
    # a version 2 state of the former femto-integer implementation, mid-way
    ts = seconds(20)
    v2 = {
        "version": 2,
        "prev_current": -12.0,
        "prev_voltage": 401.5,
        "soh": 91.0,
        "throughput_ah": 12,
        "throughput_fah": 750_000_000_000_000,
        "charge_ah": 4,
        "charge_fah": 250_000_000_000_000,
        "discharge_ah": 8,
        "discharge_fah": 500_000_000_000_000,
        "energy_charge_kwh": 1,
        "energy_charge_fkwh": 700_000_000_000_000,
        "energy_discharge_kwh": 3,
        "energy_discharge_fkwh": 400_000_000_000_001,
        "cycles": 0,
        "cycles_fc": 70_054_945_054_945,
        "energy_seen": True,
        "gaps": 2,
        "gap_ms": 123_456,
        "last_slot": int(ts[0]) // 60_000,
    }
    m = make()
    state = m.migrate(v2)
    assert state["version"] == 3 and state["unsplit_ah"] == 0.0
    assert (state["charge_ah"], state["discharge_ah"]) == (4.25, 8.5)
    assert state["energy_discharge_kwh"] == 3.400000000000001
    assert (state["gaps"], state["gap_ms"], state["energy_seen"]) == (2, 123_456, True)
    # processing from it: the previous sample's current and voltage close the first interval
    c = build_chunk(
        "b",
        ts,
        np.full(ts.size, -12.0),
        prev_ts=int(ts[0]) - 1000,
        max_gap_ms=MAX_GAP_MS,
        voltage=np.full(ts.size, 401.5),
    )
    outs, up = m.process(c, v2)
    assert up["version"] == 3
    assert ah_of(up, "charge") == pytest.approx(4.25 + 12.0 * 20 / 3600, rel=1e-15)
    assert kwh_of(up, "energy_charge") == pytest.approx(1.7 + 12.0 * 401.5 * 20 / 3.6e6, rel=1e-15)
    assert cycles_of(up) == pytest.approx(0.070054945054945 + 12.0 * 20 / 3600 / 200 / 0.91)
    assert [o.name for o in outs] == []  # same slot as the state's last sample: no estimate
    assert (up["gaps"], up["gap_ms"], up["soh"]) == (2, 123_456, 91.0)


def test_first_interval_of_every_chunk_is_kept() -> None:
    ts = seconds(4)  # 3 intervals of 1 s at 36 A = 108 A s = 0.03 Ah
    for cuts in [(), (1,), (2,), (1, 2, 3)]:
        _, state = run(make(), ts, np.full(4, 36.0), cuts=cuts)
        assert abs(ah_of(state) - 0.03) < 1e-12, cuts
        assert abs(cycles_of(state) - 0.03 / 200.0) < 1e-14, cuts


def test_two_hour_gap_is_skipped_and_counted() -> None:
    before = seconds(3601)  # 0..3600 s: 3600 intervals
    after = seconds(3601, start_s=3600 + 7200)  # 2 h silent, then 3600 intervals more
    ts = np.concatenate([before, after])
    outs, state = run(make(), ts, np.full(ts.size, 20.0))
    assert abs(ah_of(state) - 40.0) < 1e-9  # 20 A x 2 h integrated; the 2 h gap is not
    assert abs(cycles_of(state) - 0.2) < 1e-10
    assert state["gaps"] == 1 and state["gap_ms"] == 7_200_000
    # the gap inflates nothing: the estimate right after it is unchanged from before it
    first_after = next(o for o in outs if o.name == "throughput_ah" and o.ts == after[0])
    assert abs(first_after.value - 20.0) < 1e-9


def test_soh_50_percent_doubles_the_cycles() -> None:
    ts = seconds(10 * 3600 + 1)  # 20 A x 10 h = 200 Ah = 1 cycle of 100 Ah
    i = np.full(ts.size, 20.0)
    _, full = run(make(), ts, i, soh=np.full(ts.size, 100.0))
    _, half = run(make(), ts, i, soh=np.full(ts.size, 50.0))
    assert abs(cycles_of(full) - 1.0) < 1e-10
    assert abs(cycles_of(half) - 2.0) < 1e-10
    assert ah_of(half) == ah_of(full)  # throughput is measured, not scaled


def test_soh_absent_uses_100_and_reported_soh_is_carried() -> None:
    ts = seconds(10 * 3600 + 1)
    i = np.full(ts.size, 20.0)
    _, none = run(make(), ts, i)
    assert abs(cycles_of(none) - 1.0) < 1e-10 and none["soh"] is None
    # 80 % reported once, at the first sample, then never again: 1 / 0.8 = 1.25, across chunks
    soh = np.full(ts.size, np.nan)
    soh[0] = 80.0
    _, carried = run(make(), ts, i, soh=soh, cuts=(1, 5000, 20000))
    assert abs(cycles_of(carried) - 1.25) < 1e-10 and carried["soh"] == 80.0


def test_soh_zero_or_fraction_is_floored_not_divided_by() -> None:
    ts = seconds(10 * 3600 + 1)
    i = np.full(ts.size, 20.0)
    _, zero = run(make(), ts, i, soh=np.zeros(ts.size))
    assert abs(cycles_of(zero) - 2.0) < 1e-10  # SOH floored at min_soh_percent 50
    _, frac = run(make(min_soh_percent=80.0), ts, i, soh=np.full(ts.size, 0.95))
    assert abs(cycles_of(frac) - 1.25) < 1e-10  # a 0-1 SOH cannot give 100x the cycles


def test_stored_charge_efficiency() -> None:
    ts = seconds(99 * 3600 + 1)
    m = make(efficiency_mode="stored_charge")
    _, dis = run(m, ts, np.full(ts.size, 20.0))
    _, chg = run(m, ts, np.full(ts.size, -20.0))
    # discharge draws 1980 / 0.99 = 2000 Ah from storage: 10 cycles; charge stores 1980 x 0.98
    assert abs(cycles_of(dis) - 10.0) < 1e-9
    assert abs(cycles_of(chg) - 9.702) < 1e-9
    assert abs(ah_of(dis) - 1980.0) < 1e-9  # throughput stays the measured one
    # default mode: no weighting at all, cycles = throughput / 2C for either sign
    _, plain = run(make(), ts, np.full(ts.size, -20.0))
    assert abs(cycles_of(plain) - 9.9) < 1e-9


def test_initial_cycles_are_added_to_the_output() -> None:
    ts = seconds(99 * 3600 + 1)
    outs, state = run(make(initial_cycles=123.5), ts, np.full(ts.size, 20.0))
    assert abs(last(outs, "equivalent_cycles").value - 133.4) < 1e-9
    assert abs(cycles_of(state) - 9.9) < 1e-9  # the state holds what was counted


def test_estimates_follow_the_event_time_cadence() -> None:
    ts = seconds(3601, start_s=30)  # 30 s .. 3630 s: the first sample, then every minute
    outs, _ = run(make(), ts, np.full(ts.size, 20.0), cuts=(7, 100, 1999))
    got = [o.ts for o in outs if o.name == "equivalent_cycles"]
    assert got == [int(ts[0])] + [T0 + k * 60_000 for k in range(1, 61)]
    assert [o.name for o in outs[:5]] == [
        "equivalent_cycles",
        "equivalent_cycles_nominal",
        "throughput_ah",
        "throughput_charge_ah",
        "throughput_discharge_ah",
    ]
    # value as of the row: 20 A from 30 s to 60 s is 600 A s
    assert abs(outs[7].value * 3600 - 600.0) < 1e-9
    slow, _ = run(make(estimate_interval_s=600.0), ts, np.full(ts.size, 20.0))
    got = [o.ts for o in slow if o.name == "equivalent_cycles"]
    assert got == [int(ts[0])] + [T0 + k * 600_000 for k in range(1, 7)]


def test_manifest_defaults_and_validation() -> None:
    p = EqCycles.manifest.validate_params({}, "eq_cycles")
    assert p == {
        "estimate_interval_s": 60.0,
        "initial_cycles": 0.0,
        "min_soh_percent": 50.0,
        "integration": "trapezoid",
        "current_deadband_a": 0.0,
        "dense_dt_s": 1.5,
        "efficiency_mode": "none",
        "charge_efficiency": 0.98,
        "discharge_efficiency": 0.99,
    }
    with pytest.raises(ContractError, match="efficiency_mode"):
        EqCycles.manifest.validate_params({"efficiency_mode": "both"}, "eq_cycles")
    with pytest.raises(ContractError, match="integration"):
        EqCycles.manifest.validate_params({"integration": "linear"}, "eq_cycles")
    with pytest.raises(ContractError, match="min_soh_percent"):
        EqCycles.manifest.validate_params({"min_soh_percent": 0}, "eq_cycles")


def test_empty_chunk_changes_nothing() -> None:
    m = make()
    s0 = m.initial_state()
    outs, s1 = m.process(build_chunk("b", [], [], prev_ts=None, max_gap_ms=MAX_GAP_MS), s0)
    assert outs == [] and s1 == s0 and s1 is not s0


# -- chunking invariance and restart -----------------------------------------------------------


@cache
def profile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """~3 h at ~1 Hz, irregular (dense and sparse intervals): drive (noisy, both signs), rests, a
    10 min gap, sporadic SOH, a pack voltage absent at first and sporadically."""
    rng = np.random.default_rng(7)
    parts, t = [], 0
    for kind, dur in [
        ("drive", 2400),
        ("rest", 1800),
        ("drive", 1500),
        ("gap", 600),
        ("drive", 2000),
        ("rest", 1200),
        ("drive", 1300),
    ]:
        if kind == "gap":
            t += dur
            continue
        n = dur
        if kind == "drive":
            cur = 40.0 * np.sin(np.arange(n) / 97.0) + rng.normal(0, 8.0, n)
        else:
            cur = rng.normal(0, 0.05, n)
        parts.append((t + np.arange(n), cur))
        t += n
    ts = T0 + np.concatenate([p[0] for p in parts]).astype(np.int64) * 1000
    # irregular sampling: dense (<= dense_dt_s) and sparse intervals both occur
    ts = ts + rng.integers(0, 900, ts.size)
    ts = ts[np.r_[True, np.diff(ts) > 0]]
    keep = np.r_[True, rng.random(ts.size - 1) > 0.3]
    ts = ts[keep]
    cur = np.concatenate([p[1] for p in parts])[: keep.size][keep]
    soh = np.full(ts.size, np.nan)
    soh[rng.choice(ts.size, 12, replace=False)] = rng.uniform(85, 95, 12)
    volt = 380.0 + 0.1 * cur + rng.normal(0.0, 0.5, ts.size)
    volt[rng.random(ts.size) < 0.01] = np.nan  # sporadically missing
    volt[: ts.size // 10] = np.nan  # and absent at first: energy estimates start later
    return ts, cur, soh, volt


@cache
def reference():
    ts, cur, soh, volt = profile()
    return run(make(efficiency_mode="stored_charge"), ts, cur, soh=soh, voltage=volt)


def test_reference_profile_is_not_trivial() -> None:
    outs, state = reference()
    assert state["gaps"] == 1 and 595_000 < state["gap_ms"] < 610_000
    assert len(outs) > 300 and cycles_of(state) > 0.1 and state["soh"] is not None
    assert kwh_of(state, "energy_discharge") > 0 and kwh_of(state, "energy_charge") > 0
    names = {o.name for o in outs}
    assert {"energy_charge_kwh", "equivalent_cycles_nominal", "throughput_charge_ah"} <= names


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(1, len(profile()[0]) - 1), max_size=40, unique=True).map(sorted),
    roundtrip=st.booleans(),
)
def test_any_chunking_gives_identical_outputs_and_state(cuts, roundtrip) -> None:
    ts, cur, soh, volt = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        make(efficiency_mode="stored_charge"),
        ts,
        cur,
        soh=soh,
        cuts=cuts,
        roundtrip=roundtrip,
        voltage=volt,
    )
    assert outs == ref_out
    assert state == ref_state


def test_sample_by_sample_with_json_restart_is_identical() -> None:
    ts, cur, soh, volt = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        make(efficiency_mode="stored_charge"),
        ts,
        cur,
        soh=soh,
        voltage=volt,
        cuts=range(1, ts.size),
        roundtrip=True,
    )
    assert outs == ref_out
    assert state == ref_state


def test_deadband_drops_a_parked_offset_and_keeps_real_current() -> None:
    # 1 h parked with a -0.3 A sensor offset, then 1 h at 20 A
    ts = seconds(2 * 3600 + 1)
    cur = np.where(np.arange(ts.size) <= 3600, -0.3, 20.0)
    _, off = run(make(), ts, cur)
    _, band = run(make(current_deadband_a=0.5), ts, cur)
    # without: 0.3 A x 1 h phantom, then the 1 s step through zero (dense: the straight line,
    # (a^2 + b^2) / (2 |a - b|) = 400.09 / 40.6 A s), then 3599 s at 20 A
    step = (0.3**2 + 20.0**2) / (2 * 20.3)
    assert ah_of(off) == pytest.approx((0.3 * 3600 + step + 20.0 * 3599) / 3600, abs=1e-9)
    # with the deadband the parked hour adds nothing; the step integrates from 0 A
    assert ah_of(band) == pytest.approx(20.0 + (10.0 - 20.0) / 3600, abs=1e-9)


def test_contract_with_several_batteries_interleaved() -> None:
    """check_model: chunking, JSON round trip and interleaving in one block, on batteries
    with and without pack voltage, cells standing in for it, SOH and a gap."""
    from twin_stream.sdk.testing import check_model

    ts, cur, soh, volt = profile()
    n = 1500
    rng = np.random.default_rng(5)
    chunks = [
        build_chunk("a", ts[:n], cur[:n], prev_ts=None, max_gap_ms=MAX_GAP_MS, soh=soh[:n]),
        build_chunk(
            "b",
            ts[n : 2 * n],
            cur[n : 2 * n],
            prev_ts=None,
            max_gap_ms=MAX_GAP_MS,
            voltage=volt[n : 2 * n],
        ),
        build_chunk(
            "c",
            seconds(900),
            rng.normal(0.0, 30.0, 900),
            prev_ts=None,
            max_gap_ms=MAX_GAP_MS,
            cells=3.7 + rng.normal(0.0, 0.01, (900, 12)),
        ),
        build_chunk(
            "d",
            np.r_[seconds(300), seconds(300, start_s=400)],
            rng.normal(5.0, 20.0, 600),
            prev_ts=None,
            max_gap_ms=MAX_GAP_MS,
        ),
    ]
    for params in (
        {},
        {"efficiency_mode": "stored_charge", "integration": "hold"},
        {"integration": "interval_average", "current_deadband_a": 2.0},
    ):
        check_model(make(estimate_interval_s=7.0, **params), chunks)
