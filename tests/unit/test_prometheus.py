"""The worker's Prometheus exposition (`agents.health.prometheus_text`), parsed back with
prometheus_client's own parser: values equal the metrics dict they came from, histograms
have cumulative buckets whose +Inf equals their count, and `TwinApp.metrics()` feeds it.

`sample_metrics()` is also what tests/unit/test_compose.py checks the Grafana dashboard's
metric names against.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agents.health import (
    CHUNK_RECORDS_BUCKETS,
    INPUT_AGE_BUCKETS,
    SECONDS_BUCKETS,
    Histogram,
    prometheus_text,
)


def _hist(bounds: tuple[float, ...], values: list[float]) -> dict[str, Any]:
    h = Histogram(bounds)
    for v in values:
        h.observe(v)
    return h.as_dict()


def sample_metrics() -> dict[str, Any]:
    """A hand-made `TwinApp.metrics()` with every key the exposition reads."""
    return {
        "records": 1200,
        "processed": 1100,
        "batteries": 8,
        "alerts": 5,
        "estimates": 400,
        "dead_letters": 17,
        "invalid": 9,
        "duplicates": 30,
        "late": 4,
        "future": 1,
        "frontier_resets": 0,
        "gaps": 2,
        "forced_releases": 0,
        "errors": 0,
        "unkeyed": 1,
        "misrouted": 3,
        "rerouted": 1,
        "misrouted_dead_letters": 2,
        "log_lines_suppressed": 6,
        "consumer_lag": {"0": 12, "1": 0, "7": 3},
        "health": {
            "broker_connected": True,
            "broker_answer_age_s": 0.4,
            "input_waiting": 15,
            "last_commit_age_s": 0.2,
            "live": True,
        },
        "stale_batteries": 1,
        "tracked_batteries": 8,
        "seconds": {"commits": 1.5, "work": 12.25, "acks": 0.75},
        "chunks": 7,
        "input_refetched": 0,
        "input_age_ms": {"p50": 120, "p99": 480, "max": 900},
        "events_per_chunk": 171.4,
        "chunk_records": _hist(CHUNK_RECORDS_BUCKETS, [1, 5, 5, 300, 400, 250, 38]),
        "chunk_seconds": _hist(SECONDS_BUCKETS, [0.004, 0.02, 0.02, 0.3, 0.09, 0.1, 45.0]),
        "chunk_commit_wait_seconds": _hist(SECONDS_BUCKETS, [0.0, 0.0, 0.2]),
        "input_age_seconds": _hist(INPUT_AGE_BUCKETS, [0.12, 0.48, 0.9, 7200.0]),
        "alerts_sent": [
            {"code": "cell_overvoltage", "severity": "critical", "status": "raised", "count": 2},
            {"code": "cell_overvoltage", "severity": "critical", "status": "cleared", "count": 1},
            {"code": "telemetry_stale", "severity": "warning", "status": "raised", "count": 3},
        ],
    }


def families(metrics: dict[str, Any]) -> dict[str, Any]:
    text = prometheus_text(metrics).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    for f in fams.values():
        for s in f.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    raise KeyError(f"{sample}{labels} not exposed")


def test_counters_and_gauges_equal_the_dict() -> None:
    m = sample_metrics()
    fams = families(m)
    for key in ("records", "processed", "duplicates", "gaps", "chunks", "rerouted"):
        assert fams[f"twin_{key}"].type == "counter"
        assert value(fams, f"twin_{key}_total") == m[key]
    assert value(fams, "twin_dead_letters_total", reason="invalid") == 9
    assert value(fams, "twin_dead_letters_total", reason="misrouted") == 2
    assert value(fams, "twin_dead_letters_total", reason="unkeyed") == 1
    assert value(fams, "twin_seconds_total", kind="acks") == 0.75
    assert value(fams, "twin_seconds_total", kind="commits") == 1.5
    assert value(fams, "twin_stale_batteries") == 1
    assert value(fams, "twin_consumer_lag", partition="0") == 12
    assert value(fams, "twin_consumer_lag", partition="7") == 3
    assert value(fams, "twin_broker_connected") == 1
    assert value(fams, "twin_live") == 1
    assert value(fams, "twin_last_commit_age_seconds") == 0.2
    assert value(fams, "twin_input_age_ms", quantile="p99") == 480


def test_alerts_by_code_severity_status() -> None:
    fams = families(sample_metrics())
    assert fams["twin_alerts_sent"].type == "counter"
    got = {
        (s.labels["code"], s.labels["severity"], s.labels["status"]): s.value
        for s in fams["twin_alerts_sent"].samples
    }
    assert got == {
        ("cell_overvoltage", "critical", "raised"): 2,
        ("cell_overvoltage", "critical", "cleared"): 1,
        ("telemetry_stale", "warning", "raised"): 3,
    }


@pytest.mark.parametrize(
    ("key", "name", "bounds", "values"),
    [
        (
            "chunk_records",
            "twin_chunk_records",
            CHUNK_RECORDS_BUCKETS,
            [1, 5, 5, 300, 400, 250, 38],
        ),
        (
            "chunk_seconds",
            "twin_chunk_duration_seconds",
            SECONDS_BUCKETS,
            [0.004, 0.02, 0.02, 0.3, 0.09, 0.1, 45.0],
        ),
        (
            "chunk_commit_wait_seconds",
            "twin_chunk_commit_wait_seconds",
            SECONDS_BUCKETS,
            [0, 0, 0.2],
        ),
        ("input_age_seconds", "twin_input_age_seconds", INPUT_AGE_BUCKETS, [0.12, 0.48, 0.9, 7200]),
    ],
)
def test_histograms(key: str, name: str, bounds: tuple[float, ...], values: list[float]) -> None:
    fams = families(sample_metrics())
    fam = fams[name]
    assert fam.type == "histogram"
    buckets: list[Sample] = [s for s in fam.samples if s.name == f"{name}_bucket"]
    les = [float(s.labels["le"]) for s in buckets]
    assert les == [float(b) for b in bounds] + [math.inf]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    for le, n in zip(les, counts, strict=True):
        assert n == sum(1 for v in values if v <= le), f"le={le}"
    count = value(fams, f"{name}_count")
    assert counts[-1] == count == len(values)
    assert value(fams, f"{name}_sum") == pytest.approx(sum(values))


def test_histogram_bucket_edges() -> None:
    h = Histogram((1.0, 2.0))
    for v in (1.0, 1.0000001, 2.0, 2.5, -1.0):  # le is inclusive; below the first bound: in it
        h.observe(v)
    assert h.as_dict() == {
        "buckets": {"1.0": 2, "2.0": 4, "+Inf": 5},
        "sum": pytest.approx(5.5000001),
        "count": 5,
    }
    with pytest.raises(ValueError):
        Histogram((2.0, 1.0))


def test_empty_metrics_still_expose_the_health_families() -> None:
    fams = families({})
    assert value(fams, "twin_broker_connected") == 0
    assert value(fams, "twin_dead_letters_total", reason="late") == 0


def test_twin_app_metrics_feed_the_exposition() -> None:
    """`TwinApp.metrics()` (without a faust app: nothing it reads needs one) carries the
    histograms and alert counts in JSON-able form, and they reach the exposition."""
    from agents.app import TwinApp
    from agents.stale import StaleTracker, stale_alert
    from twin_stream.codec import Decoder
    from twin_stream.config.settings import Settings
    from twin_stream.engine import Engine

    settings = Settings()
    twin = TwinApp(
        settings=settings,
        app=None,
        engine=Engine(settings),
        decoder=Decoder.from_settings(settings),
        stale=StaleTracker(60.0),
    )
    twin.count_alert(stale_alert("bat-1", True, 70.0, 60.0))
    twin.count_alert(stale_alert("bat-1", False, 0.0, 60.0))
    twin.count_alert(stale_alert("bat-2", True, 65.0, 60.0))
    for n in (10, 200, 3000):
        twin.chunk_records.observe(n)
    twin.chunk_seconds.observe(0.03)
    twin.input_age.observe(0.25)
    m = twin.metrics()
    orjson.dumps(m)  # /twin/metrics/ and the log line serve it as JSON
    fams = families(m)
    stale = {"code": "telemetry_stale", "severity": "warning"}
    assert value(fams, "twin_alerts_sent_total", **stale, status="raised") == 2
    assert value(fams, "twin_alerts_sent_total", **stale, status="cleared") == 1
    assert value(fams, "twin_chunk_records_count") == 3
    assert value(fams, "twin_chunk_records_bucket", le="200.0") == 2
    assert value(fams, "twin_chunk_records_sum") == 3210
    assert value(fams, "twin_chunk_duration_seconds_bucket", le="0.05") == 1
    assert value(fams, "twin_input_age_seconds_bucket", le="0.25") == 1
    assert value(fams, "twin_chunk_commit_wait_seconds_count") == 0
