"""The twin in a notebook: `run_twin` runs a pandas DataFrame or a recorded file through the
same engine and decoder as `twin-stream replay` and returns pandas DataFrames.

    import twin_stream

    result = twin_stream.run_twin(df, {"engine": {"allowed_lateness_s": 2}})
    result.alerts        # one row per alert record (raised and cleared), ts as UTC datetimes
    result.estimates     # one row per estimate record
    result.deadletters   # refused records, with the reason (`error`) and where (`source`)
    result.state         # every battery's final engine state (replay's --state file)
    result.summary       # counters, as replay's summary.json

A DataFrame holds telemetry in the long format of the recorded files: one row per sample,
columns `battery_id`, `ts`, `current` and the optional `voltage`, `soc`, `soh`, `seq`, and
`cell_voltages` / `temperatures` holding a list (or numpy array) per row. Its rows become the
records a JSON Lines or Parquet file's rows do, in the DataFrame's order:

- a missing value (None, NaN, NaT, pd.NA) is an absent field, as a null in Parquet;
- `ts` may be epoch milliseconds, RFC 3339 text, or datetimes (pandas Timestamps or
  `datetime64` columns; naive ones are taken as UTC);
- whole-number floats in `ts` and `seq` are integers (pandas turns an integer column with a
  missing value into floats); anything else is passed on as it is, so an invalid value
  becomes the same dead letter it would in a file.

Settings: a `Settings`, a mapping of overrides over the defaults (nested like
settings/twin-settings.json), or the path of a settings file. TWIN_ environment variables are
not applied, so a notebook's results do not depend on the shell it was started from (use
`twin_stream.config.settings.load_settings(path)` and pass the result to include them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin_stream.codec.files import RecordReader
from twin_stream.config.settings import Settings, SettingsError, load_settings
from twin_stream.engine import State
from twin_stream.replay import DEFAULT_BLOCK, run_blocks

ALERT_COLUMNS = (
    "battery_id",
    "ts",
    "model",
    "code",
    "severity",
    "status",
    "cell",
    "value",
    "threshold",
    "unit",
    "message",
)
ESTIMATE_COLUMNS = (
    "battery_id",
    "ts",
    "model",
    "name",
    "value",
    "unit",
    "confidence",
    "uncertainty",
)
DEADLETTER_COLUMNS = ("error", "raw", "source", "raw_bytes", "raw_sha256", "truncated", "records")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_INTEGER_FIELDS = frozenset({"ts", "seq"})


@dataclass
class TwinResult:
    """What `run_twin` returns: the output records as DataFrames, the final state of every
    battery and the run's counters."""

    alerts: pd.DataFrame
    estimates: pd.DataFrame
    deadletters: pd.DataFrame
    state: dict[str, State] = field(repr=False)
    summary: dict[str, Any]

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"TwinResult({s.get('input_records', 0)} input records, "
            f"{s.get('batteries', 0)} batteries: {len(self.alerts)} alerts, "
            f"{len(self.estimates)} estimates, {len(self.deadletters)} dead letters)"
        )


class _Collect:
    """A `replay.Writer` that keeps the records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write_all(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)


def run_twin(
    data: pd.DataFrame | str | Path,
    settings: Settings | Mapping[str, Any] | str | Path | None = None,
    *,
    state: Mapping[str, State] | None = None,
    block: int = DEFAULT_BLOCK,
) -> TwinResult:
    """Run the twin on `data` (a DataFrame of telemetry, or the path of a .jsonl, .csv or
    .parquet file) and return its alerts, estimates, dead letters, final state and summary.

    The engine, decoder and chunking are `twin-stream replay`'s: the same input gives the same
    alerts, estimates and state. `settings`: a `Settings`, a mapping of overrides (e.g.
    ``{"engine": {"allowed_lateness_s": 2}}``), a settings file, or None for the defaults.
    `state`: battery states to continue from (a previous result's `state`, or a replay
    state file's contents); not modified. `block`: records per block (one chunk per battery
    per block), as replay's."""
    s = _settings(settings)
    if isinstance(data, str | Path):
        blocks: Iterator[list[tuple[Any, str]]] = RecordReader(Path(data)).blocks(block)
    else:
        blocks = dataframe_blocks(data, block)
    alerts, estimates, dead = _Collect(), _Collect(), _Collect()
    states = {k: dict(v) for k, v in (state or {}).items()}
    summary, states = run_blocks(blocks, s, alerts, estimates, dead, states=states)
    return TwinResult(
        alerts=_frame(alerts.records, ALERT_COLUMNS, ts=True),
        estimates=_frame(estimates.records, ESTIMATE_COLUMNS, ts=True),
        deadletters=_frame(dead.records, DEADLETTER_COLUMNS, ts=False),
        state=states,
        summary=summary.as_dict(),
    )


def _settings(settings: Settings | Mapping[str, Any] | str | Path | None) -> Settings:
    if settings is None:
        return Settings()
    if isinstance(settings, Settings):
        return settings
    if isinstance(settings, str | Path):
        return load_settings(settings, environ={})
    from pydantic import ValidationError

    from twin_stream.config.settings import _format

    try:
        return Settings.model_validate(dict(settings))
    except ValidationError as exc:
        raise SettingsError(_format(exc, "settings")) from None


def dataframe_blocks(
    df: pd.DataFrame, size: int = DEFAULT_BLOCK
) -> Iterator[list[tuple[Any, str]]]:
    """A DataFrame's rows as replay's blocks of (record, source): the records its rows would
    be in a file (see the module doc); the source of row i is ``dataframe:row i``."""
    if size < 1:
        raise ValueError(f"block size must be >= 1, got {size}")
    columns = [str(c) for c in df.columns]
    for start in range(0, len(df), size):
        part = df.iloc[start : start + size]
        values = [part[c].tolist() for c in part.columns]
        block: list[tuple[Any, str]] = []
        for i in range(len(part)):
            rec: dict[str, Any] = {}
            for name, col in zip(columns, values, strict=True):
                v = _value(name, col[i])
                if v is not _ABSENT:
                    rec[name] = v
            block.append((rec, f"dataframe:row {start + i}"))
        yield block


_ABSENT = object()


def _value(name: str, v: Any) -> Any:
    """One cell of a DataFrame as the value a file's record would hold (module doc)."""
    if v is None or v is pd.NaT or v is pd.NA:
        return _ABSENT
    if type(v) is float:
        if math.isnan(v):
            return _ABSENT
        if name in _INTEGER_FIELDS and v.is_integer():
            return int(v)
        return v
    if isinstance(v, datetime):  # pandas Timestamps too; NaT is no datetime
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return (v - _EPOCH) // _MS
    if isinstance(v, str | int):
        return v
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, np.generic):
        return _value(name, v.item())
    return v


def _frame(records: list[dict[str, Any]], columns: tuple[str, ...], *, ts: bool) -> pd.DataFrame:
    """Output records as a DataFrame: the schema's columns first (also when there are no
    records), any others after them; `ts` as UTC datetimes (ms), `cell` as nullable integers."""
    if records:
        df = pd.DataFrame(records)
        df = df[[c for c in columns if c in df] + [c for c in df if c not in columns]]
    else:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    if ts:
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601").dt.as_unit("ms")
    if "cell" in columns:  # an alert's cell, or None: integers with <NA>, not floats
        df["cell"] = df["cell"].astype("Int64")
    return df


__all__ = ["TwinResult", "dataframe_blocks", "run_twin"]
