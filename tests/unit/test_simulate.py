"""The synthetic fleet simulator: determinism, physics that holds (pack = sum of cells, rests
relax to OCV, clean fleets stay inside the chemistry's limits), faults that show, a truth that
agrees with independent computations over the published records, and file round trips."""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from twin_stream.battery.chemistry import ChemistryError, get_chemistry
from twin_stream.devtools.simulate import (
    BAD_KINDS,
    FIELDS,
    FaultSpec,
    SimConfig,
    SimResult,
    charge_voltage,
    simulate,
    write_records,
)

ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ALL_FAULTS = FaultSpec(
    over_voltage=1, under_voltage=1, weak_cell=1, dropout=1, disorder=5, duplicates=6, bad_records=9
)


@pytest.fixture(scope="module")
def clean() -> SimResult:
    return simulate(SimConfig(batteries=6, cells=16, temperatures=4, seed=11))


@pytest.fixture(scope="module")
def faulty() -> SimResult:
    return simulate(SimConfig(batteries=6, cells=16, temperatures=4, seed=12, faults=ALL_FAULTS))


def dicts(res: SimResult) -> list[dict[str, Any]]:
    return [r for r in res.records if isinstance(r, dict)]


def good(records: list) -> list[dict[str, Any]]:
    return [r for r in records if not is_bad(r)]


def is_bad(item: Any) -> bool:
    """An independent, minimal telemetry check (DESIGN.md's record table)."""
    if isinstance(item, str):
        try:
            item = orjson.loads(item)
        except orjson.JSONDecodeError:
            return True
    if not isinstance(item, dict):
        return True
    if not isinstance(item.get("battery_id"), str) or not ID.match(item["battery_id"]):
        return True
    if type(item.get("ts")) is not int or item["ts"] < 0:
        return True
    # optional fields out of range only degrade (the record is used without them)
    inf = math.inf
    for key, required, lo, hi in (
        ("current", True, -1e5, 1e5),
        ("soc", False, -inf, inf),
        ("soh", False, -inf, inf),
        ("voltage", False, -inf, inf),
    ):
        x = item.get(key)
        if x is None:
            if required:
                return True
            continue
        if type(x) not in (int, float) or not math.isfinite(x) or not lo <= x <= hi:
            return True
    for key in ("cell_voltages", "temperatures"):
        x = item.get(key)
        if x is not None and (
            not isinstance(x, list)
            or not 1 <= len(x) <= 1024
            or not all(type(v) is float and math.isfinite(v) for v in x)
        ):
            return True
    return False


def per_battery(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records of each battery in event-time order, exact duplicates dropped."""
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        out[r["battery_id"]].setdefault(r["ts"], r)
    return {b: [rs[t] for t in sorted(rs)] for b, rs in out.items()}


def trapezoid_ah(rows: list[dict[str, Any]], max_step_ms: int | None = None) -> float:
    total = 0.0
    for a, b in itertools.pairwise(rows):
        step = b["ts"] - a["ts"]
        if max_step_ms is None or step <= max_step_ms:
            total += (abs(a["current"]) + abs(b["current"])) / 2.0 * step / 1000.0
    return total / 3600.0


def test_same_seed_same_records_other_seed_other_records() -> None:
    cfg = SimConfig(batteries=3, cells=8, duration_s=900, seed=7, faults=ALL_FAULTS)
    a, b = simulate(cfg), simulate(cfg)
    assert orjson.dumps(a.records) == orjson.dumps(b.records)
    assert orjson.dumps(a.truth) == orjson.dumps(b.truth)
    c = simulate(SimConfig(batteries=3, cells=8, duration_s=900, seed=8, faults=ALL_FAULTS))
    assert orjson.dumps(c.records) != orjson.dumps(a.records)


def test_record_shape(clean: SimResult) -> None:
    cfg = SimConfig(batteries=6, cells=16, temperatures=4, seed=11)
    assert len(clean.records) == 6 * 3600 == clean.truth["records"]
    first = dicts(clean)[0]
    assert list(first) == list(FIELDS)
    assert first["ts"] == cfg.start_ms and first["battery_id"] == "bat-0000"
    seqs: dict[str, int] = {}
    for r in dicts(clean):
        assert len(r["cell_voltages"]) == 16 and len(r["temperatures"]) == 4
        assert r["seq"] > seqs.get(r["battery_id"], -1)
        seqs[r["battery_id"]] = r["seq"]
        assert round(r["current"], 2) == r["current"]
        assert all(round(v, 3) == v for v in r["cell_voltages"])
    assert sorted(seqs) == [f"bat-{i:04d}" for i in range(6)]


def test_truth_throughput_is_the_trapezoid_over_the_published_currents(clean: SimResult) -> None:
    rows = per_battery(dicts(clean))
    for bid, t in clean.truth["batteries"].items():
        expected = trapezoid_ah(rows[bid])
        assert expected > 5.0  # the duty cycle really moves charge
        assert t["throughput_ah"] == pytest.approx(expected, rel=1e-12)
        assert t["throughput_ah_observed"] == pytest.approx(expected, rel=1e-12)
        assert t["true_equivalent_cycles"] == pytest.approx(expected / 200.0, rel=1e-12)


def test_dropout_gap_is_missing_and_not_in_the_observed_throughput(faulty: SimResult) -> None:
    rows = per_battery(good(faulty.records))
    drops = [f for f in faulty.truth["faults"] if f["kind"] == "dropout"]
    silent = [f for f in faulty.truth["faults"] if f["kind"] == "silent_end"]
    assert len(drops) == 1 and len(silent) == 1
    bid = drops[0]["battery"]
    ts = [r["ts"] for r in rows[bid]]
    assert not [t for t in ts if drops[0]["start_ts"] <= t <= drops[0]["end_ts"]]
    assert drops[0]["end_ts"] - drops[0]["start_ts"] == 299_000  # 5 minutes of 1 Hz samples
    assert ts[-1] == silent[0]["last_sent_ts"] < faulty.truth["end_ts"] - 200_000
    t = faulty.truth["batteries"][bid]
    assert t["throughput_ah_observed"] == pytest.approx(trapezoid_ah(rows[bid], 1000), rel=1e-12)
    assert t["throughput_ah"] > t["throughput_ah_observed"]
    assert t["records_sent"] == len(ts) == 3600 - 600


@pytest.mark.parametrize("chemistry,hz,duration", [("NMC", 1.0, 7200), ("LFP", 2.0, 3600)])
def test_clean_fleet_stays_inside_the_warning_limits(
    chemistry: str, hz: float, duration: int
) -> None:
    chem = get_chemistry(chemistry)
    res = simulate(
        SimConfig(
            batteries=40,
            cells=6,
            temperatures=2,
            chemistry=chemistry,
            hz=hz,
            duration_s=duration,
            seed=3,
        )
    )
    cells = np.array([r["cell_voltages"] for r in dicts(res)])
    temps = np.array([r["temperatures"] for r in dicts(res)])
    soc = np.array([r["soc"] for r in dicts(res)])
    lim, tlim = chem.limits["cell_voltage"], chem.limits["temperature"]
    assert cells.max() < min(lv.threshold for lv in lim.over)
    assert cells.min() > max(lv.threshold for lv in lim.under)
    assert cells.max() <= charge_voltage(chem) <= min(lv.threshold for lv in lim.over) - 0.05
    if chemistry == "NMC":  # this fleet charges into CV: the top of the window is exercised
        assert cells.max() >= charge_voltage(chem) - 0.002
    assert temps.max() < min(lv.threshold for lv in tlim.over)
    assert temps.min() > max(lv.threshold for lv in tlim.under)
    assert soc.min() >= 10.0 and soc.max() <= 95.0
    assert np.diff(sorted({r["ts"] for r in dicts(res)})).tolist() == [int(1000 / hz)] * (
        int(duration * hz) - 1
    )
    assert not res.truth["faults"]


def test_charge_ends_in_constant_voltage_with_a_tapering_current() -> None:
    res = simulate(SimConfig(batteries=40, cells=6, temperatures=1, duration_s=7200, seed=3))
    v_cv = charge_voltage(get_chemistry("NMC"))
    rows = per_battery(dicts(res))
    seen = 0
    for bid, t in res.truth["batteries"].items():
        for p in t["phases"]:
            if "cv_start_ts" not in p:
                continue
            seen += 1
            cv = [r for r in rows[bid] if p["cv_start_ts"] <= r["ts"] <= p["end_ts"]]
            assert cv
            assert all(abs(max(r["cell_voltages"]) - v_cv) <= 0.002 for r in cv)
            amps = [-r["current"] for r in cv]
            assert all(a > 0 for a in amps)
            if len(cv) >= 60:
                assert amps[-1] < 0.95 * amps[0]  # tapers
            assert all(b <= a + 0.02 for a, b in itertools.pairwise(amps))
    assert seen >= 3


def test_voltage_faults_cross_the_critical_limits_then_return(faulty: SimResult) -> None:
    chem = get_chemistry("NMC")
    crit_over = max(lv.threshold for lv in chem.limits["cell_voltage"].over)
    crit_under = min(lv.threshold for lv in chem.limits["cell_voltage"].under)
    rows = per_battery(good(faulty.records))
    for kind in ("over_voltage", "under_voltage"):
        (f,) = [f for f in faulty.truth["faults"] if f["kind"] == kind]
        cell = f["cell"]
        beyond = [
            r["ts"]
            for r in rows[f["battery"]]
            if (
                r["cell_voltages"][cell] > crit_over
                if kind == "over_voltage"
                else r["cell_voltages"][cell] < crit_under
            )
        ]
        assert beyond, kind
        assert (beyond[0], beyond[-1]) == (f["start_ts"], f["end_ts"])
        assert 55_000 <= f["end_ts"] - f["start_ts"] <= 75_000  # about a minute
        assert len(beyond) == (f["end_ts"] - f["start_ts"]) // 1000 + 1  # one excursion
        after = [r for r in rows[f["battery"]] if r["ts"] > f["window_end_ts"]]
        assert after and 3.0 < after[0]["cell_voltages"][cell] < 4.2
    # nowhere else
    n_beyond = sum(
        1
        for r in good(faulty.records)
        for v in r["cell_voltages"]
        if v > crit_over or v < crit_under
    )
    n_truth = sum(
        (f["end_ts"] - f["start_ts"]) // 1000 + 1
        for f in faulty.truth["faults"]
        if f["kind"] in ("over_voltage", "under_voltage")
    )
    dup_extra = sum(
        1
        for d in faulty.truth["injected"]["duplicates"]
        for f in faulty.truth["faults"]
        if f["kind"] in ("over_voltage", "under_voltage")
        and d["battery"] == f["battery"]
        and f["start_ts"] <= d["ts"] <= f["end_ts"]
    )
    assert n_beyond == n_truth + dup_extra


def test_pack_voltage_is_the_sum_of_the_cells(faulty: SimResult) -> None:
    for r in good(faulty.records):
        n = len(r["cell_voltages"])
        assert abs(r["voltage"] - sum(r["cell_voltages"])) <= 0.0005 * (n + 1) + 1e-9


def test_every_battery_has_a_rest_of_15_minutes_at_zero_current(clean: SimResult) -> None:
    for bid, rows in per_battery(dicts(clean)).items():
        longest = 0
        start = None
        for r in rows:
            if r["current"] == 0.0:
                start = r["ts"] if start is None else start
                longest = max(longest, r["ts"] - start)
            else:
                start = None
        assert longest >= 900_000, bid


def test_long_rests_relax_to_the_ocv_of_the_true_soc(clean: SimResult) -> None:
    ocv = get_chemistry("NMC").ocv
    rows = {(r["battery_id"], r["ts"]): r for r in dicts(clean)}
    checked = 0
    for bid, t in clean.truth["batteries"].items():
        for p in t["phases"]:
            if p["phase"] != "rest" or p["duration_s"] < 900:
                continue
            end = rows[(bid, p["end_ts"])]
            assert end["current"] == 0.0
            err = np.abs(np.array(end["cell_voltages"]) - ocv.ocv_from_soc(p["true_soc"]))
            assert err.max() <= 0.002
            # the rest began polarised (after drive or charge): the relaxation is real
            first = rows[(bid, p["start_ts"])]
            if p["after"] in ("drive", "charge"):
                assert (
                    np.abs(np.array(first["cell_voltages"]) - ocv.ocv_from_soc(p["true_soc"])).max()
                    > 0.005
                )
            checked += 1
    assert checked >= 6


def test_weak_cell_shows_as_imbalance(faulty: SimResult) -> None:
    (f,) = [f for f in faulty.truth["faults"] if f["kind"] == "weak_cell"]
    ocv = get_chemistry("NMC").ocv
    rows = {(r["battery_id"], r["ts"]): r for r in good(faulty.records)}
    phases = faulty.truth["batteries"][f["battery"]]["phases"]
    before = next(p for p in phases if p["phase"] == "rest")
    after = next(p for p in phases if p["phase"] == "rest" and p.get("after") == "drive")
    soc0 = ocv.soc_from_ocv(rows[(f["battery"], before["end_ts"])]["cell_voltages"])
    soc1 = ocv.soc_from_ocv(rows[(f["battery"], after["end_ts"])]["cell_voltages"])
    drop = soc0 - soc1
    assert int(np.argmax(drop)) == f["cell"]
    assert drop[f["cell"]] == pytest.approx(np.median(drop) / 0.85, rel=0.08)


def test_injected_duplicates_late_and_bad_records_match_the_truth(faulty: SimResult) -> None:
    truth = faulty.truth
    assert (truth["duplicates"], truth["late"], truth["bad_records"]) == (6, 5, 9)
    assert len(faulty.records) == truth["records"] == truth["good_records"] + 6 + 9
    bad = [r for r in faulty.records if is_bad(r)]
    assert len(bad) == 9
    assert sorted(b["kind"] for b in truth["injected"]["bad_records"]) == sorted(
        list(BAD_KINDS) + list(BAD_KINDS[:2])
    )
    assert sum(isinstance(r, str) for r in faulty.records) == 2  # the not-JSON ones
    seen: dict[str, set[int]] = defaultdict(set)
    newest: dict[str, int] = {}
    dups = late = 0
    for r in good(faulty.records):
        b, ts = r["battery_id"], r["ts"]
        if ts in seen[b]:
            dups += 1
            continue
        seen[b].add(ts)
        if ts < newest.get(b, -1):
            late += 1
        newest[b] = max(newest.get(b, -1), ts)
    assert (dups, late) == (truth["duplicates"], truth["late"])


def test_records_against_the_project_schema(faulty: SimResult) -> None:
    from pydantic import ValidationError

    from schemas.telemetry import Telemetry

    refused = 0
    for r in faulty.records:
        try:
            Telemetry.model_validate(orjson.loads(r) if isinstance(r, str) else r)
        except (orjson.JSONDecodeError, ValidationError):
            refused += 1
    assert refused == faulty.truth["bad_records"]


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="over_voltage=3 needs as many batteries"):
        SimConfig(batteries=2, faults=FaultSpec(over_voltage=3))
    with pytest.raises(ValueError, match="id_prefix"):
        SimConfig(id_prefix="bad id")
    with pytest.raises(ChemistryError, match="unknown chemistry"):
        simulate(SimConfig(chemistry="NiCd", duration_s=10))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_write_records_round_trips(faulty: SimResult, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"fleet{suffix}"
    records = faulty.records
    dicts = [r for r in records if isinstance(r, dict)]
    n = write_records(records, path)
    if suffix == ".jsonl":
        lines = path.read_bytes().splitlines()
        assert n == len(lines) == len(records)
        for line, rec in zip(lines, records, strict=True):
            if isinstance(rec, str):
                assert line.decode() == rec
            else:
                assert orjson.loads(line) == rec
    elif suffix == ".csv":
        df = pd.read_csv(
            path, dtype={"battery_id": str, "current": str}, keep_default_na=False, na_values=[""]
        )
        assert n == len(df) == len(dicts)
        assert list(df.columns) == list(FIELDS)
        for row, rec in zip(df.to_dict("records"), dicts, strict=True):
            assert row["battery_id"] == rec["battery_id"] and row["ts"] == rec["ts"]
            cur = row["current"]
            if "current" not in rec:
                assert isinstance(cur, float) and math.isnan(cur)
            elif isinstance(rec["current"], str):
                assert cur == rec["current"]
            else:
                assert float(cur) == rec["current"]
            assert orjson.loads(row["cell_voltages"]) == rec["cell_voltages"]
            assert orjson.loads(row["temperatures"]) == rec["temperatures"]
            assert (row["voltage"], row["soc"], row["seq"]) == (
                rec["voltage"],
                rec["soc"],
                rec["seq"],
            )
    else:
        rows = pq.read_table(path).to_pylist()
        fits = [r for r in dicts if not isinstance(r.get("current", 0.0), str)]
        assert len(fits) == len(dicts) - 2  # current "abc" and "NaN" cannot be doubles
        assert n == len(rows) == len(fits)
        assert rows == [{k: r.get(k) for k in FIELDS} for r in fits]
