"""Outputs to the wire: alert and estimate records (schemas.outputs) and their JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from twin_stream.sdk.outputs import Alert, Estimate, Output


def iso_ms(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-01-01T00:00:00.000Z."""
    return f"{_iso_second(ts_ms // 1000)}.{ts_ms % 1000:03d}Z"


@lru_cache(maxsize=8192)
def _iso_second(s: int) -> str:  # outputs of a block share few seconds: formatted once each
    return f"{datetime.fromtimestamp(s, tz=UTC):%Y-%m-%dT%H:%M:%S}"


def output_record(battery_id: str, out: Output) -> dict[str, Any]:
    """The wire record (schemas.outputs) of a model output."""
    if isinstance(out, Alert):
        return {
            "battery_id": battery_id,
            "ts": iso_ms(out.ts),
            "model": out.model,
            "code": out.code,
            "severity": out.severity,
            "status": out.status,
            "cell": None if out.cell is None else int(out.cell),
            "value": float(out.value),
            "threshold": float(out.threshold),
            "unit": out.unit,
            "message": out.message,
        }
    assert isinstance(out, Estimate)
    return {
        "battery_id": battery_id,
        "ts": iso_ms(out.ts),
        "model": out.model,
        "name": out.name,
        "value": float(out.value),
        "unit": out.unit,
        "confidence": None if out.confidence is None else float(out.confidence),
        "uncertainty": None if out.uncertainty is None else float(out.uncertainty),
    }


def dumps(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record)


def iter_dumps(records: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)
