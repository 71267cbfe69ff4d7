"""The plausibility layer ahead of the models: hand-made readings, what is masked, what is
raised, and that a real over-voltage is never masked (issue 10, item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from twin_stream.chunk import build_chunk
from twin_stream.plausibility import check, initial_state, limits_for

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
    runs = carried if carried is not None else [[None, 0, None, 0]] * k
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
def test_vectorised_stuck_rule_equals_the_per_sample_loop(seed: int) -> None:
    from dataclasses import replace as dc_replace

    from twin_stream.plausibility import _stuck

    rng = np.random.default_rng(seed)
    lim = dc_replace(LIM, stuck_samples=int(rng.integers(1, 15)))
    n, k = 120, 6
    if seed % 2:  # coarse readings with holes: runs of equal values everywhere
        cells = np.round(3.7 + rng.normal(0, 0.02, (n, k)), 2)
        cells[rng.random((n, k)) < 0.3] = np.nan
    else:  # fine readings, no holes: most columns never repeat (the quick path)
        cells = np.round(3.7 + rng.normal(0, 0.02, (n, k)), 6)
    cells[:, 2] = 3.7  # one stuck column
    current = rng.choice([0.0, 2.0, 40.0], n)
    with np.errstate(all="ignore"):
        median = np.nanmedian(cells, axis=1)
    c = chunk(cells)
    c = dc_replace(c, current=current)
    carried = None
    for lo, hi in ((0, 37), (37, 38), (38, n)):
        part = c.slice(lo, hi)
        got, carried_got = _stuck(part, median[lo:hi], carried, lim, 100.0)
        want, carried_want = _stuck_loop(
            cells[lo:hi], current[lo:hi], median[lo:hi], carried, lim, 100.0
        )
        assert np.array_equal(got, want)
        assert carried_got == carried_want
        carried = carried_got
