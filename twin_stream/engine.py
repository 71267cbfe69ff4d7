"""The event-time engine: per-battery ordering, duplicates, lateness, gaps, chunking, state.

One engine serves both paths: `twin_stream.replay` feeds it rows from files, `agents` from
Kafka. For each battery it keeps an explicit, JSON-serialisable, versioned state:

- the frontier `last_ts` (the last sample handed to the models) and a reorder buffer;
- the locked cell and sensor counts;
- each enabled model's state, and the battery's counters.

Ordering rule, decided record by record in arrival order so that it does not depend on how
arrivals are batched: with allowed lateness L and `max_ts` the newest event time seen, a
record is released to the models once its ts <= max_ts - L. A record whose ts equals the
frontier or a buffered ts is a duplicate (dropped, counted); one older than the frontier is
late (dead letter). Released samples form one chunk per call; models are chunking-invariant,
so outputs do not depend on chunk boundaries either. With L = 0 (the default) nothing waits.

Event time is bounded by the wall clock: a record more than `engine.max_clock_skew_s` ahead
of this machine's clock (an RTC glitch, a year-2999 timestamp) is a `future` dead letter and
never becomes the frontier, which would make every real record after it late. A stored
frontier that is that far ahead (written before the bound existed) is reset on load, logged
and counted (`frontier_resets`); `twin-stream state` inspects and repairs states by hand.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin_stream import plausibility
from twin_stream.chunk import Chunk, build_chunk, next_intervals
from twin_stream.codec import DeadLetter, Row, dead_letter, iso_ms, output_record
from twin_stream.sdk.contract import ContractError, Model
from twin_stream.outputs import Alert, Estimate, Output
from twin_stream.registry import discover_models
from twin_stream.settings import Settings, SettingsError
from twin_stream.spec import BatterySpec

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
ENGINE_MODEL = "engine"

State = dict[str, Any]


@dataclass
class Metrics:
    """Cumulative counters of one engine; nothing is dropped without being counted here."""

    records: int = 0  # valid rows handed to the engine
    processed: int = 0  # rows handed to the models
    duplicates: int = 0
    late: int = 0
    future: int = 0  # records ahead of the wall clock by more than max_clock_skew_s
    degraded: int = 0  # records used without some invalid channels or optional fields
    implausible: int = 0  # cell readings the plausibility layer kept from the models
    frontier_resets: int = 0  # stored frontiers found ahead of the clock and reset
    invalid: int = 0  # dead letters from decoding (counted by the caller via count_invalid)
    gaps: int = 0
    alerts: int = 0
    estimates: int = 0
    forced_releases: int = 0  # buffered rows released early because the buffer was full
    errors: int = 0  # rows dead-lettered because a model raised (a bug; logged with traceback)
    batteries: set[str] = field(default_factory=set)

    @property
    def dead_letters(self) -> int:
        return self.invalid + self.late + self.future + self.errors

    def as_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "processed": self.processed,
            "batteries": len(self.batteries),
            "alerts": self.alerts,
            "estimates": self.estimates,
            "dead_letters": self.dead_letters,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "late": self.late,
            "future": self.future,
            "degraded": self.degraded,
            "implausible": self.implausible,
            "frontier_resets": self.frontier_resets,
            "gaps": self.gaps,
            "forced_releases": self.forced_releases,
            "errors": self.errors,
        }


@dataclass
class Result:
    """What one call produced: wire records out, dead letters, and the new state."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    state: State = field(default_factory=dict)


class Engine:
    """Orders, chunks and runs the enabled models for any number of batteries."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        registry = discover_models()
        unknown = [m for m in settings.models.enabled if m not in registry]
        if unknown:
            raise SettingsError(
                f"models.enabled: unknown model {unknown[0]!r} (known: {', '.join(registry)})"
            )
        stray = [m for m in settings.models.params if m not in registry]
        if stray:
            raise SettingsError(f"models.params.{stray[0]}: no such model")
        self.settings = settings
        self.model_classes = [registry[m] for m in settings.models.enabled]
        try:
            self.params = {
                cls.name: cls.manifest.validate_params(
                    settings.models.params.get(cls.name, {}), f"models.params.{cls.name}"
                )
                for cls in self.model_classes
            }
            self._battery_params = self._per_battery_params(settings)
        except ContractError as exc:
            raise SettingsError(str(exc)) from None
        self.lateness_ms = round(settings.engine.allowed_lateness_s * 1000)
        self.max_gap_ms = round(settings.engine.max_gap_s * 1000)
        self.gap_factor = settings.engine.gap_factor
        self.max_buffered = settings.engine.max_buffered_per_battery
        self.plausibility = settings.engine.plausibility_checks
        self.skew_ms = round(settings.engine.max_clock_skew_s * 1000)
        self.clock = clock
        self.metrics = Metrics()
        self._specs: dict[str, BatterySpec] = {}
        self._signs: dict[str, int] = {}
        self._models: dict[str, list[Model]] = {}

    # -- per battery configuration -------------------------------------------------------
    def _per_battery_params(self, settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
        """`fleet.batteries.<id>.models.<model>` over `models.params`, checked now (a typo
        in one battery's parameters fails at start, not when that battery first reports)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        enabled = {cls.name: cls for cls in self.model_classes}
        for bid, ov in settings.fleet.batteries.items():
            if not ov.models:
                continue
            params = dict(self.params)
            for name, raw in ov.models.items():
                where = f"fleet.batteries.{bid}.models.{name}"
                cls = enabled.get(name)
                if cls is None:
                    raise ContractError(f"{where}: no such model enabled")
                merged = {**settings.models.params.get(name, {}), **raw}
                params[name] = cls.manifest.validate_params(merged, where)
            out[bid] = params
        return out

    def _models_for(self, battery_id: str) -> tuple[list[Model], int]:
        spec = self._specs.get(battery_id)
        if spec is None:
            spec = self._specs[battery_id] = self.settings.spec_for(battery_id)
            self._signs[battery_id] = self.settings.current_sign_for(battery_id)
        models = self._models.get(spec.key)  # the key covers per-battery model parameters
        if models is None:
            params = self._battery_params.get(battery_id, self.params)
            models = [cls(params[cls.name], spec) for cls in self.model_classes]
            self._models[spec.key] = models
        return models, self._signs[battery_id]

    def new_state(self, battery_id: str) -> State:
        models, _ = self._models_for(battery_id)
        return {
            "schema": STATE_SCHEMA,
            "version": 0,
            "battery_id": battery_id,
            "last_ts": None,
            "max_ts": None,
            "buffer": [],
            "n_cells": None,
            "n_temps": None,
            "intervals": [],
            "models": {m.name: m.initial_state() for m in models},
            "counters": {"records": 0, "duplicates": 0, "late": 0, "future": 0, "gaps": 0},
        }

    def _check_state(self, battery_id: str, state: State | None) -> State:
        if not state:  # None, or {} left by a call that failed before the battery had one
            return self.new_state(battery_id)
        if state.get("schema") != STATE_SCHEMA:
            raise ValueError(
                f"state of {battery_id} has schema {state.get('schema')!r}; "
                f"this engine reads schema {STATE_SCHEMA}"
            )
        st = dict(state)
        models = dict(st["models"])
        for m in self._models_for(battery_id)[0]:
            if m.name not in models:  # a model enabled after the battery was first seen
                models[m.name] = m.initial_state()
        st["models"] = models
        st["counters"] = dict(st["counters"])
        limit = self._future_limit()
        if any(st.get(k) is not None and st[k] > limit for k in ("last_ts", "max_ts")):
            log.warning(
                "%s: stored frontier %s is ahead of the clock by more than %g s: reset "
                "(a record from the future was accepted before event time was bounded)",
                battery_id,
                iso_ms(max(t for t in (st["last_ts"], st["max_ts"]) if t is not None)),
                self.skew_ms / 1000,
            )
            st["last_ts"] = st["max_ts"] = None
            st["buffer"] = [r for r in st["buffer"] if r[0] <= limit]
            self.metrics.frontier_resets += 1
        return st

    def _future_limit(self) -> int:
        return int(self.clock() * 1000) + self.skew_ms

    # -- the work ------------------------------------------------------------------------
    def process(self, battery_id: str, rows: Sequence[Row], state: State | None) -> Result:
        """Admit `rows` (all of `battery_id`, in arrival order) and run the models on what is
        released. Returns outputs, dead letters and the new state (input state untouched)."""
        res = Result()
        try:
            st = self._check_state(battery_id, state)  # builds the models: a bug may be here
            prev_ts = st["last_ts"]
            released = self._admit(st, rows, res.dead)
            self._run(battery_id, st, released, prev_ts, res)
        except Exception as exc:  # a model bug must not stop the fleet nor lose the records
            log.exception("internal error processing %s", battery_id)
            self.metrics.errors += len(rows)
            why = f"internal error processing {battery_id}: {type(exc).__name__}: {exc}"
            return Result(
                dead=[dead_letter(why, r.raw, r.source) for r in rows],
                state=self._unchanged(battery_id, state),
            )
        res.state = st
        return res

    def _unchanged(self, battery_id: str, state: State | None) -> State:
        """The state as it was, for a call that failed (a fresh one if it cannot be read)."""
        try:
            return self._check_state(battery_id, state)
        except Exception:
            return dict(state) if state is not None else {}

    def flush(self, battery_id: str, state: State) -> Result:
        """Release everything buffered (end of a replay, or a battery gone silent)."""
        st = self._check_state(battery_id, state)
        res = Result()
        buf = st["buffer"]
        released = [_row_from_json(battery_id, r) for r in sorted(buf, key=lambda r: r[0])]
        st["buffer"] = []
        prev_ts = st["last_ts"]
        if released:
            st["last_ts"] = released[-1].ts
        self._run(battery_id, st, released, prev_ts, res)
        res.state = st
        return res

    def _admit(self, st: State, rows: Sequence[Row], dead: list[DeadLetter]) -> list[Row]:
        m = self.metrics
        c = st["counters"]
        frontier: int | None = st["last_ts"]
        max_ts: int | None = st["max_ts"]
        n_cells: int | None = st["n_cells"]
        n_temps: int | None = st["n_temps"]
        lateness = self.lateness_ms
        released: list[Row] = []
        heap: list[tuple[int, int, Row]] = []
        pending: set[int] = set()
        if st["buffer"]:
            bid = st["battery_id"]
            for i, r in enumerate(st["buffer"]):
                heap.append((r[0], -1 - i, _row_from_json(bid, r)))
                pending.add(r[0])
            heapq.heapify(heap)
        n_dup = n_late = n_future = 0
        future_limit = self._future_limit()
        for k, row in enumerate(rows):
            ts = row.ts
            if ts > future_limit:
                n_future += 1
                dead.append(
                    dead_letter(
                        f"future: ts {iso_ms(ts)} is "
                        f"{(ts - future_limit) / 1000 + self.skew_ms / 1000:.0f} s ahead of "
                        f"this machine's clock (engine.max_clock_skew_s = "
                        f"{self.skew_ms / 1000:g}); check the device's clock",
                        row.raw,
                        row.source,
                    )
                )
                continue
            if frontier is not None and ts <= frontier:
                if ts == frontier:
                    n_dup += 1
                else:
                    n_late += 1
                    dead.append(
                        dead_letter(
                            f"late: ts {iso_ms(ts)} is before the last processed sample "
                            f"{iso_ms(frontier)} of {row.battery_id} by more than the allowed "
                            f"lateness of {lateness / 1000:g} s",
                            row.raw,
                            row.source,
                        )
                    )
                continue
            if ts in pending:
                n_dup += 1
                continue
            if row.cells is not None:
                if n_cells is None:
                    n_cells = len(row.cells)
                elif len(row.cells) != n_cells:
                    m.invalid += 1
                    dead.append(
                        dead_letter(
                            f"cell_voltages: {len(row.cells)} values, but {row.battery_id} has "
                            f"{n_cells} cells",
                            row.raw,
                            row.source,
                        )
                    )
                    continue
            if row.temps is not None:
                if n_temps is None:
                    n_temps = len(row.temps)
                elif len(row.temps) != n_temps:
                    m.invalid += 1
                    dead.append(
                        dead_letter(
                            f"temperatures: {len(row.temps)} values, but {row.battery_id} has "
                            f"{n_temps} sensors",
                            row.raw,
                            row.source,
                        )
                    )
                    continue
            if max_ts is None or ts > max_ts:
                max_ts = ts
            if lateness == 0 and not heap:
                released.append(row)
                frontier = ts
                continue
            heapq.heappush(heap, (ts, k, row))
            pending.add(ts)
            watermark = max_ts - lateness
            while heap and (heap[0][0] <= watermark or len(heap) > self.max_buffered):
                if heap[0][0] > watermark:
                    m.forced_releases += 1
                t0, _, r0 = heapq.heappop(heap)
                pending.discard(t0)
                released.append(r0)
                frontier = t0
        st["last_ts"] = frontier
        st["max_ts"] = max_ts
        st["n_cells"] = n_cells
        st["n_temps"] = n_temps
        st["buffer"] = [_row_to_json(r) for _, _, r in sorted(heap)]
        c["records"] += len(rows)
        c["duplicates"] += n_dup
        c["late"] += n_late
        c["future"] = c.get("future", 0) + n_future
        m.records += len(rows)
        m.degraded += sum(1 for r in rows if r.degraded)
        m.duplicates += n_dup
        m.late += n_late
        m.future += n_future
        if rows:
            m.batteries.add(rows[0].battery_id)
        return released

    def _run(
        self, battery_id: str, st: State, released: list[Row], prev_ts: int | None, res: Result
    ) -> None:
        if not released:
            return
        models, sign = self._models_for(battery_id)
        # the battery's last intervals (ms): its typical sampling interval judges its gaps
        intervals = st.get("intervals", [])
        chunk = _to_chunk(
            battery_id,
            released,
            prev_ts,
            self.max_gap_ms,
            sign,
            st["n_cells"],
            st["n_temps"],
            self.gap_factor,
            intervals,
        )
        st["intervals"] = next_intervals(intervals, chunk.dt_ms, first=prev_ts is None)
        outputs: list[tuple[int, int, Output]] = []
        gap_rows = np.flatnonzero(chunk.gap & (chunk.dt_ms > 0))
        for i in gap_rows.tolist():
            outputs.append(
                (
                    int(chunk.ts[i]),
                    -1,
                    Estimate(
                        int(chunk.ts[i]),
                        ENGINE_MODEL,
                        "data_gap",
                        chunk.dt_ms[i] / 1000.0,
                        "s",
                        None,
                    ),
                )
            )
        st["counters"]["gaps"] += len(gap_rows)
        self.metrics.gaps += len(gap_rows)
        if self.plausibility:  # sensor facts out before the models see battery facts
            spec = self._specs[battery_id]
            chunk, faults, st["plausibility"], removed = plausibility.check(
                chunk,
                st.get("plausibility") or plausibility.initial_state(),
                plausibility.limits_for(spec.chemistry.name),
                spec.capacity_ah,
            )
            outputs.extend((a.ts, -1, a) for a in faults)
            self.metrics.implausible += removed
        model_states = st["models"]
        for idx, model in enumerate(models):
            outs, model_states[model.name] = model.process(chunk, model_states[model.name])
            outputs.extend((o.ts, idx, o) for o in outs)
        outputs.sort(key=lambda t: (t[0], t[1]))  # canonical order, independent of chunking
        for _, _, out in outputs:
            rec = output_record(battery_id, out)
            if isinstance(out, Alert):
                res.alerts.append(rec)
            else:
                res.estimates.append(rec)
        st["version"] += 1
        self.metrics.processed += len(chunk)
        self.metrics.alerts += len(res.alerts)
        self.metrics.estimates += len(res.estimates)

    def count_invalid(self, dead: Sequence[DeadLetter]) -> None:
        """Count the decoder's dead letters (a summary dead letter stands for many)."""
        self.metrics.invalid += sum(d.records for d in dead)


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _listed(x: Any) -> list[float] | None:
    return x.tolist() if isinstance(x, np.ndarray) else x


def _row_to_json(r: Row) -> list[Any]:
    return [
        r.ts,
        r.current,
        _nan_to_none(r.voltage),
        _listed(r.cells),
        _listed(r.temps),
        _nan_to_none(r.soc),
        _nan_to_none(r.soh),
        r.source,
    ]


def _row_from_json(battery_id: str, j: Sequence[Any]) -> Row:
    def f(x: Any) -> float:
        return math.nan if x is None else float(x)

    return Row(
        battery_id, int(j[0]), float(j[1]), f(j[2]), j[3], j[4], f(j[5]), f(j[6]), None, j[7]
    )


def _matrix(values: Iterable[Any], n: int, width: int | None) -> np.ndarray:
    if not width:
        return np.empty((n, 0))
    vals = list(values)
    if all(v is not None for v in vals):
        if type(vals[0]) is np.ndarray:  # rows from the fast decoder
            return np.concatenate(vals).reshape(n, width)
        return np.array(vals, dtype=np.float64).reshape(n, width)
    out = np.full((n, width), np.nan)
    for i, v in enumerate(vals):
        if v is not None:
            out[i] = v
    return out


def _to_chunk(
    battery_id: str,
    rows: list[Row],
    prev_ts: int | None,
    max_gap_ms: int,
    sign: int,
    n_cells: int | None,
    n_temps: int | None,
    gap_factor: float = 0.0,
    intervals: Sequence[int] = (),
) -> Chunk:
    n = len(rows)
    cols = list(zip(*rows, strict=True))
    current = np.array(cols[2], dtype=np.float64)
    if sign != 1:
        current = current * sign
    return build_chunk(
        battery_id,
        np.array(cols[1], dtype=np.int64),
        current,
        prev_ts=prev_ts,
        max_gap_ms=max_gap_ms,
        gap_factor=gap_factor,
        intervals=intervals,
        voltage=np.array(cols[3], dtype=np.float64),
        cells=_matrix(cols[4], n, n_cells),
        temps=_matrix(cols[5], n, n_temps),
        soc=np.array(cols[6], dtype=np.float64),
        soh=np.array(cols[7], dtype=np.float64),
    )
