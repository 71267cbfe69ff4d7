"""PyBaMM fixture generator: a series string of cells under a duty, as telemetry plus truth.

Each cell of the string is simulated on its own with the string's current (a series string:
one current through every cell; no balancing, no interconnect resistance), which is exact
for a series pack and much faster than a coupled pack model. Cells differ in capacity
(electrode width scaled by 1 +/- ``capacity_spread``, spread evenly over the cells and
shuffled) and in initial SOC (``soc_start`` +/- ``soc_spread``, likewise); both start fully
relaxed (uniform concentrations, PyBaMM's ``initial_soc``).

Outputs, in a cache folder keyed by every parameter, the generator version and the PyBaMM
version (``$TWIN_ORACLE_CACHE``, else ``~/.cache/twin-stream/oracle``; never in git):

* ``telemetry.jsonl``: one record per second (ts epoch ms, current A with + = discharge,
  pack voltage, cell_voltages, temperatures per cell), voltages quantised to 1 mV (like a
  BMS's 13-bit mV CAN signal), optional Gaussian voltage noise, current to 1 mA,
  temperatures to 0.1 degC.
* ``truth.npz``: values at the same instants: the current, the true throughput (exact
  integral of |I| of the imposed, linearly interpolated current; PyBaMM's own ``Throughput
  capacity [A.h]`` is kept beside it and must agree within 0.1 %), per cell the unquantised
  terminal voltage, the bulk OCV (``Bulk open-circuit voltage [V]``: the OCV of the cell's
  average stoichiometries, the voltage it would relax to), the true SOC and temperature; per
  cell capacity and initial SOC; the duty's segment index per second; the parameter set's
  true OCV-SOC curve (every 0.25 % SOC).
* ``meta.json``: the parameters, versions, timings and summary figures.

True SOC [%] of a cell = (x - x_0) / (x_100 - x_0) with x the negative electrode's average
stoichiometry and x_0, x_100 its stoichiometries at the parameter set's voltage limits
(PyBaMM's electrode-SOH definition; the same definition the twin's OCV tables were computed
with). It is checked against coulomb counting (SOC_0 - Q_discharged / Q_cell) at generation.

Solver: IDAKLU, rtol 1e-5, stopped at every segment edge and limited to 10 s steps. Given
only [0, T], it took hour-long steps through rests and stepped clean over 7-minute pulses
(SOC never moved); the throughput cross-check above is what caught it, and stays as a guard.
SPMe (default, ~1 s per simulated hour per cell) and DFN (~15 s) agree within 1 mV here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.devtools.oracle.duty import DUTIES, DUTY_SOC_START, Segment, build_profile

FloatArray = npt.NDArray[np.float64]

GENERATOR_VERSION = 2
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
PARAMETER_SETS = {"NMC": "Chen2020", "LFP": "Prada2013"}
# Prada2013 has no thermal parameters (current collectors, heat capacities): isothermal.
DEFAULT_THERMAL = {"NMC": "lumped", "LFP": "isothermal"}
OCV_GRID = np.linspace(0.0, 100.0, 401)


class OracleUnavailable(RuntimeError):
    """PyBaMM (the `oracle` extra) is not installed."""


def import_pybamm() -> Any:
    # PyBaMM may ask (with a 10 s prompt) to opt in to usage telemetry; a test oracle must
    # neither wait for a prompt nor phone home. The user's own choice, if set, stands.
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    try:
        import pybamm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OracleUnavailable(
            f"the PyBaMM oracle needs the optional extra: pip install -e '.[oracle]' ({exc})"
        ) from None
    return pybamm


@dataclass(frozen=True)
class FixtureSpec:
    """Everything a fixture depends on (with the generator and PyBaMM versions)."""

    chemistry: str = "NMC"  # NMC (Chen2020) or LFP (Prada2013)
    duty: str = "small"  # a key of duty.DUTIES
    n_cells: int = 8
    capacity_spread: float = 0.03  # +/- fraction
    soc_start: float | None = None  # mean initial SOC, fraction (None: the duty's)
    soc_spread: float = 0.02  # +/- fraction of SOC
    seed: int = 7
    model: str = "SPMe"  # SPMe (fast, CI) or DFN
    thermal: str = ""  # "" = DEFAULT_THERMAL[chemistry]; or isothermal / lumped
    voltage_noise_mv: float = 0.0  # Gaussian sigma added to the cell voltages sent
    battery_id: str = ""  # "" = oracle-<chem>-<n>s

    @property
    def bid(self) -> str:
        return self.battery_id or f"oracle-{self.chemistry.lower()}-{self.n_cells}s"

    @property
    def initial_soc(self) -> float:
        return DUTY_SOC_START[self.duty] if self.soc_start is None else self.soc_start

    @property
    def thermal_option(self) -> str:
        return self.thermal or DEFAULT_THERMAL[self.chemistry]

    def key(self, pybamm_version: str) -> str:
        from twin_stream.devtools.oracle import duty as duty_mod

        blob = json.dumps(
            {
                "spec": asdict(self),
                "soc_start": self.initial_soc,
                "duty": [asdict(s) for s in DUTIES[self.duty]],
                "drive": [duty_mod.IDLE_C, duty_mod.PEAK_C, duty_mod.REGEN_C],
                "gen": GENERATOR_VERSION,
                "pybamm": pybamm_version,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return f"{self.chemistry.lower()}-{self.duty}-{self.n_cells}c-{digest}"


def cache_root() -> Path:
    env = os.environ.get("TWIN_ORACLE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "twin-stream" / "oracle"


@dataclass
class Fixture:
    """A generated fixture on disk (telemetry, truth, meta)."""

    folder: Path
    spec: FixtureSpec
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def telemetry(self) -> Path:
        return self.folder / "telemetry.jsonl"

    @cached_property
    def truth(self) -> dict[str, Any]:
        with np.load(self.folder / "truth.npz") as z:
            return {k: z[k] for k in z.files}

    @property
    def nominal_capacity_ah(self) -> float:
        return float(self.meta["nominal_capacity_ah"])

    @property
    def segments(self) -> tuple[Segment, ...]:
        return DUTIES[self.spec.duty]


def _spread(n: int, half_width: float, rng: np.random.Generator) -> FloatArray:
    """n values evenly over [-half_width, +half_width] (both ends present), shuffled."""
    v = np.linspace(-half_width, half_width, n) if n > 1 else np.zeros(1)
    return np.asarray(rng.permutation(v), dtype=np.float64)


def generate(
    spec: FixtureSpec,
    *,
    cache: Path | None = None,
    force: bool = False,
    log: Any = None,
    workers: int = 1,
) -> Fixture:
    """The fixture for `spec`, from the cache or simulated now (then cached)."""
    pybamm = import_pybamm()
    root = cache or cache_root()
    folder = root / spec.key(pybamm.__version__)
    meta_file = folder / "meta.json"
    if meta_file.exists() and not force:
        return Fixture(folder, spec, json.loads(meta_file.read_text()))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        meta = _simulate(pybamm, spec, tmp, log, workers)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Fixture(folder, spec, meta)


def true_ocv_curve(pybamm: Any, params: Any) -> tuple[FloatArray, dict[str, float]]:
    """OCV(SOC) on OCV_GRID of a parameter set: U_pos(y(soc)) - U_neg(x(soc)) at 25 degC,
    with x, y linear in SOC between the electrode-SOH stoichiometries at the voltage limits."""
    param = pybamm.LithiumIonParameters()
    esoh = pybamm.lithium_ion.ElectrodeSOHSolver(params, param)
    x0, x100, y100, y0 = (float(v) for v in esoh.get_min_max_stoichiometries())
    s = OCV_GRID / 100.0
    x = pybamm.Vector(x0 + s * (x100 - x0))
    y = pybamm.Vector(y0 + s * (y100 - y0))
    temp = pybamm.Scalar(298.15)
    u_n = np.asarray(params.evaluate(param.n.prim.U(x, temp))).ravel()
    u_p = np.asarray(params.evaluate(param.p.prim.U(y, temp))).ravel()
    return u_p - u_n, {"x_0": x0, "x_100": x100, "y_0": y0, "y_100": y100}


def _cell_capacity(pybamm: Any, params: Any, x0: float, x100: float) -> float:
    param = pybamm.LithiumIonParameters()
    q_n = float(params.evaluate(param.n.Q_init))
    return q_n * (x100 - x0)


def exact_throughput(current: FloatArray, dt_s: float = 1.0) -> FloatArray:
    """Cumulative integral of |I| [Ah] of the piecewise-linear current (exact at sign changes)."""
    a, b = current[:-1], current[1:]
    same = a * b >= 0.0
    denom = np.where(same, 1.0, 2.0 * np.abs(a - b))
    q = np.where(same, (np.abs(a) + np.abs(b)) / 2.0, (a * a + b * b) / denom)
    return np.concatenate([[0.0], np.cumsum(q) * dt_s / 3600.0])


def _simulate_cell(job: dict[str, Any]) -> dict[str, Any]:
    """One cell of the string (runs in a worker process when workers > 1)."""
    pybamm = import_pybamm()
    t0 = time.perf_counter()
    t, current = job["t"], job["current"]
    p = pybamm.ParameterValues(job["pset"])
    p["Electrode width [m]"] = float(p["Electrode width [m]"]) * job["cap_f"]
    p["Nominal cell capacity [A.h]"] = float(p["Nominal cell capacity [A.h]"]) * job["cap_f"]
    p["Current function [A]"] = pybamm.Interpolant(t, current, pybamm.t, interpolator="linear")
    model_cls = {"DFN": pybamm.lithium_ion.DFN, "SPMe": pybamm.lithium_ion.SPMe}[job["model"]]
    # The solver stops at every segment edge (t_eval) and never steps more than 10 s: with
    # only [0, T] it took hour-long steps through rests and stepped over whole 7-min pulses
    # (the throughput check below caught it).
    solver = pybamm.IDAKLUSolver(rtol=1e-5, atol=1e-7, options={"dt_max": 10.0})
    sim = pybamm.Simulation(model_cls(job["options"]), parameter_values=p, solver=solver)
    sol = sim.solve(t_eval=job["stops"], t_interp=t, initial_soc=job["soc0"])
    if sol.t[-1] < t[-1] - 1e-6:
        raise RuntimeError(
            f"{job['pset']} cell {job['index']}: the simulation stopped at t = {sol.t[-1]:.0f} s "
            f"of {t[-1]:.0f} s (a voltage cut-off event): the duty is too deep for this cell"
        )
    x0, x100 = job["x0"], job["x100"]
    cap = _cell_capacity(pybamm, p, x0, x100)
    x_avg = sol["Average negative particle stoichiometry"].entries
    return {
        "v": np.asarray(sol["Voltage [V]"].entries),
        "ocv": np.asarray(sol["Bulk open-circuit voltage [V]"].entries),
        "soc": 100.0 * (x_avg - x0) / (x100 - x0),
        "soc_cc": 100.0 * (job["soc0"] - sol["Discharge capacity [A.h]"].entries / cap),
        "temp": np.asarray(sol["Volume-averaged cell temperature [C]"].entries),
        "throughput": np.asarray(sol["Throughput capacity [A.h]"].entries),
        "cap": cap,
        "seconds": time.perf_counter() - t0,
    }


def _simulate(pybamm: Any, spec: FixtureSpec, out: Path, log: Any, workers: int) -> dict[str, Any]:
    if spec.chemistry not in PARAMETER_SETS:
        raise ValueError(f"chemistry {spec.chemistry!r}: one of {sorted(PARAMETER_SETS)}")
    if spec.duty not in DUTIES:
        raise ValueError(f"duty {spec.duty!r}: one of {sorted(DUTIES)}")
    t_start = time.perf_counter()
    pset = PARAMETER_SETS[spec.chemistry]
    base = pybamm.ParameterValues(pset)
    c_nom = float(base["Nominal cell capacity [A.h]"])
    profile = build_profile(spec.duty, c_nom, spec.seed)
    t = profile.t.astype(np.float64)
    current = profile.current
    rng = np.random.default_rng(spec.seed + 1000)
    cap_f = 1.0 + _spread(spec.n_cells, spec.capacity_spread, rng)
    soc0 = spec.initial_soc + _spread(spec.n_cells, spec.soc_spread, rng)
    ocv_true, stoich = true_ocv_curve(pybamm, base)
    options = {"thermal": spec.thermal_option, "calculate discharge energy": "true"}
    edges = t[np.flatnonzero(np.diff(profile.segment)) + 1]
    stops = np.unique(np.concatenate([[0.0], edges, [t[-1]]]))
    jobs = [
        {
            "index": i,
            "pset": pset,
            "model": spec.model,
            "options": options,
            "t": t,
            "stops": stops,
            "current": current,
            "cap_f": float(cap_f[i]),
            "soc0": float(soc0[i]),
            "x0": stoich["x_0"],
            "x100": stoich["x_100"],
        }
        for i in range(spec.n_cells)
    ]
    results: list[dict[str, Any]] = []
    if workers > 1 and spec.n_cells > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for r in pool.map(_simulate_cell, jobs):
                results.append(r)
                if log is not None:
                    log(
                        f"{spec.chemistry} cell {len(results)}/{spec.n_cells}: {r['seconds']:.1f} s"
                    )
    else:
        for job in jobs:
            results.append(_simulate_cell(job))
            if log is not None:
                log(
                    f"{spec.chemistry} cell {len(results)}/{spec.n_cells}: "
                    f"{results[-1]['seconds']:.1f} s"
                )
    v_cell = np.stack([r["v"] for r in results])
    ocv_cell = np.stack([r["ocv"] for r in results])
    soc_cell = np.stack([r["soc"] for r in results])
    soc_cc = np.stack([r["soc_cc"] for r in results])
    temp_cell = np.stack([r["temp"] for r in results])
    cap = np.array([r["cap"] for r in results])
    throughput = exact_throughput(current)
    pybamm_thr = np.stack([r["throughput"] for r in results])
    thr_diff = float(np.max(np.abs(pybamm_thr[:, -1] - throughput[-1])) / max(throughput[-1], 1e-9))
    if thr_diff > 1e-3:
        raise RuntimeError(f"PyBaMM's throughput differs from the imposed current's by {thr_diff}")
    soc_check = float(np.max(np.abs(soc_cell - soc_cc)))
    if soc_check > 0.1:
        raise RuntimeError(f"true SOC: stoichiometry and coulomb counting differ by {soc_check}%")
    m = t.size

    # telemetry: what a BMS would send
    noise_rng = np.random.default_rng(spec.seed + 2000)
    if spec.voltage_noise_mv > 0:
        v_meas = v_cell + noise_rng.normal(0.0, spec.voltage_noise_mv / 1000.0, v_cell.shape)
    else:
        v_meas = v_cell
    v_sent = np.round(v_meas, 3)
    pack_v = np.round(v_cell.sum(axis=0), 3)
    i_sent = np.round(current, 3)
    temp_sent = np.round(temp_cell, 1)
    ts = START_MS + profile.t * 1000
    bid = spec.bid
    lines = []
    for k in range(m):
        rec = {
            "battery_id": bid,
            "ts": int(ts[k]),
            "current": float(i_sent[k]),
            "voltage": float(pack_v[k]),
            "cell_voltages": v_sent[:, k].tolist(),
            "temperatures": temp_sent[:, k].tolist(),
        }
        lines.append(json.dumps(rec, separators=(",", ":")))
    (out / "telemetry.jsonl").write_text("\n".join(lines) + "\n")
    np.savez_compressed(
        out / "truth.npz",
        t_s=profile.t,
        ts_ms=ts,
        segment=profile.segment,
        current=current,
        throughput_ah=throughput,
        throughput_pybamm_ah=pybamm_thr[0],
        cell_voltage=v_cell,
        cell_ocv=ocv_cell,
        cell_soc=soc_cell,
        cell_temp=temp_cell,
        capacity_ah=cap,
        capacity_factor=cap_f,
        soc0=100.0 * soc0,
        ocv_soc=OCV_GRID,
        ocv_v=ocv_true,
    )
    return {
        "spec": asdict(spec),
        "battery_id": bid,
        "generator_version": GENERATOR_VERSION,
        "pybamm_version": pybamm.__version__,
        "parameter_set": pset,
        "model": spec.model,
        "options": options,
        "nominal_capacity_ah": c_nom,
        "cell_capacity_ah": cap.tolist(),
        "soc0_pct": (100.0 * soc0).tolist(),
        "stoichiometry_limits": stoich,
        "segments": [asdict(s) for s in profile.segments],
        "samples": m,
        "duration_h": float(t[-1]) / 3600.0,
        "true_throughput_ah": float(throughput[-1]),
        "pybamm_throughput_rel_diff": thr_diff,
        "soc_check_max_diff_pct": soc_check,
        "simulate_seconds_per_cell": [r["seconds"] for r in results],
        "generate_seconds": time.perf_counter() - t_start,
        "voltage_range_v": [float(v_cell.min()), float(v_cell.max())],
    }
