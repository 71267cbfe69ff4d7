"""The plausibility stage ahead of the models (foxBMS 2 `PL_CheckVoltageSpread` and the
string-voltage check): which cell readings are sensor facts, not battery facts.

Per sample and cell channel, before any model sees the samples:

* ``invalid``: the channel carries no value (null, an invalid marker, out of range: the
  codec made it NaN) for a while;
* ``open_wire``: an open sense wire puts ~0 V on one channel and the sum of two cells on a
  neighbour; a channel below ``open_wire_low_v`` next to one above ``open_wire_high_ratio``
  times the string median marks both;
* ``implausible``: a reading no single cell of the chemistry can show (above
  ``plausible_max_v`` or below ``plausible_min_v``); a real over-voltage (NMC 4.3 V, LFP
  3.9 V) is far inside these bounds, so it is never masked;
* ``stuck``: the channel has not changed for ``stuck_samples`` samples while current flows
  (|I| >= ``stuck_c_rate`` x capacity) and the string median moved by ``stuck_min_move_v``
  since the run began. Once confirmed it stays stuck until its value changes (the median
  coming back during a stop proves nothing); a missing reading pauses the run.

An implausible channel is removed from what the models get (NaN in that sample): SOC,
imbalance, energy and the voltage alerts use the good channels only. It raises one
``sensor_fault`` alert (cell = the channel, the kind in the message) through the platform's
one debounce, and clears when the channel has been plausible for a while; a channel without
a value has a debounce of its own (``invalid_raise_ms``: a CAN log misses frames). The pack
voltage against the sum of the plausible cells (``sum_tolerance``) raises ``sensor_fault``
with no cell (it says one of the two is wrong, not which). Limits are data:
``twin_stream/engine/plausibility.json`` per chemistry, which also holds the stage's manifest
(its output and its state arrays).

Algorithm: `Plausibility` is a `KernelModel` (not a registered model: the engine runs it
before the models) whose compiled loop walks a block's records of many batteries. Per record,
over the slot's own ``n_cells`` columns: the string median of the non-NaN readings (what
numpy's nanmedian gives), the kind of each channel, the stuck run of each channel advanced
(state arrays per slot and cell), one debounce step per channel and family and one for the
pack; the alerts are written in (record, cell, family) order, the pack's last; then the
implausible readings are overwritten with NaN **in the cells matrix it is given**:
`run_cells(blk, cells, ...)` writes into `cells`, `run(blk, ...)` into `blk.cells` itself
(give it a block whose cells you own; `apply` copies them for you). The sum of the cells is
numpy's pairwise summation, so the pack check is bit for bit what the vectorised code gave.
Everything is decided record by record from the state, so any chunking or interleaving of
batteries gives the same result.

Parameters: one row per (chemistry limits, capacity) instance (`param_row`); output rows
carry the detail the message needs in their CONF column (a cell alert: the kind code 0..4
of the reading, 0 plausible; the pack alert: the tolerance), so any instance words any row.

`check(chunk, state, limits, capacity_ah)` is the one-battery API the engine uses today
(a one-slot block, dict state). The state dict is the stage's state arrays (`StateArrays`
format with a version); a dict of the pre-kernel format (``{"channels": ..., "stuck":
...}``) is migrated, carrying the debounce counters and the stuck runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream import sdk
from twin_stream.battery.spec import BatterySpec
from twin_stream.sdk.block import Block
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.contract import ContractError, Manifest, State
from twin_stream.sdk.emit import AUX, CELL, CONF, ROW, STATUS, VALUE
from twin_stream.sdk.model import run_kernel
from twin_stream.sdk.outputs import Alert, Output
from twin_stream.sdk.state import StateArrays, StateSpec

MODEL = "plausibility"
CODE = "sensor_fault"
KINDS = ("invalid", "open_wire", "implausible", "stuck")
PACK_KEY = "pack_voltage"
FloatArray = npt.NDArray[np.float64]

# the parameter row
(
    P_MIN_V,
    P_MAX_V,
    P_WIRE_LOW_V,
    P_WIRE_RATIO,
    P_STUCK_SAMPLES,
    P_STUCK_C_RATE,
    P_CAPACITY_AH,
    P_STUCK_MOVE_V,
    P_SUM_TOL,
    P_RAISE_MS,
    P_RAISE_N,
    P_CLEAR_MS,
    P_CLEAR_N,
    P_INVALID_RAISE_MS,
) = range(14)
PARAMS = 14


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
    path = Path(__file__).with_name("plausibility.json")
    return dict(json.loads(path.read_text("utf-8")))


def limits_for(chemistry: str) -> PlausibilityLimits:
    t = _table()
    merged = {**t["default"], **t.get("chemistries", {}).get(chemistry.upper(), {})}
    merged.pop("description", None)
    return PlausibilityLimits(**merged)


def _manifest() -> Manifest:
    try:
        return Manifest.model_validate(_table()["manifest"])
    except (KeyError, ValueError) as exc:
        raise ContractError(
            f"twin_stream/engine/plausibility.json: invalid manifest: {exc}"
        ) from None


# -- the compiled loop ----------------------------------------------------------------------
@sdk.kernel
def _pairwise_leaf(a, lo, n):  # type: ignore[no-untyped-def]
    """numpy's pairwise summation of a[lo:lo+n] for n <= 128 (no split)."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@sdk.kernel
def _pairwise_sum(a, lo, n):  # type: ignore[no-untyped-def]
    """numpy's pairwise summation of a[lo:lo+n] (what `ndarray.sum` gives, bit for bit):
    blocks of up to 128 summed with 8 accumulators, longer runs split in two halves (a
    multiple of 8 first) and the halves added. The recursion is unrolled onto a stack
    (numba's cache does not take recursive functions well)."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    op_lo = np.empty(192, dtype=np.int64)
    op_n = np.empty(192, dtype=np.int64)  # -1: add the two values on top of the value stack
    vals = np.empty(64)
    ops = 1
    nv = 0
    op_lo[0], op_n[0] = lo, n
    while ops > 0:
        ops -= 1
        a_lo, a_n = op_lo[ops], op_n[ops]
        if a_n < 0:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        elif a_n <= 128:
            vals[nv] = _pairwise_leaf(a, a_lo, a_n)
            nv += 1
        else:
            n2 = a_n // 2
            n2 -= n2 % 8
            op_lo[ops], op_n[ops] = 0, -1
            op_lo[ops + 1], op_n[ops + 1] = a_lo + n2, a_n - n2
            op_lo[ops + 2], op_n[ops + 2] = a_lo, n2
            ops += 3
    return vals[0]


@sdk.kernel
def _median(cells, i, k, a, b):  # type: ignore[no-untyped-def]
    """The median of row i's non-NaN readings among its first k (NaN: none), exactly
    numpy's (nan)median: the middle value, or the mean of the two middle values.

    Selection by branch-free three-way partitions (the values below the pivot to the front
    of the other scratch buffer, those above to its back; the pivot's equals are the middle)
    until the middle rank falls among the pivot's equals; for an even count the value below
    the middle is then the largest reading below it, or the middle value itself."""
    m = 0
    for j in range(k):
        x = cells[i, j]
        a[m] = x
        m += x == x
    if m == 0:
        return np.nan
    half = m >> 1
    src, dst = a, b
    lo, n, r = 0, m, half  # rank r of src[lo:lo + n]
    while True:
        p = src[lo + (n >> 1)]
        nl = 0
        ng = 0
        for q in range(lo, lo + n):
            x = src[q]
            dst[lo + nl] = x
            nl += x < p
            dst[lo + n - 1 - ng] = x
            ng += x > p
        if r < nl:
            n = nl
        elif r >= n - ng:
            r -= n - ng
            lo += n - ng
            n = ng
        else:
            break
        src, dst = dst, src
    if m & 1:
        return p
    below = 0
    lower = -np.inf
    for j in range(k):
        x = cells[i, j]
        if x < p:  # (NaN is not)
            below += 1
            lower = max(lower, x)
    if below < half:
        lower = p
    return (lower + p) / 2


@sdk.kernel
def _loop(  # type: ignore[no-untyped-def]
    slot,
    dt_ms,
    gap,
    current,
    voltage,
    cells,
    n_cells,
    P,
    s_val,
    s_len,
    s_start,
    s_conf,
    cell_ch,
    inv_ch,
    pack_ch,
    out,
    start,
):
    width = max(cells.shape[1], 1)
    buf = np.empty(width)
    buf2 = np.empty(width)
    kind = np.zeros(width, dtype=np.int64)
    low = np.zeros(width, dtype=np.bool_)
    high = np.zeros(width, dtype=np.bool_)
    w = 0
    for i in range(start, slot.size):
        s = slot[i]
        k = n_cells[s]
        if k == 0:
            continue
        if not sdk.room(out, w, 2 * k + 1):
            return i, w
        dt = 0 if gap[i] else dt_ms[i]
        raise_ms, raise_n = int(P[s, P_RAISE_MS]), int(P[s, P_RAISE_N])
        clear_ms, clear_n = int(P[s, P_CLEAR_MS]), int(P[s, P_CLEAR_N])
        # the string median of the readings (NaN ignored, as numpy's nanmedian)
        med = _median(cells, i, k, buf, buf2)
        # kinds: 0 plausible, 1 invalid, 2 open wire, 3 implausible, 4 stuck
        high_v = P[s, P_WIRE_RATIO] * med
        for j in range(k):
            v = cells[i, j]
            fin = np.isfinite(v)
            kind[j] = 0 if fin else 1
            low[j] = fin and v < P[s, P_WIRE_LOW_V]
            high[j] = fin and v > high_v
        for j in range(k - 1):
            if (low[j] and high[j + 1]) or (high[j] and low[j + 1]):
                kind[j] = 2
                kind[j + 1] = 2
        flowing = abs(current[i]) >= P[s, P_STUCK_C_RATE] * P[s, P_CAPACITY_AH]
        stuck_n = P[s, P_STUCK_SAMPLES]
        for j in range(k):
            v = cells[i, j]
            if not np.isfinite(v):
                continue  # a missing reading pauses the run
            if kind[j] == 0 and (v > P[s, P_MAX_V] or v < P[s, P_MIN_V]):
                kind[j] = 3
            if v == s_val[s, j]:
                if flowing:
                    s_len[s, j] += 1
            else:  # a new run starts here
                s_val[s, j] = v
                s_len[s, j] = 0
                s_conf[s, j] = 0
                s_start[s, j] = med
            st = s_start[s, j]
            if s_conf[s, j] == 0 and s_len[s, j] >= stuck_n and st == st:
                s_conf[s, j] = 1 if abs(med - st) >= P[s, P_STUCK_MOVE_V] else 0
            if s_conf[s, j] != 0 and kind[j] == 0:
                kind[j] = 4
        # the alerts per channel, then the implausible readings out
        for j in range(k):
            kj = kind[j]
            v = cells[i, j]
            # a channel idle and empty without its raise condition stays so: skip the step
            if kj >= 2 or cell_ch[s, j, 1] != 0 or cell_ch[s, j, 0] != 0 or cell_ch[s, j, 3] != 0:
                ev = sdk.debounce_step(
                    cell_ch[s, j],
                    dt,
                    kj >= 2,
                    kj == 0,
                    False,
                    0,
                    raise_ms,
                    clear_ms,
                    raise_n,
                    clear_n,
                )
                if ev != sdk.NONE:
                    w = sdk.emit(out, w, i, 0, 1 if ev == sdk.RAISE else 0, j, v, 0.0, kj, -1)
            if kj == 1 or inv_ch[s, j, 1] != 0 or inv_ch[s, j, 0] != 0 or inv_ch[s, j, 3] != 0:
                ev = sdk.debounce_step(
                    inv_ch[s, j],
                    dt,
                    kj == 1,
                    kj != 1,
                    False,
                    0,
                    int(P[s, P_INVALID_RAISE_MS]),
                    clear_ms,
                    raise_n,
                    clear_n,
                )
                if ev != sdk.NONE:
                    w = sdk.emit(out, w, i, 0, 1 if ev == sdk.RAISE else 0, j, v, 0.0, kj, -1)
            if kj >= 2:
                cells[i, j] = np.nan
        # the pack voltage against the sum of the plausible cells
        volt = voltage[i]
        complete = np.isfinite(volt)
        for j in range(k):
            if kind[j] == 0:
                buf[j] = cells[i, j]
            else:
                buf[j] = 0.0
                complete = False
        total = 0.0 + _pairwise_sum(buf, 0, k)
        tol = P[s, P_SUM_TOL]
        off = complete and abs(total - volt) > tol * volt
        ev = sdk.debounce_step(
            pack_ch[s],
            dt,
            off,
            complete and not off,
            False,
            0,
            raise_ms,
            clear_ms,
            raise_n,
            clear_n,
        )
        if ev != sdk.NONE:
            w = sdk.emit(out, w, i, 0, 1 if ev == sdk.RAISE else 0, -1, volt, total, tol, -1)
    return slot.size, w


# -- the stage ------------------------------------------------------------------------------
class Plausibility(sdk.KernelModel):
    """The plausibility stage as a kernel over blocks of many batteries (see the module doc).

    One instance per (chemistry limits, capacity): its `param_row` is the slot's row of the
    parameter matrix. `run` masks `blk.cells` in place; `run_cells` masks the matrix given.
    """

    name = MODEL
    manifest = _manifest()
    state_spec = manifest.state or StateSpec(fields={})

    def __init__(self, limits: PlausibilityLimits, capacity_ah: float) -> None:
        self.limits = limits
        self.capacity_ah = float(capacity_ah)
        self.params = {**asdict(limits), "capacity_ah": self.capacity_ah}

    @classmethod
    def for_spec(cls, spec: BatterySpec) -> Plausibility:
        """The instance serving batteries of `spec` (its chemistry's limits, its capacity)."""
        return cached_stage(limits_for(spec.chemistry.name), float(spec.capacity_ah))

    def param_row(self) -> FloatArray:
        lim = self.limits
        row = np.empty(PARAMS)
        row[P_MIN_V] = lim.plausible_min_v
        row[P_MAX_V] = lim.plausible_max_v
        row[P_WIRE_LOW_V] = lim.open_wire_low_v
        row[P_WIRE_RATIO] = lim.open_wire_high_ratio
        row[P_STUCK_SAMPLES] = lim.stuck_samples
        row[P_STUCK_C_RATE] = lim.stuck_c_rate
        row[P_CAPACITY_AH] = self.capacity_ah
        row[P_STUCK_MOVE_V] = lim.stuck_min_move_v
        row[P_SUM_TOL] = lim.sum_tolerance
        row[P_RAISE_MS] = lim.raise_ms
        row[P_RAISE_N] = lim.raise_samples
        row[P_CLEAR_MS] = lim.clear_ms
        row[P_CLEAR_N] = lim.clear_samples
        row[P_INVALID_RAISE_MS] = lim.invalid_raise_ms
        return row

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        return 2 * n_cells + 1

    def run(
        self, blk: Block, params: FloatArray, state: StateArrays, out: FloatArray, start: int
    ) -> tuple[int, int]:
        """Records start.. of `blk`; masks the implausible readings in `blk.cells` in place."""
        return self.run_cells(blk, blk.cells, params, state, out, start)

    def run_cells(
        self,
        blk: Block,
        cells: FloatArray,
        params: FloatArray,
        state: StateArrays,
        out: FloatArray,
        start: int,
    ) -> tuple[int, int]:
        """Records start.. of `blk`, judging and masking the readings of `cells` (a writable
        C-contiguous float64 matrix shaped like `blk.cells`; it may be `blk.cells`)."""
        state.ensure(state.capacity, cells.shape[1])
        res = _loop(
            blk.slot,
            blk.dt_ms,
            blk.gap,
            blk.current,
            blk.voltage,
            cells,
            blk.n_cells,
            params,
            state["stuck_value"],
            state["stuck_len"],
            state["stuck_start"],
            state["stuck_conf"],
            state["cell_ch"],
            state["invalid_ch"],
            state["pack_ch"],
            out,
            start,
        )
        return int(res[0]), int(res[1])

    def apply(
        self, blk: Block, params: FloatArray, state: StateArrays
    ) -> tuple[Block, FloatArray, int]:
        """The whole block: (the block with implausible readings NaN, the emitted rows, how
        many readings were removed). `blk` is left untouched."""
        cells = np.array(blk.cells, dtype=np.float64, order="C", copy=True)
        masked = blk.with_cells(cells)
        rows = run_kernel(self, masked, params, state)
        removed = int(np.count_nonzero(np.isnan(cells)) - np.count_nonzero(np.isnan(blk.cells)))
        return (masked if removed else blk), rows, removed

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        # the base class' block may share the chunk's cells: the stage masks its own copy
        return super().process(replace(chunk, cells=chunk.cells.copy()), state)

    def migrate(self, state: State) -> State:
        """The pre-kernel dict (``{"channels": {key: [6 ints]}, "stuck": [[value, length,
        start median, confirmed]] | None}``) as state arrays: counters and runs carried."""
        if "version" in state or not set(state) <= {"channels", "stuck"}:
            return super().migrate(state)
        channels: Mapping[str, Any] = state.get("channels") or {}
        runs: list[list[Any]] = list(state.get("stuck") or [])
        cols = [int(key.split(":")[1]) for key in channels if ":" in key]
        k = max([len(runs), *(c + 1 for c in cols)])
        arrays = StateArrays(self.state_spec, 1, k)
        for j, run in enumerate(runs):
            r = [*run, 0][:4]
            arrays["stuck_value"][0, j] = math.nan if r[0] is None else float(r[0])
            arrays["stuck_len"][0, j] = int(r[1])
            arrays["stuck_start"][0, j] = math.nan if r[2] is None else float(r[2])
            arrays["stuck_conf"][0, j] = int(r[3])
        for key, st in channels.items():
            vals = [int(x) for x in list(st)[:6]]
            vals += [0] * (sdk.CHANNEL - len(vals))
            if key == PACK_KEY:
                arrays["pack_ch"][0] = vals
                continue
            prefix, _, col = key.partition(":")
            field = {"cell": "cell_ch", "invalid": "invalid_ch"}.get(prefix)
            if field is not None and col.isdigit():
                arrays[field][0, int(col)] = vals
        return arrays.to_dict(0, k, 0)

    def outputs(self, rows: FloatArray, ts: npt.NDArray[np.int64]) -> list[Output]:
        """Emitted rows as `sensor_fault` alerts (the wording from the row alone)."""
        res: list[Output] = []
        for r in rows.tolist():
            raised = r[STATUS] == 1
            cell = int(r[CELL])
            t = int(ts[int(r[ROW])])
            value, aux = r[VALUE], r[AUX]
            if cell < 0:
                msg = (
                    f"pack voltage {value:.2f} V and the sum of the cells {aux:.2f} V disagree "
                    f"by more than {r[CONF]:.0%}: one of them is mismeasured"
                    if raised
                    else f"pack voltage {value:.2f} V agrees with the sum of the cells again"
                )
                res.append(_alert(t, None, raised, value, aux, msg))
                continue
            kind = int(r[CONF])
            what = KINDS[kind - 1] if kind else "plausible"
            reading = "no value" if value != value else f"{value:.3f} V"
            msg = (
                f"cell #{cell + 1} (index {cell}): sensor fault ({what}), reading {reading}; the "
                "channel is left out of SOC, imbalance, energy and voltage alerts while it lasts"
                if raised
                else f"cell #{cell + 1} (index {cell}): reading plausible again ({reading})"
            )
            res.append(_alert(t, cell, raised, value, 0.0, msg))
        return res


def _alert(
    ts: int, cell: int | None, raised: bool, value: float, threshold: float, message: str
) -> Alert:
    return Alert(
        ts,
        MODEL,
        CODE,
        "warning",
        "raised" if raised else "cleared",
        cell,
        value if value == value else -1.0,
        threshold,
        "V",
        message,
    )


@cache
def cached_stage(limits: PlausibilityLimits, capacity_ah: float) -> Plausibility:
    """One stage instance per (limits, capacity)."""
    return Plausibility(limits, capacity_ah)


# -- the one-battery API ---------------------------------------------------------------------
def initial_state() -> dict[str, Any]:
    """The state of a battery never seen (the same for every chemistry and capacity)."""
    return cached_stage(limits_for("NMC"), 1.0).initial_state()


def check(
    chunk: Chunk, state: dict[str, Any], lim: PlausibilityLimits, capacity_ah: float
) -> tuple[Chunk, list[Alert], dict[str, Any], int]:
    """The chunk with implausible cell readings removed (NaN), the sensor_fault alerts, the
    new state (input untouched) and how many readings were removed."""
    stage = cached_stage(lim, float(capacity_ah))
    current = dict(stage.checked_state(state))
    n, k = chunk.cells.shape
    if n == 0 or k == 0:  # nothing to judge: the state as it was (its runs, counters)
        return chunk, [], current, 0
    blk = sdk.single_battery_block(
        chunk.ts,
        chunk.dt_ms,
        chunk.gap,
        chunk.current,
        chunk.voltage,
        chunk.cells,
        np.empty((n, 0)),
        chunk.soc,
        chunk.soh,
    )
    arrays = StateArrays(stage.state_spec, 1, k)
    arrays.from_dict(0, current)
    masked, rows, removed = stage.apply(blk, stage.param_row()[None, :], arrays)
    alerts = [a for a in stage.outputs(rows, blk.ts) if isinstance(a, Alert)]
    out = replace(chunk, cells=masked.cells) if removed else chunk
    return out, alerts, arrays.to_dict(0, k, 0), removed
