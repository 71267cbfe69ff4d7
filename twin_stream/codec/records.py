"""Decoded telemetry as columns: the one place the telemetry record's shape is written down.

Decoders (`twin_stream.codec`, the file readers) produce `Records`; the engine admits them
into per-battery order and cuts model blocks from them. Optional scalars are NaN when absent
or invalid; `cells`/`temps` are 2-D, as wide as the widest record of the batch, NaN-padded,
with each record's own count in `n_cells`/`n_temps` (-1: the record had no such array).
`raw`/`source` are kept per record, by reference, only for dead letters; a file reader may
give them as a `Lazy` sequence (made only for the few records that become dead letters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCALARS = ("voltage", "soc", "soh")  # optional scalar fields, NaN when absent
ARRAYS = ("cell_voltages", "temperatures")  # optional per-channel fields


class Lazy(Sequence[Any]):
    """A sequence whose item i is `fns[seg[i]](arg[i])`, made when asked for."""

    def __init__(self, fns: list[Callable[[int], Any]], seg: IntArray, arg: IntArray) -> None:
        self.fns, self.seg, self.arg = fns, seg, arg

    @staticmethod
    def of(fn: Callable[[int], Any], arg: npt.ArrayLike) -> Lazy:
        a = np.asarray(arg, dtype=np.int64)
        return Lazy([fn], np.zeros(a.size, np.int64), a)

    def __len__(self) -> int:
        return int(self.arg.size)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.fns[int(self.seg[i])](int(self.arg[i]))

    def take(self, ix: IntArray) -> Lazy:
        return Lazy(self.fns, self.seg[ix], self.arg[ix])

    @staticmethod
    def concat(seqs: Sequence[Sequence[Any]]) -> Lazy:
        fns: list[Callable[[int], Any]] = []
        segs, args = [], []
        for s in seqs:
            if isinstance(s, Lazy):
                segs.append(s.seg + len(fns))
                args.append(s.arg)
                fns.extend(s.fns)
            else:
                segs.append(np.full(len(s), len(fns), np.int64))
                args.append(np.arange(len(s), dtype=np.int64))
                fns.append(list(s).__getitem__)
        return Lazy(fns, np.concatenate(segs), np.concatenate(args))


def _take(seq: Sequence[Any], ix: IntArray) -> Sequence[Any]:
    if isinstance(seq, Lazy):
        return seq.take(ix)
    return [seq[i] for i in ix.tolist()] if len(seq) else []


def _concat(seqs: Sequence[Sequence[Any]]) -> Sequence[Any]:
    if any(isinstance(s, Lazy) for s in seqs):
        return Lazy.concat(seqs)
    return [x for s in seqs for x in s]


@dataclass
class Records:
    battery_id: list[str]
    ts: IntArray
    current: FloatArray
    voltage: FloatArray
    soc: FloatArray
    soh: FloatArray
    cells: FloatArray  # (n, width)
    n_cells: IntArray  # -1: no cell_voltages in the record
    temps: FloatArray  # (n, width)
    n_temps: IntArray  # -1: no temperatures in the record
    degraded: IntArray  # channels/fields removed as invalid from each record
    raw: Sequence[Any] = field(repr=False)  # the record as received (bytes, text or dict)
    source: Sequence[str] = field(repr=False)  # file:line, topic[partition]@offset, ...

    def __len__(self) -> int:
        return int(self.ts.size)

    @staticmethod
    def empty() -> Records:
        return Records.from_rows([])

    @staticmethod
    def from_rows(rows: Sequence[Any]) -> Records:
        """From `codec.Row`s (the per-record decoders' output)."""
        n = len(rows)

        def mat(k: int) -> tuple[FloatArray, IntArray]:
            counts = np.array(
                [-1 if r[k] is None else len(r[k]) for r in rows], dtype=np.int64
            ).reshape(n)
            width = int(counts.max()) if n and counts.max() > 0 else 0
            m = np.full((n, width), np.nan)
            for i, r in enumerate(rows):
                if counts[i] > 0:
                    m[i, : counts[i]] = r[k]
            return m, counts

        cells, n_cells = mat(4)
        temps, n_temps = mat(5)
        return Records(
            [r.battery_id for r in rows],
            np.array([r.ts for r in rows], dtype=np.int64).reshape(n),
            np.array([r.current for r in rows], dtype=np.float64).reshape(n),
            np.array([r.voltage for r in rows], dtype=np.float64).reshape(n),
            np.array([r.soc for r in rows], dtype=np.float64).reshape(n),
            np.array([r.soh for r in rows], dtype=np.float64).reshape(n),
            cells,
            n_cells,
            temps,
            n_temps,
            np.array([r.degraded for r in rows], dtype=np.int64).reshape(n),
            [r.raw for r in rows],
            [r.source for r in rows],
        )

    def take(self, idx: npt.ArrayLike) -> Records:
        """The records at positions `idx`, in that order."""
        ix = np.asarray(idx, dtype=np.int64)
        pick = ix.tolist()

        def mat(m: FloatArray, counts: IntArray) -> FloatArray:
            width = int(counts.max()) if counts.size and counts.max() > 0 else 0
            return m[ix, :width]

        n_cells, n_temps = self.n_cells[ix], self.n_temps[ix]
        return Records(
            [self.battery_id[i] for i in pick],
            self.ts[ix],
            self.current[ix],
            self.voltage[ix],
            self.soc[ix],
            self.soh[ix],
            mat(self.cells, n_cells),
            n_cells,
            mat(self.temps, n_temps),
            n_temps,
            self.degraded[ix],
            _take(self.raw, ix),
            _take(self.source, ix),
        )

    @staticmethod
    def concat(parts: Sequence[Records]) -> Records:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Records.empty()
        if len(parts) == 1:
            return parts[0]

        def mat(name: str) -> FloatArray:
            width = max(getattr(p, name).shape[1] for p in parts)
            out = []
            for p in parts:
                m = getattr(p, name)
                if m.shape[1] < width:
                    m = np.hstack([m, np.full((m.shape[0], width - m.shape[1]), np.nan)])
                out.append(m)
            return np.vstack(out)

        return Records(
            [b for p in parts for b in p.battery_id],
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.current for p in parts]),
            np.concatenate([p.voltage for p in parts]),
            np.concatenate([p.soc for p in parts]),
            np.concatenate([p.soh for p in parts]),
            mat("cells"),
            np.concatenate([p.n_cells for p in parts]),
            mat("temps"),
            np.concatenate([p.n_temps for p in parts]),
            np.concatenate([p.degraded for p in parts]),
            _concat([p.raw for p in parts]),
            _concat([p.source for p in parts]),
        )
