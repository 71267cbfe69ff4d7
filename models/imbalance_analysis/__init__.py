"""imbalance_analysis: cell voltage spread (every sample) with a levelled `cell_imbalance`
alert, and at an event-time cadence the spread, the relative spread and, at rest, the SOC
imbalance read through the chemistry's OCV curve with a confidence that follows the curve's
slope and the rest time."""

from models.imbalance_analysis.model import ImbalanceAnalysis

__all__ = ["ImbalanceAnalysis"]
