"""The engine's processing semantics: event-time order, duplicates, lateness, gaps, cell-count
locking, chunking invariance and restart from serialised state."""

from __future__ import annotations

import json
import random
from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_stream.codec import Decoder, Row
from twin_stream.config.settings import Settings, load_settings
from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate
from twin_stream.engine import Engine


def cfg(**engine: float) -> Settings:
    return Settings.model_validate({"engine": {"max_gap_s": 60, **engine}})


def rows_of(records: list) -> tuple[list[Row], list]:
    dec = Decoder()
    rows: list[Row] = []
    dead: list = []
    for i, r in enumerate(records):
        payload = r if isinstance(r, str) else orjson.dumps(r)
        dec.decode(payload, f"t:{i}", rows, dead)
    return rows, dead


def rec(ts_s: float, current: float = 10.0, bid: str = "b1", cells: list | None = None) -> dict:
    r = {"battery_id": bid, "ts": int(ts_s * 1000), "current": current}
    if cells is not None:
        r["cell_voltages"] = cells
    return r


def run(engine: Engine, rows: list[Row], blocks: list[int] | None = None) -> dict:
    """Feed rows in blocks (sizes), grouped per battery like replay; returns everything."""
    states: dict = {}
    alerts: list = []
    estimates: list = []
    dead: list = []
    i = 0
    sizes = list(blocks or [len(rows)])
    while i < len(rows):
        n = sizes.pop(0) if sizes else len(rows)
        block = rows[i : i + n]
        i += n
        groups: dict[str, list[Row]] = {}
        for r in block:
            groups.setdefault(r.battery_id, []).append(r)
        for bid, g in groups.items():
            res = engine.process(bid, g, states.get(bid))
            states[bid] = res.state
            alerts += res.alerts
            estimates += res.estimates
            dead += [d.error for d in res.dead]
    for bid in sorted(states):
        res = engine.flush(bid, states[bid])
        states[bid] = res.state
        alerts += res.alerts
        estimates += res.estimates
    key = lambda r: (r["battery_id"], r["ts"])  # noqa: E731
    for s in states.values():
        s.pop("version")  # counts calls, which differ by design with chunking
    return {
        "alerts": sorted(alerts, key=key),
        "estimates": sorted(estimates, key=key),
        "dead": dead,
        "states": states,
    }


def cycles(result: dict, bid: str = "b1") -> float:
    return [
        e
        for e in result["estimates"]
        if e["name"] == "equivalent_cycles" and e["battery_id"] == bid
    ][-1]["value"]


def test_in_order_stream_is_processed_whole() -> None:
    rows, _ = rows_of([rec(t) for t in range(0, 7201)])
    eng = Engine(cfg())
    out = run(eng, rows)
    # 10 A for 2 h on 100 Ah: 20 Ah / 200 Ah = 0.1 cycle, trapezoid exact
    assert cycles(out) == pytest.approx(0.1, abs=1e-9)
    assert eng.metrics.processed == 7201 and eng.metrics.duplicates == 0 and eng.metrics.late == 0


def test_duplicates_dropped_and_counted() -> None:
    base = [rec(t) for t in range(0, 3601)]
    dup = [*base[:100], base[99], *base[100:2000], base[1500], *base[2000:]]
    eng = Engine(cfg(allowed_lateness_s=5))
    out = run(eng, rows_of(dup)[0])
    assert eng.metrics.duplicates == 1  # base[99] right after itself
    assert eng.metrics.late == 1  # base[1500] came 500 s too late
    assert out["dead"] and "late" in out["dead"][0]
    ref = run(Engine(cfg(allowed_lateness_s=5)), rows_of(base)[0])
    assert out["estimates"] == ref["estimates"]


def test_disorder_within_lateness_is_reordered() -> None:
    base = [rec(t, current=10 + (t % 7)) for t in range(0, 3601)]
    shuffled = list(base)
    rnd = random.Random(4)
    for i in range(10, 3590, 37):  # swap neighbours up to 3 s apart
        j = i + rnd.randint(1, 3)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    eng = Engine(cfg(allowed_lateness_s=3))
    out = run(eng, rows_of(shuffled)[0])
    ref = run(Engine(cfg(allowed_lateness_s=3)), rows_of(base)[0])
    assert eng.metrics.late == 0 and out["dead"] == []
    assert out["estimates"] == ref["estimates"]
    assert out["states"] == ref["states"]


def test_disorder_without_lateness_goes_to_dead_letters() -> None:
    base = [rec(t) for t in range(0, 100)]
    base[50], base[51] = base[51], base[50]
    eng = Engine(cfg(allowed_lateness_s=0))
    out = run(eng, rows_of(base)[0])
    assert eng.metrics.late == 1 and len(out["dead"]) == 1
    assert "allowed lateness of 0 s" in out["dead"][0]


def test_gap_is_not_integrated_and_is_reported() -> None:
    recs = [rec(t) for t in range(0, 3601)] + [rec(3600 + 7200 + t) for t in range(0, 3601)]
    eng = Engine(cfg(max_gap_s=60))
    out = run(eng, rows_of(recs)[0])
    # two hours of 10 A integrated (the 2 h gap is skipped): 0.1 cycle
    assert cycles(out) == pytest.approx(0.1, abs=1e-9)
    gaps = [e for e in out["estimates"] if e["name"] == "data_gap"]
    assert [(g["value"], g["unit"]) for g in gaps] == [(7200.0, "s")]
    assert eng.metrics.gaps == 1


def minute_stream(minutes: int, jitter_s: float, seed: int = 5, hole: tuple = ()) -> list[dict]:
    """One sample a minute with +/- jitter_s, none inside `hole` (start_s, end_s)."""
    rnd = random.Random(seed)
    out = []
    for k in range(minutes + 1):
        t = 600 + 60 * k + rnd.uniform(-jitter_s, jitter_s)
        if hole and hole[0] <= t < hole[1]:
            continue
        out.append(rec(t, current=10.0 + (k % 3)))
    return out


def test_sparse_source_with_jitter_is_judged_by_its_own_interval() -> None:
    recs = minute_stream(240, 3.0)
    dts = [b["ts"] - a["ts"] for a, b in pairwise(recs)]
    assert max(dts) > 60_000  # the absolute 60 s alone would cut this stream up
    eng = Engine(cfg())
    out = run(eng, rows_of(recs)[0], [7, 1, 50])
    assert [e for e in out["estimates"] if e["name"] == "data_gap"] == [] and eng.metrics.gaps == 0
    # every interval integrated (trapezoid): the model's total equals the hand-summed one
    eq = out["states"]["b1"]["models"]["eq_cycles"]
    got = eq["charge_ah"] + eq["charge_ah_comp"] + eq["discharge_ah"] + eq["discharge_ah_comp"]
    i = [r["current"] for r in recs]
    want = sum((a + b) / 2 * d for a, b, d in zip(i, i[1:], dts, strict=False)) / 3.6e6
    assert got == pytest.approx(want, rel=1e-12) and eq["gaps"] == 0
    # its state keeps the battery's last 15 intervals
    assert len(out["states"]["b1"]["intervals"]) == 15
    # gap_factor 0: the absolute max_gap_s alone, as before
    eng0 = Engine(cfg(gap_factor=0))
    run(eng0, rows_of(recs)[0])
    assert eng0.metrics.gaps > 50


def test_a_real_hole_in_a_sparse_source_is_still_a_gap() -> None:
    recs = minute_stream(240, 3.0, hole=(600 + 60 * 100.5, 600 + 60 * 110.5))  # 10 min missing
    eng = Engine(cfg())
    out = run(eng, rows_of(recs)[0], [3, 100])
    gaps = [e for e in out["estimates"] if e["name"] == "data_gap"]
    assert len(gaps) == 1 and 650 < gaps[0]["value"] < 670 and eng.metrics.gaps == 1
    # and in a 1 Hz stream the 60 s floor still rules: 61 s is a gap, 59 s is not
    recs = [rec(t) for t in range(100)] + [rec(159 + t) for t in range(100)]
    recs += [rec(320 + t) for t in range(10)]
    eng = Engine(cfg())
    out = run(eng, rows_of(recs)[0])
    assert [e["value"] for e in out["estimates"] if e["name"] == "data_gap"] == [62.0]


def test_typical_interval_is_the_lower_median_of_a_window() -> None:
    import numpy as np

    from twin_stream.sdk.chunk import INTERVAL_WINDOW, typical_intervals

    dt = np.array([1000] * 20 + [600_000] + [1000] * 5, dtype=np.int64)
    t = typical_intervals([], dt)
    assert t.tolist() == [1000] * 26  # one hole never makes itself typical
    slow = np.array([60_000] * 9, dtype=np.int64)
    t = typical_intervals([1000] * INTERVAL_WINDOW, slow)
    assert t.tolist() == [1000] * 8 + [60_000]  # a new rate is typical after 8 of 16
    # any split gives the same answer (the window is carried in the state)
    whole = typical_intervals([], dt)
    for cut in (1, 5, 15, 16, 21):
        from twin_stream.sdk.chunk import next_intervals

        h = next_intervals([], dt[:cut], first=False)
        assert (
            np.concatenate(
                [typical_intervals([], dt[:cut]), typical_intervals(h, dt[cut:])]
            ).tolist()
            == whole.tolist()
        )


def test_cell_count_is_locked_per_battery() -> None:
    recs = [rec(0, cells=[3.7] * 4), rec(1, cells=[3.7] * 3), rec(2, cells=[3.7] * 4)]
    eng = Engine(cfg())
    out = run(eng, rows_of(recs)[0])
    assert eng.metrics.processed == 2
    assert len(out["dead"]) == 1 and "3 values, but b1 has 4 cells" in out["dead"][0]


def test_unknown_model_and_parameter_are_named() -> None:
    from twin_stream.config.settings import SettingsError

    with pytest.raises(SettingsError, match=r"models\.enabled: unknown model 'nope'"):
        Engine(Settings.model_validate({"models": {"enabled": ["nope"]}}))
    with pytest.raises(SettingsError, match=r"models\.params\.eq_cycles\.bogus"):
        Engine(Settings.model_validate({"models": {"params": {"eq_cycles": {"bogus": 1}}}}))


def test_current_sign_flip_per_battery() -> None:
    s = Settings.model_validate({"fleet": {"batteries": {"b2": {"current_sign": -1}}}})
    eng = Engine(s)
    out = run(eng, rows_of([rec(t, -10.0, "b2") for t in range(0, 3601)])[0])
    assert cycles(out, "b2") == pytest.approx(0.05, abs=1e-9)  # |I| the same, sign flipped
    assert load_settings(environ={}).fleet.defaults.current_sign == 1


@pytest.fixture(scope="module")
def fleet_rows() -> list[Row]:
    sim = simulate(
        SimConfig(
            batteries=3,
            cells=12,
            temperatures=2,
            duration_s=2400,
            seed=3,
            faults=FaultSpec(over_voltage=1, weak_cell=1, dropout=1, duplicates=4, disorder=3),
        )
    )
    records = list(sim.records)
    # a sparse battery interleaved: 1/min +/- 3 s with a 10 min hole (the gap rule's state)
    t0 = min(r["ts"] for r in records if isinstance(r, dict) and "ts" in r)
    for r in minute_stream(40, 3.0, hole=(600 + 60 * 20.5, 600 + 60 * 30.5)):
        r = {**r, "battery_id": "sparse", "ts": t0 + r["ts"] - 600_000}
        records.insert(min(len(records), (r["ts"] - t0) * 3 // 1000), r)
    rows, _ = rows_of(records)
    return rows


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_engine_is_chunking_invariant(fleet_rows: list[Row], sizes: list[int]) -> None:
    s = cfg(allowed_lateness_s=3)
    whole = run(Engine(s), fleet_rows)
    chunked = run(Engine(s), fleet_rows, sizes)
    assert chunked == whole
    assert whole["alerts"], "the fleet has an over-voltage fault: alerts expected"
    gaps = [e for e in whole["estimates"] if e["name"] == "data_gap"]
    assert [g["battery_id"] for g in gaps].count("sparse") == 1


def test_restart_from_serialised_state_continues_exactly(fleet_rows: list[Row]) -> None:
    s = cfg(allowed_lateness_s=3)
    whole = run(Engine(s), fleet_rows)
    half = len(fleet_rows) // 2
    eng1 = Engine(s)
    states: dict = {}
    first: dict = {"alerts": [], "estimates": []}
    groups: dict[str, list[Row]] = {}
    for r in fleet_rows[:half]:
        groups.setdefault(r.battery_id, []).append(r)
    for bid, g in groups.items():
        res = eng1.process(bid, g, None)
        states[bid] = res.state
        first["alerts"] += res.alerts
        first["estimates"] += res.estimates
    # the worker dies; its state survives only as JSON (the changelog)
    revived = json.loads(json.dumps(states))
    eng2 = Engine(s)
    states2 = dict(revived)
    alerts, estimates = list(first["alerts"]), list(first["estimates"])
    groups = {}
    for r in fleet_rows[half:]:
        groups.setdefault(r.battery_id, []).append(r)
    for bid, g in groups.items():
        res = eng2.process(bid, g, states2.get(bid))
        states2[bid] = res.state
        alerts += res.alerts
        estimates += res.estimates
    for bid in sorted(states2):
        res = eng2.flush(bid, states2[bid])
        states2[bid] = res.state
        alerts += res.alerts
        estimates += res.estimates
    key = lambda r: (r["battery_id"], r["ts"])  # noqa: E731
    assert sorted(alerts, key=key) == whole["alerts"]
    assert sorted(estimates, key=key) == whole["estimates"]


def test_a_failing_model_dead_letters_its_rows_and_keeps_state(monkeypatch) -> None:
    eng = Engine(cfg())
    rows, _ = rows_of([rec(t) for t in range(0, 10)])
    ok = eng.process("b1", rows[:5], None)
    model = eng.stages[0].instances[eng.slot("b1")]

    def boom(*args):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(model, "run" if hasattr(model, "param_row") else "process", boom)
    bad = eng.process("b1", rows[5:], ok.state)
    assert [d.error for d in bad.dead] == [
        "internal error processing b1: ZeroDivisionError: bug"
    ] * 5
    assert bad.state["last_ts"] == ok.state["last_ts"]  # nothing half-applied
    assert eng.metrics.errors == 5 and eng.metrics.dead_letters == 5


def test_group_by_keeps_arrival_order_within_and_across_keys() -> None:
    from twin_stream.sdk.chunk import group_by

    got = group_by(["b1", "a1", "b2", "c1", "a2"], lambda s: s[0])
    assert list(got) == ["b", "a", "c"]
    assert got == {"b": ["b1", "b2"], "a": ["a1", "a2"], "c": ["c1"]}
    assert group_by([], lambda s: s) == {}
