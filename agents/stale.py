"""Silence detection: a battery that sent nothing for `stale_after_s` of wall-clock time gets a
`telemetry_stale` alert (raised), cleared when it sends again.

Wall clock is used here and only here (DESIGN: event time drives the models). Silence counts
only while the twin hears a battery's partition (`hold`): a broker outage, a rebalance or a
backlog is the twin's deafness, not the batteries' silence. The tracker is
per worker and in memory, seeded from the table when partitions arrive: each battery's
last-seen time, and whether its raise is out (the `stale` mark, committed with the raise by
`TwinApp.raise_stale`), so a restart neither repeats a raise nor loses its clear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from twin_stream.codec import iso_ms

MODEL = "agents"
CODE = "telemetry_stale"


def stale_alert(
    battery_id: str, raised: bool, silent_s: float, threshold_s: float, now_ms: int | None = None
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    verb = "no telemetry for" if raised else "telemetry back after"
    return {
        "battery_id": battery_id,
        "ts": iso_ms(now_ms),
        "model": MODEL,
        "code": CODE,
        "severity": "warning",
        "status": "raised" if raised else "cleared",
        "cell": None,
        "value": round(silent_s, 3),
        "threshold": threshold_s,
        "unit": "s",
        "message": f"{battery_id}: {verb} {silent_s:.1f} s (limit {threshold_s:g} s)",
    }


@dataclass
class StaleTracker:
    stale_after_s: float
    last_seen: dict[str, tuple[float, int]] = field(
        default_factory=dict
    )  # id -> (wall s, partition)
    stale: set[str] = field(default_factory=set)

    def seen(self, battery_id: str, partition: int, now: float) -> bool:
        """Record arrival; True if the battery was stale (the caller clears the alert)."""
        self.last_seen[battery_id] = (now, partition)
        if battery_id in self.stale:
            self.stale.discard(battery_id)
            return True
        return False

    def due(self, now: float, active_partitions: set[int]) -> list[tuple[str, int, float]]:
        """Batteries that just became stale (each reported once): id, partition, silence."""
        out: list[tuple[str, int, float]] = []
        for bid, (seen, partition) in self.last_seen.items():
            if bid in self.stale or partition not in active_partitions:
                continue
            silent = now - seen
            if silent >= self.stale_after_s:
                self.stale.add(bid)
                out.append((bid, partition, silent))
        return out

    def hold(self, partitions: set[int], seconds: float) -> None:
        """The twin did not hear these partitions for `seconds` (broker unreachable,
        rebalancing, input not read to the end): that time is no battery's silence."""
        if not partitions or seconds <= 0:
            return
        for bid, (t, p) in self.last_seen.items():
            if p in partitions:
                self.last_seen[bid] = (t + seconds, p)

    def forget_partitions(self, partitions: set[int]) -> None:
        for bid in [b for b, (_, p) in self.last_seen.items() if p in partitions]:
            del self.last_seen[bid]
            self.stale.discard(bid)
