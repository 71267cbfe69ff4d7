"""Duty profiles for the PyBaMM oracle, in C-rate units (+ = discharge), sampled at 1 Hz.

A duty is a list of segments: ``rest`` (0 A), ``drive`` (a synthetic urban drive cycle:
stops with a small auxiliary load, acceleration peaks, cruising, regenerative braking) and
``charge`` / ``discharge`` (constant current). Everything is seeded, so a duty is a pure
function of its name, the cell capacity and the seed; the fixture cache keys on them.

The drive cycle is built from micro-trips (idle -> ramp up to a peak -> cruise with an AR(1)
wobble -> regen ramp back to zero), the same structure as standard 1 Hz drive cycles
(UDDS, WLTP class 3), then scaled so its mean C-rate is the segment's ``c_rate``. Peaks are
clipped to ``PEAK_C`` and regen to ``REGEN_C``. Idle draws ``IDLE_C`` (auxiliaries): a stop
at a traffic light is not a rest for the twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SegmentKind = Literal["rest", "drive", "charge", "discharge"]

IDLE_C = 0.02
PEAK_C = 2.2
REGEN_C = 0.9


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    minutes: float
    c_rate: float = 0.0  # drive: mean C-rate; charge / discharge: constant C-rate (> 0)

    @property
    def seconds(self) -> int:
        return round(self.minutes * 60)


# The duties. Mean SOC path (start -> after each segment) is noted for a mean cell.
DUTIES: dict[str, tuple[Segment, ...]] = {
    # CI: ~3.2 h, two 1 h rests (SOC ~65 % after a drive, ~83 % after a charge).
    "small": (
        Segment("rest", 10),
        Segment("drive", 25, 0.45),  # 85 -> ~66 %
        Segment("rest", 60),
        Segment("charge", 25, 0.45),  # -> ~84 %
        Segment("rest", 60),
        Segment("drive", 10, 0.45),  # -> ~76 %
        Segment("rest", 2),
    ),
    # bench: ~9.5 h, four rests >= 1 h spread over the SOC range (high, low, high, mid).
    "full": (
        Segment("rest", 15),
        Segment("drive", 55, 0.45),  # 88 -> ~47 %
        Segment("rest", 75),
        Segment("drive", 35, 0.45),  # -> ~21 %
        Segment("rest", 70),
        Segment("charge", 120, 0.33),  # -> ~87 %
        Segment("rest", 90),
        Segment("drive", 35, 0.45),  # -> ~61 %
        Segment("rest", 60),
        Segment("drive", 10, 0.45),
        Segment("rest", 5),
    ),
    # bench: OCV sweep, ~16.6 h: 0.5C steps of 7 min (5.8 % SOC, so rests fall between the
    # tables' 10 % knots as well as near them) from 97 % down to ~15 %, each followed by 1 h
    # of rest: SOC-from-OCV and imbalance across the SOC range.
    "ocv_sweep": (
        Segment("rest", 60),
        *(s for _ in range(14) for s in (Segment("discharge", 7, 0.5), Segment("rest", 60))),
    ),
}

# Mean initial SOC of each duty (fraction).
DUTY_SOC_START: dict[str, float] = {"small": 0.85, "full": 0.88, "ocv_sweep": 0.97}


@dataclass(frozen=True)
class Profile:
    """A sampled current profile: t [s] at 1 Hz, current [A] (+ = discharge), segment index."""

    t: IntArray
    current: FloatArray
    segment: IntArray
    segments: tuple[Segment, ...]

    def bounds(self, index: int) -> tuple[int, int]:
        """First and last second of segment `index` (inclusive)."""
        rows = np.flatnonzero(self.segment == index)
        return int(self.t[rows[0]]), int(self.t[rows[-1]])


def drive_cycle(seconds: int, mean_c: float, rng: np.random.Generator) -> FloatArray:
    """A synthetic urban drive cycle in C-rate, `seconds` samples at 1 Hz, mean `mean_c`."""
    out: list[float] = []
    while len(out) < seconds:
        idle = int(rng.integers(5, 26))
        out.extend([IDLE_C] * idle)
        up = int(rng.integers(6, 16))
        peak = float(rng.uniform(1.0, 2.0))
        out.extend(np.linspace(IDLE_C, peak, up + 1)[1:].tolist())
        cruise = int(rng.integers(20, 151))
        level = float(rng.uniform(0.2, 0.7))
        wob = np.empty(cruise)
        x = 0.0
        for k in range(cruise):
            x = 0.9 * x + float(rng.normal(0.0, 0.03))
            wob[k] = x
        ramp = np.linspace(peak, level, min(8, cruise))
        body = np.full(cruise, level) + wob
        body[: ramp.size] = ramp + wob[: ramp.size]
        out.extend(body.tolist())
        down = int(rng.integers(5, 13))
        regen = float(rng.uniform(0.3, 0.8))
        out.extend((-regen * np.sin(np.linspace(0, np.pi, down + 2)[1:-1])).tolist())
    cyc = np.asarray(out[:seconds], dtype=np.float64)
    cyc[0] = IDLE_C
    pos = cyc > IDLE_C
    # scale the traction part so that the mean is mean_c (regen and idle stay as drawn)
    need = mean_c * seconds - cyc[~pos].sum()
    cyc[pos] *= need / cyc[pos].sum()
    return np.clip(cyc, -REGEN_C, PEAK_C)


def build_profile(duty: str | tuple[Segment, ...], capacity_ah: float, seed: int) -> Profile:
    """The duty's current at 1 Hz for a cell of `capacity_ah` (C-rates times capacity).

    Samples t = 0 .. T; sample k holds the current at t = k, and the simulation interpolates
    linearly between samples (as PyBaMM does with a 1 Hz drive cycle), so the trapezoid of
    the samples is the exact charge moved. A segment starts at its first second and the
    current steps at segment edges within one second.
    """
    segments = DUTIES[duty] if isinstance(duty, str) else duty
    rng = np.random.default_rng(seed)
    parts: list[FloatArray] = []
    index: list[IntArray] = []
    for i, seg in enumerate(segments):
        n = seg.seconds
        if seg.kind == "rest":
            c = np.zeros(n)
        elif seg.kind == "charge":
            c = np.full(n, -abs(seg.c_rate))
        elif seg.kind == "discharge":
            c = np.full(n, abs(seg.c_rate))
        else:
            c = drive_cycle(n, seg.c_rate, rng)
        parts.append(c)
        index.append(np.full(n, i, dtype=np.int64))
    c_all = np.concatenate([*parts, [0.0]])  # closing sample at T, at rest
    seg_all = np.concatenate([*index, [len(segments) - 1]])
    if segments[-1].kind != "rest":
        raise ValueError("a duty must end with a rest")
    t = np.arange(c_all.size, dtype=np.int64)
    return Profile(t=t, current=c_all * capacity_ah, segment=seg_all, segments=segments)
