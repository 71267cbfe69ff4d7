"""Field report: the twin on fieldsim telemetry against its exact truth (issue 10, item 9).

    python bench/field/run.py                      # -> bench/field/report/report.md + PNGs
    python bench/field/run.py --quick              # one seed, fewer rates (< 60 s)
    python bench/field/run.py --out /tmp/field     # another folder

For every `twin_stream.devtools.fieldsim` preset (and a throughput sweep over sampling rates,
plus two
bench-only variants: an LFP bus at 0.1 Hz in the cold, and a high cell for the imbalance
culprit) it generates the telemetry with its truth, runs the twin on it in-process
(`twin_stream.replay.notebook.run_twin`, the engine and decoder of `twin-stream replay`, with the
scenario's `twin_settings()`: chemistry, capacity and string, every other setting at its
default) and compares with the truth:

* throughput (total, charge, discharge): the last `throughput_ah` estimate and the charge /
  discharge parts at the same record vs the truth between the first record and that record;
* SOC: every `soc_ocv` (and `soc_min` / `soc_max`) estimate vs the true pack SOC (mean, min,
  max of the cells) at its timestamp: mean abs error, count, and the calibration (share within
  1 and 2 sigma) when the estimates carry an `uncertainty` column;
* alerts: raises per code and level (storm), the `cell_imbalance` culprit vs the true cell
  furthest from the median, `sensor_fault` cells vs the injected fault channels, real
  over-voltage excursions raised, the cold-charge exposure;
* input: dead letters, degraded and implausible counts, `bms_soc_error` vs the injected bias.

Writes `report.md` (one table: condition, figure, bound, pass/fail; the settings; how to
reproduce) and PNG plots. Exit status 0 always; the failing rows are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin_stream.battery.chemistry import get_chemistry
from twin_stream.devtools import fieldsim as fs
from twin_stream.replay.notebook import TwinResult, run_twin

THROUGHPUT_BOUND_PCT = 0.5  # issue 10 item 9: at every sampling rate, jitter included
CALIB_1SIGMA = 0.68  # issue 10 item 5
CALIB_2SIGMA = 0.95
SOC_MAE_BOUND_PCT = {"NMC": 2.0, "LFP": 3.0}  # issue 4's bounds (bench/accuracy)
BMS_ERROR_TOL_PCT = 2.0  # |median bms_soc_error - injected bias|
STORM_MAX_RAISES = 2  # per episode and level
EXPOSURE_TOL = 0.05  # cold-charge exposure vs true charge Ah at 1 Hz (tests/field)
SOC_NAMES = ("soc_ocv", "soc_min", "soc_max")
REST_REQUIRED_S = 1800.0  # a run with a rest this long must give SOC estimates

# the sampling-rate sweep of the regen drive (sparse_regen's duty): (label, hz, jitter)
RATES_FULL = (
    ("0.1 Hz", 0.1, 0.5),
    ("0.2 Hz", 0.2, 0.5),
    ("1 Hz", 1.0, 0.2),
    ("10 Hz", 10.0, 0.02),
)
RATES_QUICK = (("0.1 Hz", 0.1, 0.5), ("1 Hz", 1.0, 0.2))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ scenarios
def high_cell() -> fs.Scenario:
    """A rested NMC pack with one cell 150 mV high for 20 min (a real excursion, below the
    over-voltage limits): the imbalance culprit must be that cell, not the lowest."""
    chem = get_chemistry("NMC")
    v_high = float(np.interp(70.0, chem.ocv.soc_array, chem.ocv.voltage_array)) + 0.15
    return fs.Scenario(
        "high_cell",
        fs.FieldConfig(
            battery_id="field-high_cell",
            soc0=70.0,
            duty=(fs.rest(10), fs.drive(10), fs.rest(40)),
            excursions=(fs.Excursion(12, 1500.0, 2700.0, v_high, 30.0),),
        ),
        0,
        "NMC 100 Ah, 1 Hz: cell index 12 150 mV above the others for 20 min at rest",
    )


def cold_regen_sparse() -> fs.Scenario:
    sc = fs.preset("cold_regen").with_sensors(hz=0.1, jitter_s=0.5)
    return replace(sc, name="cold_regen_0.1Hz", description="cold_regen sampled at 0.1 Hz")


# ------------------------------------------------------------------------------ core
@dataclass
class Case:
    label: str
    scenario: fs.Scenario
    run: fs.FieldRun
    res: TwinResult
    seconds: float


def run_case(sc: fs.Scenario, label: str | None = None) -> Case:
    t0 = time.perf_counter()
    run = sc.generate()
    res = run_twin(pd.DataFrame(run.records), sc.twin_settings())
    return Case(label or sc.name, sc, run, res, time.perf_counter() - t0)


def ts_ms(df: pd.DataFrame) -> np.ndarray:
    """The `ts` column of an output frame (UTC datetimes) as epoch milliseconds."""
    if df.empty:
        return np.zeros(0, dtype=np.int64)
    return ((df["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(
        dtype=np.int64
    )


def throughput_error(estimates: pd.DataFrame, truth: Any) -> dict[str, Any] | None:
    """Throughput error of the twin's last `throughput_ah` estimate and of the charge and
    discharge parts at the same record, against the truth between the first record and that
    record. `truth` needs `ts` (ms), `discharge_ah` and `charge_ah` (cumulative, per record).

    Returns the estimates, the truth, the error of each in % of its own truth
    (`total_pct`, `charge_pct`, `discharge_pct`) and of each part in % of the true total
    (`charge_of_total_pct`, `discharge_of_total_pct`); None without a throughput estimate."""
    thr = estimates[estimates["name"] == "throughput_ah"]
    if thr.empty:
        return None
    ms = ts_ms(estimates)
    last_ms = int(ts_ms(thr)[-1])
    at = estimates[ms == last_ms].set_index("name")["value"]
    i = int(np.searchsorted(truth.ts, last_ms, side="right")) - 1
    dis = float(truth.discharge_ah[i] - truth.discharge_ah[0])
    chg = float(truth.charge_ah[i] - truth.charge_ah[0])
    tot = dis + chg
    est = {
        "total": float(at["throughput_ah"]),
        "charge": float(at.get("throughput_charge_ah", np.nan)),
        "discharge": float(at.get("throughput_discharge_ah", np.nan)),
    }
    tru = {"total": tot, "charge": chg, "discharge": dis}

    def pct(e: float, t: float) -> float:
        return 100.0 * (e - t) / t if t > 0 else float("nan")

    return {
        "est": est,
        "truth": tru,
        "total_pct": pct(est["total"], tot),
        "charge_pct": pct(est["charge"], chg),
        "discharge_pct": pct(est["discharge"], dis),
        "charge_of_total_pct": 100.0 * (est["charge"] - chg) / tot if tot > 0 else float("nan"),
        "discharge_of_total_pct": (
            100.0 * (est["discharge"] - dis) / tot if tot > 0 else float("nan")
        ),
        "gaps": int((estimates["name"] == "data_gap").sum()),
    }


def throughput_ok(
    e: dict[str, Any], bound: float = THROUGHPUT_BOUND_PCT, parts_resolved: bool = True
) -> bool:
    """The issue's bound is on the throughput (the total) at every rate; the charge /
    discharge split is held to it too where the sampling resolves the current's sign changes
    (`parts_resolved`): regen pulses of 5-13 s between 10 s samples are not seen at all, so
    at 0.1 Hz the split is reported, not bounded."""
    parts = [abs(e["charge_of_total_pct"]), abs(e["discharge_of_total_pct"])]
    ok_parts = not parts_resolved or all(p <= bound for p in parts if p == p)
    return abs(e["total_pct"]) <= bound and ok_parts


def has_uncertainty(estimates: pd.DataFrame) -> bool:
    return "uncertainty" in estimates and bool(
        estimates.loc[estimates["name"].isin(SOC_NAMES), "uncertainty"].notna().any()
    )


@dataclass
class SocFigures:
    name: str
    n: int = 0
    mae: float = float("nan")
    max_abs: float = float("nan")
    n_sigma: int = 0  # estimates with an uncertainty
    within1: float = float("nan")
    within2: float = float("nan")
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    value: np.ndarray = field(default_factory=lambda: np.zeros(0))
    truth: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))


def soc_figures(estimates: pd.DataFrame, truth: Any, name: str = "soc_ocv") -> SocFigures:
    """`name` estimates vs the true pack SOC (soc_ocv: mean of the cells, soc_min / soc_max:
    their min / max) interpolated at each estimate's timestamp."""
    e = estimates[estimates["name"] == name]
    f = SocFigures(name)
    if e.empty:
        return f
    ms = ts_ms(e)
    ref = {
        "soc_ocv": truth.soc,
        "soc_min": truth.soc_cells.min(axis=1),
        "soc_max": truth.soc_cells.max(axis=1),
    }[name]
    tv = np.interp(ms.astype(float), truth.ts.astype(float), ref)
    v = e["value"].to_numpy(dtype=float)
    err = np.abs(v - tv)
    f.n, f.mae, f.max_abs = len(v), float(err.mean()), float(err.max())
    f.ts, f.value, f.truth = ms, v, tv
    if "uncertainty" in e:
        sig = pd.to_numeric(e["uncertainty"], errors="coerce").to_numpy(dtype=float)
        f.sigma = sig
        ok = np.isfinite(sig)
        f.n_sigma = int(ok.sum())
        if f.n_sigma:
            f.within1 = float(np.mean(err[ok] <= sig[ok]))
            f.within2 = float(np.mean(err[ok] <= 2.0 * sig[ok]))
    return f


def raises(alerts: pd.DataFrame) -> pd.DataFrame:
    return alerts[alerts["status"] == "raised"] if not alerts.empty else alerts


def raise_counts(alerts: pd.DataFrame, by: tuple[str, ...] = ("code", "severity")) -> dict:
    r = raises(alerts)
    if r.empty:
        return {}
    return {k: int(v) for k, v in r.groupby(list(by), dropna=False).size().items()}


def true_culprit(truth: Any, ms: int) -> int:
    """The cell whose true voltage is furthest from the median of the cells at `ms`."""
    i = int(np.clip(np.searchsorted(truth.ts, ms, side="right") - 1, 0, len(truth.ts) - 1))
    v = truth.cell_voltages[i]
    return int(np.argmax(np.abs(v - np.median(v))))


def fault_cells(truth: Any) -> set[int]:
    out: set[int] = set()
    for f in truth.faults:
        if f["field"] == "cell_voltages":
            out.add(int(f["index"]))
            if f.get("neighbour") is not None:
                out.add(int(f["neighbour"]))
    return out


def _is_marker(v: Any) -> bool:
    return v is None or v in (fs.INVALID_MV16, -1.0)


def degraded_expected(records: list[dict[str, Any]]) -> int:
    """Records carrying an invalid channel (null or a marker) or an out-of-range optional
    field (soc outside 0..100, soh outside (1, 100]): what the twin must count as degraded."""
    n = 0
    for r in records:
        bad = any(_is_marker(x) for x in r.get("cell_voltages", ()))
        bad |= any(x is None for x in r.get("temperatures", ()))
        soc, soh = r.get("soc"), r.get("soh")
        bad |= soc is not None and not 0.0 <= soc <= 100.0
        bad |= soh is not None and not 1.0 < soh <= 100.0
        n += bool(bad)
    return n


# ------------------------------------------------------------------------------ rows
@dataclass
class Row:
    group: str
    condition: str
    figure: str
    bound: str
    ok: bool | None  # None: reported, no bound

    @property
    def verdict(self) -> str:
        return "report" if self.ok is None else "pass" if self.ok else "**FAIL**"


def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:+.{digits}f} %"


def _fmt_thr(e: dict[str, Any]) -> str:
    return (
        f"total {_pct(e['total_pct'])}; charge {_pct(e['charge_pct'], 1)} "
        f"({_pct(e['charge_of_total_pct'])} of total); discharge {_pct(e['discharge_pct'], 1)} "
        f"({_pct(e['discharge_of_total_pct'])} of total)"
    )


def throughput_rows(
    sweep: dict[str, list[Case]], day: list[Case], stopgo: list[Case], presets: list[Case]
) -> tuple[list[Row], dict[str, list[dict[str, Any]]]]:
    rows: list[Row] = []
    errs: dict[str, list[dict[str, Any]]] = {}
    b = f"abs(total), abs(each part) <= {THROUGHPUT_BOUND_PCT} % of total"
    for label, cases in [*sweep.items(), ("1/min +/-3 s (storage day)", day)]:
        if not cases:
            continue
        es = [throughput_error(c.res.estimates, c.run.truth) for c in cases]
        ok_es = [e for e in es if e is not None]
        errs[label] = ok_es
        if len(ok_es) < len(cases):
            rows.append(Row("throughput", label, "no throughput estimate", b, False))
            continue
        worst = max(ok_es, key=lambda e: abs(e["total_pct"]))
        seeds = f" (worst of {len(cases)} seeds)" if len(cases) > 1 else ""
        gaps = sum(e["gaps"] for e in ok_es)
        fig = _fmt_thr(worst) + seeds + (f"; {gaps} data gaps" if gaps else "")
        cond = (
            f"regen drive at {label}" if label in sweep else f"{label}: CC / CC-CV, bound applies"
        )
        resolved = label not in sweep or sweep[label][0].scenario.config.sensors.hz > 0.15
        bound = b if resolved else f"abs(total) <= {THROUGHPUT_BOUND_PCT} % (split reported)"
        ok = all(throughput_ok(e, parts_resolved=resolved) for e in ok_es)
        rows.append(Row("throughput", cond, fig, bound, ok))
    es = [throughput_error(c.res.estimates, c.run.truth) for c in stopgo]
    ok_es = [e for e in es if e is not None]
    errs["1/min +/-3 s (stop-and-go drive)"] = ok_es
    if ok_es:
        lo = min(e["total_pct"] for e in ok_es)
        hi = max(e["total_pct"] for e in ok_es)
        gaps = sum(e["gaps"] for e in ok_es)
        rng = f"{lo:+.2f} %" if len(ok_es) == 1 else f"{lo:+.2f} .. {hi:+.2f} %"
        rows.append(
            Row(
                "throughput",
                "jitter_1min preset: stop-and-go drive at 1/min +/-3 s",
                f"total {rng} ({len(ok_es)} seed{'s' if len(ok_es) > 1 else ''}); {gaps} data gaps",
                "no data gap (integrates fully); 0.5 % not applicable (sampling error)",
                gaps == 0,
            )
        )
    for c in presets:
        e = throughput_error(c.res.estimates, c.run.truth)
        if c.scenario.name == "jitter_1min" or e is None:
            continue
        injected = c.scenario.config.sensors.i_offset_a
        if injected:
            # A sensor offset during a long park reads exactly like a real parasitic load
            # (the parasitic_rest preset): current alone cannot tell them apart, so the twin
            # measures the offset (`current_offset_a`) and does not subtract it; bounded here
            # is the measurement, the throughput is reported.
            est = c.res.estimates
            off = est.loc[est["name"] == "current_offset_a", "value"]
            got = float(off.iloc[-1]) if len(off) else float("nan")
            rows.append(
                Row(
                    "throughput",
                    f"{c.label}: current_offset_a (injected {injected:+.2f} A)",
                    f"{got:+.3f} A",
                    "within 0.05 A of the injected offset",
                    bool(abs(got - injected) <= 0.05),
                )
            )
            rows.append(
                Row(
                    "throughput",
                    f"{c.label} ({_rate(c.scenario)})",
                    _fmt_thr(e),
                    "report (offset measured, not subtracted: see the row above)",
                    None,
                )
            )
            continue
        rows.append(
            Row(
                "throughput",
                f"{c.label} ({_rate(c.scenario)})",
                _fmt_thr(e),
                b,
                throughput_ok(e),
            )
        )
    return rows, errs


def _rate(sc: fs.Scenario) -> str:
    s = sc.config.sensors
    hz = "1/min" if abs(s.hz - 1 / 60) < 1e-9 else f"{s.hz:g} Hz"
    return hz + (f" +/-{s.jitter_s:g} s" if s.jitter_s else "")


def soc_rows(cases: list[Case]) -> tuple[list[Row], dict[str, dict[str, SocFigures]]]:
    rows: list[Row] = []
    figs: dict[str, dict[str, SocFigures]] = {}
    pooled_err: list[np.ndarray] = []
    pooled_sig: list[np.ndarray] = []
    any_sigma = False
    for c in cases:
        est = c.res.estimates
        chem = c.scenario.config.chemistry.upper()
        figs[c.label] = {n: soc_figures(est, c.run.truth, n) for n in SOC_NAMES}
        f = figs[c.label]["soc_ocv"]
        bound = SOC_MAE_BOUND_PCT[chem]
        extra = [
            f"{n} {figs[c.label][n].mae:.2f} % (n={figs[c.label][n].n})"
            for n in ("soc_min", "soc_max")
            if figs[c.label][n].n
        ]
        fig_txt = (
            "0 estimates"
            if f.n == 0
            else f"MAE {f.mae:.2f} %, max {f.max_abs:.2f} % (n={f.n})"
            + ("; " + ", ".join(extra) if extra else "")
        )
        # estimates are required where the run holds a rest of >= 30 min; elsewhere (a short
        # rest, in the cold) their absence is reported, not failed
        need = any(r["duration_s"] >= REST_REQUIRED_S for r in c.run.truth.rests)
        oks = [f.mae <= bound if f.n else not need] + [
            figs[c.label][n].mae <= bound for n in ("soc_min", "soc_max") if figs[c.label][n].n
        ]
        rows.append(
            Row(
                "SOC",
                f"{c.label} ({chem})",
                fig_txt,
                f"MAE <= {bound:g} %" + ("; estimates at its rests" if need else ""),
                all(oks) if (need or f.n) else None,
            )
        )
        for n in SOC_NAMES:
            g = figs[c.label][n]
            if g.n_sigma:
                any_sigma = True
                ok = np.isfinite(g.sigma)
                pooled_err.append(np.abs(g.value - g.truth)[ok])
                pooled_sig.append(g.sigma[ok])
    b = f">= {CALIB_1SIGMA:.0%} within 1 sigma, >= {CALIB_2SIGMA:.0%} within 2 sigma"
    if not any_sigma:
        rows.append(
            Row("SOC", "calibration, all presets", "no `uncertainty` on SOC estimates", b, False)
        )
    else:
        err, sig = np.concatenate(pooled_err), np.concatenate(pooled_sig)
        w1, w2 = float(np.mean(err <= sig)), float(np.mean(err <= 2 * sig))
        rows.append(
            Row(
                "SOC",
                "calibration, all presets pooled",
                f"{w1:.1%} within 1 sigma, {w2:.1%} within 2 sigma (n={err.size}); "
                f"median sigma {np.median(sig):.2f} %, median abs error {np.median(err):.2f} %",
                b,
                w1 >= CALIB_1SIGMA and w2 >= CALIB_2SIGMA,
            )
        )
        for c in cases:
            g = figs[c.label]["soc_ocv"]
            if g.n_sigma:
                rows.append(
                    Row(
                        "SOC",
                        f"calibration, {c.label}",
                        f"{g.within1:.1%} / {g.within2:.1%} within 1 / 2 sigma (n={g.n_sigma});"
                        f" median sigma {np.nanmedian(g.sigma):.2f} %",
                        b,
                        g.within1 >= CALIB_1SIGMA and g.within2 >= CALIB_2SIGMA,
                    )
                )
    hyst = next((c for c in cases if c.scenario.name == "lfp_hysteresis"), None)
    if hyst is not None:
        rows.extend(hysteresis_rows(hyst, figs[hyst.label]["soc_ocv"]))
    return rows, figs


def hysteresis_rows(c: Case, f: SocFigures) -> list[Row]:
    """The last soc_ocv of each 3 h rest at true 60 % (after a charge, after a discharge)."""
    rows = []
    for r in c.run.truth.rests:
        if r["duration_s"] < 3 * 3600 - 1:
            continue
        m = (f.ts >= r["start_ms"]) & (f.ts <= r["end_ms"])
        label = f"lfp_hysteresis: end of the 3 h rest after a {r['after']}"
        b = "abs(error) <= 3 % (issue 4's LFP bound), or <= 2 sigma"
        if not m.any():
            rows.append(Row("SOC", label, "no soc_ocv in the rest", b, False))
            continue
        k = np.flatnonzero(m)[-1]
        err = f.value[k] - f.truth[k]
        sig = f.sigma[k] if f.sigma.size else float("nan")
        fig = f"{f.value[k]:.1f} % for a true {f.truth[k]:.1f} % ({err:+.1f} %)" + (
            f", sigma {sig:.1f} %" if sig == sig else ""
        )
        rows.append(Row("SOC", label, fig, b, abs(err) <= 3.0 or abs(err) <= 2 * sig))
    return rows


def alert_rows(cases: list[Case]) -> list[Row]:
    rows: list[Row] = []
    for c in cases:
        a = c.res.alerts
        counts = raise_counts(a, ("code", "severity", "cell"))
        by_level = raise_counts(a)
        worst = max(counts.values(), default=0)
        txt = ", ".join(f"{k[0]}/{k[1]} {v}" for k, v in sorted(by_level.items())) or "none"
        rows.append(
            Row(
                "alerts",
                f"{c.label}: raises per code/level",
                txt,
                f"no storm: <= {STORM_MAX_RAISES} raises per episode and level",
                worst <= STORM_MAX_RAISES,
            )
        )
        tr = c.run.truth
        # sensor_fault cells vs the injected channels (none injected: no sensor_fault at all)
        r = raises(a)
        sf = r[r["code"] == "sensor_fault"] if not r.empty else r
        got = {int(x) for x in sf["cell"].dropna()} if not sf.empty else set()
        want = fault_cells(tr)
        if want or got:
            rows.append(
                Row(
                    "alerts",
                    f"{c.label}: sensor_fault cells",
                    f"raised on {sorted(got)}; injected {sorted(want)}",
                    "the injected channels (open wire: and its neighbour), no other",
                    got == want,
                )
            )
        if c.scenario.name in ("open_wire", "stuck_channel"):
            bat = (
                r[r["code"].isin(["cell_over_voltage", "cell_under_voltage", "cell_imbalance"])]
                if not r.empty
                else r
            )
            rows.append(
                Row(
                    "alerts",
                    f"{c.label}: battery alerts from the faulty channel",
                    f"{len(bat)} raised"
                    + (f" ({', '.join(sorted(set(bat['code'])))})" if len(bat) else ""),
                    "0 (a sensor fault is not a battery fact)",
                    len(bat) == 0,
                )
            )
        imb = r[r["code"] == "cell_imbalance"] if not r.empty else r
        if not imb.empty:
            named = [int(x) if x == x else -1 for x in imb["cell"]]
            truth_cells = [true_culprit(tr, int(m)) for m in ts_ms(imb)]
            right = sum(n == t for n, t in zip(named, truth_cells, strict=True))
            rows.append(
                Row(
                    "alerts",
                    f"{c.label}: cell_imbalance culprit",
                    f"named {sorted(set(named))}, true {sorted(set(truth_cells))} "
                    f"({right}/{len(named)} right)" + _clear_cells(a, "cell_imbalance"),
                    "the cell furthest from the median (true voltages)",
                    right == len(named),
                )
            )
        limits = get_chemistry(c.scenario.config.chemistry).limits["cell_voltage"].over
        for ex in tr.excursions:
            levels = [lv.severity for lv in limits if ex["target_v"] > lv.threshold]
            if not levels:
                continue
            ov = r[(r["code"] == "cell_over_voltage") & (r["cell"] == ex["cell"])]
            got_lv = sorted(set(ov["severity"]))
            rows.append(
                Row(
                    "alerts",
                    f"{c.label}: real over-voltage on cell {ex['cell']} ({ex['target_v']:.2f} V)",
                    f"raised: {', '.join(got_lv) or 'nothing'}",
                    f"cell_over_voltage {' and '.join(levels)} on cell {ex['cell']}",
                    set(levels) <= set(got_lv),
                )
            )
        if c.scenario.name.startswith("cold_regen"):
            est = c.res.estimates
            x = est[est["name"] == "charge_below_limit_ah"]
            true_ah = tr.totals["charge_ah"]
            if x.empty:
                rows.append(
                    Row("alerts", f"{c.label}: cold-charge exposure", "no estimate", "", False)
                )
            else:
                v = float(x["value"].iloc[-1])
                rel = 100 * (v - true_ah) / true_ah
                sparse = c.scenario.config.sensors.hz < 1
                rows.append(
                    Row(
                        "alerts",
                        f"{c.label}: cold-charge exposure (Ah below 0 degC)",
                        f"{v:.3f} Ah for a true {true_ah:.3f} Ah ({rel:+.1f} %)",
                        "report (regen pulses shorter than the interval)"
                        if sparse
                        else f"within {EXPOSURE_TOL:.0%}",
                        None if sparse else abs(rel) <= 100 * EXPOSURE_TOL,
                    )
                )
    return rows


def _clear_cells(alerts: pd.DataFrame, code: str) -> str:
    """Cells named by the clears of `code`, when they differ from those of its raises."""
    a = alerts[alerts["code"] == code]
    named = {st: sorted({int(x) for x in g["cell"].dropna()}) for st, g in a.groupby("status")}
    clears = named.get("cleared", [])
    return f"; its clear names {clears}" if clears and clears != named.get("raised") else ""


def input_rows(cases: list[Case]) -> list[Row]:
    rows: list[Row] = []
    dead = {c.label: int(c.res.summary.get("dead_letters", 0)) for c in cases}
    total = sum(len(c.run.records) for c in cases)
    bad = {k: v for k, v in dead.items() if v}
    rows.append(
        Row(
            "input",
            "dead letters, all presets",
            f"{sum(dead.values())} of {total} records"
            + (f" ({', '.join(f'{k} {v}' for k, v in bad.items())})" if bad else ""),
            "0 (degrade, do not drop)",
            not bad,
        )
    )
    for c in cases:
        want = degraded_expected(c.run.records)
        got = int(c.res.summary.get("degraded", 0))
        impl = int(c.res.summary.get("implausible", 0))
        if want or got:
            rows.append(
                Row(
                    "input",
                    f"{c.label}: degraded records",
                    f"{got} counted (implausible {impl}); {want} carry an invalid channel/field",
                    "= the records with an invalid channel or field",
                    got == want,
                )
            )
    for c in cases:
        est = c.res.estimates
        bias = c.scenario.config.sensors.soc_bias_pct
        x = est[est["name"] == "bms_soc_error"]
        a = raises(c.res.alerts)
        dev = int((a["code"] == "bms_soc_deviation").sum()) if not a.empty else 0
        if bias:
            med = float(x["value"].median()) if not x.empty else float("nan")
            rows.append(
                Row(
                    "input",
                    f"{c.label}: bms_soc_error (injected bias {bias:+.1f} %)",
                    ("no estimate" if x.empty else f"median {med:+.2f} % (n={len(x)})")
                    + f"; bms_soc_deviation raised {dev}x",
                    f"within +/-{BMS_ERROR_TOL_PCT:g} % of the bias; alert raised 1-2x",
                    abs(med - bias) <= BMS_ERROR_TOL_PCT and 1 <= dev <= STORM_MAX_RAISES,
                )
            )
        elif dev:
            rows.append(
                Row(
                    "input",
                    f"{c.label}: bms_soc_deviation without a bias",
                    f"raised {dev}x",
                    "0",
                    False,
                )
            )
    return rows


# ------------------------------------------------------------------------------ plots
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 8, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _thin(x: np.ndarray, n: int = 4000) -> np.ndarray:
    return x[:: max(1, x.size // n)]


def plot_throughput(
    sweep: dict[str, list[Case]], errs: dict[str, list[dict[str, Any]]], path: Path
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    rates = {label: cs[0].scenario.config.sensors.hz for label, cs in sweep.items()}
    rates["1/min +/-3 s (storage day)"] = 1 / 60
    rates["1/min +/-3 s (stop-and-go drive)"] = 1 / 60
    styles = {
        "total_pct": ("o", "tab:blue", "total"),
        "charge_of_total_pct": ("^", "tab:green", "charge part (% of total)"),
        "discharge_of_total_pct": ("v", "tab:red", "discharge part (% of total)"),
    }
    seen: set[str] = set()
    for label, es in errs.items():
        hz = rates.get(label)
        if hz is None:
            continue
        dx = 1.12 if "stop-and-go" in label else 1.0
        for key, (mk, col, name) in styles.items():
            y = [e[key] for e in es]
            face = "none" if "stop-and-go" in label else col
            ax.scatter(
                [hz * dx] * len(y),
                y,
                marker=mk,
                facecolors=face,
                edgecolors=col,
                s=28,
                label=name if name not in seen else None,
            )
            seen.add(name)
    b = THROUGHPUT_BOUND_PCT
    ax.axhspan(-b, b, color="tab:green", alpha=0.08, lw=0, label=f"bound +/-{b} %")
    ax.set_xscale("log")
    ax.set_xticks([1 / 60, 0.1, 0.2, 1, 10], ["1/min", "0.1", "0.2", "1", "10"])
    ax.set_xlabel("sampling rate [Hz] (with jitter; 1/min hollow: stop-and-go drive, no bound)")
    ax.set_ylabel("throughput error [%]")
    ax.set_title("Throughput vs truth: regen drive at 0.1-10 Hz, 1/min storage day and drive")
    lim = max(1.0, max((abs(e["total_pct"]) for es in errs.values() for e in es), default=1))
    ax.set_ylim(-1.15 * lim, 1.15 * lim)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path)
    plt.close(fig)


def plot_soc(cases: list[Case], figs: dict[str, dict[str, SocFigures]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 3.2 * len(cases)), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, c in zip(axes, cases, strict=True):
        tr = c.run.truth
        t0 = tr.ts[0]
        h = (tr.ts - t0) / 3.6e6
        for r in tr.rests:
            ax.axvspan((r["start_ms"] - t0) / 3.6e6, (r["end_ms"] - t0) / 3.6e6, color="0.93", lw=0)
        k = _thin(np.arange(h.size))
        ax.fill_between(
            h[k],
            tr.soc_cells[k].min(axis=1),
            tr.soc_cells[k].max(axis=1),
            color="tab:blue",
            alpha=0.2,
            lw=0,
            label="true cell SOC (min-max)",
        )
        ax.plot(h[k], tr.soc[k], color="tab:blue", lw=1, label="true pack SOC (mean)")
        cols = {"soc_ocv": "tab:red", "soc_min": "tab:purple", "soc_max": "tab:orange"}
        for n, col in cols.items():
            f = figs[c.label][n]
            if not f.n:
                continue
            x = (f.ts - t0) / 3.6e6
            if f.n_sigma and n == "soc_ocv":
                ok = np.isfinite(f.sigma)
                ax.errorbar(
                    x[ok],
                    f.value[ok],
                    yerr=2 * f.sigma[ok],
                    fmt="none",
                    ecolor=col,
                    alpha=0.25,
                    lw=0.8,
                )
            ax.plot(x, f.value, ".", color=col, ms=3, label=f"twin {n} (n={f.n})")
        band = (
            " (bars: soc_ocv +/-2 sigma)"
            if figs[c.label]["soc_ocv"].n_sigma
            else " (no uncertainty)"
        )
        ax.set_title(f"{c.label}: {c.scenario.description}{band}")
        ax.set_ylabel("SOC [%]")
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("time [h]   (grey: rests)")
    fig.savefig(path)
    plt.close(fig)


def plot_alerts(cases: list[Case], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(
        2 * len(cases),
        1,
        figsize=(9, 3.0 * len(cases)),
        layout="constrained",
        gridspec_kw={"height_ratios": [2, 1] * len(cases)},
    )
    for j, c in enumerate(cases):
        ax, ax2 = axes[2 * j], axes[2 * j + 1]
        tr = c.run.truth
        t0 = tr.ts[0]

        def m(ms: Any, t0: int = int(t0)) -> np.ndarray:
            return (np.asarray(ms) - t0) / 60_000.0

        k = _thin(np.arange(tr.ts.size))
        if c.scenario.name.startswith("cold_regen"):
            ax.plot(m(tr.ts[k]), tr.current[k], color="0.4", lw=0.5, label="true current [A]")
            axt = ax.twinx()
            axt.plot(m(tr.ts[k]), tr.temperature[k], color="tab:blue", lw=1, label="temp")
            axt.set_ylabel("cell temperature [degC]", color="tab:blue")
            axt.grid(False)
            ax.set_ylabel("current [A] (+ discharge)")
        else:
            recs = c.run.records
            cv = np.array(
                [[np.nan if x is None else x for x in r["cell_voltages"]] for r in recs],
                dtype=float,
            )
            ms = np.array([r["ts"] for r in recs])
            kk = _thin(np.arange(ms.size))
            cv[cv > 10.0] = np.nan  # an invalid marker (65.535 V) off the scale
            show = sorted(fault_cells(tr) | {int(e["cell"]) for e in tr.excursions})
            for i, col in zip(show, ("tab:red", "tab:orange", "tab:purple"), strict=False):
                ax.plot(m(ms[kk]), cv[kk, i], color=col, lw=0.8, label=f"reported cell {i}")
                ax.plot(m(tr.ts[k]), tr.cell_voltages[k, i], color=col, lw=0.6, ls=":")
            ax.plot(
                m(tr.ts[k]),
                np.median(tr.cell_voltages[k], axis=1),
                "0.3",
                lw=0.8,
                label="median of the true cells (dotted: true value of a shown cell)",
            )
            ax.set_ylabel("cell voltage [V]")
        ax.set_title(f"{c.label}: {c.scenario.description}")
        ax.legend(fontsize=7, loc="upper right")
        a = c.res.alerts.sort_values("ts", kind="stable")
        end = m(tr.ts[-1])
        # one lane per (code, level, cell of the raise); a clear closes the open raise of its
        # code and level on its cell, or else the oldest open one (a clear may name another cell)
        spans: dict[tuple[str, str, Any], list[tuple[float, float | None]]] = {}
        open_: dict[tuple[str, str], dict[Any, float]] = {}
        for x, t in zip(a.itertuples(), m(ts_ms(a)), strict=True):
            cell = None if pd.isna(x.cell) else int(x.cell)
            key = (str(x.code), str(x.severity))
            o = open_.setdefault(key, {})
            if x.status == "raised":
                o[cell] = t
            elif o:
                cl = cell if cell in o else next(iter(o))
                spans.setdefault((*key, cl), []).append((o.pop(cl), t))
        for key, o in open_.items():
            for cl, t in o.items():
                spans.setdefault((*key, cl), []).append((t, None))
        lanes = sorted(spans, key=str)
        for y, lane in enumerate(lanes):
            col = "tab:red" if lane[1] == "critical" else "tab:orange"
            for t0_, t1_ in spans[lane]:
                ax2.plot([t0_, end if t1_ is None else t1_], [y, y], color=col, lw=4, alpha=0.6)
                ax2.plot([t0_], [y], "^", color=col, ms=6)
                if t1_ is not None:
                    ax2.plot([t1_], [y], "v", color="0.3", ms=5)
        what = "ch" if c.scenario.name.startswith("cold") else "cell"
        ax2.set_yticks(
            range(len(lanes)),
            [f"{a0} {s0}" + ("" if cl is None else f" {what} {cl}") for a0, s0, cl in lanes],
        )
        ax2.set_ylim(-0.7, max(len(lanes), 1) - 0.3)
        ax2.set_xlim(ax.get_xlim())
        ax2.set_xlabel("time [min]   (alerts: ^ raised, v cleared, bar = active)")
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------ report
def write_report(
    out: Path,
    rows: list[Row],
    cases: list[Case],
    extra: list[Case],
    seeds: list[int],
    rates: tuple[tuple[str, float, float], ...],
    pngs: list[str],
    quick: bool,
    seconds: float,
    errs: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    n_fail = sum(r.ok is False for r in rows)
    rate_txt = ", ".join(f"{a} +/-{j:g} s" for a, _, j in rates)
    n_bound = sum(r.ok is not None for r in rows)
    md = [
        "# bench/field: the twin on field telemetry against its truth (issue 10)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} in {seconds:.0f} s"
        f"{' (--quick)' if quick else ''}. **{n_bound - n_fail}/{n_bound} bounds met**"
        f" ({n_fail} failing; 'report' rows carry no bound).",
        "",
        "| group | condition | figure | bound | result |",
        "|---|---|---|---|---|",
    ]
    md += [
        "| "
        + " | ".join(x.replace("|", "/") for x in (r.group, r.condition, r.figure, r.bound))
        + f" | {r.verdict} |"
        for r in rows
    ]
    md += [
        "",
        "Notes on the bounds:",
        "",
        "* Throughput: the issue's 0.5 % on the total at every sampling rate, jitter included;",
        "  the charge / discharge parts within 0.5 % *of the total* (a regen-only charge part is",
        "  ~5 % of a drive's throughput and its 5-13 s pulses are sampled, not resolved, at",
        "  0.1 Hz). Truth = the exact fine-step integral between the first record and the record",
        "  of the last estimate. At 1/min the bound is applied to a storage day (CC / CC-CV",
        "  segments the samples resolve); on the `jitter_1min` preset's own stop-and-go drive",
        "  no rule can integrate what was not measured, so the issue's demand there is that the",
        "  jittered 1/min stream integrates fully (no data gap) and the error is reported.",
        "* SOC: MAE bounds are issue 4's (NMC 2 %, LFP 3 %; bench/accuracy); truth = the mean",
        "  (soc_ocv), min (soc_min) and max (soc_max) of the true cell SOCs at the estimate's",
        "  timestamp. Calibration (issue 10 item 5) needs the estimates' `uncertainty` (1 sigma,",
        "  % SOC); its absence fails the row. The bound is one-sided: a sigma far above the",
        "  errors passes it (the median sigma beside it shows how sharp the estimates are).",
        "  SOC estimates are required where a run holds a",
        "  rest of >= 30 min (cold_regen and invalid_marker rest 10-15 min: reported only).",
        "* Alerts: every preset holds at most one episode of each condition (cold_regen: the",
        "  pack stays below 0 degC for the whole drive), so the storm bound is <= 2 raises per",
        "  code, level and cell over the run. Culprit truth: the cell whose true voltage is",
        "  furthest from the median of the true voltages at the raise.",
        "",
        "## Throughput per seed",
        "",
        "Error in % of the true total (charge and discharge parts also in % of the total).",
        "",
        "| condition | seed | true Ah (chg / dis) | total | charge part | discharge part |",
        "|---|---|---|---|---|---|",
        *[
            f"| {label} | {i} | {e['truth']['charge']:.2f} / {e['truth']['discharge']:.2f}"
            f" | {_pct(e['total_pct'])} | {_pct(e['charge_of_total_pct'])}"
            f" | {_pct(e['discharge_of_total_pct'])} |"
            for label, es in (errs or {}).items()
            for i, e in enumerate(es)
        ],
        "",
        "## Settings",
        "",
        "Twin: `settings/twin-settings.json` defaults plus each scenario's `twin_settings()`",
        "(`fleet.defaults`: chemistry, capacity_ah, cells_in_series). Telemetry:",
        "`twin_stream.devtools.fieldsim` presets, seed 0; throughput sweep on "
        "`sparse_regen`'s duty",
        f"(105 min: drives with regen and rests) at {rate_txt} and 1/min +/-3 s, seeds {seeds}.",
        "",
        "| scenario | description | sampling | records | run [s] |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {c.label} | {c.scenario.description} | {_rate(c.scenario)} | {len(c.run.records)}"
        f" | {c.seconds:.1f} |"
        for c in [*cases, *extra]
    ]
    md += [
        "",
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in pngs],
        "",
        "## Reproduce",
        "",
        "```bash",
        ".venv/bin/python bench/field/run.py            # full: 3 seeds, 4 rates (~1-2 min)",
        ".venv/bin/python bench/field/run.py --quick    # 1 seed, 2 rates + 1/min (< 60 s)",
        "```",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/field/report", help="report folder")
    ap.add_argument("--quick", action="store_true", help="one seed, fewer rates (< 60 s)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    seeds = [0] if args.quick else [0, 1, 2]
    rates = RATES_QUICK if args.quick else RATES_FULL

    errors: list[Row] = []

    def attempt(sc: fs.Scenario, label: str | None = None) -> Case | None:
        """One case; a crash of the twin (or of the generator) is a failing row, not an abort
        (the models change under this bench)."""
        try:
            c = run_case(sc, label)
        except Exception as exc:  # reported as a row
            msg = f"{type(exc).__name__}: {exc}"[:160]
            _log(f"  {label or sc.name}: ERROR {msg}")
            errors.append(Row("run", label or sc.name, msg, "runs", False))
            return None
        _log(f"  {c.label}: {len(c.run.records)} records, {c.seconds:.1f} s")
        return c

    def many(sc: fs.Scenario, label: str) -> list[Case]:
        got = [attempt(replace(sc, seed=s), f"{label} seed {s}") for s in seeds]
        return [c for c in got if c is not None]

    _log("presets")
    cases = [c for c in (attempt(sc) for sc in fs.presets()) if c is not None]
    extra = [c for c in (attempt(high_cell()), attempt(cold_regen_sparse())) if c is not None]
    _log("throughput sweep")
    base = fs.preset("sparse_regen")
    sweep = {
        label: many(base.with_sensors(hz=hz, jitter_s=j), f"regen {label}")
        for label, hz, j in rates
    }
    day = many(fs.storage_day_1min(), "storage day 1/min")
    stopgo = many(fs.preset("jitter_1min"), "jitter_1min")

    thr, errs = throughput_rows(sweep, day, stopgo, cases)
    soc, figs = soc_rows(cases)
    rows = [*errors, *thr, *soc, *alert_rows([*cases, *extra]), *input_rows(cases)]

    _log("plots")
    by = {c.scenario.name: c for c in [*cases, *extra]}
    plots: list[tuple[str, Callable[[], None]]] = [
        ("throughput_vs_rate.png", lambda: plot_throughput(sweep, errs, out / pngs_all[0])),
        (
            "soc_lfp_hysteresis.png",
            lambda: plot_soc([by["lfp_hysteresis"]], figs, out / pngs_all[1]),
        ),
        (
            "soc_parasitic_rest.png",
            lambda: plot_soc(
                [by["parasitic_rest"], by["parasitic_rest_offset"]], figs, out / pngs_all[2]
            ),
        ),
        (
            "alerts_cold_regen_open_wire.png",
            lambda: plot_alerts([by["cold_regen"], by["open_wire"]], out / pngs_all[3]),
        ),
        (
            "alerts_stuck_invalid_high_cell.png",
            lambda: plot_alerts(
                [by["stuck_channel"], by["invalid_marker"], by["high_cell"]], out / pngs_all[4]
            ),
        ),
    ]
    pngs_all = [name for name, _ in plots]
    pngs: list[str] = []
    for name, fn in plots:
        try:
            fn()
            pngs.append(name)
        except Exception as exc:  # a missing case: no plot
            _log(f"  plot {name} left out: {type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - t_all
    write_report(out, rows, cases, extra, seeds, rates, pngs, args.quick, seconds, errs)
    failing = [r for r in rows if r.ok is False]
    print(f"bench/field: {len(rows)} rows, {len(failing)} failing ({seconds:.0f} s) -> {out}")
    for r in failing:
        print(f"FAIL  {r.group} | {r.condition} | {r.figure} | bound {r.bound}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
