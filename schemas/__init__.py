"""The records on the wire, as pydantic v2 models (the source of truth): telemetry in;
alert, estimate and dead letter out. `twin-stream schema` exports their JSON Schema for
producers written in other languages."""

from schemas.outputs import AlertRecord, DeadLetterRecord, EstimateRecord
from schemas.telemetry import LIMITS, Telemetry

__all__ = ["LIMITS", "AlertRecord", "DeadLetterRecord", "EstimateRecord", "Telemetry"]
