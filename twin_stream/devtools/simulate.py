"""Synthetic battery-fleet telemetry with known truth, for `twin-stream simulate`, tests and
the replay benchmark.

Each battery is a series string of `cells` cells. Every cell is an equivalent circuit:

    v_cell = OCV(soc) - R0 * I - v_rc              (I > 0 = discharge, volts)
    d v_rc / dt = -v_rc / tau1 + I / C1,  tau1 = R1 * C1
    d soc / dt  = -eta(I) * I / (36 * Q)           (soc in %, Q in Ah, t in s)

with OCV(soc) the chemistry's table (`twin_stream.battery.chemistry`, the only OCV source),
eta = the
chemistry's charge efficiency while charging and 1 while discharging, and per-cell spread in
capacity (+/-3 %), R0 (+/-10 %) and initial SOC (+/-2 % points). Current is held constant over
a sample interval (zero-order hold), so the RC branch is stepped exactly with exp(-dt/tau1).
The same current flows through every cell; the pack `voltage` is the sum of the cell voltages.
A lumped battery temperature follows ambient (25 degC) plus I^2 R heating with a thermal time
constant; the `temperatures` sensors are that temperature plus small fixed per-sensor offsets
and noise.

The duty cycle per battery (durations drawn per battery and cycle, so batteries are out of
phase): rest 0-5 min, drive 10-15 min (discharge 0.3-1 C, random levels every 10-60 s,
smoothed, 2 % noise), rest 16-18 min (|I| = 0 exactly), charge (CC ~0.5 C, then CV at the
chemistry's normal maximum, see `charge_voltage`; at most 15-25 min, ends early when the CV
current falls below C/20 or the fullest cell reaches 95 % SOC), rest 6-10 min, drive again.
Drive stops early when the emptiest cell is at 12 % SOC. A clean fleet never crosses a
warning limit of its chemistry.

Reported values are rounded like a BMS: cell and pack voltage to 1 mV, current to 0.01 A (the
model runs on the rounded current, so the published current is the current that flowed),
temperatures to 0.1 degC, soc (mean true cell SOC) to 0.1 %. Faults and transport defects
(out-of-limit cells, a weak cell, gaps, reordering, duplicates, bad records) are injected on
request and listed in `SimResult.truth`, beside the true SOC, throughput and duty phases.
"""

from __future__ import annotations

import csv
import gc
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from twin_stream.battery.chemistry import Chemistry, get_chemistry

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FIELDS = (
    "battery_id",
    "ts",
    "current",
    "voltage",
    "cell_voltages",
    "temperatures",
    "soc",
    "soh",
    "seq",
)
_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

# --- model parameters (documented in the module docstring and the truth's "model") ----------


@dataclass(frozen=True)
class CellCircuit:
    """Equivalent-circuit parameters of one chemistry, normalised to capacity: R = r / Q[Ah]."""

    r0_ohm_ah: float  # series resistance x capacity (0.08 -> 0.8 mOhm at 100 Ah)
    r1_ohm_ah: float  # RC-branch resistance x capacity
    tau1_s: float  # RC-branch time constant R1 * C1


CIRCUITS: dict[str, CellCircuit] = {
    "NMC": CellCircuit(r0_ohm_ah=0.08, r1_ohm_ah=0.04, tau1_s=60.0),
    "LFP": CellCircuit(r0_ohm_ah=0.10, r1_ohm_ah=0.05, tau1_s=80.0),
}
AMBIENT_C = 25.0
HEAT_CAPACITY_J_PER_K_AH = 20.0  # per cell: 2 kJ/K for a 100 Ah cell
THERMAL_RESISTANCE_K_AH_PER_W = 125.0  # per cell to ambient: 1.25 K/W at 100 Ah (tau 2500 s)
SPREAD_CAPACITY = 0.03
SPREAD_R0 = 0.10
SPREAD_SOC = 2.0  # % points
SOC_START = (40.0, 88.0)  # battery mean SOC at t = 0, %
SOC_FLOOR = 12.0  # drive ends when the emptiest cell reaches this, %
SOC_CEIL = 95.0  # charge ends when the fullest cell reaches this, %
DRIVE_C = (0.3, 1.0)  # drive current levels, C-rate
DRIVE_LEVEL_S = (10.0, 60.0)  # seconds between drive-level changes
DRIVE_SMOOTH_S = 3.0
DRIVE_NOISE = 0.02  # relative
DRIVE_CLIP_C = (0.25, 1.05)
CHARGE_C = 0.5
CHARGE_SPREAD = 0.05  # per-battery CC current within +/-5 %
TAPER_C = 1.0 / 20.0  # CV ends below C/20
SENSOR_OFFSET_C = 0.5
SENSOR_NOISE_C = 0.05
WEAK_CELL_FACTOR = 0.85

# duty phases
REST_START, DRIVE, REST_AFTER_DRIVE, CHARGE, REST_AFTER_CHARGE = range(5)
_PHASE_NAME = {
    REST_START: "rest",
    DRIVE: "drive",
    REST_AFTER_DRIVE: "rest",
    CHARGE: "charge",
    REST_AFTER_CHARGE: "rest",
}
_NEXT = {
    REST_START: DRIVE,
    DRIVE: REST_AFTER_DRIVE,
    REST_AFTER_DRIVE: CHARGE,
    CHARGE: REST_AFTER_CHARGE,
    REST_AFTER_CHARGE: DRIVE,
}
PHASE_SECONDS: dict[int, tuple[float, float]] = {
    REST_START: (0.0, 300.0),
    DRIVE: (600.0, 900.0),
    REST_AFTER_DRIVE: (960.0, 1080.0),
    CHARGE: (900.0, 1500.0),  # the longest a charge may last
    REST_AFTER_CHARGE: (360.0, 600.0),
}

BAD_KINDS = (
    "not_json",
    "missing_current",
    "current_not_number",
    "current_nan_string",
    "ts_before_epoch",
    "battery_id_with_space",
    "empty_cell_array",
)


@dataclass(frozen=True)
class FaultSpec:
    """What to inject. over_voltage, under_voltage, weak_cell, dropout: numbers of batteries;
    disorder (swapped adjacent pairs = late records), duplicates, bad_records: numbers of
    records."""

    over_voltage: int = 0
    under_voltage: int = 0
    weak_cell: int = 0
    dropout: int = 0
    disorder: int = 0
    duplicates: int = 0
    bad_records: int = 0


@dataclass(frozen=True)
class SimConfig:
    batteries: int = 4
    cells: int = 96
    chemistry: str = "NMC"
    capacity_ah: float = 100.0
    duration_s: float = 3600.0
    hz: float = 1.0
    temperatures: int = 8
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    seed: int = 0
    faults: FaultSpec = field(default_factory=FaultSpec)
    id_prefix: str = "bat"

    def __post_init__(self) -> None:
        checks = (
            (self.batteries >= 1, "batteries must be >= 1"),
            (1 <= self.cells <= 1024, "cells must be 1..1024"),
            (0 <= self.temperatures <= 1024, "temperatures must be 0..1024"),
            (self.capacity_ah > 0 and math.isfinite(self.capacity_ah), "capacity_ah must be > 0"),
            (self.hz > 0 and math.isfinite(self.hz), "hz must be > 0"),
            (
                math.isfinite(self.duration_s) and self.duration_s * self.hz >= 2,
                "duration_s * hz must give at least 2 samples",
            ),
            (self.start_ms >= 0, "start_ms must be >= 0"),
            (bool(_ID_OK.match(self.id_prefix)), "id_prefix must be 1-100 chars of A-Za-z0-9._:-"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"simulate: {message}")
        per_battery = ("over_voltage", "under_voltage", "weak_cell", "dropout")
        for name in FaultSpec.__dataclass_fields__:
            n = getattr(self.faults, name)
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"simulate: fault {name} must be a count >= 0, got {n!r}")
            if name in per_battery and n > self.batteries:
                raise ValueError(
                    f"simulate: fault {name}={n} needs as many batteries, "
                    f"the fleet has {self.batteries}"
                )


@dataclass
class SimResult:
    records: list[dict[str, Any] | str]  # in publish order; bad records may be raw text
    truth: dict[str, Any]


def charge_voltage(chem: Chemistry) -> float:
    """CV voltage of the charger: 50 mV under the lower of the first over-voltage limit and
    OCV(100 %) (NMC 4.15 V, LFP 3.55 V)."""
    over = chem.limits["cell_voltage"].over if "cell_voltage" in chem.limits else ()
    top = min([lv.threshold for lv in over] + [float(chem.ocv.voltage_array[-1])])
    return round(top - 0.05, 3)


def _limit(chem: Chemistry, side: str, severity: str) -> float:
    levels = getattr(chem.limits["cell_voltage"], side)
    return float(next(lv.threshold for lv in levels if lv.severity == severity))


# --- physics ---------------------------------------------------------------------------------


@dataclass
class _Physics:
    ts: IntArray  # (T,) epoch ms
    current: FloatArray  # (T, B) A, rounded to 0.01
    cell_mv: npt.NDArray[np.int16]  # (T, B, C) mV
    pack_v: FloatArray  # (T, B) V, unrounded sum of cell voltages
    temp_c: FloatArray  # (T, B) lumped battery temperature
    soc_mean: FloatArray  # (T, B) mean true cell SOC, %
    soc_start: FloatArray  # (B, C)
    soc_end: FloatArray  # (B, C)
    capacity: FloatArray  # (B, C) Ah
    r0: FloatArray  # (B, C) Ohm
    phases: list[list[dict[str, Any]]]  # per battery


def _run_physics(
    cfg: SimConfig, chem: Chemistry, weak: dict[int, int], seeds: list[np.random.SeedSequence]
) -> _Physics:
    rng_cells, rng_sched, rng_drive = (np.random.default_rng(s) for s in seeds[:3])
    n_b, n_c = cfg.batteries, cfg.cells
    n_t = math.floor(cfg.duration_s * cfg.hz + 1e-9)
    dt = 1.0 / cfg.hz
    ts = cfg.start_ms + np.rint(np.arange(n_t) * 1000.0 / cfg.hz).astype(np.int64)
    cap = cfg.capacity_ah
    circ = CIRCUITS.get(chem.name.upper(), CIRCUITS["NMC"])

    q = cap * (1.0 + rng_cells.uniform(-SPREAD_CAPACITY, SPREAD_CAPACITY, (n_b, n_c)))
    for b, c in weak.items():
        q[b, c] *= WEAK_CELL_FACTOR
    r0 = circ.r0_ohm_ah / cap * (1.0 + rng_cells.uniform(-SPREAD_R0, SPREAD_R0, (n_b, n_c)))
    r1 = circ.r1_ohm_ah / cap
    soc = rng_cells.uniform(*SOC_START, (n_b, 1)) + rng_cells.uniform(
        -SPREAD_SOC, SPREAD_SOC, (n_b, n_c)
    )
    soc_start = soc.copy()
    temp = AMBIENT_C + rng_cells.uniform(0.0, 2.0, n_b)
    i_cc = -CHARGE_C * cap * (1.0 + rng_cells.uniform(-CHARGE_SPREAD, CHARGE_SPREAD, n_b))
    vrc = np.zeros((n_b, n_c))
    a_rc = math.exp(-dt / circ.tau1_s)
    c_th = HEAT_CAPACITY_J_PER_K_AH * cap
    r_th = THERMAL_RESISTANCE_K_AH_PER_W / cap
    a_th = math.exp(-dt / (c_th * r_th))
    eta_c = chem.charge_efficiency
    v_cv = charge_voltage(chem)
    taper = TAPER_C * cap
    ocv_s, ocv_v = chem.ocv.soc_array, chem.ocv.voltage_array

    # drive profile state: random levels, first-order smoothed
    level_target = rng_drive.uniform(*DRIVE_C, n_b)
    level_end = rng_drive.uniform(*DRIVE_LEVEL_S, n_b)
    level = level_target.copy()
    a_lvl = 1.0 - math.exp(-dt / DRIVE_SMOOTH_S)

    phase = np.full(n_b, REST_START)
    phase_end = rng_sched.uniform(*PHASE_SECONDS[REST_START], n_b)
    phases: list[list[dict[str, Any]]] = [[] for _ in range(n_b)]
    open_phase: list[dict[str, Any]] = [
        {"phase": "rest", "after": "start", "k0": 0, "true_soc": soc[b].tolist()}
        for b in range(n_b)
    ]

    current = np.zeros((n_t, n_b))
    cell_mv = np.zeros((n_t, n_b, n_c), dtype=np.int16)
    pack_v = np.zeros((n_t, n_b))
    temp_c = np.zeros((n_t, n_b))
    soc_mean = np.zeros((n_t, n_b))

    def advance(b: int, k: int, t: float) -> None:
        old = open_phase[b]
        if k > old["k0"]:
            old["k1"] = k - 1
            phases[b].append(old)
        new = _NEXT[int(phase[b])]
        phase[b] = new
        phase_end[b] = t + rng_sched.uniform(*PHASE_SECONDS[new])
        entry: dict[str, Any] = {"phase": _PHASE_NAME[new], "k0": k}
        if new in (REST_AFTER_DRIVE, REST_AFTER_CHARGE):
            entry["after"] = "drive" if new == REST_AFTER_DRIVE else "charge"
            entry["true_soc"] = soc[b].tolist()  # constant while I = 0
        open_phase[b] = entry

    soc_end = soc
    for k in range(n_t):
        t = k * dt
        # phase changes at this sample
        due = t >= phase_end - 1e-9
        due |= (phase == DRIVE) & (soc.min(axis=1) <= SOC_FLOOR)
        due |= (phase == CHARGE) & (soc.max(axis=1) >= SOC_CEIL)
        for bi in np.flatnonzero(due).tolist():
            advance(bi, k, t)

        # drive-level process (runs always, used while driving)
        new_level = t >= level_end
        if new_level.any():
            n = int(new_level.sum())
            level_target[new_level] = rng_drive.uniform(*DRIVE_C, n)
            level_end[new_level] = t + rng_drive.uniform(*DRIVE_LEVEL_S, n)
        level += (level_target - level) * a_lvl
        noise = rng_drive.standard_normal(n_b)

        ocv = np.interp(soc, ocv_s, ocv_v)
        i_now = np.zeros(n_b)
        driving = phase == DRIVE
        if driving.any():
            c_rate = np.clip(level * (1.0 + DRIVE_NOISE * noise), *DRIVE_CLIP_C)
            i_now[driving] = np.rint(c_rate[driving] * cap * 100.0) / 100.0
        charging = np.flatnonzero(phase == CHARGE)
        if charging.size:
            # CV: the most-charged cell must not exceed v_cv: I >= (OCV - v_rc - v_cv) / R0
            lim = ((ocv[charging] - vrc[charging] - v_cv) / r0[charging]).max(axis=1)
            i_ch = np.ceil(np.maximum(i_cc[charging], lim) * 100.0) / 100.0  # toward zero
            done = i_ch > -taper  # CV current tapered off (or no room at all): charged
            for j in np.flatnonzero((lim > i_cc[charging]) & ~done):
                open_phase[int(charging[j])].setdefault("cv_k", k)
            for j in np.flatnonzero(done):
                advance(int(charging[j]), k, t)
            i_now[charging] = np.where(done, 0.0, i_ch)

        v = ocv - r0 * i_now[:, None] - vrc
        current[k] = i_now
        cell_mv[k] = np.rint(v * 1000.0)
        pack_v[k] = v.sum(axis=1)
        temp_c[k] = temp
        soc_mean[k] = soc.mean(axis=1)
        if k == n_t - 1:
            soc_end = soc.copy()
            break

        heat = (i_now**2)[:, None] * r0 + vrc**2 / r1  # W per cell
        t_ss = AMBIENT_C + heat.mean(axis=1) * r_th
        temp = t_ss + (temp - t_ss) * a_th
        vrc = vrc * a_rc + r1 * (1.0 - a_rc) * i_now[:, None]
        eff = np.where(i_now < 0, eta_c, 1.0)
        soc = soc - (eff * i_now * dt / 36.0)[:, None] / q

    for b in range(n_b):
        last = open_phase[b]
        last["k1"] = n_t - 1
        phases[b].append(last)
        for p in phases[b]:
            k0, k1 = p.pop("k0"), p.pop("k1")
            p["start_ts"], p["end_ts"] = int(ts[k0]), int(ts[k1])
            p["duration_s"] = (int(ts[k1]) - int(ts[k0])) / 1000.0
            if "cv_k" in p:
                p["cv_start_ts"] = int(ts[p.pop("cv_k")])
            if "true_soc" in p:  # keep the key order readable
                p["true_soc"] = p.pop("true_soc")
    return _Physics(
        ts, current, cell_mv, pack_v, temp_c, soc_mean, soc_start, soc_end, q, r0, phases
    )


# --- faults on the measured data ---------------------------------------------------------------


def _excursion(
    ph: _Physics, cfg: SimConfig, b: int, c: int, t_start: float, target: float, drift: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Drive cell c of battery b towards `target` (linear ramp in, hold, ramp out); returns the
    samples touched and their new mV values."""
    d = cfg.duration_s
    ramp, hold = min(20.0, d / 40.0), min(60.0, d / 20.0)
    t = np.arange(ph.ts.size) / cfg.hz
    u = t - t_start
    w = np.clip(np.minimum(u / ramp, (2 * ramp + hold - u) / ramp), 0.0, 1.0)
    ks = np.flatnonzero(w > 0)
    goal = target + drift * np.clip((u[ks] - ramp) / hold, 0.0, 1.0)
    old = ph.cell_mv[ks, b, c].astype(np.int64)
    new = np.rint(old + w[ks] * (goal * 1000.0 - old)).astype(np.int64)
    ph.cell_mv[ks, b, c] = new
    ph.pack_v[ks, b] += (new - old) / 1000.0
    return ks, new


def _interval(ts: IntArray, ks: npt.NDArray[np.intp]) -> tuple[int | None, int | None]:
    return (int(ts[ks[0]]), int(ts[ks[-1]])) if ks.size else (None, None)


# --- transport defects and records -------------------------------------------------------------


def _bad_record(kind: str, rec: dict[str, Any], ts_ms: int, bad_id: str) -> dict[str, Any] | str:
    r = dict(rec)
    r["ts"] = ts_ms
    if kind == "not_json":
        text = orjson.dumps(r).decode()
        return text[: max(10, len(text) // 2)]  # truncated object: not valid JSON
    if kind == "missing_current":
        del r["current"]
    elif kind == "current_not_number":
        r["current"] = "abc"
    elif kind == "current_nan_string":
        r["current"] = "NaN"
    elif kind == "ts_before_epoch":  # a required field out of range (an optional one degrades)
        r["ts"] = -1000
    elif kind == "battery_id_with_space":
        r["battery_id"] = bad_id
    elif kind == "empty_cell_array":
        r["cell_voltages"] = []
    return r


def _trapezoid_ah(ts: IntArray, amps: FloatArray) -> float:
    if ts.size < 2:
        return 0.0
    a = np.abs(amps)
    return float(np.sum((a[1:] + a[:-1]) * np.diff(ts)) / 2.0 / 1000.0 / 3600.0)


def simulate(cfg: SimConfig) -> SimResult:
    """Simulate the fleet of `cfg`; records in publish order (time-major, batteries
    interleaved) and the truth. Deterministic for a given config (seed included)."""
    chem = get_chemistry(cfg.chemistry)
    f = cfg.faults
    seeds = np.random.SeedSequence(cfg.seed).spawn(6)
    rng_fault = np.random.default_rng(seeds[4])
    rng_inject = np.random.default_rng(seeds[5])
    n_b, n_c = cfg.batteries, cfg.cells
    width = max(4, len(str(n_b - 1)))
    ids = [f"{cfg.id_prefix}-{i:0{width}d}" for i in range(n_b)]

    # which batteries get which fault: consecutive slices of one permutation, so different
    # kinds fall on different batteries while there are enough of them
    perm = rng_fault.permutation(n_b)
    pointer = 0

    def take(n: int) -> list[int]:
        nonlocal pointer
        out = [int(perm[(pointer + i) % n_b]) for i in range(n)]
        pointer += n
        return out

    over_b, under_b, weak_b, drop_b = (
        take(f.over_voltage),
        take(f.under_voltage),
        take(f.weak_cell),
        take(f.dropout),
    )
    weak = {b: int(rng_fault.integers(n_c)) for b in weak_b}

    ph = _run_physics(cfg, chem, weak, seeds)
    ts = ph.ts
    n_t = ts.size
    d = cfg.duration_s
    faults: list[dict[str, Any]] = []

    for b, c in weak.items():
        faults.append(
            {
                "kind": "weak_cell",
                "battery": ids[b],
                "cell": c,
                "start_ts": int(ts[0]),
                "end_ts": int(ts[-1]),
                "capacity_factor": WEAK_CELL_FACTOR,
            }
        )
    for kind, batteries, side, t_frac, offset, drift in (
        ("over_voltage", over_b, "over", (0.45, 0.50), 0.03, 0.01),
        ("under_voltage", under_b, "under", (0.62, 0.67), -0.05, -0.01),
    ):
        crit = _limit(chem, side, "critical")
        for b in batteries:
            c = int(rng_fault.integers(n_c))
            ks, new = _excursion(
                ph, cfg, b, c, rng_fault.uniform(*t_frac) * d, crit + offset, drift
            )
            beyond = ks[new > crit * 1000.0] if side == "over" else ks[new < crit * 1000.0]
            start, end = _interval(ts, beyond)
            faults.append(
                {
                    "kind": kind,
                    "battery": ids[b],
                    "cell": c,
                    "start_ts": start,
                    "end_ts": end,
                    "severity": "critical",
                    "threshold": crit,
                    "extreme_v": float((new.max() if side == "over" else new.min()) / 1000.0),
                    "window_start_ts": int(ts[ks[0]]),
                    "window_end_ts": int(ts[ks[-1]]),
                }
            )

    sent = np.ones((n_t, n_b), dtype=bool)
    gap = min(300.0, d / 6.0)
    for i, b in enumerate(drop_b):
        t0 = rng_fault.uniform(0.15, 0.25) * d
        ks = np.flatnonzero((np.arange(n_t) / cfg.hz >= t0) & (np.arange(n_t) / cfg.hz < t0 + gap))
        sent[ks, b] = False
        start, end = _interval(ts, ks)
        faults.append(
            {
                "kind": "dropout",
                "battery": ids[b],
                "cell": None,
                "start_ts": start,
                "end_ts": end,
                "samples_missing": int(ks.size),
            }
        )
        if i == 0:  # this battery also falls silent for the end of the run (telemetry_stale)
            ks = np.flatnonzero(np.arange(n_t) / cfg.hz >= d - gap)
            sent[ks, b] = False
            start, end = _interval(ts, ks)
            faults.append(
                {
                    "kind": "silent_end",
                    "battery": ids[b],
                    "cell": None,
                    "start_ts": start,
                    "end_ts": end,
                    "samples_missing": int(ks.size),
                    "last_sent_ts": int(ts[ks[0] - 1]) if ks.size and ks[0] else None,
                }
            )

    records = _build_records(cfg, ph, ids, sent, np.random.default_rng(seeds[3]))
    pos = np.full((n_t, n_b), -1, dtype=np.int64)  # index of each sent sample in `records`
    pos[sent] = np.arange(int(sent.sum()))  # C order = time-major, batteries interleaved

    # disorder: swap adjacent samples of one battery -> the earlier one arrives late
    used = np.zeros((n_t, n_b), dtype=bool)
    late: list[dict[str, Any]] = []
    attempts = 0
    while len(late) < f.disorder:
        attempts += 1
        if attempts > 100 * f.disorder + 1000:
            raise ValueError(f"simulate: cannot place {f.disorder} disordered pairs")
        b, k = int(rng_inject.integers(n_b)), int(rng_inject.integers(n_t - 1))
        if not (sent[k, b] and sent[k + 1, b]) or used[max(0, k - 1) : k + 3, b].any():
            continue
        used[k : k + 2, b] = True
        p1, p2 = int(pos[k, b]), int(pos[k + 1, b])
        records[p1], records[p2] = records[p2], records[p1]
        late.append(
            {"battery": ids[b], "ts": int(ts[k]), "seq": k, "arrives_after_ts": int(ts[k + 1])}
        )

    extras: dict[int, list[dict[str, Any] | str]] = {}
    duplicates: list[dict[str, Any]] = []
    attempts = 0
    while len(duplicates) < f.duplicates:
        attempts += 1
        if attempts > 100 * f.duplicates + 1000:
            raise ValueError(f"simulate: cannot place {f.duplicates} duplicates")
        b, k = int(rng_inject.integers(n_b)), int(rng_inject.integers(n_t))
        if not sent[k, b] or used[k, b]:
            continue
        used[k, b] = True
        p = int(pos[k, b])
        rec = records[p]
        assert isinstance(rec, dict)
        extras.setdefault(p, []).append(dict(rec))  # sent again at once (a producer retry)
        duplicates.append({"battery": ids[b], "ts": int(ts[k]), "seq": k})

    bad: list[dict[str, Any]] = []
    sent_idx = np.argwhere(sent)
    for i in range(f.bad_records):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        k, b = (int(x) for x in sent_idx[int(rng_inject.integers(len(sent_idx)))])
        p = int(pos[k, b])
        rec = records[p]
        assert isinstance(rec, dict)
        t_bad = int(ts[k]) + max(1, round(500.0 / cfg.hz))  # between samples
        bad_id = ids[b].replace("-", " ", 1) if "-" in ids[b] else ids[b] + " x"
        item = _bad_record(kind, rec, t_bad, bad_id)
        extras.setdefault(p, []).append(item)
        bad.append(
            {"kind": kind, "battery": ids[b], "ts": t_bad, "raw_text": isinstance(item, str)}
        )

    if extras:
        merged: list[dict[str, Any] | str] = []
        for i, rec in enumerate(records):
            merged.append(rec)
            more = extras.get(i)
            if more:
                merged.extend(more)
        records = merged

    per_battery: dict[str, Any] = {}
    for b in range(n_b):
        ks = np.flatnonzero(sent[:, b])
        steps = np.diff(ks)
        a = np.abs(ph.current[ks, b])
        observed = float(
            np.sum(((a[1:] + a[:-1]) * np.diff(ts[ks]))[steps == 1]) / 2.0 / 1000.0 / 3600.0
        )
        throughput = _trapezoid_ah(ts, ph.current[:, b])
        per_battery[ids[b]] = {
            "cells": n_c,
            "capacity_ah": cfg.capacity_ah,
            "soh": 100.0,
            "true_soc_start": ph.soc_start[b].tolist(),
            "true_soc_end": ph.soc_end[b].tolist(),
            "true_soc_start_mean": float(ph.soc_start[b].mean()),
            "true_soc_end_mean": float(ph.soc_end[b].mean()),
            "throughput_ah": throughput,
            "true_equivalent_cycles": throughput / (2.0 * cfg.capacity_ah),
            "throughput_ah_observed": observed,  # sent samples only, gaps not integrated
            "equivalent_cycles_observed": observed / (2.0 * cfg.capacity_ah),
            "records_sent": int(ks.size),
            "first_ts": int(ts[ks[0]]) if ks.size else None,
            "last_ts": int(ts[ks[-1]]) if ks.size else None,
            "cell_capacity_ah": ph.capacity[b].tolist(),
            "cell_r0_ohm": ph.r0[b].tolist(),
            "max_temperature_c": float(ph.temp_c[:, b].max()),
            "phases": ph.phases[b],
            "faults": [x for x in faults if x["battery"] == ids[b]],
        }

    circ = CIRCUITS.get(chem.name.upper(), CIRCUITS["NMC"])
    truth: dict[str, Any] = {
        "config": asdict(cfg),
        "chemistry": chem.name,
        "model": {
            "r0_ohm": circ.r0_ohm_ah / cfg.capacity_ah,
            "r1_ohm": circ.r1_ohm_ah / cfg.capacity_ah,
            "tau1_s": circ.tau1_s,
            "charge_voltage_v": charge_voltage(chem),
            "charge_c_rate": CHARGE_C,
            "taper_c_rate": TAPER_C,
            "soc_floor": SOC_FLOOR,
            "soc_ceiling": SOC_CEIL,
            "charge_efficiency": chem.charge_efficiency,
            "ambient_c": AMBIENT_C,
            "thermal_time_constant_s": HEAT_CAPACITY_J_PER_K_AH * THERMAL_RESISTANCE_K_AH_PER_W,
            "spread": {"capacity": SPREAD_CAPACITY, "r0": SPREAD_R0, "soc_points": SPREAD_SOC},
        },
        "start_ts": int(ts[0]),
        "end_ts": int(ts[-1]),
        "samples_per_battery": int(n_t),
        "records": len(records),
        "good_records": int(sent.sum()),
        "duplicates": len(duplicates),
        "late": len(late),
        "bad_records": len(bad),
        "injected": {"duplicates": duplicates, "late": late, "bad_records": bad},
        "faults": faults,
        "batteries": per_battery,
    }
    return SimResult(records=records, truth=truth)


def _interned(values: Iterable[float]) -> npt.NDArray[np.object_]:
    """An object array of Python floats: indexing it shares one float object per distinct
    value, so 720,000 records x 96 cells cost pointers, not a float object each."""
    items = list(values)
    table = np.empty(len(items), dtype=object)
    table[:] = items
    return table


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_records(
    cfg: SimConfig,
    ph: _Physics,
    ids: list[str],
    sent: npt.NDArray[np.bool_],
    rng: np.random.Generator,
) -> list[dict[str, Any] | str]:
    n_t, n_b = ph.current.shape
    n_s = cfg.temperatures
    lo = int(ph.cell_mv.min())
    volt_table = _interned(mv / 1000.0 for mv in range(lo, int(ph.cell_mv.max()) + 1))
    offsets = rng.uniform(-SENSOR_OFFSET_C, SENSOR_OFFSET_C, (n_b, n_s))
    temp_dc = np.zeros((n_t, n_b, n_s), dtype=np.int16)
    chunk = 256
    for k0 in range(0, n_t, chunk):
        k1 = min(n_t, k0 + chunk)
        x = (
            ph.temp_c[k0:k1, :, None]
            + offsets[None]
            + SENSOR_NOISE_C * rng.standard_normal((k1 - k0, n_b, n_s))
        )
        temp_dc[k0:k1] = np.rint(x * 10.0)
    t_lo = int(temp_dc.min()) if n_s else 0
    t_hi = int(temp_dc.max()) if n_s else 0
    temp_table = _interned(dc / 10.0 for dc in range(t_lo, t_hi + 1))

    current = ph.current.tolist()
    voltage = (np.rint(ph.pack_v * 1000.0) / 1000.0).tolist()
    soc = (np.rint(ph.soc_mean * 10.0) / 10.0).tolist()
    ts = ph.ts.tolist()
    soh = 100.0
    records: list[dict[str, Any] | str] = []
    append = records.append
    all_sent = [bool(x) for x in np.asarray(sent.all(axis=1))]
    with _gc_paused():  # millions of new containers, no cycles: a collector pass would
        # only rescan them, again and again
        for k in range(n_t):
            cells = volt_table[ph.cell_mv[k].astype(np.intp) - lo].tolist()
            temps = temp_table[temp_dc[k].astype(np.intp) - t_lo].tolist() if n_s else None
            cur_k, volt_k, soc_k, ts_k = current[k], voltage[k], soc[k], ts[k]
            senders: Iterable[int] = range(n_b) if all_sent[k] else np.flatnonzero(sent[k]).tolist()
            for b in senders:
                rec: dict[str, Any] = {
                    "battery_id": ids[b],
                    "ts": ts_k,
                    "current": cur_k[b],
                    "voltage": volt_k[b],
                    "cell_voltages": cells[b],
                }
                if temps is not None:
                    rec["temperatures"] = temps[b]
                rec["soc"] = soc_k[b]
                rec["soh"] = soh
                rec["seq"] = k
                append(rec)
    return records


# --- files -------------------------------------------------------------------------------------


def write_records(records: Iterable[dict[str, Any] | str], path: Path) -> int:
    """Write records to `path`, format by suffix; returns the number written.

    .jsonl/.ndjson/.json: JSON Lines (orjson), a str item written raw as its own line.
    .csv: a header of the telemetry fields (plus any other keys, first seen first); arrays as
    JSON text in the cell; str items are skipped (a raw line has no columns).
    .parquet: typed columns of the telemetry fields (arrays as list<double>); str items and
    records whose values do not fit the column types (e.g. current "abc") are skipped.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _write_jsonl(records, path)
    if suffix == ".csv":
        return _write_csv(records, path)
    if suffix == ".parquet":
        return _write_parquet(records, path)
    raise ValueError(
        f"{path}: unknown format {suffix or '(no suffix)'!r}; use .jsonl, .csv or .parquet"
    )


def _write_jsonl(records: Iterable[dict[str, Any] | str], path: Path) -> int:
    n = 0
    buf: list[bytes] = []
    dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    with path.open("wb") as fh:
        for rec in records:
            buf.append(
                rec.rstrip("\r\n").encode() if isinstance(rec, str) else dumps(rec, option=opt)
            )
            n += 1
            if len(buf) >= 8192:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    return n


def _csv_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return value


def _write_csv(records: Iterable[dict[str, Any] | str], path: Path) -> int:
    rows = [r for r in records if isinstance(r, dict)]
    columns = list(FIELDS)
    seen = set(columns)
    for r in rows:
        if len(r) > 9 or not seen.issuperset(r):
            for key in r:
                if key not in seen:
                    seen.add(key)
                    columns.append(key)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows([_csv_text(r.get(c)) for c in columns] for r in rows)
    return len(rows)


_PARQUET_KINDS = {
    "battery_id": "str",
    "ts": "int",
    "current": "float",
    "voltage": "float",
    "cell_voltages": "list",
    "temperatures": "list",
    "soc": "float",
    "soh": "float",
    "seq": "int",
}


def _write_parquet(records: Iterable[dict[str, Any] | str], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("battery_id", pa.string()),
            ("ts", pa.int64()),
            ("current", pa.float64()),
            ("voltage", pa.float64()),
            ("cell_voltages", pa.list_(pa.float64())),
            ("temperatures", pa.list_(pa.float64())),
            ("soc", pa.float64()),
            ("soh", pa.float64()),
            ("seq", pa.int64()),
        ]
    )
    errors = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)

    def table(rows: list[dict[str, Any]]) -> Any:
        return pa.table(
            {fld.name: pa.array([r.get(fld.name) for r in rows], type=fld.type) for fld in schema},
            schema=schema,
        )

    def fits(row: dict[str, Any]) -> bool:
        """Whether a record fits the typed columns (checked only when a batch fails)."""
        for key, value in row.items():
            if value is None or key not in _PARQUET_KINDS:
                continue
            kind = _PARQUET_KINDS[key]
            if kind == "list":
                if not isinstance(value, list | tuple) or any(
                    type(x) not in (float, int) for x in value
                ):
                    return False
            elif kind == "str":
                if not isinstance(value, str):
                    return False
            elif kind == "int":
                if type(value) is not int or not -(2**63) <= value < 2**63:
                    return False
            elif type(value) not in (float, int):
                return False
        return True

    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal n
            if not batch:
                return
            try:
                tbl = table(batch)
            except errors:
                good = [r for r in batch if fits(r)]
                tbl = table(good)
            writer.write_table(tbl)
            n += tbl.num_rows
            batch.clear()

        for rec in records:
            if isinstance(rec, dict):
                batch.append(rec)
                if len(batch) >= 50_000:
                    flush()
        flush()
    return n
