"""The event-time engine: admission, gaps, plausibility and the models, for blocks of records
of many batteries at once.

One engine serves both paths: `twin_stream.replay` feeds it records from files, `agents` from
Kafka. Each battery it serves gets a *slot*; everything the engine and the models keep about
a battery is a row of arrays at that slot (`twin_stream.sdk.state`), so a block of any number
of batteries costs one admission pass, one gap pass and one compiled loop per model
(`twin_stream.engine.stages`), not one Python call per battery.

Ordering, duplicates, lateness, future timestamps, gaps: `twin_stream.engine.admit`. With
allowed lateness L = 0 (the default) nothing waits; with L > 0 a per-battery reorder buffer
holds records until ts <= max_ts - L. Models are chunking-invariant, so outputs do not depend
on how records are cut into blocks nor on how batteries interleave.

A battery's state leaves the engine as a JSON-able dict (`dump_state`: the frontier, locked
counts, recent intervals, reorder buffer, counters and each model's state) and comes back with
`load_state` (the agents' table, replay's state file). A stored frontier that is ahead of the
clock by more than `engine.max_clock_skew_s` (written before event time was bounded) is reset
on load, logged and counted (`frontier_resets`); `twin-stream state` repairs states by hand.

A model that raises (a bug) must not stop the fleet nor lose records: the block's states are
restored, every battery is run alone, and the records of the battery that fails again become
dead letters (`errors`) while its state stays as it was.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from twin_stream.battery.spec import BatterySpec
from twin_stream.codec import DeadLetter, Row, dead_letter, iso_ms, output_record
from twin_stream.codec.records import Records
from twin_stream.config.settings import Settings, SettingsError
from twin_stream.engine import admit as adm
from twin_stream.engine import blob
from twin_stream.engine.metrics import BlockResult, Metrics, Result
from twin_stream.engine.plausibility import Plausibility
from twin_stream.engine.slots import COUNTERS, SlotArrays
from twin_stream.engine.stages import ChunkStage, KernelStage, Stage, segments, stage_for
from twin_stream.sdk.block import Block
from twin_stream.sdk.contract import ContractError, Model
from twin_stream.sdk.outputs import Alert, Estimate, Output
from twin_stream.sdk.registry import discover_models
from twin_stream.sdk.state import StateArrays

__all__ = ["ENGINE_MODEL", "STATE_SCHEMA", "BlockResult", "Engine", "Metrics", "Result"]

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
ENGINE_MODEL = "engine"
_GAP_STAGE = -2  # canonical order within a ts: data gaps, sensor faults, then the models
_PLAUS_STAGE = -1

State = dict[str, Any]
IntArray = npt.NDArray[np.int64]


class Engine:
    """Orders, cuts and runs the enabled models for any number of batteries."""

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
        e = settings.engine
        self.lateness_ms = round(e.allowed_lateness_s * 1000)
        self.max_gap_ms = round(e.max_gap_s * 1000)
        self.gap_factor = float(e.gap_factor)
        self.reorder = adm.Reorder(self.lateness_ms, e.max_buffered_per_battery)
        self.plausibility = e.plausibility_checks
        self.skew_ms = round(e.max_clock_skew_s * 1000)
        self.clock = clock
        self.metrics = Metrics()
        self.stages: list[Stage] = [stage_for(cls) for cls in self.model_classes]
        self._instances: dict[str, list[Model]] = {}
        # per slot
        self.ids: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.specs: list[BatterySpec] = []
        self.a = SlotArrays()
        self.buffers: list[list[list[Any]]] = []  # reorder buffers (allowed lateness > 0)
        self.plaus = KernelStage(Plausibility) if self.plausibility else None
        self._rank = np.zeros(0, dtype=np.int64)  # per slot: its place in the current block

    # -- slots -----------------------------------------------------------------------------
    def slot(self, battery_id: str) -> int:
        """The battery's slot (a new one, as a battery never seen, on first use)."""
        s = self.slot_of.get(battery_id)
        if s is not None:
            return s
        s = len(self.ids)
        if s >= self.a.size:
            self.a.grow(2 * self.a.size)
        spec = self.settings.spec_for(battery_id)
        self.ids.append(battery_id)
        self.slot_of[battery_id] = s
        self.specs.append(spec)
        self.buffers.append([])
        if self.plaus is not None:
            self.plaus.bind(s, Plausibility.for_spec(spec))
            self.plaus.ensure(s + 1, 0, 0)
        self.a.sign[s] = self.settings.current_sign_for(battery_id)
        models = self._models_for(battery_id, spec)
        for stage, model in zip(self.stages, models, strict=True):
            stage.bind(s, model)
            stage.ensure(s + 1, 0, 0)
        return s

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

    def _models_for(self, battery_id: str, spec: BatterySpec) -> list[Model]:
        models = self._instances.get(spec.key)  # the key covers per-battery model parameters
        if models is None:
            params = self._battery_params.get(battery_id, self.params)
            models = [cls(params[cls.name], spec) for cls in self.model_classes]
            self._instances[spec.key] = models
        return models

    # -- state in and out ------------------------------------------------------------------
    def new_state(self, battery_id: str) -> State:
        models = self._models_for(battery_id, self.settings.spec_for(battery_id))
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
            "counters": dict.fromkeys(COUNTERS, 0),
        }

    def load_state(self, battery_id: str, state: State | None) -> int:
        """Put a stored state (None or {}: a battery never seen) into the battery's slot."""
        s = self.slot(battery_id)
        for stage in self.stages:
            stage.reset(s)
        self.buffers[s] = []
        if self.plaus is not None:
            self.plaus.reset(s)
        if not state:
            self.a.reset(s)
            return s
        if state.get("schema") != STATE_SCHEMA:
            raise ValueError(
                f"state of {battery_id} has schema {state.get('schema')!r}; "
                f"this engine reads schema {STATE_SCHEMA}"
            )
        last, mx = state.get("last_ts"), state.get("max_ts")
        buffer = list(state.get("buffer") or [])
        limit = self._future_limit()
        if any(t is not None and t > limit for t in (last, mx)):
            log.warning(
                "%s: stored frontier %s is ahead of the clock by more than %g s: reset "
                "(a record from the future was accepted before event time was bounded)",
                battery_id,
                iso_ms(max(t for t in (last, mx) if t is not None)),
                self.skew_ms / 1000,
            )
            last = mx = None
            buffer = [r for r in buffer if r[0] <= limit]
            self.metrics.frontier_resets += 1
        self.a.last_ts[s] = adm.NO_TS if last is None else last
        self.a.max_ts[s] = adm.NO_TS if mx is None else mx
        nc, nt = state.get("n_cells"), state.get("n_temps")
        self.a.lock_cells[s] = -1 if nc is None else nc
        self.a.lock_temps[s] = -1 if nt is None else nt
        iv = [int(x) for x in state.get("intervals", [])][-adm.WINDOW :]
        self.a.hcount[s] = len(iv)
        if iv:
            self.a.history[s, adm.WINDOW - len(iv) :] = iv
        counters = state.get("counters", {})
        self.a.counters[s] = [int(counters.get(k, 0)) for k in COUNTERS]
        self.a.versions[s] = int(state.get("version", 0))
        self.buffers[s] = buffer
        models = state.get("models", {})
        cells, temps = max(0, nc or 0), max(0, nt or 0)
        if self.plaus is not None and state.get("plausibility"):
            self.plaus.ensure(s + 1, cells, temps)
            self.plaus.load(s, state["plausibility"])
        for stage in self.stages:
            stage.ensure(s + 1, cells, temps)
            if stage.name in models:
                stage.load(s, models[stage.name])
        return s

    def resident(self, battery_id: str, stored: State | None) -> bool:
        """Whether the battery's slot already holds `stored` (the same version of its state
        as this engine last loaded or produced), so that loading it again can be skipped."""
        s = self.slot_of.get(battery_id)
        if s is None:
            return False
        version = 0 if not stored else stored.get("version")
        return bool(version == self.a.versions[s])

    # -- compact state, for the agents' table ---------------------------------------------
    def _kernel_stages(self) -> list[KernelStage]:
        out = [self.plaus] if self.plaus is not None else []
        return out + [st for st in self.stages if isinstance(st, KernelStage)]

    def encode_states(
        self, battery_ids: Sequence[str], extra: Sequence[dict[str, Any]] | None = None
    ) -> list[bytes]:
        """The batteries' states as compact blobs (`twin_stream.engine.blob`): every kernel
        stage's rows gathered for all of them at once and packed by one compiled pass;
        `extra[i]` goes into battery i's header (the agents' `seen`, `stale`)."""
        slots = np.array([self.slot_of[b] for b in battery_ids], dtype=np.int64)
        stages = self._kernel_stages()
        sizes = [st.state.row_bytes(st.state.widths.cells, st.state.widths.temps) for st in stages]
        width = sum(sizes)
        body = np.zeros((slots.size, blob.padded(width)), np.uint8)
        pos = 0
        for st in stages:  # every stage's rows of these slots, gathered into the body at once
            pos = st.state.gather_into(slots, body, pos)
        described = [
            [
                st.name,
                st.state.spec.version,
                st.state.widths.cells,
                st.state.widths.temps,
                n,
                st.state.layout(),
            ]
            for st, n in zip(stages, sizes, strict=True)
        ]
        packed = blob.pack(body)
        stages_json = orjson.dumps({"stages": described, "body": width})  # shared by all
        out = []
        for k, bid in enumerate(battery_ids):
            s = int(slots[k])
            h = self._engine_part(bid, s)
            py = {st.name: st.dump(s, 0, 0) for st in self.stages if isinstance(st, ChunkStage)}
            if py:
                h["py"] = py
            if extra is not None:
                h.update(extra[k])
            out.append(blob.encode(h, packed[k], stages_json))
        return out

    def load_blob(self, battery_id: str, data: bytes) -> dict[str, Any]:
        """Load a blob `encode_states` wrote; returns its header. A stage whose state layout
        changed since is read with the layout the blob names and migrated by its model."""
        h, body = blob.split(data)
        s = self.load_state(battery_id, {**h, "models": h.get("py", {})})
        row = blob.unpack(body, int(h["body"]))
        by_name = {st.name: st for st in self._kernel_stages()}
        pos = 0
        for name, version, wc, wt, n, layout in h["stages"]:
            part = row[pos : pos + n]
            pos += n
            stage = by_name.get(name)
            if stage is None:
                continue  # a model no longer enabled
            if version == stage.state.spec.version and layout == stage.state.layout():
                stage.state.scatter(s, part, wc, wt)
                continue
            old = StateArrays.from_layout(layout, version)
            old.scatter(0, part, wc, wt)
            stage.load(s, old.to_dict(0, wc, wt))  # the model's migrate() decides
        return h

    def dump_state(self, battery_id: str) -> State:
        """The battery's state as a JSON-able dict (what `load_state` reads back)."""
        s = self.slot_of.get(battery_id)
        if s is None:
            return self.new_state(battery_id)
        nc, nt = int(self.a.lock_cells[s]), int(self.a.lock_temps[s])
        st = self._engine_part(battery_id, s)
        st["models"] = {g.name: g.dump(s, max(nc, 0), max(nt, 0)) for g in self.stages}
        if self.plaus is not None:
            st["plausibility"] = self.plaus.dump(s, max(nc, 0), max(nt, 0))
        return st

    def _engine_part(self, battery_id: str, s: int) -> State:
        """What the engine itself keeps of a battery (no model state)."""
        nc, nt = int(self.a.lock_cells[s]), int(self.a.lock_temps[s])
        c = int(self.a.hcount[s])
        return {
            "schema": STATE_SCHEMA,
            "version": int(self.a.versions[s]),
            "battery_id": battery_id,
            "last_ts": None if self.a.last_ts[s] == adm.NO_TS else int(self.a.last_ts[s]),
            "max_ts": None if self.a.max_ts[s] == adm.NO_TS else int(self.a.max_ts[s]),
            "buffer": self.buffers[s],
            "n_cells": None if nc < 0 else nc,
            "n_temps": None if nt < 0 else nt,
            "intervals": self.a.history[s, adm.WINDOW - c :].tolist() if c else [],
            "counters": dict(zip(COUNTERS, self.a.counters[s].tolist(), strict=True)),
        }

    def _future_limit(self) -> int:
        return int(self.clock() * 1000) + self.skew_ms

    # -- the work --------------------------------------------------------------------------
    def run(
        self, recs: Records, reload: Callable[[Sequence[str]], None] | None = None
    ) -> BlockResult:
        """Admit a block of records of any batteries (each battery's records in arrival
        order) and run the stages on what is released. States stay in the engine's slots.

        A model that raises (a bug) must not stop the fleet nor lose records: the block's
        states are put back as they were, every battery is run alone, and the records of the
        battery that fails again become dead letters while its state stays as it was. Put
        back from copies taken before the block, or, given `reload`, by calling it with the
        batteries to bring back (the agents reload them from the table: cheaper than copying
        every state of a block of thousands of batteries that nearly never fails)."""
        n = len(recs)
        if n == 0:
            return BlockResult()
        slot_of = self.slot_of
        slot = np.fromiter(
            (slot_of[b] if b in slot_of else self.slot(b) for b in recs.battery_id),
            dtype=np.int64,
            count=n,
        )
        slots = np.unique(slot)
        snap = self._snapshot(slots) if reload is None else None
        metrics = Metrics(**{**vars(self.metrics), "batteries": set(self.metrics.batteries)})

        def put_back(which: IntArray, copies: dict[str, Any] | None) -> None:
            if copies is not None:
                self._restore(which, copies)
            else:
                assert reload is not None
                reload([self.ids[s] for s in which.tolist()])

        try:
            return self._run(recs, slot)
        except Exception:
            log.exception(
                "internal error in a block of %d batteries: retrying each alone", len(slots)
            )
        put_back(slots, snap)
        self.metrics = metrics
        res = BlockResult()
        for s, idx in segments(slot):
            one = np.array([s], dtype=np.int64)
            mine = self._snapshot(one) if reload is None else None
            before = Metrics(**{**vars(self.metrics), "batteries": set(self.metrics.batteries)})
            sub = recs.take(idx)
            try:
                part = self._run(sub, slot[idx])
            except Exception as exc:
                bid = self.ids[s]
                log.exception("internal error processing %s", bid)
                put_back(one, mine)
                self.metrics = before
                self.metrics.errors += len(sub)
                why = f"internal error processing {bid}: {type(exc).__name__}: {exc}"
                res.dead += [
                    (bid, dead_letter(why, r, src))
                    for r, src in zip(sub.raw, sub.source, strict=True)
                ]
                res.touched.append(bid)
                continue
            res.alerts += part.alerts
            res.estimates += part.estimates
            res.dead += part.dead
            res.touched += part.touched
        return res

    def _snapshot(self, slots: IntArray) -> dict[str, Any]:
        snap: dict[str, Any] = {"slots": self.a.snapshot(slots)}
        snap["buffers"] = [list(self.buffers[s]) for s in slots.tolist()]
        snap["plaus"] = self.plaus.snapshot(slots) if self.plaus is not None else None
        snap["stages"] = [stage.snapshot(slots) for stage in self.stages]
        return snap

    def _restore(self, slots: IntArray, snap: dict[str, Any]) -> None:
        self.a.restore(slots, snap["slots"])
        for k, s in enumerate(slots.tolist()):
            self.buffers[s] = snap["buffers"][k]
        if self.plaus is not None:
            self.plaus.restore(slots, snap["plaus"])
        for stage, st in zip(self.stages, snap["stages"], strict=True):
            stage.restore(slots, st)

    def _run(self, recs: Records, slot: IntArray) -> BlockResult:
        res = BlockResult()
        n = len(recs)
        m = self.metrics
        m.records += n
        m.degraded += int(np.count_nonzero(recs.degraded))
        m.batteries.update(recs.battery_id)
        status = np.empty(n, dtype=np.int64)
        dt = np.zeros(n, dtype=np.int64)
        limit = self._future_limit()
        if self.lateness_ms == 0:
            adm.admit(
                slot, recs.ts, recs.n_cells, recs.n_temps, self.a.last_ts, self.a.max_ts,
                self.a.lock_cells, self.a.lock_temps, limit, status, dt,
            )  # fmt: skip
            admitted = np.flatnonzero(status == adm.OK)
            rel = recs
            rel_slot = slot
        else:
            rel, rel_slot, admitted, status, dt = self._reorder(recs, slot, limit)
        self._dead_letters(recs, slot, status, res)
        np.add.at(self.a.counters[:, 0], slot, 1)
        for col, code in ((1, adm.DUPLICATE), (2, adm.LATE), (3, adm.FUTURE)):
            hit = status == code
            if hit.any():
                np.add.at(self.a.counters[:, col], slot[hit], 1)
        m.duplicates += int(np.count_nonzero(status == adm.DUPLICATE))
        m.late += int(np.count_nonzero(status == adm.LATE))
        m.future += int(np.count_nonzero(status == adm.FUTURE))
        touched = list(dict.fromkeys(recs.battery_id))
        res.touched = touched
        if admitted.size:
            blk = self._block(rel, rel_slot, admitted, dt)
            self._stages(blk, res)
        return res

    def _dead_letters(
        self, recs: Records, slot: IntArray, status: IntArray, res: BlockResult
    ) -> None:
        bad = np.flatnonzero((status != adm.OK) & (status != adm.DUPLICATE))
        for i in bad.tolist():
            code = int(status[i])
            bid = recs.battery_id[i]
            ts = int(recs.ts[i])
            if code == adm.FUTURE:
                limit = self._future_limit()
                why = (
                    f"future: ts {iso_ms(ts)} is "
                    f"{(ts - limit) / 1000 + self.skew_ms / 1000:.0f} s ahead of "
                    f"this machine's clock (engine.max_clock_skew_s = "
                    f"{self.skew_ms / 1000:g}); check the device's clock"
                )
            elif code == adm.LATE:
                s = int(slot[i])
                why = (
                    f"late: ts {iso_ms(ts)} is before the last processed sample "
                    f"{iso_ms(int(self.a.last_ts[s]))} of {bid} by more than the allowed "
                    f"lateness of {self.lateness_ms / 1000:g} s"
                )
            elif code == adm.BAD_CELLS:
                self.metrics.invalid += 1
                why = (
                    f"cell_voltages: {int(recs.n_cells[i])} values, but {bid} has "
                    f"{int(self.a.lock_cells[int(slot[i])])} cells"
                )
            else:
                self.metrics.invalid += 1
                why = (
                    f"temperatures: {int(recs.n_temps[i])} values, but {bid} has "
                    f"{int(self.a.lock_temps[int(slot[i])])} sensors"
                )
            res.dead.append((bid, dead_letter(why, recs.raw[i], recs.source[i])))

    def _reorder(
        self, recs: Records, slot: IntArray, limit: int
    ) -> tuple[Records, IntArray, IntArray, IntArray, IntArray]:
        """Allowed lateness > 0: each battery's records through its reorder buffer. Returns
        the records that can be released (this call's, then buffered ones), their slots, the
        released indices into them in release order, the status of this call's records and
        the released records' intervals."""
        n = len(recs)
        status = np.full(n, adm.OK, dtype=np.int64)
        status[recs.ts > limit] = adm.FUTURE
        extra: list[Row] = []
        order: list[int] = []
        dts: list[int] = []
        for s, idx in segments(slot):
            bid = self.ids[s]
            buffered = self.buffers[s]
            arrivals = [
                (int(recs.ts[i]), i)
                for i in idx.tolist()
                if status[i] == adm.OK and self._lock(s, recs, i, status)
            ]
            old = [(int(r[0]), -1 - j) for j, r in enumerate(buffered)]
            prev = None if self.a.last_ts[s] == adm.NO_TS else int(self.a.last_ts[s])
            mx = None if self.a.max_ts[s] == adm.NO_TS else int(self.a.max_ts[s])
            rel, still, dups, late, frontier, mx, forced = self.reorder.release(
                old, arrivals, prev, mx
            )
            status[dups] = adm.DUPLICATE
            status[late] = adm.LATE
            self.metrics.forced_releases += forced
            for key in rel:
                if key >= 0:
                    k, t = key, int(recs.ts[key])
                else:
                    row = _row_from_json(bid, buffered[-1 - key])
                    k, t = n + len(extra), row.ts
                    extra.append(row)
                order.append(k)
                dts.append(0 if prev is None else t - prev)
                prev = t
            self.buffers[s] = [
                buffered[-1 - k] if k < 0 else _row_to_json(recs, k) for _, k in still
            ]
            self.a.last_ts[s] = adm.NO_TS if frontier is None else frontier
            self.a.max_ts[s] = adm.NO_TS if mx is None else mx
        both = Records.concat([recs, Records.from_rows(extra)]) if extra else recs
        rel_slot = slot
        if extra:
            more = np.array([self.slot_of[r.battery_id] for r in extra], dtype=np.int64)
            rel_slot = np.concatenate([slot, more])
        dt = np.zeros(len(both), dtype=np.int64)
        released = np.array(order, dtype=np.int64)
        dt[released] = np.array(dts, dtype=np.int64)
        return both, rel_slot, released, status, dt

    def _lock(self, s: int, recs: Records, i: int, status: IntArray) -> bool:
        nc, nt = int(recs.n_cells[i]), int(recs.n_temps[i])
        if nc >= 0:
            if self.a.lock_cells[s] < 0:
                self.a.lock_cells[s] = nc
            elif nc != self.a.lock_cells[s]:
                status[i] = adm.BAD_CELLS
                return False
        if nt >= 0:
            if self.a.lock_temps[s] < 0:
                self.a.lock_temps[s] = nt
            elif nt != self.a.lock_temps[s]:
                status[i] = adm.BAD_TEMPS
                return False
        return True

    def _block(self, rel: Records, rel_slot: IntArray, admitted: IntArray, dt: IntArray) -> Block:
        """The admitted records as the models' block: gaps marked, the current's sign
        applied, cells and temperatures as wide as the widest battery. Its arrays are its
        own (the plausibility stage masks cells in place)."""
        # battery by battery (stable: each battery's records keep their order): a kernel
        # then walks one battery's state rows at a time, which stay in the CPU's cache (a
        # fleet of 2000 interleaved batteries x 96 cells otherwise misses on every record)
        arrival = rel_slot[admitted]
        order = np.argsort(arrival, kind="stable")
        idx = admitted[order]
        cells, temps = rel.cells[idx], rel.temps[idx]
        # outputs leave battery by battery in the order the batteries first arrived
        uniq, first = np.unique(arrival, return_index=True)
        self._rank = np.zeros(len(self.ids), dtype=np.int64)
        self._rank[uniq[np.argsort(first)]] = np.arange(uniq.size)
        slot = rel_slot[idx]
        d = dt[idx]
        first = d == 0
        # a battery's first sample ever has dt 0 and no previous sample; equal timestamps
        # never pass admission, so dt 0 means exactly that
        gap = np.zeros(d.size, dtype=np.bool_)
        adm.gaps(
            slot, d, first, self.a.history, self.a.hcount, self.max_gap_ms, self.gap_factor, gap
        )
        cur = rel.current[idx] * self.a.sign[slot]
        width_c = max(0, int(self.a.lock_cells.max(initial=0)))
        width_t = max(0, int(self.a.lock_temps.max(initial=0)))
        return Block(
            slot,
            rel.ts[idx],
            d,
            gap,
            cur,
            rel.voltage[idx],
            _fit(cells, width_c),
            _fit(temps, width_t),
            rel.soc[idx],
            rel.soh[idx],
            np.maximum(self.a.lock_cells, 0),
            np.maximum(self.a.lock_temps, 0),
        )

    def _stages(self, blk: Block, res: BlockResult) -> None:
        """Plausibility and the models over the block; outputs in canonical per-battery
        order (ts, then data gaps, sensor faults and the models in their order)."""
        n_slots = len(self.ids)
        for stage in self.stages:
            stage.ensure(n_slots, blk.cells.shape[1], blk.temps.shape[1])
        outs: list[tuple[int, int, int, Output]] = []  # (record, stage, seq, output)
        gap_rows = np.flatnonzero(blk.gap & (blk.dt_ms > 0))
        for i in gap_rows.tolist():
            outs.append(
                (
                    i,
                    _GAP_STAGE,
                    0,
                    Estimate(
                        int(blk.ts[i]), ENGINE_MODEL, "data_gap", blk.dt_ms[i] / 1000.0, "s", None
                    ),
                )
            )
        if gap_rows.size:
            np.add.at(self.a.counters[:, 4], blk.slot[gap_rows], 1)
            self.metrics.gaps += int(gap_rows.size)
        if self.plausibility:
            blk = self._plausibility(blk, outs)
        for k, stage in enumerate(self.stages):
            outs += [(i, k, q, o) for q, (i, o) in enumerate(stage.run(blk, self.ids))]
        self._emit(blk, outs, res)
        np.add.at(self.a.versions, np.unique(blk.slot), 1)
        self.metrics.processed += len(blk)

    def _plausibility(self, blk: Block, outs: list[tuple[int, int, int, Output]]) -> Block:
        """Sensor facts out before the models see battery facts: implausible cell readings
        become NaN in the block the models get, and raise `sensor_fault`."""
        assert self.plaus is not None
        self.plaus.ensure(len(self.ids), blk.cells.shape[1], blk.temps.shape[1])
        nan_before = int(np.count_nonzero(np.isnan(blk.cells)))
        masked = blk  # the block's cells are its own (`_block`): masked in place
        outs += [
            (i, _PLAUS_STAGE, q, a) for q, (i, a) in enumerate(self.plaus.run(masked, self.ids))
        ]
        self.metrics.implausible += int(np.count_nonzero(np.isnan(masked.cells))) - nan_before
        return masked

    def _emit(self, blk: Block, outs: list[tuple[int, int, int, Output]], res: BlockResult) -> None:
        if not outs:
            return
        slot = blk.slot
        ts = blk.ts
        rank = self._rank
        outs.sort(key=lambda t: (int(rank[slot[t[0]]]), int(ts[t[0]]), t[1], t[2]))
        ids = self.ids
        n_alerts = 0
        for i, _, _, o in outs:
            bid = ids[int(slot[i])]
            rec = output_record(bid, o)
            if isinstance(o, Alert):
                res.alerts.append((bid, rec))
                n_alerts += 1
            else:
                res.estimates.append((bid, rec))
        self.metrics.alerts += n_alerts
        self.metrics.estimates += len(outs) - n_alerts

    def flush_all(self) -> BlockResult:
        """Release everything buffered (end of a replay, or batteries gone silent)."""
        res = BlockResult()
        if self.lateness_ms == 0:
            return res
        rows: list[Row] = []
        for s, buf in enumerate(self.buffers):
            if buf:
                rows += [_row_from_json(self.ids[s], r) for r in sorted(buf, key=lambda r: r[0])]
                self.buffers[s] = []
        if not rows:
            return res
        recs = Records.from_rows(rows)
        slot = np.array([self.slot_of[b] for b in recs.battery_id], dtype=np.int64)
        dt = np.zeros(len(recs), dtype=np.int64)
        for k in range(len(recs)):
            s = int(slot[k])
            t = int(recs.ts[k])
            dt[k] = 0 if self.a.last_ts[s] == adm.NO_TS else t - int(self.a.last_ts[s])
            self.a.last_ts[s] = t
        res.touched = list(dict.fromkeys(recs.battery_id))
        blk = self._block(recs, slot, np.arange(len(recs)), dt)
        self._stages(blk, res)
        return res

    # -- one battery at a time (tools, tests, the per-event baseline) ---------------------
    def process(self, battery_id: str, rows: Sequence[Row], state: State | None) -> Result:
        """Admit `rows` (all of `battery_id`, in arrival order) and run the models on what is
        released. Returns outputs, dead letters and the new state (input state untouched)."""
        try:
            self.load_state(battery_id, state)  # a model's migration may raise
        except Exception as exc:
            log.exception("internal error processing %s", battery_id)
            self.metrics.errors += len(rows)
            why = f"internal error processing {battery_id}: {type(exc).__name__}: {exc}"
            return Result(
                dead=[dead_letter(why, r.raw, r.source) for r in rows],
                state=self._unchanged(battery_id, state),
            )
        block = self.run(Records.from_rows(rows))
        return Result(
            [r for _, r in block.alerts],
            [r for _, r in block.estimates],
            [d for _, d in block.dead],
            self.dump_state(battery_id),
        )

    def _unchanged(self, battery_id: str, state: State | None) -> State:
        try:
            self.load_state(battery_id, state)
            return self.dump_state(battery_id)
        except Exception:
            return dict(state) if state is not None else {}

    def flush(self, battery_id: str, state: State) -> Result:
        """Release everything buffered of one battery."""
        self.load_state(battery_id, state)
        s = self.slot_of[battery_id]
        others = [(k, b) for k, b in enumerate(self.buffers) if k != s and b]
        for k, _ in others:
            self.buffers[k] = []
        block = self.flush_all()
        for k, b in others:
            self.buffers[k] = b
        return Result(
            [r for _, r in block.alerts],
            [r for _, r in block.estimates],
            [d for _, d in block.dead],
            self.dump_state(battery_id),
        )

    def count_invalid(self, dead: Sequence[DeadLetter]) -> None:
        """Count the decoder's dead letters (a summary dead letter stands for many)."""
        self.metrics.invalid += sum(d.records for d in dead)


def _fit(m: npt.NDArray[np.float64], width: int) -> npt.NDArray[np.float64]:
    """`m` with `width` columns, C-contiguous (the kernels are compiled for that layout)."""
    if m.shape[1] == width:
        return np.ascontiguousarray(m)
    if m.shape[1] > width:
        return np.ascontiguousarray(m[:, :width])
    out = np.full((m.shape[0], width), np.nan)
    out[:, : m.shape[1]] = m
    return out


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _row_to_json(recs: Records, i: int) -> list[Any]:
    nc, nt = int(recs.n_cells[i]), int(recs.n_temps[i])
    return [
        int(recs.ts[i]),
        float(recs.current[i]),
        _nan_to_none(float(recs.voltage[i])),
        None if nc < 0 else [_nan_to_none(x) for x in recs.cells[i, :nc].tolist()],
        None if nt < 0 else [_nan_to_none(x) for x in recs.temps[i, :nt].tolist()],
        _nan_to_none(float(recs.soc[i])),
        _nan_to_none(float(recs.soh[i])),
        recs.source[i],
    ]


def _row_from_json(battery_id: str, j: Sequence[Any]) -> Row:
    def f(x: Any) -> float:
        return math.nan if x is None else float(x)

    def arr(x: Any) -> list[float] | None:
        return None if x is None else [f(v) for v in x]

    return Row(
        battery_id,
        int(j[0]),
        float(j[1]),
        f(j[2]),
        arr(j[3]),
        arr(j[4]),
        f(j[5]),
        f(j[6]),
        None,
        j[7],
    )
