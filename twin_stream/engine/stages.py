"""The stages a block goes through after admission: plausibility, then every enabled model.

A stage is run once per block. A `KernelStage` (a `KernelModel`: one compiled loop over the
records of all batteries, state in slot arrays) is the fast path. A `ChunkStage` runs a
plain `Model` (dict state, `process(chunk, state)` per battery) once per battery in the
block: slower, but any Python model works, which is how a model starts its life.

Both return their outputs as (record index in the block, Output) in emission order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.sdk.block import Block
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.contract import Model, State
from twin_stream.sdk.emit import ROW
from twin_stream.sdk.model import KernelModel, run_kernel
from twin_stream.sdk.outputs import Output
from twin_stream.sdk.state import StateArrays

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def segments(slot: IntArray) -> list[tuple[int, IntArray]]:
    """(slot, record indices in order) for each slot of a block, slots in first-seen order."""
    if slot.size == 0:
        return []
    order = np.argsort(slot, kind="stable")
    s = slot[order]
    cuts = np.flatnonzero(np.diff(s)) + 1
    parts = np.split(order, cuts)
    parts.sort(key=lambda p: int(p[0]))
    return [(int(slot[p[0]]), p) for p in parts]


def chunk_of(blk: Block, idx: IntArray, battery_id: str) -> Chunk:
    s = int(blk.slot[idx[0]])
    nc, nt = int(blk.n_cells[s]), int(blk.n_temps[s])
    return Chunk(
        battery_id,
        blk.ts[idx],
        blk.current[idx],
        blk.voltage[idx],
        blk.cells[idx, :nc],
        blk.temps[idx, :nt],
        blk.soc[idx],
        blk.soh[idx],
        blk.dt_ms[idx],
        blk.gap[idx],
    )


class KernelStage:
    """A kernel model over all batteries: one parameter row and one state row per slot."""

    def __init__(self, cls: type[KernelModel]) -> None:
        # `cls` may be an unregistered kernel (the plausibility stage)
        self.cls = cls
        self.name = cls.name
        self.state = StateArrays(cls.state_spec)
        self.params = np.zeros((1, 1))
        self.instances: list[KernelModel | None] = []
        self._rows: dict[int, FloatArray] = {}

    def bind(self, slot: int, model: Model) -> None:
        """Slot `slot` is served by `model` (its parameters and spec)."""
        assert isinstance(model, KernelModel)
        row = self._rows.get(id(model))
        if row is None:  # one instance serves every battery of its spec: built once
            row = self._rows[id(model)] = model.param_row()
        if slot >= self.params.shape[0] or self.params.shape[1] != row.size:
            grown = np.zeros((max(2 * self.params.shape[0], slot + 1), row.size))
            if self.params.shape[1] == row.size:
                grown[: self.params.shape[0]] = self.params
            self.params = grown
        self.params[slot] = row
        self.instances += [None] * (slot + 1 - len(self.instances))
        self.instances[slot] = model

    def ensure(self, slots: int, cells: int, temps: int) -> None:
        self.state.ensure(slots, cells, temps)

    def load(self, slot: int, state: State) -> None:
        model = self.instances[slot]
        assert model is not None
        self.state.from_dict(slot, model.checked_state(state))

    def dump(self, slot: int, n_cells: int, n_temps: int) -> State:
        return self.state.to_dict(slot, n_cells, n_temps)

    def reset(self, slot: int) -> None:
        self.state.reset(slot)

    def snapshot(self, slots: IntArray) -> Any:
        return self.state.snapshot(slots)

    def restore(self, slots: IntArray, snap: Any) -> None:
        self.state.restore(slots, snap)

    def run(self, blk: Block, ids: list[str]) -> list[tuple[int, Output]]:
        model = next(m for m in self.instances if m is not None)
        rows = run_kernel(model, blk, self.params, self.state)
        if rows.shape[0] == 0:
            return []
        rec = rows[:, ROW].astype(np.int64)
        slots = blk.slot[rec]
        out: list[tuple[int, Output]] = []
        # messages may depend on the instance (its limits): word each slot's rows by its own
        by_instance: dict[int, list[int]] = {}
        for k, s in enumerate(slots.tolist()):
            by_instance.setdefault(id(self.instances[s]), []).append(k)
        if len(by_instance) == 1:
            inst = self.instances[int(slots[0])]
            assert inst is not None
            return list(zip(rec.tolist(), inst.outputs(rows, blk.ts), strict=True))
        for ks in by_instance.values():
            inst = self.instances[int(slots[ks[0]])]
            assert inst is not None
            sub = rows[ks]
            out += zip(rec[ks].tolist(), inst.outputs(sub, blk.ts), strict=True)
        out.sort(key=lambda t: t[0])  # stable: emission order within a record
        return out


class ChunkStage:
    """A plain model (dict state) run per battery of the block."""

    def __init__(self, cls: type[Model], initial: Callable[[Model], State] | None = None) -> None:
        self.cls = cls
        self.name = cls.name
        self.states: list[State | None] = []
        self.instances: list[Model | None] = []

    def bind(self, slot: int, model: Model) -> None:
        self.instances += [None] * (slot + 1 - len(self.instances))
        self.states += [None] * (slot + 1 - len(self.states))
        self.instances[slot] = model

    def ensure(self, slots: int, cells: int, temps: int) -> None:
        pass

    def load(self, slot: int, state: State) -> None:
        self.states[slot] = state

    def dump(self, slot: int, n_cells: int, n_temps: int) -> State:
        st = self.states[slot]
        if st is None:
            model = self.instances[slot]
            assert model is not None
            st = self.states[slot] = model.initial_state()
        return st

    def reset(self, slot: int) -> None:
        self.states[slot] = None

    def snapshot(self, slots: IntArray) -> Any:
        return [self.states[s] for s in slots.tolist()]  # states are replaced, never mutated

    def restore(self, slots: IntArray, snap: Any) -> None:
        for s, st in zip(slots.tolist(), snap, strict=True):
            self.states[s] = st

    def run(self, blk: Block, ids: list[str]) -> list[tuple[int, Output]]:
        out: list[tuple[int, Output]] = []
        for s, idx in segments(blk.slot):
            model = self.instances[s]
            assert model is not None
            chunk = chunk_of(blk, idx, ids[s])
            outs, self.states[s] = model.process(chunk, self.dump(s, 0, 0))
            pos = {int(t): int(i) for t, i in zip(chunk.ts.tolist(), idx.tolist(), strict=True)}
            out += [(pos[o.ts], o) for o in outs]
        return out


Stage = KernelStage | ChunkStage


def stage_for(cls: type[Model]) -> Any:
    return KernelStage(cls) if issubclass(cls, KernelModel) else ChunkStage(cls)
