"""The telemetry record (input), one per Kafka message or file line, keyed by battery_id.

Types are strict (a number sent as a string, or a boolean, is an error, not coerced), NaN and
infinity are rejected, ranges come from `schemas/limits.json`. `soh` at or below 1 is taken
as a fraction sent by mistake and rejected (the upstream counted 100x too many cycles).
Unknown fields are ignored, so gateways may add their own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIMITS: dict[str, Any] = json.loads((Path(__file__).parent / "limits.json").read_text("utf-8"))


def parse_rfc3339_ms(value: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp that carries an offset (or Z)."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"ts {value!r} is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None or "T" not in value.upper():
        raise ValueError(f"ts {value!r} needs a date, a time and an offset (e.g. Z or +01:00)")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _ts_ms(value: int | str) -> int:
    ms = parse_rfc3339_ms(value) if isinstance(value, str) else value
    if not LIMITS["ts_min_ms"] <= ms <= LIMITS["ts_max_ms"]:
        raise ValueError(f"ts {value!r} is outside 1970..3000")
    return ms


def _soh(value: float | None) -> float | None:
    if value is not None and value <= LIMITS["soh_fraction_max"]:
        raise ValueError(f"soh {value!r} looks like a fraction; send percent (0-100]")
    return value


CellVoltage = Annotated[float, Field(ge=0.0, le=LIMITS["cell_voltage_max_v"])]
Temperature = Annotated[
    float, Field(ge=LIMITS["temperature_min_degc"], le=LIMITS["temperature_max_degc"])
]


class Telemetry(BaseModel):
    """One sample of one battery. Current: positive = discharge, negative = charge."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", frozen=True)

    battery_id: str = Field(pattern=LIMITS["battery_id_pattern"], description="the key")
    ts: Annotated[int | str, AfterValidator(_ts_ms)] = Field(
        description="event time: RFC 3339 with offset, or integer epoch milliseconds"
    )
    current: float = Field(
        ge=-LIMITS["current_abs_max_a"], le=LIMITS["current_abs_max_a"], description="A"
    )
    voltage: float | None = Field(None, ge=0.0, le=LIMITS["voltage_max_v"], description="V")
    cell_voltages: list[CellVoltage] | None = Field(
        None, min_length=1, max_length=LIMITS["array_max_items"], description="V, series order"
    )
    temperatures: list[Temperature] | None = Field(
        None, min_length=1, max_length=LIMITS["array_max_items"], description="degC"
    )
    soc: float | None = Field(None, ge=0.0, le=100.0, description="% as reported by the BMS")
    soh: Annotated[float | None, AfterValidator(_soh)] = Field(
        None, le=100.0, description="% as reported by the BMS, (1, 100]"
    )
    seq: int | None = Field(None, ge=0, description="per-battery sequence number")

    @property
    def ts_ms(self) -> int:
        assert isinstance(self.ts, int)
        return self.ts
