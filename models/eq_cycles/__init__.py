"""eq_cycles: equivalent full cycles N = N0 + sum(|I| dt eta) / (2 C_nom SOH/100), the measured
charge/discharge throughput and the terminal energy, by exact trapezoids (sign changes inside a
dense interval on the straight line through zero), gap-aware, with an optional stored-charge
efficiency weighting; one compiled per-record loop over a block of many batteries."""

from models.eq_cycles.model import EqCycles

__all__ = ["EqCycles"]
