"""Plot one battery with the notebook API (`twin_stream.run_twin`): its cell voltage band
(min / mean / max), SOC and alerts, to a PNG.

    .venv/bin/python examples/plot_battery.py battery.png
        simulates 4 batteries x 24 cells x 1 h with an over-voltage fault and plots the
        battery with the most alerts
    .venv/bin/python examples/plot_battery.py battery.png --data out/sample.jsonl --battery bat-0003
        a recorded file (.jsonl, .csv, .parquet) instead; --settings F for other settings

Needs matplotlib (`pip install -e .[oracle]`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

import twin_stream
from twin_stream.codec.files import RecordReader

SEVERITY_COLOURS = {"info": "tab:blue", "warning": "tab:orange", "critical": "tab:red"}


def simulated_fleet() -> pd.DataFrame:
    """A small fleet with an over-voltage cell, as a DataFrame (one row per sample)."""
    from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate

    cfg = SimConfig(
        batteries=4, cells=24, temperatures=4, duration_s=3600, seed=1,
        faults=FaultSpec(over_voltage=1),
    )  # fmt: skip
    return pd.DataFrame([r for r in simulate(cfg).records if isinstance(r, dict)])


def read_telemetry(path: Path) -> pd.DataFrame:
    """A recorded file's records as a DataFrame (records that are no JSON object are left
    out here; run_twin(path) would dead-letter them)."""
    rows: list[dict[str, Any]] = []
    for block in RecordReader(path).blocks(20_000):
        for payload, _ in block:
            if isinstance(payload, bytes | str):
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
            items = payload if isinstance(payload, list) else [payload]
            rows.extend(r for r in items if isinstance(r, dict))
    return pd.DataFrame(rows)


def plot(result: twin_stream.TwinResult, telemetry: pd.DataFrame, battery: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = result.estimates[result.estimates.battery_id == battery]
    alerts = result.alerts[result.alerts.battery_id == battery]

    def series(name: str) -> pd.Series:
        e = est[est.name == name]
        return pd.Series(e.value.to_numpy(), index=e.ts)

    fig, (ax_v, ax_soc) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, height_ratios=(3, 2), constrained_layout=True
    )
    lo, mean, hi = (
        series(n) for n in ("min_cell_voltage", "mean_cell_voltage", "max_cell_voltage")
    )
    ax_v.fill_between(lo.index, lo.to_numpy(), hi.to_numpy(), color="tab:blue", alpha=0.25,
                      label="cell min … max")  # fmt: skip
    ax_v.plot(mean.index, mean.to_numpy(), color="tab:blue", lw=1.2, label="cell mean")

    # alerts: an arrow at each raise (▲) and clear (▽), at the value that decided it, and
    # the raised → cleared span shaded per code and cell
    for (_code, _cell), g in alerts.groupby(["code", "cell"], dropna=False):
        g = g.sort_values("ts")
        raised = None
        for a in g.itertuples():
            if a.status == "raised" and raised is None:
                raised = a.ts
            elif a.status == "cleared" and raised is not None:
                ax_v.axvspan(raised, a.ts, color="tab:red", alpha=0.08)
                raised = None
    top = float(hi.max())
    for a in alerts.itertuples():
        # a cell voltage (over/under-voltage) at its value; others (a spread, a silence)
        # along the top of the band
        on_axis = a.unit == "V" and float(lo.min()) - 0.3 <= a.value <= top + 0.3
        ax_v.scatter(
            a.ts,
            a.value if on_axis else top + 0.02,
            marker="^" if a.status == "raised" else "v",
            s=60,
            color=SEVERITY_COLOURS.get(a.severity, "black"),
            edgecolor="black",
            zorder=3,
        )
    for severity, colour in SEVERITY_COLOURS.items():
        if (alerts.severity == severity).any():
            ax_v.scatter([], [], marker="^", color=colour, edgecolor="black",
                         label=f"{severity} alert (▲ raised, ▽ cleared)")  # fmt: skip
    ax_v.set_ylabel("cell voltage (V)")
    ax_v.set_title(
        f"{battery}: {len(alerts)} alert records ({', '.join(sorted(set(alerts.code))) or 'none'})"
    )
    ax_v.legend(loc="upper left", fontsize=8)
    ax_v.grid(alpha=0.3)

    mine = telemetry[telemetry.battery_id == battery]
    if "soc" in mine and mine.soc.notna().any():
        ts = pd.to_datetime(mine.ts, unit="ms", utc=True) if mine.ts.dtype.kind in "iuf" else (
            pd.to_datetime(mine.ts, utc=True, format="ISO8601"))  # fmt: skip
        order = ts.argsort()
        ax_soc.plot(ts.iloc[order], mine.soc.iloc[order], color="grey", lw=0.8,
                    label="SOC reported by the BMS")  # fmt: skip
    soc = est[est.name == "soc_ocv"]
    if not soc.empty:
        ax_soc.scatter(
            soc.ts, soc.value, s=10 + 80 * soc.confidence.fillna(0), color="tab:green",
            edgecolor="black", zorder=3, label="twin: SOC from OCV at rest (size: confidence)",
        )  # fmt: skip
    cycles = series("equivalent_cycles")
    ax_c = ax_soc.twinx()
    ax_c.plot(cycles.index, cycles.to_numpy(), color="tab:purple", lw=1.2)
    ax_c.set_ylabel("equivalent cycles", color="tab:purple")
    ax_soc.set_ylabel("SOC (%)")
    ax_soc.set_xlabel("event time (UTC)")
    ax_soc.grid(alpha=0.3)
    ax_soc.legend(loc="upper left", fontsize=8)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("png", type=Path, help="the PNG to write")
    ap.add_argument("--data", type=Path, help="a recorded telemetry file (default: simulate)")
    ap.add_argument("--battery", help="battery_id (default: the one with the most alerts)")
    ap.add_argument("--settings", type=Path, help="a settings file (default: the defaults)")
    args = ap.parse_args()

    df = read_telemetry(args.data) if args.data else simulated_fleet()
    result = twin_stream.run_twin(df, args.settings)
    print(result)
    battery = args.battery
    if battery is None:
        counts = result.alerts.battery_id.value_counts()
        battery = str(counts.index[0]) if len(counts) else str(df.battery_id.iloc[0])
    if battery not in set(result.estimates.battery_id):
        raise SystemExit(f"{battery}: no estimates for this battery in the data")
    plot(result, df, battery, args.png)
    print(f"wrote {args.png} ({battery})")


if __name__ == "__main__":
    main()
