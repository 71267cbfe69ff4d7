"""The output records: alerts, estimates and dead letters. Keys are battery_id; timestamps
are RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Ts = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", description="RFC 3339 UTC, ms")


class AlertRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    battery_id: str
    ts: str = Ts
    model: str
    code: str
    severity: Literal["info", "warning", "critical"]
    status: Literal["raised", "cleared"]
    cell: int | None
    value: float
    threshold: float
    unit: str
    message: str


class EstimateRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    battery_id: str
    ts: str = Ts
    model: str
    name: str
    value: float
    unit: str
    confidence: float | None = Field(ge=0.0, le=1.0)
    uncertainty: float | None = Field(
        None, ge=0, description="1 sigma of the estimate, in its unit (None: not quantified)"
    )


class DeadLetterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="why the record was refused, naming the field")
    raw: str = Field(description="the record as received (text), cut to its first 1024 characters")
    source: str = Field(description="where it came from: file:line or topic[partition]@offset")
    raw_bytes: int = Field(ge=0, description="size of the record as received, in bytes")
    raw_sha256: str = Field(description="SHA-256 (hex) of the record as received")
    truncated: bool = Field(description="raw holds only the head of the record")
    records: int = Field(
        1,
        ge=1,
        description="refused records this dead letter stands for: more than 1 when one "
        "message held more refused records than engine.max_dead_letters_per_message",
    )
