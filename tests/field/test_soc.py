"""SOC from OCV on field telemetry (issue 10, item 4-6): rest on large packs with a parasitic
load or a current-sensor offset, LFP hysteresis branches, calibrated uncertainty against the
truth, BMS reconciliation and the learned current offset. Before: zero SOC estimates in 12 h
on both parasitic presets; LFP true 60 % read 73 % after a charge and 41 % after a discharge
at confidence 0.75 / 0.46; the BMS soc field was unused."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from twin_stream.devtools.fieldsim import FieldRun, preset
from twin_stream.replay.notebook import TwinResult, run_twin

TRUTH_OF = {"soc_ocv": "mean", "soc_min": "min", "soc_max": "max"}


@cache
def _run(name: str, seed: int = 0) -> tuple[FieldRun, TwinResult]:
    sc = preset(name, seed)
    run = sc.generate()
    return run, run_twin(pd.DataFrame(run.records), sc.twin_settings())


def _ms(s: pd.Series) -> np.ndarray:
    return s.dt.tz_localize(None).astype("datetime64[ms]").astype("int64").to_numpy()


def _soc(name: str, seed: int = 0, which: str = "soc_ocv") -> dict[str, Any]:
    run, res = _run(name, seed)
    e = res.estimates
    e = e[e.name == which]
    ts = _ms(e.ts)
    rows = np.searchsorted(run.truth.ts, ts)
    assert np.array_equal(run.truth.ts[rows], ts)
    cells = run.truth.soc_cells[rows]
    true = {"mean": run.truth.soc[rows], "min": cells.min(axis=1), "max": cells.max(axis=1)}
    return {
        "ts": ts,
        "value": e.value.to_numpy(float),
        "u": e.uncertainty.to_numpy(float),
        "true": true[TRUTH_OF[which]],
    }


def test_parasitic_load_and_current_offset_rests_give_estimates_within_12_h() -> None:
    for name in ("parasitic_rest", "parasitic_rest_offset"):
        s = _soc(name)
        assert len(s["ts"]) > 100, name  # before: none in 12 h
        err = s["value"] - s["true"]
        assert np.all(np.abs(err) <= 2 * s["u"]), name
        assert np.max(np.abs(err)) < 3.0, name


def test_current_offset_is_learned_at_the_long_rest() -> None:
    _, res = _run("parasitic_rest_offset")
    off = res.estimates[res.estimates.name == "current_offset_a"]
    assert len(off) > 10
    assert np.all(np.abs(off.value - -0.6) < 0.02)
    assert np.all(off.uncertainty > 0)


def test_lfp_true_60_is_read_within_uncertainty_after_charge_and_after_discharge() -> None:
    run, _ = _run("lfp_hysteresis")
    s = _soc("lfp_hysteresis")
    rests = [r for r in run.truth.rests if r["duration_s"] >= 3 * 3600 - 1]
    assert [r["after"] for r in rests] == ["charge", "discharge"]
    for r in rests:
        inside = (s["ts"] >= r["start_ms"]) & (s["ts"] <= r["end_ms"])
        assert inside.any()
        last = np.flatnonzero(inside)[-1]
        assert abs(s["true"][last] - 60.0) < 1.0
        # within 1 sigma (before: 73 % after the charge, 41 % after the discharge)
        assert abs(s["value"][last] - s["true"][last]) <= s["u"][last], r["after"]
        assert abs(s["value"][last] - 60.0) < 6.0


CALIBRATION = [
    ("parasitic_rest", 0),
    ("parasitic_rest_offset", 1),
    ("lfp_hysteresis", 0),
    ("lfp_hysteresis", 1),
    ("bms_fields", 0),
    ("bms_fields", 2),
    ("sparse_regen", 0),
    ("sparse_regen", 3),
    ("jitter_1min", 0),
    ("open_wire", 0),
    ("stuck_channel", 0),
]


def test_uncertainty_is_calibrated_on_the_field_presets() -> None:
    z: list[np.ndarray] = []
    for name, seed in CALIBRATION:
        for which in TRUTH_OF:
            s = _soc(name, seed, which)
            assert np.all(s["u"] > 0)
            z.append(np.abs(s["value"] - s["true"]) / s["u"])
    allz = np.concatenate(z)
    assert allz.size > 500
    assert np.mean(allz <= 1.0) >= 0.68
    assert np.mean(allz <= 2.0) >= 0.95


def test_bms_soc_error_and_deviation_alert() -> None:
    _, res = _run("bms_fields")
    err = res.estimates[res.estimates.name == "bms_soc_error"]
    assert len(err) >= 3
    assert np.all(np.abs(err.value - 14.8) < 0.6)
    a = res.alerts[res.alerts.code == "bms_soc_deviation"]
    assert list(a.status) == ["raised"]
    assert "BMS minus twin +14." in a.message.iloc[0]
