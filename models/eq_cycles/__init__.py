"""eq_cycles: equivalent full cycles N = N0 + sum(|I| dt eta) / (2 C_nom SOH/100) and the
measured charge throughput, by exact trapezoids (sign changes inside an interval included),
gap-aware, with an optional stored-charge efficiency weighting, accumulated in integer fixed
point so that the result is identical however the samples are chunked."""

from models.eq_cycles.model import EqCycles

__all__ = ["EqCycles"]
