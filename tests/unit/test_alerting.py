"""twin_stream.sdk.alerting.debounce: the leaky counters in time and samples, hold, tally, and
chunking invariance, with hand-worked sequences (dt is the interval before each row)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_stream.sdk.alerting import Event, debounce


def col(bits: str) -> np.ndarray:
    return np.array([[c == "1"] for c in bits], dtype=bool)


def run(raise_bits, clear_bits, dt, channels=None, hold_bits=None, tally=None, **kw):
    ch = {} if channels is None else channels
    events = debounce(
        np.asarray(dt, dtype=np.int64),
        col(raise_bits),
        col(clear_bits),
        ["k"],
        ch,
        hold=None if hold_bits is None else col(hold_bits),
        tally=None if tally is None else np.asarray(tally, dtype=np.int64)[:, None],
        **kw,
    )
    return events, ch


def test_single_sample_glitch_at_0_1_hz_fills_time_but_not_samples():
    dt = [10_000] * 8
    ev, ch = run("00100000", "00000000", dt, raise_ms=5000, clear_ms=5000, raise_samples=3)
    assert ev == [] and ch == {}  # leaked back: 10 s then -10 s, 1 sample then 0
    ev, _ = run("00111000", "00000000", dt, raise_ms=5000, clear_ms=5000, raise_samples=3)
    assert ev == [Event(4, 0, True, 0)]  # third sample
    # the time-only counter of before (raise_samples 1) raised on the glitch
    ev, _ = run("00100000", "00000000", dt, raise_ms=5000, clear_ms=5000)
    assert ev == [Event(2, 0, True, 0)]


def test_sample_counter_leaks_like_the_time_counter():
    dt = [1000] * 9
    # 1,0,1,0,1,2,3 samples; time 1000,0,1000,0,1000,2000,3000 -> raised at row 8
    ev, _ = run("101010111", "000000000", dt, raise_ms=3000, clear_ms=1000, raise_samples=3)
    assert ev == [Event(8, 0, True, 0)]
    # time full (10 s) but the good samples leak the count: 1,2,1,0,1,2,1,0,1: never raised
    ev, _ = run("110011001", "000000000", [10_000] * 9, raise_ms=5000, clear_ms=1, raise_samples=3)
    assert ev == []


def test_clear_needs_time_and_samples_and_state_between_chunks():
    dt = [1000] * 6
    ch: dict = {}
    ev, ch = run(
        "111000", "000111", dt, ch, raise_ms=2000, clear_ms=2000, raise_samples=3, clear_samples=4
    )
    assert ev == [Event(2, 0, True, 0)] and ch == {"k": [0, 1, 2000, 0, 3, 0]}
    ev, ch = run(
        "0", "1", [1000], ch, raise_ms=2000, clear_ms=2000, raise_samples=3, clear_samples=4
    )
    assert ev == [Event(0, 0, False, 0)] and ch == {}


def test_old_three_entry_state_is_read_with_zero_counts():
    ch = {"k": [1000, 0, 0]}
    ev, ch = run("1", "0", [1000], ch, raise_ms=2000, clear_ms=1000, raise_samples=1)
    assert ev == [Event(0, 0, True, 0)]


def test_hold_neither_adds_nor_leaks_and_tally_counts_the_episode():
    # raise 3 s / 3 samples; rows: V H H V H V (raise at 5) . . C C (clear at 9)
    r = "1001010000"
    h = "0110100000"
    c = "0000000111"
    w = [5, 7, 7, 5, 7, 5, 0, 0, 0, 0]
    ev, ch = run(
        r,
        c,
        [1000] * 10,
        None,
        h,
        w,
        raise_ms=3000,
        clear_ms=2000,
        raise_samples=3,
        clear_samples=2,
    )
    assert ev == [Event(5, 0, True, 15), Event(8, 0, False, 15)]
    assert ch == {}
    # without hold the gaps leak: never raised, and the tally of a leaked episode is dropped
    ev, ch = run(
        r,
        c,
        [1000] * 10,
        None,
        None,
        w,
        raise_ms=3000,
        clear_ms=2000,
        raise_samples=3,
        clear_samples=2,
    )
    assert ev == [] and ch == {}


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.booleans(), st.booleans(), st.booleans(), st.integers(0, 5000), st.integers(0, 9)
        ),
        min_size=1,
        max_size=80,
    ),
    cuts=st.lists(st.integers(1, 79), max_size=8, unique=True).map(sorted),
    r_n=st.integers(1, 4),
    c_n=st.integers(1, 4),
)
def test_chunking_invariance(data, cuts, r_n, c_n):
    n = len(data)
    rc = np.array([[d[0]] for d in data])
    cc = np.array([[d[1]] for d in data])
    hc = np.array([[d[2]] for d in data])
    dt = np.array([d[3] for d in data], dtype=np.int64)
    w = np.array([[d[4]] for d in data], dtype=np.int64)
    kw = dict(raise_ms=3000, clear_ms=4000, raise_samples=r_n, clear_samples=c_n)

    def go(bounds):
        ch: dict = {}
        out = []
        for a, b in itertools.pairwise(bounds):
            ev = debounce(dt[a:b], rc[a:b], cc[a:b], ["k"], ch, hold=hc[a:b], tally=w[a:b], **kw)
            out += [e._replace(row=e.row + a) for e in ev]
        return out, ch

    whole = go([0, n])
    pieces = go([0, *[c for c in cuts if c < n], n])
    assert pieces == whole
