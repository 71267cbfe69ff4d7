"""Is the worker connected and making progress? The broker probe, consumer lag, liveness and
readiness, and the Prometheus exposition of the worker's counters.

faust's own web server answers 200 while its consumer has lost the broker (seen: a worker
with a stale bootstrap address "healthy" for hours, logging 80 lines/s). So the worker asks
the broker itself, every `probe_interval_s`, for the input partitions' last stable offsets
(read_committed `ListOffsets`, its own small client): a success within
`worker.broker_timeout_s` means connected, and the offsets give the consumer lag against the
agent's positions. Liveness is red when the broker has not answered within that time, or
when input is waiting and nothing was committed for `worker.commit_stall_s`; readiness also
needs assigned partitions and a finished recovery.

While the broker is unreachable the twin is deaf, not the batteries: the stale timer holds
off, and when the broker is back every battery's silence is pardoned by the time the twin
was deaf (`on_reconnect`).

`prometheus_text` exposes `TwinApp.metrics()` (counters, dead letters by reason, alerts sent
by code/severity/status, gauges, consumer lag per partition, and the histograms of chunk
records, chunk duration, commit wait and input age kept by `Histogram`); every family is
named `twin_*`. deploy/grafana/dashboards/twin-stream.json charts them (its metric names are
checked against this exposition by tests/unit/test_compose.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("twin_stream.agents.health")


@dataclass
class BrokerMonitor:
    """Probes the broker for the input topic's end offsets; see the module doc."""

    kafka_options: dict[str, Any]
    topic: str
    broker_timeout_s: float = 8.0
    probe_interval_s: float = 2.0
    on_reconnect: Callable[[float], None] | None = None
    clock: Callable[[], float] = time.monotonic
    ok_at: float | None = None  # clock() of the last answer
    lost_at: float | None = None  # clock() when it was first seen lost (None: connected)
    end_offsets: dict[int, int] = field(default_factory=dict)
    probes: int = 0
    failures: int = 0
    outages: int = 0
    last_error: str = ""
    _consumer: Any = None
    _started_at: float = 0.0

    @property
    def connected(self) -> bool:
        return self.ok_at is not None and self.clock() - self.ok_at < self.broker_timeout_s

    @property
    def fresh_s(self) -> float:
        """How old the last answer may be for the broker to count as heard: one probe cycle
        (interval + timeout) and a second, far below broker_timeout_s (liveness)."""
        return 2 * self.probe_interval_s + 1

    @property
    def heard(self) -> bool:
        return self.ok_at is not None and self.clock() - self.ok_at < self.fresh_s

    def age_s(self) -> float | None:
        """Seconds since the broker last answered (None: never)."""
        return None if self.ok_at is None else self.clock() - self.ok_at

    async def run(self, should_stop: Callable[[], bool]) -> None:
        """Probe until `should_stop()`."""
        self._started_at = self.clock()
        try:
            while not should_stop():
                await self.probe_once()
                await asyncio.sleep(self.probe_interval_s)
        finally:
            await self.close()

    async def probe_once(self) -> bool:
        self.probes += 1
        try:
            offsets = await asyncio.wait_for(self._end_offsets(), self.probe_interval_s + 1)
        except Exception as exc:  # any failure is "not answering"
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.note(ok=False)
            return False
        self.end_offsets = offsets
        self.note(ok=True)
        return True

    def note(self, ok: bool) -> None:
        """Record a probe result; fires `on_reconnect(deaf_s)` when the broker is back."""
        now = self.clock()
        if ok:
            if self.lost_at is not None:
                deaf = now - (self.ok_at if self.ok_at is not None else self.lost_at)
                log.warning("broker reachable again after %.1f s", deaf)
                self.lost_at = None
                if self.on_reconnect is not None:
                    self.on_reconnect(deaf)
            self.ok_at = now
            return
        ref = self.ok_at if self.ok_at is not None else self._started_at
        if self.lost_at is None and now - ref >= self.broker_timeout_s:
            self.lost_at = now
            self.outages += 1
            log.error(
                "broker not answering for %.0f s (%s): liveness is red", now - ref, self.last_error
            )

    async def _end_offsets(self) -> dict[int, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._consumer is None:
            c = AIOKafkaConsumer(
                **self.kafka_options,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
                request_timeout_ms=int(self.broker_timeout_s * 1000),
                metadata_max_age_ms=30_000,
            )
            await c.start()
            self._consumer = c
        c = self._consumer
        parts = c.partitions_for_topic(self.topic)
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if not tps:
            raise LookupError(f"topic {self.topic} has no partitions in the broker's metadata")
        return {tp.partition: int(o) for tp, o in (await c.end_offsets(tps)).items()}

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 5)
            self._consumer = None


def lag(end_offsets: Mapping[int, int], positions: Mapping[int, int]) -> dict[int, int]:
    """Records waiting per owned input partition: end offset minus the agent's position."""
    return {p: max(0, end_offsets[p] - pos) for p, pos in positions.items() if p in end_offsets}


@dataclass(frozen=True)
class Health:
    """One verdict: ok, and the reasons when not."""

    ok: bool
    checks: dict[str, Any]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "failing", "problems": self.problems, **self.checks}


def liveness(
    monitor: BrokerMonitor,
    waiting: int,
    commit_age_s: float | None,
    commit_stall_s: float,
    running_s: float,
) -> Health:
    """Red when the broker does not answer, or input waits and nothing commits."""
    problems: list[str] = []
    age = monitor.age_s()
    if not monitor.connected:
        problems.append(
            "broker not answering"
            + (f" for {age:.0f} s" if age is not None else " since start")
            + (f" ({monitor.last_error})" if monitor.last_error else "")
        )
    stalled_for = commit_age_s if commit_age_s is not None else running_s
    if waiting > 0 and stalled_for > commit_stall_s:
        problems.append(
            f"{waiting} input records waiting and no commit for {stalled_for:.0f} s "
            f"(limit {commit_stall_s:g} s)"
        )
    checks = {
        "broker_connected": monitor.connected,
        "broker_answer_age_s": None if age is None else round(age, 1),
        "input_waiting": waiting,
        "last_commit_age_s": None if commit_age_s is None else round(commit_age_s, 1),
    }
    return Health(not problems, checks, problems)


def readiness(live: Health, assigned: int, recovered: bool, rebalancing: bool) -> Health:
    problems = list(live.problems)
    if assigned == 0:
        problems.append("no input partitions assigned")
    if not recovered:
        problems.append("table recovery not finished")
    if rebalancing:
        problems.append("rebalancing")
    checks = {**live.checks, "assigned_partitions": assigned, "recovered": recovered}
    return Health(not problems, checks, problems)


# -- Prometheus -------------------------------------------------------------------------------

# Bucket upper bounds (Prometheus `le`) of the worker's histograms.
CHUNK_RECORDS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
INPUT_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write `le` (1 -> "1.0", inf -> "+Inf")."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))


@dataclass
class Histogram:
    """A Prometheus histogram kept in plain Python (no registry, no lock: the worker's event
    loop is its only writer): fixed bucket bounds, a count per bucket, sum and count.
    `as_dict()` is its JSON form (cumulative counts by `le`, "+Inf" = count), which
    `prometheus_text` exposes as a histogram family."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket; the last: above all bounds
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if any(b >= c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"histogram bounds must increase: {self.bounds}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value
        self.count += 1

    def as_dict(self) -> dict[str, Any]:
        buckets: dict[str, int] = {}
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            buckets[_le(bound)] = total
        buckets["+Inf"] = self.count
        return {"buckets": buckets, "sum": self.sum, "count": self.count}


_COUNTERS = {
    "records": "valid telemetry records handed to the engine",
    "processed": "records run through the models",
    "duplicates": "records dropped as duplicates (same battery and ts)",
    "gaps": "intervals longer than engine.max_gap_s (not integrated)",
    "alerts": "alert records emitted",
    "estimates": "estimate records emitted",
    "forced_releases": "records released early from a full reorder buffer",
    "chunks": "chunks processed",
    "frontier_resets": "stored frontiers found ahead of the clock and reset",
    "degraded": "records used without some invalid channels or optional fields",
    "implausible": "cell readings the plausibility layer kept from the models",
    "input_refetched": "input records faust skipped, read from the broker",
    "log_lines_suppressed": "repeated log lines suppressed by the rate limit",
    "rerouted": "records re-sent to the partition their key hashes to",
}
_DEAD_REASONS = {  # reason label -> key of TwinApp.metrics()
    "invalid": "invalid",
    "late": "late",
    "future": "future",
    "errors": "errors",
    "unkeyed": "unkeyed",
    "misrouted": "misrouted_dead_letters",
}
_HISTOGRAMS = {  # key of TwinApp.metrics() (a Histogram.as_dict()) -> (name, help)
    "chunk_records": ("chunk_records", "input records per chunk"),
    "chunk_seconds": ("chunk_duration_seconds", "seconds of work per chunk (decode to sends)"),
    "chunk_commit_wait_seconds": (
        "chunk_commit_wait_seconds",
        "seconds a chunk waited for a commit or rebalance in progress before it ran",
    ),
    "input_age_seconds": (
        "input_age_seconds",
        "age of a chunk's first input record (producer/broker timestamp) when the chunk starts",
    ),
}
_GAUGES = {
    "batteries": "batteries seen by this worker since start",
    "tracked_batteries": "batteries watched for silence",
    "stale_batteries": "batteries with a telemetry_stale alert out",
    "events_per_chunk": "mean input records per chunk",
}


def _name(n: str) -> str:
    return f"twin_{n}"


def prometheus_text(metrics: Mapping[str, Any]) -> bytes:
    """The worker's metrics (`TwinApp.metrics()`) in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    class _Collector:
        def collect(self) -> Iterator[Any]:
            for key, doc in _COUNTERS.items():
                if key in metrics:
                    yield CounterMetricFamily(_name(key), doc, value=float(metrics[key]))
            dead = CounterMetricFamily(
                _name("dead_letters"), "refused records, by reason", labels=["reason"]
            )
            for reason, key in _DEAD_REASONS.items():
                dead.add_metric([reason], float(metrics.get(key, 0)))
            yield dead
            sent = CounterMetricFamily(
                _name("alerts_sent"),
                "alert records sent (models' and telemetry_stale), by code, severity, status",
                labels=["code", "severity", "status"],
            )
            for a in metrics.get("alerts_sent") or []:
                sent.add_metric([a["code"], a["severity"], a["status"]], float(a["count"]))
            yield sent
            for key, (name, doc) in _HISTOGRAMS.items():
                hist = metrics.get(key)
                if hist:
                    yield HistogramMetricFamily(
                        _name(name),
                        doc,
                        buckets=[(le, float(n)) for le, n in hist["buckets"].items()],
                        sum_value=float(hist["sum"]),
                    )
            for key, doc in _GAUGES.items():
                if key in metrics:
                    yield GaugeMetricFamily(_name(key), doc, value=float(metrics[key]))
            sec = CounterMetricFamily(
                _name("seconds"),
                "seconds spent waiting for commits, in chunks, waiting for acks",
                labels=["kind"],
            )
            for kind, v in (metrics.get("seconds") or {}).items():
                sec.add_metric([kind], float(v))
            yield sec
            age = GaugeMetricFamily(
                _name("input_age_ms"),
                "age of input records when their chunk starts (last 1000 chunks)",
                labels=["quantile"],
            )
            for q, v in (metrics.get("input_age_ms") or {}).items():
                age.add_metric([q], float(v))
            yield age
            h = metrics.get("health") or {}
            yield GaugeMetricFamily(
                _name("broker_connected"),
                "1 when the broker answered within worker.broker_timeout_s",
                value=1.0 if h.get("broker_connected") else 0.0,
            )
            for key, name, doc in (
                ("broker_answer_age_s", "broker_answer_age_seconds", "since the broker answered"),
                ("last_commit_age_s", "last_commit_age_seconds", "since input offsets committed"),
            ):
                if h.get(key) is not None:
                    yield GaugeMetricFamily(_name(name), f"seconds {doc}", value=float(h[key]))
            yield GaugeMetricFamily(
                _name("live"), "1 when /twin/health/live is green", 1.0 if h.get("live") else 0.0
            )
            lag_m = GaugeMetricFamily(
                _name("consumer_lag"),
                "input records waiting per owned partition",
                labels=["partition"],
            )
            for p, v in (metrics.get("consumer_lag") or {}).items():
                lag_m.add_metric([str(p)], float(v))
            yield lag_m

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())  # type: ignore[arg-type]
    return bytes(generate_latest(registry))
