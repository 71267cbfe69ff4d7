"""Decode-only throughput: records/s of the columnar decoders against pandas on the same file,
measured in one run.

The file: simulated 96-cell telemetry (`twin_stream.devtools.simulate`, 8 temperatures), written as
JSON Lines and as Parquet. Rows measured:
  jsonl  RecordReader.records (the compiled scanner over byte blocks of the file)
  kafka  Decoder.decode_records of the file's lines as messages (joined, then the scanner)
  jsonl  RecordReader.blocks + Decoder.decode_many + Records.from_rows (simdjson per record)
  jsonl  pandas.read_json(lines=True)     (parsing only: no validation, lists of floats)
  parquet RecordReader.records (Arrow columns -> Records)
  parquet RecordReader.blocks + decode_many + from_rows (to_pylist, per record)
  parquet pandas.read_parquet             (reading only)
Best of `--repeat` runs each.

    python bench/decode.py                      # 60 batteries x 400 s = 24,000 records
    python bench/decode.py --batteries 20 --duration 300
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from twin_stream.codec import DeadLetter, Decoder, Row
from twin_stream.codec.files import RecordReader
from twin_stream.codec.records import Records
from twin_stream.devtools.simulate import SimConfig, simulate, write_records

BLOCK = 20_000


def columns(path: Path) -> int:
    dec = Decoder()
    return sum(len(r) for r, _ in RecordReader(path).records(BLOCK, dec))


def messages(blocks: list[list[tuple[Any, str]]]) -> int:
    dec = Decoder()
    return sum(len(dec.decode_records(items)[0]) for items in blocks)


def per_record(path: Path) -> int:
    dec = Decoder()
    n = 0
    for items in RecordReader(path).blocks(BLOCK):
        rows: list[Row] = []
        dead: list[DeadLetter] = []
        dec.decode_many(items, rows, dead)
        n += len(Records.from_rows(rows))
    return n


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batteries", type=int, default=60)
    ap.add_argument("--duration", type=float, default=400.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sim = simulate(SimConfig(batteries=args.batteries, duration_s=args.duration, cells=96))
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, parquet = Path(tmp) / "f.jsonl", Path(tmp) / "f.parquet"
        n = write_records(sim.records, jsonl)
        write_records(sim.records, parquet)
        del sim
        print(
            f"{n:,} records of 96 cells, JSONL {jsonl.stat().st_size / 1e6:.1f} MB, "
            f"Parquet {parquet.stat().st_size / 1e6:.1f} MB"
        )
        kafka = list(RecordReader(jsonl).blocks(BLOCK))  # (message bytes, source) batches
        runs = {
            "jsonl   records (scanner)": lambda: columns(jsonl),
            "kafka   decode_records (scanner)": lambda: messages(kafka),
            "jsonl   decode_many (simdjson)": lambda: per_record(jsonl),
            "jsonl   pandas.read_json": lambda: len(pd.read_json(jsonl, lines=True)),
            "parquet records (Arrow columns)": lambda: columns(parquet),
            "parquet decode_many (to_pylist)": lambda: per_record(parquet),
            "parquet pandas.read_parquet": lambda: len(pd.read_parquet(parquet)),
        }
        rate = {}
        for name, fn in runs.items():
            s, k = best(fn, args.repeat)
            assert k == n, (name, k, n)
            rate[name] = n / s
            print(f"  {name:34s} {s:7.3f} s  {n / s:12,.0f} records/s")
        for fmt, base in (("jsonl", "pandas.read_json"), ("parquet", "pandas.read_parquet")):
            ours = max(v for k, v in rate.items() if k.startswith(fmt) and "records" in k)
            old = next(v for k, v in rate.items() if k.startswith(fmt) and "decode_many" in k)
            print(
                f"{fmt}: best records path vs {base}: x{ours / rate[f'{fmt:7s} {base}']:.2f}; "
                f"vs decode_many + from_rows: x{ours / old:.2f}"
            )
        kafka_rate = rate["kafka   decode_records (scanner)"]
        per_rec = rate["jsonl   decode_many (simdjson)"]
        print(
            f"kafka messages: decode_records vs pandas.read_json: "
            f"x{kafka_rate / rate['jsonl   pandas.read_json']:.2f}; "
            f"vs decode_many + from_rows: x{kafka_rate / per_rec:.2f}"
        )


if __name__ == "__main__":
    main()
