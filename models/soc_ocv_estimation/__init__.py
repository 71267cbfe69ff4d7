"""soc_ocv_estimation: rest detection (|I| below a threshold for a minimum time, voltage
settled by an event-time dV/dt test), SOC read on the chemistry's OCV curve with a confidence
that follows the curve's slope, the rest time and the settledness, and the available energy
from SOC, capacity and the OCV curve. Rest timers live in the state: chunking-invariant."""

from models.soc_ocv_estimation.model import SocOcvEstimation

__all__ = ["SocOcvEstimation"]
