"""Contract tests any model can be put through: `check_model(model, chunks)`.

Given a model instance and one or more chunks of one battery each (consecutive samples with
their dt/gap, e.g. from `build_chunk`), it checks what every model must hold:

1. chunking invariance: the chunks cut at random places give the same outputs and state as
   in one piece (exactly: kernels are per-record loops);
2. state round trip: the state through JSON between every piece changes nothing;
3. interleaving (kernel models): all chunks as batteries of one block, interleaved at random,
   give each battery the outputs and state it gets alone;
4. outputs are declared in the manifest with its kind and unit.

Raises AssertionError naming the first difference.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from twin_stream.sdk.block import Block
from twin_stream.sdk.chunk import Chunk
from twin_stream.sdk.contract import Model, State
from twin_stream.sdk.model import KernelModel, run_kernel
from twin_stream.sdk.outputs import Alert, Output
from twin_stream.sdk.state import StateArrays


def _run_cut(
    model: Model, chunk: Chunk, cuts: Sequence[int], roundtrip: bool
) -> tuple[list[Output], State]:
    state = model.initial_state()
    outs: list[Output] = []
    bounds = [0, *sorted(set(cuts)), len(chunk)]
    for a, b in itertools.pairwise(bounds):
        if roundtrip:
            state = json.loads(json.dumps(state))
        o, state = model.process(chunk.slice(a, b), state)
        outs += o
    return outs, state


def _same(a: Any, b: Any, what: str) -> None:
    if json.dumps(a, sort_keys=True, default=repr) != json.dumps(b, sort_keys=True, default=repr):
        raise AssertionError(f"{what} differ:\n  {a!r}\n  {b!r}")


def check_model(model: Model, chunks: Sequence[Chunk], seed: int = 0, trials: int = 5) -> None:
    rnd = random.Random(seed)
    whole = [model.process(c, model.initial_state()) for c in chunks]
    for c, (outs, state) in zip(chunks, whole, strict=True):
        for o in outs:
            spec = model.manifest.outputs.get(o.code if isinstance(o, Alert) else o.name)
            if spec is None:
                raise AssertionError(f"{model.name}: output {o!r} not declared in model.json")
            kind = "alert" if isinstance(o, Alert) else "estimate"
            if spec.kind != kind or spec.unit != o.unit:
                raise AssertionError(f"{model.name}: {o!r} is not a {spec.kind} in {spec.unit}")
        for t in range(trials):
            n = len(c)
            cuts = sorted(rnd.sample(range(1, n), min(n - 1, rnd.randint(1, 8)))) if n > 1 else []
            got = _run_cut(model, c, cuts, roundtrip=t % 2 == 0)
            _same(got[0], outs, f"{model.name}: outputs cut at {cuts}")
            _same(got[1], state, f"{model.name}: state cut at {cuts}")
    if isinstance(model, KernelModel) and len(chunks) > 1:
        _check_interleaving(model, chunks, whole, rnd)


def _check_interleaving(
    model: KernelModel,
    chunks: Sequence[Chunk],
    whole: Sequence[tuple[list[Output], State]],
    rnd: random.Random,
) -> None:
    width = max(c.cells.shape[1] for c in chunks)
    twidth = max(c.temps.shape[1] for c in chunks)
    order = [k for k, c in enumerate(chunks) for _ in range(len(c))]
    rnd.shuffle(order)  # battery k's records stay in order; batteries interleave at random
    pos = [0] * len(chunks)
    idx: list[tuple[int, int]] = []
    for k in order:
        idx.append((k, pos[k]))
        pos[k] += 1

    def pad(m: np.ndarray, w: int) -> np.ndarray:
        out = np.full((w,), np.nan)
        out[: m.size] = m
        return out

    blk = Block(
        np.array([k for k, _ in idx], dtype=np.int64),
        np.array([chunks[k].ts[i] for k, i in idx], dtype=np.int64),
        np.array([chunks[k].dt_ms[i] for k, i in idx], dtype=np.int64),
        np.array([chunks[k].gap[i] for k, i in idx], dtype=np.bool_),
        np.array([chunks[k].current[i] for k, i in idx]),
        np.array([chunks[k].voltage[i] for k, i in idx]),
        np.array([pad(chunks[k].cells[i], width) for k, i in idx]).reshape(len(idx), width),
        np.array([pad(chunks[k].temps[i], twidth) for k, i in idx]).reshape(len(idx), twidth),
        np.array([chunks[k].soc[i] for k, i in idx]),
        np.array([chunks[k].soh[i] for k, i in idx]),
        np.array([c.cells.shape[1] for c in chunks], dtype=np.int64),
        np.array([c.temps.shape[1] for c in chunks], dtype=np.int64),
    )
    state = StateArrays(model.state_spec, len(chunks), width, twidth)
    params = np.vstack([model.param_row() for _ in chunks])
    rows = run_kernel(model, blk, params, state)
    outs = model.outputs(rows, blk.ts)
    for k, c in enumerate(chunks):
        mine = [o for o, r in zip(outs, rows.tolist(), strict=True) if blk.slot[int(r[0])] == k]
        _same(mine, whole[k][0], f"{model.name}: battery {k} outputs interleaved")
        _same(
            state.to_dict(k, c.cells.shape[1], c.temps.shape[1]),
            whole[k][1],
            f"{model.name}: battery {k} state interleaved",
        )
