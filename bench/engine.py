"""Engine benchmark (issue 9): the replay of one core against what merely reading the same
file costs, fleet shape against pack shape, and start-up, all measured in one run.

    python bench/engine.py                   # 180,000 records of 96 cells per shape
    python bench/engine.py --records 40000   # quick

- JSON Lines: `twin-stream replay`'s work (decode, engine, the four models, writing the
  outputs) in records/s, over `pandas.read_json(lines=True)` reading the same file;
- Parquet: the same records as Parquet, over `pandas.read_parquet`;
- shapes: the pack shape (20 batteries, long series) and the fleet shape (2000 batteries at
  1 Hz: a block holds ~10 records per battery) of the same number of records;
- start-up: `twin-stream replay` of a 10-record file in a fresh process, with an empty numba
  cache (cold: every kernel compiles, on both cores: `twin_stream.engine.warm`) and with the
  cache the cold run left (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from twin_stream.config.settings import Settings
from twin_stream.devtools.simulate import SimConfig, simulate, write_records
from twin_stream.replay import replay


def make(path: Path, batteries: int, records: int, cells: int) -> int:
    duration = max(2.0, records / batteries)
    cfg = SimConfig(batteries=batteries, cells=cells, temperatures=8, duration_s=duration, seed=1)
    return write_records(simulate(cfg).records, path)


def timed_replay(path: Path, out: Path) -> tuple[float, dict[str, int]]:
    t0 = time.perf_counter()
    s = replay(path, out, Settings())
    return time.perf_counter() - t0, s.counters


def best(f, repeat: int = 2) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def start_up(tmp: Path) -> tuple[float, float]:
    data = tmp / "ten.jsonl"
    make(data, 1, 10, 96)
    cache = tmp / "numba-cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold: nothing compiled yet
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    exe = Path(sys.executable).with_name("twin-stream")

    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), "replay", str(data), "--out", str(tmp / "ten-out")],
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0

    return once(), once()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=180_000)
    ap.add_argument("--cells", type=int, default=96)
    ap.add_argument("--keep", type=Path, default=None, help="keep the data files in this folder")
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="twin-engine-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    res: dict[str, float] = {}
    pack = tmp / "pack.jsonl"
    fleet = tmp / "fleet.jsonl"
    if not pack.exists():
        make(pack, 20, args.records, args.cells)
    if not fleet.exists():
        make(fleet, 2000, args.records, args.cells)
    n_pack = sum(1 for _ in pack.open("rb"))
    n_fleet = sum(1 for _ in fleet.open("rb"))
    timed_replay(pack, tmp / "warm")  # compiles the kernels and warms the caches
    t_pack = min(timed_replay(pack, tmp / "out-pack")[0] for _ in range(2))
    t_read_json = best(lambda: pd.read_json(pack, lines=True))
    t_fleet = min(timed_replay(fleet, tmp / "out-fleet")[0] for _ in range(2))
    pq = tmp / "pack.parquet"
    if not pq.exists():
        pd.read_json(pack, lines=True).to_parquet(pq)
    t_pq = min(timed_replay(pq, tmp / "out-pq")[0] for _ in range(2))
    t_read_pq = best(lambda: pd.read_parquet(pq))
    cold, warm = start_up(tmp)
    res = {
        "records_pack": n_pack,
        "records_fleet": n_fleet,
        "replay_jsonl_rps": n_pack / t_pack,
        "pandas_read_json_rps": n_pack / t_read_json,
        "jsonl_ratio": t_read_json / t_pack,
        "replay_parquet_rps": n_pack / t_pq,
        "pandas_read_parquet_rps": n_pack / t_read_pq,
        "parquet_ratio": t_read_pq / t_pq,
        "replay_fleet_rps": n_fleet / t_fleet,
        "fleet_over_pack": (n_fleet / t_fleet) / (n_pack / t_pack),
        "cold_start_s": cold,
        "warm_start_s": warm,
    }
    print(
        f"JSON Lines, {n_pack:,} records x {args.cells} cells: replay "
        f"{res['replay_jsonl_rps']:,.0f} records/s, pandas.read_json "
        f"{res['pandas_read_json_rps']:,.0f}: {res['jsonl_ratio']:.2f}x\n"
        f"Parquet: replay {res['replay_parquet_rps']:,.0f} records/s, pandas.read_parquet "
        f"{res['pandas_read_parquet_rps']:,.0f}: {res['parquet_ratio']:.2f}x\n"
        f"fleet shape (2000 batteries at 1 Hz): {res['replay_fleet_rps']:,.0f} records/s = "
        f"{res['fleet_over_pack']:.2f}x the pack shape (20 batteries)\n"
        f"start-up, replay of 10 records: cold {cold:.1f} s, warm {warm:.1f} s"
    )
    (tmp / "result.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
