"""soc_ocv_estimation: rest detection (current, duration, event-time voltage settling), SOC
from the OCV curve, the confidence, the available energy, and exact invariance under chunking
and restart from JSON state."""

from __future__ import annotations

import json
import math
from functools import cache
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.soc_ocv_estimation.model import SocOcvEstimation
from twin_stream.battery.chemistry import Chemistry, OcvTable, get_chemistry
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk import Block, StateArrays, run_kernel
from twin_stream.sdk.chunk import Chunk, build_chunk
from twin_stream.sdk.outputs import Alert, Estimate
from twin_stream.sdk.testing import check_model

T0 = 1_700_000_400_000  # epoch ms, on a minute boundary
MAX_GAP_MS = 60_000
# Table knots (1 % SOC steps, twin_stream/battery/chemistries): NMC OCV(37 %) = 3.6449 V, on a
# 7.5 mV/% segment (slope factor 1); LFP OCV(60 %) = 3.2688 V on the plateau, 0.2 mV/% there.
NMC_OCV_37 = float(get_chemistry("NMC").ocv.ocv_from_soc(37.0))
LFP_OCV_60 = float(get_chemistry("LFP").ocv.ocv_from_soc(60.0))
LFP_SLOPE_60 = float(get_chemistry("LFP").ocv.slope_at_soc(60.0)) * 1000.0  # mV per %
NMC_37_READ = 37.0 + (1.0 - math.exp(-2.0)) * 4.0 / 7.5


def spec(chem: str | Chemistry = "NMC", capacity: float = 100.0, cells: int | None = None):
    c = get_chemistry(chem) if isinstance(chem, str) else chem
    return BatterySpec(
        key="t", chemistry=c, capacity_ah=capacity, cells_in_series=cells, nominal_voltage=None
    )


def make(sp=None, **params: object) -> SocOcvEstimation:
    p = SocOcvEstimation.manifest.validate_params(params, "soc_ocv_estimation")
    return SocOcvEstimation(p, sp or spec())


def run(m, ts, current, cells=None, voltage=None, soh=None, cuts=(), roundtrip=False):
    ts = np.asarray(ts, dtype=np.int64)
    current = np.asarray(current, dtype=float)

    def part(x, lo, hi):
        return None if x is None else np.asarray(x, dtype=float)[lo:hi]

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
            cells=part(cells, lo, hi),
            voltage=part(voltage, lo, hi),
            soh=part(soh, lo, hi),
        )
        o, state = m.process(c, state)
        outs += o
        prev = int(ts[hi - 1])
        if roundtrip:
            state = json.loads(json.dumps(state))
    return outs, state


def drive_then_rest(drive_s: int, rest_s: int, v_rest, n_cells: int = 4, current: float = 30.0):
    """1 Hz: `drive_s` samples under load at 3.5 V, then `rest_s` samples at 0 A with the
    cell voltage `v_rest` (a float or a function of the time since rest began, in s)."""
    n = drive_s + rest_s
    ts = T0 + np.arange(n, dtype=np.int64) * 1000
    cur = np.where(np.arange(n) < drive_s, current, 0.0)
    t_rest = np.arange(rest_s, dtype=float)
    v = np.full(rest_s, float(v_rest)) if not callable(v_rest) else v_rest(t_rest)
    cell_v = np.concatenate([np.full(drive_s, 3.5), v])
    return ts, cur, np.repeat(cell_v[:, None], n_cells, axis=1)


def socs(outs):
    return [o for o in outs if isinstance(o, Estimate) and o.name == "soc_ocv"]


# -- rest detection and SOC ---------------------------------------------------------------------


def by(outs, name):
    return [o for o in outs if isinstance(o, Estimate) and o.name == name]


def lin_chem(name: str = "LIN") -> Chemistry:
    """OCV linear 3.0 V at 0 % to 4.0 V at 100 % (10 mV per %), no hysteresis data; the
    default relaxation (tau 1200 s, 0.15 Ohm Ah)."""
    return Chemistry(
        name=name,
        ocv=OcvTable((0.0, 100.0), (3.0, 4.0)),
        nominal_cell_voltage=3.5,
        charge_efficiency=1.0,
        discharge_efficiency=1.0,
    )


def test_nmc_rest_at_ocv_37_gives_37_at_window_closes_after_min_rest() -> None:
    ts, cur, cells = drive_then_rest(600, 1800, NMC_OCV_37)
    outs, state = run(make(), ts, cur, cells=cells)
    got = socs(outs)
    rest_start = T0 + 600_000
    # 300 s regression windows close at 300, 600, ... s of rest; min rest 600 s
    assert [o.ts for o in got] == [rest_start + k * 300_000 for k in range(2, 6)]
    # after a discharge of 5 % SOC (10 Ah) the NMC discharge branch (-4 mV) holds with the
    # weight 1 - exp(-5 / 2.5): 37 % + 0.8647 x 4 mV / 7.5 mV/%
    assert all(abs(o.value - NMC_37_READ) < 0.01 for o in got)
    assert got[0].unit == "%" and got[0].uncertainty is not None
    assert [o.name for o in outs[:4]] == ["soc_ocv", "soc_min", "soc_max", "available_energy"]
    assert state["rest_start"] == rest_start and state["dir"] == -1


def test_pack_voltage_over_cells_in_series_when_no_cell_voltages() -> None:
    ts, cur, _ = drive_then_rest(600, 1300, NMC_OCV_37)
    pack = np.where(cur > 0, 96 * 3.5, 96 * NMC_OCV_37)
    outs, _ = run(make(spec(cells=96)), ts, cur, voltage=pack)
    got = socs(outs)
    assert got and got[0].ts == T0 + 1_200_000 and abs(got[0].value - NMC_37_READ) < 0.01
    outs, _ = run(make(spec()), ts, cur, voltage=pack)
    assert outs == []


def test_five_minute_rest_gives_nothing() -> None:
    ts, cur, cells = drive_then_rest(600, 300, NMC_OCV_37)
    assert run(make(), ts, cur, cells=cells)[0] == []


def test_load_or_gap_restarts_the_rest_timer() -> None:
    ts, cur, cells = drive_then_rest(600, 961, NMC_OCV_37)
    cur[600 + 480] = 5.0
    assert run(make(), ts, cur, cells=cells)[0] == []
    cur[600 + 480] = 0.0
    assert socs(run(make(), ts, cur, cells=cells)[0])
    ts_gap = ts.copy()
    ts_gap[600 + 480 :] += 120_000
    assert run(make(), ts_gap, cur, cells=cells)[0] == []


def test_rest_band_is_a_c_rate_with_ir_compensation() -> None:
    # 280 Ah LIN cell: rest band C/100 = 2.8 A. A 2 A parasitic load (C/140) rests; the
    # terminal voltage sits I R = 2 A x 0.15 Ohm Ah / 280 Ah = 1.0714 mV below the OCV of
    # 50 % (3.5 V), and the compensation puts it back: 50 %, not 49.89 %.
    chem = lin_chem()
    r = 0.15 / 280.0
    ts, cur, cells = drive_then_rest(600, 1300, 3.5 - 2.0 * r, n_cells=2, current=50.0)
    cur[600:] = 2.0
    got = socs(run(make(spec(chem, capacity=280.0)), ts, cur, cells=cells)[0])
    assert got and abs(got[0].value - 50.0) < 1e-6
    # 3 A is C/93: not rest on 280 Ah (the old 0.5 A band rejected even the 2 A)
    cur[600:] = 3.0
    assert run(make(spec(chem, capacity=280.0)), ts, cur, cells=cells)[0] == []
    # ... but rest on 400 Ah (C/133)
    assert socs(run(make(spec(chem, capacity=400.0)), ts, cur, cells=cells)[0])


def test_settle_test_is_a_regression_slope_not_two_samples() -> None:
    # v = OCV + 50 mV exp(-t / 600 s): slope 5 exp(-t/600) mV/min, mean over the windows
    # 0-300, 300-600, 600-900, 900-1200 s: 3.93, 2.38, 1.45, 0.88 mV/min -> the first settled
    # close is at 1200 s
    def relax(t):
        return NMC_OCV_37 + 0.050 * np.exp(-t / 600.0)

    ts, cur, cells = drive_then_rest(600, 2400, relax)
    got = socs(run(make(), ts, cur, cells=cells)[0])
    assert got[0].ts == T0 + 600_000 + 1_200_000
    # +/-3 mV uniform noise on every sample (180 mV/min between two samples): the fit settles
    rng = np.random.default_rng(3)
    ts, cur, cells = drive_then_rest(600, 1300, NMC_OCV_37, n_cells=1)
    cells[600:, 0] += rng.uniform(-0.003, 0.003, 1300)
    got = socs(run(make(), ts, cur, cells=cells)[0])
    assert got[0].ts == T0 + 1_200_000 and abs(got[0].value - NMC_37_READ) < 0.2


def test_cold_rest_needs_longer() -> None:
    # at -5 degC the Arrhenius factor exp(3000 (1/268.15 - 1/298.15)) = 3.087: 600 s x 3.087
    # = 1852 s of rest before the first estimate (the close at 2100 s), and none at 25 degC-ish
    ts, cur, cells = drive_then_rest(600, 2400, NMC_OCV_37)
    temps = np.full((ts.size, 2), -5.0)
    m = make()
    state = m.initial_state()
    c = build_chunk("b", ts, cur, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, temps=temps)
    outs, _ = m.process(c, state)
    assert socs(outs)[0].ts == T0 + 600_000 + 2_100_000


def test_lfp_branch_follows_the_last_current_direction() -> None:
    # after a charge the rest voltage is OCV(60 %) + 15 mV, after a discharge - 15 mV: both
    # read 60 % on their branch (without the branches: far off on the plateau)
    for current, dv in ((-50.0, 0.015), (50.0, -0.015)):
        ts, cur, cells = drive_then_rest(1200, 1300, LFP_OCV_60 + dv, current=current)
        outs, state = run(make(spec("LFP")), ts, cur, cells=cells)
        got = socs(outs)
        # 1200 s at 0.5C = 16.7 % SOC: the branch weight is 1 - exp(-16.7 / 2.5) = 0.9987
        assert got and abs(got[-1].value - 60.0) < 0.2
        assert state["dir"] == (1 if current < 0 else -1)
        assert got[-1].uncertainty > 5.0  # the plateau: 7.5 mV of hysteresis residual
        wrong = float(get_chemistry("LFP").ocv.soc_from_ocv(LFP_OCV_60 + dv))
        assert abs(wrong - 60.0) > 10.0


def test_uncertainty_is_the_soc_interval_of_the_voltage_sigma() -> None:
    # constant 3.5 V at 0 A on the LIN table: fit noise 0, slope 0, no hysteresis data, no
    # I R: sigma_v = sqrt(1^2 + 1^2/12) mV = 1.040833 mV -> 0.1040833 % at 10 mV/%
    ts, cur, cells = drive_then_rest(600, 700, 3.5, n_cells=3)
    got = socs(run(make(spec(lin_chem())), ts, cur, cells=cells)[0])
    sig_v = math.sqrt(1.0 + 1.0 / 12.0)
    assert abs(got[0].value - 50.0) < 1e-9
    assert abs(got[0].uncertainty - sig_v / 10.0) < 1e-9
    assert abs(got[0].confidence - 1.0 / (1.0 + (sig_v / 10.0) ** 2)) < 1e-9
    # a kinked table: 3.499 V at 50 %, 3.501 V at 60 % (0.2 mV/% between), 10 mV/% outside.
    # 3.5 V -> 55 %; [3.5 - s, 3.5 + s] reaches 1.0408e-3 - 1e-3 = 4.08e-5 V onto each steep
    # segment: SOC 50 - 4.08e-5/0.00998 ... 60 + 4.08e-5/0.012475 -> half-width 5.0037 %,
    # not s / slope at 55 % = 5.204 %
    kink = Chemistry(
        name="KINK",
        ocv=OcvTable((0.0, 50.0, 60.0, 100.0), (3.0, 3.499, 3.501, 4.0)),
        nominal_cell_voltage=3.5,
        charge_efficiency=1.0,
        discharge_efficiency=1.0,
    )
    got = socs(run(make(spec(kink)), ts, cur, cells=cells)[0])
    e = sig_v / 1000.0 - 0.001
    lo, hi = 50.0 - e / (0.499 / 50.0), 60.0 + e / (0.499 / 40.0)
    assert abs(got[0].value - 55.0) < 1e-9
    assert abs(got[0].uncertainty - (hi - lo) / 2.0) < 1e-9


def test_bms_soc_error_and_debounced_deviation_alert() -> None:
    ts, cur, cells = drive_then_rest(600, 2400, 3.5, n_cells=2)
    sp = spec(lin_chem())
    soc = np.full(ts.size, 62.5)  # BMS 12.5 % above the twin's 50 %
    m = make(sp)
    c = build_chunk("b", ts, cur, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, soc=soc)
    outs, _ = m.process(c, m.initial_state())
    err = by(outs, "bms_soc_error")
    assert [round(o.value, 9) for o in err] == [12.5] * 6  # closes at 600 .. 2100 s
    alerts = [o for o in outs if isinstance(o, Alert)]
    # raised at the third comparison (bms_deviation_samples = 3), once
    assert [(a.code, a.status, a.ts) for a in alerts] == [
        ("bms_soc_deviation", "raised", err[2].ts)
    ]
    assert "BMS minus twin +12.5 %" in alerts[0].message
    # 3 % off: below the 5 % threshold, no alert
    c = build_chunk("b", ts, cur, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells, soc=soc - 9.5)
    outs, _ = m.process(c, m.initial_state())
    assert by(outs, "bms_soc_error") and not [o for o in outs if isinstance(o, Alert)]


def test_current_offset_is_the_mean_rest_current_after_30_min() -> None:
    ts, cur, cells = drive_then_rest(600, 3000, NMC_OCV_37)
    cur[600:] = np.where(np.arange(3000) % 2 == 0, -0.2, -0.4)  # mean -0.3 A
    outs, _ = run(make(), ts, cur, cells=cells)
    off = by(outs, "current_offset_a")
    assert off and off[0].ts >= T0 + 600_000 + 1_800_000
    assert all(abs(o.value - -0.3) < 1e-3 for o in off)
    assert all(o.uncertainty >= 0.1 / math.sqrt(12.0) for o in off)


def test_available_energy_ends_at_the_first_cells_cut_off() -> None:
    # LIN table, two cells at 3.5 V (50 %) and 3.4 V (40 %), 100 Ah: the string delivers 40 Ah,
    # cell 1 from 50 to 10 %: 0.4 x 3 + (0.5^2 - 0.1^2) / 2 = 1.32 Wh/Ah, cell 2 from 40 to
    # 0 %: 1.2 + 0.08 = 1.28 -> 2.6 Wh/Ah x 100 Ah = 0.26 kWh (the mean cell gave 0.29)
    ts, cur, cells = drive_then_rest(600, 700, 3.5, n_cells=2)
    cells[600:, 1] = 3.4
    outs, _ = run(make(spec(lin_chem())), ts, cur, cells=cells)
    energy = by(outs, "available_energy")
    assert energy and energy[0].unit == "kWh"
    assert abs(energy[0].value - 0.26) < 1e-9
    assert abs(by(outs, "soc_min")[0].value - 40.0) < 1e-9
    assert abs(by(outs, "soc_max")[0].value - 50.0) < 1e-9
    soh = np.full(ts.size, np.nan)
    soh[3] = 80.0
    outs, state = run(make(spec(lin_chem())), ts, cur, cells=cells, soh=soh, cuts=(10, 700))
    assert abs(by(outs, "available_energy")[0].value - 0.208) < 1e-9 and state["soh"] == 80.0


# -- chunking invariance and restart -----------------------------------------------------------


@cache
def profile():
    """~4 h at 1 Hz, 4 cells: drives, relaxing rests with noise, a gap inside a rest, small
    rest currents, missing cells, sporadic SOH."""
    rng = np.random.default_rng(11)
    ocv = get_chemistry("NMC").ocv
    ts_l, cur_l, v_l = [], [], []
    t = 0
    soc = 80.0
    for kind, dur in [
        ("drive", 1800),
        ("rest", 2400),
        ("drive", 900),
        ("rest", 500),
        ("gap", 300),
        ("rest", 1500),
        ("drive", 1200),
        ("rest", 3000),
    ]:
        if kind == "gap":
            t += dur
            continue
        k = np.arange(dur)
        if kind == "drive":
            cur = 30.0 + 20.0 * np.sin(k / 53.0) + rng.normal(0, 3.0, dur)
            soc -= cur.sum() / 3600.0  # 100 Ah: 1 Ah = 1 %
            v = ocv.ocv_from_soc(np.full(dur, soc)) - 0.001 * cur
        else:
            cur = rng.normal(0, 0.1, dur)
            v = ocv.ocv_from_soc(soc) + 0.03 * np.exp(-k / 900.0)
        ts_l.append(t + k)
        cur_l.append(cur)
        v_l.append(v)
        t += dur
    ts = T0 + np.concatenate(ts_l).astype(np.int64) * 1000
    cur = np.concatenate(cur_l)
    v = np.concatenate(v_l)
    cells = v[:, None] + rng.normal(0, 0.0002, (v.size, 4))
    cells[rng.choice(v.size, 50, replace=False), 2] = np.nan
    cells[rng.choice(v.size, 5, replace=False), :] = np.nan
    soh = np.full(ts.size, np.nan)
    soh[rng.choice(ts.size, 8, replace=False)] = rng.uniform(85, 95, 8)
    return ts, cur, cells, soh


def model_for_profile() -> SocOcvEstimation:
    return make(
        spec(cells=4), settle_window_s=120.0, estimate_interval_s=90.0, offset_min_rest_s=900.0
    )


@cache
def reference():
    ts, cur, cells, soh = profile()
    return run(model_for_profile(), ts, cur, cells=cells, voltage=4 * cells[:, 0], soh=soh)


def test_reference_profile_is_not_trivial() -> None:
    outs, state = reference()
    t = np.array([(o.ts - T0) // 1000 for o in socs(outs)])
    # three rest periods reported: from 1800 s, from 5900 s (the rest began at 5100 s, but
    # the gap 5600-5900 s restarted it) and from 8600 s; each not before 600 s of rest
    firsts = t[np.concatenate([[0], np.flatnonzero(np.diff(t) > 300) + 1])]
    assert len(firsts) == 3
    assert all(f >= s + 600 for f, s in zip(firsts, (1800, 5900, 8600), strict=True))
    assert firsts[1] < 7400 and firsts[2] < 11600
    # the last rest is open, with a regression window of samples on every cell
    assert state["in_rest"] and state["rest_start"] == T0 + 8_600_000
    assert state["win_cols"] == 4 and all(s[0] > 0 for s in state["win_sums"])
    assert by(outs, "current_offset_a")  # offset_min_rest_s 900 s: the long rests report it


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(1, len(profile()[0]) - 1), max_size=40, unique=True).map(sorted),
    roundtrip=st.booleans(),
)
def test_any_chunking_gives_identical_outputs_and_state(cuts, roundtrip) -> None:
    ts, cur, cells, soh = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        model_for_profile(),
        ts,
        cur,
        cells=cells,
        voltage=4 * cells[:, 0],
        soh=soh,
        cuts=cuts,
        roundtrip=roundtrip,
    )
    assert outs == ref_out
    assert state == ref_state


def test_sample_by_sample_with_json_restart_is_identical() -> None:
    ts, cur, cells, soh = profile()
    ref_out, ref_state = reference()
    outs, state = run(
        model_for_profile(),
        ts,
        cur,
        cells=cells,
        voltage=4 * cells[:, 0],
        soh=soh,
        cuts=range(1, ts.size),
        roundtrip=True,
    )
    assert outs == ref_out
    assert state == ref_state


def test_a_state_of_the_previous_release_is_upgraded_not_refused() -> None:
    m = make()
    v1 = {"version": 1, "rest_start": T0, "anchor_ts": None, "anchor_v": None, "dvdt": None,
          "emitted": False, "last_slot": None, "soh": 97.0}  # fmt: skip
    ts = T0 + 1000 * np.arange(5)
    c = build_chunk(
        "b", ts, np.zeros(5), prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=np.full((5, 2), 3.7)
    )
    _, state = m.process(c, v1)
    assert state["version"] == m.initial_state()["version"] != 1


def _as_v2(state: dict) -> dict:
    """A version-3 state written the way 2.0.0 stored it (its dict format)."""
    rest = state["in_rest"]
    sums = [list(x) for x in zip(*state["win_sums"], strict=True)] if state["win_cols"] else None
    ch = state["bms"]
    return {
        "version": 2,
        "rest_start": state["rest_start"] if rest else None,
        "win_start": state["win_start"] if rest and sums else None,
        "win_sums": sums if rest else None,
        "last_slot": state["last_slot"] if state["last_slot"] > -(2**62) else None,
        "soh": state["soh"],
        "dir": state["dir"],
        "h0": state["h0"],
        "q_run": state["q_run"],
        "rest_i": state["rest_i"] if rest else [0, 0, 0],
        "bms": {"bms_soc_deviation": ch[:6]} if any(ch[:6]) else {},
    }


def test_a_state_of_2_0_0_mid_rest_continues_as_if_never_stored() -> None:
    ts, cur, cells, soh = profile()
    ref_out, ref_state = reference()
    m = model_for_profile()
    cut = 8600 + 800  # inside the last rest, a regression window open
    for k in (cut, 2100):  # ... and inside the first rest, before its first estimate
        outs, state = run(
            m, ts[:k], cur[:k], cells=cells[:k], voltage=4 * cells[:k, 0], soh=soh[:k]
        )
        old = json.loads(json.dumps(_as_v2(state)))
        assert old["rest_start"] is not None and old["win_sums"] is not None
        c = build_chunk(
            "b",
            ts[k:],
            cur[k:],
            prev_ts=int(ts[k - 1]),
            max_gap_ms=MAX_GAP_MS,
            cells=cells[k:],
            voltage=4 * cells[k:, 0],
            soh=soh[k:],
        )
        rest, state = m.process(c, old)
        assert outs + rest == ref_out
        assert state == ref_state


def _chunk(ts, cur, cells=None, voltage=None, soc=None, temps=None) -> Chunk:
    return build_chunk(
        "b",
        np.asarray(ts, dtype=np.int64),
        np.asarray(cur, dtype=float),
        prev_ts=None,
        max_gap_ms=MAX_GAP_MS,
        cells=cells,
        voltage=voltage,
        soc=soc,
        temps=temps,
    )


def _batteries(chem: str) -> list[Chunk]:
    """Several batteries of one spec (4 cells in series): relaxing rests after a charge or a
    discharge, a BMS SOC that deviates, cold sensors, a pack voltage without cell voltages,
    fewer cells reported, and the reference profile."""
    ocv = get_chemistry(chem).ocv
    rng = np.random.default_rng(5)
    out: list[Chunk] = []
    for k, current in enumerate((40.0, -40.0, 25.0, -25.0)):
        v0 = float(ocv.ocv_from_soc(30.0 + 12.0 * k))

        def relax(t, v0=v0, sign=-1.0 if current > 0 else 1.0):
            return v0 + sign * 0.02 * np.exp(-t / 500.0)

        ts, cur, cells = drive_then_rest(500 + 100 * k, 2600, relax, n_cells=4, current=current)
        cells = cells + rng.normal(0, 0.0004, cells.shape)
        soc = np.full(ts.size, 30.0 + 12.0 * k + (9.0 if k % 2 else 1.0))
        temps = np.full((ts.size, 2), -5.0 + 10.0 * k) if k < 2 else None
        if k == 2:  # the pack voltage only
            out.append(_chunk(ts, cur, voltage=4.0 * cells[:, 0], soc=soc))
        elif k == 3:  # two cells reported
            out.append(_chunk(ts, cur, cells=cells[:, :2], soc=soc, temps=temps))
        else:
            out.append(_chunk(ts, cur, cells=cells, soc=soc, temps=temps))
    ts, cur, cells, _ = profile()
    out.append(_chunk(ts[:6000], cur[:6000], cells=cells[:6000]))
    return out


def test_check_model_nmc_and_lfp_batteries() -> None:
    for chem in ("NMC", "LFP"):
        m = make(spec(chem, cells=4), settle_window_s=120.0, offset_min_rest_s=900.0)
        chunks = _batteries(chem)
        outs = [m.process(c, m.initial_state())[0] for c in chunks]
        assert all(socs(o) for o in outs)  # every battery gives estimates
        assert any(isinstance(o, Alert) for o in outs[1])  # the BMS 9 % off
        check_model(m, chunks, trials=3)


def test_batteries_of_different_specs_interleave_in_one_block() -> None:
    """NMC and LFP instances (different parameter rows) in one block, records interleaved:
    every battery gets what its own instance gives it alone."""
    models = [
        make(spec("NMC", cells=4), settle_window_s=120.0),
        make(spec("LFP", capacity=280.0, cells=4), settle_window_s=120.0),
        make(spec(lin_chem(), cells=4), settle_window_s=60.0, bms_deviation_samples=1),
    ]
    chunks = [_batteries("NMC")[0], _batteries("LFP")[1], _batteries("NMC")[3]]
    alone = [m.process(c, m.initial_state()) for m, c in zip(models, chunks, strict=True)]
    assert all(socs(a[0]) for a in alone)
    assert {c.temps.shape[1] for c in chunks} == {0, 2}
    order = np.argsort(np.concatenate([c.ts for c in chunks]), kind="stable")
    slot = np.concatenate([np.full(len(c), k) for k, c in enumerate(chunks)])[order]
    pos = np.concatenate([np.arange(len(c)) for c in chunks])[order]
    width = max(c.cells.shape[1] for c in chunks)

    def col(name: str) -> np.ndarray:
        return np.array([getattr(chunks[s], name)[p] for s, p in zip(slot, pos, strict=True)])

    twidth = max(c.temps.shape[1] for c in chunks)
    cells = np.full((slot.size, width), np.nan)
    temps = np.full((slot.size, twidth), np.nan)
    for r, (s, p) in enumerate(zip(slot, pos, strict=True)):
        cells[r, : chunks[s].cells.shape[1]] = chunks[s].cells[p]
        temps[r, : chunks[s].temps.shape[1]] = chunks[s].temps[p]
    blk = Block(
        slot.astype(np.int64),
        col("ts"),
        col("dt_ms"),
        col("gap"),
        col("current"),
        col("voltage"),
        cells,
        temps,
        col("soc"),
        col("soh"),
        np.array([c.cells.shape[1] for c in chunks], dtype=np.int64),
        np.array([c.temps.shape[1] for c in chunks], dtype=np.int64),
    )
    state = StateArrays(SocOcvEstimation.state_spec, len(chunks), width, twidth)
    params = np.vstack([m.param_row() for m in models])
    rows = run_kernel(models[0], blk, params, state)
    for k, m in enumerate(models):
        mine = rows[slot[rows[:, 0].astype(int)] == k]
        assert m.outputs(mine, blk.ts) == alone[k][0]
        assert state.to_dict(k, chunks[k].cells.shape[1], chunks[k].temps.shape[1]) == alone[k][1]
