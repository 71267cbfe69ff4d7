"""Field rule on realistic telemetry: one bad channel or field never hides a good one.

Issue 10, item 1: before, one cell channel at the J1939 "not available" code (65.535 V) on
every record dead-lettered every record, and a real over-voltage on another cell was never
alerted; a BMS that reports soh 0 (not computed yet) lost every record too."""

from __future__ import annotations

from twin_stream.devtools.fieldsim import preset
from twin_stream.replay.notebook import run_twin


def test_an_always_invalid_channel_hides_neither_the_record_nor_a_real_over_voltage() -> None:
    sc = preset("invalid_marker")
    run = sc.generate()
    assert all(r["cell_voltages"][3] in (65.535, None) for r in run.records)  # the marker
    res = run_twin(_frame(run.records), sc.twin_settings())
    assert len(res.deadletters) == 0
    s = res.summary
    assert s["processed"] == len(run.records)
    assert s["degraded"] == len(run.records)  # each record lost one channel, nothing else
    ov = res.alerts[(res.alerts.code == "cell_over_voltage") & (res.alerts.status == "raised")]
    assert set(ov.cell) == {10}  # the real excursion, on cell index 10, and nothing on 3
    on3 = res.alerts[res.alerts.cell == 3]  # invalid for long: one sensor_fault, no battery alert
    assert list(zip(on3.code, on3.status, strict=True)) == [("sensor_fault", "raised")]
    assert "(invalid)" in on3.message.iloc[0]


def test_bms_fields_not_computed_yet_are_removed_not_the_record() -> None:
    sc = preset("bms_fields")
    run = sc.generate()
    assert {r.get("soh") for r in run.records} == {0.0}
    res = run_twin(_frame(run.records), sc.twin_settings())
    assert len(res.deadletters) == 0
    assert res.summary["processed"] == len(run.records)
    assert res.summary["degraded"] == len(run.records)  # soh 0 on every record

    # the same records without the bad fields (soh 0 everywhere, soc 102.3 for a minute)
    # give the same outputs
    def without_bad(r: dict) -> dict:
        return {k: v for k, v in r.items() if k != "soh" and not (k == "soc" and v > 100)}

    clean = run_twin(_frame([without_bad(r) for r in run.records]), sc.twin_settings())
    assert clean.estimates.equals(res.estimates)
    assert clean.alerts.equals(res.alerts)


def _frame(records: list[dict]) -> object:
    import pandas as pd

    return pd.DataFrame(records)
