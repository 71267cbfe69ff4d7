"""Replay: a recorded file through the engine, without a broker.

Reads JSON Lines, CSV or Parquet in blocks, decodes and validates each record into columns
(`twin_stream.codec.records.Records`), runs each block through the engine at once (all batteries of
the block in one pass; states stay in the engine) and writes `alerts.jsonl`,
`estimates.jsonl`, `deadletter.jsonl` and `summary.json` to the output folder. The agents run
the same engine on Kafka, so both give the same outputs for the same input.

`run_blocks` is that loop over any blocks of (payload, source), writing to any writers:
`replay` feeds it a file, `twin_stream.replay.notebook.run_twin` a file or a pandas DataFrame.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twin_stream.codec import DeadLetter, Decoder
from twin_stream.codec.files import JsonlWriter, RecordReader
from twin_stream.codec.records import Records
from twin_stream.config.settings import Settings
from twin_stream.engine import BlockResult, Engine

State = dict[str, Any]

DEFAULT_BLOCK = 20_000


@dataclass
class Summary:
    input_records: int
    seconds: float
    counters: dict[str, int]

    @property
    def records_per_s(self) -> float:
        return self.input_records / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_records": self.input_records,
            **self.counters,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_per_s, 1),
        }


class Writer(Protocol):
    """Where `run_blocks` puts output records (wire dicts): `JsonlWriter`, or a list's."""

    def write_all(self, records: list[dict[str, Any]]) -> None: ...


def run_blocks(
    blocks: Iterable[list[tuple[Any, str]]],
    settings: Settings,
    alerts: Writer,
    estimates: Writer,
    deadletters: Writer,
    *,
    states: dict[str, State] | None = None,
    on_block: Callable[[], None] | None = None,
) -> tuple[Summary, dict[str, State]]:
    """`run_records` over blocks of (payload, source), decoded here."""
    decoder = Decoder.from_settings(settings)
    counted = _Counted()

    def decoded() -> Iterator[tuple[Records, list[DeadLetter]]]:
        for items in blocks:
            counted.n += len(items)
            yield decoder.decode_records(items)

    summary, states = run_records(
        decoded(), settings, alerts, estimates, deadletters, states=states, on_block=on_block
    )
    summary.input_records = counted.n
    return summary, states


class _Counted:
    n = 0


def run_records(
    batches: Iterable[tuple[Records, list[DeadLetter]]],
    settings: Settings,
    alerts: Writer,
    estimates: Writer,
    deadletters: Writer,
    *,
    states: dict[str, State] | None = None,
    on_block: Callable[[], None] | None = None,
    keep_states: bool = True,
) -> tuple[Summary, dict[str, State]]:
    """Run decoded blocks (records and the decoder's dead letters) through one engine, each
    block at once, then flush every battery. Returns the summary and every battery's final
    state (`states`, when given, is where it starts and is updated; `keep_states` False:
    not returned, which saves writing them out)."""
    engine = Engine(settings)
    states = {} if states is None else states
    for bid, st in states.items():
        engine.load_state(bid, st)
    n_in = 0
    t0 = time.perf_counter()
    # Rows hold many small lists: the cyclic GC would rescan them on every allocation burst,
    # and nothing here makes cycles. Collected once at the end instead.
    gc_was_enabled = gc.isenabled()
    gc.disable()

    def write(res: BlockResult, dead: list[DeadLetter]) -> None:
        alerts.write_all([r for _, r in res.alerts])
        estimates.write_all([r for _, r in res.estimates])
        dead.extend(d for _, d in res.dead)
        deadletters.write_all([d.to_dict() for d in dead])

    try:
        for recs, dead in batches:
            n_in += len(recs) + sum(d.records for d in dead)
            engine.count_invalid(dead)
            write(engine.run(recs), list(dead))
            if on_block is not None:
                on_block()
        write(engine.flush_all(), [])
    finally:
        if gc_was_enabled:
            gc.enable()
    if keep_states:
        for bid in engine.ids:
            states[bid] = engine.dump_state(bid)
    seconds = time.perf_counter() - t0
    return Summary(n_in, seconds, engine.metrics.as_dict()), states


def replay(
    path: Path,
    out_dir: Path,
    settings: Settings,
    *,
    block: int = DEFAULT_BLOCK,
    state_file: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Replay `path` into `out_dir`; returns the summary (also written as summary.json).

    `state_file`, when given, is read first if it exists (continue yesterday's run) and
    written at the end with every battery's state."""
    from twin_stream.engine.warm import ensure_compiled

    ensure_compiled()  # a first start compiles the kernels on both cores
    reader = RecordReader(path)
    states: dict[str, State] = {}
    if state_file is not None and state_file.exists():
        states = json.loads(state_file.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    alerts = JsonlWriter(out_dir / "alerts.jsonl")
    estimates = JsonlWriter(out_dir / "estimates.jsonl")
    deadletters = JsonlWriter(out_dir / "deadletter.jsonl")
    try:
        summary, states = run_records(
            reader.records(block, Decoder.from_settings(settings)),
            settings,
            alerts,
            estimates,
            deadletters,
            states=states,
            on_block=None if progress is None else lambda: progress(reader.done, reader.total),
            keep_states=state_file is not None,
        )
    finally:
        alerts.close()
        estimates.close()
        deadletters.close()
    if state_file is not None:
        state_file.write_text(json.dumps(states), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary
