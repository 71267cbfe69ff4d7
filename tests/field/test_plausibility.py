"""Sensor faults on realistic telemetry are sensor faults, not battery facts (issue 10,
item 2). Before: an open sense wire raised "critical over-voltage 7.8 V" on its neighbour,
"critical under-voltage 0 V" on the cell itself and a 100 % SOC imbalance; a stuck channel
was reported as imbalance."""

from __future__ import annotations

from typing import Any

import pandas as pd

from twin_stream.fieldsim import preset
from twin_stream.notebook import run_twin


def _run(name: str) -> tuple[Any, Any]:
    sc = preset(name)
    run = sc.generate()
    return run, run_twin(pd.DataFrame(run.records), sc.twin_settings())


def test_open_wire_is_one_sensor_fault_per_channel_and_no_false_battery_alert() -> None:
    _, res = _run("open_wire")
    a = res.alerts
    faults = a[a.code == "sensor_fault"]
    # the wire stays open to the end of the run: raised once per channel, never cleared
    assert sorted(zip(faults.cell, faults.status, strict=True)) == [(5, "raised"), (6, "raised")]
    assert all("open_wire" in m for m in faults[faults.status == "raised"].message)
    battery = a[a.code.isin(["cell_over_voltage", "cell_under_voltage", "cell_imbalance"])]
    assert battery.empty, battery[["code", "cell", "message"]].to_string()
    # the masked channels leave the imbalance estimate at the true spread, not 100 %
    soc_imb = res.estimates[res.estimates.name == "soc_imbalance"].value
    assert soc_imb.max() < 10.0
    assert res.summary["implausible"] > 0


def test_a_stuck_channel_is_a_sensor_fault_not_an_imbalance() -> None:
    _, res = _run("stuck_channel")
    a = res.alerts
    faults = a[(a.code == "sensor_fault") & (a.status == "raised")]
    assert list(faults.cell) == [7] and "stuck" in faults.message.iloc[0]
    assert a[a.code == "cell_imbalance"].empty
