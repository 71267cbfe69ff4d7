"""The plausibility layer ahead of the models (foxBMS 2 `PL_CheckVoltageSpread` and the
string-voltage check): which cell readings are sensor facts, not battery facts.

Per sample and cell channel, in the engine, before any model sees the chunk:

* ``invalid``: the channel carries no value (null, an invalid marker, out of range: the
  codec made it NaN) for a while;
* ``open_wire``: an open sense wire puts ~0 V on one channel and the sum of two cells on a
  neighbour; a channel below ``open_wire_low_v`` next to one above ``open_wire_high_ratio``
  times the string median marks both;
* ``implausible``: a reading no single cell of the chemistry can show (above
  ``plausible_max_v`` or below ``plausible_min_v``); a real over-voltage (NMC 4.3 V, LFP
  3.9 V) is far inside these bounds, so it is never masked;
* ``stuck``: the channel has not changed for ``stuck_samples`` samples while current flows
  (|I| >= ``stuck_c_rate`` x capacity) and the string median moved by ``stuck_min_move_v``.

An implausible channel is removed from the chunk the models get (NaN in that sample): SOC,
imbalance, energy and the voltage alerts use the good channels only. It raises one
``sensor_fault`` alert (cell = the channel, the kind in the message) through the platform's
one debounce, and clears when the channel has been plausible for a while. The pack voltage
against the sum of the plausible cells (``sum_tolerance``) raises ``sensor_fault`` with no
cell (it says one of the two is wrong, not which). Limits are data:
``twin_stream/data/plausibility.json`` per chemistry. Everything is decided sample by sample
with integer counters carried in the state, so any chunking gives the same result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.alerting import debounce
from twin_stream.chunk import Chunk
from twin_stream.outputs import Alert

MODEL = "plausibility"
CODE = "sensor_fault"
KINDS = ("invalid", "open_wire", "implausible", "stuck")
PACK_KEY = "pack_voltage"
FloatArray = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PlausibilityLimits:
    """One chemistry's plausibility limits (see the module doc)."""

    plausible_min_v: float
    plausible_max_v: float
    open_wire_low_v: float
    open_wire_high_ratio: float
    stuck_samples: int
    stuck_c_rate: float
    stuck_min_move_v: float
    sum_tolerance: float
    raise_ms: int
    raise_samples: int
    clear_ms: int
    clear_samples: int
    invalid_raise_ms: int


@cache
def _table() -> dict[str, Any]:
    path = Path(__file__).parent / "data" / "plausibility.json"
    return dict(json.loads(path.read_text("utf-8")))


def limits_for(chemistry: str) -> PlausibilityLimits:
    t = _table()
    merged = {**t["default"], **t.get("chemistries", {}).get(chemistry.upper(), {})}
    merged.pop("description", None)
    return PlausibilityLimits(**merged)


def initial_state() -> dict[str, Any]:
    # channels: debounce state; stuck: [value, run length, median at run start] per cell
    return {"channels": {}, "stuck": None}


def check(
    chunk: Chunk, state: dict[str, Any], lim: PlausibilityLimits, capacity_ah: float
) -> tuple[Chunk, list[Alert], dict[str, Any], int]:
    """The chunk with implausible cell readings removed (NaN), the sensor_fault alerts, the
    new state (input untouched) and how many readings were removed."""
    n, k = chunk.cells.shape
    channels: dict[str, Any] = dict(state.get("channels") or {})
    runs: list[list[Any]] | None = state.get("stuck")
    if n == 0:
        return chunk, [], {"channels": channels, "stuck": runs}, 0
    cells = chunk.cells
    kind = np.zeros((n, k), dtype=np.int8)  # 0 plausible, else 1 + index in KINDS
    if k:
        finite = np.isfinite(cells)
        with np.errstate(invalid="ignore"):
            median = np.median(cells, axis=1) if finite.all() else np.nanmedian(cells, axis=1)
        kind[~finite] = 1
        low = finite & (cells < lim.open_wire_low_v)
        high = finite & (cells > lim.open_wire_high_ratio * median[:, None])
        wire = np.zeros((n, k), dtype=bool)
        if k > 1:
            pair = (low[:, :-1] & high[:, 1:]) | (high[:, :-1] & low[:, 1:])
            wire[:, :-1] |= pair
            wire[:, 1:] |= pair
        kind[wire] = 2
        odd = finite & ~wire & ((cells > lim.plausible_max_v) | (cells < lim.plausible_min_v))
        kind[odd] = 3
        stuck, runs = _stuck(chunk, median, runs, lim, capacity_ah)
        kind[stuck & (kind == 0)] = 4
    masked = (kind >= 2) & np.isfinite(cells)
    removed = int(np.count_nonzero(masked))
    out_chunk = chunk
    if removed:
        out_chunk = replace(chunk, cells=np.where(masked, np.nan, cells))
    alerts = _alerts(chunk, out_chunk, kind, channels, lim)
    return out_chunk, alerts, {"channels": channels, "stuck": runs}, removed


def _stuck(
    chunk: Chunk,
    median: FloatArray,
    carried: list[list[Any]] | None,
    lim: PlausibilityLimits,
    capacity_ah: float,
) -> tuple[BoolMatrix, list[list[Any]]]:
    """Per sample and cell: has the channel held one value for stuck_samples samples under
    current while the string median moved? Once it has, it stays stuck until its value
    changes (the median coming back during a stop proves nothing). A missing reading pauses
    the run. The run -- value, samples under current, median at its start, confirmed 0/1 --
    is carried across chunks. Vectorised over samples and cells (runs by cumulative sums);
    tests/unit/test_plausibility.py holds it to a plain per-sample loop."""
    n, k = chunk.cells.shape
    fresh: list[Any] = [None, 0, None, 0]  # JSON-safe: no NaN in a state
    runs = carried if carried is not None and len(carried) == k else [fresh] * k
    if n == 0:
        return np.zeros((0, k), dtype=bool), [[*r, 0][:4] for r in runs]
    # Only a column that repeats a value (or carries a run) can be stuck: the others are
    # decided at once, and the cumulative sums below run over the few that remain.
    cells = chunk.cells
    prev = np.vstack([[np.nan if r[0] is None else r[0] for r in runs], cells[:-1]])
    carries = np.array([bool(r[1]) or bool(r[3:4] and r[3]) for r in runs])
    # a missing reading makes "the previous value" the last finite one: such columns take
    # the full path (conservative), as do those that repeat a value or carry a run
    repeats = (cells == prev).any(axis=0) | carries | ~np.isfinite(cells).all(axis=0)
    if not repeats.all():
        out = np.zeros((n, k), dtype=bool)
        quick_runs = _no_run_state(cells, median, runs)
        cols = np.flatnonzero(repeats)
        if cols.size:
            sub = replace(chunk, cells=cells[:, cols])
            sub_out, sub_runs = _stuck(sub, median, [runs[j] for j in cols], lim, capacity_ah)
            out[:, cols] = sub_out
            for j, r in zip(cols.tolist(), sub_runs, strict=True):
                quick_runs[j] = r
        return out, quick_runs
    c_val = np.array([np.nan if r[0] is None else r[0] for r in runs], dtype=np.float64)
    c_len = np.array([int(r[1]) for r in runs], dtype=np.int64)
    c_med = np.array([np.nan if r[2] is None else r[2] for r in runs], dtype=np.float64)
    c_conf = np.array([bool(r[3]) if len(r) > 3 else False for r in runs], dtype=bool)

    finite = np.isfinite(cells)
    ext = np.vstack([c_val[None, :], cells])  # the carried run value as row -1
    if finite.all():
        before = ext[:-1]  # the value before each row
    else:  # the last finite value before each row (NaN: none)
        rows = np.arange(n + 1, dtype=np.int32)[:, None]
        last = np.maximum.accumulate(np.where(np.isfinite(ext), rows, 0), axis=0)
        before = ext[last, np.arange(k)][:-1]
    change = finite & (cells != before)  # a new run starts here (NaN != anything)
    continuing = ~np.logical_or.accumulate(change, axis=0)  # still the carried run
    flowing = (np.abs(chunk.current) >= lim.stuck_c_rate * capacity_ah)[:, None]

    def at_run_start(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """`x` at the start row of each row's run (x must not decrease down a column)."""
        return np.maximum.accumulate(np.where(change, x, x.min(initial=0) - 1), axis=0)

    inc = np.cumsum(finite & ~change & flowing, axis=0, dtype=np.int32)  # under current
    length = np.where(continuing, c_len + inc, inc - at_run_start(inc))
    # the row where each column's last run started (-1: the carried run goes on)
    ends = change[::-1]
    last_start = np.where(ends.any(axis=0), n - 1 - np.argmax(ends, axis=0), -1)
    end_med = np.where(last_start >= 0, median[np.maximum(last_start, 0)], c_med)
    long_run = finite & (length >= lim.stuck_samples)
    if long_run.any():  # rare: a run long enough to be judged
        rows1 = np.arange(n, dtype=np.int32)[:, None]
        run_row = np.maximum.accumulate(np.where(change, rows1, -1), axis=0)
        start_med = np.where(continuing, c_med[None, :], median[np.maximum(run_row, 0)])
        with np.errstate(invalid="ignore"):
            moved = np.abs(median[:, None] - start_med) >= lim.stuck_min_move_v
        cond = long_run & moved
        hits = np.cumsum(cond, axis=0, dtype=np.int32)
        confirmed = np.where(
            continuing, c_conf[None, :] | (hits > 0), hits - at_run_start(hits - cond) > 0
        )
    else:
        confirmed = continuing & c_conf[None, :]
    out = finite & confirmed

    new_runs: list[list[Any]] = []
    for j in range(k):
        v = float(before[-1, j]) if not finite[-1, j] else float(cells[-1, j])
        m = float(end_med[j])
        new_runs.append(
            [
                None if v != v else v,
                int(length[-1, j]),
                None if m != m else m,
                int(confirmed[-1, j]),
            ]
        )
    return out, new_runs


def _no_run_state(cells: FloatArray, median: FloatArray, runs: list[list[Any]]) -> list[list[Any]]:
    """The carried runs after a chunk in which no column repeated a value: each finite
    reading started a run of its own (length 0); a column with no reading keeps its run."""
    n, k = cells.shape
    finite = np.isfinite(cells)
    last = np.where(finite.any(axis=0), n - 1 - np.argmax(finite[::-1], axis=0), -1)
    out: list[list[Any]] = []
    for j in range(k):
        i = int(last[j])
        if i < 0:
            out.append([*runs[j], 0][:4])
            continue
        m = float(median[i])
        out.append([float(cells[i, j]), 0, None if m != m else m, 0])
    return out


def _alerts(
    chunk: Chunk,
    masked: Chunk,
    kind: npt.NDArray[np.int8],
    channels: dict[str, Any],
    lim: PlausibilityLimits,
) -> list[Alert]:
    k = kind.shape[1]
    out: list[tuple[tuple[int, int], Alert]] = []
    dt = chunk.integrable_dt_ms
    if k:
        # two channels per cell: a wrong reading ("cell:j"), and no reading at all
        # ("invalid:j"), slower to call a fault (a CAN log misses frames)
        wrong, missing = kind >= 2, kind == 1
        for prefix, cond, clear, raise_ms in (
            ("cell", wrong, kind == 0, lim.raise_ms),
            ("invalid", missing, ~missing, lim.invalid_raise_ms),
        ):
            keys = [f"{prefix}:{j}" for j in range(k)]
            if not cond.any() and not any(key.startswith(prefix) for key in channels):
                continue
            for ev in debounce(
                dt,
                cond,
                clear,
                keys,
                channels,
                raise_ms,
                lim.clear_ms,
                lim.raise_samples,
                lim.clear_samples,
            ):
                alert = _cell_alert(chunk, kind, ev.row, ev.column, ev.raised)
                out.append(((ev.row, ev.column), alert))
    # the pack voltage against the sum of the plausible cells
    if k:
        total = np.where(np.isfinite(masked.cells), masked.cells, 0.0).sum(axis=1)
        complete = np.isfinite(masked.cells).all(axis=1) & np.isfinite(chunk.voltage)
        with np.errstate(invalid="ignore"):
            off = complete & (np.abs(total - chunk.voltage) > lim.sum_tolerance * chunk.voltage)
        ok = complete & ~off
        if off.any() or PACK_KEY in channels:
            for ev in debounce(
                dt,
                off[:, None],
                ok[:, None],
                [PACK_KEY],
                channels,
                lim.raise_ms,
                lim.clear_ms,
                lim.raise_samples,
                lim.clear_samples,
            ):
                r = ev.row
                v, s = float(chunk.voltage[r]), float(total[r])
                msg = (
                    f"pack voltage {v:.2f} V and the sum of the cells {s:.2f} V disagree by "
                    f"more than {lim.sum_tolerance:.0%}: one of them is mismeasured"
                    if ev.raised
                    else f"pack voltage {v:.2f} V agrees with the sum of the cells again"
                )
                out.append(((r, k), _alert(chunk, r, None, ev.raised, v, s, "V", msg)))
    out.sort(key=lambda t: t[0])
    return [a for _, a in out]


def _cell_alert(chunk: Chunk, kind: npt.NDArray[np.int8], row: int, j: int, raised: bool) -> Alert:
    v = float(chunk.cells[row, j])
    what = KINDS[int(kind[row, j]) - 1] if kind[row, j] else "plausible"
    reading = "no value" if v != v else f"{v:.3f} V"
    msg = (
        f"cell #{j + 1} (index {j}): sensor fault ({what}), reading {reading}; the channel is "
        "left out of SOC, imbalance, energy and voltage alerts while it lasts"
        if raised
        else f"cell #{j + 1} (index {j}): reading plausible again ({reading})"
    )
    return _alert(chunk, row, j, raised, v if v == v else float("nan"), 0.0, "V", msg)


def _alert(
    chunk: Chunk,
    row: int,
    cell: int | None,
    raised: bool,
    value: float,
    threshold: float,
    unit: str,
    message: str,
) -> Alert:
    return Alert(
        int(chunk.ts[row]),
        MODEL,
        CODE,
        "warning",
        "raised" if raised else "cleared",
        cell,
        value if value == value else -1.0,
        threshold,
        unit,
        message,
    )
