"""What kernels emit: rows of one float64 matrix, turned into alerts and estimates afterwards.

A kernel cannot build Python objects, so it writes each output as one row of `out`
(`OUT_COLUMNS` wide) with `emit(...)` and returns how many rows it wrote. The columns:

- ROW: the record (index in the block) the output belongs to; its ts and battery come from it;
- CODE: the output's index in the model's manifest `outputs` (their order in model.json);
- STATUS: alerts 1 raised / 0 cleared; estimates -1;
- CELL: the cell (0-based column) an alert is about, -1 for none;
- VALUE: the value; AUX: an alert's threshold, an estimate's 1-sigma uncertainty (NaN: none);
- CONF: an estimate's confidence 0..1 (NaN: none);
- SEVERITY: an alert's severity, 0 info / 1 warning / 2 critical (-1: the manifest's).

A model may ask for more columns after these (`KernelModel.extra_columns`): its own context
of a row (e.g. what an alert's message quotes), written by its kernel, read by its `outputs`.

A kernel checks room before a record (`room(out, n, k)`: k rows free) and, when there is none,
returns early with the index of the record it did not process; the runner grows `out` and
calls it again from there, so no output is ever lost and no state is advanced twice.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from twin_stream.sdk.jit import kernel

ROW, CODE, STATUS, CELL, VALUE, AUX, CONF, SEVERITY = range(8)
OUT_COLUMNS = 8
SEVERITIES = ("info", "warning", "critical")
RAISED, CLEARED, ESTIMATE = 1, 0, -1


def new_out(rows: int, columns: int = OUT_COLUMNS) -> npt.NDArray[np.float64]:
    return np.empty((max(rows, 16), columns), dtype=np.float64)


@kernel
def emit(
    out: npt.NDArray[np.float64],
    n: int,
    row: int,
    code: int,
    status: int,
    cell: int,
    value: float,
    aux: float,
    conf: float,
    severity: int,
) -> int:
    """Write one output at row n of `out`; returns n + 1."""
    out[n, 0] = row
    out[n, 1] = code
    out[n, 2] = status
    out[n, 3] = cell
    out[n, 4] = value
    out[n, 5] = aux
    out[n, 6] = conf
    out[n, 7] = severity
    return n + 1


@kernel
def estimate(
    out: npt.NDArray[np.float64], n: int, row: int, code: int, value: float, sigma: float
) -> int:
    """An estimate without confidence (sigma NaN: no uncertainty)."""
    return emit(out, n, row, code, -1, -1, value, sigma, np.nan, -1)


@kernel
def alert(
    out: npt.NDArray[np.float64],
    n: int,
    row: int,
    code: int,
    raised: bool,
    cell: int,
    value: float,
    threshold: float,
    severity: int,
) -> int:
    """An alert raised or cleared (cell -1: not about one cell; severity -1: the manifest's)."""
    return emit(out, n, row, code, 1 if raised else 0, cell, value, threshold, np.nan, severity)


@kernel
def room(out: npt.NDArray[np.float64], n: int, k: int) -> bool:
    return n + k <= out.shape[0]
