"""imbalance_analysis: spread, SOC imbalance through the OCV curve with confidence, alert.

Hand-worked numbers (chemistry tables in twin_stream/battery/chemistries):
- NMC OCV(40 %) = 3.6670 V; OCV(45 %) = 3.7054 V (knots of the 1 % table), so a pack with
  one cell at each (and a third at 3.690 V) has spread 0.0384 V, relative spread
  0.0384 / 3.68747 V = 1.0414 % and SOC imbalance 5 %.
  The NMC slopes at 40 and 45 % are 7.3 and 8.2 mV/% > 5: slope factor 1.
- LFP OCV(55 %) = 3.2678 V, OCV(60 %) = 3.2688 V: slope 0.2 mV/% at both, slope factor
  0.2 / 5 = 0.04.
- Rest factor = rest time / 3600 s; soc_imbalance only from 600 s of rest on.
- Alert debounce at 1 Hz: 30 s raise starting at row r raises at r + 29; 60 s clear at r + 59.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_stream.battery.chemistry import get_chemistry
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.chunk import Chunk, build_chunk
from twin_stream.sdk.contract import ContractError
from twin_stream.sdk.outputs import Alert, Estimate
from twin_stream.sdk.registry import discover_models

T0 = 60_000 * 28_333_334  # aligned to a 60 s slot
MAX_GAP_MS = 10_000


def make_model(chem: str = "NMC", **params: Any):
    cls = discover_models()["imbalance_analysis"]
    spec = BatterySpec(
        key=chem,
        chemistry=get_chemistry(chem),
        capacity_ah=100.0,
        cells_in_series=None,
        nominal_voltage=None,
    )
    return cls(cls.manifest.validate_params(params, "imbalance_analysis"), spec)


def make_chunk(cells, current=None, ts=None, prev_ts=None) -> Chunk:
    cells = np.asarray(cells, dtype=float)
    n = cells.shape[0]
    if ts is None:
        ts = T0 + 1000 * np.arange(n)
    if current is None:
        current = np.zeros(n)
    return build_chunk("b", ts, current, prev_ts=prev_ts, max_gap_ms=MAX_GAP_MS, cells=cells)


def estimates(outputs, name: str) -> list[Estimate]:
    return [o for o in outputs if isinstance(o, Estimate) and o.name == name]


def alerts(outputs) -> list[Alert]:
    return [o for o in outputs if isinstance(o, Alert)]


def run(model, chunk):
    return model.process(chunk, model.initial_state())


def test_nmc_spread_and_soc_imbalance_at_rest():
    n = 3700
    cells = np.tile([3.667, 3.7054, 3.690], (n, 1))  # OCV(40 %), OCV(45 %), one in between
    out, state = run(make_model("NMC"), make_chunk(cells))

    spread = estimates(out, "voltage_spread")
    assert [(e.ts - T0) // 1000 for e in spread] == list(range(0, n, 60))
    assert all(e.value == pytest.approx(0.0384, abs=1e-12) and e.confidence is None for e in spread)
    rel = estimates(out, "relative_spread_pct")
    mean = (3.667 + 3.7054 + 3.690) / 3
    assert rel[0].value == pytest.approx(0.0384 / mean * 100, rel=1e-12)
    assert rel[0].value == pytest.approx(1.0414, abs=1e-4)

    soc = estimates(out, "soc_imbalance")
    # first at 600 s of rest (rest starts at row 0), then every minute
    assert [(e.ts - T0) // 1000 for e in soc] == list(range(600, n, 60))
    assert all(e.value == pytest.approx(5.0, abs=0.01) and e.unit == "%" for e in soc)
    assert soc[0].confidence == pytest.approx(600 / 3600)
    assert soc[10].confidence == pytest.approx(1200 / 3600)
    full = [e for e in soc if e.ts - T0 >= 3_600_000]
    assert full and all(e.confidence == pytest.approx(1.0) for e in full)
    # 0.8 exactly at 2880 s of rest; the first slot entry above it is 2940 s
    assert soc[38].ts - T0 == 2_880_000 and soc[38].confidence == pytest.approx(0.8)
    assert next(e for e in soc if (e.confidence or 0.0) > 0.8 + 1e-9).ts - T0 == 2_940_000
    assert state["rest_start"] == T0
    assert alerts(out) == []


def test_lfp_plateau_gives_low_confidence():
    n = 3700
    cells = np.tile([3.2678, 3.2688], (n, 1))  # OCV(55 %), OCV(60 %)
    out, _ = run(make_model("LFP"), make_chunk(cells))
    soc = estimates(out, "soc_imbalance")
    assert soc
    last = soc[-1]  # fully rested: only the slope factor is left
    assert last.value == pytest.approx(5.0, abs=0.01)
    assert last.confidence == pytest.approx(0.04, abs=1e-9)
    assert all(e.confidence is not None and e.confidence <= 0.3 for e in soc)


def test_no_soc_imbalance_under_load_and_load_restarts_rest():
    n = 1500
    cells = np.tile([3.667, 3.709], (n, 1))
    current = np.full(n, 40.0)  # discharging
    out, state = run(make_model("NMC"), make_chunk(cells, current))
    assert estimates(out, "soc_imbalance") == []
    assert len(estimates(out, "voltage_spread")) == 25  # the spread is still reported
    assert state["rest_start"] is None

    current = np.zeros(n)
    current[500] = 2.0  # a load pulse at row 500: rest restarts at row 501
    out, _ = run(make_model("NMC"), make_chunk(cells, current))
    soc = estimates(out, "soc_imbalance")
    # rows 0..499 rested < 600 s; next 600 s of rest at row 1101, first slot entry after: 1140
    assert [(e.ts - T0) // 1000 for e in soc] == list(range(1140, n, 60))
    assert soc[0].confidence == pytest.approx(639 / 3600)


def test_rest_spans_chunks_but_not_gaps():
    model = make_model("NMC")
    cells = np.tile([3.667, 3.709], (400, 1))
    first = make_chunk(cells)
    _, state = model.process(first, model.initial_state())
    assert state["rest_start"] == T0
    # continues 1 s later: rest carried across the chunk boundary, 600 s reached at row 600
    ts = T0 + 1000 * np.arange(400, 800)
    out, _ = model.process(make_chunk(cells, ts=ts, prev_ts=int(first.ts[-1])), state)
    assert [(e.ts - T0) // 1000 for e in estimates(out, "soc_imbalance")] == [600, 660, 720, 780]
    # the same samples after a 60 s gap: rest restarts at the first sample after the gap
    ts_gap = ts + 60_000
    out, new_state = model.process(make_chunk(cells, ts=ts_gap, prev_ts=int(first.ts[-1])), state)
    assert estimates(out, "soc_imbalance") == []
    assert new_state["rest_start"] == int(ts_gap[0])


def test_cell_imbalance_raise_and_clear_with_hysteresis():
    n = 300
    spread = np.empty(n)
    spread[:10] = 0.05
    spread[10:70] = 0.12  # > 0.10: warning raised at row 39
    spread[70:190] = 0.09  # inside the hysteresis band (0.08, 0.10]: stays raised
    spread[190:] = 0.07  # < 0.08: cleared at row 249
    cells = np.full((n, 4), 3.70)
    cells[:, 3] = 3.70 - spread  # the lowest cell is cell 3
    out, state = run(make_model("NMC"), make_chunk(cells, current=np.full(n, 25.0)))
    a = alerts(out)
    assert [((x.ts - T0) // 1000, x.severity, x.status, x.cell) for x in a] == [
        (39, "warning", "raised", 3),
        (249, "warning", "cleared", 3),
    ]
    assert a[0].value == pytest.approx(0.12, abs=1e-9) and a[0].threshold == 0.10
    assert a[1].value == pytest.approx(0.07, abs=1e-9)
    assert a[0].code == "cell_imbalance" and a[0].unit == "V"
    assert state["channels"] == [[0] * 7, [0] * 7]  # both levels idle
    assert state["named"] == [-1, -1]  # the clear forgot the raise's cell


def test_cell_imbalance_critical_escalation_and_clear_order():
    n = 200
    cells = np.full((n, 3), 3.60)
    cells[20:100, 0] = 3.25  # spread 0.35 > 0.30: warning and critical both raised at 49
    cells[100:, 0] = 3.59  # spread 0.01: critical clears before warning, both at 159
    out, _ = run(make_model("NMC"), make_chunk(cells))
    assert [((x.ts - T0) // 1000, x.severity, x.status, x.cell) for x in alerts(out)] == [
        (49, "warning", "raised", 0),
        (49, "critical", "raised", 0),
        (159, "critical", "cleared", 0),
        (159, "warning", "cleared", 0),
    ]


def _culprit_run(cells: np.ndarray, current=None):
    out, _ = run(make_model("NMC"), make_chunk(cells, current=current))
    return alerts(out)


def test_culprit_is_the_cell_furthest_from_the_median_low():
    n = 60
    cells = np.full((n, 8), 3.70) + np.linspace(0.0, 0.007, 8)[None, :]  # 3.700..3.707
    cells[:, 5] = 3.59  # 0.1135 V below the median 3.7035 (of the other cells and itself)
    a = _culprit_run(cells)[0]
    assert (a.cell, a.severity, a.status) == (5, "warning", "raised")
    assert a.message == (
        "cell spread 0.117 V above the warning limit 0.1 V: cell #6 (index 5) at 3.590 V, "
        "0.113 V below the median 3.703 V"
    )


def test_culprit_high_cell_is_named_not_the_lowest():
    n = 60
    cells = np.full((n, 7), 3.70) + np.linspace(0.0, 0.006, 7)[None, :]  # 3.700..3.706
    cells[:, 2] = 3.82  # high cell; the lowest (index 0, 3.700) is healthy; median 3.704
    a = _culprit_run(cells)[0]
    assert a.cell == 2
    assert "cell #3 (index 2) at 3.820 V, 0.116 V above the median 3.704 V" in a.message


def test_culprit_stuck_high_channel_under_load():
    # the pack discharges: every cell falls 1 mV/s, channel 6 is stuck at its first value
    n = 200
    t = np.arange(n)[:, None]
    cells = 3.90 - 0.001 * t + np.zeros((1, 10)) + 0.0005 * np.arange(10)[None, :]
    cells[:, 6] = cells[0, 6]
    cur = np.full(n, 50.0)
    a = _culprit_run(cells, cur)[0]
    assert (a.cell, a.status) == (6, "raised")
    assert "cell #7 (index 6)" in a.message and "above the median" in a.message
    # ties go to the lowest index; NaN cells are never named
    from models.imbalance_analysis.model import culprit

    assert culprit(np.array([3.6, np.nan, 3.7, 3.8])) == (0, 3.7)
    assert culprit(np.array([np.nan, 3.5, 3.7, 3.7, 3.7])) == (1, 3.7)


def test_single_sample_glitch_at_0_1_hz_does_not_raise():
    # 0.1 Hz: one sample's 10 s interval nearly fills the 30 s counter; 3 samples are needed
    n = 12
    ts = T0 + 10_000 * np.arange(n)
    cells = np.full((n, 4), 3.70)
    cells[4, 1] = 3.50  # one sample
    cells[8:11, 1] = 3.50  # three samples: 30 s and 3 samples reached at row 10
    out, _ = run(make_model("NMC", clear_samples=1), make_chunk(cells, ts=ts))
    assert [((x.ts - T0) // 10_000, x.status, x.cell) for x in alerts(out)] == [
        (10, "raised", 1),
    ]


def test_nan_cells_are_left_out_of_the_spread():
    n = 5
    cells = np.array([[3.70, np.nan, 3.65, 3.68]] * n)
    cells[1] = [np.nan, np.nan, 3.65, np.nan]  # one finite cell: no spread at all
    out, _ = run(make_model("NMC", estimate_interval_s=1.0), make_chunk(cells))
    spread = estimates(out, "voltage_spread")
    assert [(e.ts - T0) // 1000 for e in spread] == [0, 2, 3, 4]
    assert spread[0].value == pytest.approx(0.05, abs=1e-12)


def test_parameter_consistency_is_checked():
    with pytest.raises(ContractError, match="spread_critical_v"):
        make_model("NMC", spread_warning_v=0.3, spread_critical_v=0.2)
    with pytest.raises(ContractError, match="spread_hysteresis_v"):
        make_model("NMC", spread_hysteresis_v=0.2)


def test_state_not_mutated():
    model = make_model("NMC")
    cells = np.full((40, 2), 3.6)
    cells[:, 0] = 3.4
    _, state = run(model, make_chunk(cells))
    assert any(any(ch) for ch in state["channels"])  # a channel in play
    frozen = copy.deepcopy(state)
    ts = T0 + 1000 * np.arange(40, 80)
    model.process(make_chunk(np.full((40, 2), 3.6), ts=ts, prev_ts=T0 + 39_000), state)
    assert state == frozen


# --------------------------------------------------------------------------- chunking

N_SEQ = 1600


def imbalance_sequence() -> Chunk:
    rng = np.random.default_rng(11)
    n = N_SEQ
    ts = T0 + 1000 * np.arange(n)
    ts[900:] += 45_000  # a gap: rest restarts
    current = np.zeros(n)
    current[300:340] = 30.0
    current[1400:1420] = -12.0
    cells = 3.70 + rng.normal(0.0, 0.003, (n, 5))
    cells[100:400, 2] -= 0.13  # warning
    cells[200:260, 2] -= 0.25  # critical
    cells[1000:1200, 4] += 0.11 + rng.normal(0.0, 0.01, 200)
    cells[::23, 1] = np.nan
    return build_chunk("b", ts, current, prev_ts=None, max_gap_ms=MAX_GAP_MS, cells=cells)


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


PARAMS = {"min_rest_s": 120.0, "full_rest_s": 600.0, "estimate_interval_s": 13.0}


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, N_SEQ - 1), max_size=25, unique=True).map(sorted))
def test_chunking_invariance(cuts: list[int]):
    model = make_model("NMC", **PARAMS)
    chunk = imbalance_sequence()
    whole_out, whole_state = run_in_pieces(model, chunk, [])
    assert {(a.severity, a.status) for a in alerts(whole_out)} == {
        ("warning", "raised"),
        ("warning", "cleared"),
        ("critical", "raised"),
        ("critical", "cleared"),
    }
    assert estimates(whole_out, "soc_imbalance")
    out, state = run_in_pieces(model, chunk, cuts)
    assert out == whole_out
    assert state == whole_state


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(1, N_SEQ - 1))
def test_state_json_round_trip_mid_way(cut: int):
    model = make_model("NMC", **PARAMS)
    chunk = imbalance_sequence()
    whole_out, whole_state = run_in_pieces(model, chunk, [])
    out, state = run_in_pieces(model, chunk, [cut], via_json=True)
    assert out == whole_out
    assert state == whole_state


def test_the_clear_names_the_cell_its_raise_named():
    # cell index 2 runs 150 mV high (raise names it); later it recovers while index 0 drifts
    # a little low, so at the clear index 0 is furthest from the median: the clear must still
    # name index 2, or whoever pairs raise and clear by (code, cell) keeps the episode open
    n = 300
    cells = np.tile([3.70, 3.70, 3.70, 3.70], (n, 1))
    cells[:100, 2] = 3.85
    cells[100:, 0] = 3.69
    out, _ = run(make_model("NMC"), make_chunk(cells))
    got = [(a.status, a.cell) for a in alerts(out) if a.code == "cell_imbalance"]
    assert got == [("raised", 2), ("cleared", 2)]
    assert "cell #3 (index 2)" in alerts(out)[-1].message


def test_contract_with_batteries_of_different_cell_counts():
    """check_model: chunking, JSON round trip and interleaving in one block of batteries with
    5, 2, 12 and 1 cells (the last never has a spread), alerts and rest included."""
    from twin_stream.sdk.testing import check_model

    rng = np.random.default_rng(4)
    seq = imbalance_sequence()
    n = 700
    cells12 = 3.65 + rng.normal(0.0, 0.004, (n, 12))
    cells12[200:500, 7] += 0.35  # critical, high cell
    cells12[::17, 3] = np.nan
    two = np.tile([3.30, 3.31], (n, 1))
    two[100:400, 1] = 3.45
    chunks = [
        seq,
        make_chunk(two, current=np.where(np.arange(n) < 50, 20.0, 0.0)),
        make_chunk(cells12, current=rng.normal(0.0, 1.0, n)),
        make_chunk(np.full((n, 1), 3.7)),
    ]
    check_model(make_model("NMC", **PARAMS), chunks)
    check_model(make_model("LFP", estimate_interval_s=1.0, raise_samples=1), chunks)


def test_version_1_state_is_migrated():
    # the former implementation's state: a warning raised on cell 2, a critical channel filling
    v1 = {
        "version": 1,
        "channels": {
            "cell_imbalance:warning": [0, 1, 5000, 0, 2, 0],
            "cell_imbalance:critical": [12000, 0, 0, 2],
        },
        "last_slot": T0 // 60_000,
        "rest_start": T0 - 5000,
        "named": {"cell_imbalance:warning": 2},
    }
    model = make_model("NMC")
    state = model.migrate(v1)
    assert state["channels"] == [[0, 1, 5000, 0, 2, 0, 0], [12000, 0, 0, 2, 0, 0, 0]]
    assert state["named"] == [2, -1]
    # the warning clears after 55 s more of a small spread (60 s, 3 samples): at the 55th
    # sample (row 54, 1 s after the state's last), naming cell 2
    cells = np.tile([3.70, 3.69, 3.70, 3.70], (100, 1))
    out, new = model.process(make_chunk(cells, prev_ts=T0 - 1000), v1)
    got = [((a.ts - T0) // 1000, a.status, a.cell) for a in alerts(out)]
    assert got == [(54, "cleared", 2)]
    assert new["version"] == 2 and new["named"] == [-1, -1] and new["rest_start"] == T0 - 5000
