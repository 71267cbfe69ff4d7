"""Field suite, issue 10 item 3: throughput and energy against fieldsim's exact truth at every
sampling rate, jitter included, through the twin's own replay path (`run_twin`).

Bound: the issue's 0.5 % on the total throughput; the charge/discharge parts and the energies
within 0.5 % of the total (a regen-only charge part is ~5 % of a drive's throughput: at 0.1 Hz
its 5-13 s regen pulses are sampled, not resolved, so its own relative error is several %, while
the total stays unbiased). At one sample a minute only a duty the samples resolve can meet the
bound; a stop-and-go drive sampled once a minute is a few % off by sampling alone (no rule can
integrate what was not measured), and the test checks there that nothing is lost to gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from twin_stream.devtools import fieldsim as fs
from twin_stream.replay.notebook import run_twin

BOUND = 0.005


@dataclass
class Compared:
    est: dict[str, float]  # last estimate of each name
    truth: dict[str, float]  # the truth from the first record to that estimate's record
    gaps: int


def replay(sc: fs.Scenario, records: list[dict] | None = None) -> Compared:
    run = sc.generate()
    recs = run.records if records is None else records
    settings = sc.twin_settings()
    settings["models"] = {"enabled": ["eq_cycles"]}
    res = run_twin(pd.DataFrame(recs), settings)
    est = res.estimates
    tr = run.truth
    last = est[est["name"] == "throughput_ah"].iloc[-1]
    ts_ms = int((last["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
    i = int(np.searchsorted(tr.ts, ts_ms))
    assert tr.ts[i] == ts_ms
    at = est[est["ts"] == last["ts"]].set_index("name")["value"].to_dict()
    truth = {
        "throughput_discharge_ah": float(tr.discharge_ah[i] - tr.discharge_ah[0]),
        "throughput_charge_ah": float(tr.charge_ah[i] - tr.charge_ah[0]),
        "energy_discharge_kwh": float(tr.discharge_kwh[i] - tr.discharge_kwh[0]),
        "energy_charge_kwh": float(tr.charge_kwh[i] - tr.charge_kwh[0]),
    }
    truth["throughput_ah"] = truth["throughput_discharge_ah"] + truth["throughput_charge_ah"]
    truth["energy_kwh"] = truth["energy_discharge_kwh"] + truth["energy_charge_kwh"]
    gaps = int((est["name"] == "data_gap").sum())
    return Compared({k: float(v) for k, v in at.items()}, truth, gaps)


def check(c: Compared, bound: float = BOUND) -> None:
    t, e = c.truth, c.est
    assert e["throughput_ah"] == pytest.approx(t["throughput_ah"], rel=bound), (e, t)
    for part in ("throughput_charge_ah", "throughput_discharge_ah"):
        assert abs(e[part] - t[part]) <= bound * t["throughput_ah"], (part, e, t)
    for part in ("energy_charge_kwh", "energy_discharge_kwh"):
        assert abs(e[part] - t[part]) <= bound * t["energy_kwh"], (part, e, t)
    assert e["throughput_ah"] == pytest.approx(
        e["throughput_charge_ah"] + e["throughput_discharge_ah"], rel=1e-12
    )
    assert c.gaps == 0


SPARSE = fs.preset("sparse_regen")  # 0.1 Hz +/- 0.5 s, 90 min of driving with regen
SHORT_DRIVE = SPARSE.with_config(duty=(fs.rest(2), fs.drive(20), fs.rest(2)))
COLD = fs.preset("cold_regen")  # LFP 200 Ah bus at -5 degC, 1 Hz


@pytest.mark.parametrize(
    "sc",
    [
        SPARSE,
        SPARSE.with_sensors(hz=0.2, jitter_s=0.5),
        SHORT_DRIVE.with_sensors(hz=1.0, jitter_s=0.2),
        SHORT_DRIVE.with_sensors(hz=10.0, jitter_s=0.02),
        COLD,
    ],
    ids=["regen-0.1Hz", "regen-0.2Hz", "regen-1Hz", "regen-10Hz", "cold-regen-1Hz"],
)
def test_drive_with_regen_within_bound_at_every_rate(sc: fs.Scenario) -> None:
    check(replay(sc))


DAY_1MIN = fs.storage_day_1min()  # a storage pack's day seen by a telematics unit


def test_one_sample_a_minute_with_jitter_integrates_fully() -> None:
    c = replay(DAY_1MIN)
    check(c)


def test_a_real_hole_in_a_one_minute_stream_is_skipped_and_reported() -> None:
    run = DAY_1MIN.generate()
    t0 = run.records[0]["ts"]
    start, end = t0 + 200 * 60_000, t0 + 210 * 60_000  # 10 min inside the cccv charge
    recs = [r for r in run.records if not start <= r["ts"] < end]
    c = replay(DAY_1MIN, recs)
    assert c.gaps == 1
    # the hole's ~10 min x 30 A = ~5 Ah of charge is missing, nothing else
    missing = c.truth["throughput_charge_ah"] - c.est["throughput_charge_ah"]
    assert 4.0 < missing < 6.5


def test_stop_and_go_drive_at_one_sample_a_minute_loses_nothing_to_gaps() -> None:
    # issue 10 measured -55 % (239 gaps of the absolute 60 s rule) on this preset; what is
    # left is the sampling error of a drive seen once a minute (seeds 0-5: -4.3..+3.8 %)
    c = replay(fs.preset("jitter_1min"))
    assert c.gaps == 0
    assert c.est["throughput_ah"] == pytest.approx(c.truth["throughput_ah"], rel=0.06)
