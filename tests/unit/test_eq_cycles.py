"""eq_cycles: hand-worked cycle counts, exact sign-change integration, gaps, SOH handling,
the efficiency option, and exact invariance under chunking and restart from JSON state."""

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
from twin_stream.chemistry import get_chemistry
from twin_stream.chunk import build_chunk
from twin_stream.contract import ContractError
from twin_stream.outputs import Estimate
from twin_stream.spec import BatterySpec

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


def run(m, ts, current, soh=None, cuts=(), roundtrip=False):
    """Feed the samples in chunks cut at `cuts`; returns (outputs, final state)."""
    ts = np.asarray(ts, dtype=np.int64)
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
        )
        o, state = m.process(c, state)
        outs += o
        prev = int(ts[hi - 1])
        if roundtrip:
            state = json.loads(json.dumps(state))
    return outs, state


def cycles_of(state) -> float:
    return (state["cycles"] * 10**15 + state["cycles_fc"]) / 10**15


def ah_of(state) -> float:
    return (state["throughput_ah"] * 10**15 + state["throughput_fah"]) / 10**15


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


def test_sign_change_inside_an_interval_is_integrated_exactly() -> None:
    # 10 A then -10 A over 2 s: |I| is a V dipping to 0 at 1 s: 2 triangles of 10 A x 1 s / 2
    _, state = run(make(), [T0, T0 + 2000], [10.0, -10.0])
    assert abs(ah_of(state) * 3600 - 10.0) < 1e-9  # 10 A s, not 20 (|a|+|b|) and not 0
    # asymmetric: 30 A to -10 A over 4 s: crossing at 3 s: 30*3/2 + 10*1/2 = 50 A s
    _, state = run(make(), [T0, T0 + 4000], [30.0, -10.0])
    assert abs(ah_of(state) * 3600 - 50.0) < 1e-9
    # same sign: plain trapezoid 10 -> 20 A over 2 s = 30 A s; a zero end: 0 -> -10 over 2 s = 10
    _, state = run(make(), [T0, T0 + 2000, T0 + 4000], [10.0, 20.0, 0.0])
    assert abs(ah_of(state) * 3600 - (30.0 + 20.0)) < 1e-9


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
    assert [o.name for o in outs[:2]] == ["equivalent_cycles", "throughput_ah"]
    # value as of the row: 20 A from 30 s to 60 s is 600 A s
    assert abs(outs[3].value * 3600 - 600.0) < 1e-9
    slow, _ = run(make(estimate_interval_s=600.0), ts, np.full(ts.size, 20.0))
    got = [o.ts for o in slow if o.name == "equivalent_cycles"]
    assert got == [int(ts[0])] + [T0 + k * 600_000 for k in range(1, 7)]


def test_manifest_defaults_and_validation() -> None:
    p = EqCycles.manifest.validate_params({}, "eq_cycles")
    assert p == {
        "estimate_interval_s": 60.0,
        "initial_cycles": 0.0,
        "min_soh_percent": 50.0,
        "efficiency_mode": "none",
        "charge_efficiency": 0.98,
        "discharge_efficiency": 0.99,
    }
    with pytest.raises(ContractError, match="efficiency_mode"):
        EqCycles.manifest.validate_params({"efficiency_mode": "both"}, "eq_cycles")
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
    """~3 h at 1 Hz: drive (noisy, both signs), rests, a 10 min gap, sporadic SOH."""
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
    cur = np.concatenate([p[1] for p in parts])
    soh = np.full(ts.size, np.nan)
    soh[rng.choice(ts.size, 12, replace=False)] = rng.uniform(85, 95, 12)
    return ts, cur, soh


@cache
def reference():
    ts, cur, soh = profile()
    return run(make(efficiency_mode="stored_charge"), ts, cur, soh=soh)


def test_reference_profile_is_not_trivial() -> None:
    outs, state = reference()
    assert state["gaps"] == 1 and state["gap_ms"] == 601_000
    assert len(outs) > 300 and cycles_of(state) > 0.1 and state["soh"] is not None


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(1, len(profile()[0]) - 1), max_size=40, unique=True).map(sorted),
    roundtrip=st.booleans(),
)
def test_any_chunking_gives_identical_outputs_and_state(cuts, roundtrip) -> None:
    ts, cur, soh = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        make(efficiency_mode="stored_charge"), ts, cur, soh=soh, cuts=cuts, roundtrip=roundtrip
    )
    assert outs == ref_out
    assert state == ref_state


def test_sample_by_sample_with_json_restart_is_identical() -> None:
    ts, cur, soh = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        make(efficiency_mode="stored_charge"),
        ts,
        cur,
        soh=soh,
        cuts=range(1, ts.size),
        roundtrip=True,
    )
    assert outs == ref_out
    assert state == ref_state
