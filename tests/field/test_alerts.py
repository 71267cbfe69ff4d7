"""Field suite, issue 10 item 7: alerts that operators trust, on fieldsim telemetry.

* cold_regen (LFP bus at -5 degC, regen braking, 1 Hz and 0.1 Hz): at most 2 raises per
  episode and level of charge_under_temperature (it was 56 raises and 56 clears in 45 min),
  and the exposure it reports is the true charge put in below 0 degC within 5 % at 1 Hz.
* invalid_marker's clean records: the real over-voltage on cell index 10 is raised (warning
  and critical) and named unambiguously; no other cell is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twin_stream.devtools import fieldsim as fs
from twin_stream.replay.notebook import run_twin


def _twin(scenario: fs.Scenario, tmp_path: Path, which: str = "records"):
    run = scenario.generate()
    path = tmp_path / f"{scenario.name}.jsonl"
    fs.write_jsonl(getattr(run, which), path)
    return run, run_twin(str(path), scenario.twin_settings())


def _ms(ts: object) -> int:
    if isinstance(ts, int | float):
        return int(ts)
    import pandas as pd

    return int(pd.Timestamp(str(ts)).value // 1_000_000)


@pytest.mark.parametrize("hz", [1.0, 0.1])
def test_cold_regen_is_one_latched_episode_with_its_exposure(tmp_path: Path, hz: float) -> None:
    sc = fs.preset("cold_regen").with_sensors(hz=hz)
    run, res = _twin(sc, tmp_path)
    a = res.alerts
    cut = a[a.code == "charge_under_temperature"]
    assert len(cut) > 0, "the cold charging must be alerted"
    # the whole drive is one episode (the pack never warms above 0 degC): <= 2 raises a level
    for sev, grp in cut.groupby("severity"):
        raises = int((grp.status == "raised").sum())
        clears = int((grp.status == "cleared").sum())
        assert raises <= 2, (sev, raises)
        assert clears <= raises
    # the first raise is the debounce's (5 s and 3 samples) on the sampled regen pulses: at
    # 1 Hz the 5th charging-while-cold record, at 0.1 Hz the 3rd (one sample per pulse)
    cold_charge = [
        r["ts"]
        for r in run.records
        if r["current"] < -1.0 and min(t for t in r["temperatures"] if t is not None) < 0.0
    ]
    k = 5 if hz == 1.0 else 3
    first = cut[cut.status == "raised"].iloc[0]
    assert first.ts.value // 1_000_000 == _ms(cold_charge[k - 1])
    # exposure: Ah charged below the limit in the episode vs the truth's charge Ah
    est = res.estimates[res.estimates.name == "charge_below_limit_ah"]
    final = float(est.value.iloc[-1])
    true_ah = run.truth.totals["charge_ah"]
    # 1 Hz: within 5 %; 0.1 Hz samples regen pulses (5-12 s) shorter than the interval, so
    # the sampled figure is only as good as the data (measured -28 % on this seed)
    assert final == pytest.approx(true_ah, rel=0.05 if hz == 1.0 else 0.35)
    assert f"{final:.3f} Ah charged below it in this episode" in cut.message.iloc[-1]
    # no other alert: the regen stays below the pack's charge-current limits
    assert set(a.code) == {"charge_under_temperature"}


def test_invalid_marker_clean_still_raises_the_real_over_voltage(tmp_path: Path) -> None:
    _, res = _twin(fs.preset("invalid_marker"), tmp_path, "clean")
    ov = res.alerts[res.alerts.code == "cell_over_voltage"]
    raised = ov[ov.status == "raised"]
    assert sorted(raised.severity) == ["critical", "warning"]
    assert set(ov.cell) == {10}
    assert raised.message.str.startswith("cell #11 (index 10) at ").all()
    imb = res.alerts[(res.alerts.code == "cell_imbalance") & (res.alerts.status == "raised")]
    assert set(imb.cell) <= {10}  # the culprit, if the spread alert fires, is the high cell
