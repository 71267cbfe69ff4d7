"""bench/field's arithmetic: the throughput error it reports, on a hand-computed case and on
one small fieldsim condition run through the harness's core (`run_case`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.field.run import run_case, soc_figures, throughput_error, throughput_ok, ts_ms
from twin_stream.devtools import fieldsim as fs


def _estimates(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ts", "name", "value"])
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)
    return df


def test_throughput_error_hand_computed() -> None:
    # truth: cumulative discharge 0 -> 10 Ah, charge 0 -> 2 Ah over records at 0, 1000, 2000
    # ms; the last estimate (at 2000 ms) says 12.06 Ah total, 1.98 charge, 10.08 discharge
    truth = SimpleNamespace(
        ts=np.array([0, 1000, 2000, 3000]),
        discharge_ah=np.array([0.0, 5.0, 10.0, 99.0]),  # the 99 after the estimate: ignored
        charge_ah=np.array([0.0, 1.0, 2.0, 99.0]),
    )
    est = _estimates(
        [
            (1000, "throughput_ah", 6.0),
            (2000, "throughput_ah", 12.06),
            (2000, "throughput_charge_ah", 1.98),
            (2000, "throughput_discharge_ah", 10.08),
        ]
    )
    e = throughput_error(est, truth)
    assert e is not None
    assert e["truth"] == {"total": 12.0, "charge": 2.0, "discharge": 10.0}
    assert e["total_pct"] == pytest.approx(0.5)  # (12.06 - 12) / 12
    assert e["charge_pct"] == pytest.approx(-1.0)  # (1.98 - 2) / 2
    assert e["discharge_pct"] == pytest.approx(0.8)  # (10.08 - 10) / 10
    assert e["charge_of_total_pct"] == pytest.approx(-0.02 / 12 * 100)
    assert e["discharge_of_total_pct"] == pytest.approx(0.08 / 12 * 100)
    # the bound holds the total and each part (in % of the total): 0.667 % for the discharge
    assert throughput_ok(e, bound=0.7)
    assert not throughput_ok(e, bound=0.6)  # total 0.5 % passes, the discharge part does not
    assert throughput_error(est[est["name"] != "throughput_ah"], truth) is None


def test_soc_figures_with_and_without_uncertainty() -> None:
    truth = SimpleNamespace(
        ts=np.array([0, 1000, 2000]),
        soc=np.array([50.0, 50.0, 50.0]),
        soc_cells=np.array([[49.0, 51.0]] * 3),
    )
    est = _estimates([(0, "soc_ocv", 51.0), (1000, "soc_ocv", 47.0), (2000, "soc_min", 49.5)])
    f = soc_figures(est, truth)
    assert (f.n, f.mae, f.max_abs, f.n_sigma) == (2, 2.0, 3.0, 0)
    assert soc_figures(est, truth, "soc_min").mae == pytest.approx(0.5)
    est["uncertainty"] = [1.5, 2.0, np.nan]
    f = soc_figures(est, truth)
    assert (f.n_sigma, f.within1, f.within2) == (2, 0.5, 1.0)


def test_harness_core_on_a_small_condition() -> None:
    sc = fs.preset("sparse_regen").with_config(duty=(fs.rest(2), fs.drive(10), fs.rest(2)))
    c = run_case(sc.with_sensors(hz=1.0, jitter_s=0.2))
    e = throughput_error(c.res.estimates, c.run.truth)
    assert e is not None
    tr = c.run.truth
    thr = c.res.estimates[c.res.estimates["name"] == "throughput_ah"]
    i = int(np.flatnonzero(tr.ts == ts_ms(thr)[-1])[0])  # the record of the last estimate
    # the truth window never exceeds the run's own totals, and the error is the plain ratio
    assert e["truth"]["total"] <= tr.totals["discharge_ah"] + tr.totals["charge_ah"] + 1e-9
    assert e["truth"]["discharge"] == pytest.approx(tr.discharge_ah[i] - tr.discharge_ah[0])
    assert e["total_pct"] == pytest.approx(
        100 * (e["est"]["total"] - e["truth"]["total"]) / e["truth"]["total"]
    )
    assert abs(e["total_pct"]) < 2.0
