"""The first start compiles every kernel once; this does it on both cores.

numba compiles a kernel at its first call and caches the machine code on disk (beside the
module, or in NUMBA_CACHE_DIR); later starts load it in a second. On a machine that never
ran the twin (a fresh install, CI) the first start would compile some twenty seconds of
kernels one after the other. `ensure_compiled` sees that the on-disk cache lacks some kernel
and compiles them on both cores: this process and one more each run a tiny synthetic replay
through half of the kernels (the same call paths, so the same signatures the real run then
uses; this process keeps its half, the other's comes from the cache).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# two halves of about equal compile time (measured alone on this machine, beyond the ~1.4 s
# every process pays: scanner 4.7 s, voltage_monitor 6.8, plausibility 2.4, soc 4.7,
# imbalance 3.4, eq_cycles 2.6, state blobs 0.1)
GROUPS = (
    ("@scan", "@blob", "voltage_monitor"),
    ("@plausibility", "soc_ocv_estimation", "imbalance_analysis", "eq_cycles"),
)
_PLATFORM = (
    "twin_stream.codec.jsonscan",
    "twin_stream.engine.admit",
    "twin_stream.engine.blob",
    "twin_stream.engine.plausibility",
    "twin_stream.sdk.debounce",
    "twin_stream.sdk.emit",
)
_MODELS = ("soc_ocv_estimation", "eq_cycles", "voltage_monitor", "imbalance_analysis")


def _dispatchers() -> Iterator[Any]:
    for name in (*_PLATFORM, *(f"models.{m}.model" for m in _MODELS)):
        try:
            mod = import_module(name)
        except ImportError:
            continue
        for value in vars(mod).values():
            cache = getattr(value, "_cache", None)
            if cache is not None and hasattr(cache, "_cache_file"):
                yield value


def cold() -> bool:
    """Whether some kernel has nothing in numba's on-disk cache yet."""
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return False
    return any(not os.path.exists(d._cache._cache_file._index_path) for d in _dispatchers())


def ensure_compiled(timeout_s: float = 300.0) -> float:
    """Compile every kernel in parallel when the cache is cold; returns the seconds spent
    (0 when warm). Failures only cost time: the real run compiles what is missing."""
    if not cold():
        return 0.0
    t0 = time.monotonic()
    log.info("first start: compiling the kernels on 2 processes (cached afterwards)")
    other = subprocess.Popen(
        [sys.executable, "-m", "twin_stream.engine.warm", *GROUPS[1]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        run_group(list(GROUPS[0]))  # this process compiles the other half meanwhile
    except Exception:
        log.warning("kernel warm-up failed here (compiled on first use instead)", exc_info=True)
    try:
        _, err = other.communicate(timeout=timeout_s)
        if other.returncode:
            log.warning("kernel warm-up failed (compiled on first use instead): %s", err[-500:])
    except subprocess.TimeoutExpired:
        other.kill()
    return time.monotonic() - t0


def run_group(names: list[str]) -> None:
    """A tiny synthetic replay through the kernels of `names` (models, `@scan` the JSON
    scanner, `@plausibility` the plausibility stage, `@blob` the state blobs)."""
    import orjson

    from twin_stream.codec import Decoder
    from twin_stream.codec.files import RecordReader
    from twin_stream.config.settings import Settings
    from twin_stream.engine import Engine

    t0 = 1_767_225_600_000
    lines = [
        orjson.dumps(
            {
                "battery_id": f"warm-{b}",
                "ts": t0 + 1000 * i,
                "current": 5.0 * (i % 3 - 1),
                "voltage": 350.0,
                "cell_voltages": [3.7 + 0.001 * c for c in range(8)],
                "temperatures": [25.0, 26.0],
                "soc": 50.0,
                "soh": 98.0,
            }
        )
        for i in range(6)
        for b in range(2)
    ]
    models = [n for n in names if not n.startswith("@")]
    settings = Settings.model_validate(
        {
            "models": {"enabled": models},
            "engine": {"plausibility_checks": "@plausibility" in names},
        }
    )
    decoder = Decoder.from_settings(settings)
    engine = Engine(settings)
    items = [(x, f"warm@{i}") for i, x in enumerate(lines)]
    if "@scan" in names:  # the scanner: the file path and the Kafka path
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "warm.jsonl"
            path.write_bytes(b"\n".join(lines) + b"\n")
            for recs, _ in RecordReader(path).records(100, decoder):
                engine.run(recs)
        recs, _ = decoder.decode_records(items)
    else:
        recs, _ = decoder.decode_records(items, scan=False)
    engine.run(recs)
    if "@blob" in names:
        for blob_ in engine.encode_states(engine.ids):
            engine.load_blob("warm-0", blob_)


if __name__ == "__main__":
    run_group(sys.argv[1:])
