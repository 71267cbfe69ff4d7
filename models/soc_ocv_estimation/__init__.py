"""soc_ocv_estimation: pack SOC (min, average, max) from the OCV at a settled rest (C-rate rest
band, I*R compensation, regression settle test, LFP hysteresis branches) with a 1-sigma
uncertainty, the available energy, the BMS SOC error and the current-sensor offset; a kernel
model (one compiled per-record loop, state arrays per battery slot): chunking-invariant."""

from models.soc_ocv_estimation.model import SocOcvEstimation

__all__ = ["SocOcvEstimation"]
