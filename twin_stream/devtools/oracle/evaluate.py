"""Compare the twin's replay outputs with a PyBaMM fixture's truth, against issue 4's bounds.

Nothing here imports PyBaMM: it reads a fixture (telemetry + truth.npz) and the outputs of
`twin_stream.replay.replay` (or of ``twin-stream replay``), so the tests and
``bench/accuracy`` share one definition of every figure:

* **cycles**: ``equivalent_cycles`` at each of its rows vs the true throughput at that
  instant / (2 x the configured nominal capacity); figure = max relative error over the rows
  once the truth exceeds 0.01 cycles (and the final one). Bound 0.5 %.
* **SOC after a rest**: the last ``soc_ocv`` estimate inside each rest of the duty lasting
  >= ``REST_MIN_S`` (1 h) vs the true SOC at that instant (mean of the cells' true SOC, as the
  model reads the mean cell voltage). NMC: |error| <= 2 % SOC. LFP, rests whose true SOC is
  in the plateau (30-90 %): |error| <= 3 % SOC or confidence <= 0.3.
* **SOC imbalance at rest** (NMC): the last ``soc_imbalance`` estimate of each such rest vs
  the true spread (max - min true cell SOC). Bound 1 % SOC.
* **alerts**: every alert channel (cell over/under voltage and over/under temperature per
  level and cell, pack cell_imbalance per level) is checked against the true signal:

  - a *true crossing* is a sample where the true value goes beyond the level by more than
    the measurement resolution (`tolerance`) and stays beyond it for at least the raise
    debounce; the channel must be active at (crossing instant + debounce + 1 s), the
    crossing instant interpolated between the samples around it;
  - every raise must happen where the true value is beyond the level (within tolerance),
    every clear where it is inside the level minus hysteresis (within tolerance), and an
    active alert must clear within clear debounce + 1 s once the truth has been inside
    (level - hysteresis) for the clear debounce (no stuck alert); any other alert code is
    false. The clean run (the chemistry's own limits) must give no false alert; where its
    duty never crosses a limit (the CI ``small`` duty) that means no alert at all, while the
    longer duties do truly cross the 0.1 V cell_imbalance level near empty, and that alert
    must then be raised like any other true crossing.

The tolerance is half the telemetry's quantisation step (1 mV, 0.1 degC) plus 3 sigma of any
voltage noise added, plus a 0.1 mV/0.01 degC margin: a violation smaller than that is not
visible in the telemetry and is neither required nor counted as false.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin_stream.config.settings import Settings
from twin_stream.devtools.oracle.fixture import Fixture
from twin_stream.engine import Engine
from twin_stream.replay import replay

FloatArray = npt.NDArray[np.float64]

REST_MIN_S = 3600
LFP_PLATEAU = (30.0, 90.0)
BOUNDS = {
    "cycles_rel_pct": 0.5,
    "nmc_soc_abs_pct": 2.0,
    "lfp_plateau_soc_abs_pct": 3.0,
    "lfp_plateau_confidence": 0.3,
    "nmc_imbalance_abs_pct": 1.0,
    "alert_latency_extra_s": 1.0,
}


# --------------------------------------------------------------------------- settings
def settings_dict(
    fixture: Fixture,
    *,
    cell_voltage_limits: Mapping[str, Any] | None = None,
    ocv_table: Mapping[str, list[float]] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Settings for replaying a fixture: its chemistry, nominal cell capacity and cell count;
    optionally tight cell-voltage limits, an OCV table override and model parameters."""
    defaults: dict[str, Any] = {
        "chemistry": fixture.spec.chemistry,
        "capacity_ah": fixture.nominal_capacity_ah,
        "cells_in_series": fixture.spec.n_cells,
    }
    if cell_voltage_limits is not None:
        defaults["limits"] = {"cell_voltage": dict(cell_voltage_limits)}
    if ocv_table is not None:
        defaults["ocv_table"] = {k: list(v) for k, v in ocv_table.items()}
    out: dict[str, Any] = {"fleet": {"defaults": defaults}}
    if params:
        out["models"] = {"params": {k: dict(v) for k, v in params.items()}}
    return out


def tight_limits(fixture: Fixture, hysteresis: float = 0.03) -> dict[str, Any]:
    """Cell-voltage limits inside the fixture's range, so that the run crosses them.

    Warning levels at the 2nd/98th percentile of the lowest/highest true cell voltage,
    critical levels half-way from there to the extreme, rounded to 5 mV. Only the
    configuration comes from the truth; what counts as a crossing is decided by the truth
    sample by sample."""
    v = fixture.truth["cell_voltage"]
    vmax, vmin = v.max(axis=0), v.min(axis=0)
    over_w = float(np.quantile(vmax, 0.98))
    under_w = float(np.quantile(vmin, 0.02))
    over_c = (over_w + float(vmax.max())) / 2.0
    under_c = (under_w + float(vmin.min())) / 2.0

    def r(x: float) -> float:
        return round(round(x / 0.005) * 0.005, 3)

    return {
        "unit": "V",
        "over": [
            {"severity": "warning", "threshold": r(over_w)},
            {"severity": "critical", "threshold": r(over_c)},
        ],
        "under": [
            {"severity": "warning", "threshold": r(under_w)},
            {"severity": "critical", "threshold": r(under_c)},
        ],
        "hysteresis": hysteresis,
    }


def pybamm_table(
    fixture: Fixture, step_pct: float = 1.0, decimals: int = 4
) -> dict[str, list[float]]:
    """The fixture's true OCV-SOC curve (PyBaMM) as a table every `step_pct` % SOC, rounded to
    `decimals` (0.1 mV), in the settings' ``ocv_table`` form. Knots whose rounded voltage does
    not rise are dropped (the table must be strictly increasing)."""
    grid = fixture.truth["ocv_soc"]
    v = fixture.truth["ocv_v"]
    soc = np.arange(0.0, 100.0 + 1e-9, step_pct)
    volts = np.round(np.interp(soc, grid, v), decimals)
    keep_s: list[float] = []
    keep_v: list[float] = []
    for s_, v_ in zip(soc.tolist(), volts.tolist(), strict=True):
        if not keep_v or v_ > keep_v[-1]:
            keep_s.append(round(s_, 6))
            keep_v.append(v_)
    return {"soc": keep_s, "voltage": keep_v}


def table_interpolation_error(
    fixture: Fixture, table_soc: Iterable[float], table_v: Iterable[float]
) -> tuple[FloatArray, FloatArray]:
    """SOC error [% SOC] of reading the true OCV curve through a piecewise-linear table:
    (true SOC grid, table SOC of the true OCV there - true SOC)."""
    grid = fixture.truth["ocv_soc"]
    v = fixture.truth["ocv_v"]
    est = np.interp(v, np.asarray(list(table_v)), np.asarray(list(table_soc)))
    return grid, est - grid


# --------------------------------------------------------------------------- outputs
def ts_ms(value: str | int) -> int:
    if isinstance(value, int):
        return value
    return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Series:
    ts: npt.NDArray[np.int64]
    value: FloatArray
    confidence: FloatArray


@dataclass
class Outputs:
    folder: Path
    estimates: dict[str, Series]
    alerts: list[dict[str, Any]]
    summary: dict[str, Any]

    def series(self, name: str) -> Series:
        empty = Series(np.empty(0, np.int64), np.empty(0), np.empty(0))
        return self.estimates.get(name, empty)


def read_outputs(folder: Path) -> Outputs:
    rows: dict[str, list[tuple[int, float, float]]] = {}
    with (folder / "estimates.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            e = json.loads(line)
            c = e.get("confidence")
            rows.setdefault(e["name"], []).append(
                (ts_ms(e["ts"]), float(e["value"]), np.nan if c is None else float(c))
            )
    est = {
        k: Series(
            np.array([r[0] for r in v], dtype=np.int64),
            np.array([r[1] for r in v]),
            np.array([r[2] for r in v]),
        )
        for k, v in rows.items()
    }
    alerts = []
    with (folder / "alerts.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            a = json.loads(line)
            a["ts_ms"] = ts_ms(a["ts"])
            alerts.append(a)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return Outputs(folder, est, alerts, summary)


def run_replay(fixture: Fixture, settings: Mapping[str, Any], out_dir: Path) -> Outputs:
    """Replay the fixture's telemetry with these settings (in-process) and read the outputs."""
    replay(fixture.telemetry, out_dir, Settings.model_validate(dict(settings)))
    return read_outputs(out_dir)


# --------------------------------------------------------------------------- figures
@dataclass
class Check:
    """One bound against the figure reached."""

    name: str
    chemistry: str
    bound: str
    figure: str
    passed: bool
    detail: str = ""


def _row_index(fixture: Fixture, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    t0 = int(fixture.truth["ts_ms"][0])
    return np.asarray((ts - t0) // 1000, dtype=np.int64)


def cycles_figures(fixture: Fixture, out: Outputs) -> dict[str, Any]:
    s = out.series("equivalent_cycles")
    k = _row_index(fixture, s.ts)
    thr = fixture.truth["throughput_ah"]
    true = thr[k] / (2.0 * fixture.nominal_capacity_ah)
    ok = true > 0.01
    rel = np.full(true.shape, np.nan)
    rel[ok] = (s.value[ok] - true[ok]) / true[ok] * 100.0
    tp = out.series("throughput_ah")
    final_true = float(thr[-1] / (2.0 * fixture.nominal_capacity_ah))
    return {
        "ts": s.ts,
        "estimate": s.value,
        "truth": true,
        "rel_err_pct": rel,
        "max_abs_rel_err_pct": float(np.nanmax(np.abs(rel))) if ok.any() else float("nan"),
        "final_estimate": float(s.value[-1]) if s.value.size else float("nan"),
        "final_truth_at_last_row": float(true[-1]) if true.size else float("nan"),
        "final_truth_end": final_true,
        "throughput_final_estimate_ah": float(tp.value[-1]) if tp.value.size else float("nan"),
        "throughput_true_ah": float(thr[-1]),
        "throughput_pybamm_ah": float(fixture.truth["throughput_pybamm_ah"][-1]),
    }


def rests(fixture: Fixture, min_s: int = REST_MIN_S) -> list[tuple[int, int, int]]:
    """(segment index, first second, last second) of the duty's rests lasting >= min_s."""
    seg = fixture.truth["segment"]
    t = fixture.truth["t_s"]
    found = []
    for i, s in enumerate(fixture.segments):
        rows = np.flatnonzero(seg == i)
        if s.kind == "rest" and rows.size and t[rows[-1]] - t[rows[0]] + 1 >= min_s:
            found.append((i, int(t[rows[0]]), int(t[rows[-1]])))
    return found


def _last_in(series: Series, fixture: Fixture, first: int, last: int) -> int | None:
    k = _row_index(fixture, series.ts)
    inside = np.flatnonzero((k >= first) & (k <= last))
    return int(inside[-1]) if inside.size else None


def soc_after_rest(fixture: Fixture, out: Outputs) -> list[dict[str, Any]]:
    """Per rest >= 1 h: the last soc_ocv and soc_imbalance estimates vs the truth there."""
    truth = fixture.truth
    soc = out.series("soc_ocv")
    imb = out.series("soc_imbalance")
    res = []
    for seg, first, last in rests(fixture):
        row: dict[str, Any] = {"segment": seg, "start_s": first, "end_s": last}
        j = _last_in(soc, fixture, first, last)
        if j is not None:
            k = int(_row_index(fixture, soc.ts[j : j + 1])[0])
            true = float(truth["cell_soc"][:, k].mean())
            row.update(
                soc_at_s=k,
                rest_s=k - first,
                soc_true=true,
                soc_est=float(soc.value[j]),
                soc_err=float(soc.value[j]) - true,
                soc_conf=float(soc.confidence[j]),
            )
        j = _last_in(imb, fixture, first, last)
        if j is not None:
            k = int(_row_index(fixture, imb.ts[j : j + 1])[0])
            cells = truth["cell_soc"][:, k]
            spread = float(cells.max() - cells.min())
            row.update(
                imb_at_s=k,
                imb_true=spread,
                imb_est=float(imb.value[j]),
                imb_err=float(imb.value[j]) - spread,
                imb_conf=float(imb.confidence[j]),
            )
        res.append(row)
    return res


# --------------------------------------------------------------------------- alerts
@dataclass
class Channel:
    code: str
    severity: str
    cell: int | None  # None: pack-level (cell_imbalance)
    side: str  # over | under
    threshold: float
    hysteresis: float
    raise_s: float
    clear_s: float
    tolerance: float
    signal: FloatArray  # the true value per second


@dataclass
class AlertFigures:
    crossings: int = 0
    missed: list[dict[str, Any]] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    false: list[dict[str, Any]] = field(default_factory=list)
    stuck: list[dict[str, Any]] = field(default_factory=list)
    raised: int = 0
    cleared: int = 0
    per_level: dict[str, int] = field(default_factory=dict)
    # per alert code: (max raise latency after the true crossing [s], raise debounce [s])
    latency_by_code: dict[str, tuple[float, float]] = field(default_factory=dict)

    def latency_text(self) -> str:
        return ", ".join(
            f"{code} {lat:.1f} s (debounce {deb:g} s)"
            for code, (lat, deb) in sorted(self.latency_by_code.items())
        )

    @property
    def max_latency_s(self) -> float:
        return max(self.latencies_s) if self.latencies_s else float("nan")

    def ok(self) -> bool:
        return not (self.missed or self.false or self.stuck)


def channels_for(
    fixture: Fixture, settings: Mapping[str, Any], noise_mv: float | None = None
) -> list[Channel]:
    """The alert channels of the run, each with its true signal and its settings."""
    st = Settings.model_validate(dict(settings))
    engine = Engine(st)
    spec = st.spec_for(fixture.spec.bid)
    vm = engine.params.get("voltage_monitor", {})
    ia = engine.params.get("imbalance_analysis", {})
    truth = fixture.truth
    sigma = fixture.spec.voltage_noise_mv if noise_mv is None else noise_mv
    v_tol = 0.0005 + 3.0 * sigma / 1000.0 + 0.0001
    t_tol = 0.05 + 0.01
    out: list[Channel] = []
    if vm:
        groups = (
            (
                "cell",
                "cell_voltage",
                truth["cell_voltage"],
                vm["raise_debounce_s"],
                vm["clear_debounce_s"],
                vm["voltage_hysteresis_v"],
                v_tol,
            ),
            (
                "cell",
                "temperature",
                truth["cell_temp"],
                vm["temperature_raise_debounce_s"],
                vm["temperature_clear_debounce_s"],
                vm["temperature_hysteresis_degc"],
                t_tol,
            ),
        )
        for _, key, sig, r_s, c_s, hyst_override, tol in groups:
            limit = spec.limits.get(key)
            if limit is None:
                continue
            hyst = limit.hysteresis if hyst_override < 0 else hyst_override
            word = "voltage" if key == "cell_voltage" else "temperature"
            for side, levels in (("over", limit.over), ("under", limit.under)):
                for lv in levels:
                    for c in range(sig.shape[0]):
                        out.append(
                            Channel(
                                f"cell_{side}_{word}",
                                lv.severity,
                                c,
                                side,
                                lv.threshold,
                                hyst,
                                r_s,
                                c_s,
                                tol,
                                sig[c],
                            )
                        )
    if ia:
        v = truth["cell_voltage"]
        spread = v.max(axis=0) - v.min(axis=0)
        for sev, thr in (
            ("warning", ia["spread_warning_v"]),
            ("critical", ia["spread_critical_v"]),
        ):
            out.append(
                Channel(
                    "cell_imbalance",
                    sev,
                    None,
                    "over",
                    thr,
                    ia["spread_hysteresis_v"],
                    ia["raise_debounce_s"],
                    ia["clear_debounce_s"],
                    2 * v_tol,
                    spread,
                )
            )
    return out


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last) index of every run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def check_alerts(fixture: Fixture, out: Outputs, channels: Iterable[Channel]) -> AlertFigures:
    t0 = int(fixture.truth["ts_ms"][0])
    fig = AlertFigures()
    by_key: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for a in out.alerts:
        cell = a.get("cell") if a["code"] != "cell_imbalance" else None
        by_key.setdefault((a["code"], a["severity"], cell), []).append(a)
        if a["status"] == "raised":
            fig.raised += 1
        else:
            fig.cleared += 1
    known: set[tuple[str, str, int | None]] = set()
    for ch in channels:
        key = (ch.code, ch.severity, ch.cell)
        known.add(key)
        events = sorted(by_key.get(key, []), key=lambda a: a["ts_ms"])
        sig = ch.signal
        sign = 1.0 if ch.side == "over" else -1.0
        beyond = sign * (sig - ch.threshold)  # > 0: violating
        strict = beyond > ch.tolerance
        inside_clear = sign * (sig - (ch.threshold - sign * ch.hysteresis)) < -ch.tolerance
        # active intervals [raise, clear) in seconds from the start; alternation checked
        intervals: list[tuple[float, float]] = []
        open_at: float | None = None
        for a in events:
            t = (a["ts_ms"] - t0) / 1000.0
            k = round(t)
            if a["status"] == "raised":
                if open_at is not None:
                    fig.false.append({**_brief(ch, t), "why": "raised twice without a clear"})
                open_at = t
                if not beyond[k] > -ch.tolerance:
                    fig.false.append({**_brief(ch, t), "why": f"raised at true {sig[k]:.4f}"})
            else:
                if open_at is None:
                    fig.false.append({**_brief(ch, t), "why": "cleared while not raised"})
                    continue
                intervals.append((open_at, t))
                open_at = None
                clear_level = ch.threshold - sign * ch.hysteresis
                if not sign * (sig[k] - clear_level) < ch.tolerance:
                    fig.false.append({**_brief(ch, t), "why": f"cleared at true {sig[k]:.4f}"})
        if open_at is not None:
            intervals.append((open_at, float("inf")))
        # true crossings that hold for the raise debounce
        need = max(1, int(np.ceil(ch.raise_s - 1e-9)))
        for first, last in _runs(strict):
            if first == 0 or last - first + 1 < need:
                continue
            # interpolated instant where the truth crossed the level
            b0, b1 = beyond[first - 1], beyond[first]
            t_c = first - 1 + (0.0 - b0) / (b1 - b0) if b1 != b0 else float(first)
            t_c = min(max(t_c, first - 1.0), float(first))
            deadline = t_c + ch.raise_s + BOUNDS["alert_latency_extra_s"] + 1e-6
            fig.crossings += 1
            level = f"{ch.code}:{ch.severity}"
            fig.per_level[level] = fig.per_level.get(level, 0) + 1
            hit = [iv for iv in intervals if iv[0] <= deadline and iv[1] > t_c]
            if hit:
                lat = max(0.0, hit[0][0] - t_c)
                fig.latencies_s.append(lat)
                prev = fig.latency_by_code.get(ch.code, (0.0, ch.raise_s))[0]
                fig.latency_by_code[ch.code] = (max(prev, lat), ch.raise_s)
            else:
                late = [iv[0] for iv in intervals if iv[0] > deadline]
                fig.missed.append({**_brief(ch, t_c), "raised_at": late[0] if late else None})
        # stuck: truth inside the clear level for clear debounce, alert still active 1 s later
        need_c = max(1, int(np.ceil(ch.clear_s - 1e-9)))
        for start, end in intervals:
            s0 = int(np.ceil(start))
            for first, last in _runs(inside_clear[s0:]):
                if last - first + 1 >= need_c + 1:
                    due = s0 + first + need_c + BOUNDS["alert_latency_extra_s"]
                    if end > due + 1e-6:
                        fig.stuck.append({**_brief(ch, start), "due": due, "cleared": end})
                    break
    for key, events in by_key.items():
        if key not in known:
            for a in events:
                fig.false.append(
                    {
                        "code": key[0],
                        "severity": key[1],
                        "cell": key[2],
                        "t_s": (a["ts_ms"] - t0) / 1000.0,
                        "why": "unexpected code",
                    }
                )
    return fig


def _brief(ch: Channel, t: float) -> dict[str, Any]:
    return {"code": ch.code, "severity": ch.severity, "cell": ch.cell, "t_s": round(t, 3)}


# --------------------------------------------------------------------------- checks
def checks(
    fixture: Fixture,
    run: Outputs,
    tight: Outputs | None,
    clean: Outputs | None,
    tight_settings: Mapping[str, Any] | None = None,
    clean_settings: Mapping[str, Any] | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """All bounds for one fixture; returns the checks and the raw figures (for plots)."""
    chem = fixture.spec.chemistry
    out: list[Check] = []
    figs: dict[str, Any] = {}
    cyc = cycles_figures(fixture, run)
    figs["cycles"] = cyc
    b = BOUNDS["cycles_rel_pct"]
    out.append(
        Check(
            "equivalent cycles vs true throughput / 2C",
            chem,
            f"<= {b} %",
            f"{cyc['max_abs_rel_err_pct']:.4f} % (final {cyc['final_estimate']:.4f} vs "
            f"{cyc['final_truth_at_last_row']:.4f})",
            bool(cyc["max_abs_rel_err_pct"] <= b),
        )
    )
    rr = soc_after_rest(fixture, run)
    figs["rests"] = rr
    with_soc = [r for r in rr if "soc_err" in r]
    if chem == "NMC":
        b = BOUNDS["nmc_soc_abs_pct"]
        worst = max((abs(r["soc_err"]) for r in with_soc), default=float("nan"))
        det = "; ".join(f"{r['soc_true']:.1f} %: {r['soc_err']:+.2f}" for r in with_soc)
        out.append(
            Check(
                "SOC from OCV after a rest >= 1 h (NMC)",
                chem,
                f"abs(err) <= {b} % SOC",
                f"max abs(err) {worst:.2f} % over {len(with_soc)} rests",
                bool(with_soc) and worst <= b and len(with_soc) == len(rr),
                det,
            )
        )
        with_imb = [r for r in rr if "imb_err" in r]
        b = BOUNDS["nmc_imbalance_abs_pct"]
        worst = max((abs(r["imb_err"]) for r in with_imb), default=float("nan"))
        det = "; ".join(
            f"at {r.get('soc_true', float('nan')):.1f} % SOC, spread {r['imb_true']:.2f}: "
            f"{r['imb_err']:+.2f}"
            for r in with_imb
        )
        out.append(
            Check(
                "SOC imbalance at rest vs true spread (NMC)",
                chem,
                f"within {b} % SOC",
                f"max abs(err) {worst:.2f} % over {len(with_imb)} rests",
                bool(with_imb) and worst <= b and len(with_imb) == len(rr),
                det,
            )
        )
    else:
        lo, hi = LFP_PLATEAU
        b, bc = BOUNDS["lfp_plateau_soc_abs_pct"], BOUNDS["lfp_plateau_confidence"]
        plateau = [r for r in with_soc if lo <= r["soc_true"] <= hi]
        good = [abs(r["soc_err"]) <= b or r["soc_conf"] <= bc for r in plateau]
        det = "; ".join(
            f"{r['soc_true']:.1f} %: {r['soc_err']:+.2f} (conf {r['soc_conf']:.2f})"
            for r in with_soc
        )
        worst = max((abs(r["soc_err"]) for r in plateau), default=float("nan"))
        conf = max((r["soc_conf"] for r in plateau), default=float("nan"))
        out.append(
            Check(
                "SOC from OCV after a rest, LFP plateau",
                chem,
                f"abs(err) <= {b} % or confidence <= {bc}",
                f"max abs(err) {worst:.2f} %, max confidence {conf:.2f}, {len(plateau)} rests",
                bool(plateau) and all(good),
                det,
            )
        )
    if tight is not None and tight_settings is not None:
        a = check_alerts(fixture, tight, channels_for(fixture, tight_settings))
        figs["alerts_tight"] = a
        figs["tight_settings"] = tight_settings
        out.append(
            Check(
                "voltage alerts: true crossings raised within debounce + 1 s",
                chem,
                "all raised; no false, no stuck",
                f"{a.crossings - len(a.missed)}/{a.crossings} crossings raised; max latency: "
                f"{a.latency_text()}; {len(a.false)} false, {len(a.stuck)} stuck "
                f"({a.raised} raised / {a.cleared} cleared)",
                a.crossings > 0 and a.ok(),
                ", ".join(f"{k} {v}" for k, v in sorted(a.per_level.items())),
            )
        )
    if clean is not None and clean_settings is not None:
        a = check_alerts(fixture, clean, channels_for(fixture, clean_settings))
        figs["alerts_clean"] = a
        codes: dict[str, int] = {}
        for al in clean.alerts:
            if al["status"] == "raised":
                codes[al["code"]] = codes.get(al["code"], 0) + 1
        what = ", ".join(f"{k} x{v}" for k, v in sorted(codes.items())) or "none"
        voltage_crossings = sum(
            v for k, v in a.per_level.items() if k.startswith("cell_") and "voltage" in k
        )
        out.append(
            Check(
                "clean run (chemistry limits): no false alert",
                chem,
                "0 false; true crossings only",
                f"{len(a.false)} false, {len(a.stuck)} stuck; raised: {what}; "
                f"{a.crossings} true crossings ({voltage_crossings} of a voltage limit)",
                a.ok(),
                ", ".join(f"{k} {v}" for k, v in sorted(a.per_level.items())),
            )
        )
    return out, figs
