"""The engine's counters and what one call returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twin_stream.codec import DeadLetter

State = dict[str, Any]


@dataclass
class Metrics:
    """Cumulative counters of one engine; nothing is dropped without being counted here."""

    records: int = 0  # valid rows handed to the engine
    processed: int = 0  # rows handed to the models
    duplicates: int = 0
    late: int = 0
    future: int = 0  # records ahead of the wall clock by more than max_clock_skew_s
    degraded: int = 0  # records used without some invalid channels or optional fields
    implausible: int = 0  # cell readings the plausibility layer kept from the models
    frontier_resets: int = 0  # stored frontiers found ahead of the clock and reset
    invalid: int = 0  # dead letters from decoding (counted by the caller via count_invalid)
    gaps: int = 0
    alerts: int = 0
    estimates: int = 0
    forced_releases: int = 0  # buffered rows released early because the buffer was full
    errors: int = 0  # rows dead-lettered because a model raised (a bug; logged with traceback)
    batteries: set[str] = field(default_factory=set)

    @property
    def dead_letters(self) -> int:
        return self.invalid + self.late + self.future + self.errors

    def as_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "processed": self.processed,
            "batteries": len(self.batteries),
            "alerts": self.alerts,
            "estimates": self.estimates,
            "dead_letters": self.dead_letters,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "late": self.late,
            "future": self.future,
            "degraded": self.degraded,
            "implausible": self.implausible,
            "frontier_resets": self.frontier_resets,
            "gaps": self.gaps,
            "forced_releases": self.forced_releases,
            "errors": self.errors,
        }


@dataclass
class Result:
    """What one call produced: wire records out, dead letters, and the new state."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    estimates: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    state: State = field(default_factory=dict)


@dataclass
class BlockResult:
    """What one block of many batteries produced, outputs in per-battery order, and which
    batteries it touched (their states changed)."""

    alerts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (battery, record)
    estimates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead: list[tuple[str | None, DeadLetter]] = field(default_factory=list)  # (battery, letter)
    touched: list[str] = field(default_factory=list)
