"""What models emit: alerts and estimates, before the engine stamps the battery and encodes them.

Models return these light dataclasses (not pydantic records) so the hot path pays no
validation cost; `schemas.outputs` defines the wire records and `twin_stream.codec` encodes.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class Alert:
    ts: int  # epoch ms (event time of the sample that decided it)
    model: str
    code: str
    severity: str
    status: str  # "raised" | "cleared"
    cell: int | None
    value: float
    threshold: float
    unit: str
    message: str


@dataclass(frozen=True, slots=True)
class Estimate:
    ts: int
    model: str
    name: str
    value: float
    unit: str
    confidence: float | None
    uncertainty: float | None = None  # 1 sigma, in `unit` (None: not quantified)


Output = Alert | Estimate
