"""The field-telemetry truth generator (twin_stream.devtools.fieldsim): exact fine-step throughput,
RC relaxation to OCV, LFP hysteresis branches, sampling jitter, quantisation, injected sensor
faults only where they were asked for, and determinism by seed."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from schemas.telemetry import Telemetry
from twin_stream.battery.chemistry import get_chemistry
from twin_stream.devtools import fieldsim as fs

QUIET = fs.Sensors(
    v_noise_v=0.0, pack_v_noise_v=0.0, i_noise_a=0.0, t_noise_c=0.0, soc_noise_pct=0.0
)


def cells_of(records: list[dict]) -> np.ndarray:
    return np.array(
        [[np.nan if v is None else v for v in r["cell_voltages"]] for r in records], dtype=float
    )


def ms_of(truth: fs.Truth, s: float) -> int:
    return int(truth.ts[0] + round(s * 1000))


def test_cc_throughput_is_exact() -> None:
    cfg = fs.FieldConfig(cells=4, duty=(fs.cc(0.5, 10.0), fs.rest(1.0), fs.cc(-0.3, 10.0)))
    run = fs.generate(cfg, seed=3)
    tr = run.truth
    assert tr.totals["discharge_ah"] == pytest.approx(50.0 * 600 / 3600, abs=1e-9)
    assert tr.totals["charge_ah"] == pytest.approx(30.0 * 600 / 3600, abs=1e-9)
    # cumulative at each record: linear in time inside the CC discharge (exact partial steps)
    t = (tr.ts - tr.ts[0]) / 1000.0
    inside = t <= 600.0
    assert np.allclose(tr.discharge_ah[inside], 50.0 * t[inside] / 3600.0, atol=1e-9)
    # SOC moves by eta * Ah / Q per cell (charge efficiency on the charge only)
    eta = get_chemistry("NMC").charge_efficiency
    expect = tr.soc0 - 100.0 * (50.0 / 6 - eta * 5.0) / tr.capacity_ah
    assert np.allclose(tr.soc_cells[-1], expect, atol=1e-9)
    # energy out is the pack voltage times the charge, within the voltage range seen
    v = tr.voltage[inside]
    assert v.min() * 50 / 6 / 1000 <= tr.totals["discharge_kwh"] <= v.max() * 50 / 6 / 1000


def test_rest_after_discharge_relaxes_to_ocv_with_the_rc_time_constants() -> None:
    model = replace(fs.CELL_DEFAULTS["NMC"], hyst_m0_v=0.0, hyst_m_v=0.0)
    tau1, tau2 = model.tau1_s, model.tau2_s
    rest_min = 6 * tau2 / 60
    cfg = fs.FieldConfig(
        cells=3, model=model, duty=(fs.cc(1.0, 10.0), fs.rest(rest_min)), sensors=QUIET
    )
    tr = fs.generate(cfg, seed=1).truth
    chem = get_chemistry("NMC")
    resid = chem.ocv.ocv_from_soc(tr.soc_cells) - tr.cell_voltages  # > 0 after a discharge
    t_rest = (tr.ts - tr.ts[0]) / 1000.0 - 600.0

    def at(s: float) -> np.ndarray:
        return resid[int(np.searchsorted(t_rest, s))]

    assert np.all(at(1.0) > 0.010)  # the RC pairs hold > 10 mV when the load stops
    # the slow pair decays as exp(-integral dt / tau2(T)) (the warm cell relaxes faster)
    i0, i1 = (int(np.searchsorted(t_rest, x)) for x in (5 * tau1, 5 * tau1 + tau2))
    rate = 1.0 / (tau2 * fs.arrhenius(tr.temperature[i0:i1], model))
    expect = math.exp(-float(np.sum(rate * np.diff(t_rest[i0 : i1 + 1]))))
    ratio = resid[i1] / resid[i0]
    assert 0.3 < expect < 0.4
    assert np.allclose(ratio, expect, rtol=0.03), (ratio, expect)
    assert np.all(np.abs(at(5 * tau2)) < 0.0005)  # within 0.5 mV of OCV(true SOC)
    assert np.all(np.abs(at(5 * tau2)) < 0.05 * at(1.0))


def test_lfp_hysteresis_branches_sit_a_half_width_above_and_below_ocv() -> None:
    model = replace(fs.CELL_DEFAULTS["LFP"], tau2_s=300.0)
    duty = (
        fs.rest(1.0),
        fs.cc(-0.5, until_soc=60.0),
        fs.rest(30.0),
        fs.cc(-0.5, until_soc=80.0),
        fs.rest(1.0),
        fs.cc(0.5, until_soc=60.0),
        fs.rest(30.0),
    )
    cfg = fs.FieldConfig(chemistry="LFP", soc0=40.0, h0=-1.0, model=model, duty=duty)
    tr = fs.generate(cfg, seed=2).truth
    chem = get_chemistry("LFP")
    after_charge, after_discharge = tr.rests[1], tr.rests[3]
    assert (after_charge["after"], after_discharge["after"]) == ("charge", "discharge")
    hw = model.half_width_v
    for rest_, sign, branch in ((after_charge, 1, "charge"), (after_discharge, -1, "discharge")):
        j = int(np.searchsorted(tr.ts, rest_["end_ms"])) - 1
        assert tr.soc[j] == pytest.approx(60.0, abs=0.05)
        offset = tr.cell_voltages[j] - chem.ocv.ocv_from_soc(tr.soc_cells[j])
        assert np.allclose(offset, sign * hw, atol=0.001), offset
        assert tr.branch[j] == branch
        assert abs(tr.hysteresis[j]) > 0.99


def test_sampling_jitter_within_bounds_and_mean_interval_right() -> None:
    sensors = fs.Sensors(hz=0.5, jitter_s=0.4)
    tr = fs.generate(fs.FieldConfig(cells=2, duty=(fs.rest(20.0),), sensors=sensors), 5).truth
    n = tr.ts.size
    assert n == 601
    dev = tr.ts - fs.FieldConfig().start_ms - np.arange(n) * 2000
    assert np.abs(dev).max() <= 401  # +/-0.4 s, plus the ms rounding
    assert np.abs(dev).max() > 300  # it does jitter
    assert np.mean(np.diff(tr.ts)) == pytest.approx(2000.0, abs=800 / (n - 1) + 1)

    # once a minute, +/-3 s, with a hole: nothing inside it, and it is in the truth
    sensors = fs.Sensors(hz=1 / 60, jitter_s=3.0, holes=((3600.0, 7200.0),))
    cfg = fs.FieldConfig(cells=2, duty=(fs.rest(240.0),), sensors=sensors)
    tr = fs.generate(cfg, 6).truth
    t = (tr.ts - cfg.start_ms) / 1000.0
    assert not np.any((t >= 3600) & (t < 7200))
    assert tr.dropped == 60 and tr.ts.size == 241 - 60
    gaps = np.diff(t)
    assert gaps.max() > 3600 and np.all(gaps[gaps < 100] >= 54) and np.all(gaps[gaps < 100] <= 66)


def test_quantisation_steps_are_exact() -> None:
    sensors = fs.Sensors(i_offset_a=0.37, t_step_c=0.5)
    cfg = fs.FieldConfig(cells=8, duty=(fs.drive(5.0),), sensors=sensors)
    recs = fs.generate(cfg, 7).records
    mv = cells_of(recs) * 1000.0
    assert np.all(np.abs(mv - np.rint(mv)) < 1e-6)
    cur = np.array([r["current"] for r in recs]) * 10.0
    assert np.all(np.abs(cur - np.rint(cur)) < 1e-6)
    temps = np.array([r["temperatures"] for r in recs]) * 2.0
    assert np.all(np.abs(temps - np.rint(temps)) < 1e-6)
    # short decimal text on the wire, no 3.2660000000000005
    assert all(len(repr(v).split(".")[-1]) <= 3 for r in recs[:200] for v in r["cell_voltages"])
    assert len(np.unique(cur)) > 20  # a drive, not a constant


@pytest.mark.parametrize(("cell", "neighbour"), [(2, 3), (5, 4)])
def test_open_wire_zero_on_the_cell_and_twice_on_its_neighbour_in_the_window(
    cell: int, neighbour: int
) -> None:
    fault = fs.SensorFault("open_wire", f"cell_voltages[{cell}]", 300.0, 600.0)
    cfg = fs.FieldConfig(cells=6, duty=(fs.drive(10.0), fs.rest(5.0)), faults=(fault,))
    run = fs.generate(cfg, 8)
    tr = run.truth
    got, clean = cells_of(run.records), cells_of(run.clean)
    t = (tr.ts - cfg.start_ms) / 1000.0
    win = (t >= 300) & (t < 600)
    assert win.sum() == 300 and tr.faults[0]["neighbour"] == neighbour
    assert np.all(got[win, cell] == 0.0)
    ratio = got[win, neighbour] / tr.cell_voltages[win, neighbour]
    assert np.all((ratio > 1.9) & (ratio < 2.1))
    expect_sum = tr.cell_voltages[win, cell] + tr.cell_voltages[win, neighbour]
    assert np.abs(got[win, neighbour] - expect_sum).max() < 0.006
    # outside the window, and on every other channel, the readings are the clean ones
    assert np.array_equal(got[~win], clean[~win])
    others = [c for c in range(6) if c not in (cell, neighbour)]
    assert np.array_equal(got[:, others], clean[:, others])
    assert np.abs(clean - tr.cell_voltages).max() < 0.005


def test_invalid_marker_only_on_the_named_channel() -> None:
    scen = fs.preset("invalid_marker").with_config(
        faults=(
            fs.SensorFault("invalid", "cell_voltages[3]"),
            fs.SensorFault("invalid", "temperatures[1]", 600.0, 900.0, None),
        )
    )
    run = scen.generate()
    got, clean = cells_of(run.records), cells_of(run.clean)
    assert np.all(got[:, 3] == fs.INVALID_MV16)
    assert np.count_nonzero(got == fs.INVALID_MV16) == got.shape[0]
    assert not np.any(clean == fs.INVALID_MV16)
    temps = np.array([[np.nan if v is None else v for v in r["temperatures"]] for r in run.records])
    t = (run.truth.ts - scen.config.start_ms) / 1000.0
    win = (t >= 600) & (t < 900)
    assert np.all(np.isnan(temps[win, 1])) and not np.isnan(temps[~win]).any()
    assert not np.isnan(np.delete(temps, 1, axis=1)).any()
    # the real over-voltage on cell 10 is in the truth, the faulty and the clean telemetry
    assert run.truth.cell_voltages[:, 10].max() == pytest.approx(4.30, abs=1e-9)
    assert got[:, 10].max() >= 4.29 and clean[:, 10].max() >= 4.29
    # the clean variant is valid under today's codec
    for rec in run.clean[::50]:
        Telemetry.model_validate(rec)


def test_bms_fields_and_clean_variant() -> None:
    run = fs.preset("bms_fields").generate()
    recs, clean, tr = run.records, run.clean, run.truth
    assert all(r["soh"] == 0.0 for r in recs) and all("soh" not in r for r in clean)
    soc = np.array([r["soc"] for r in recs])
    t = (tr.ts - tr.ts[0]) / 1000.0
    win = (t >= 600) & (t < 660)
    assert np.all(soc[win] == 102.3)
    assert np.median(soc[~win] - tr.soc[~win]) == pytest.approx(14.8, abs=0.1)
    assert max(r["soc"] for r in clean) <= 100.0


def test_determinism_by_seed(tmp_path: Path) -> None:
    scen = fs.Scenario(
        "t",
        fs.FieldConfig(
            cells=4,
            duty=(fs.drive(3.0), fs.rest(2.0)),
            sensors=fs.Sensors(hz=2.0, jitter_s=0.1, drop_prob=0.05),
            faults=(fs.SensorFault("stuck", "cell_voltages[1]", 30.0, 90.0),),
        ),
        seed=11,
    )
    a, b = scen.generate(), scen.generate()
    assert a.records == b.records and a.clean == b.clean
    assert orjson.dumps(a.truth.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(
        b.truth.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY
    )
    c = fs.generate(scen.config, seed=12)
    assert c.records != a.records and not np.array_equal(c.truth.capacity_ah, a.truth.capacity_ah)
    # stuck: the channel holds its first value in the window, and moves outside it
    got = cells_of(a.records)
    t = (a.truth.ts - scen.config.start_ms) / 1000.0
    win = (t >= 30) & (t < 90)
    assert np.unique(got[win, 1]).size == 1 and np.unique(got[~win, 1]).size > 5
    # JSON Lines round trip, nulls as null
    path = tmp_path / "f.jsonl"
    assert fs.write_jsonl(a.records, path) == len(a.records)
    back = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert back == a.records


def test_presets_are_named_and_consistent() -> None:
    names = set(fs.PRESETS)
    assert {
        "sparse_regen",
        "jitter_1min",
        "parasitic_rest",
        "parasitic_rest_offset",
        "lfp_hysteresis",
        "open_wire",
        "stuck_channel",
        "invalid_marker",
        "cold_regen",
    } <= names
    for s in fs.PRESETS.values():
        assert s.config.battery_id == f"field-{s.name}" and s.description
    # the cold bus: regen (charge current) below 0 degC
    tr = fs.preset("cold_regen").generate().truth
    cold_regen = (tr.current < 0) & (tr.temperature < 0)
    assert cold_regen.sum() > 100 and tr.totals["charge_ah"] > 1.0
