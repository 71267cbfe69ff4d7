"""Replay throughput benchmark: records/s of `twin-stream replay` on one core, against a
baseline measured in the same run on the same file.

The fleet: simulated, 200 batteries x 96 cells x 1 h at 1 Hz by default (720,000 records of
~1 kB). The baseline does the seed's job the seed's way: pandas, the whole series of a battery
per run. A streaming twin must emit every `--run-every` seconds of event time; the seed has
no state between runs beyond scalar seeds, so each run re-reads the battery's whole series so
far and recomputes the four models on it in pandas. We also report a single batch run over the
whole file (the seed's best case, with no intermediate results at all).

    python bench/replay.py                        # full size
    python bench/replay.py --batteries 20 --duration 600   # quick
    python bench/replay.py --profile              # + cProfile top functions of the replay
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from twin_stream.battery.chemistry import get_chemistry
from twin_stream.config.settings import Settings
from twin_stream.devtools.simulate import SimConfig, simulate, write_records
from twin_stream.replay import replay


def seed_models(df: pd.DataFrame, capacity_ah: float) -> dict[str, float]:
    """The four models as the seed computes them: pandas over a whole series."""
    t = pd.to_datetime(df["ts"], unit="ms")
    dt_h = t.diff().dt.total_seconds().fillna(0) / 3600.0
    cycles = (df["current"].abs() * dt_h).cumsum() / (2 * capacity_ah)
    cells = pd.DataFrame(df["cell_voltages"].tolist(), index=df.index)
    vmin, vmax = cells.min(axis=1), cells.max(axis=1)
    status = pd.Series(0, index=df.index)
    status[vmin < 2.8] = 1
    status[vmax > 4.22] = 2
    spread = vmax - vmin
    rest = df["current"].abs() < 0.5
    rest_len = rest.groupby((~rest).cumsum()).cumcount() * rest
    ocv = get_chemistry("NMC").ocv
    soc = pd.Series(ocv.soc_from_ocv(cells.mean(axis=1).to_numpy()), index=df.index)
    soc_at_rest = soc[rest_len >= 600]
    return {
        "cycles": float(cycles.iloc[-1]),
        "alerts": int((status.diff().fillna(0) != 0).sum()),
        "spread": float(spread.iloc[-1]),
        "soc": float(soc_at_rest.iloc[-1]) if len(soc_at_rest) else float("nan"),
    }


def baseline(path: Path, run_every_s: int, capacity_ah: float) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    df = pd.read_json(path, lines=True, dtype=False)
    df = df[df["current"].apply(lambda x: isinstance(x, int | float))]
    for _, g in df.groupby("battery_id", sort=False):
        seed_models(g.sort_values("ts"), capacity_ah)
    batch_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    runs = 0
    for _, g in df.groupby("battery_id", sort=False):
        g = g.sort_values("ts")
        ends = np.searchsorted(
            g["ts"].to_numpy(),
            g["ts"].iloc[0]
            + np.arange(
                run_every_s * 1000,
                int(g["ts"].iloc[-1] - g["ts"].iloc[0]) + run_every_s * 1001,
                run_every_s * 1000,
            ),
        )
        for end in ends:
            seed_models(g.iloc[: max(int(end), 1)], capacity_ah)
            runs += 1
    streaming_s = time.perf_counter() - t1
    return batch_s, streaming_s, runs


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batteries", type=int, default=200)
    ap.add_argument("--cells", type=int, default=96)
    ap.add_argument("--duration", type=float, default=3600)
    ap.add_argument(
        "--run-every", type=int, default=60, help="baseline run period, s of event time"
    )
    ap.add_argument(
        "--baseline-batteries",
        type=int,
        default=20,
        help="batteries the streaming baseline runs on (it is slow); scaled to all",
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data file here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    data = args.keep or tmp / "fleet.jsonl"
    if not data.exists():
        t0 = time.perf_counter()
        sim = simulate(
            SimConfig(
                batteries=args.batteries,
                cells=args.cells,
                duration_s=args.duration,
                temperatures=32,
                seed=1,
            )
        )
        n = write_records(sim.records, data)
        del sim
        print(
            f"simulated {n:,} records ({data.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    settings = Settings()
    out = tmp / "out"
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    summary = replay(data, out, settings)
    if prof:
        prof.disable()
    rps = summary.records_per_s
    print(
        f"twin-stream replay: {summary.input_records:,} records in {summary.seconds:.2f} s = "
        f"{rps:,.0f} records/s"
    )
    print(json.dumps(summary.as_dict()))

    # the baseline on a subset of batteries (it is quadratic), scaled per record
    sub = tmp / "subset.jsonl"
    keep = {f"bat-{i:04d}" for i in range(args.baseline_batteries)}
    n_sub = 0
    with data.open("rb") as src, sub.open("wb") as dst:
        for line in src:
            rec = json.loads(line)
            if rec.get("battery_id") in keep:
                dst.write(line)
                n_sub += 1
    batch_s, stream_s, runs = baseline(sub, args.run_every, 100.0)
    b_rps = n_sub / batch_s
    s_rps = n_sub / stream_s
    print(f"baseline, seed batch (one pandas run per battery): {b_rps:,.0f} records/s")
    print(f"baseline, seed per run every {args.run_every} s ({runs} runs): {s_rps:,.0f} records/s")
    print(f"ratio twin-stream / seed-per-run: {rps / s_rps:.1f}x; / seed-batch: {rps / b_rps:.2f}x")
    print(f"cpu: {os.cpu_count()} cores, replay single-threaded")
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        print(s.getvalue())


if __name__ == "__main__":
    main()
