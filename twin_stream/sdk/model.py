"""Kernel models: a manifest, a parameter row, state arrays and one compiled loop.

A kernel model subclasses `KernelModel` and implements `run`: call its `@kernel` loop over
the block's records with the columns it needs, its parameter matrix (one row per slot, built
from `param_row()` of the model instance serving that battery), its state arrays and the
output matrix; return (next record, outputs written). The base class does the rest:

- `initial_state`/`process(chunk, state)`: the one-battery API of the contract (tests,
  notebooks, tools), through a block of one slot and dict state;
- `outputs(...)`: emitted rows -> `Alert`/`Estimate` (name, unit, severity, message from
  the manifest; `describe` may word the message);
- `migrate(state)`: a state dict of an older version -> the current one (default: refuse).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from twin_stream.sdk.block import Block, single_battery_block
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.contract import ContractError, Model, State
from twin_stream.sdk.emit import (
    AUX,
    CELL,
    CODE,
    CONF,
    OUT_COLUMNS,
    ROW,
    SEVERITIES,
    SEVERITY,
    STATUS,
    VALUE,
    new_out,
)
from twin_stream.sdk.outputs import Alert, Estimate, Output
from twin_stream.sdk.state import StateArrays, StateSpec

FloatArray = npt.NDArray[np.float64]


class KernelModel(Model):
    """Base class of compiled models (see the module docstring)."""

    state_spec: ClassVar[StateSpec]
    is_kernel_model: ClassVar[bool] = True
    extra_columns: ClassVar[int] = 0  # output columns after OUT_COLUMNS, the model's own

    def param_row(self) -> FloatArray:
        """This instance's parameters (and spec facts) as one float row; same length for every
        instance of the class. Enumerations as small integers."""
        return np.zeros(1)

    def max_outputs_per_record(self, n_cells: int, n_temps: int) -> int:
        """An upper bound of the outputs one record can give (sizes the output matrix)."""
        return len(self.manifest.outputs) * (1 + n_cells + n_temps)

    @abstractmethod
    def run(
        self,
        blk: Block,
        params: FloatArray,
        state: StateArrays,
        out: FloatArray,
        start: int,
    ) -> tuple[int, int]:
        """Process records start.. of `blk`; returns (first record not processed, rows written
        to `out`). Stops early only when `out` has no room for a record's outputs."""

    def migrate(self, state: State) -> State:
        """A stored state of another version, made current; the default refuses it."""
        raise ContractError(
            f"{self.name}: state version {state.get('version')!r} is not "
            f"{self.state_spec.version} and the model has no migration for it"
        )

    def describe(self, code: str, raised: bool, cell: int, value: float, threshold: float) -> str:
        """The message of an alert: the manifest's `message` template, formatted."""
        template = self.manifest.outputs[code].message or "{code} {status}: {value:g}"
        return template.format(
            code=code,
            status="raised" if raised else "cleared",
            cell=cell + 1,
            value=value,
            threshold=threshold,
            unit=self.manifest.outputs[code].unit,
        )

    # -- the contract's one-battery API ----------------------------------------------------
    def initial_state(self) -> State:
        return StateArrays(self.state_spec).to_dict(0, 0, 0)

    def checked_state(self, state: Mapping[str, Any]) -> Mapping[str, Any]:
        if state.get("version") != self.state_spec.version:
            return self.migrate(dict(state))
        return state

    def process(self, chunk: Chunk, state: State) -> tuple[list[Output], State]:
        blk = single_battery_block(
            chunk.ts,
            chunk.dt_ms,
            chunk.gap,
            chunk.current,
            chunk.voltage,
            chunk.cells,
            chunk.temps,
            chunk.soc,
            chunk.soh,
        )
        n_cells, n_temps = int(blk.n_cells[0]), int(blk.n_temps[0])
        arrays = StateArrays(self.state_spec, 1, n_cells, n_temps)
        arrays.from_dict(0, self.checked_state(state))
        rows = run_kernel(self, blk, self.param_row()[None, :], arrays)
        return self.outputs(rows, blk.ts), arrays.to_dict(0, n_cells, n_temps)

    # -- outputs ---------------------------------------------------------------------------
    def outputs(self, rows: FloatArray, ts: npt.NDArray[np.int64]) -> list[Output]:
        """Emitted rows as alerts and estimates (in emission order)."""
        names = list(self.manifest.outputs)
        specs = list(self.manifest.outputs.values())
        res: list[Output] = []
        for r in rows.tolist():
            code = int(r[CODE])
            name, spec = names[code], specs[code]
            t = int(ts[int(r[ROW])])
            if spec.kind == "estimate":
                conf, aux = r[CONF], r[AUX]
                res.append(
                    Estimate(
                        t,
                        self.name,
                        name,
                        r[VALUE],
                        spec.unit,
                        None if math.isnan(conf) else conf,
                        None if math.isnan(aux) else aux,
                    )
                )
                continue
            raised = r[STATUS] == 1
            cell = int(r[CELL])
            sev = int(r[SEVERITY])
            res.append(
                Alert(
                    t,
                    self.name,
                    name,
                    SEVERITIES[sev] if sev >= 0 else (spec.severity or "warning"),
                    "raised" if raised else "cleared",
                    None if cell < 0 else cell,
                    r[VALUE],
                    r[AUX],
                    spec.unit,
                    self.describe(name, raised, cell, r[VALUE], r[AUX]),
                )
            )
        return res


def run_kernel(
    model: KernelModel, blk: Block, params: FloatArray, state: StateArrays
) -> FloatArray:
    """Run `model` over the whole block; the emitted rows (growing the buffer as needed)."""
    n = len(blk)
    per_record = model.max_outputs_per_record(blk.cells.shape[1], blk.temps.shape[1])
    columns = OUT_COLUMNS + model.extra_columns
    out = new_out(max(64, n // 8 + per_record), columns)
    parts: list[FloatArray] = []
    start = 0
    while True:
        nxt, written = model.run(blk, params, state, out, start)
        if nxt >= n:
            if not parts:
                return out[:written].copy()
            parts.append(out[:written].copy())
            return np.concatenate(parts)
        if nxt == start and written == 0:
            out = new_out(2 * out.shape[0] + per_record, columns)  # not even one fitted
            continue
        parts.append(out[:written].copy())
        start = nxt
