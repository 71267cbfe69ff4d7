"""The notebook API (`twin_stream.run_twin`): the same engine and decoder as replay, so a
DataFrame or a file gives exactly the alerts, estimates, dead letters and state `replay()`
writes for the same data; settings as a Settings, a mapping of overrides, or a file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

import twin_stream
from twin_stream.codec import iso_ms
from twin_stream.config.settings import Settings, SettingsError
from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate, write_records
from twin_stream.replay import replay
from twin_stream.replay.notebook import (
    ALERT_COLUMNS,
    DEADLETTER_COLUMNS,
    ESTIMATE_COLUMNS,
    TwinResult,
)

FAULTS = FaultSpec(over_voltage=1, duplicates=3, disorder=2, bad_records=6)
TIMING = {"seconds", "records_per_s"}


@pytest.fixture(scope="module")
def sim() -> list[dict[str, Any] | str]:
    cfg = SimConfig(batteries=3, cells=12, temperatures=3, duration_s=600, seed=3, faults=FAULTS)
    return simulate(cfg).records


@pytest.fixture(scope="module")
def rows(sim: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """The records a DataFrame can hold (a raw text bad record cannot be a row)."""
    return [r for r in sim if isinstance(r, dict)]


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def as_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A result DataFrame back to wire records (ts as RFC 3339 text, missing as None)."""
    out = []
    for rec in df.to_dict("records"):
        r: dict[str, Any] = {}
        for k, v in rec.items():
            if k == "ts":
                v = iso_ms(v.value // 1_000_000)
            elif v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                v = None
            elif isinstance(v, np.generic):
                v = v.item()
            r[k] = v
        out.append(r)
    return out


def by_battery(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per battery, in order (a block's outputs come battery by battery)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["battery_id"], []).append(r)
    return out


def replayed(path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    state = out / "state.json"
    summary = replay(path, out, settings, state_file=state)
    return {
        "alerts": read(out / "alerts.jsonl"),
        "estimates": read(out / "estimates.jsonl"),
        "deadletters": read(out / "deadletter.jsonl"),
        "state": json.loads(state.read_text()),
        "summary": summary.as_dict(),
    }


def assert_same(result: TwinResult, expected: dict[str, Any], *, sources: bool) -> None:
    assert as_records(result.alerts) == expected["alerts"]
    assert as_records(result.estimates) == expected["estimates"]
    dead = as_records(result.deadletters)
    if not sources:  # "dataframe:row N" instead of "file.jsonl:line"
        dead = [{**d, "source": None} for d in dead]
        expected = {
            **expected,
            "deadletters": [{**d, "source": None} for d in expected["deadletters"]],
        }
    assert dead == expected["deadletters"]
    assert json.loads(json.dumps(result.state)) == expected["state"]
    drop = lambda s: {k: v for k, v in s.items() if k not in TIMING}  # noqa: E731
    assert drop(result.summary) == drop(expected["summary"])


def test_path_gives_what_replay_writes(sim: list[Any], tmp_path: Path) -> None:
    path = tmp_path / "fleet.jsonl"
    write_records(sim, path)
    expected = replayed(path, tmp_path / "replay", Settings())
    result = twin_stream.run_twin(path)
    assert_same(result, expected, sources=True)
    assert twin_stream.run_twin(str(path)).summary["alerts"] == len(expected["alerts"])
    # the fault is there: an over-voltage raised and cleared, critical
    ov = result.alerts[result.alerts.code == "cell_over_voltage"]
    assert set(ov.status) == {"raised", "cleared"} and "critical" in set(ov.severity)
    assert result.summary["invalid"] == FAULTS.bad_records
    assert len(result.deadletters) == result.summary["dead_letters"]


def test_dataframe_gives_what_replay_of_the_same_rows_writes(
    rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    write_records(rows, path)
    expected = replayed(path, tmp_path / "replay", Settings())
    df = pd.DataFrame(rows)
    result = twin_stream.run_twin(df)
    assert_same(result, expected, sources=False)
    assert len(result.alerts) > 0 and len(result.deadletters) > 0
    assert result.deadletters.source.str.fullmatch(r"dataframe:row \d+").all()
    # the same run in smaller blocks: chunking does not change what comes out per battery
    small = twin_stream.run_twin(df, block=97)
    assert by_battery(as_records(small.alerts)) == by_battery(expected["alerts"])
    assert by_battery(as_records(small.estimates)) == by_battery(expected["estimates"])


def test_dataframe_flavours(rows: list[dict[str, Any]]) -> None:
    """Datetime ts (aware or naive), numpy arrays in the list columns and an integer column
    made float by a missing value all give the records of the plain DataFrame."""
    base = twin_stream.run_twin(pd.DataFrame(rows))
    df = pd.DataFrame(rows)
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)
    df["cell_voltages"] = [np.asarray(v) if isinstance(v, list) else v for v in df.cell_voltages]
    df["seq"] = df["seq"].astype(float)
    df.loc[len(df) // 2, "seq"] = np.nan  # seq is optional: absent
    aware = twin_stream.run_twin(df)
    df["ts"] = df["ts"].dt.tz_localize(None)
    naive = twin_stream.run_twin(df)
    for r in (aware, naive):
        assert as_records(r.alerts) == as_records(base.alerts)
        assert as_records(r.estimates) == as_records(base.estimates)
        assert list(r.deadletters.error) == list(base.deadletters.error)


def test_result_frames(rows: list[dict[str, Any]]) -> None:
    r = twin_stream.run_twin(pd.DataFrame(rows))
    assert tuple(r.alerts.columns) == ALERT_COLUMNS
    assert tuple(r.estimates.columns) == ESTIMATE_COLUMNS
    assert tuple(r.deadletters.columns) == DEADLETTER_COLUMNS
    for frame in (r.alerts, r.estimates):
        assert str(frame.ts.dtype) == "datetime64[ms, UTC]"
    assert str(r.alerts.cell.dtype) == "Int64"
    assert set(r.state) == {"bat-0000", "bat-0001", "bat-0002"}
    assert "alerts" in repr(r) and len(repr(r)) < 200
    # no records: the same columns, empty
    clean = [x for x in rows if x["battery_id"] == "bat-0000"][:5]
    empty = twin_stream.run_twin(pd.DataFrame(clean))
    assert empty.alerts.empty and tuple(empty.alerts.columns) == ALERT_COLUMNS
    assert str(empty.alerts.ts.dtype) == "datetime64[ms, UTC]"
    assert empty.deadletters.empty and tuple(empty.deadletters.columns) == DEADLETTER_COLUMNS


def test_settings_as_a_mapping_or_file(
    rows: list[dict[str, Any]], sim: list[Any], tmp_path: Path
) -> None:
    df = pd.DataFrame(rows)
    default = twin_stream.run_twin(df)
    assert default.summary["late"] == FAULTS.disorder
    overrides = {"engine": {"allowed_lateness_s": 5}}
    waited = twin_stream.run_twin(df, overrides)
    assert waited.summary["late"] == 0  # the disordered records were put back in order
    # = replay with the same settings
    path = tmp_path / "rows.jsonl"
    write_records(rows, path)
    expected = replayed(path, tmp_path / "replay", Settings.model_validate(overrides))
    assert_same(waited, expected, sources=False)
    # as a file
    f = tmp_path / "settings.json"
    f.write_text(json.dumps(overrides))
    from_file = twin_stream.run_twin(df, f)
    assert as_records(from_file.estimates) == as_records(waited.estimates)
    assert twin_stream.run_twin(df, Settings.model_validate(overrides)).summary["late"] == 0
    with pytest.raises(SettingsError, match="allowed_latenes"):
        twin_stream.run_twin(df, {"engine": {"allowed_latenes_s": 5}})


def test_state_continues_a_run() -> None:
    clean = [
        r
        for r in simulate(
            SimConfig(batteries=2, cells=8, temperatures=2, duration_s=300, seed=5)
        ).records
        if isinstance(r, dict)
    ]
    df = pd.DataFrame(clean)
    whole = twin_stream.run_twin(df)
    half = len(df) // 2
    first = twin_stream.run_twin(df.iloc[:half])
    kept = json.dumps(first.state)
    second = twin_stream.run_twin(df.iloc[half:], state=first.state)
    assert json.dumps(first.state) == kept, "the given state is not modified"
    split = as_records(first.estimates) + as_records(second.estimates)
    assert by_battery(split) == by_battery(as_records(whole.estimates))

    def comparable(state: dict[str, Any]) -> dict[str, Any]:  # version: engine calls so far
        return {b: {**s, "version": None} for b, s in json.loads(json.dumps(state)).items()}

    assert comparable(second.state) == comparable(whole.state)


def test_import_stays_light() -> None:
    code = (
        "import sys, twin_stream; "
        "assert 'pandas' not in sys.modules and 'twin_stream.replay.notebook' not in sys.modules; "
        "assert callable(twin_stream.run_twin) and 'twin_stream.replay.notebook' in sys.modules; "
        "assert 'run_twin' in dir(twin_stream) and twin_stream.run_twin.__doc__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        twin_stream.no_such_thing  # noqa: B018
