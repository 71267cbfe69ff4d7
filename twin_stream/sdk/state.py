"""Model state as arrays: one row per battery slot, one array per field a model declares.

A kernel model declares its state in `model.json`::

    "state": {
      "version": 2,
      "fields": {
        "prev_current": {"dtype": "float64", "init": null},
        "channels":     {"dtype": "int64", "shape": ["cells", 6], "init": 0}
      }
    }

`shape` is absent (one value per battery), an integer N, `"cells"` or `"temps"` (one per cell
or sensor), or a list of those (`["cells", 6]`: six integers per cell). `init` is the value of a
battery never seen (`null` is NaN for floats). Arrays grow as batteries and cells appear;
`to_dict`/`from_dict` turn one battery's row into the JSON-able dict that goes to the table
(floats NaN as null, cell-shaped fields cut to the battery's own count) and back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

Dim = int | Literal["cells", "temps"]
_DTYPES = {"float64": np.float64, "int64": np.int64, "bool": np.bool_}


class StateField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["float64", "int64", "bool"]
    shape: Dim | list[Dim] | None = None
    init: float | int | bool | None = 0
    description: str = ""

    def dims(self) -> tuple[Dim, ...]:
        if self.shape is None:
            return ()
        return tuple(self.shape) if isinstance(self.shape, list) else (self.shape,)


class StateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    fields: dict[str, StateField]


@dataclass
class _Widths:
    cells: int = 0
    temps: int = 0


class StateArrays:
    """The state of one model for every battery slot, as named numpy arrays."""

    def __init__(self, spec: StateSpec, slots: int = 1, cells: int = 0, temps: int = 0) -> None:
        self.spec = spec
        self.capacity = 0
        self.widths = _Widths()
        self.arrays: dict[str, npt.NDArray[Any]] = {}
        self._alloc(max(1, slots), cells, temps)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.arrays[name]

    def _shape(self, f: StateField, slots: int, cells: int, temps: int) -> tuple[int, ...]:
        size = {"cells": cells, "temps": temps}
        return (slots, *(d if isinstance(d, int) else size[d] for d in f.dims()))

    def _init(self, f: StateField) -> Any:
        if f.init is None:
            return math.nan if f.dtype == "float64" else 0
        return f.init

    def _alloc(self, slots: int, cells: int, temps: int) -> None:
        new: dict[str, npt.NDArray[Any]] = {}
        for name, f in self.spec.fields.items():
            a: npt.NDArray[Any] = np.full(
                self._shape(f, slots, cells, temps), self._init(f), dtype=_DTYPES[f.dtype]
            )
            old = self.arrays.get(name)
            if old is not None:
                a[tuple(slice(0, s) for s in old.shape)] = old
            new[name] = a
        self.arrays = new
        self.capacity = slots
        self.widths = _Widths(cells, temps)

    def ensure(self, slots: int, cells: int = 0, temps: int = 0) -> None:
        """Room for `slots` slots and `cells`/`temps` columns (grows geometrically)."""
        if slots > self.capacity or cells > self.widths.cells or temps > self.widths.temps:
            self._alloc(
                max(slots, 2 * self.capacity if slots > self.capacity else self.capacity),
                max(cells, self.widths.cells),
                max(temps, self.widths.temps),
            )

    def reset(self, slot: int) -> None:
        """Slot `slot` as a battery never seen."""
        for name, f in self.spec.fields.items():
            self.arrays[name][slot] = self._init(f)

    def snapshot(self, slots: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
        """Copies of the rows of `slots` (sorted, unique; to undo a failed block)."""
        run = contiguous(slots)
        if run is not None:  # a whole fleet's slots: one memcpy per field, not a gather
            return {name: a[run].copy() for name, a in self.arrays.items()}
        return {name: a[slots] for name, a in self.arrays.items()}  # a gather copies

    def restore(self, slots: npt.NDArray[np.int64], snap: dict[str, npt.NDArray[Any]]) -> None:
        for name, rows in snap.items():
            a = self.arrays[name]
            if a.ndim > 1 and rows.shape[1:] != a.shape[1:]:  # grew meanwhile
                a[slots] = self._init(self.spec.fields[name])
                index: Any = (slots, *(slice(0, d) for d in rows.shape[1:]))
                a[index] = rows
            else:
                a[slots] = rows

    def layout(self) -> str:
        """The fields as `name:dtype:dims` (what `gather_into` writes, in order), e.g.
        ``peak:float64:,slot:int64:,channel:int64:7``; `StateArrays.from_layout` reads it."""
        return ",".join(
            f"{name}:{f.dtype}:{'.'.join(str(d) for d in f.dims())}"
            for name, f in self.spec.fields.items()
        )

    @staticmethod
    def from_layout(layout: str, version: int) -> StateArrays:
        """Arrays of the layout a blob was written with (an older version's fields)."""
        fields: dict[str, Any] = {}
        for item in layout.split(",") if layout else []:
            name, dtype, dims = item.split(":")
            shape = [int(d) if d.isdigit() else d for d in dims.split(".") if d]
            fields[name] = {"dtype": dtype, "shape": shape or None}
        return StateArrays(StateSpec.model_validate({"version": version, "fields": fields}))

    def gather_into(
        self, slots: npt.NDArray[np.int64], body: npt.NDArray[np.uint8], pos: int
    ) -> int:
        """The rows of `slots` as bytes (fields in spec order at the current widths), written
        into columns pos.. of `body` (k rows; one copy, a plain slice copy when `slots` are one
        run); returns the column after them."""
        run = contiguous(slots) if slots.size else None
        for a in self.arrays.values():
            flat = a.reshape(a.shape[0], -1).view(np.uint8)  # rows as bytes, no copy
            n = flat.shape[1]
            if run is not None:
                body[:, pos : pos + n] = flat[run]
            else:
                np.take(flat, slots, axis=0, out=body[:, pos : pos + n])
            pos += n
        return pos

    def row_bytes(self, cells: int, temps: int) -> int:
        """Bytes of one row written by `gather_into` at widths (cells, temps)."""
        return sum(
            int(np.prod(self._shape(f, 1, cells, temps))) * np.dtype(_DTYPES[f.dtype]).itemsize
            for f in self.spec.fields.values()
        )

    def scatter(self, slot: int, row: npt.NDArray[np.uint8], cells: int, temps: int) -> None:
        """Slot `slot` from bytes `gather_into` wrote at widths (cells, temps)."""
        self.ensure(self.capacity, cells, temps)
        pos = 0
        for name, f in self.spec.fields.items():
            shape = self._shape(f, 1, cells, temps)[1:]
            dtype = np.dtype(_DTYPES[f.dtype])
            n = int(np.prod(shape)) * dtype.itemsize
            vals = row[pos : pos + n].view(dtype).reshape(shape)
            pos += n
            a = self.arrays[name]
            if not shape:
                a[slot] = vals
                continue
            a[slot] = self._init(f)
            index: Any = (slot, *(slice(0, d) for d in shape))
            a[index] = vals

    def to_dict(self, slot: int, n_cells: int, n_temps: int) -> dict[str, Any]:
        """One battery's state as a JSON-able dict (with the state version)."""
        out: dict[str, Any] = {"version": self.spec.version}
        size = {"cells": n_cells, "temps": n_temps}
        for name, f in self.spec.fields.items():
            v = self.arrays[name][slot]
            dims = f.dims()
            if dims and dims[0] in size:
                v = v[: size[dims[0]]]  # type: ignore[index]
            out[name] = _plain(v)
        return out

    def from_dict(self, slot: int, state: Mapping[str, Any]) -> None:
        """Load one battery's dict (as `to_dict` wrote it) into slot `slot`."""
        for name, f in self.spec.fields.items():
            a = self.arrays[name]
            if name not in state:
                a[slot] = self._init(f)
                continue
            v = state[name]
            if not f.dims():
                a[slot] = math.nan if v is None else v
                continue
            arr: npt.NDArray[Any] = np.asarray(_none_to_nan(v), dtype=_DTYPES[f.dtype])
            if f.dims()[0] in ("cells", "temps"):
                need = (self.widths.cells if f.dims()[0] == "cells" else self.widths.temps,)
                if arr.shape[0] > need[0]:
                    self.ensure(
                        self.capacity,
                        arr.shape[0] if f.dims()[0] == "cells" else 0,
                        arr.shape[0] if f.dims()[0] == "temps" else 0,
                    )
                    a = self.arrays[name]
                a[slot] = self._init(f)
                if arr.size:  # [] of a ["cells", 7] field is shape (0,), not (0, 7)
                    a[slot][: arr.shape[0]] = arr
            else:
                a[slot] = arr


def contiguous(slots: npt.NDArray[np.int64]) -> slice | None:
    """`slots` (sorted, unique) as a slice when they are one run of consecutive slots."""
    if slots.size and int(slots[-1]) - int(slots[0]) + 1 == slots.size:
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return None


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return _nan_to_none(v.tolist()) if v.dtype == np.float64 else v.tolist()
    if isinstance(v, np.floating):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return None if isinstance(v, float) and math.isnan(v) else v


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_to_nan(x) for x in v]
    return math.nan if v is None else v
