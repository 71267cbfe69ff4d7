"""Field-telemetry truth generator: realistic fleet telemetry of one battery plus its exact truth,
for the field suite of issue 10 (`tests/field/`, `bench/field/`).

`twin_stream.devtools.simulate` makes lab-like telemetry (1 Hz, clean sensors). Field data differs
(reference/field.md): sparse and jittered sampling with holes, ADC noise and quantisation, a
current-sensor offset, parasitic loads at "rest", cold, LFP hysteresis, invalid markers and
sensor faults. This module builds such telemetry from a physical truth and returns the truth
beside it, so a scenario can bound the twin's outputs against what really happened.

Cell model (one series string of `cells` cells, every cell carries the same current I,
I > 0 = discharge, A; per cell c a capacity Q_c, a resistance factor f_c and an initial SOC):

    soc_c(t)  = soc0_c - 100 * q(t) / Q_c,      dq/dt = eta(I) * I / 3600      (%, Ah, s)
    v_j'      = -v_j / tau_j(T) + I / C_j,      tau_j(T) = tau_j * A(T)        (j = 1, 2)
    h'        = -|eta * I * gamma / (3600 * Q_nom)| * (h - s_I),  s_I = +1 charging, -1 discharging
    s         = s_I while |I| > s_threshold_c * Q_nom, else its last value      (Plett's ESC)
    V_c       = OCV(soc_c) + M0 * s + M * h - f_c * A(T) * (R0 * I + v_1 + v_2)
    A(T)      = exp(activation_k * (1/T - 1/T_ref))                           (Arrhenius-like)

OCV(soc) is the chemistry's table (`twin_stream.battery.chemistry.get_chemistry`), taken as the
mean of
the charge and discharge branches: after a long charge the rest voltage sits M0 + M above it,
after a long discharge M0 + M below (the hysteresis half-width). eta = the chemistry's charge
efficiency while charging, 1 while discharging. Resistances are normalised to capacity
(R = r_ohm_ah / Q_nom). Defaults (`CELL_DEFAULTS`): NMC R0 0.08, R1 0.03 / tau1 30 s, R2 0.03 /
tau2 900 s, M0 1 mV, M 3 mV; LFP R0 0.12, R1 0.04 / 40 s, R2 0.04 / 1500 s, M0 3 mV, M 12 mV
(half-width 15 mV, reference/field.md: 5-25 mV), gamma 40 (90 % of the branch after ~6 % SOC of
throughput); activation_k 3000 K (R and tau x2.5 at 0 degC, x3.1 at -5 degC). Spread per cell
(seeded): capacity +/-2 %, resistance +/-5 %, initial SOC +/-1 % points (uniform).

Integration: the current is piecewise constant on a fine step (`dt_fine_s`, 0.1 s), and every
state is updated exactly over a step (exponentials for the RC pairs, the hysteresis and the
lumped temperature), so throughput, SOC and RC voltages are exact for that current. Outputs are
evaluated exactly at each record's own timestamp (partial step), independently of the output
sampling. Temperature: one lumped cell temperature, C_th dT/dt = heat - (T - T_amb)/R_th, heat
= R0 I^2 + v_1^2/R1 + v_2^2/R2 (20 J/K per Ah, 125 K Ah/W as in `simulate`), held over a step.

Duty (`Segment`): rest (optionally with a parasitic load), CC charge/discharge (for minutes or
until the mean true SOC reaches a target), CC-CV charge (CV on the highest cell, ends below a
taper current), drive (`twin_stream.devtools.oracle.duty.drive_cycle`: micro-trips with regen,
so the
current changes sign, interpolated from 1 s to the fine step).

Telemetry (`Sensors`): sampling at `hz` (0.1-10 Hz, or 1/60) with uniform timing jitter, holes
and random drops; cell and pack voltage, current and temperatures with Gaussian ADC noise and
quantisation steps; a current-sensor offset; a BMS `soc` with bias, drift and noise; `soh` as a
value, 0 (not yet computed) or absent. `SensorFault`s act on named channels over time windows:
invalid marker (65.535, -1, None = null in the array), stuck (holds its value), open sense
wire (0 V on the cell, about 2x on its neighbour), offset, out-of-range optional field.
`Excursion`s change the TRUE voltage of a cell (a real over-voltage, not a sensor fault).

`generate(config, seed)` returns a `FieldRun`: `records` (the twin's telemetry record shape,
schemas/telemetry.py; markers may make some invalid under today's codec), `clean` (the same
samples and noise without sensor faults and without out-of-range optional fields) and `truth`
(`Truth`: per record the true SOC per cell and pack, true current, cell voltages, temperature,
cumulative charge/discharge Ah and kWh, hysteresis state; rests, segments, faults, excursions,
holes). `PRESETS` holds the named `Scenario`s of issue 10's conditions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from twin_stream.battery.chemistry import Chemistry, get_chemistry
from twin_stream.devtools.oracle.duty import drive_cycle
from twin_stream.devtools.simulate import charge_voltage

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KELVIN = 273.15
HEAT_CAPACITY_J_PER_K_AH = 20.0
THERMAL_RESISTANCE_K_AH_PER_W = 125.0
INVALID_MV16 = 65.535  # J1939 "not available": all ones in a 16-bit mV field

# --- model parameters --------------------------------------------------------------------------


@dataclass(frozen=True)
class CellModel:
    """Equivalent-circuit parameters at `t_ref_c`; resistances x capacity (Ohm Ah)."""

    r0_ohm_ah: float
    r1_ohm_ah: float
    tau1_s: float
    r2_ohm_ah: float
    tau2_s: float
    hyst_m0_v: float  # instantaneous hysteresis (sign of the last significant current)
    hyst_m_v: float  # dynamic hysteresis amplitude
    hyst_gamma: float  # hysteresis rate per unit SOC of throughput
    s_threshold_c: float = 0.01  # |I| above this C-rate sets the instantaneous sign s
    activation_k: float = 3000.0  # Ea / R_gas: R and tau x exp(k (1/T - 1/T_ref))
    t_ref_c: float = 25.0

    @property
    def half_width_v(self) -> float:
        return self.hyst_m0_v + self.hyst_m_v


CELL_DEFAULTS: dict[str, CellModel] = {
    "NMC": CellModel(0.08, 0.03, 30.0, 0.03, 900.0, 0.001, 0.003, 40.0),
    "LFP": CellModel(0.12, 0.04, 40.0, 0.04, 1500.0, 0.003, 0.012, 40.0),
}


def arrhenius(temp_c: npt.ArrayLike, model: CellModel) -> FloatArray:
    """Factor on R and tau at temperature(s) `temp_c` relative to `model.t_ref_c`."""
    t = np.asarray(temp_c, dtype=float) + KELVIN
    return np.exp(model.activation_k * (1.0 / t - 1.0 / (model.t_ref_c + KELVIN)))


# --- duty --------------------------------------------------------------------------------------

SegmentKind = Literal["rest", "cc", "cccv", "drive"]


@dataclass(frozen=True)
class Segment:
    """One duty segment. cc: c_rate > 0 discharge, < 0 charge, for `minutes` or until the mean
    true SOC reaches `until_soc` (whichever first when both are given). cccv: charge at
    |c_rate| to `v_cv` (default `simulate.charge_voltage`) on the highest cell, then CV until
    |I| < taper_c x Q; `minutes` is the longest it may last. drive: mean C-rate `c_rate`, with
    regen. rest: |I| = parasitic_a (discharge)."""

    kind: SegmentKind
    minutes: float = 0.0
    c_rate: float = 0.0
    until_soc: float | None = None
    parasitic_a: float = 0.0
    v_cv: float | None = None
    taper_c: float = 0.05


def rest(minutes: float, parasitic_a: float = 0.0) -> Segment:
    return Segment("rest", minutes, parasitic_a=parasitic_a)


def cc(c_rate: float, minutes: float = 1e9, until_soc: float | None = None) -> Segment:
    return Segment("cc", minutes, c_rate=c_rate, until_soc=until_soc)


def cccv(c_rate: float, max_minutes: float, v_cv: float | None = None) -> Segment:
    return Segment("cccv", max_minutes, c_rate=-abs(c_rate), v_cv=v_cv)


def drive(minutes: float, mean_c: float = 0.45) -> Segment:
    return Segment("drive", minutes, c_rate=mean_c)


# --- sensors and faults ------------------------------------------------------------------------

FaultKind = Literal["invalid", "stuck", "open_wire", "offset", "out_of_range"]


@dataclass(frozen=True)
class SensorFault:
    """A sensor fault on `channel` ("cell_voltages[3]", "temperatures[0]", "current",
    "voltage", "soc", "soh") from start_s to end_s (None = to the end), seconds from start.
    invalid / out_of_range: the reading is `value` (None = null); offset: reading + value;
    stuck: the reading holds the first value of the window; open_wire (cells only): the cell
    reads 0 V and its neighbour (next cell, or the previous for the last) the sum of both."""

    kind: FaultKind
    channel: str
    start_s: float = 0.0
    end_s: float | None = None
    value: float | None = INVALID_MV16


@dataclass(frozen=True)
class Excursion:
    """A real voltage excursion of cell `cell`: the true voltage moves linearly to `target_v`
    over ramp_s, holds until end_s - ramp_s, and returns over ramp_s."""

    cell: int
    start_s: float
    end_s: float
    target_v: float
    ramp_s: float = 10.0


@dataclass(frozen=True)
class Sensors:
    hz: float = 1.0
    jitter_s: float = 0.0  # uniform +/- on every sample time
    drop_prob: float = 0.0  # random single-sample losses
    holes: tuple[tuple[float, float], ...] = ()  # (start_s, end_s) without any sample
    v_noise_v: float = 0.0008
    v_step_v: float = 0.001
    pack_v_noise_v: float = 0.02
    pack_v_step_v: float = 0.05
    i_noise_a: float = 0.05
    i_step_a: float = 0.1
    i_offset_a: float = 0.0
    temperatures: int = 4
    t_noise_c: float = 0.2
    t_step_c: float = 0.1
    t_spread_c: float = 0.5  # fixed per-sensor offset, uniform +/-
    soc_bias_pct: float = 0.0
    soc_drift_pct_per_h: float = 0.0
    soc_noise_pct: float = 0.1
    soc_step_pct: float = 0.1
    soh: float | None = None  # reported SOH (0 = "not computed yet"), None = field absent


@dataclass(frozen=True)
class FieldConfig:
    battery_id: str = "field-1"
    chemistry: str = "NMC"
    cells: int = 16
    capacity_ah: float = 100.0
    soc0: float = 80.0  # mean initial true SOC, %
    h0: float = 0.0  # initial dynamic hysteresis state (-1 discharge .. +1 charge branch)
    duty: tuple[Segment, ...] = (rest(10.0),)
    sensors: Sensors = field(default_factory=Sensors)
    faults: tuple[SensorFault, ...] = ()
    excursions: tuple[Excursion, ...] = ()
    model: CellModel | None = None  # None: CELL_DEFAULTS[chemistry]
    spread_capacity: float = 0.02
    spread_r: float = 0.05
    spread_soc: float = 1.0
    ambient_c: float = 25.0
    ambient_swing_c: float = 0.0  # daily sine amplitude around ambient_c
    dt_fine_s: float = 0.1
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def cell_model(self) -> CellModel:
        return self.model or CELL_DEFAULTS[self.chemistry.upper()]


# --- truth -------------------------------------------------------------------------------------


@dataclass
class Truth:
    """What really happened; arrays are per output record (the same order as `records`)."""

    battery_id: str
    chemistry: str
    model: dict[str, Any]
    capacity_ah: FloatArray  # (C,) per cell
    r_factor: FloatArray  # (C,)
    soc0: FloatArray  # (C,)
    ts: IntArray  # (N,) epoch ms
    soc_cells: FloatArray  # (N, C) %
    soc: FloatArray  # (N,) pack mean
    current: FloatArray  # (N,) A, true (before offset, noise, quantisation)
    cell_voltages: FloatArray  # (N, C) V, true terminal voltages (excursions included)
    voltage: FloatArray  # (N,) V, true pack voltage
    temperature: FloatArray  # (N,) degC, lumped cell temperature
    discharge_ah: FloatArray  # (N,) cumulative since t = 0, fine-step exact
    charge_ah: FloatArray  # (N,)
    discharge_kwh: FloatArray  # (N,) pack terminal energy out
    charge_kwh: FloatArray  # (N,) in
    hysteresis: FloatArray  # (N,) dynamic state h
    branch: list[str]  # (N,) "charge" / "discharge" / "none": sign s of the last current
    totals: dict[str, float]  # whole run: discharge_ah, charge_ah, discharge_kwh, charge_kwh
    duration_s: float
    segments: list[dict[str, Any]]
    rests: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    excursions: list[dict[str, Any]]
    holes: list[dict[str, Any]]
    dropped: int  # nominal samples lost to holes and random drops

    def throughput_ah(self, i0: int, i1: int) -> tuple[float, float]:
        """(discharge, charge) Ah between records i0 and i1."""
        return (
            float(self.discharge_ah[i1] - self.discharge_ah[i0]),
            float(self.charge_ah[i1] - self.charge_ah[i0]),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY))


@dataclass
class FieldRun:
    records: list[dict[str, Any]]
    clean: list[dict[str, Any]]
    truth: Truth


# --- the fine-step integration -------------------------------------------------------------------


@dataclass
class _Fine:
    dt: float
    current: FloatArray  # (K,) per step
    q: FloatArray  # (K+1,) at step boundaries: eta-weighted net discharge Ah
    dis: FloatArray  # (K+1,) cumulative discharge Ah
    chg: FloatArray  # (K+1,)
    v1: FloatArray  # (K+1,) nominal-cell RC voltages
    v2: FloatArray
    h: FloatArray
    s: FloatArray
    temp: FloatArray
    ambient: FloatArray
    seg_steps: list[tuple[int, int]]  # per segment: first step, end step (exclusive)


@dataclass(frozen=True)
class _Cells:
    q: FloatArray
    f: FloatArray
    soc0: FloatArray


def _ambient(cfg: FieldConfig, t: float) -> float:
    return cfg.ambient_c + cfg.ambient_swing_c * math.sin(2.0 * math.pi * t / 86400.0)


def _integrate(cfg: FieldConfig, chem: Chemistry, cells: _Cells, rng: np.random.Generator) -> _Fine:
    m = cfg.cell_model()
    dt = cfg.dt_fine_s
    qn = cfg.capacity_ah
    r0, r1, r2 = m.r0_ohm_ah / qn, m.r1_ohm_ah / qn, m.r2_ohm_ah / qn
    eta_c = chem.charge_efficiency
    s_thr = m.s_threshold_c * qn
    tk_ref = 1.0 / (m.t_ref_c + KELVIN)
    a_th = math.exp(-dt / (HEAT_CAPACITY_J_PER_K_AH * THERMAL_RESISTANCE_K_AH_PER_W))
    r_th = THERMAL_RESISTANCE_K_AH_PER_W / qn
    ocv_s, ocv_v = chem.ocv.soc_array, chem.ocv.voltage_array
    inv_q_mean = float(np.mean(1.0 / cells.q))

    cur: list[float] = []
    q_l, dis_l, chg_l, v1_l, v2_l = [0.0], [0.0], [0.0], [0.0], [0.0]
    h0 = cfg.h0
    h_l, s_l = [h0], [float(np.sign(h0))]
    temp_l, amb_l = [_ambient(cfg, 0.0)], [_ambient(cfg, 0.0)]
    state = {"q": 0.0, "dis": 0.0, "chg": 0.0, "v1": 0.0, "v2": 0.0, "h": h0}
    state["s"] = s_l[0]
    state["T"] = temp_l[0]

    def step(i: float) -> None:
        t_now = len(cur) * dt
        temp = state["T"]
        fa = math.exp(m.activation_k * (1.0 / (temp + KELVIN) - tk_ref))
        a1 = math.exp(-dt / (m.tau1_s * fa))
        a2 = math.exp(-dt / (m.tau2_s * fa))
        v1 = state["v1"] * a1 + r1 * fa * i * (1.0 - a1)
        v2 = state["v2"] * a2 + r2 * fa * i * (1.0 - a2)
        eta = eta_c if i < 0 else 1.0
        state["q"] += eta * i * dt / 3600.0
        if i > 0:
            state["dis"] += i * dt / 3600.0
        elif i < 0:
            state["chg"] -= i * dt / 3600.0
        if i != 0.0:
            target = 1.0 if i < 0 else -1.0
            decay = math.exp(-abs(eta * i * m.hyst_gamma * dt / (3600.0 * qn)))
            state["h"] = target + (state["h"] - target) * decay
            if abs(i) > s_thr:
                state["s"] = target
        heat = i * i * r0 * fa + state["v1"] ** 2 / (r1 * fa) + state["v2"] ** 2 / (r2 * fa)
        amb = _ambient(cfg, t_now)
        t_ss = amb + heat * r_th
        state["T"] = t_ss + (temp - t_ss) * a_th
        state["v1"], state["v2"] = v1, v2
        cur.append(i)
        q_l.append(state["q"])
        dis_l.append(state["dis"])
        chg_l.append(state["chg"])
        v1_l.append(v1)
        v2_l.append(v2)
        h_l.append(state["h"])
        s_l.append(state["s"])
        temp_l.append(state["T"])
        amb_l.append(amb)

    def soc_mean() -> float:
        return float(np.mean(cells.soc0)) - 100.0 * state["q"] * inv_q_mean

    seg_steps: list[tuple[int, int]] = []
    for seg in cfg.duty:
        k0 = len(cur)
        n_max = round(seg.minutes * 60.0 / dt) if seg.minutes < 1e8 else 10**9
        if seg.kind == "rest":
            for _ in range(n_max):
                step(seg.parasitic_a)
        elif seg.kind == "cc":
            i = seg.c_rate * qn
            n = n_max
            if seg.until_soc is not None and i != 0:
                eta = eta_c if i < 0 else 1.0
                dq = (soc_mean() - seg.until_soc) / (100.0 * inv_q_mean)
                n = min(n, max(0, round(dq * 3600.0 / (eta * i * dt))))
            if n >= 10**9:
                raise ValueError("fieldsim: a cc segment needs minutes or until_soc")
            for _ in range(n):
                step(i)
        elif seg.kind == "cccv":
            i_cc = seg.c_rate * qn
            v_cv = seg.v_cv if seg.v_cv is not None else charge_voltage(chem)
            taper = seg.taper_c * qn
            for _ in range(n_max):
                fa = float(arrhenius(state["T"], m))
                soc_c = cells.soc0 - 100.0 * state["q"] / cells.q
                hyst = m.hyst_m0_v * state["s"] + m.hyst_m_v * state["h"]
                rest_v = (
                    np.interp(soc_c, ocv_s, ocv_v)
                    + hyst
                    - cells.f * fa * (state["v1"] + state["v2"])
                )
                lim = float(np.max((rest_v - v_cv) / (cells.f * fa * r0)))
                i = max(i_cc, lim)
                if i > -taper:
                    break
                step(i)
        elif seg.kind == "drive":
            secs = max(2, round(seg.minutes * 60.0))
            c1 = drive_cycle(secs, seg.c_rate, rng) * qn
            tf = np.arange(n_max) * dt
            for i in np.interp(tf, np.arange(secs, dtype=float), c1).tolist():
                step(i)
        else:  # pragma: no cover - Literal guards it
            raise ValueError(f"fieldsim: unknown segment kind {seg.kind!r}")
        seg_steps.append((k0, len(cur)))
    if not cur:
        raise ValueError("fieldsim: the duty is empty")
    return _Fine(
        dt=dt,
        current=np.asarray(cur),
        q=np.asarray(q_l),
        dis=np.asarray(dis_l),
        chg=np.asarray(chg_l),
        v1=np.asarray(v1_l),
        v2=np.asarray(v2_l),
        h=np.asarray(h_l),
        s=np.asarray(s_l),
        temp=np.asarray(temp_l),
        ambient=np.asarray(amb_l),
        seg_steps=seg_steps,
    )


def _pack_voltage_steps(
    fine: _Fine, cells: _Cells, chem: Chemistry, m: CellModel, qn: float
) -> FloatArray:
    """True pack voltage at every step start (the left point of each fine step)."""
    n = fine.current.size
    out = np.empty(n)
    fsum = float(cells.f.sum())
    block = max(1, 2_000_000 // cells.q.size)
    for a in range(0, n, block):
        b = min(n, a + block)
        soc = cells.soc0[None, :] - 100.0 * fine.q[a:b, None] / cells.q[None, :]
        ocv = np.interp(soc, chem.ocv.soc_array, chem.ocv.voltage_array).sum(axis=1)
        fa = arrhenius(fine.temp[a:b], m)
        hyst = m.hyst_m0_v * fine.s[a:b] + m.hyst_m_v * fine.h[a:b]
        drop = fsum * fa * (m.r0_ohm_ah / qn * fine.current[a:b] + fine.v1[a:b] + fine.v2[a:b])
        out[a:b] = ocv + cells.q.size * hyst - drop
    return out


# --- sampling and sensors ----------------------------------------------------------------------


def _quantise(x: FloatArray, step: float) -> FloatArray:
    if step <= 0:
        return x
    decimals = max(0, 6 - math.floor(math.log10(step)))
    return np.round(np.rint(x / step) * step, min(decimals, 12))


def _sample_times(
    cfg: FieldConfig, total_s: float, rng: np.random.Generator
) -> tuple[FloatArray, int]:
    sn = cfg.sensors
    period = 1.0 / sn.hz
    n = math.floor(total_s * sn.hz + 1e-9) + 1
    t = np.arange(n) * period
    if sn.jitter_s > 0:
        t = t + rng.uniform(-sn.jitter_s, sn.jitter_s, n)
    t = np.clip(t, 0.0, total_s)
    keep = np.ones(n, dtype=bool)
    for a, b in sn.holes:
        keep &= ~((t >= a) & (t < b))
    if sn.drop_prob > 0:
        keep &= rng.random(n) >= sn.drop_prob
    ms = np.unique(np.rint(t[keep] * 1000.0).astype(np.int64))
    return ms / 1000.0, int(n - ms.size)


def _channel(channel: str) -> tuple[str, int | None]:
    if "[" in channel:
        name, rest_ = channel.split("[", 1)
        return name, int(rest_.rstrip("]"))
    return channel, None


def generate(cfg: FieldConfig, seed: int = 0) -> FieldRun:
    """Field telemetry of one battery and its truth; a pure function of (cfg, seed)."""
    chem = get_chemistry(cfg.chemistry)
    m = cfg.cell_model()
    ss = np.random.SeedSequence(seed)
    rng_cells, rng_duty, rng_time, rng_noise = (np.random.default_rng(s) for s in ss.spawn(4))
    nc, qn = cfg.cells, cfg.capacity_ah
    if nc < 1 or qn <= 0 or cfg.dt_fine_s <= 0 or cfg.sensors.hz <= 0:
        raise ValueError("fieldsim: cells >= 1, capacity_ah > 0, dt_fine_s > 0, hz > 0")
    cells = _Cells(
        q=qn * (1.0 + rng_cells.uniform(-cfg.spread_capacity, cfg.spread_capacity, nc)),
        f=1.0 + rng_cells.uniform(-cfg.spread_r, cfg.spread_r, nc),
        soc0=cfg.soc0 + rng_cells.uniform(-cfg.spread_soc, cfg.spread_soc, nc),
    )
    fine = _integrate(cfg, chem, cells, rng_duty)
    dt, n_steps = fine.dt, fine.current.size
    total_s = n_steps * dt
    soc_ext = (
        cells.soc0[None, :] - 100.0 * np.array([fine.q.min(), fine.q.max()])[:, None] / cells.q
    )
    if soc_ext.min() < 0.0 or soc_ext.max() > 100.0:
        raise ValueError(
            f"fieldsim: a cell's true SOC leaves 0..100 % ({soc_ext.min():.1f}.."
            f"{soc_ext.max():.1f}); change soc0 or the duty"
        )
    v_pack_steps = _pack_voltage_steps(fine, cells, chem, m, qn)
    e_step = v_pack_steps * fine.current * dt / 3.6e6  # kWh, + = out
    e_dis = np.concatenate([[0.0], np.cumsum(np.where(e_step > 0, e_step, 0.0))])
    e_chg = np.concatenate([[0.0], np.cumsum(np.where(e_step < 0, -e_step, 0.0))])

    # --- truth at each record's timestamp (exact partial step) ---
    t, dropped = _sample_times(cfg, total_s, rng_time)
    ts = cfg.start_ms + np.rint(t * 1000.0).astype(np.int64)
    k = np.minimum((t / dt).astype(np.int64), n_steps - 1)
    tau = t - k * dt
    i_rec = fine.current[k]
    temp0 = fine.temp[k]
    fa = arrhenius(temp0, m)
    eta = np.where(i_rec < 0, chem.charge_efficiency, 1.0)
    q = fine.q[k] + eta * i_rec * tau / 3600.0
    dis = fine.dis[k] + np.where(i_rec > 0, i_rec, 0.0) * tau / 3600.0
    chg = fine.chg[k] + np.where(i_rec < 0, -i_rec, 0.0) * tau / 3600.0
    a1 = np.exp(-tau / (m.tau1_s * fa))
    a2 = np.exp(-tau / (m.tau2_s * fa))
    v1 = fine.v1[k] * a1 + m.r1_ohm_ah / qn * fa * i_rec * (1.0 - a1)
    v2 = fine.v2[k] * a2 + m.r2_ohm_ah / qn * fa * i_rec * (1.0 - a2)
    target = np.where(i_rec < 0, 1.0, -1.0)
    decay = np.exp(-np.abs(eta * i_rec * m.hyst_gamma * tau / (3600.0 * qn)))
    h = np.where(i_rec != 0, target + (fine.h[k] - target) * decay, fine.h[k])
    s = np.where(np.abs(i_rec) > m.s_threshold_c * qn, target, fine.s[k])
    s = np.where(tau > 0, s, fine.s[k])
    h = np.where(tau > 0, h, fine.h[k])
    soc_cells = cells.soc0[None, :] - 100.0 * q[:, None] / cells.q[None, :]
    ocv = np.interp(soc_cells, chem.ocv.soc_array, chem.ocv.voltage_array)
    hyst = m.hyst_m0_v * s + m.hyst_m_v * h
    v_true = (
        ocv
        + hyst[:, None]
        - cells.f[None, :] * fa[:, None] * (m.r0_ohm_ah / qn * i_rec + v1 + v2)[:, None]
    )
    excursions = []
    for ex in cfg.excursions:
        w = np.clip(np.minimum(t - ex.start_s, ex.end_s - t) / max(ex.ramp_s, 1e-9), 0.0, 1.0)
        v_true[:, ex.cell] += w * (ex.target_v - v_true[:, ex.cell])
        excursions.append(
            {
                **asdict(ex),
                "start_ms": int(cfg.start_ms + round(ex.start_s * 1000)),
                "end_ms": int(cfg.start_ms + round(ex.end_s * 1000)),
                "records": int(np.count_nonzero(w > 0)),
            }
        )
    e_dis_rec = e_dis[k] + np.where(i_rec > 0, v_pack_steps[k] * i_rec * tau / 3.6e6, 0.0)
    e_chg_rec = e_chg[k] + np.where(i_rec < 0, -v_pack_steps[k] * i_rec * tau / 3.6e6, 0.0)

    # --- sensors ---
    sn = cfg.sensors
    n = t.size
    cells_m = _quantise(v_true + rng_noise.normal(0.0, sn.v_noise_v, (n, nc)), sn.v_step_v)
    pack_m = _quantise(
        v_true.sum(axis=1) + rng_noise.normal(0.0, sn.pack_v_noise_v, n), sn.pack_v_step_v
    )
    cur_m = _quantise(i_rec + sn.i_offset_a + rng_noise.normal(0.0, sn.i_noise_a, n), sn.i_step_a)
    t_off = rng_noise.uniform(-sn.t_spread_c, sn.t_spread_c, sn.temperatures)
    temps_m = _quantise(
        temp0[:, None] + t_off[None, :] + rng_noise.normal(0.0, sn.t_noise_c, (n, sn.temperatures)),
        sn.t_step_c,
    )
    soc_m = _quantise(
        np.clip(
            soc_cells.mean(axis=1)
            + sn.soc_bias_pct
            + sn.soc_drift_pct_per_h * t / 3600.0
            + rng_noise.normal(0.0, sn.soc_noise_pct, n),
            0.0,
            100.0,
        ),
        sn.soc_step_pct,
    )
    soh_m = np.full(n, np.nan if sn.soh is None else sn.soh)
    clean_arrays = {
        "current": cur_m,
        "voltage": pack_m,
        "cell_voltages": cells_m,
        "temperatures": temps_m,
        "soc": soc_m,
        "soh": soh_m,
    }
    faulty = {key: arr.copy() for key, arr in clean_arrays.items()}
    steps = {
        "current": sn.i_step_a,
        "voltage": sn.pack_v_step_v,
        "cell_voltages": sn.v_step_v,
        "temperatures": sn.t_step_c,
        "soc": sn.soc_step_pct,
        "soh": 0.0,
    }
    faults_out: list[dict[str, Any]] = []
    for fl in cfg.faults:
        name, idx = _channel(fl.channel)
        if name not in faulty:
            raise ValueError(f"fieldsim: unknown channel {fl.channel!r}")
        arr = faulty[name]
        if (idx is None) != (arr.ndim == 1) or (idx is not None and not 0 <= idx < arr.shape[1]):
            raise ValueError(f"fieldsim: bad channel {fl.channel!r} for field {name!r}")
        end_s = total_s + 1.0 if fl.end_s is None else fl.end_s
        win = (t >= fl.start_s) & (t < end_s)
        col: Any = (slice(None),) if idx is None else (slice(None), idx)
        view = arr[col]
        nb: int | None = None
        val = np.nan if fl.value is None else float(fl.value)
        if fl.kind in ("invalid", "out_of_range"):
            view[win] = val
        elif fl.kind == "offset":
            view[win] = _quantise(view[win] + val, steps[name])
        elif fl.kind == "stuck":
            if win.any():
                view[win] = view[np.flatnonzero(win)[0]]
        elif fl.kind == "open_wire":
            if idx is None or name != "cell_voltages":
                raise ValueError("fieldsim: open_wire needs a cell_voltages[i] channel")
            nb = idx + 1 if idx + 1 < nc else idx - 1
            arr[win, nb] = np.round(arr[win, nb] + arr[win, idx], 6)
            arr[win, idx] = 0.0
        else:
            raise ValueError(f"fieldsim: unknown fault kind {fl.kind!r}")
        arr[col] = view
        faults_out.append(
            {
                "kind": fl.kind,
                "channel": fl.channel,
                "field": name,
                "index": idx,
                "neighbour": nb,
                "value": fl.value,
                "start_ms": int(cfg.start_ms + round(fl.start_s * 1000)),
                "end_ms": int(cfg.start_ms + round(end_s * 1000)) if fl.end_s is not None else None,
                "records": int(np.count_nonzero(win)),
            }
        )

    # --- truth bookkeeping ---
    m_dict = asdict(m)
    m_dict.update(
        half_width_v=m.half_width_v,
        charge_efficiency=chem.charge_efficiency,
        dt_fine_s=dt,
        sensors=asdict(sn),
    )
    segments, rests = _segments(cfg, fine, cells)
    truth = Truth(
        battery_id=cfg.battery_id,
        chemistry=chem.name,
        model=m_dict,
        capacity_ah=cells.q,
        r_factor=cells.f,
        soc0=cells.soc0,
        ts=ts,
        soc_cells=soc_cells,
        soc=soc_cells.mean(axis=1),
        current=i_rec,
        cell_voltages=v_true,
        voltage=v_true.sum(axis=1),
        temperature=temp0,
        discharge_ah=dis,
        charge_ah=chg,
        discharge_kwh=e_dis_rec,
        charge_kwh=e_chg_rec,
        hysteresis=h,
        branch=["charge" if x > 0 else "discharge" if x < 0 else "none" for x in s.tolist()],
        totals={
            "discharge_ah": float(fine.dis[-1]),
            "charge_ah": float(fine.chg[-1]),
            "discharge_kwh": float(e_dis[-1]),
            "charge_kwh": float(e_chg[-1]),
        },
        duration_s=total_s,
        segments=segments,
        rests=rests,
        faults=faults_out,
        excursions=excursions,
        holes=[
            {"start_ms": cfg.start_ms + round(a * 1000), "end_ms": cfg.start_ms + round(b * 1000)}
            for a, b in sn.holes
        ],
        dropped=dropped,
    )
    return FieldRun(
        records=_records(cfg.battery_id, ts, faulty, clean=False),
        clean=_records(cfg.battery_id, ts, clean_arrays, clean=True),
        truth=truth,
    )


def _segments(
    cfg: FieldConfig, fine: _Fine, cells: _Cells
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    segments: list[dict[str, Any]] = []
    rests: list[dict[str, Any]] = []
    s_thr = cfg.cell_model().s_threshold_c * cfg.capacity_ah
    dt = fine.dt
    for seg, (a, b) in zip(cfg.duty, fine.seg_steps, strict=True):
        soc_end = cells.soc0 - 100.0 * fine.q[b] / cells.q
        entry = {
            "kind": seg.kind,
            "start_ms": int(cfg.start_ms + round(a * dt * 1000)),
            "end_ms": int(cfg.start_ms + round(b * dt * 1000)),
            "duration_s": (b - a) * dt,
            "discharge_ah": float(fine.dis[b] - fine.dis[a]),
            "charge_ah": float(fine.chg[b] - fine.chg[a]),
            "soc_end": float(soc_end.mean()),
        }
        segments.append(entry)
        if seg.kind == "rest":
            before = np.flatnonzero(np.abs(fine.current[:a]) > s_thr)
            after = (
                "start"
                if before.size == 0
                else "charge"
                if fine.current[before[-1]] < 0
                else "discharge"
            )
            rests.append(
                {
                    **entry,
                    "parasitic_a": seg.parasitic_a,
                    "after": after,
                    "soc_end_cells": soc_end.tolist(),
                    "hysteresis_end": float(fine.h[b]),
                }
            )
    return segments, rests


def _in_range(key: str, v: float) -> bool:
    """The codec's range of the optional BMS fields (soc 0..100, soh (1, 100])."""
    if key == "soc":
        return 0.0 <= v <= 100.0
    if key == "soh":
        return 1.0 < v <= 100.0
    return True


def _records(
    battery_id: str, ts: IntArray, arrays: dict[str, FloatArray], *, clean: bool
) -> list[dict[str, Any]]:
    cols = {key: arr.tolist() for key, arr in arrays.items()}
    nan_rows = {
        key: set(np.flatnonzero(np.isnan(arr).any(axis=1)).tolist())
        for key, arr in arrays.items()
        if arr.ndim == 2
    }
    out: list[dict[str, Any]] = []
    for j, ms in enumerate(ts.tolist()):
        rec: dict[str, Any] = {"battery_id": battery_id, "ts": ms}
        for key in ("current", "voltage", "cell_voltages", "temperatures", "soc", "soh"):
            v = cols[key][j]
            if isinstance(v, list):
                if j in nan_rows[key]:
                    v = [None if x != x else x for x in v]
                if v:
                    rec[key] = v
            elif v == v:  # not NaN
                if not (clean and not _in_range(key, v)):
                    rec[key] = v
            elif key in ("current", "voltage") and not clean:
                rec[key] = None  # an invalid required / pack field is sent as null
        out.append(rec)
    return out


def write_jsonl(records: Iterable[dict[str, Any]], path: Path | str) -> int:
    """Records as JSON Lines (what `twin-stream replay` reads); returns the number written."""
    n = 0
    with Path(path).open("wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            n += 1
    return n


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    config: FieldConfig
    seed: int = 0
    description: str = ""

    def generate(self) -> FieldRun:
        return generate(self.config, self.seed)

    def twin_settings(self) -> dict[str, Any]:
        """A settings overlay telling the twin this battery's chemistry, capacity and string
        (`twin-stream replay FILE --settings S`); without it the twin assumes its defaults."""
        c = self.config
        return {
            "fleet": {
                "defaults": {
                    "chemistry": c.chemistry.upper(),
                    "capacity_ah": c.capacity_ah,
                    "cells_in_series": c.cells,
                }
            }
        }

    def with_config(self, **changes: Any) -> Scenario:
        return replace(self, config=replace(self.config, **changes))

    def with_sensors(self, **changes: Any) -> Scenario:
        return self.with_config(sensors=replace(self.config.sensors, **changes))


def _presets() -> dict[str, Scenario]:
    def sc(name: str, description: str, **cfg: Any) -> Scenario:
        return Scenario(name, FieldConfig(battery_id=f"field-{name}", **cfg), 0, description)

    out = [
        sc(
            "sparse_regen",
            "NMC 100 Ah, a drive with regen sampled at 0.1 Hz (+/-0.5 s jitter)",
            soc0=85.0,
            duty=(rest(5), drive(60), rest(30), drive(30), rest(10)),
            sensors=Sensors(hz=0.1, jitter_s=0.5),
        ),
        sc(
            "jitter_1min",
            "NMC 100 Ah telematics: one sample a minute with +/-3 s jitter, drive/charge day",
            soc0=85.0,
            duty=(rest(30), drive(90), rest(60), cccv(0.3, 150), rest(60), drive(60), rest(30)),
            sensors=Sensors(hz=1.0 / 60.0, jitter_s=3.0),
        ),
        sc(
            "parasitic_rest",
            "LFP 280 Ah storage pack: a discharge, then 12 h parked with a 1 A parasitic load",
            chemistry="LFP",
            capacity_ah=280.0,
            soc0=75.0,
            duty=(rest(10), drive(40, 0.4), rest(720, parasitic_a=1.0)),
            sensors=Sensors(hz=0.5),
        ),
        sc(
            "parasitic_rest_offset",
            "as parasitic_rest, no parasitic load but a -0.6 A current-sensor offset",
            chemistry="LFP",
            capacity_ah=280.0,
            soc0=75.0,
            duty=(rest(10), drive(40, 0.4), rest(720)),
            sensors=Sensors(hz=0.5, i_offset_a=-0.6),
        ),
        sc(
            "lfp_hysteresis",
            "LFP 100 Ah: true 60 % reached by a charge (3 h rest), then again by a discharge",
            chemistry="LFP",
            soc0=30.0,
            h0=-1.0,
            duty=(
                rest(10),
                cc(-0.5, until_soc=60.0),
                rest(180),
                cc(-0.5, until_soc=90.0),
                rest(30),
                cc(0.5, until_soc=60.0),
                rest(180),
            ),
            sensors=Sensors(hz=0.5),
        ),
        sc(
            "open_wire",
            "NMC 100 Ah, 1 Hz: the sense wire of cell index 5 opens during a drive and a rest",
            soc0=75.0,
            duty=(rest(10), drive(30), rest(50)),
            faults=(SensorFault("open_wire", "cell_voltages[5]", 1200.0, 5400.0),),
        ),
        sc(
            "stuck_channel",
            "NMC 100 Ah, 1 Hz: cell index 7 stuck at its value through a drive",
            soc0=80.0,
            duty=(rest(10), drive(40), rest(30)),
            faults=(SensorFault("stuck", "cell_voltages[7]", 900.0, 3600.0),),
        ),
        sc(
            "invalid_marker",
            "NMC 100 Ah, 1 Hz: cell index 3 always 65.535 V, a real over-voltage on cell 10",
            soc0=85.0,
            duty=(rest(5), cccv(0.5, 40), rest(15)),
            faults=(SensorFault("invalid", "cell_voltages[3]"),),
            excursions=(Excursion(10, 900.0, 1020.0, 4.30),),
        ),
        sc(
            "cold_regen",
            "LFP 200 Ah bus at -5 degC ambient, 30 min of driving with regen braking, 1 Hz",
            chemistry="LFP",
            capacity_ah=200.0,
            soc0=70.0,
            ambient_c=-5.0,
            duty=(rest(5), drive(30, 0.3), rest(10)),
        ),
        sc(
            "bms_fields",
            "NMC 100 Ah, 1 Hz: BMS soc 14.8 % high, soh 0 (not computed), soc 102.3 for 1 min",
            soc0=70.0,
            duty=(rest(5), drive(30), rest(60)),
            sensors=Sensors(soc_bias_pct=14.8, soh=0.0),
            faults=(SensorFault("out_of_range", "soc", 600.0, 660.0, 102.3),),
        ),
    ]
    return {s.name: s for s in out}


PRESETS: dict[str, Scenario] = _presets()


def preset(name: str, seed: int | None = None) -> Scenario:
    s = PRESETS[name]
    return s if seed is None else replace(s, seed=seed)


def storage_day_1min() -> Scenario:
    """jitter_1min's telematics unit (1/min +/- 3 s) on a storage pack's day: constant-current
    segments the samples resolve (where a 0.5 % throughput bound applies at 1/min)."""
    return replace(
        preset("jitter_1min").with_config(
            duty=(rest(30), cc(0.5, 90), rest(60), cccv(0.3, 150), rest(60), cc(0.25, 60), rest(30))
        ),
        name="storage_day_1min",
        description="NMC 100 Ah storage day (CC discharge, CC-CV charge), 1/min +/- 3 s",
    )


def presets(names: Sequence[str] | None = None) -> list[Scenario]:
    return [PRESETS[n] for n in (names or list(PRESETS))]
