"""The plausibility layer ahead of the models: hand-made readings, what is masked, what is
raised, and that a real over-voltage is never masked (issue 10, item 2); the stage as a
kernel: the stuck rule against a per-sample loop, a pre-kernel state migrated, many
batteries interleaved in one block."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from twin_stream.engine.plausibility import Plausibility, check, initial_state, limits_for
from twin_stream.sdk.block import Block
from twin_stream.sdk.chunk import build_chunk
from twin_stream.sdk.emit import new_out
from twin_stream.sdk.state import StateArrays
from twin_stream.sdk.testing import check_model

T0 = 1_767_225_600_000
LIM = limits_for("NMC")


def chunk(cells: np.ndarray, current: float = 10.0, voltage: np.ndarray | None = None):
    n = cells.shape[0]
    return build_chunk(
        "b",
        T0 + 1000 * np.arange(n),
        np.full(n, current),
        prev_ts=None,
        max_gap_ms=60_000,
        cells=cells,
        voltage=voltage,
    )


def test_open_wire_masks_both_channels_and_raises_once_each() -> None:
    n = 20
    cells = np.full((n, 4), 3.70)
    cells[5:, 1] = 0.0  # the wire of cell index 1 opens at row 5
    cells[5:, 2] = 7.40  # its neighbour reads both cells
    out, alerts, _, removed = check(chunk(cells), initial_state(), LIM, 100.0)
    assert removed == 2 * (n - 5)
    assert np.isnan(out.cells[5:, 1:3]).all() and (out.cells[:, [0, 3]] == 3.70).all()
    assert np.isfinite(out.cells[:5]).all()
    # raised once 5 s (raise_ms) and 3 samples of the fault have passed: each faulty row adds
    # the 1 s interval before it, so rows 5..9
    got = [(int((a.ts - T0) // 1000), a.cell, a.status) for a in alerts]
    assert got == [(9, 1, "raised"), (9, 2, "raised")]
    assert all("open_wire" in a.message and a.code == "sensor_fault" for a in alerts)


def test_a_real_over_voltage_is_never_masked() -> None:
    cells = np.full((30, 4), 3.95)
    cells[:, 3] = np.linspace(4.2, 4.45, 30)  # a real over-voltage: far below 5.0 V
    out, alerts, _, removed = check(chunk(cells), initial_state(), LIM, 100.0)
    assert removed == 0 and alerts == []
    assert out.cells is not None and np.array_equal(out.cells, cells)


def test_impossible_reading_masked_and_cleared_after_it_is_plausible_again() -> None:
    n = 60
    cells = np.full((n, 3), 3.7)
    cells[2:12, 0] = 6.5  # no NMC cell reads 6.5 V, and no neighbour pattern
    out, alerts, _, removed = check(chunk(cells), initial_state(), LIM, 100.0)
    assert removed == 10 and np.isnan(out.cells[2:12, 0]).all()
    got = [(int((a.ts - T0) // 1000), a.status) for a in alerts]
    # raised at row 6 (rows 2..6: 5 s), cleared after 30 s of plausible rows (12..41)
    assert got == [(6, "raised"), (41, "cleared")]
    assert "implausible" in alerts[0].message


def test_stuck_channel_under_current() -> None:
    n = 200
    cells = np.tile(np.linspace(3.9, 3.8, n)[:, None], (1, 3))  # the string discharges
    cells[:, 2] = 3.9  # cell index 2 never changes
    out, alerts, _, _ = check(chunk(cells, current=50.0), initial_state(), LIM, 100.0)
    stuck_rows = np.flatnonzero(np.isnan(out.cells[:, 2]))
    # 120 unchanged samples under current and the median moved >= 20 mV by then
    assert stuck_rows[0] == 120 and stuck_rows[-1] == n - 1
    assert [(a.cell, a.status) for a in alerts] == [(2, "raised")]
    assert "stuck" in alerts[0].message
    # at rest nothing is "stuck": the same readings without current
    out2, alerts2, _, _ = check(chunk(cells, current=0.0), initial_state(), LIM, 100.0)
    assert alerts2 == [] and np.isfinite(out2.cells).all()


def test_pack_voltage_against_the_sum_of_the_cells() -> None:
    n = 20
    cells = np.full((n, 4), 3.7)
    volt = np.full(n, 14.8)
    volt[8:] = 12.0  # the pack voltage sensor drifts 19 % low
    _, alerts, _, removed = check(chunk(cells, voltage=volt), initial_state(), LIM, 100.0)
    assert removed == 0
    assert [(int((a.ts - T0) // 1000), a.cell, a.status) for a in alerts] == [(12, None, "raised")]


@pytest.mark.parametrize("cut", [1, 7, 33, 90, 150])
def test_any_chunking_gives_the_same_masks_and_alerts(cut: int) -> None:
    rng = np.random.default_rng(3)
    n = 200
    cells = 3.7 + rng.normal(0, 0.002, (n, 5))
    cells[20:90, 2], cells[20:90, 3] = 0.0, 7.4
    cells[100:, 4] = cells[100, 4]
    cells[140:160, 0] = np.nan
    whole = chunk(cells, current=40.0)
    out, alerts, state, removed = check(whole, initial_state(), LIM, 100.0)
    a, b = whole.slice(0, cut), whole.slice(cut, n)
    out_a, al_a, st_a, rem_a = check(a, initial_state(), LIM, 100.0)
    out_b, al_b, st_b, rem_b = check(b, st_a, LIM, 100.0)
    assert al_a + al_b == alerts and rem_a + rem_b == removed and st_b == state
    assert np.array_equal(np.vstack([out_a.cells, out_b.cells]), out.cells, equal_nan=True)


def _stuck_loop(cells, current, median, carried, lim, capacity_ah):
    """The stuck rule as a plain per-sample loop: the reference the vectorised code must
    reproduce exactly."""
    n, k = cells.shape
    runs: list[list[Any]] = carried if carried is not None else [[None, 0, None, 0]] * k
    out = np.zeros((n, k), dtype=bool)
    new = []
    for j in range(k):
        value, length, start, conf = runs[j]
        for i in range(n):
            v = cells[i, j]
            if v != v:
                continue
            if v == value:
                if abs(current[i]) >= lim.stuck_c_rate * capacity_ah:
                    length += 1
            else:
                m = median[i]
                value, length, conf = v, 0, 0
                start = m if m == m else None
            if not conf and length >= lim.stuck_samples and start is not None:
                conf = int(abs(median[i] - start) >= lim.stuck_min_move_v)
            out[i, j] = bool(conf)
        new.append([value, length, start, conf])
    return out, new


@pytest.mark.parametrize("seed", range(12))
def test_stuck_rule_equals_the_per_sample_loop(seed: int) -> None:
    """The kernel's stuck channels (the readings it masks: nothing else is implausible here)
    and its carried runs (the state arrays) against the plain per-sample loop."""
    from dataclasses import replace as dc_replace

    rng = np.random.default_rng(seed)
    lim = dc_replace(LIM, stuck_samples=int(rng.integers(1, 15)))
    n, k = 120, 6
    if seed % 2:  # coarse readings with holes: runs of equal values everywhere
        cells = np.round(3.7 + rng.normal(0, 0.02, (n, k)), 2)
        cells[rng.random((n, k)) < 0.3] = np.nan
    else:  # fine readings, no holes: most columns never repeat
        cells = np.round(3.7 + rng.normal(0, 0.02, (n, k)), 6)
    cells[:, 2] = 3.7  # one stuck column
    current = rng.choice([0.0, 2.0, 40.0], n)
    with np.errstate(all="ignore"):
        median = np.nanmedian(cells, axis=1)
    c = chunk(cells)
    c = dc_replace(c, current=current)
    carried = None
    state = initial_state()
    for lo, hi in ((0, 37), (37, 38), (38, n)):
        part = c.slice(lo, hi)
        out, _, state, _ = check(part, state, lim, 100.0)
        got = np.isnan(out.cells) & np.isfinite(part.cells)
        carried_got = [
            [None if v is None else v, ln, st, conf]
            for v, ln, st, conf in zip(
                state["stuck_value"],
                state["stuck_len"],
                state["stuck_start"],
                state["stuck_conf"],
                strict=True,
            )
        ]
        want, carried_want = _stuck_loop(
            cells[lo:hi], current[lo:hi], median[lo:hi], carried, lim, 100.0
        )
        assert np.array_equal(got, want)
        assert carried_got == carried_want
        carried = carried_got


def test_a_pre_kernel_state_is_migrated_with_its_counters_and_runs() -> None:
    """The state the vectorised stage (7ede5ae) stored after rows 0..7 of the open-wire case:
    the debounce is 3 s / 3 samples into the fault and raises on row 9 as without a cut."""
    n = 20
    cells = np.full((n, 4), 3.70)
    cells[5:, 1], cells[5:, 2] = 0.0, 7.40
    old_state = {
        "channels": {"cell:1": [3000, 0, 0, 3, 0, 0], "cell:2": [3000, 0, 0, 3, 0, 0]},
        "stuck": [[3.7, 7, 3.7, 0], [0.0, 2, 3.7, 0], [7.4, 2, 3.7, 0], [3.7, 7, 3.7, 0]],
    }
    whole = chunk(cells)
    _, alerts, state, _ = check(whole.slice(8, n), old_state, LIM, 100.0)
    assert [(int((a.ts - T0) // 1000), a.cell, a.status) for a in alerts] == [
        (9, 1, "raised"),
        (9, 2, "raised"),
    ]
    assert state == check(whole, initial_state(), LIM, 100.0)[2]


def _interleaved(chunks: list, rng: np.random.Generator) -> tuple:
    """The chunks as batteries (slots 0..) of one block, interleaved at random; the record
    index of each (slot, row)."""
    order = np.concatenate([np.full(len(c), k) for k, c in enumerate(chunks)])
    rng.shuffle(order)
    width = max(c.cells.shape[1] for c in chunks)
    rows = np.zeros(len(chunks), dtype=np.int64)
    take = []
    for k in order:
        take.append((int(k), int(rows[k])))
        rows[k] += 1
    cells = np.full((len(take), width), np.nan)
    for r, (k, i) in enumerate(take):
        cells[r, : chunks[k].cells.shape[1]] = chunks[k].cells[i]

    def col(name: str) -> np.ndarray:
        return np.array([getattr(chunks[k], name)[i] for k, i in take])

    blk = Block(
        order.astype(np.int64),
        col("ts").astype(np.int64),
        col("dt_ms").astype(np.int64),
        col("gap").astype(np.bool_),
        col("current"),
        col("voltage"),
        cells,
        np.empty((len(take), 0)),
        col("soc"),
        col("soh"),
        np.array([c.cells.shape[1] for c in chunks], dtype=np.int64),
        np.zeros(len(chunks), dtype=np.int64),
    )
    return blk, take


def _fleet(seed: int) -> tuple[list, list]:
    """Batteries of different widths, chemistries and capacities, with every fault kind."""
    rng = np.random.default_rng(seed)
    chunks, stages = [], []
    for b, (k, chem, cap) in enumerate(
        [(4, "NMC", 100.0), (16, "LFP", 280.0), (7, "NMC", 50.0), (0, "NMC", 100.0),
         (96, "LFP", 100.0), (1, "NMC", 100.0), (130, "NMC", 60.0)]
    ):  # fmt: skip
        n = int(rng.integers(60, 260))
        cells = np.round(3.6 - np.cumsum(rng.normal(5e-4, 1e-3, (n, 1)), 0), 3) + np.round(
            rng.normal(0, 0.002, (n, k)), 3
        )
        if k >= 3:
            j = int(rng.integers(0, k - 1))
            cells[n // 4 : n // 2, j], cells[n // 4 : n // 2, j + 1] = 0.0, 7.3
            cells[n // 3 :, k - 1] = cells[n // 3, k - 1]  # stuck
            cells[10:40, 1] = np.nan
            cells[50:60, 0] = 6.0
        volt = np.nansum(cells, axis=1) * rng.choice([1.0, 0.9], n, p=[0.7, 0.3])
        cur = rng.choice([0.0, 40.0], n, p=[0.2, 0.8])
        ts = T0 + np.cumsum(rng.choice([1000, 1000, 2000, 90_000], n)) + b
        chunks.append(
            build_chunk(
                f"b{b}", ts, cur, prev_ts=None, max_gap_ms=60_000, cells=cells, voltage=volt
            )
        )
        lim = limits_for(chem)
        stages.append(Plausibility(replace(lim, stuck_samples=20), cap))
    return chunks, stages


@pytest.mark.parametrize("seed", range(3))
def test_many_batteries_interleaved_in_one_block_get_what_each_gets_alone(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    chunks, stages = _fleet(seed)
    alone = [
        check(c, initial_state(), s.limits, s.capacity_ah)
        for c, s in zip(chunks, stages, strict=True)
    ]
    assert sum(len(a[1]) for a in alone) > 10 and sum(a[3] for a in alone) > 100
    blk, take = _interleaved(chunks, rng)
    params = np.vstack([s.param_row() for s in stages])
    stage = stages[0]  # any instance runs any slot: the parameters are the rows
    state = StateArrays(stage.state_spec, len(chunks), blk.cells.shape[1])
    # in pieces, with an output buffer that holds one record's alerts at most (restarts)
    cells = blk.cells.copy()
    rows = []
    bounds = [0, *sorted(rng.choice(np.arange(1, len(blk)), 5, replace=False)), len(blk)]
    for a, b in itertools.pairwise(bounds):
        part = blk.take(np.arange(a, b))
        part_cells = part.cells.copy()
        out = new_out(2 * blk.cells.shape[1] + 1)
        start = 0
        while start < len(part):
            start, w = stage.run_cells(part, part_cells, params, state, out, start)
            got = out[:w].copy()
            got[:, 0] += a  # the record's index in the part -> in the block
            rows.append(got)
            out[:w] = np.nan
        cells[a:b] = part_cells
    emitted = np.concatenate(rows)
    alerts = stage.outputs(emitted, blk.ts)
    for k, (c, want) in enumerate(zip(chunks, alone, strict=True)):
        mine = [a for a, r in zip(alerts, emitted[:, 0], strict=True) if blk.slot[int(r)] == k]
        assert mine == want[1], k
        got = np.array([cells[r, : c.cells.shape[1]] for r, (s, _) in enumerate(take) if s == k])
        assert np.array_equal(got.reshape(want[0].cells.shape), want[0].cells, equal_nan=True)
        assert state.to_dict(k, c.cells.shape[1], 0) == want[2], k
    # and the whole block at once through apply (blk itself untouched)
    before = blk.cells.copy()
    state2 = StateArrays(stage.state_spec, len(chunks), blk.cells.shape[1])
    masked, rows2, removed = stage.apply(blk, params, state2)
    assert np.array_equal(blk.cells, before, equal_nan=True)
    assert np.array_equal(masked.cells, cells, equal_nan=True)
    assert np.array_equal(rows2, emitted, equal_nan=True)
    assert removed == sum(a[3] for a in alone)


def test_the_stage_holds_the_kernel_model_contract() -> None:
    chunks, stages = _fleet(7)
    check_model(stages[1], [c for c in chunks if c.cells.shape[1] > 0])


def test_a_chunk_without_cell_readings_keeps_the_state() -> None:
    cells = np.full((10, 3), 3.7)
    cells[4:, 1] = 6.5
    _, _, state, _ = check(chunk(cells), initial_state(), LIM, 100.0)
    _, alerts, after, removed = check(chunk(np.empty((5, 0))), state, LIM, 100.0)
    assert (alerts, removed, after) == ([], 0, state)
