"""The telemetry record (input), one per Kafka message or file line, keyed by battery_id.

Types are strict (a number sent as a string, or a boolean, is an error, not coerced), NaN and
infinity are rejected, ranges come from `schemas/limits.json`. Required fields out of range
refuse the record. Channels and optional fields degrade instead (field rule: one bad channel
never hides a good one): a `null` channel, a channel or optional value out of its range
(`VALID_RANGES`; `soh` at or below 1 is a fraction sent by mistake or a BMS that has not
computed it yet, `soc` 102.3 likewise) or equal to a configured invalid marker is removed from
the record (NaN) and counted, and the rest of the record is used. Unknown fields are ignored,
so gateways may add their own.
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


VALID_RANGES: dict[str, tuple[float, float]] = {
    "voltage": (0.0, LIMITS["voltage_max_v"]),
    "cell_voltages": (0.0, LIMITS["cell_voltage_max_v"]),
    "temperatures": (LIMITS["temperature_min_degc"], LIMITS["temperature_max_degc"]),
    "soc": (0.0, 100.0),
    "soh": (LIMITS["soh_fraction_max"], 100.0),  # low end open: 1 or less is no percentage
}
"""Valid values of the fields that degrade; outside them a value is removed, not the record."""


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
    voltage: float | None = Field(None, description="V; outside 0..5000 it is removed")
    cell_voltages: list[float | None] | None = Field(
        None,
        min_length=1,
        max_length=LIMITS["array_max_items"],
        description="V, series order; null, outside 0..10 or a marker: that channel is invalid",
    )
    temperatures: list[float | None] | None = Field(
        None,
        min_length=1,
        max_length=LIMITS["array_max_items"],
        description="degC; null, outside -100..300 or a marker: that sensor is invalid",
    )
    soc: float | None = Field(
        None, description="% as reported by the BMS; outside 0..100 it is removed"
    )
    soh: float | None = Field(
        None, description="% as reported by the BMS; outside (1, 100] it is removed"
    )
    seq: int | None = Field(None, ge=0, description="per-battery sequence number")

    @property
    def ts_ms(self) -> int:
        assert isinstance(self.ts, int)
        return self.ts
